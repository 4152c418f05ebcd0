"""Every unary call of the API, once, for both clients.

Each function here checks and converts its arguments into a request and
returns a :class:`UnaryCall`: the RPC to make and how to pick the answer out of
the response.  It makes no call itself.  :class:`agentbus.AgentBusClient`
makes the call and returns the answer; :class:`agentbus.aio.AsyncAgentBusClient`
returns an awaitable of it.  Both take their methods from here (see
``unary_method`` in each), so the parameters, defaults and docstrings are
written once and a type checker sees the right return type on each client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar, Union

from google.protobuf.message import Message as ProtoMessage

from agentbus import convert
from agentbus._base import (
    _UNSET,
    DEFAULT_REPLY_TIMEOUT,
    AgentLike,
    MessageLike,
    _expected,
    _message_id,
    _session,
    as_message,
    build_descriptor,
    build_message,
    build_reply,
    participant_spec,
    workflow_step,
)
from agentbus.v1 import (
    agent_pb2,
    agent_service_pb2,
    message_pb2,
    message_service_pb2,
    session_pb2,
    session_service_pb2,
)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class UnaryCall(Generic[T]):
    """One unary RPC to make: ``/agentbus.v1.{service}/{rpc}`` with
    ``request``; ``extract`` turns the response into the method's answer.
    ``timeout`` overrides the client's deadline (``_UNSET``: the client's)."""

    service: str
    rpc: str
    request: ProtoMessage
    extract: Callable[[Any], T]
    timeout: Any = _UNSET


# ---- agents ---------------------------------------------------------

def register_agent(
    agent: Union[str, agent_pb2.AgentDescriptor, Mapping[str, Any]],
    *,
    framework: Optional[str] = None,
    capabilities: Any = None,
    endpoints: Any = None,
    metadata: Any = None,
    health_check_url: Optional[str] = None,
    status_endpoint: Optional[str] = None,
    update: bool = False,
) -> UnaryCall[agent_pb2.Agent]:
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
    return UnaryCall("AgentService", "RegisterAgent", req, lambda r: r.agent)

def unregister_agent(agent_id: str) -> UnaryCall[int]:
    """Removes an agent; returns how many of its messages were dead-lettered."""
    req = agent_service_pb2.UnregisterAgentRequest(agent_id=agent_id)
    return UnaryCall("AgentService", "UnregisterAgent", req, lambda r: r.dead_lettered)

def get_agent(agent_id: str) -> UnaryCall[agent_pb2.Agent]:
    """The registered agent (``NotFoundError`` if it is not registered)."""
    req = agent_service_pb2.GetAgentRequest(agent_id=agent_id)
    return UnaryCall("AgentService", "GetAgent", req, lambda r: r.agent)

def list_agents_page(
    *,
    framework: str = "",
    capability: str = "",
    online: Optional[bool] = None,
    page_size: int = 0,
    page_token: str = "",
) -> UnaryCall[agent_service_pb2.ListAgentsResponse]:
    """One page of agents (``.agents``, ``.next_page_token``)."""
    req = agent_service_pb2.ListAgentsRequest(
        framework=framework or "", capability=capability or "", page_size=page_size, page_token=page_token
    )
    if online is not None:
        req.online = online
    return UnaryCall("AgentService", "ListAgents", req, lambda r: r)

# ---- agent tokens (admin only) --------------------------------------

def issue_agent_token(
    agent_id: str, ttl: Any = None, description: str = ""
) -> UnaryCall[agent_service_pb2.IssueAgentTokenResponse]:
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
    return UnaryCall("AgentService", "IssueAgentToken", req, lambda r: r)

def list_agent_tokens(agent_id: str) -> UnaryCall[list[agent_service_pb2.AgentToken]]:
    """The tokens of ``agent_id``, oldest first (``AgentToken``: ``token_id``,
    ``description``, ``created_at``, ``expires_at``, ``last_used_at``);
    never the token itself."""
    req = agent_service_pb2.ListAgentTokensRequest(agent_id=agent_id)
    return UnaryCall("AgentService", "ListAgentTokens", req, lambda r: list(r.tokens))

def revoke_agent_token(token_id: str, agent_id: Optional[str] = None) -> UnaryCall[None]:
    """Revokes a token at once: its next call fails with
    ``UnauthenticatedError`` and its open streams end with it.  With
    ``agent_id``, the token must belong to that agent (else ``NotFoundError``)."""
    req = agent_service_pb2.RevokeAgentTokenRequest(token_id=token_id, agent_id=agent_id or "")
    return UnaryCall("AgentService", "RevokeAgentToken", req, lambda r: None)

# ---- messages -------------------------------------------------------

def send_message(message: message_pb2.Message, *, timeout: Any = _UNSET) -> UnaryCall[message_service_pb2.SendMessageResponse]:
    """Sends a prebuilt ``Message``; returns the ``SendMessageResponse``."""
    req = message_service_pb2.SendMessageRequest(message=message)
    return UnaryCall("MessageService", "SendMessage", req, lambda r: r, timeout)

def send(
    sender: AgentLike,
    recipient: AgentLike,
    message_type: Any = "task_request",
    payload: Any = None,
    **options: Any,
) -> UnaryCall[message_service_pb2.SendMessageResponse]:
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
    return send_message(build_message(sender, recipient, message_type, payload, **options), timeout=timeout)

def request(
    sender: AgentLike,
    recipient: AgentLike,
    message_type: Any = "task_request",
    payload: Any = None,
    *,
    reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
    **options: Any,
) -> UnaryCall[message_pb2.Message]:
    """Sends a message in SYNC mode and returns the reply ``Message``
    (the first message whose ``in_reply_to`` is this one's id).

    Waits at most ``reply_timeout`` seconds (the call's deadline; the
    server also stops at the routing timeout), then raises
    ``DeadlineExceededError``.  Other arguments as in :meth:`send`.
    """
    options["delivery_mode"] = "sync"
    msg = build_message(sender, recipient, message_type, payload, **options)
    req = message_service_pb2.SendMessageRequest(message=msg)
    return UnaryCall("MessageService", "SendMessage", req, lambda r: r.reply, reply_timeout)

def reply(
    to: Union[message_pb2.Message, message_service_pb2.Delivery],
    payload: Any = None,
    message_type: Any = "task_response",
    **options: Any,
) -> UnaryCall[message_service_pb2.SendMessageResponse]:
    """Answers a received message (or ``Delivery``): from its recipient to
    its sender, ``in_reply_to`` its id, in the same session and task.
    ``message_type`` defaults to ``"task_response"``; use
    ``"status_update"`` for progress and ``"error"`` for failures."""
    timeout = options.pop("timeout", _UNSET)
    return send_message(build_reply(to, payload, message_type, **options), timeout=timeout)

def ack(agent_id: str, message: Any) -> UnaryCall[int]:
    """Acknowledges a delivery (message id, ``Message`` or ``Delivery``) as
    ``agent_id``; returns the ``MessageState`` (idempotent)."""
    req = message_service_pb2.AckMessageRequest(agent_id=agent_id, message_id=_message_id(message))
    return UnaryCall("MessageService", "AckMessage", req, lambda r: r.state)

def ack_many(agent_id: str, messages: Sequence[Any]) -> UnaryCall[list[message_service_pb2.AckResult]]:
    """Acknowledges up to 1000 deliveries (ids, ``Message`` or ``Delivery``)
    as ``agent_id`` in one call and one commit. Returns one ``AckResult``
    per item, in order: ``code`` 0 (``code_name`` ``"OK"``) and the
    ``state``, or the gRPC code, its name (``code_name``, e.g.
    ``"NOT_FOUND"``) and the ``error`` that ``ack`` would have raised for
    that item alone."""
    req = message_service_pb2.AckMessagesRequest(
        agent_id=agent_id, message_ids=[_message_id(m) for m in messages]
    )
    return UnaryCall("MessageService", "AckMessages", req, lambda r: list(r.results))

def send_messages(
    messages: Iterable[MessageLike], *, timeout: Any = _UNSET
) -> UnaryCall[list[message_service_pb2.SendResult]]:
    """Sends 1 to 1000 messages (``Message``s, or dicts of
    :func:`agentbus.build_message`'s arguments) in one call; the server
    writes them together, sharing commits.  Returns one ``SendResult`` per
    message, in order: ``accepted`` with ``message_id`` and ``state``, or
    the gRPC ``code``, its name (``code_name``, e.g. ``"NOT_FOUND"``) and
    the ``error`` that :meth:`send` would have raised for that message
    alone: one refused message leaves the others sent.  SYNC delivery is
    refused per message.  No message or more than 1000 raises
    ``InvalidArgumentError``."""
    req = message_service_pb2.SendMessagesRequest(messages=[as_message(m) for m in messages])
    return UnaryCall("MessageService", "SendMessages", req, lambda r: list(r.results), timeout)

def get_message(message_id: str) -> UnaryCall[message_pb2.MessageStatus]:
    """Delivery bookkeeping of one message (``MessageStatus``)."""
    req = message_service_pb2.GetMessageRequest(message_id=message_id)
    return UnaryCall("MessageService", "GetMessage", req, lambda r: r.status)

# ---- sessions -------------------------------------------------------

def create_session(
    orchestrator: str,
    participants: Optional[Iterable[Any]] = None,
    steps: Optional[Iterable[Any]] = None,
    shared_context: Optional[Mapping[str, Any]] = None,
    *,
    session_id: str = "",
) -> UnaryCall[session_pb2.Session]:
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
    return UnaryCall("SessionService", "CreateSession", req, _session)

def get_session(session_id: str) -> UnaryCall[session_pb2.Session]:
    req = session_service_pb2.GetSessionRequest(session_id=session_id)
    return UnaryCall("SessionService", "GetSession", req, _session)

def list_sessions_page(
    *,
    states: Optional[Iterable[Any]] = None,
    participant: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> UnaryCall[session_service_pb2.ListSessionsResponse]:
    """One page of sessions, oldest first (``.sessions``, ``.next_page_token``).
    ``states`` e.g. ``["active"]``."""
    req = session_service_pb2.ListSessionsRequest(
        states=[convert.session_state(s) for s in (states or ())],
        participant=participant or "",
        page_size=page_size,
        page_token=page_token,
    )
    return UnaryCall("SessionService", "ListSessions", req, lambda r: r)

def add_participant(
    session_id: str,
    participant: Any,
    *,
    role: Optional[str] = None,
    framework: Optional[str] = None,
    capabilities: Optional[Iterable[str]] = None,
    metadata: Optional[Mapping[str, Any]] = None,
    expected_version: Optional[int] = None,
) -> UnaryCall[session_pb2.Session]:
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
    return UnaryCall("SessionService", "AddParticipant", req, _session)

def remove_participant(session_id: str, agent_id: str, *, expected_version: Optional[int] = None) -> UnaryCall[session_pb2.Session]:
    """Marks the participant ``left`` (the orchestrator cannot leave)."""
    req = _expected(
        session_service_pb2.RemoveParticipantRequest(session_id=session_id, agent_id=agent_id), expected_version
    )
    return UnaryCall("SessionService", "RemoveParticipant", req, _session)

def update_workflow(
    session_id: str,
    *,
    current_step: str = "",
    completed_steps: Optional[Iterable[str]] = None,
    pending_steps: Optional[Iterable[str]] = None,
    expected_version: Optional[int] = None,
) -> UnaryCall[session_pb2.Session]:
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
    return UnaryCall("SessionService", "UpdateWorkflow", req, _session)

def advance_workflow(
    session_id: str, next_step: str = "", *, expected_version: Optional[int] = None
) -> UnaryCall[session_pb2.Session]:
    """Completes the current step and starts ``next_step`` (default: the
    first pending one)."""
    req = _expected(
        session_service_pb2.AdvanceWorkflowRequest(session_id=session_id, next_step=next_step or ""),
        expected_version,
    )
    return UnaryCall("SessionService", "AdvanceWorkflow", req, _session)

def update_shared_context(
    session_id: str,
    context: Mapping[str, Any],
    *,
    mode: Any = "replace",
    expected_version: Optional[int] = None,
) -> UnaryCall[session_pb2.Session]:
    """Replaces the shared context with ``context`` (``mode="merge"``:
    applies it as an RFC 7386 merge patch, see :meth:`merge_shared_context`)."""
    req = _expected(
        session_service_pb2.UpdateSharedContextRequest(
            session_id=session_id, context=convert.to_struct(context), mode=convert.context_update_mode(mode)
        ),
        expected_version,
    )
    return UnaryCall("SessionService", "UpdateSharedContext", req, _session)

def merge_shared_context(
    session_id: str, patch: Mapping[str, Any], *, expected_version: Optional[int] = None
) -> UnaryCall[session_pb2.Session]:
    """Merges ``patch`` into the shared context (objects merge recursively,
    ``None`` deletes a key)."""
    return update_shared_context(session_id, patch, mode="merge", expected_version=expected_version)

def complete_session(
    session_id: str,
    summary: str = "",
    artifacts: Optional[Iterable[str]] = None,
    *,
    expected_version: Optional[int] = None,
) -> UnaryCall[session_pb2.Session]:
    """Ends the session as COMPLETED with a summary and artifacts."""
    req = _expected(
        session_service_pb2.CompleteSessionRequest(
            session_id=session_id, summary=summary or "", artifacts=convert.str_list(artifacts, what="artifacts")
        ),
        expected_version,
    )
    return UnaryCall("SessionService", "CompleteSession", req, _session)

def terminate_session(
    session_id: str, reason: str, details: str = "", *, expected_version: Optional[int] = None
) -> UnaryCall[session_pb2.Session]:
    """Ends the session as TERMINATED; ``reason`` (e.g. ``"timeout"``) is required."""
    req = _expected(
        session_service_pb2.TerminateSessionRequest(session_id=session_id, reason=reason, details=details or ""),
        expected_version,
    )
    return UnaryCall("SessionService", "TerminateSession", req, _session)

# ---- results and summaries -------------------------------------------

def aggregate_results(
    session_id: str,
    *,
    task_ids: Optional[Iterable[str]] = None,
    step: Optional[str] = None,
    strategy: Any = "consensus",
    specialist: Optional[str] = None,
    require_complete: bool = False,
    expected_version: Optional[int] = None,
) -> UnaryCall[session_service_pb2.AggregateResultsResponse]:
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
    return UnaryCall("SessionService", "AggregateResults", req, lambda r: r)

def resolve_aggregation(
    session_id: str,
    aggregation_id: str,
    chosen_task_id: str,
    note: str = "",
    *,
    expected_version: Optional[int] = None,
) -> UnaryCall[session_service_pb2.ResolveAggregationResponse]:
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
    return UnaryCall("SessionService", "ResolveAggregation", req, lambda r: r)

def get_session_summary(session_id: str) -> UnaryCall[session_service_pb2.GetSessionSummaryResponse]:
    """The executive summary of an ended session: the
    ``GetSessionSummaryResponse`` with ``.summary`` (``ExecutiveSummary``:
    outcome, steps, unresolved conflicts, totals, ...) and ``.markdown``
    (the same, for a person to read).  ``FailedPreconditionError`` while
    the session is still active; an ended ``Session`` also carries it as
    ``executive_summary``."""
    req = session_service_pb2.GetSessionSummaryRequest(session_id=session_id)
    return UnaryCall("SessionService", "GetSessionSummary", req, lambda r: r)


# --------------------------------------------------------------------------
# Turning the calls into client methods


def as_method(method: F, build: Callable[..., Any], owner: str) -> F:
    """Gives ``method`` (``self, *args, **kwargs``) the name, docstring and
    signature of ``build`` with ``self`` in front and the answer's type as its
    return annotation, so ``help()`` and ``inspect.signature`` show the real
    parameters."""
    method.__name__ = build.__name__
    method.__qualname__ = f"{owner}.{build.__name__}"
    method.__doc__ = build.__doc__
    method.__module__ = build.__module__
    sig = inspect.signature(build)
    answer = sig.return_annotation
    if isinstance(answer, str) and answer.startswith("UnaryCall[") and answer.endswith("]"):
        answer = answer[len("UnaryCall[") : -1]
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    setattr(
        method,
        "__signature__",
        sig.replace(parameters=[self_param, *sig.parameters.values()], return_annotation=answer),
    )
    return method
