"""AgentService through the sync client: register, get, list, unregister."""

import grpc
import pytest

import agentbus
from agentbus.v1 import message_pb2


def test_register_get_and_update(client, uid):
    agent_id = f"opencode://backend-{uid}"
    agent = client.register_agent(
        agent_id,
        capabilities={
            "languages": ["rust", "python"],
            "optimal_tasks": ["implementation"],
            "performance_profile": {"avg_response_time": "2.5s", "success_rate": 0.95, "concurrent_capacity": 3},
        },
        endpoints={"http": "http://localhost:9000"},
        metadata={"version": "1.0", "author": "tests", "tags": ["a"]},
        health_check_url="http://localhost:9000/health",
    )
    assert agent.descriptor.agent_id == agent_id
    assert agent.descriptor.framework == "opencode"  # defaulted by the server
    assert agent.descriptor.capabilities.performance_profile.avg_response_time.nanos == 500_000_000
    assert not agent.online

    got = client.get_agent(agent_id)
    assert list(got.descriptor.capabilities.languages) == ["rust", "python"]
    assert got.descriptor.metadata.author == "tests"

    with pytest.raises(agentbus.AlreadyExistsError) as exc:
        client.register_agent(agent_id)
    assert exc.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert agent_id in exc.value.message

    updated = client.register_agent(agent_id, metadata={"description": "replaced"}, update=True)
    assert updated.descriptor.metadata.description == "replaced"
    assert not updated.descriptor.capabilities.languages  # the descriptor was replaced


def test_register_invalid_ids(client, uid):
    with pytest.raises(agentbus.InvalidArgumentError) as exc:
        client.register_agent("not an agent id")
    assert exc.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "agent_id" in exc.value.message
    with pytest.raises(agentbus.InvalidArgumentError):
        client.register_agent(f"opencode://x-{uid}", framework="codex")  # must match the id's prefix


def test_register_with_a_descriptor_dict(client, uid):
    agent = client.register_agent({"agent_id": f"codex://frontend-{uid}", "capabilities": {"tools": ["git"]}})
    assert list(agent.descriptor.capabilities.tools) == ["git"]
    with pytest.raises(ValueError):
        client.register_agent({"agent_id": "codex://x", "no_such_field": 1})


def test_list_agents_filters_and_pages(client, uid):
    ids = [f"listfw{uid}://agent-{i}" for i in range(5)]
    for i, agent_id in enumerate(ids):
        client.register_agent(agent_id, capabilities={"tools": [f"tool-{uid}-{i % 2}"]})
    everyone = client.list_agents(framework=f"listfw{uid}", page_size=2)
    assert [a.descriptor.agent_id for a in everyone] == ids  # ordered by id, across 3 pages
    page = client.list_agents_page(framework=f"listfw{uid}", page_size=2)
    assert len(page.agents) == 2 and page.next_page_token
    even = client.list_agents(capability=f"tool-{uid}-0")
    assert [a.descriptor.agent_id for a in even] == ids[0::2]
    assert client.list_agents(framework=f"listfw{uid}", online=True) == []
    assert len(client.list_agents(framework=f"listfw{uid}", online=False)) == 5


def test_unregister(client, uid):
    agent_id = f"opencode://gone-{uid}"
    client.register_agent(agent_id)
    assert client.unregister_agent(agent_id) == 0
    with pytest.raises(agentbus.NotFoundError):
        client.get_agent(agent_id)
    with pytest.raises(agentbus.NotFoundError) as exc:
        client.unregister_agent(agent_id)
    assert exc.value.code is grpc.StatusCode.NOT_FOUND
    assert exc.value.method == "/agentbus.v1.AgentService/UnregisterAgent"


def test_unregister_dead_letters_open_messages_and_notifies_the_sender(client, uid):
    sender, recipient = f"claude-code://orc-{uid}", f"opencode://doomed-{uid}"
    client.register_agent(sender)
    client.register_agent(recipient)
    client.send(sender, recipient, "task_request", {"n": 1}, message_id=f"doomed-{uid}")
    assert client.unregister_agent(recipient) == 1
    status = client.get_message(f"doomed-{uid}")
    assert agentbus.state_name(status.state, "message") == "dead_lettered"
    with client.inbox(sender, idle_timeout=5) as inbox:
        notice = next(inbox)
    assert notice.message.message_type == message_pb2.MESSAGE_TYPE_ERROR
    assert notice.message.in_reply_to == f"doomed-{uid}"
    assert notice.message.sender.agent_id == "agentbus://bus"
