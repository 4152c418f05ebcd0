"""The asyncio client (grpc.aio): the same API, awaited."""

import asyncio

import grpc
import pytest

import agentbus
from agentbus.aio import AsyncAgentBusClient, connect
from agentbus.v1 import message_pb2, session_pb2

ORC = "claude-code://orchestrator"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_agents_and_errors(server, uid):
    async def main():
        async with AsyncAgentBusClient(server.address) as bus:
            await bus.wait_ready(5)
            agent = await bus.register_agent(f"opencode://aio-{uid}", capabilities={"languages": ["go"]})
            assert agent.descriptor.framework == "opencode"
            with pytest.raises(agentbus.AlreadyExistsError):
                await bus.register_agent(f"opencode://aio-{uid}")
            assert (await bus.get_agent(f"opencode://aio-{uid}")).descriptor.capabilities.languages == ["go"]
            listed = await bus.list_agents(capability="go", page_size=1)
            assert f"opencode://aio-{uid}" in [a.descriptor.agent_id for a in listed]
            await bus.register_agent(f"aio{uid}://one")
            await bus.register_agent(f"aio{uid}://two")
            page = await bus.list_agents_page(framework=f"aio{uid}", page_size=1)
            assert [a.descriptor.agent_id for a in page.agents] == [f"aio{uid}://one"] and page.next_page_token
            assert await bus.unregister_agent(f"opencode://aio-{uid}") == 0
            with pytest.raises(agentbus.NotFoundError) as exc:
                await bus.get_agent(f"opencode://aio-{uid}")
            assert exc.value.code is grpc.StatusCode.NOT_FOUND
            with pytest.raises(agentbus.InvalidArgumentError):
                await bus.register_agent("bad")

    run(main())


def test_sessions(server, uid):
    async def main():
        async with connect(server.address) as bus:
            s = await bus.create_session(ORC, [{"agent_id": "opencode://backend", "role": "implementer"}],
                                         ["design", "implementation", "review"], {"project": "p"},
                                         session_id=f"sess_aio_{uid}")
            assert s.workflow.current_step == "design"
            with pytest.raises(agentbus.AlreadyExistsError):
                await bus.create_session(ORC, session_id=f"sess_aio_{uid}")
            s = await bus.add_participant(s.session_id, "opencode://security", role="reviewer")
            s = await bus.remove_participant(s.session_id, "opencode://security")
            assert s.participants[-1].status == session_pb2.PARTICIPANT_STATUS_LEFT
            s = await bus.update_workflow(s.session_id, current_step="implementation", completed_steps=["design"],
                                          pending_steps=["review"])
            s = await bus.advance_workflow(s.session_id)
            assert s.workflow.current_step == "review"
            s = await bus.merge_shared_context(s.session_id, {"branch": "b"})
            s = await bus.update_shared_context(s.session_id, {**agentbus.to_python(s.shared_context), "c": 1})
            assert agentbus.to_python(s.shared_context) == {"project": "p", "branch": "b", "c": 1}
            with pytest.raises(agentbus.AbortedError):
                await bus.merge_shared_context(s.session_id, {"x": 1}, expected_version=1)
            assert s.session_id in [x.session_id for x in await bus.list_sessions(states=["active"])]
            assert (await bus.get_session(s.session_id)).version == s.version
            done = await bus.complete_session(s.session_id, "ok", ["a.zip"])
            assert done.state == session_pb2.SESSION_STATE_COMPLETED
            with pytest.raises(agentbus.FailedPreconditionError):
                await bus.terminate_session(s.session_id, "timeout")
            other = await bus.create_session(ORC)
            ended = await bus.terminate_session(other.session_id, "timeout", "offline")
            assert ended.termination_reason == "timeout"
            with pytest.raises(agentbus.NotFoundError):
                await bus.get_session(f"sess_nope_{uid}")
            page = await bus.list_sessions_page(page_size=1)
            assert len(page.sessions) == 1

    run(main())


