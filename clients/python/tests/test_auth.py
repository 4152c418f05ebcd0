"""API keys and agent tokens: the client sends its credential with every call,
unary and streaming."""

import asyncio
import time

import grpc
import pytest

import agentbus
from agentbus.aio import AsyncAgentBusClient

ORC = "claude-code://orchestrator"


def test_right_key_works_for_unary_and_streams(auth_server, uid):
    with auth_server.client() as bus:  # api_key="test-key"
        bus.register_agent(f"opencode://keyed-{uid}")
        bus.register_agent(f"claude-code://keyed-{uid}")
        s = bus.create_session(ORC, session_id=f"sess_keyed_{uid}")
        bus.send(f"claude-code://keyed-{uid}", f"opencode://keyed-{uid}", payload={"k": 1})
        with bus.inbox(f"opencode://keyed-{uid}", idle_timeout=5) as inbox:
            assert agentbus.payload_of(next(inbox)) == {"k": 1}
        with bus.watch_sessions(session_ids=[s.session_id], after_sequence=0, idle_timeout=5) as watch:
            assert next(watch).session_id == s.session_id


@pytest.mark.parametrize("key", ["wrong-key", None])
def test_wrong_or_missing_key_is_unauthenticated(auth_server, key, uid):
    with agentbus.AgentBusClient(auth_server.address, api_key=key) as bus:
        with pytest.raises(agentbus.UnauthenticatedError) as exc:
            bus.get_session(f"sess_any_{uid}")
        assert exc.value.code is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(agentbus.UnauthenticatedError):
            bus.register_agent(f"opencode://intruder-{uid}")
        with pytest.raises(agentbus.UnauthenticatedError):
            bus.send(ORC, "opencode://backend")
        with pytest.raises(agentbus.UnauthenticatedError):
            with bus.inbox("opencode://backend") as inbox:
                inbox.receive(timeout=5)
        # Not retryable: the watch raises at once instead of reconnecting.
        started = time.monotonic()
        with pytest.raises(agentbus.UnauthenticatedError):
            next(bus.watch_sessions(after_sequence=0, max_retries=50))
        assert time.monotonic() - started < 3


def test_aio_keys(auth_server, uid):
    async def main():
        async with AsyncAgentBusClient(auth_server.address, api_key="test-key") as bus:
            s = await bus.create_session(ORC, session_id=f"sess_aiokey_{uid}")
            assert (await bus.get_session(s.session_id)).session_id == s.session_id
        async with AsyncAgentBusClient(auth_server.address, api_key="nope") as bus:
            with pytest.raises(agentbus.UnauthenticatedError) as exc:
                await bus.get_session(f"sess_aiokey_{uid}")
            assert exc.value.code is grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(agentbus.UnauthenticatedError):
                await bus.watch_sessions(after_sequence=0).next_event(timeout=5)

    asyncio.run(main())


def test_agent_token_acts_as_its_agent_only(auth_server, uid):
    me, other = f"opencode://tok-{uid}", f"claude-code://tok-{uid}"
    with auth_server.client() as admin:
        admin.register_agent(other)
        forever = admin.issue_agent_token(me)
        assert forever.token.startswith("abt_") and not forever.HasField("expires_at")
        brief = admin.issue_agent_token(me, ttl="10m", description="second")
        assert [t.token_id for t in admin.list_agent_tokens(me)] == [forever.token_id, brief.token_id]
        with agentbus.AgentBusClient(auth_server.address, token=forever.token) as agent:
            agent.register_agent(me)
            sent = agent.send("", other, payload=1)  # an empty sender is the caller
            assert admin.get_message(sent.message_id).message.sender.agent_id == me
            with pytest.raises(agentbus.PermissionDeniedError):
                agent.create_session(other)
            theirs = admin.create_session(other, session_id=f"sess_tok_{uid}")
            with pytest.raises(agentbus.NotFoundError):
                agent.get_session(theirs.session_id)
            mine = agent.create_session(me, [other])
            assert agent.get_session(mine.session_id).orchestrator == me
            with pytest.raises(agentbus.PermissionDeniedError):
                agent.issue_agent_token(me)
            with pytest.raises(agentbus.NotFoundError):
                admin.revoke_agent_token(forever.token_id, agent_id=other)
            admin.revoke_agent_token(forever.token_id)
            with pytest.raises(agentbus.UnauthenticatedError):
                agent.get_agent(me)
        assert [t.token_id for t in admin.list_agent_tokens(me)] == [brief.token_id]


def test_aio_agent_token(auth_server, uid):
    me = f"opencode://aiotok-{uid}"

    async def main():
        async with AsyncAgentBusClient(auth_server.address, api_key="test-key") as admin:
            issued = await admin.issue_agent_token(me, ttl=60)
            async with AsyncAgentBusClient(auth_server.address, token=issued.token) as agent:
                await agent.register_agent(me)
                with pytest.raises(agentbus.PermissionDeniedError):
                    await agent.register_agent(f"opencode://not-me-{uid}")
                assert [t.token_id for t in await admin.list_agent_tokens(me)] == [issued.token_id]
                assert await admin.revoke_agent_token(issued.token_id, agent_id=me) is None
                with pytest.raises(agentbus.UnauthenticatedError):
                    await agent.get_agent(me)

    asyncio.run(main())


def test_api_key_and_token_do_not_mix():
    for cls in (agentbus.AgentBusClient, AsyncAgentBusClient):
        with pytest.raises(ValueError, match="not both"):
            cls("127.0.0.1:1", api_key="test-key", token="abt_" + "0" * 64)
