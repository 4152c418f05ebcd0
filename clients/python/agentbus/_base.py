"""What the sync and the asyncio client share: connection settings, the
request builders and the watch bookkeeping (:class:`WatchState`), all pure.
The unary calls themselves are in :mod:`agentbus._calls`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Sequence, Union

import grpc

from agentbus import convert
from agentbus.errors import AgentBusError, error_for
from agentbus.v1 import (
    agent_pb2,
    agent_service_pb2,
    message_pb2,
    message_service_pb2,
    session_pb2,
    session_service_pb2,
)

DEFAULT_ADDRESS = "127.0.0.1:8080"
#: Default deadline of unary calls, in seconds.
DEFAULT_TIMEOUT = 30.0
#: Default time a :meth:`ClientBase.request` waits for the reply, in seconds.
DEFAULT_REPLY_TIMEOUT = 60.0

#: Codes after which ``watch_sessions`` reconnects (a clean end of the stream
#: counts too): the server going away or restarting, or a transient condition.
RETRYABLE_WATCH_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    }
)

# Channel options: keep gRPC's own reconnect backoff short so a restarted
# server is found again quickly (watch_sessions adds its own backoff on top).
# Reconnect quickly after a restart. grpc-core also takes
# grpc.min_reconnect_backoff_ms as the deadline of each connection attempt
# (default 20 s), so it is left alone: at 200 ms a server still opening its
# store, or a TLS handshake over a slow link, failed calls at once.
DEFAULT_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

_UNSET: Any = object()

AgentLike = Union[str, message_pb2.AgentRef, Mapping[str, Any]]


# --------------------------------------------------------------------------
# Connection


def parse_address(address: Optional[str]) -> tuple[str, bool]:
    """``(target, secure)`` for an address such as ``127.0.0.1:8080``,
    ``http://host:port``, ``grpc://host:port`` or ``https://host`` (TLS).

    ``None`` means ``$AGENT_BUS_URL`` or ``127.0.0.1:8080``.
    """
    address = (address or os.environ.get("AGENT_BUS_URL") or DEFAULT_ADDRESS).strip()
    secure = False
    for scheme, is_secure in (("https://", True), ("grpcs://", True), ("http://", False), ("grpc://", False)):
        if address.lower().startswith(scheme):
            address = address[len(scheme):]
            secure = is_secure
            break
    address = address.rstrip("/")
    if "/" in address:
        raise ValueError(f"not a host:port address: {address!r}")
    if ":" not in address.rsplit("]", 1)[-1]:
        address += ":443" if secure else ":8080"
    return address, secure


def tls_credentials(
    credentials: Optional[grpc.ChannelCredentials],
    ca_file: Optional[str],
    cert_file: Optional[str],
    key_file: Optional[str],
) -> Optional[grpc.ChannelCredentials]:
    """TLS credentials from PEM files: ``ca_file`` to trust (default: the
    system's roots), ``cert_file`` and ``key_file`` for mutual TLS. ``None``
    when neither credentials nor files are given."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together")
    if ca_file is None and cert_file is None:
        return credentials
    if credentials is not None:
        raise ValueError("give either credentials or ca_file/cert_file/key_file, not both")

    def read(path: Optional[str]) -> Optional[bytes]:
        return Path(path).read_bytes() if path is not None else None

    return grpc.ssl_channel_credentials(
        root_certificates=read(ca_file), private_key=read(key_file), certificate_chain=read(cert_file)
    )


def auth_metadata(api_key: Optional[str], token: Optional[str] = None) -> tuple[tuple[str, str], ...]:
    """The metadata sent with every call: the API key as ``x-agent-api-key``,
    or an agent token as ``authorization: Bearer <token>``."""
    if api_key and token:
        raise ValueError("give either api_key (the admin key) or token (an agent token), not both")
    if token:
        return (("authorization", f"Bearer {token}"),)
    return (("x-agent-api-key", api_key),) if api_key else ()


