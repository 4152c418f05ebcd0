"""Python client for agentbus, the gRPC bus through which AI agents exchange
messages and coordinate in sessions.

* :class:`AgentBusClient` (sync, ``grpc``) and
  :class:`agentbus.aio.AsyncAgentBusClient` (``grpc.aio``): the same methods.
* :class:`AgentBusError` and its subclasses: every failed call.
* Helpers for plain Python values: :func:`to_value`, :func:`to_struct`,
  :func:`to_python`, :func:`payload_of`, :func:`build_message`.
* The generated protobuf modules: ``agentbus.v1.*_pb2`` and ``*_pb2_grpc``.
"""

from agentbus import convert
from agentbus._base import DEFAULT_ADDRESS, RETRYABLE_WATCH_CODES, build_message, build_reply
from agentbus.aio import AsyncAgentBusClient
from agentbus.client import AgentBusClient, Inbox, SessionWatch, connect
from agentbus.convert import payload_of, to_datetime, to_duration, to_python, to_struct, to_value
from agentbus.errors import (
    AbortedError,
    AgentBusError,
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from agentbus.v1 import message_pb2, session_pb2

__version__ = "0.1.0"


def event_type_name(value: int) -> str:
    """``SESSION_EVENT_TYPE_TASK_DELEGATED`` -> ``"task_delegated"``."""
    return convert.enum_name(session_pb2.SessionEventType, value, "SESSION_EVENT_TYPE_")


def message_type_name(value: int) -> str:
    """``MESSAGE_TYPE_TASK_REQUEST`` -> ``"task_request"``."""
    return convert.enum_name(message_pb2.MessageType, value, "MESSAGE_TYPE_")


def state_name(value: int, enum: str = "session") -> str:
    """Short name of a ``SessionState`` (``enum="session"``), ``MessageState``
    (``"message"``), ``TaskState`` (``"task"``), ``ParticipantStatus``
    (``"participant"``), ``AggregationStrategy`` (``"strategy"``) or
    ``ConflictKind`` (``"conflict"``) value: ``"active"``, ``"acked"``,
    ``"completed"``, ``"consensus"``, ``"result_disagreement"``..."""
    table = {
        "session": (session_pb2.SessionState, "SESSION_STATE_"),
        "message": (message_pb2.MessageState, "MESSAGE_STATE_"),
        "task": (session_pb2.TaskState, "TASK_STATE_"),
        "participant": (session_pb2.ParticipantStatus, "PARTICIPANT_STATUS_"),
        "strategy": (session_pb2.AggregationStrategy, "AGGREGATION_STRATEGY_"),
        "conflict": (session_pb2.ConflictKind, "CONFLICT_KIND_"),
    }
    wrapper, prefix = table[enum]
    return convert.enum_name(wrapper, value, prefix)


__all__ = [
    "AgentBusClient",
    "AsyncAgentBusClient",
    "Inbox",
    "SessionWatch",
    "connect",
    "AgentBusError",
    "InvalidArgumentError",
    "NotFoundError",
    "AlreadyExistsError",
    "FailedPreconditionError",
    "AbortedError",
    "ResourceExhaustedError",
    "OutOfRangeError",
    "UnauthenticatedError",
    "PermissionDeniedError",
    "DeadlineExceededError",
    "UnavailableError",
    "CancelledError",
    "build_message",
    "build_reply",
    "to_value",
    "to_struct",
    "to_python",
    "to_duration",
    "to_datetime",
    "payload_of",
    "event_type_name",
    "message_type_name",
    "state_name",
    "convert",
    "DEFAULT_ADDRESS",
    "RETRYABLE_WATCH_CODES",
    "__version__",
]
