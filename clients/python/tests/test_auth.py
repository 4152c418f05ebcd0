"""API keys: the client sends its key with every call, unary and streaming."""

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