def channel_options(options: Optional[Sequence[tuple[str, Any]]]) -> list[tuple[str, Any]]:
    given = list(options or ())
    names = {name for name, _ in given}
    return given + [opt for opt in DEFAULT_CHANNEL_OPTIONS if opt[0] not in names]


# --------------------------------------------------------------------------
# Request builders


def agent_ref(value: AgentLike, *, session_id: Optional[str] = None, what: str = "agent") -> message_pb2.AgentRef:
    """An ``AgentRef`` from an agent id, a dict or an ``AgentRef``."""
    if isinstance(value, str):
        ref = message_pb2.AgentRef(agent_id=value)
    else:
        ref = convert.to_message(message_pb2.AgentRef, value, what=what)
    if session_id:
        ref.session_id = session_id
    return ref


def build_message(
    sender: AgentLike,
    recipient: AgentLike,
    message_type: Any = "task_request",
    payload: Any = None,
    *,
    session_id: Optional[str] = None,
    priority: Any = None,
    metadata: Optional[Mapping[str, Any]] = None,
    in_reply_to: str = "",
    task_id: str = "",
    message_id: str = "",
    routing_timeout: Any = None,
    max_retries: Optional[int] = None,
    backoff: Any = None,
    fallback_agents: Optional[Iterable[str]] = None,
    delivery_mode: Any = None,
) -> message_pb2.Message:
    """A ``Message`` from plain values.

    Args:
        sender, recipient: agent ids (``"claude-code://orchestrator"``), dicts
            or ``AgentRef``s.
        message_type: ``"task_request"`` (default), ``"task_response"``,
            ``"status_update"``, ``"error"`` or ``"heartbeat"``.
        payload: any JSON value (dict, list, str, number, bool, None).
        session_id: the session the message belongs to (set on the sender).
        priority: ``"low"``, ``"medium"``, ``"high"`` or ``"critical"``.
        metadata: a JSON object.
        routing_timeout: how long the bus tries to deliver it (``"300s"``, 300, timedelta).
        max_retries, backoff: the retry policy (``backoff`` ``"linear"`` or
            ``"exponential"``; ``max_retries`` defaults to 3 when only
            ``backoff`` is given, like the server's default policy).
        fallback_agents: agent ids tried in order once retries are exhausted.
        delivery_mode: ``"async"`` or ``"sync"``.

    A routing is only sent when one of its fields is given (else the server's
    defaults apply).
    """
    msg = message_pb2.Message(
        message_id=message_id or "",
        sender=agent_ref(sender, session_id=session_id, what="sender"),
        recipient=agent_ref(recipient, what="recipient"),
        message_type=convert.message_type(message_type),
        priority=convert.priority(priority),
        in_reply_to=in_reply_to or "",
        task_id=task_id or "",
    )
    if payload is not None:
        msg.payload.CopyFrom(convert.to_value(payload))
    if metadata is not None:
        msg.metadata.CopyFrom(convert.to_struct(metadata))
    if any(v is not None for v in (routing_timeout, max_retries, backoff, fallback_agents, delivery_mode)):
        routing = msg.routing
        routing.SetInParent()
        if routing_timeout is not None:
            routing.timeout.CopyFrom(convert.to_duration(routing_timeout))
        if max_retries is not None or backoff is not None:
            routing.retry_policy.max_retries = 3 if max_retries is None else int(max_retries)
            routing.retry_policy.backoff = convert.backoff(backoff)
        if fallback_agents is not None:
            routing.fallback_agents.extend(convert.str_list(fallback_agents, what="fallback_agents"))
        routing.delivery_mode = convert.delivery_mode(delivery_mode)
    return msg


MessageLike = Union[message_pb2.Message, Mapping[str, Any]]


