import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { durationFromMs } from "@bufbuild/protobuf/wkt";

import { AgentBusClient, Code, connect } from "../src/index.js";
import { rejectsWithCode, startServer, within, type RunningServer } from "./server.js";

describe("agents", () => {
  let server: RunningServer;
  let bus: AgentBusClient;

  before(async () => {
    server = await startServer();
    bus = connect(server.address);
  });
  after(async () => {
    bus.close();
    await server.stop();
  });

  test("registers an agent by id and fills in its framework", async () => {
    const { agent, created } = await bus.registerAgent("claude-code://orchestrator");
    assert.equal(created, true);
    assert.equal(agent.descriptor?.agentId, "claude-code://orchestrator");
    assert.equal(agent.descriptor?.framework, "claude-code");
    assert.equal(agent.online, false);
    assert.ok(agent.registeredAt, "registered_at is set");
  });

  test("registers a full descriptor and reads it back", async () => {
    await bus.registerAgent({
      agentId: "opencode://backend",
      framework: "opencode",
      capabilities: {
        languages: ["rust", "typescript"],
        optimalTasks: ["implementation"],
        performanceProfile: { avgResponseTime: durationFromMs(2500), successRate: 0.95, concurrentCapacity: 3 },
      },
      endpoints: { http: "http://localhost:9000" },
      metadata: { version: "1.2.3", author: "team", tags: ["backend"] },
      healthCheckUrl: "http://localhost:9000/health",
    });
    const agent = await bus.getAgent("opencode://backend");
    assert.deepEqual(agent.descriptor?.capabilities?.languages, ["rust", "typescript"]);
    assert.equal(agent.descriptor?.capabilities?.performanceProfile?.concurrentCapacity, 3);
    assert.equal(agent.descriptor?.metadata?.version, "1.2.3");
    assert.equal(agent.descriptor?.healthCheckUrl, "http://localhost:9000/health");
  });

  test("registering twice fails with ALREADY_EXISTS unless update is set", async () => {
    await bus.registerAgent("codex://frontend");
    await rejectsWithCode(bus.registerAgent("codex://frontend"), Code.AlreadyExists, /codex:\/\/frontend/);
    const updated = await bus.registerAgent(
      { agentId: "codex://frontend", metadata: { description: "updated" } },
      { update: true },
    );
    assert.equal(updated.created, false);
    assert.equal(updated.agent.descriptor?.metadata?.description, "updated");
  });

  test("invalid agent ids and framework mismatches fail with INVALID_ARGUMENT", async () => {
    await rejectsWithCode(bus.registerAgent("not-an-agent-id"), Code.InvalidArgument, /agent_id/);
    await rejectsWithCode(
      bus.registerAgent({ agentId: "opencode://x", framework: "codex" }),
      Code.InvalidArgument,
      /framework/,
    );
  });

  test("getting an unknown agent fails with NOT_FOUND", async () => {
    await rejectsWithCode(bus.getAgent("ghost://nobody"), Code.NotFound, /ghost:\/\/nobody/);
  });

  test("lists agents by framework, capability and presence", async () => {
    const all = await bus.listAgents();
    const ids = all.agents.map((a) => a.descriptor?.agentId);
    assert.deepEqual(ids, [...ids].sort(), "ordered by agent id");
    assert.ok(ids.includes("opencode://backend"));

    const opencode = await bus.listAgents({ framework: "opencode" });
    assert.deepEqual(
      opencode.agents.map((a) => a.descriptor?.agentId),
      ["opencode://backend"],
    );
    const rust = await bus.listAgents({ capability: "rust" });
    assert.deepEqual(
      rust.agents.map((a) => a.descriptor?.agentId),
      ["opencode://backend"],
    );

    // An open inbox makes the agent online.
    const stop = new AbortController();
    const inbox = bus.inbox("opencode://backend", { signal: stop.signal });
    const pending = inbox.next();
    try {
      await within(
        5000,
        (async () => {
          for (;;) {
            const online = await bus.listAgents({ online: true });
            if (online.agents.some((a) => a.descriptor?.agentId === "opencode://backend")) return;
            await new Promise((r) => setTimeout(r, 50));
          }
        })(),
        "backend online",
      );
      const offline = await bus.listAgents({ online: false });
      assert.ok(!offline.agents.some((a) => a.descriptor?.agentId === "opencode://backend"));
    } finally {
      stop.abort();
      assert.equal((await pending).done, true, "an aborted inbox ends without an error");
    }
  });

  test("pages through agents with allAgents", async () => {
    for (let i = 0; i < 5; i++) await bus.registerAgent(`pager://agent-${i}`);
    const first = await bus.listAgents({ framework: "pager", pageSize: 2 });
    assert.equal(first.agents.length, 2);
    assert.notEqual(first.nextPageToken, "");
    const ids: string[] = [];
    for await (const agent of bus.allAgents({ framework: "pager", pageSize: 2 })) ids.push(agent.descriptor!.agentId);
    assert.deepEqual(ids, [0, 1, 2, 3, 4].map((i) => `pager://agent-${i}`));
  });

  test("unregisters an agent, dead-lettering its queued messages", async () => {
    await bus.registerAgent("temp://worker");
    await bus.send({ sender: "claude-code://orchestrator", recipient: "temp://worker", messageType: "task_request" });
    const { deadLettered } = await bus.unregisterAgent("temp://worker");
    assert.equal(deadLettered, 1);
    await rejectsWithCode(bus.getAgent("temp://worker"), Code.NotFound);
    await rejectsWithCode(bus.unregisterAgent("temp://worker"), Code.NotFound);
  });
});
