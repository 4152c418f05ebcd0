"""The exceptions the client raises for failed calls.

Every failed RPC raises :class:`AgentBusError` (or one of its subclasses, one
per common status code) carrying the gRPC status ``code`` and the server's
``message``.  Catch the base class, or a subclass::

    try:
        client.get_session("sess_missing")
    except agentbus.NotFoundError as err:
        print(err.code, err.message)   # StatusCode.NOT_FOUND session sess_missing ...
"""

from __future__ import annotations

from typing import Optional

import grpc

__all__ = [
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
    "from_rpc_error",
]


class AgentBusError(Exception):
    """A call to the bus failed.

    Attributes:
        code: the ``grpc.StatusCode`` of the failure.
        message: the server's status message (``details`` in gRPC terms).
        method: the RPC, e.g. ``/agentbus.v1.SessionService/GetSession``, when known.
    """

    #: The status code this class stands for (``None`` on the base class).
    CODE: Optional[grpc.StatusCode] = None

    def __init__(self, code: grpc.StatusCode, message: str, *, method: Optional[str] = None):
        self.code = code
        self.message = message or ""
        self.method = method
        super().__init__(f"{code.name}: {self.message}" if self.message else code.name)

    @property
    def code_name(self) -> str:
        """``"NOT_FOUND"`` and so on."""
        return self.code.name

    @property
    def details(self) -> str:
        """Alias of :attr:`message`, as gRPC calls it."""
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.name}, message={self.message!r})"


class InvalidArgumentError(AgentBusError):
    """A malformed field; the message starts with the field path."""

    CODE = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(AgentBusError):
    """Unknown session, participant, agent or message."""

    CODE = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(AgentBusError):
    """Session id taken, agent registered, participant active, message id reused."""

    CODE = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(AgentBusError):
    """E.g. the session already ended, or the sender is not a participant."""

    CODE = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(AgentBusError):
    """``expected_version`` did not match; nothing changed."""

    CODE = grpc.StatusCode.ABORTED


class ResourceExhaustedError(AgentBusError):
    """A limit was hit (participants, context size, inbox)."""

    CODE = grpc.StatusCode.RESOURCE_EXHAUSTED


class OutOfRangeError(AgentBusError):
    """E.g. ``after_sequence`` beyond the latest event."""

    CODE = grpc.StatusCode.OUT_OF_RANGE


class UnauthenticatedError(AgentBusError):
    """Missing or wrong API key or agent token (also a revoked or expired token)."""

    CODE = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(AgentBusError):
    """The caller may not do this, e.g. an agent token acting as another agent
    or calling an admin-only method."""

    CODE = grpc.StatusCode.PERMISSION_DENIED


class DeadlineExceededError(AgentBusError):
    """The call's deadline passed, or a sync request got no reply in time."""

    CODE = grpc.StatusCode.DEADLINE_EXCEEDED


class UnavailableError(AgentBusError):
    """The server cannot be reached or is shutting down."""

    CODE = grpc.StatusCode.UNAVAILABLE


class CancelledError(AgentBusError):
    """The call was cancelled (e.g. a stream closed by this client)."""

    CODE = grpc.StatusCode.CANCELLED


_BY_CODE = {
    cls.CODE: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        AbortedError,
        ResourceExhaustedError,
        OutOfRangeError,
        UnauthenticatedError,
        PermissionDeniedError,
        DeadlineExceededError,
        UnavailableError,
        CancelledError,
    )
}


def error_for(code: grpc.StatusCode, message: str, *, method: Optional[str] = None) -> AgentBusError:
    """The exception (subclass) for ``code``."""
    return _BY_CODE.get(code, AgentBusError)(code, message, method=method)


def from_rpc_error(exc: grpc.RpcError, *, method: Optional[str] = None) -> AgentBusError:
    """Converts a ``grpc.RpcError`` (sync or aio) into an :class:`AgentBusError`."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    return error_for(code, details or "", method=method)
