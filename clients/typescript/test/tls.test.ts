// TLS and mutual TLS against the real server, with certificates made by the
// openssl command line for this run.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { Code, connect, type AgentBusClient } from "../src/index.js";
import { rejectsWithCode, startServer, within, type RunningServer } from "./server.js";

const KEY = "tls-key";
const dir = mkdtempSync(join(tmpdir(), "agentbus-tls-"));

function openssl(...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
}

function makeCa(name: string): void {
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", `/CN=${name}`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
}

function issue(ca: string, name: string, san: string): void {
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${name}`);
  writeFileSync(join(dir, `${name}.ext`), `subjectAltName=${san}\n`);
  openssl("x509", "-req", "-in", `${name}.csr`, "-CA", `${ca}.pem`, "-CAkey", `${ca}.key`,
    "-CAcreateserial", "-out", `${name}.pem`, "-days", "2", "-extfile", `${name}.ext`);
}

const read = (name: string) => readFileSync(join(dir, name));
const SERVER_CERT = ["--tls-cert", join(dir, "server.pem"), "--tls-key", join(dir, "server.key")];

before(() => {
  makeCa("ca");
  makeCa("clients");
  issue("ca", "server", "DNS:localhost,IP:127.0.0.1");
  issue("clients", "agent", "URI:opencode://backend");
});

describe("TLS", () => {
  let server: RunningServer;

  before(async () => {
    server = await startServer({
      apiKey: KEY,
      args: [...SERVER_CERT, "--tls-client-ca", join(dir, "clients.pem")],
    });
  });
  after(async () => {
    await server.stop();
  });

  test("mutual TLS with a CA file and a client certificate", async () => {
    const bus = connect(`https://${server.address}`, {
      apiKey: KEY,
      tls: { ca: read("ca.pem"), cert: read("agent.pem"), key: read("agent.key") },
    });
    try {
      const { agent, created } = await bus.registerAgent("opencode://backend");
      assert.equal(agent.descriptor?.agentId, "opencode://backend");
      assert.equal(created, true);
    } finally {
      bus.close();
    }
  });

  test("without a client certificate the server refuses", async () => {
    const bus = connect(`https://${server.address}`, { apiKey: KEY, tls: { ca: read("ca.pem") }, defaultTimeoutMs: 5000 });
    try {
      await assert.rejects(bus.registerAgent("opencode://backend"));
    } finally {
      bus.close();
    }
  });

  test("TLS options are checked", () => {
    assert.throws(() => connect(server.address, { tls: { ca: "x" } }), /needs an https:\/\/ address/);
    assert.throws(() => connect(`https://${server.address}`, { tls: { cert: "x" } }), /cert and key go together/);
  });
});

describe("agent tokens over TLS", () => {
  const me = "opencode://tok-tls";
  const other = "claude-code://tok-tls";
  let server: RunningServer;
  let admin: AgentBusClient;

  before(async () => {
    server = await startServer({ apiKey: KEY, args: SERVER_CERT });
    admin = connect(`https://${server.address}`, { apiKey: KEY, tls: { ca: read("ca.pem") } });
  });
  after(async () => {
    admin.close();
    await server.stop();
  });

  test("a token acts as its agent only, until it is revoked", async () => {
    const issued = await admin.issueAgentToken(me, { ttl: "1h", description: "tls test" });
    assert.match(issued.token, /^abt_[0-9a-f]{64}$/);
    assert.ok(issued.tokenId);
    const expiresInMs = (issued.expiresAt?.getTime() ?? 0) - Date.now();
    assert.ok(expiresInMs > 59 * 60_000 && expiresInMs <= 3_600_000, `expires in ${expiresInMs} ms`);
    await admin.registerAgent(other);

    const agent = connect(`https://${server.address}`, { token: issued.token, tls: { ca: read("ca.pem") } });
    try {
      assert.equal((await agent.registerAgent(me)).agent.descriptor?.agentId, me);
      await rejectsWithCode(agent.registerAgent("opencode://not-me"), Code.PermissionDenied);
      await admin.send({ sender: other, recipient: me, messageType: "task_request", payload: { n: 1 } });
      for await (const delivery of agent.inbox(me)) {
        assert.deepEqual(delivery.payload, { n: 1 });
        await delivery.ack();
        break;
      }
      assert.ok((await agent.send({ sender: me, recipient: other, messageType: "status_update" })).accepted);
      await rejectsWithCode(
        agent.send({ sender: other, recipient: me, messageType: "status_update" }),
        Code.PermissionDenied,
      );
      await rejectsWithCode(agent.inbox(other).next(), Code.PermissionDenied);
      await rejectsWithCode(agent.listAgentTokens(me), Code.PermissionDenied);

      const listed = await admin.listAgentTokens(me);
      assert.deepEqual(
        listed.map((t) => [t.tokenId, t.agentId, t.description]),
        [[issued.tokenId, me, "tls test"]],
      );
      assert.ok(listed[0]?.createdAt !== undefined && listed[0].expiresAt !== undefined);
      assert.ok(!Object.values(listed[0]).includes(issued.token));

      // Revoking ends the token's open stream and fails its next call.
      await admin.send({ sender: other, recipient: me, messageType: "task_request", payload: { n: 2 } });
      const inbox = agent.inbox(me, { autoAck: false });
      assert.deepEqual((await inbox.next()).value?.payload, { n: 2 });
      await admin.revokeAgentToken(issued.tokenId, { agentId: me });
      await rejectsWithCode(within(5000, inbox.next(), "the revoked token's inbox"), Code.Unauthenticated);
      await rejectsWithCode(agent.getAgent(me), Code.Unauthenticated);
    } finally {
      agent.close();
    }
  });
});
