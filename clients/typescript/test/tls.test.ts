// TLS and mutual TLS against the real server, with certificates made by the
// openssl command line for this run.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { connect } from "../src/index.js";
import { startServer, type RunningServer } from "./server.js";

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

describe("TLS", () => {
  let server: RunningServer;

  before(async () => {
    makeCa("ca");
    makeCa("clients");
    issue("ca", "server", "DNS:localhost,IP:127.0.0.1");
    issue("clients", "agent", "URI:opencode://backend");
    server = await startServer({
      apiKey: KEY,
      args: ["--tls-cert", join(dir, "server.pem"), "--tls-key", join(dir, "server.key"),
        "--tls-client-ca", join(dir, "clients.pem")],
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
