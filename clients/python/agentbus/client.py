"""The synchronous client (``grpc``), :class:`AgentBusClient`.

::

    from agentbus import AgentBusClient

    with AgentBusClient("127.0.0.1:8080", api_key="dev-key") as bus:
        bus.register_agent("opencode://backend")
        session = bus.create_session("claude-code://orchestrator", ["opencode://backend"])

The unary methods come from :mod:`agentbus._calls`, where they are documented.
Failed calls raise :class:`agentbus.AgentBusError` (a subclass per status code).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Concatenate, Optional, ParamSpec, Sequence, TypeVar

import grpc

from agentbus import _calls
from agentbus._base import (
    _UNSET,
    DEFAULT_TIMEOUT,
    RETRYABLE_WATCH_CODES,
    Backoff,
    MessageLike,
    WatchState,
    as_message,
    auth_metadata,
    channel_options,
    parse_address,
    tls_credentials,
)
from agentbus.errors import AgentBusError, UnavailableError, from_rpc_error
from agentbus.v1 import (
    agent_pb2,
    agent_service_pb2_grpc,
    message_service_pb2,
    message_service_pb2_grpc,
    session_pb2,
    session_service_pb2,
    session_service_pb2_grpc,
)

__all__ = ["AgentBusClient", "Inbox", "SessionWatch", "connect"]

_ITEM, _END, _ERROR = "item", "end", "error"

P = ParamSpec("P")
T = TypeVar("T")


def unary_method(build: Callable[P, _calls.UnaryCall[T]]) -> Callable[Concatenate[AgentBusClient, P], T]:
    """The :class:`AgentBusClient` method of one of :mod:`agentbus._calls`:
    same parameters, makes the call and returns the answer."""

    def method(self: AgentBusClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(build(*args, **kwargs))

    return _calls.as_method(method, build, "AgentBusClient")


class AgentBusClient:
    """A connection to an agentbus server.

    Args:
        address: ``host:port``, ``http://host:port`` or ``https://host:port``
            (TLS); default ``$AGENT_BUS_URL`` or ``127.0.0.1:8080``.
        api_key: the bus's API key (admin), sent as ``x-agent-api-key``
            metadata with every call.
        token: an agent token (``abt_...``, see :meth:`issue_agent_token`),
            sent as ``authorization: Bearer <token>`` with every call: the
            calls act as that agent.  Give ``api_key`` or ``token``, not both.
        timeout: deadline of unary calls in seconds (``None``: no deadline).
        secure: force TLS on or off (default: from the address scheme).
        credentials: ``grpc.ChannelCredentials`` for TLS (default: system roots).
        ca_file: PEM file of the CA to trust for TLS instead of the system's roots.
        cert_file, key_file: PEM client certificate and key, for mutual TLS.
        options: extra gRPC channel options.
        channel: use this ``grpc.Channel`` instead of making one.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        address: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        token: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        secure: Optional[bool] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        options: Optional[Sequence[tuple[str, Any]]] = None,
        channel: Optional[grpc.Channel] = None,
    ):
        target, scheme_secure = parse_address(address)
        self.address = target
        self.timeout = timeout
        self._metadata = auth_metadata(api_key, token)
        credentials = tls_credentials(credentials, ca_file, cert_file, key_file)
        if channel is None:
            opts = channel_options(options)
            if secure or credentials is not None or (secure is None and scheme_secure):
                channel = grpc.secure_channel(target, credentials or grpc.ssl_channel_credentials(), options=opts)
            else:
                channel = grpc.insecure_channel(target, options=opts)
        self.channel = channel
        self._stubs = {
            "AgentService": agent_service_pb2_grpc.AgentServiceStub(channel),
            "MessageService": message_service_pb2_grpc.MessageServiceStub(channel),
            "SessionService": session_service_pb2_grpc.SessionServiceStub(channel),
        }

    # ---- plumbing -------------------------------------------------------

    def _call(self, call: _calls.UnaryCall[T]) -> T:
        method = getattr(self._stubs[call.service], call.rpc)
        timeout = self.timeout if call.timeout is _UNSET else call.timeout
        try:
            response = method(call.request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method=f"/agentbus.v1.{call.service}/{call.rpc}") from exc
        return call.extract(response)

    def _stream(self, service: str, rpc: str, request: Any) -> Any:
        return getattr(self._stubs[service], rpc)(request, metadata=self._metadata)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Blocks until the channel is connected; ``UnavailableError`` after ``timeout``."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, f"{self.address} not reachable in {timeout}s") from None

    def close(self) -> None:
        """Closes the channel (open streams end)."""
        self.channel.close()

    def __enter__(self) -> "AgentBusClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- agents -----------------------------------------------------

    register_agent = unary_method(_calls.register_agent)
    unregister_agent = unary_method(_calls.unregister_agent)
    get_agent = unary_method(_calls.get_agent)
    list_agents_page = unary_method(_calls.list_agents_page)
    issue_agent_token = unary_method(_calls.issue_agent_token)
    list_agent_tokens = unary_method(_calls.list_agent_tokens)
    revoke_agent_token = unary_method(_calls.revoke_agent_token)

    # ---- messages ---------------------------------------------------

    send_message = unary_method(_calls.send_message)
    send = unary_method(_calls.send)
    request = unary_method(_calls.request)
    reply = unary_method(_calls.reply)
    ack = unary_method(_calls.ack)
    ack_many = unary_method(_calls.ack_many)
    get_message = unary_method(_calls.get_message)
    send_messages = unary_method(_calls.send_messages)

    def publish(self, messages: Iterable[MessageLike]) -> Iterator[message_service_pb2.SendResult]:
        """Streams ``messages`` (``Message``s or dicts of
        :func:`agentbus.build_message`'s arguments, from any iterable, even
        an endless generator) over one ``PublishMessages`` call and yields
        one ``SendResult`` per message, in order, each once its message is
        durably stored (or refused: see :meth:`send_messages`).  The server
        keeps a bounded window of messages in flight and stops reading the
        iterable while it is full.  Ends when the iterable is exhausted and
        every result is in; a failure of the stream itself raises
        ``AgentBusError`` (``UnavailableError`` when the server shuts down).

            for result in client.publish({"sender": orc, "recipient": backend,
                                          "payload": {"n": n}} for n in range(10_000)):
                assert result.accepted, result.error
        """
        requests = (message_service_pb2.PublishMessagesRequest(message=as_message(m)) for m in messages)
        call = self._stream("MessageService", "PublishMessages", requests)
        try:
            for response in call:
                yield response.result
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method="/agentbus.v1.MessageService/PublishMessages") from exc
        finally:
            call.cancel()

    # ---- sessions ---------------------------------------------------

    create_session = unary_method(_calls.create_session)
    get_session = unary_method(_calls.get_session)
    list_sessions_page = unary_method(_calls.list_sessions_page)
    add_participant = unary_method(_calls.add_participant)
    remove_participant = unary_method(_calls.remove_participant)
    update_workflow = unary_method(_calls.update_workflow)
    advance_workflow = unary_method(_calls.advance_workflow)
    update_shared_context = unary_method(_calls.update_shared_context)
    merge_shared_context = unary_method(_calls.merge_shared_context)
    complete_session = unary_method(_calls.complete_session)
    terminate_session = unary_method(_calls.terminate_session)

    # ---- results and summaries --------------------------------------

    aggregate_results = unary_method(_calls.aggregate_results)
    resolve_aggregation = unary_method(_calls.resolve_aggregation)
    get_session_summary = unary_method(_calls.get_session_summary)

    # ---- paginated lists ------------------------------------------------

    def list_agents(
        self, *, framework: str = "", capability: str = "", online: Optional[bool] = None, page_size: int = 0
    ) -> list[agent_pb2.Agent]:
        """Every matching agent, ordered by id (follows all pages)."""
        agents: list[agent_pb2.Agent] = []
        token = ""
        while True:
            page = self.list_agents_page(
                framework=framework, capability=capability, online=online, page_size=page_size, page_token=token
            )
            agents.extend(page.agents)
            token = page.next_page_token
            if not token:
                return agents

    def list_sessions(
        self, *, states: Optional[Iterable[Any]] = None, participant: str = "", page_size: int = 0
    ) -> list[session_pb2.Session]:
        """Every matching session, oldest first (follows all pages)."""
        sessions: list[session_pb2.Session] = []
        token = ""
        while True:
            page = self.list_sessions_page(states=states, participant=participant, page_size=page_size, page_token=token)
            sessions.extend(page.sessions)
            token = page.next_page_token
            if not token:
                return sessions

    # ---- streams --------------------------------------------------------

    def inbox(
        self,
        agent_id: str,
        *,
        auto_ack: bool = True,
        idle_timeout: Optional[float] = None,
        max_in_flight: int = 0,
    ) -> "Inbox":
        """Opens ``agent_id``'s inbox; see :class:`Inbox`."""
        return Inbox(self, agent_id, auto_ack=auto_ack, idle_timeout=idle_timeout, max_in_flight=max_in_flight)

    def watch_sessions(
        self,
        session_ids: Optional[Iterable[str]] = None,
        event_types: Optional[Iterable[Any]] = None,
        after_sequence: Optional[int] = None,
        *,
        reconnect: bool = True,
        max_retries: Optional[int] = None,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        idle_timeout: Optional[float] = None,
        retry_codes: Iterable[grpc.StatusCode] = RETRYABLE_WATCH_CODES,
    ) -> "SessionWatch":
        """Streams ``SessionEvent``s; see :class:`SessionWatch`.

        Args:
            session_ids: only these sessions (default: all).
            event_types: only these types, e.g. ``["session_created", "task_delegated"]``.
            after_sequence: replay stored events after this sequence first
                (``0``: the whole history); ``None``: live events only.
            reconnect: reopen the stream after a retryable failure
                (``retry_codes``, default UNAVAILABLE, ABORTED,
                RESOURCE_EXHAUSTED, INTERNAL) or a clean end of the stream,
                resuming after the last event seen.
            max_retries: consecutive failed attempts before giving up and
                raising the last error (``None``: keep trying).
            initial_backoff, max_backoff: exponential backoff with jitter
                between attempts, in seconds.
            idle_timeout: stop iterating when no event arrived for this long
                (``None``: wait forever).
        """
        state = WatchState(
            session_ids=session_ids,
            event_types=event_types,
            after_sequence=after_sequence,
            reconnect=reconnect,
            max_retries=max_retries,
            backoff=Backoff(initial_backoff, max_backoff),
            retry_codes=retry_codes,
        )
        return SessionWatch(self, state, idle_timeout=idle_timeout)