def as_message(message: MessageLike) -> message_pb2.Message:
    """A ``Message`` as it is, or one built from a dict of
    :func:`build_message`'s arguments (``{"sender": ..., "recipient": ...,
    "payload": ..., "message_id": ...}``)."""
    if isinstance(message, message_pb2.Message):
        return message
    if isinstance(message, Mapping):
        return build_message(**message)
    raise TypeError(f"expected a Message or a dict of build_message arguments, got {type(message).__name__}")


def build_reply(
    to: Union[message_pb2.Message, message_service_pb2.Delivery],
    payload: Any = None,
    message_type: Any = "task_response",
    **options: Any,
) -> message_pb2.Message:
    """A reply to ``to``: from its recipient back to its sender, with
    ``in_reply_to`` set, the same session and the same ``task_id``."""
    original = to.message if isinstance(to, message_service_pb2.Delivery) else to
    options.setdefault("session_id", original.sender.session_id or None)
    options.setdefault("task_id", original.task_id)
    return build_message(
        sender=original.recipient.agent_id,
        recipient=original.sender.agent_id,
        message_type=message_type,
        payload=payload,
        in_reply_to=original.message_id,
        **options,
    )


def _message_id(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, message_service_pb2.Delivery):
        return value.message.message_id
    if isinstance(value, message_pb2.Message):
        return value.message_id
    raise TypeError(f"expected a message id, Message or Delivery, not {type(value).__name__}")


def build_descriptor(
    agent: Union[str, agent_pb2.AgentDescriptor, Mapping[str, Any]],
    *,
    framework: Optional[str] = None,
    capabilities: Any = None,
    endpoints: Any = None,
    metadata: Any = None,
    health_check_url: Optional[str] = None,
    status_endpoint: Optional[str] = None,
) -> agent_pb2.AgentDescriptor:
    if isinstance(agent, str):
        desc = agent_pb2.AgentDescriptor(agent_id=agent)
    else:
        desc = convert.to_message(agent_pb2.AgentDescriptor, agent, what="agent")
    if framework is not None:
        desc.framework = framework
    if capabilities is not None:
        desc.capabilities.CopyFrom(convert.to_message(agent_pb2.AgentCapabilities, capabilities, what="capabilities"))
    if endpoints is not None:
        desc.endpoints.CopyFrom(convert.to_message(agent_pb2.AgentEndpoints, endpoints, what="endpoints"))
    if metadata is not None:
        desc.metadata.CopyFrom(convert.to_message(agent_pb2.AgentMetadata, metadata, what="metadata"))
    if health_check_url is not None:
        desc.health_check_url = health_check_url
    if status_endpoint is not None:
        desc.status_endpoint = status_endpoint
    return desc


def participant_spec(value: Any, *, what: str = "participant") -> session_pb2.ParticipantSpec:
    """A ``ParticipantSpec`` from an agent id, a dict or a spec.

    Dicts use the proto's field names; ``metadata`` may be a plain dict."""
    if isinstance(value, str):
        return session_pb2.ParticipantSpec(agent_id=value)
    if isinstance(value, Mapping):
        value = dict(value)
        metadata = value.pop("metadata", None)
        spec = convert.to_message(session_pb2.ParticipantSpec, value, what=what)
        if metadata is not None:
            spec.metadata.CopyFrom(convert.to_struct(metadata))
        return spec
    return convert.to_message(session_pb2.ParticipantSpec, value, what=what)


def workflow_step(value: Any, *, what: str = "step") -> session_pb2.WorkflowStep:
    """A ``WorkflowStep`` from a step name, a dict or a step.

    ``estimated_duration`` in a dict may be seconds, a timedelta or ``"30m"``."""
    if isinstance(value, str):
        return session_pb2.WorkflowStep(name=value)
    if isinstance(value, Mapping):
        value = dict(value)
        duration = value.pop("estimated_duration", value.pop("estimatedDuration", None))
        step = convert.to_message(session_pb2.WorkflowStep, value, what=what)
        if duration is not None:
            step.estimated_duration.CopyFrom(convert.to_duration(duration))
        return step
    return convert.to_message(session_pb2.WorkflowStep, value, what=what)


