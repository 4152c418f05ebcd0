"""Connecting: addresses, readiness, unreachable servers, prebuilt messages."""

import socket

import grpc
import pytest

import agentbus
from agentbus.v1 import message_pb2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connect_with_a_url_and_from_the_environment(server, monkeypatch):
    with agentbus.connect(f"http://{server.address}") as bus:
        bus.wait_ready(5)
        assert bus.address == server.address
        assert bus.list_sessions_page(page_size=1) is not None
    monkeypatch.setenv("AGENT_BUS_URL", f"grpc://{server.address}")
    with agentbus.AgentBusClient() as bus:
        assert bus.address == server.address
        bus.wait_ready(5)


def test_unreachable_server():
    address = f"127.0.0.1:{_free_port()}"
    with agentbus.AgentBusClient(address, timeout=2) as bus:
        with pytest.raises(agentbus.UnavailableError) as exc:
            bus.wait_ready(0.5)
        assert exc.value.code is grpc.StatusCode.UNAVAILABLE
        with pytest.raises(agentbus.UnavailableError):
            bus.get_agent("opencode://backend")


def test_send_a_prebuilt_message(client, uid):
    client.register_agent(f"claude-code://pre-{uid}")
    client.register_agent(f"opencode://pre-{uid}")
    msg = agentbus.build_message(f"claude-code://pre-{uid}", f"opencode://pre-{uid}", "status_update",
                                 {"p": 1}, message_id=f"pre-{uid}", priority="critical")
    resp = client.send_message(msg)
    assert resp.accepted and resp.message_id == f"pre-{uid}"
    status = client.get_message(f"pre-{uid}")
    assert status.message.priority == message_pb2.PRIORITY_CRITICAL
    assert status.current_recipient == f"opencode://pre-{uid}"
    assert status.HasField("accepted_at")
    raw = message_pb2.Message(sender=message_pb2.AgentRef(agent_id=f"claude-code://pre-{uid}"),
                              recipient=message_pb2.AgentRef(agent_id=f"opencode://pre-{uid}"))
    with pytest.raises(agentbus.InvalidArgumentError):
        client.send_message(raw)  # no message type