def connect(address: Optional[str] = None, api_key: Optional[str] = None, **kwargs: Any) -> AgentBusClient:
    """``AgentBusClient(address, api_key, **kwargs)``."""
    return AgentBusClient(address, api_key, **kwargs)


class _Pump:
    """Reads one server stream on a daemon thread into a queue, so the reader
    can wait with a timeout and another thread can cancel the call."""

    def __init__(self, call: Any):
        self.call = call
        self.queue: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        threading.Thread(target=_pump, args=(call, self.queue), name="agentbus-stream", daemon=True).start()

    def get(self, timeout: Optional[float]) -> Optional[tuple[str, Any]]:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


def _pump(call: Any, out: "queue.Queue[tuple[str, Any]]") -> None:
    try:
        for item in call:
            out.put((_ITEM, item))
        out.put((_END, None))
    except BaseException as exc:  # RpcError, or a deserialization failure
        out.put((_ERROR, exc))


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class Inbox(Iterator[message_service_pb2.Delivery]):
    """An agent's open inbox (``ReceiveMessages``): iterate it for
    ``Delivery``s (``delivery.message`` is the ``Message``, ``delivery.attempt``
    counts deliveries); heartbeats are skipped (the latest is in
    :attr:`last_heartbeat`).

    **Acknowledgement** (``auto_ack=True``, the default): a delivery is acked
    once your code is done with it, i.e. when the loop asks for the next one,
    or when the ``with`` block exits normally (also after ``break``).  If your
    code raises, the delivery in hand is *not* acked and the bus redelivers it
    after its ack timeout (at-least-once).  With ``auto_ack=False`` nothing is
    acked for you: call :meth:`ack`.

    ::

        with bus.inbox("opencode://backend") as inbox:
            for delivery in inbox:
                handle(delivery.message)        # acked when this returns

    ``idle_timeout`` ends the iteration when nothing arrived for that many
    seconds; :meth:`receive` waits for one delivery with a timeout (it never
    acks).  A failed stream raises :class:`AgentBusError`; :meth:`close` (or
    leaving the ``with`` block) ends the stream.
    """

    def __init__(
        self,
        client: AgentBusClient,
        agent_id: str,
        *,
        auto_ack: bool,
        idle_timeout: Optional[float],
        max_in_flight: int = 0,
    ):
        self.agent_id = agent_id
        self.auto_ack = auto_ack
        self.idle_timeout = idle_timeout
        #: The latest ``InboxHeartbeat`` (``inbox_depth``), ``None`` before the first.
        self.last_heartbeat: Optional[message_service_pb2.InboxHeartbeat] = None
        self._client = client
        self._pending: Optional[message_service_pb2.Delivery] = None
        self._closed = False
        self._ended = False
        self._pump = _Pump(
            client._stream("MessageService", "ReceiveMessages", message_service_pb2.ReceiveMessagesRequest(agent_id=agent_id, max_in_flight=max_in_flight))
        )

    def receive(self, timeout: Optional[float] = None) -> Optional[message_service_pb2.Delivery]:
        """The next delivery, or ``None`` after ``timeout`` seconds or once the
        stream ended.  Does not ack anything."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (self._closed or self._ended):
            got = self._pump.get(_remaining(deadline))
            if got is None:
                return None
            kind, item = got
            if kind == _ITEM:
                response: message_service_pb2.ReceiveMessagesResponse = item
                if response.WhichOneof("kind") == "delivery":
                    return response.delivery
                self.last_heartbeat = response.heartbeat
                continue
            self._ended = True
            if kind == _ERROR and not self._closed:
                if isinstance(item, grpc.RpcError):
                    raise from_rpc_error(item, method="/agentbus.v1.MessageService/ReceiveMessages") from item
                raise item
        return None

    def ack(self, delivery: Any) -> int:
        """Acknowledges a delivery (or message id) as this agent."""
        if self._pending is not None and delivery is self._pending:
            self._pending = None
        return self._client.ack(self.agent_id, delivery)

    def _ack_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._client.ack(self.agent_id, pending)

    def __iter__(self) -> "Inbox":
        return self

    def __next__(self) -> message_service_pb2.Delivery:
        if self.auto_ack:
            self._ack_pending()
        delivery = self.receive(self.idle_timeout)
        if delivery is None:
            raise StopIteration
        if self.auto_ack:
            self._pending = delivery
        return delivery

    def close(self) -> None:
        """Ends the stream; what was delivered and not acked goes back to the inbox."""
        if not self._closed:
            self._closed = True
            self._pump.call.cancel()

    def __enter__(self) -> "Inbox":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is None and self.auto_ack:
                self._ack_pending()
        finally:
            self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class SessionWatch(Iterator[session_pb2.SessionEvent]):
    """An iterator of ``SessionEvent``s that survives dropped connections.

    It remembers the sequence of the last event it handed out and, when the
    stream fails with a retryable code (or ends), reconnects with
    ``after_sequence`` = that sequence after a backoff, and drops anything at
    or below it: every sequence is seen once, in order.  Non-retryable codes
    (UNAUTHENTICATED, INVALID_ARGUMENT, OUT_OF_RANGE, ...) raise
    :class:`AgentBusError` at once; so does the last error after
    ``max_retries`` consecutive failures.  Heartbeats are skipped (the latest
    is in :attr:`last_heartbeat`).

    ::

        with bus.watch_sessions(after_sequence=0) as watch:
            for event in watch:
                print(event.sequence, agentbus.event_type_name(event.type))

    :meth:`close` (from any thread) ends the iteration.
    """

    def __init__(self, client: AgentBusClient, state: WatchState, *, idle_timeout: Optional[float]):
        self.idle_timeout = idle_timeout
        self._client = client
        self._state = state
        self._closed = threading.Event()
        self._ended = False
        self._lock = threading.Lock()
        self._pump: Optional[_Pump] = None
        self._reopen_at = 0.0
        self._open()

    @property
    def last_sequence(self) -> Optional[int]:
        """Sequence of the last event handed out (resume point)."""
        return self._state.last_sequence

    @property
    def reconnects(self) -> int:
        """How many times the stream was reopened."""
        return self._state.reconnects

    @property
    def last_heartbeat(self) -> Optional[session_service_pb2.Heartbeat]:
        return self._state.last_heartbeat

    def _open(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._pump = _Pump(self._client._stream("SessionService", "WatchSessions", self._state.request()))

    def next_event(self, timeout: Optional[float] = None) -> Optional[session_pb2.SessionEvent]:
        """The next event, or ``None`` after ``timeout`` seconds without one
        (or once closed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (self._closed.is_set() or self._ended):
            if self._pump is None:
                wait = self._reopen_at - time.monotonic()
                remaining = _remaining(deadline)
                if wait > 0:
                    if remaining is not None and remaining < wait:
                        self._closed.wait(remaining)
                        return None
                    if self._closed.wait(wait):
                        return None
                self._open()
                continue
            got = self._pump.get(_remaining(deadline))
            if got is None:
                return None
            kind, item = got
            if kind == _ITEM:
                event = self._state.accept(item)
                if event is not None:
                    return event
                continue
            self._pump = None
            if self._closed.is_set():
                return None
            if kind == _ERROR and not isinstance(item, grpc.RpcError):
                raise item
            error = None if kind == _END else from_rpc_error(item, method="/agentbus.v1.SessionService/WatchSessions")
            try:
                delay = self._state.retry_delay(error)
            except AgentBusError as exc:
                self._ended = True
                raise exc from (item if kind == _ERROR else None)
            if delay is None:
                self._ended = True
                return None
            self._reopen_at = time.monotonic() + delay
        return None

    def __iter__(self) -> "SessionWatch":
        return self

    def __next__(self) -> session_pb2.SessionEvent:
        event = self.next_event(self.idle_timeout)
        if event is None:
            raise StopIteration
        return event

    def close(self) -> None:
        """Ends the stream and the iteration (safe from another thread)."""
        with self._lock:
            self._closed.set()
            if self._pump is not None:
                self._pump.call.cancel()

    def __enter__(self) -> "SessionWatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
