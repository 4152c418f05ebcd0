"""The asyncio client (``grpc.aio``), :class:`AsyncAgentBusClient`.

It has the same methods as :class:`agentbus.AgentBusClient`; each unary one
returns an awaitable, and the streams are async iterators::

    from agentbus.aio import AsyncAgentBusClient

    async with AsyncAgentBusClient("127.0.0.1:8080", api_key="dev-key") as bus:
        await bus.register_agent("opencode://backend")
        async with bus.inbox("opencode://backend") as inbox:
            async for delivery in inbox:
                ...

Create the client inside a running event loop (e.g. in ``async def main()``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, Callable, Concatenate, Coroutine, Optional, ParamSpec, Sequence, TypeVar, Union

import grpc
import grpc.aio

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

__all__ = ["AsyncAgentBusClient", "AsyncInbox", "AsyncSessionWatch", "connect"]

_ITEM, _END, _ERROR = "item", "end", "error"

P = ParamSpec("P")
T = TypeVar("T")


def unary_method(
    build: Callable[P, _calls.UnaryCall[T]],
) -> Callable[Concatenate[AsyncAgentBusClient, P], Coroutine[Any, Any, T]]:
    """The :class:`AsyncAgentBusClient` method of one of :mod:`agentbus._calls`:
    same parameters, a coroutine function that makes the call and returns the
    answer."""

    async def method(self: AsyncAgentBusClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._call(build(*args, **kwargs))

    return _calls.as_method(method, build, "AsyncAgentBusClient")


class AsyncAgentBusClient:
    """The asyncio twin of :class:`agentbus.AgentBusClient` (same arguments).

    Every unary method is awaited: ``session = await bus.get_session(sid)``.
    Use ``async with``, or ``await bus.close()``.
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
        channel: Optional[grpc.aio.Channel] = None,
    ):
        target, scheme_secure = parse_address(address)
        self.address = target
        self.timeout = timeout
        self._metadata = auth_metadata(api_key, token)
        credentials = tls_credentials(credentials, ca_file, cert_file, key_file)
        if channel is None:
            opts = channel_options(options)
            if secure or credentials is not None or (secure is None and scheme_secure):
                channel = grpc.aio.secure_channel(target, credentials or grpc.ssl_channel_credentials(), options=opts)
            else:
                channel = grpc.aio.insecure_channel(target, options=opts)
        self.channel = channel
        self._stubs = {
            "AgentService": agent_service_pb2_grpc.AgentServiceStub(channel),
            "MessageService": message_service_pb2_grpc.MessageServiceStub(channel),
            "SessionService": session_service_pb2_grpc.SessionServiceStub(channel),
        }

    # ---- plumbing -------------------------------------------------------

    async def _call(self, call: _calls.UnaryCall[T]) -> T:
        method = getattr(self._stubs[call.service], call.rpc)
        timeout = self.timeout if call.timeout is _UNSET else call.timeout
        try:
            response = await method(call.request, metadata=self._metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, method=f"/agentbus.v1.{call.service}/{call.rpc}") from exc
        return call.extract(response)

    def _stream(self, service: str, rpc: str, request: Any) -> Any:
        return getattr(self._stubs[service], rpc)(request, metadata=self._metadata)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Waits until the channel is connected; ``UnavailableError`` after ``timeout``."""
        try:
            await asyncio.wait_for(self.channel.channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, f"{self.address} not reachable in {timeout}s") from None

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "AsyncAgentBusClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

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

    async def publish(
        self, messages: Union[Iterable[MessageLike], AsyncIterable[MessageLike]]
    ) -> AsyncIterator[message_service_pb2.SendResult]:
        """Streams ``messages`` (an iterable or async iterable of
        ``Message``s or dicts of :func:`agentbus.build_message`'s arguments)
        over one ``PublishMessages`` call and yields one ``SendResult`` per
        message, in order, each once its message is durably stored (or
        refused); see :meth:`agentbus.AgentBusClient.publish`."""

        async def requests() -> AsyncIterator[message_service_pb2.PublishMessagesRequest]:
            if isinstance(messages, AsyncIterable):
                async for message in messages:
                    yield message_service_pb2.PublishMessagesRequest(message=as_message(message))
            else:
                for message in messages:
                    yield message_service_pb2.PublishMessagesRequest(message=as_message(message))

        call = self._stream("MessageService", "PublishMessages", requests())
        try:
            async for response in call:
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

    async def list_agents(
        self, *, framework: str = "", capability: str = "", online: Optional[bool] = None, page_size: int = 0
    ) -> list[agent_pb2.Agent]:
        """Every matching agent, ordered by id (follows all pages)."""
        agents: list[agent_pb2.Agent] = []
        token = ""
        while True:
            page = await self.list_agents_page(
                framework=framework, capability=capability, online=online, page_size=page_size, page_token=token
            )
            agents.extend(page.agents)
            token = page.next_page_token
            if not token:
                return agents

    async def list_sessions(
        self, *, states: Optional[Iterable[Any]] = None, participant: str = "", page_size: int = 0
    ) -> list[session_pb2.Session]:
        """Every matching session, oldest first (follows all pages)."""
        sessions: list[session_pb2.Session] = []
        token = ""
        while True:
            page = await self.list_sessions_page(
                states=states, participant=participant, page_size=page_size, page_token=token
            )
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
    ) -> "AsyncInbox":
        """Opens ``agent_id``'s inbox; see :class:`AsyncInbox` (same rules as
        :class:`agentbus.Inbox`)."""
        return AsyncInbox(self, agent_id, auto_ack=auto_ack, idle_timeout=idle_timeout, max_in_flight=max_in_flight)

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
    ) -> "AsyncSessionWatch":
        """Streams ``SessionEvent``s with transparent resumption; arguments
        as in :meth:`agentbus.AgentBusClient.watch_sessions`."""
        state = WatchState(
            session_ids=session_ids,
            event_types=event_types,
            after_sequence=after_sequence,
            reconnect=reconnect,
            max_retries=max_retries,
            backoff=Backoff(initial_backoff, max_backoff),
            retry_codes=retry_codes,
        )
        return AsyncSessionWatch(self, state, idle_timeout=idle_timeout)


def connect(address: Optional[str] = None, api_key: Optional[str] = None, **kwargs: Any) -> AsyncAgentBusClient:
    """``AsyncAgentBusClient(address, api_key, **kwargs)``."""
    return AsyncAgentBusClient(address, api_key, **kwargs)


class _AsyncPump:
    """Reads one server stream in a task into a queue, so that waiting with a
    timeout never cancels the RPC itself."""

    def __init__(self, call: Any):
        self.call = call
        self.queue: "asyncio.Queue[tuple[str, Any]]" = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while True:
                item = await self.call.read()
                if item is grpc.aio.EOF:
                    break
                self.queue.put_nowait((_ITEM, item))
            self.queue.put_nowait((_END, None))
        except asyncio.CancelledError:
            self.queue.put_nowait((_END, None))
        except BaseException as exc:  # AioRpcError, or a deserialization failure
            self.queue.put_nowait((_ERROR, exc))

    async def get(self, timeout: Optional[float]) -> Optional[tuple[str, Any]]:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def cancel(self) -> None:
        self.call.cancel()
        self.task.cancel()


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class AsyncInbox(AsyncIterator[message_service_pb2.Delivery]):
    """An agent's inbox as an async iterator of ``Delivery``s.

    Same acknowledgement rule as :class:`agentbus.Inbox`: with ``auto_ack``
    (default) a delivery is acked when the loop asks for the next one or the
    ``async with`` block exits normally; not when your code raises (the bus
    then redelivers it).  Heartbeats are skipped.
    """

    def __init__(
        self,
        client: AsyncAgentBusClient,
        agent_id: str,
        *,
        auto_ack: bool,
        idle_timeout: Optional[float],
        max_in_flight: int = 0,
    ):
        self.agent_id = agent_id
        self.auto_ack = auto_ack
        self.idle_timeout = idle_timeout
        self.last_heartbeat: Optional[message_service_pb2.InboxHeartbeat] = None
        self._client = client
        self._pending: Optional[message_service_pb2.Delivery] = None
        self._closed = False
        self._ended = False
        self._pump = _AsyncPump(
            client._stream("MessageService", "ReceiveMessages", message_service_pb2.ReceiveMessagesRequest(agent_id=agent_id, max_in_flight=max_in_flight))
        )

    async def receive(self, timeout: Optional[float] = None) -> Optional[message_service_pb2.Delivery]:
        """The next delivery, or ``None`` after ``timeout`` seconds or once the
        stream ended.  Does not ack anything."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (self._closed or self._ended):
            got = await self._pump.get(_remaining(deadline))
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

    async def ack(self, delivery: Any) -> int:
        if self._pending is not None and delivery is self._pending:
            self._pending = None
        return await self._client.ack(self.agent_id, delivery)

    async def _ack_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await self._client.ack(self.agent_id, pending)

    def __aiter__(self) -> "AsyncInbox":
        return self

    async def __anext__(self) -> message_service_pb2.Delivery:
        if self.auto_ack:
            await self._ack_pending()
        delivery = await self.receive(self.idle_timeout)
        if delivery is None:
            raise StopAsyncIteration
        if self.auto_ack:
            self._pending = delivery
        return delivery

    def close(self) -> None:
        """Ends the stream; unacked deliveries go back to the inbox."""
        if not self._closed:
            self._closed = True
            self._pump.cancel()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> "AsyncInbox":
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is None and self.auto_ack:
                await self._ack_pending()
        finally:
            self.close()


