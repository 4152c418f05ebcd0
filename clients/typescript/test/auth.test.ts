import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { AgentBusClient, Code, connect, normalizeAddress, type Interceptor } from "../src/index.js";
import { rejectsWithCode, startServer, type RunningServer } from "./server.js";

const KEY = "s3cret-key";

describe("API key and agent tokens", () => {
  let server: RunningServer;
  let good: AgentBusClient;
  let wrong: AgentBusClient;
  let missing: AgentBusClient;

  before(async () => {
    server = await startServer({ apiKey: KEY });
    good = connect(server.address, { apiKey: KEY });
    wrong = connect(server.address, { apiKey: "not-the-key" });
    missing = connect(`http://${server.address}/`);
  });
  after(async () => {
    for (const c of [good, wrong, missing]) c.close();
    await server.stop();
  });

  test("the right key in x-agent-api-key is accepted on every service", async () => {
    await good.registerAgent("claude-code://orchestrator");
    await good.createSession({ sessionId: "sess_auth", orchestrator: "claude-code://orchestrator" });
    const { messageId } = await good.send({
      sender: "claude-code://orchestrator",
      recipient: "claude-code://orchestrator",
      messageType: "status_update",
    });
    assert.ok(messageId);
    for await (const event of good.watchSessions({ afterSequence: 0 })) {
      assert.equal(event.sessionId, "sess_auth");
      break;
    }
  });

  test("a wrong key fails with UNAUTHENTICATED, streams included, without retrying", async () => {
    await rejectsWithCode(wrong.registerAgent("opencode://intruder"), Code.Unauthenticated, /invalid API key/);
    await rejectsWithCode(wrong.getSession("sess_auth"), Code.Unauthenticated);
    let reconnects = 0;
    await rejectsWithCode(
      wrong.watchSessions({ afterSequence: 0, onReconnect: () => reconnects++ }).next(),
      Code.Unauthenticated,
    );
    await rejectsWithCode(
      wrong.inbox("claude-code://orchestrator", { onReconnect: () => reconnects++ }).next(),
      Code.Unauthenticated,
    );
    assert.equal(reconnects, 0);
  });

  test("no key fails with UNAUTHENTICATED and says which metadata to send", async () => {
    await rejectsWithCode(missing.listAgents(), Code.Unauthenticated, /x-agent-api-key/);
  });

  test("custom interceptors run on every call (here: authorization: Bearer)", async () => {
    const seen: string[] = [];
    const bearer: Interceptor = (next) => async (request) => {
      seen.push(request.method.name);
      request.header.set("authorization", `Bearer ${KEY}`);
      return next(request);
    };
    const viaBearer = connect(server.address, { interceptors: [bearer] });
    try {
      const agent = await viaBearer.getAgent("claude-code://orchestrator");
      assert.equal(agent.descriptor?.agentId, "claude-code://orchestrator");
      assert.deepEqual(seen, ["GetAgent"]);
    } finally {
      viaBearer.close();
    }
  });

  test("an agent token acts as its agent only", async () => {
    const me = "opencode://tok-auth";
    const other = "claude-code://tok-auth";
    await good.registerAgent(other);
    const forever = await good.issueAgentToken(me);
    assert.equal(forever.expiresAt, undefined);
    const brief = await good.issueAgentToken(me, { ttl: 600_000, description: "second" });
    const ids = async () => (await good.listAgentTokens(me)).map((t) => t.tokenId);
    assert.deepEqual(await ids(), [forever.tokenId, brief.tokenId]);

    const agent = connect(server.address, { token: forever.token });
    try {
      await agent.registerAgent(me);
      assert.ok((await agent.send({ sender: me, recipient: other, messageType: "status_update" })).accepted);
      await rejectsWithCode(agent.createSession({ orchestrator: other }), Code.PermissionDenied);
      const theirs = await good.createSession({ orchestrator: other });
      await rejectsWithCode(agent.getSession(theirs.sessionId), Code.NotFound);
      const mine = await agent.createSession({ orchestrator: me, participants: [other] });
      assert.equal((await agent.getSession(mine.sessionId)).orchestrator, me);
      await rejectsWithCode(agent.issueAgentToken(me), Code.PermissionDenied);
      await rejectsWithCode(good.revokeAgentToken(forever.tokenId, { agentId: other }), Code.NotFound);
      await good.revokeAgentToken(forever.tokenId);
      await rejectsWithCode(agent.getAgent(me), Code.Unauthenticated);
      assert.deepEqual(await ids(), [brief.tokenId]);
    } finally {
      agent.close();
    }
  });

  test("apiKey and token do not mix", () => {
    assert.throws(
      () => connect(server.address, { apiKey: KEY, token: "abt_0" }),
      (e: { code?: Code; message?: string }) => e.code === Code.InvalidArgument && /not both/.test(e.message ?? ""),
    );
  });

  test("addresses: host:port or a URL", () => {
    assert.equal(normalizeAddress("127.0.0.1:8080"), "http://127.0.0.1:8080");
    assert.equal(normalizeAddress("http://localhost:8080/"), "http://localhost:8080");
    assert.equal(normalizeAddress("https://bus.example:443"), "https://bus.example:443");
    assert.throws(() => normalizeAddress(" "), (e: { code?: Code }) => e.code === Code.InvalidArgument);
  });
});
