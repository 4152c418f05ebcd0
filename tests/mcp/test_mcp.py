"""`agentbus mcp` driven by the official Python MCP SDK over stdio, against
a real bus: the tool list and schemas, the session tutorial's flow between
two coding agents (orchestrator and backend) using tools only, bad
arguments, bus errors, and a bus restart in the middle of the flow."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

BIN = os.environ["AGENTBUS_BIN"]
KEY = "mcp-admin-key"
ORC = "claude-code://orchestrator"
BACKEND = "opencode://backend"
TOOLS = {
    "whoami", "list_agents", "send_message", "receive_messages", "ack_messages",
    "create_session", "get_session", "list_sessions", "update_shared_context",
    "update_workflow", "advance_workflow", "complete_session", "terminate_session",
    "wait_for_session_events",
}

pytestmark = pytest.mark.timeout(120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bus:
    """One `agentbus serve` on a fixed port and data directory, restartable."""

    def __init__(self, data_dir: str):
        self.port = free_port()
        self.data_dir = data_dir
        self.address = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        args = [BIN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
                "--api-key", KEY, "--heartbeat-interval", "1s", "--ack-timeout", "3s"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_BUS_")}
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        line = self.process.stdout.readline()
        assert line.startswith("agentbus listening on"), line

    def stop(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()
            self.process = None

    def token(self, agent: str) -> str:
        out = subprocess.run([BIN, "tokens", "issue", agent, "--addr", self.address, "--api-key", KEY],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)["token"]


@pytest.fixture
def bus():
    with tempfile.TemporaryDirectory() as data_dir:
        bus = Bus(data_dir)
        bus.start()
        yield bus
        bus.stop()


@contextlib.asynccontextmanager
async def agent(bus: Bus, agent_id: str, *extra: str):
    """An MCP client session with `agentbus mcp` acting as `agent_id`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_BUS_")}
    env.update(AGENT_BUS_ADDR=bus.address, AGENT_BUS_AGENT_ID=agent_id, AGENT_BUS_TOKEN=bus.token(agent_id))
    params = StdioServerParameters(command=BIN, args=["mcp", *extra], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


async def call(session: ClientSession, tool: str, **arguments):
    """A tool call that must succeed; returns its structured content."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {result.content}"
    assert result.content[0].text, "a summary for the model"
    return result.structured_content


async def fails(session: ClientSession, tool: str, **arguments) -> str:
    """A tool call that must be an error result; returns its text."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, f"{tool} succeeded: {result.structured_content}"
    return result.content[0].text


def test_tools_are_listed_with_object_schemas(bus):
    async def main():
        async with agent(bus, ORC, "--capability", "languages=rust") as orc:
            tools = {t.name: t for t in (await orc.list_tools()).tools}
            assert set(tools) == TOOLS
            for tool in tools.values():
                assert tool.input_schema["type"] == "object", tool.name
                assert "Example" in tool.description, tool.name
            assert "to" in tools["send_message"].input_schema["required"]
            assert "wait_for_reply_seconds" in tools["send_message"].input_schema["properties"]
            me = await call(orc, "whoami")
            assert me["agent_id"] == ORC
            assert me["agent"]["descriptor"]["capabilities"]["languages"] == ["rust"]

    anyio.run(main)


def test_bad_arguments_and_bus_errors_are_tool_errors(bus):
    async def main():
        async with agent(bus, ORC) as orc:
            assert "wait_seconds" in await fails(orc, "receive_messages", wait_seconds="soon")
            assert "wait_seconds" in await fails(orc, "receive_messages", wait_seconds=600)
            assert "to" in await fails(orc, "send_message", payload={"x": 1})
            text = await fails(orc, "create_session", participants=[{"agent_id": "not an agent"}])
            assert text.startswith("INVALID_ARGUMENT") and "participants[0].agent_id" in text, text
            assert (await fails(orc, "get_session", session_id="sess_nowhere")).startswith("NOT_FOUND")
            # The token acts as the orchestrator only.
            text = await fails(orc, "update_workflow", session_id="sess_nowhere", current_step="x")
            assert text.startswith("NOT_FOUND"), text
            # Still serving after errors.
            assert (await call(orc, "whoami"))["agent_id"] == ORC

    anyio.run(main)


def test_the_tutorial_flow_between_two_coding_agents_survives_a_bus_restart(bus):
    async def main():
        async with agent(bus, ORC) as orc, agent(bus, BACKEND) as backend:
            created = await call(
                orc, "create_session", session_id="sess_mcp",
                participants=[{"agent_id": BACKEND, "role": "implementer"}],
                steps=[{"name": "design"}, {"name": "implementation", "required_agents": [BACKEND]}],
                shared_context={"project": "notifications"},
            )
            assert created["session"]["orchestrator"] == ORC
            sent = await call(orc, "send_message", to=BACKEND, session_id="sess_mcp",
                              payload={"task": "implement the notifications API"})
            task_id = sent["message_id"]

            # The bus goes away: a clear tool error, and the MCP servers stay up.
            bus.stop()
            text = await fails(backend, "receive_messages", wait_seconds=1)
            assert text.startswith("UNAVAILABLE"), text
            bus.start()

            received = {}
            for _ in range(20):
                received = await call(backend, "receive_messages", wait_seconds=5)
                if received["deliveries"]:
                    break
            delivery = received["deliveries"][0]
            assert delivery["message"]["message_id"] == task_id
            assert delivery["message"]["payload"] == {"task": "implement the notifications API"}
            assert delivery["attempt"] >= 1

            await call(backend, "update_shared_context", session_id="sess_mcp", context={"api": "ready"})
            await call(backend, "send_message", to=ORC, message_type="task_response", session_id="sess_mcp",
                       in_reply_to=task_id, payload={"result": "done", "files": ["src/api.rs"]})
            acked = await call(backend, "ack_messages", message_ids=[task_id])
            # The reply closed the task request already: acking it is a no-op.
            assert acked["results"][0]["state"] in ("acked", "answered"), acked
            # Only the orchestrator steers the session.
            assert (await fails(backend, "complete_session", session_id="sess_mcp")).startswith("PERMISSION_DENIED")

            seen = await call(orc, "wait_for_session_events", session_ids=["sess_mcp"], after_sequence=0,
                              wait_seconds=5)
            kinds = [e["type"] for e in seen["events"]]
            assert kinds[0] == "session_created", kinds
            assert {"task_delegated", "task_updated", "shared_context_updated"} <= set(kinds), kinds
            assert seen["next_after_sequence"] >= seen["events"][-1]["sequence"]
            later = await call(orc, "wait_for_session_events", session_ids=["sess_mcp"],
                               after_sequence=seen["next_after_sequence"], wait_seconds=0)
            assert later["events"] == []

            reply = (await call(orc, "receive_messages", wait_seconds=5))["deliveries"][0]["message"]
            assert reply["in_reply_to"] == task_id and reply["payload"]["result"] == "done"
            await call(orc, "ack_messages", message_ids=[reply["message_id"]])
            await call(orc, "advance_workflow", session_id="sess_mcp")
            done = await call(orc, "complete_session", session_id="sess_mcp", summary="API shipped")
            assert done["session"]["state"] == "completed"
            listed = await call(backend, "list_sessions", states=["completed"])
            assert [s["session_id"] for s in listed["sessions"]] == ["sess_mcp"]

    anyio.run(main)


def test_only_protocol_messages_on_stdout(bus):
    """A raw initialize over the pipe: every stdout line is JSON-RPC."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_BUS_")}
    env.update(AGENT_BUS_ADDR=bus.address, AGENT_BUS_AGENT_ID=ORC, AGENT_BUS_API_KEY=KEY, RUST_LOG="debug")
    process = subprocess.Popen([BIN, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, text=True)
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                          "clientInfo": {"name": "raw", "version": "0"}}}
    out, err = process.communicate(json.dumps(request) + "\n", timeout=30)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, err
    for line in lines:
        assert json.loads(line)["jsonrpc"] == "2.0", line
    assert json.loads(lines[0])["result"]["serverInfo"]["name"] == "agentbus"