class AsyncSessionWatch(AsyncIterator[session_pb2.SessionEvent]):
    """Async iterator of ``SessionEvent``s that resumes after dropped
    connections without gaps or duplicates (see :class:`agentbus.SessionWatch`)."""

    def __init__(self, client: AsyncAgentBusClient, state: WatchState, *, idle_timeout: Optional[float]):
        self.idle_timeout = idle_timeout
        self._client = client
        self._state = state
        self._closed = asyncio.Event()
        self._ended = False
        self._pump: Optional[_AsyncPump] = None
        self._reopen_at = 0.0
        self._open()

    @property
    def last_sequence(self) -> Optional[int]:
        return self._state.last_sequence

    @property
    def reconnects(self) -> int:
        return self._state.reconnects

    @property
    def last_heartbeat(self) -> Optional[session_service_pb2.Heartbeat]:
        return self._state.last_heartbeat

    def _open(self) -> None:
        if not self._closed.is_set():
            self._pump = _AsyncPump(self._client._stream("SessionService", "WatchSessions", self._state.request()))

    async def _sleep(self, seconds: float) -> bool:
        """Sleeps unless closed meanwhile; True when closed."""
        try:
            await asyncio.wait_for(self._closed.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def next_event(self, timeout: Optional[float] = None) -> Optional[session_pb2.SessionEvent]:
        """The next event, or ``None`` after ``timeout`` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (self._closed.is_set() or self._ended):
            if self._pump is None:
                wait = self._reopen_at - time.monotonic()
                remaining = _remaining(deadline)
                if wait > 0:
                    if remaining is not None and remaining < wait:
                        await self._sleep(remaining)
                        return None
                    if await self._sleep(wait):
                        return None
                self._open()
                continue
            got = await self._pump.get(_remaining(deadline))
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

    def __aiter__(self) -> "AsyncSessionWatch":
        return self

    async def __anext__(self) -> session_pb2.SessionEvent:
        event = await self.next_event(self.idle_timeout)
        if event is None:
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """Ends the stream and the iteration."""
        self._closed.set()
        if self._pump is not None:
            self._pump.cancel()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> "AsyncSessionWatch":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
