"""What a type checker must infer for users of both clients.

Never run (pytest does not collect it): test.sh type-checks it with
``mypy --strict``, which fails if an ``assert_type`` does not hold. It pins
that the asyncio client's unary methods return awaitables of the same answers
the sync client returns, and that wrong arguments are caught.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Coroutine

import agentbus
from agentbus.aio import AsyncAgentBusClient, AsyncInbox, AsyncSessionWatch
from agentbus.v1 import agent_pb2, message_pb2, message_service_pb2, session_pb2, session_service_pb2

if TYPE_CHECKING:
    from typing_extensions import assert_type


def sync_client(bus: agentbus.AgentBusClient) -> None:
    assert_type(bus.register_agent("opencode://backend"), agent_pb2.Agent)
    assert_type(bus.list_agents(), list[agent_pb2.Agent])
    assert_type(bus.send("a://x", "b://y", "task_request", {"q": 1}), message_service_pb2.SendMessageResponse)
    assert_type(bus.request("a://x", "b://y", payload=1, reply_timeout=5), message_pb2.Message)
    assert_type(bus.ack("b://y", "m1"), int)
    assert_type(bus.ack_many("b://y", ["m1"]), list[message_service_pb2.AckResult])
    assert_type(bus.send_messages([{"sender": "a://x", "recipient": "b://y"}]), list[message_service_pb2.SendResult])
    for result in bus.publish(message_pb2.Message() for _ in range(3)):
        assert_type(result, message_service_pb2.SendResult)
    assert_type(bus.create_session("a://x", ["b://y"], ["design"]), session_pb2.Session)
    assert_type(bus.merge_shared_context("s", {"k": None}), session_pb2.Session)
    assert_type(bus.get_session_summary("s"), session_service_pb2.GetSessionSummaryResponse)
    assert_type(bus.revoke_agent_token("t"), None)
    with bus.inbox("b://y") as inbox:
        for delivery in inbox:
            assert_type(delivery, message_service_pb2.Delivery)
    assert_type(agentbus.to_python(session_pb2.Session().shared_context), dict[str, Any])


async def async_client(bus: AsyncAgentBusClient) -> None:
    # Unawaited, a unary method is a coroutine; awaited, the sync client's answer.
    pending = assert_type(bus.get_session("s"), Coroutine[Any, Any, session_pb2.Session])
    assert_type(await pending, session_pb2.Session)
    assert_type(await bus.register_agent("opencode://backend"), agent_pb2.Agent)
    assert_type(await bus.list_agents(), list[agent_pb2.Agent])
    assert_type(await bus.send("a://x", "b://y", payload={"q": 1}), message_service_pb2.SendMessageResponse)
    assert_type(await bus.ack("b://y", "m1"), int)
    assert_type(await bus.ack_many("b://y", ["m1"]), list[message_service_pb2.AckResult])
    assert_type(await bus.send_messages([message_pb2.Message()]), list[message_service_pb2.SendResult])
    async for sent in bus.publish([{"sender": "a://x", "recipient": "b://y"}]):
        assert_type(sent, message_service_pb2.SendResult)
    assert_type(await bus.advance_workflow("s", expected_version=3), session_pb2.Session)
    assert_type(
        await bus.aggregate_results("s", strategy="manual"), session_service_pb2.AggregateResultsResponse
    )
    inbox = bus.inbox("b://y", idle_timeout=1)
    assert_type(inbox, AsyncInbox)
    async with inbox:
        async for delivery in inbox:
            assert_type(delivery, message_service_pb2.Delivery)
            assert_type(await bus.reply(delivery, {"ok": True}), message_service_pb2.SendMessageResponse)
    watch = bus.watch_sessions(after_sequence=0)
    assert_type(watch, AsyncSessionWatch)
    async for event in watch:
        assert_type(event, session_pb2.SessionEvent)


async def wrong_arguments(bus: AsyncAgentBusClient) -> None:
    # The parameters are checked too; mypy must report each of these.
    await bus.get_session(42)  # type: ignore[arg-type]
    await bus.advance_workflow("s", expected_versoin=3)  # type: ignore[call-arg]
