import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  AgentBusClient,
  AggregationStrategy,
  Code,
  ConflictKind,
  ParticipantStatus,
  SessionState,
  aggregationStrategyName,
  conflictKindName,
  connect,
  jsonValue,
  participantStatusName,
  sessionStateName,
  taskStateName,
  type JsonValue,
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

  // ---------------------------------------------------------------- aggregation and summaries

  /** A session whose orchestrator and `agents` are registered, so they can exchange tasks. */
  const aggSession = async (agents: string[], steps = ["design", "implementation"]) => {
    for (const agentId of [ORCH, ...agents]) await bus.registerAgent(agentId, { update: true });
    return bus.createSession({ sessionId: `sess_agg_${++n}`, orchestrator: ORCH, participants: agents, steps });
  };

  /** The orchestrator delegates `taskId` to `agentId`, which answers with `payload`. */
  const answer = async (
    sessionId: string,
    agentId: string,
    taskId: string,
    payload: JsonValue,
    messageType: "task_response" | "error" = "task_response",
  ) => {
    await bus.send({ sender: ORCH, sessionId, recipient: agentId, messageType: "task_request", taskId, payload: { q: taskId } });
    for await (const delivery of bus.inbox(agentId)) {
      if (delivery.message.taskId !== taskId) continue;
      await delivery.reply({ messageType, payload });
      await delivery.ack();
      return;
    }
  };

  test("task responses record result, confidence, approach, success, duration and step", async () => {
    const a = `opencode://rec-${n}`;
    const { sessionId } = await aggSession([a]);
    await answer(sessionId, a, "t1", { result: { db: "postgres" }, confidence: 0.8, approach: "sql" });
    const [task] = (await bus.getSession(sessionId)).tasks;
    assert.ok(task);
    assert.equal(task.taskId, "t1");
    assert.equal(task.step, "design");
    assert.deepEqual(jsonValue(task.result), { db: "postgres" });
    assert.equal(task.confidence, 0.8);
    assert.equal(task.approach, "sql");
    assert.equal(task.success, true);
    assert.ok(task.duration);
  });

  test("consensus takes the majority result and reports RESULT_DISAGREEMENT", async () => {
    const [a, b, c] = [`opencode://maj-a-${n}`, `codex://maj-b-${n}`, `opencode://maj-c-${n}`];
    const { sessionId } = await aggSession([a, b, c]);
    await answer(sessionId, a, "t1", { result: "postgres", confidence: 0.9, approach: "sql" });
    await answer(sessionId, b, "t2", { result: "mongo", confidence: 0.6, approach: "sql" });
    await answer(sessionId, c, "t3", { result: "postgres", confidence: 0.5, approach: "sql" });

    const { aggregation, session } = await bus.aggregateResults(sessionId, { step: "design" });
    assert.equal(aggregation.strategy, AggregationStrategy.CONSENSUS);
    assert.equal(aggregationStrategyName(aggregation.strategy), "consensus");
    assert.equal(aggregation.step, "design");
    assert.equal(jsonValue(aggregation.result), "postgres");
    assert.deepEqual(aggregation.contributingTaskIds, ["t1", "t3"]);
    assert.deepEqual(
      aggregation.candidates.map((x) => [x.taskId, x.agentId, jsonValue(x.result)]),
      [
        ["t1", a, "postgres"],
        ["t2", b, "mongo"],
        ["t3", c, "postgres"],
      ],
    );
    assert.deepEqual(new Set(aggregation.conflicts.map((x) => conflictKindName(x.kind))), new Set(["result_disagreement"]));
    assert.ok(aggregation.conflicts.some((x) => x.taskIds.join() === "t1,t2"));
    // Two of three agree, less 0.1 for each of the two conflicts.
    assert.ok(Math.abs(aggregation.confidence - (2 / 3 - 0.2)) < 1e-6, String(aggregation.confidence)); // six decimals
    assert.deepEqual(aggregation.missingTaskIds, []);
    assert.deepEqual(session.aggregations.at(-1), aggregation);
    assert.deepEqual((await bus.getSession(sessionId)).aggregations.at(-1), aggregation);
  });

  test("consensus of two different results takes the first; specialist priority prefers one agent", async () => {
    const [a, b] = [`opencode://two-a-${n}`, `codex://two-b-${n}`];
    const { sessionId } = await aggSession([a, b]);
    await answer(sessionId, a, "t1", { result: "postgres", confidence: 0.9, approach: "sql" });
    await answer(sessionId, b, "t2", { result: "mongo", confidence: 0.6, approach: "nosql" });
    const { aggregation } = await bus.aggregateResults(sessionId, { taskIds: ["t1", "t2"], strategy: "consensus" });
    assert.equal(jsonValue(aggregation.result), "postgres");
    const byKind = new Map(aggregation.conflicts.map((x) => [x.kind, x.taskIds]));
    assert.deepEqual(byKind.get(ConflictKind.RESULT_DISAGREEMENT), ["t1", "t2"]);
    assert.deepEqual(byKind.get(ConflictKind.APPROACH_DIFFERENCE), ["t1", "t2"]);

    const special = await bus.aggregateResults(sessionId, { strategy: "specialist_priority", specialist: b });
    assert.equal(jsonValue(special.aggregation.result), "mongo");
    assert.equal(special.aggregation.specialist, b);
    assert.equal(special.aggregation.confidence, 0.6);
  });

  test("MANUAL lists candidates and conflicts; resolveAggregation picks one", async () => {
    const [a, b] = [`opencode://man-a-${n}`, `codex://man-b-${n}`];
    const { sessionId } = await aggSession([a, b]);
    await answer(sessionId, a, "t1", { result: "postgres", confidence: 0.9 });
    await answer(sessionId, b, "t2", { result: "mongo", confidence: 0.6 });
    const { aggregation } = await bus.aggregateResults(sessionId, { step: "design", strategy: AggregationStrategy.MANUAL });
    assert.equal(aggregation.strategy, AggregationStrategy.MANUAL);
    assert.equal(aggregation.result, undefined);
    assert.equal(aggregation.resolution, undefined);
    assert.deepEqual(
      aggregation.candidates.map((x) => x.taskId),
      ["t1", "t2"],
    );
    assert.ok(aggregation.conflicts.some((x) => x.kind === ConflictKind.RESULT_DISAGREEMENT));

    const id = aggregation.aggregationId;
    await rejectsWithCode(bus.resolveAggregation(sessionId, id, { chosenTaskId: "t9" }), Code.InvalidArgument, /candidate/);
    await rejectsWithCode(bus.resolveAggregation(sessionId, "agg_999", { chosenTaskId: "t1" }), Code.NotFound);
    const { version } = await bus.getSession(sessionId);
    await rejectsWithCode(
      bus.resolveAggregation(sessionId, id, { chosenTaskId: "t2" }, { expectedVersion: version + 7n }),
      Code.Aborted,
    );
    const resolved = await bus.resolveAggregation(
      sessionId,
      id,
      { chosenTaskId: "t2", note: "mongo fits the schema" },
      { expectedVersion: version },
    );
    assert.equal(resolved.aggregation.aggregationId, id);
    assert.equal(jsonValue(resolved.aggregation.result), "mongo");
    assert.equal(resolved.aggregation.resolution?.chosenTaskId, "t2");
    assert.equal(resolved.aggregation.resolution?.note, "mongo fits the schema");
    assert.equal(resolved.aggregation.resolution?.resolvedBy, ORCH);
    assert.ok(resolved.aggregation.resolution?.resolvedAt);
    assert.equal(resolved.session.version, version + 1n);
  });

  test("CONFIDENCE_WEIGHTED averages numeric results by confidence", async () => {
    const [a, b, c] = [`opencode://cw-a-${n}`, `codex://cw-b-${n}`, `opencode://cw-c-${n}`];
    const { sessionId } = await aggSession([a, b, c]);
    await answer(sessionId, a, "est-a", { result: 10, confidence: 0.9, approach: "story points" });
    await answer(sessionId, b, "est-b", { result: 20, confidence: 0.1, approach: "story points" });
    const { aggregation } = await bus.aggregateResults(sessionId, {
      taskIds: ["est-a", "est-b"],
      strategy: "confidence_weighted",
    });
    assert.equal(aggregation.strategy, AggregationStrategy.CONFIDENCE_WEIGHTED);
    const mean = jsonValue(aggregation.result);
    assert.equal(typeof mean, "number");
    assert.ok(Math.abs((mean as number) - (10 * 0.9 + 20 * 0.1) / (0.9 + 0.1)) < 1e-9, String(mean));
    assert.ok(Math.abs(aggregation.confidence - 0.5) < 1e-9);

    await answer(sessionId, c, "words", { result: "about ten" });
    await rejectsWithCode(
      bus.aggregateResults(sessionId, { taskIds: ["est-a", "words"], strategy: "confidence_weighted" }),
      Code.InvalidArgument,
      /numeric/,
    );
  });

  test("aggregation errors: running tasks, unknown tasks, versions, strategy names, callers", async () => {
    const [a, b] = [`opencode://err-a-${n}`, `codex://err-b-${n}`];
    const { sessionId } = await aggSession([a, b]);
    await answer(sessionId, a, "t1", { result: 1 });
    await bus.send({ sender: ORCH, sessionId, recipient: b, messageType: "task_request", taskId: "t2" }); // never answered

    const { aggregation } = await bus.aggregateResults(sessionId, { taskIds: ["t1", "t2"] });
    assert.deepEqual(aggregation.missingTaskIds, ["t2"]);
    assert.equal(jsonValue(aggregation.result), 1);
    await rejectsWithCode(
      bus.aggregateResults(sessionId, { taskIds: ["t1", "t2"], requireComplete: true }),
      Code.FailedPrecondition,
      /t2/,
    );
    await rejectsWithCode(bus.aggregateResults(sessionId, { taskIds: ["no-such-task"] }), Code.InvalidArgument);
    await rejectsWithCode(bus.aggregateResults("sess_missing"), Code.NotFound);
    await rejectsWithCode(bus.aggregateResults(sessionId, {}, { expectedVersion: 1 }), Code.Aborted);
    await rejectsWithCode(bus.aggregateResults(sessionId, { strategy: "majority" as never }), Code.InvalidArgument, /strategy/);

    // Only the orchestrator may aggregate or resolve.
    const { token } = await bus.issueAgentToken(a);
    const asA = connect(server.address, { token });
    try {
      await rejectsWithCode(asA.aggregateResults(sessionId), Code.PermissionDenied);
      await rejectsWithCode(
        asA.resolveAggregation(sessionId, aggregation.aggregationId, { chosenTaskId: "t1" }),
        Code.PermissionDenied,
      );
    } finally {
      asA.close();
    }
  });

  test("getSessionSummary: FAILED_PRECONDITION while active, the summary and its Markdown once completed", async () => {
    const [a, b] = [`opencode://sum-a-${n}`, `codex://sum-b-${n}`];
    const { sessionId } = await aggSession([a, b]);
    await answer(sessionId, a, "t1", { result: "postgres", confidence: 0.9, approach: "sql" });
    await answer(sessionId, b, "t2", { result: "mongo", confidence: 0.6, approach: "nosql" });
    await bus.aggregateResults(sessionId, { step: "design" });
    await rejectsWithCode(bus.getSessionSummary(sessionId), Code.FailedPrecondition, /active/);
    assert.equal((await bus.getSession(sessionId)).executiveSummary, undefined);
    await rejectsWithCode(bus.getSessionSummary("sess_missing"), Code.NotFound);

    await bus.advanceWorkflow(sessionId);
    const done = await bus.completeSession(sessionId, { summary: "Chose a database", artifacts: ["docs/adr-001.md"] });
    assert.ok(done.executiveSummary);

    const { summary, markdown } = await bus.getSessionSummary(sessionId);
    assert.equal(summary.outcome, SessionState.COMPLETED);
    assert.equal(summary.text, "Chose a database");
    assert.deepEqual(
      summary.steps.map((s) => [s.name, s.state]),
      [
        ["design", "completed"],
        ["implementation", "current"],
      ],
    );
    assert.deepEqual(
      summary.steps[0]?.tasks.map((t) => t.taskId),
      ["t1", "t2"],
    );
    assert.equal(jsonValue(summary.steps[0]?.result), "postgres");
    assert.deepEqual(
      new Set(summary.unresolvedConflicts.map((x) => conflictKindName(x.kind))),
      new Set(["result_disagreement", "approach_difference"]),
    );
    assert.deepEqual(summary.artifacts, ["docs/adr-001.md"]);
    assert.equal(summary.totals?.tasksCompleted, 2);
    assert.deepEqual(new Set(summary.totals?.contributions.map((c) => c.agentId)), new Set([a, b]));
    assert.equal(done.executiveSummary.outcome, summary.outcome);

    assert.ok(markdown.startsWith(`# Session ${sessionId}: completed`), markdown);
    for (const expected of ["Chose a database", "## design (completed)", "## implementation (current)", "`t1`", "docs/adr-001.md", a, b]) {
      assert.ok(markdown.includes(expected), `missing ${expected} in:\n${markdown}`);
    }
  });

  test("a terminated session has a summary too", async () => {
    const { sessionId } = await aggSession([`opencode://term-${n}`]);
    await bus.terminateSession(sessionId, { reason: "timeout", details: "agents offline" });
    const { summary, markdown } = await bus.getSessionSummary(sessionId);
    assert.equal(summary.outcome, SessionState.TERMINATED);
    assert.match(summary.text, /timeout/);
    assert.ok(markdown.startsWith(`# Session ${sessionId}: terminated`), markdown);
  });
});
