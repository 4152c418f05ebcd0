import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  AgentBusClient,
  Code,
  ParticipantStatus,
  SessionState,
  connect,
  participantStatusName,
  sessionStateName,
  taskStateName,
} from "../src/index.js";
import { rejectsWithCode, startServer, type RunningServer } from "./server.js";

const ORCH = "claude-code://orchestrator";

describe("sessions", () => {
  let server: RunningServer;
  let bus: AgentBusClient;
  let n = 0;
  const newSession = (id = `sess_test_${++n}`) =>
    bus.createSession({
      sessionId: id,
      orchestrator: ORCH,
      participants: [
        { agentId: "opencode://backend", role: "implementer" },
        { agentId: "codex://frontend", role: "implementer" },
        "claude-code://qa",
      ],
      steps: [
        { name: "design", requiredAgents: [ORCH], estimatedDuration: "30m" },
        { name: "implementation", requiredAgents: ["opencode://backend", "codex://frontend"] },
        "review",
      ],
      sharedContext: { project: "feature/notifications", requirements: ["real-time updates", "audit logs"] },
    });

  before(async () => {
    server = await startServer();
    bus = connect(server.address);
  });
  after(async () => {
    bus.close();
    await server.stop();
  });

  test("creates a session: orchestrator first, participants active, first step current", async () => {
    const session = await newSession("sess_create");
    assert.equal(session.sessionId, "sess_create");
    assert.equal(session.orchestrator, ORCH);
    assert.equal(session.state, SessionState.ACTIVE);
    assert.equal(session.version, 1n);
    assert.deepEqual(
      session.participants.map((p) => [p.agentId, p.role, participantStatusName(p.status)]),
      [
        [ORCH, "orchestrator", "active"],
        ["opencode://backend", "implementer", "active"],
        ["codex://frontend", "implementer", "active"],
        ["claude-code://qa", "participant", "active"],
      ],
    );
    assert.equal(session.workflow?.currentStep, "design");
    assert.deepEqual(session.workflow?.pendingSteps, ["implementation", "review"]);
    assert.equal(session.workflow?.steps[0]?.estimatedDuration?.seconds, 1800n);
    assert.deepEqual(session.sharedContext, {
      project: "feature/notifications",
      requirements: ["real-time updates", "audit logs"],
    });
    assert.deepEqual(await bus.getSession("sess_create"), session);
  });

  test("the server picks an id when none is given", async () => {
    const session = await bus.createSession({ orchestrator: ORCH });
    assert.match(session.sessionId, /^sess_/);
  });

  test("create errors: ALREADY_EXISTS, INVALID_ARGUMENT", async () => {
    await newSession("sess_dup");
    await rejectsWithCode(newSession("sess_dup"), Code.AlreadyExists, /sess_dup/);
    await rejectsWithCode(bus.createSession({ orchestrator: "nobody" }), Code.InvalidArgument, /orchestrator/);
    await rejectsWithCode(bus.createSession({ sessionId: "bad id", orchestrator: ORCH }), Code.InvalidArgument, /session_id/);
  });

  test("get of an unknown session fails with NOT_FOUND", async () => {
    await rejectsWithCode(bus.getSession("sess_missing"), Code.NotFound, /sess_missing/);
    await rejectsWithCode(bus.addParticipant("sess_missing", "opencode://x"), Code.NotFound);
  });

  test("adds and removes participants; a second add fails with ALREADY_EXISTS", async () => {
    const { sessionId } = await newSession();
    const added = await bus.addParticipant(sessionId, {
      agentId: "opencode://security",
      framework: "opencode",
      role: "reviewer",
      capabilities: ["audit"],
      metadata: { clearance: "high" },
    });
    const security = added.participants.find((p) => p.agentId === "opencode://security");
    assert.equal(security?.role, "reviewer");
    assert.deepEqual(security?.capabilities, ["audit"]);
    assert.deepEqual(security?.metadata, { clearance: "high" });
    assert.equal(added.version, 2n);
    await rejectsWithCode(bus.addParticipant(sessionId, "opencode://security"), Code.AlreadyExists);

    const removed = await bus.removeParticipant(sessionId, "opencode://security");
    const left = removed.participants.find((p) => p.agentId === "opencode://security");
    assert.equal(left?.status, ParticipantStatus.LEFT);
    assert.ok(left?.leaveTime, "leave_time is set");
    await rejectsWithCode(bus.removeParticipant(sessionId, "opencode://nobody"), Code.NotFound);
  });

  test("updates and advances the workflow", async () => {
    const { sessionId } = await newSession();
    const updated = await bus.updateWorkflow(sessionId, {
      currentStep: "implementation",
      completedSteps: ["design"],
      pendingSteps: ["review"],
    });
    assert.equal(updated.workflow?.currentStep, "implementation");
    assert.deepEqual(updated.workflow?.completedSteps, ["design"]);

    const advanced = await bus.advanceWorkflow(sessionId);
    assert.equal(advanced.workflow?.currentStep, "review");
    assert.deepEqual(advanced.workflow?.completedSteps, ["design", "implementation"]);
    assert.deepEqual(advanced.workflow?.pendingSteps, []);

    await rejectsWithCode(
      bus.updateWorkflow(sessionId, { currentStep: "no-such-step" }),
      Code.InvalidArgument,
      /no-such-step/,
    );
    // "design" exists but is no longer pending: a state problem, not a bad argument.
    await rejectsWithCode(bus.advanceWorkflow(sessionId, { nextStep: "design" }), Code.FailedPrecondition, /not pending/);
    const finished = await bus.advanceWorkflow(sessionId);
    assert.equal(finished.workflow?.currentStep, "", "no step is current after the last one");
    assert.deepEqual(finished.workflow?.completedSteps, ["design", "implementation", "review"]);
  });

  test("replaces and merges the shared context", async () => {
    const { sessionId } = await newSession();
    const merged = await bus.mergeSharedContext(sessionId, {
      branch: "feature/notifications",
      latestCommit: "abc123",
      requirements: null,
    });
    assert.deepEqual(merged.sharedContext, {
      project: "feature/notifications",
      branch: "feature/notifications",
      latestCommit: "abc123",
    });
    const replaced = await bus.updateSharedContext(sessionId, { only: "this" });
    assert.deepEqual(replaced.sharedContext, { only: "this" });
    const explicit = await bus.updateSharedContext(sessionId, { nested: { a: 1 } }, { mode: "merge" });
    assert.deepEqual(explicit.sharedContext, { only: "this", nested: { a: 1 } });
  });

  test("expectedVersion makes a change conditional (ABORTED on mismatch, nothing changed)", async () => {
    const session = await newSession();
    await rejectsWithCode(
      bus.mergeSharedContext(session.sessionId, { x: 1 }, { expectedVersion: session.version + 5n }),
      Code.Aborted,
      /version/,
    );
    assert.equal((await bus.getSession(session.sessionId)).version, session.version);
    const changed = await bus.mergeSharedContext(session.sessionId, { x: 1 }, { expectedVersion: session.version });
    assert.equal(changed.version, session.version + 1n);
  });

  test("completes a session with summary and artifacts; later changes fail with FAILED_PRECONDITION", async () => {
    const { sessionId } = await newSession();
    const done = await bus.completeSession(sessionId, {
      summary: "All tasks completed successfully",
      artifacts: ["s3://artifacts/build.zip"],
    });
    assert.equal(sessionStateName(done.state), "completed");
    assert.equal(done.summary, "All tasks completed successfully");
    assert.deepEqual(done.artifacts, ["s3://artifacts/build.zip"]);
    assert.ok(done.endedAt);
    await rejectsWithCode(bus.terminateSession(sessionId, { reason: "timeout" }), Code.FailedPrecondition);
    await rejectsWithCode(bus.addParticipant(sessionId, "opencode://late"), Code.FailedPrecondition);
    await rejectsWithCode(bus.completeSession(sessionId), Code.FailedPrecondition);
  });

  test("terminates with a reason; every participant becomes session_terminated", async () => {
    const { sessionId } = await newSession();
    await rejectsWithCode(bus.terminateSession(sessionId, { reason: "" }), Code.InvalidArgument, /reason/);
    const ended = await bus.terminateSession(sessionId, { reason: "timeout", details: "Frontend agent offline" });
    assert.equal(ended.state, SessionState.TERMINATED);
    assert.equal(ended.terminationReason, "timeout");
    assert.equal(ended.terminationDetails, "Frontend agent offline");
    assert.ok(ended.participants.every((p) => participantStatusName(p.status) === "session_terminated"));
  });

  test("lists sessions by state and participant, and pages through them", async () => {
    const a = await bus.createSession({ sessionId: "sess_list_a", orchestrator: "lister://one" });
    await bus.createSession({ sessionId: "sess_list_b", orchestrator: "lister://one" });
    await bus.createSession({ sessionId: "sess_list_c", orchestrator: "lister://two" });
    await bus.completeSession(a.sessionId);

    const mine = await bus.listSessions({ participant: "lister://one" });
    assert.deepEqual(
      mine.sessions.map((s) => s.sessionId),
      ["sess_list_a", "sess_list_b"],
    );
    const completed = await bus.listSessions({ participant: "lister://one", states: ["completed"] });
    assert.deepEqual(
      completed.sessions.map((s) => s.sessionId),
      ["sess_list_a"],
    );
    const active = await bus.listSessions({ states: [SessionState.ACTIVE, "terminated"] });
    assert.ok(active.sessions.every((s) => s.state === SessionState.ACTIVE || s.state === SessionState.TERMINATED));
    assert.ok(!active.sessions.some((s) => s.sessionId === "sess_list_a"));

    const page = await bus.listSessions({ pageSize: 2 });
    assert.equal(page.sessions.length, 2);
    assert.notEqual(page.nextPageToken, "");
    const ids: string[] = [];
    for await (const s of bus.allSessions({ pageSize: 2 })) ids.push(s.sessionId);
    const everything = await bus.listSessions({ pageSize: 500 });
    assert.deepEqual(
      ids,
      everything.sessions.map((s) => s.sessionId),
    );
    await rejectsWithCode(bus.listSessions({ states: ["finished" as never] }), Code.InvalidArgument, /states/);
  });

  test("task requests inside a session become tasks that follow the replies", async () => {
    await bus.registerAgent(ORCH, { update: true });
    await bus.registerAgent("opencode://backend", { update: true });
    const { sessionId } = await newSession();
    const { messageId } = await bus.send({
      sender: ORCH,
      sessionId,
      recipient: "opencode://backend",
      messageType: "task_request",
      payload: { task_type: "implementation" },
    });
    for await (const delivery of bus.inbox("opencode://backend")) {
      if (delivery.messageId !== messageId) continue;
      assert.equal(delivery.sessionId, sessionId);
      await delivery.reply({ messageType: "task_response", payload: { done: true } });
      await delivery.ack();
      break;
    }
    const session = await bus.getSession(sessionId);
    assert.equal(session.tasks.length, 1);
    assert.equal(session.tasks[0]?.taskId, messageId);
    assert.equal(session.tasks[0]?.assignee, "opencode://backend");
    assert.equal(taskStateName(session.tasks[0]!.state), "completed");

    // Only active participants may message inside a session.
    await bus.registerAgent("outsider://agent", { update: true });
    await rejectsWithCode(
      bus.send({ sender: "outsider://agent", sessionId, recipient: ORCH, messageType: "status_update" }),
      Code.FailedPrecondition,
    );
  });
});