def test_inbox_ack_and_request_reply(server, uid):
    orc, backend = f"claude-code://aorc-{uid}", f"opencode://aback-{uid}"

    async def responder(bus):
        async with bus.inbox(backend, idle_timeout=10) as inbox:
            async for delivery in inbox:
                if delivery.message.routing.delivery_mode == message_pb2.DELIVERY_MODE_SYNC:
                    await bus.reply(delivery, {"answer": agentbus.payload_of(delivery)["q"] * 2})
                    return delivery
                # An async message: just handled (acked when we ask for the next one).

    async def main():
        async with AsyncAgentBusClient(server.address) as bus:
            await bus.register_agent(orc)
            await bus.register_agent(backend)
            sent = await bus.send(orc, backend, "task_request", {"plain": True}, message_id=f"a1-{uid}")
            assert sent.accepted
            task = asyncio.create_task(responder(bus))
            reply = await bus.request(orc, backend, payload={"q": 21}, message_id=f"a2-{uid}", reply_timeout=15)
            handled = await task
            assert handled.message.message_id == f"a2-{uid}"
            assert reply.in_reply_to == f"a2-{uid}"
            assert agentbus.payload_of(reply) == {"answer": 42}
            assert (await bus.get_message(f"a1-{uid}")).state == message_pb2.MESSAGE_STATE_ACKED
            assert (await bus.get_message(f"a2-{uid}")).state == message_pb2.MESSAGE_STATE_ANSWERED
            with pytest.raises(agentbus.DeadlineExceededError):
                await bus.request(orc, backend, payload={"q": 0}, reply_timeout=0.5)
            with pytest.raises(agentbus.NotFoundError):
                await bus.send(orc, f"opencode://nobody-{uid}")

            # Manual acks, and a handler that raises leaves the message unacked.
            await bus.send(orc, backend, payload=7, message_id=f"a3-{uid}")
            with pytest.raises(RuntimeError):
                async with bus.inbox(backend, idle_timeout=5) as inbox:
                    async for _ in inbox:
                        raise RuntimeError("handler failed")
            async with bus.inbox(backend, auto_ack=False) as inbox:
                again = await inbox.receive(timeout=5)
                assert again.message.message_id == f"a3-{uid}" and again.attempt == 2
                assert await inbox.ack(again) == message_pb2.MESSAGE_STATE_ACKED
            # The reply came back in the response, so the bus acked it: it does
            # not also wait in the orchestrator's inbox.
            for _ in range(100):
                if (await bus.get_message(reply.message_id)).state == message_pb2.MESSAGE_STATE_ACKED:
                    break
                await asyncio.sleep(0.05)
            assert (await bus.get_message(reply.message_id)).state == message_pb2.MESSAGE_STATE_ACKED
            async with bus.inbox(orc, idle_timeout=1.5) as inbox:
                replies = [d.message.in_reply_to async for d in inbox]
            assert f"a2-{uid}" not in replies

    run(main())


def test_watch(server, uid):
    async def main():
        async with AsyncAgentBusClient(server.address) as bus:
            s = await bus.create_session(ORC, session_id=f"sess_aw_{uid}")
            await bus.merge_shared_context(s.session_id, {"a": 1})
            async with bus.watch_sessions(session_ids=[s.session_id], after_sequence=0, idle_timeout=1.5) as watch:
                first = await watch.next_event(timeout=5)
                assert first.type == session_pb2.SESSION_EVENT_TYPE_SESSION_CREATED
                await bus.complete_session(s.session_id, "done")
                rest = [agentbus.event_type_name(e.type) async for e in watch]
            assert rest == ["shared_context_updated", "session_completed"]
            with pytest.raises(agentbus.OutOfRangeError):
                await bus.watch_sessions(after_sequence=10**12).next_event(timeout=5)

    run(main())


def test_send_messages_and_publish(server, uid):
    orc, backend = f"claude-code://porc-{uid}", f"opencode://pback-{uid}"

    async def generated():
        for n in range(100):
            yield {"sender": orc, "recipient": backend, "payload": {"n": n}, "message_id": f"ap{n}-{uid}"}

    async def main():
        async with AsyncAgentBusClient(server.address) as bus:
            await bus.register_agent(orc)
            await bus.register_agent(backend)
            results = await bus.send_messages([
                {"sender": orc, "recipient": backend, "payload": {}, "message_id": f"ab1-{uid}"},
                {"sender": orc, "recipient": f"codex://nobody-{uid}", "payload": {}},
            ])
            assert [(r.accepted, r.code_name) for r in results] == [(True, "OK"), (False, "NOT_FOUND")]
            streamed = [r async for r in bus.publish(generated())]
            assert [r.message_id for r in streamed] == [f"ap{n}-{uid}" for n in range(100)]
            assert all(r.accepted for r in streamed)
            plain = [r async for r in bus.publish([agentbus.build_message(orc, backend, payload=1)])]
            assert len(plain) == 1 and plain[0].accepted and plain[0].message_id.startswith("msg_")

    run(main())