def _expected(request: Any, expected_version: Optional[int]) -> Any:
    if expected_version is not None:
        request.expected_version = int(expected_version)
    return request


def _session(response: Any) -> session_pb2.Session:
    session: session_pb2.Session = response.session
    return session


# --------------------------------------------------------------------------
# Watch bookkeeping


class Backoff:
    """Exponential backoff with full jitter: ``initial * 2^n`` capped at ``maximum``."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0):
        if initial <= 0 or maximum < initial:
            raise ValueError("backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum

    def delay(self, attempt: int) -> float:
        cap = min(self.maximum, self.initial * (2 ** max(0, attempt - 1)))
        return random.uniform(cap / 2, cap)


class WatchState:
    """Resumption state of one ``watch_sessions`` iterator.

    ``last_sequence`` is the sequence of the last event handed out, or of a
    later heartbeat (or the caller's ``after_sequence``); a reconnect asks for
    events after it, and any
    event at or below it is dropped, so the caller sees each sequence once and
    in increasing order.
    """

    def __init__(
        self,
        *,
        session_ids: Optional[Iterable[str]],
        event_types: Optional[Iterable[Any]],
        after_sequence: Optional[int],
        reconnect: bool,
        max_retries: Optional[int],
        backoff: Backoff,
        retry_codes: Iterable[grpc.StatusCode],
    ):
        if after_sequence is not None and int(after_sequence) < 0:
            raise ValueError("after_sequence cannot be negative")
        self.session_ids = convert.str_list(session_ids, what="session_ids")
        self.event_types = [convert.session_event_type(t) for t in (event_types or ())]
        self.last_sequence: Optional[int] = None if after_sequence is None else int(after_sequence)
        self.reconnect = reconnect
        self.max_retries = max_retries
        self.backoff = backoff
        self.retry_codes = frozenset(retry_codes)
        #: Consecutive failed attempts since the last item received.
        self.failures = 0
        #: Number of times the stream was reopened.
        self.reconnects = 0
        #: The last Heartbeat received (``None`` before the first).
        self.last_heartbeat: Optional[session_service_pb2.Heartbeat] = None

    def request(self) -> session_service_pb2.WatchSessionsRequest:
        req = session_service_pb2.WatchSessionsRequest(session_ids=self.session_ids, event_types=self.event_types)
        if self.last_sequence is not None:
            req.after_sequence = self.last_sequence
        return req

    def accept(self, response: session_service_pb2.WatchSessionsResponse) -> Optional[session_pb2.SessionEvent]:
        """The event to hand out, or ``None`` (heartbeat or duplicate)."""
        self.failures = 0
        kind = response.WhichOneof("kind")
        if kind == "heartbeat":
            self.last_heartbeat = response.heartbeat
            # Every event up to the heartbeat's sequence was sent before it
            # or filtered out: a safe resume point (a live-only watch starts
            # with one, so it is gap-free from the start).
            if self.last_sequence is None or response.heartbeat.last_sequence > self.last_sequence:
                self.last_sequence = response.heartbeat.last_sequence
            return None
        if kind != "event":
            return None
        event = response.event
        if self.last_sequence is not None and event.sequence <= self.last_sequence:
            return None
        self.last_sequence = event.sequence
        return event

    def retry_delay(self, error: Optional[AgentBusError]) -> Optional[float]:
        """Seconds to wait before reconnecting after ``error`` (``None``: the
        stream ended cleanly), or ``None`` to end the iteration; raises
        ``error`` when it must not be retried."""
        if error is not None and (not self.reconnect or error.code not in self.retry_codes):
            raise error
        if error is None and not self.reconnect:
            return None
        self.failures += 1
        if self.max_retries is not None and self.failures > self.max_retries:
            if error is None:
                error = error_for(grpc.StatusCode.UNAVAILABLE, "watch stream ended")
            raise error
        self.reconnects += 1
        return self.backoff.delay(self.failures)
