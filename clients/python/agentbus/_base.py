"""What the sync and the asyncio client share.

:class:`ClientBase` defines every unary method once.  Each goes through
``self._unary(service, rpc, request, extract)``: the sync client runs the call
and returns ``extract(response)``; the asyncio client's ``_unary`` is a
coroutine function, so the same methods return awaitables there.

The request builders and the watch bookkeeping (:class:`WatchState`) are pure
and shared too.
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
    return response.session


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


# --------------------------------------------------------------------------
# The shared unary API


class ClientBase:
    """Unary methods shared by :class:`agentbus.AgentBusClient` and
    :class:`agentbus.aio.AsyncAgentBusClient` (where each returns an awaitable)."""

    def _unary(self, service: str, rpc: str, request: Any, extract: Any, timeout: Any = _UNSET) -> Any:
        raise NotImplementedError

    # ---- agents ---------------------------------------------------------

    def register_agent(
        self,
        agent: Union[str, agent_pb2.AgentDescriptor, Mapping[str, Any]],
        *,
        framework: Optional[str] = None,
        capabilities: Any = None,
        endpoints: Any = None,
        metadata: Any = None,
        health_check_url: Optional[str] = None,
        status_endpoint: Optional[str] = None,
        update: bool = False,
    ) -> agent_pb2.Agent:
        """Registers an agent and returns it (``Agent``).

        ``agent`` is an agent id, a dict or an ``AgentDescriptor``;
        ``capabilities``, ``endpoints`` and ``metadata`` may be dicts, e.g.
        ``capabilities={"languages": ["python"], "performance_profile":
        {"avg_response_time": "2.5s", "success_rate": 0.95}}``.
        An already registered id raises ``AlreadyExistsError`` unless
        ``update=True``, which replaces the descriptor.
        """
        desc = build_descriptor(
            agent,
            framework=framework,
            capabilities=capabilities,
            endpoints=endpoints,
            metadata=metadata,
            health_check_url=health_check_url,
            status_endpoint=status_endpoint,
        )
        req = agent_service_pb2.RegisterAgentRequest(agent=desc, update=update)
        return self._unary("AgentService", "RegisterAgent", req, lambda r: r.agent)

    def unregister_agent(self, agent_id: str) -> int:
        """Removes an agent; returns how many of its messages were dead-lettered."""
        req = agent_service_pb2.UnregisterAgentRequest(agent_id=agent_id)
        return self._unary("AgentService", "UnregisterAgent", req, lambda r: r.dead_lettered)

    def get_agent(self, agent_id: str) -> agent_pb2.Agent:
        """The registered agent (``NotFoundError`` if it is not registered)."""
        req = agent_service_pb2.GetAgentRequest(agent_id=agent_id)
        return self._unary("AgentService", "GetAgent", req, lambda r: r.agent)

    def list_agents_page(
        self,
        *,
        framework: str = "",
        capability: str = "",
        online: Optional[bool] = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> agent_service_pb2.ListAgentsResponse:
        """One page of agents (``.agents``, ``.next_page_token``)."""
        req = agent_service_pb2.ListAgentsRequest(
            framework=framework or "", capability=capability or "", page_size=page_size, page_token=page_token
        )
        if online is not None:
            req.online = online
        return self._unary("AgentService", "ListAgents", req, lambda r: r)

    # ---- agent tokens (admin only) --------------------------------------

    def issue_agent_token(
        self, agent_id: str, ttl: Any = None, description: str = ""
    ) -> agent_service_pb2.IssueAgentTokenResponse:
        """Issues a token that authenticates its holder as ``agent_id`` (which
        need not be registered yet).  Returns the ``IssueAgentTokenResponse``:
        ``.token`` (``abt_...``, shown only this once: pass it as ``token=`` to
        a client), ``.token_id`` and ``.expires_at`` (unset without ``ttl``).

        ``ttl``: how long the token is valid (seconds, a timedelta or
        ``"24h"``); ``None``: until revoked.
        """
        req = agent_service_pb2.IssueAgentTokenRequest(agent_id=agent_id, description=description or "")
        if ttl is not None:
            req.ttl.CopyFrom(convert.to_duration(ttl))
        return self._unary("AgentService", "IssueAgentToken", req, lambda r: r)

    def list_agent_tokens(self, agent_id: str) -> list[agent_service_pb2.AgentToken]:
        """The tokens of ``agent_id``, oldest first (``AgentToken``: ``token_id``,
        ``description``, ``created_at``, ``expires_at``, ``last_used_at``);
        never the token itself."""
        req = agent_service_pb2.ListAgentTokensRequest(agent_id=agent_id)
        return self._unary("AgentService", "ListAgentTokens", req, lambda r: list(r.tokens))

    def revoke_agent_token(self, token_id: str, agent_id: Optional[str] = None) -> None:
        """Revokes a token at once: its next call fails with
        ``UnauthenticatedError`` and its open streams end with it.  With
        ``agent_id``, the token must belong to that agent (else ``NotFoundError``)."""
        req = agent_service_pb2.RevokeAgentTokenRequest(token_id=token_id, agent_id=agent_id or "")
        return self._unary("AgentService", "RevokeAgentToken", req, lambda r: None)

    # ---- messages -------------------------------------------------------

    def send_message(self, message: message_pb2.Message, *, timeout: Any = _UNSET) -> message_service_pb2.SendMessageResponse:
        """Sends a prebuilt ``Message``; returns the ``SendMessageResponse``."""
        req = message_service_pb2.SendMessageRequest(message=message)
        return self._unary("MessageService", "SendMessage", req, lambda r: r, timeout)

    def send(
        self,
        sender: AgentLike,
        recipient: AgentLike,
        message_type: Any = "task_request",
        payload: Any = None,
        **options: Any,
    ) -> message_service_pb2.SendMessageResponse:
        """Sends a message and returns the ``SendMessageResponse``
        (``accepted``, ``message_id``, ``state``).

        Takes the arguments of :func:`agentbus.build_message`, e.g.::

            client.send("claude-code://orchestrator", "opencode://backend",
                        "task_request", {"task_type": "implementation"},
                        session_id=sid, priority="high", routing_timeout="300s")

        With ``delivery_mode="sync"`` the call blocks until the reply arrives
        (see :meth:`request`, which returns just the reply).  ``timeout=``
        overrides the client's call deadline for this call.
        """
        timeout = options.pop("timeout", _UNSET)
        return self.send_message(build_message(sender, recipient, message_type, payload, **options), timeout=timeout)

    def request(
        self,
        sender: AgentLike,
        recipient: AgentLike,
        message_type: Any = "task_request",
        payload: Any = None,
        *,
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
        **options: Any,
    ) -> message_pb2.Message:
        """Sends a message in SYNC mode and returns the reply ``Message``
        (the first message whose ``in_reply_to`` is this one's id).

        Waits at most ``reply_timeout`` seconds (the call's deadline; the
        server also stops at the routing timeout), then raises
        ``DeadlineExceededError``.  Other arguments as in :meth:`send`.
        """
        options["delivery_mode"] = "sync"
        msg = build_message(sender, recipient, message_type, payload, **options)
        req = message_service_pb2.SendMessageRequest(message=msg)
        return self._unary("MessageService", "SendMessage", req, lambda r: r.reply, reply_timeout)

    def reply(
        self,
        to: Union[message_pb2.Message, message_service_pb2.Delivery],
        payload: Any = None,
        message_type: Any = "task_response",
        **options: Any,
    ) -> message_service_pb2.SendMessageResponse:
        """Answers a received message (or ``Delivery``): from its recipient to
        its sender, ``in_reply_to`` its id, in the same session and task.
        ``message_type`` defaults to ``"task_response"``; use
        ``"status_update"`` for progress and ``"error"`` for failures."""
        timeout = options.pop("timeout", _UNSET)
        return self.send_message(build_reply(to, payload, message_type, **options), timeout=timeout)

    def ack(self, agent_id: str, message: Any) -> int:
        """Acknowledges a delivery (message id, ``Message`` or ``Delivery``) as
        ``agent_id``; returns the ``MessageState`` (idempotent)."""
        req = message_service_pb2.AckMessageRequest(agent_id=agent_id, message_id=_message_id(message))
        return self._unary("MessageService", "AckMessage", req, lambda r: r.state)

    def ack_many(self, agent_id: str, messages: Sequence[Any]) -> list[message_service_pb2.AckResult]:
        """Acknowledges up to 1000 deliveries (ids, ``Message`` or ``Delivery``)
        as ``agent_id`` in one call and one commit. Returns one ``AckResult``
        per item, in order: ``code`` 0 (``code_name`` ``"OK"``) and the
        ``state``, or the gRPC code, its name (``code_name``, e.g.
        ``"NOT_FOUND"``) and the ``error`` that ``ack`` would have raised for
        that item alone."""
        req = message_service_pb2.AckMessagesRequest(
            agent_id=agent_id, message_ids=[_message_id(m) for m in messages]
        )
        return self._unary("MessageService", "AckMessages", req, lambda r: list(r.results))

    def get_message(self, message_id: str) -> message_pb2.MessageStatus:
        """Delivery bookkeeping of one message (``MessageStatus``)."""
        req = message_service_pb2.GetMessageRequest(message_id=message_id)
        return self._unary("MessageService", "GetMessage", req, lambda r: r.status)

    # ---- sessions -------------------------------------------------------

    def create_session(
        self,
        orchestrator: str,
        participants: Optional[Iterable[Any]] = None,
        steps: Optional[Iterable[Any]] = None,
        shared_context: Optional[Mapping[str, Any]] = None,
        *,
        session_id: str = "",
    ) -> session_pb2.Session:
        """Creates a session and returns it.

        ``participants``: agent ids, dicts (``{"agent_id": ..., "role":
        "implementer"}``) or ``ParticipantSpec``s.  ``steps``: step names,
        dicts (``{"name": "design", "required_agents": [...]}``) or
        ``WorkflowStep``s; the first becomes current.  ``shared_context``: a
        dict.  ``session_id`` is optional (else ``sess_<uuid>``).
        """
        req = session_service_pb2.CreateSessionRequest(
            session_id=session_id or "",
            orchestrator=orchestrator,
            participants=[participant_spec(p, what=f"participants[{i}]") for i, p in enumerate(participants or ())],
            steps=[workflow_step(s, what=f"steps[{i}]") for i, s in enumerate(steps or ())],
        )
        if shared_context is not None:
            req.shared_context.CopyFrom(convert.to_struct(shared_context))
        return self._unary("SessionService", "CreateSession", req, _session)

    def get_session(self, session_id: str) -> session_pb2.Session:
        req = session_service_pb2.GetSessionRequest(session_id=session_id)
        return self._unary("SessionService", "GetSession", req, _session)

    def list_sessions_page(
        self,
        *,
        states: Optional[Iterable[Any]] = None,
        participant: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> session_service_pb2.ListSessionsResponse:
        """One page of sessions, oldest first (``.sessions``, ``.next_page_token``).
        ``states`` e.g. ``["active"]``."""
        req = session_service_pb2.ListSessionsRequest(
            states=[convert.session_state(s) for s in (states or ())],
            participant=participant or "",
            page_size=page_size,
            page_token=page_token,
        )
        return self._unary("SessionService", "ListSessions", req, lambda r: r)

    def add_participant(
        self,
        session_id: str,
        participant: Any,
        *,
        role: Optional[str] = None,
        framework: Optional[str] = None,
        capabilities: Optional[Iterable[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        expected_version: Optional[int] = None,
    ) -> session_pb2.Session:
        """Adds (or re-adds) an agent; ``participant`` is an agent id, a dict
        or a ``ParticipantSpec``; keyword arguments override its fields."""
        spec = participant_spec(participant)
        if role is not None:
            spec.role = role
        if framework is not None:
            spec.framework = framework
        if capabilities is not None:
            spec.capabilities[:] = convert.str_list(capabilities, what="capabilities")
        if metadata is not None:
            spec.metadata.CopyFrom(convert.to_struct(metadata))
        req = _expected(session_service_pb2.AddParticipantRequest(session_id=session_id, participant=spec), expected_version)
        return self._unary("SessionService", "AddParticipant", req, _session)

    def remove_participant(self, session_id: str, agent_id: str, *, expected_version: Optional[int] = None) -> session_pb2.Session:
        """Marks the participant ``left`` (the orchestrator cannot leave)."""
        req = _expected(
            session_service_pb2.RemoveParticipantRequest(session_id=session_id, agent_id=agent_id), expected_version
        )
        return self._unary("SessionService", "RemoveParticipant", req, _session)

    def update_workflow(
        self,
        session_id: str,
        *,
        current_step: str = "",
        completed_steps: Optional[Iterable[str]] = None,
        pending_steps: Optional[Iterable[str]] = None,
        expected_version: Optional[int] = None,
    ) -> session_pb2.Session:
        """Sets the workflow's current, completed and pending steps as given."""
        req = _expected(
            session_service_pb2.UpdateWorkflowRequest(
                session_id=session_id,
                current_step=current_step or "",
                completed_steps=convert.str_list(completed_steps, what="completed_steps"),
                pending_steps=convert.str_list(pending_steps, what="pending_steps"),
            ),
            expected_version,
        )
        return self._unary("SessionService", "UpdateWorkflow", req, _session)

    def advance_workflow(
        self, session_id: str, next_step: str = "", *, expected_version: Optional[int] = None
    ) -> session_pb2.Session:
        """Completes the current step and starts ``next_step`` (default: the
        first pending one)."""
        req = _expected(
            session_service_pb2.AdvanceWorkflowRequest(session_id=session_id, next_step=next_step or ""),
            expected_version,
        )
        return self._unary("SessionService", "AdvanceWorkflow", req, _session)

    def update_shared_context(
        self,
        session_id: str,
        context: Mapping[str, Any],
        *,
        mode: Any = "replace",
        expected_version: Optional[int] = None,
    ) -> session_pb2.Session:
        """Replaces the shared context with ``context`` (``mode="merge"``:
        applies it as an RFC 7386 merge patch, see :meth:`merge_shared_context`)."""
        req = _expected(
            session_service_pb2.UpdateSharedContextRequest(
                session_id=session_id, context=convert.to_struct(context), mode=convert.context_update_mode(mode)
            ),
            expected_version,
        )
        return self._unary("SessionService", "UpdateSharedContext", req, _session)

    def merge_shared_context(
        self, session_id: str, patch: Mapping[str, Any], *, expected_version: Optional[int] = None
    ) -> session_pb2.Session:
        """Merges ``patch`` into the shared context (objects merge recursively,
        ``None`` deletes a key)."""
        return self.update_shared_context(session_id, patch, mode="merge", expected_version=expected_version)

    def complete_session(
        self,
        session_id: str,
        summary: str = "",
        artifacts: Optional[Iterable[str]] = None,
        *,
        expected_version: Optional[int] = None,
    ) -> session_pb2.Session:
        """Ends the session as COMPLETED with a summary and artifacts."""
        req = _expected(
            session_service_pb2.CompleteSessionRequest(
                session_id=session_id, summary=summary or "", artifacts=convert.str_list(artifacts, what="artifacts")
            ),
            expected_version,
        )
        return self._unary("SessionService", "CompleteSession", req, _session)

    def terminate_session(
        self, session_id: str, reason: str, details: str = "", *, expected_version: Optional[int] = None
    ) -> session_pb2.Session:
        """Ends the session as TERMINATED; ``reason`` (e.g. ``"timeout"``) is required."""
        req = _expected(
            session_service_pb2.TerminateSessionRequest(session_id=session_id, reason=reason, details=details or ""),
            expected_version,
        )
        return self._unary("SessionService", "TerminateSession", req, _session)

    # ---- results and summaries -------------------------------------------

    def aggregate_results(
        self,
        session_id: str,
        *,
        task_ids: Optional[Iterable[str]] = None,
        step: Optional[str] = None,
        strategy: Any = "consensus",
        specialist: Optional[str] = None,
        require_complete: bool = False,
        expected_version: Optional[int] = None,
    ) -> session_service_pb2.AggregateResultsResponse:
        """Combines the results of the session's tasks into one answer
        (orchestrator only) and returns the ``AggregateResultsResponse``:
        ``.aggregation`` (``result``, ``confidence``, ``conflicts``,
        ``candidates``, ``missing_task_ids``, ...) and ``.session``.

        Which tasks: ``task_ids``; else the tasks of ``step``; else every task
        of the session.  ``strategy``: ``"consensus"`` (default: the most
        frequent successful result), ``"specialist_priority"`` (the
        ``specialist`` agent's result), ``"confidence_weighted"`` (the
        confidence-weighted mean of numeric results) or ``"manual"`` (no
        result: pick one with :meth:`resolve_aggregation`).  A task's result,
        confidence and approach come from the ``{"result": ..., "confidence":
        0.9, "approach": "..."}`` payload of its ``task_response``.

        Tasks still running are listed in ``missing_task_ids``; with
        ``require_complete=True`` the call raises ``FailedPreconditionError``
        instead.  ``agentbus.to_python(aggregation.result)`` gives the result
        as plain Python.
        """
        req = _expected(
            session_service_pb2.AggregateResultsRequest(
                session_id=session_id,
                task_ids=convert.str_list(task_ids, what="task_ids"),
                step=step or "",
                strategy=convert.aggregation_strategy(strategy),
                specialist=specialist or "",
                require_complete=bool(require_complete),
            ),
            expected_version,
        )
        return self._unary("SessionService", "AggregateResults", req, lambda r: r)

    def resolve_aggregation(
        self,
        session_id: str,
        aggregation_id: str,
        chosen_task_id: str,
        note: str = "",
        *,
        expected_version: Optional[int] = None,
    ) -> session_service_pb2.ResolveAggregationResponse:
        """Records the orchestrator's pick for an aggregation (a ``"manual"``
        one, or to overrule another strategy): the result of
        ``chosen_task_id``, one of the aggregation's candidates.  Returns the
        ``ResolveAggregationResponse`` (``.aggregation`` with ``resolution``
        set, ``.session``)."""
        req = _expected(
            session_service_pb2.ResolveAggregationRequest(
                session_id=session_id,
                aggregation_id=aggregation_id,
                chosen_task_id=chosen_task_id,
                note=note or "",
            ),
            expected_version,
        )
        return self._unary("SessionService", "ResolveAggregation", req, lambda r: r)

    def get_session_summary(self, session_id: str) -> session_service_pb2.GetSessionSummaryResponse:
        """The executive summary of an ended session: the
        ``GetSessionSummaryResponse`` with ``.summary`` (``ExecutiveSummary``:
        outcome, steps, unresolved conflicts, totals, ...) and ``.markdown``
        (the same, for a person to read).  ``FailedPreconditionError`` while
        the session is still active; an ended ``Session`` also carries it as
        ``executive_summary``."""
        req = session_service_pb2.GetSessionSummaryRequest(session_id=session_id)
        return self._unary("SessionService", "GetSessionSummary", req, lambda r: r)
