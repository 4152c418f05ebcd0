// Runs examples/tutorial.ts and examples/terminate.ts as a user would, against
// a real server that requires an API key, and checks what they print.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { AgentBusClient, connect, sessionStateName } from "../src/index.js";
import { PACKAGE_DIR, startServer, type RunningServer } from "./server.js";

const KEY = "tutorial-key";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function runExample(name: string, args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", join(PACKAGE_DIR, "examples", name), ...args],
      { cwd: PACKAGE_DIR, env: { ...process.env, ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

const describeRun = (r: Run) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

describe("examples", () => {
  let server: RunningServer;
  let bus: AgentBusClient;

  before(async () => {
    server = await startServer({ apiKey: KEY });
    bus = connect(server.address, { apiKey: KEY });
  });
  after(async () => {
    bus.close();
    await server.stop();
  });

  test("tutorial.ts runs the whole session story (address from argv, key from the environment)", async () => {
    const run = await runExample("tutorial.ts", [server.address], { AGENT_BUS_API_KEY: KEY });
    assert.equal(run.code, 0, describeRun(run));
    const out = run.stdout;
    const sessionId = /^New session: (\S+)$/m.exec(out)?.[1];
    assert.ok(sessionId, describeRun(run));
    assert.match(out, /opencode:\/\/security \(reviewer, active\)/);
    assert.match(out, /^Backend received task_request task_impl_backend_\S+ \(session sess_notifications_/m);
    assert.match(out, /^Backend acked /m);
    assert.match(out, /^Frontend received task_request task_impl_frontend_\S+ \(session sess_notifications_/m);
    assert.match(out, /^Frontend acked /m);
    assert.match(out, /^Orchestrator received status_update from opencode:\/\/backend/m);
    assert.match(
      out,
      /^Orchestrator received task_response from opencode:\/\/backend: \{"approach":"server push","confidence":0.9,"result":\{"auditLog":true,"transport":"websocket"\}\}$/m,
    );
    assert.match(
      out,
      /^Orchestrator received task_response from codex:\/\/frontend: \{"approach":"client subscription","confidence":0.7,"result":\{"auditLog":true,"transport":"websocket"\}\}$/m,
    );
    assert.match(out, /^Workflow: current=implementation completed=\[design\] pending=\[review\]$/m);
    assert.match(out, /^Task task_impl_backend_\S+: assignee=opencode:\/\/backend state=completed step=implementation confidence=0.9 approach="server push"$/m);
    assert.match(out, /^Task task_impl_frontend_\S+: assignee=codex:\/\/frontend state=completed step=implementation confidence=0.7 approach="client subscription"$/m);
    assert.match(
      out,
      /^Aggregated agg_1 \(consensus\) of step implementation: \{"auditLog":true,"transport":"websocket"\} confidence=0.90 from \[task_impl_backend_\S+, task_impl_frontend_\S+\]$/m,
    );
    assert.match(out, /^ {2}conflict approach_difference: approaches differ: client subscription, server push$/m);
    assert.match(out, /"latestCommit":"abc123"/);
    assert.match(out, /"project":"feature\/notifications"/);
    assert.match(out, /state=completed summary="All tasks completed successfully" artifacts=\["s3:\/\/artifacts\/build.zip"\]/);

    // The executive summary, as Markdown, between the completion and the events.
    const summary = out.split("Executive summary:\n")[1]?.split("Events seen:")[0] ?? "";
    assert.ok(summary.startsWith(`# Session ${sessionId}: completed\n`), describeRun(run));
    for (const expected of [
      "All tasks completed successfully",
      "**Totals:** 2 tasks completed, 0 failed, 0 timed out",
      "## design (completed)",
      "## implementation (current)",
      "## review (pending)",
      `- \`task_impl_backend_${sessionId}\` by opencode://backend: completed`,
      `- \`task_impl_frontend_${sessionId}\` by codex://frontend: completed`,
      'Result: `{"auditLog":true,"transport":"websocket"}`',
      "## Unresolved conflicts",
      "- approaches differ: client subscription, server push",
      "- s3://artifacts/build.zip",
      "| opencode://backend | 1 | 1 | 0 |",
    ]) {
      assert.ok(summary.includes(expected), `missing ${expected} in the summary:\n${summary}`);
    }

    // The events the watcher printed, in order.
    const printed = [...out.matchAll(/^ {2}#(\d+) (\w+)/gm)].map((m) => m[2]);
    assert.deepEqual(printed, [
      "session_created",
      "participant_added",
      "workflow_updated",
      "task_delegated",
      "task_updated",
      "task_updated",
      "task_delegated",
      "task_updated",
      "results_aggregated",
      "shared_context_updated",
      "session_completed",
    ]);

    // What the example did is really on the bus.
    const session = await bus.getSession(sessionId);
    assert.equal(sessionStateName(session.state), "completed");
    assert.equal(session.participants.length, 5);
    assert.equal(session.tasks.length, 2);
    assert.equal(session.aggregations.length, 1);
    assert.equal(session.executiveSummary?.outcome, session.state);
    assert.deepEqual(session.sharedContext?.branch, "feature/notifications");
  });

  test("tutorial.ts can run again on the same bus (address from AGENT_BUS_URL)", async () => {
    const run = await runExample("tutorial.ts", [], { AGENT_BUS_URL: server.address, AGENT_BUS_API_KEY: KEY });
    assert.equal(run.code, 0, describeRun(run));
    assert.match(run.stdout, /#\d+ session_completed/);
    assert.match(run.stdout, /^# Session sess_notifications_\S+: completed$/m);
  });

  test("terminate.ts terminates with a reason and shows the refusal that follows", async () => {
    const run = await runExample("terminate.ts", [server.address], { AGENT_BUS_API_KEY: KEY });
    assert.equal(run.code, 0, describeRun(run));
    assert.match(run.stdout, /state=terminated reason=timeout details="Frontend agent offline"/);
    assert.match(run.stdout, /^ {2}opencode:\/\/backend: session_terminated$/m);
    assert.match(run.stdout, /Further changes are refused: FailedPrecondition/);
    const sessionId = /^New session: (\S+)$/m.exec(run.stdout)?.[1];
    assert.ok(sessionId);
    const session = await bus.getSession(sessionId);
    assert.equal(session.terminationReason, "timeout");
  });

  test("an example fails with a non-zero exit and the gRPC code when the key is wrong", async () => {
    const run = await runExample("terminate.ts", [server.address], { AGENT_BUS_API_KEY: "wrong" });
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /unauthenticated/);
  });
});
