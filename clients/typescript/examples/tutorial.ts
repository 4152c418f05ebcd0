// The session-management tutorial, end to end, against a running bus:
//
//   AGENT_BUS_API_KEY=dev-key npx tsx examples/tutorial.ts 127.0.0.1:8080
//
// An orchestrator creates a session with two implementers and a reviewer and
// three workflow steps, adds a security reviewer, moves the workflow on to
// the implementation step and delegates a task to each implementer inside the
// session; each acknowledges its task and answers with a task response whose
// payload is { result, confidence, approach } (the backend sends a status
// update first). The orchestrator aggregates the step's results by consensus,
// records the branch and latest commit in the shared context, completes the
// session and prints its executive summary (Markdown). A watcher prints every
// session event it saw.

import {
  aggregationStrategyName,
  conflictKindName,
  jsonPayload,
  jsonValue,
  messageTypeName,
  participantStatusName,
  sessionEventTypeName,
  sessionStateName,
  taskStateName,
  type JsonObject,
  type SessionEvent,
} from "../src/index.js";
import { busFromEnv, run, sessionName } from "./common.js";

const ORCHESTRATOR = "claude-code://orchestrator";
const BACKEND = "opencode://backend";
const FRONTEND = "codex://frontend";

// What each implementer answers: the task's result, how sure it is, and how it
// got there. The bus records these on the session's tasks and aggregates them.
const ANSWERS: Record<string, JsonObject> = {
  [BACKEND]: { result: { transport: "websocket", auditLog: true }, confidence: 0.9, approach: "server push" },
  [FRONTEND]: { result: { transport: "websocket", auditLog: true }, confidence: 0.7, approach: "client subscription" },
};

run(async () => {
  const bus = busFromEnv();
  try {
    // 1. A session: orchestrator, participants, workflow steps, shared context.
    const created = await bus.createSession({
      sessionId: sessionName("notifications"),
      orchestrator: ORCHESTRATOR,
      participants: [
        { agentId: BACKEND, role: "implementer" },
        { agentId: FRONTEND, role: "implementer" },
        { agentId: "claude-code://qa", role: "reviewer" },
      ],
      steps: [
        { name: "design", requiredAgents: [ORCHESTRATOR] },
        { name: "implementation", requiredAgents: [BACKEND, FRONTEND] },
        { name: "review", requiredAgents: ["claude-code://qa"] },
      ],
      sharedContext: {
        project: "feature/notifications",
        requirements: ["real-time updates", "audit logs"],
      },
    });
    const sessionId = created.sessionId;
    console.log("New session:", sessionId);

    // 2. Participants join active; more can be added later.
    const withSecurity = await bus.addParticipant(sessionId, {
      agentId: "opencode://security",
      framework: "opencode",
      role: "reviewer",
    });
    console.log(
      "Participants:",
      withSecurity.participants.map((p) => `${p.agentId} (${p.role}, ${participantStatusName(p.status)})`).join(", "),
    );

    // 3. Watch the session's events in the background. Replaying from sequence 0
    // (filtered to this session) includes the events that happened before the
    // watch started, and the watch resumes by itself if the connection drops.
    const events: SessionEvent[] = [];
    const watching = (async () => {
      for await (const event of bus.watchSessions({ sessionIds: [sessionId], afterSequence: 0 })) {
        events.push(event);
        if (sessionEventTypeName(event.type) === "session_completed") break;
      }
    })();

    // 4. Agents must be registered before messages reach them.
    await bus.registerAgent(ORCHESTRATOR, { update: true });
    await bus.registerAgent(
      {
        agentId: BACKEND,
        framework: "opencode",
        capabilities: { languages: ["typescript", "rust"], optimalTasks: ["implementation"] },
        metadata: { version: "1.0.0", author: "tutorial", tags: ["backend"] },
      },
      { update: true },
    );
    await bus.registerAgent(
      { agentId: FRONTEND, framework: "codex", capabilities: { languages: ["typescript"], optimalTasks: ["implementation"] } },
      { update: true },
    );
    console.log("Registered agents:", ORCHESTRATOR, BACKEND, FRONTEND);

    // 5. Design is done: move on to implementation. A task belongs to the step
    // that is current when it is delegated.
    const workflow = await bus.updateWorkflow(sessionId, {
      currentStep: "implementation",
      completedSteps: ["design"],
      pendingSteps: ["review"],
    });
    console.log(
      `Workflow: current=${workflow.workflow?.currentStep} completed=[${workflow.workflow?.completedSteps.join(", ")}] pending=[${workflow.workflow?.pendingSteps.join(", ")}]`,
    );

    // 6. Each implementer works through its inbox: ack, (report progress,) answer
    // with its result, confidence and approach.
    const stopWorkers = new AbortController();
    const worker = async (agentId: string, name: string) => {
      for await (const task of bus.inbox(agentId, { autoAck: false, signal: stopWorkers.signal })) {
        if (task.messageType !== "task_request" || task.sessionId !== sessionId) {
          await task.ack(); // something left over from an earlier run
          continue;
        }
        console.log(`${name} received ${task.messageType} ${task.messageId} (session ${task.sessionId}):`, JSON.stringify(task.payload));
        await task.ack();
        console.log(`${name} acked`, task.messageId);
        if (agentId === BACKEND) {
          await task.reply({ messageType: "status_update", payload: { status: "working", progress: 0.5 } });
        }
        await task.reply({ messageType: "task_response", payload: ANSWERS[agentId]! });
        break; // one task each is all this tutorial hands out
      }
    };

    // 7. The orchestrator delegates the work inside the session (sender.session_id),
    // one implementer after the other.
    const requests: string[] = [];
    for (const [agentId, name, component] of [
      [BACKEND, "Backend", "notification-service"],
      [FRONTEND, "Frontend", "notification-ui"],
    ] as const) {
      const working = worker(agentId, name);
      const request = await bus.send({
        messageId: `task_impl_${name.toLowerCase()}_${sessionId}`,
        sender: { agentId: ORCHESTRATOR, framework: "claude-code", sessionId },
        recipient: { agentId, framework: agentId.split("://")[0]! },
        messageType: "task_request",
        priority: "high",
        payload: { task_type: "implementation", context: { component } },
        routing: { timeout: "300s", retryPolicy: { maxRetries: 1, backoff: "linear" }, deliveryMode: "async" },
      });
      requests.push(request.messageId);
      console.log(`Orchestrator sent task_request ${request.messageId} to ${agentId}`);
      await working;
    }
    stopWorkers.abort();

    // 8. The orchestrator reads the answers to its requests from its own inbox.
    let answered = 0;
    for await (const answer of bus.inbox(ORCHESTRATOR)) {
      if (!requests.includes(answer.message.inReplyTo)) continue;
      console.log(`Orchestrator received ${messageTypeName(answer.message.messageType)} from ${answer.sender}:`, JSON.stringify(jsonPayload(answer.message)));
      if (answer.messageType === "task_response" && ++answered === requests.length) {
        await answer.ack(); // a break skips the automatic ack
        break;
      }
    }

    // 9. Combine the implementation step's answers: consensus picks the most
    // frequent result and lists the conflicts among the answers.
    const { aggregation, session: aggregated } = await bus.aggregateResults(sessionId, {
      step: "implementation",
      strategy: "consensus",
    });
    for (const t of aggregated.tasks) {
      console.log(
        `Task ${t.taskId}: assignee=${t.assignee} state=${taskStateName(t.state)} step=${t.step} confidence=${t.confidence} approach="${t.approach}"`,
      );
    }
    console.log(
      `Aggregated ${aggregation.aggregationId} (${aggregationStrategyName(aggregation.strategy)}) of step ${aggregation.step}: ${JSON.stringify(jsonValue(aggregation.result))} confidence=${aggregation.confidence.toFixed(2)} from [${aggregation.contributingTaskIds.join(", ")}]`,
    );
    for (const conflict of aggregation.conflicts) {
      console.log(`  conflict ${conflictKindName(conflict.kind)}: ${conflict.detail}`);
    }

    // 10. Record the work in the shared context.
    const context = await bus.mergeSharedContext(sessionId, {
      branch: "feature/notifications",
      latestCommit: "abc123",
    });
    console.log("Shared context:", JSON.stringify(context.sharedContext));

    // 11. Done: summary and artifacts. The bus then writes the executive summary.
    const done = await bus.completeSession(sessionId, {
      summary: "All tasks completed successfully",
      artifacts: ["s3://artifacts/build.zip"],
    });
    console.log(`Session done: ${sessionId} state=${sessionStateName(done.state)} summary="${done.summary}" artifacts=${JSON.stringify(done.artifacts)}`);
    const { markdown } = await bus.getSessionSummary(sessionId);
    console.log("Executive summary:");
    console.log(markdown);

    await watching; // ends with the session_completed event
    console.log("Events seen:");
    for (const e of events) {
      const who = e.agentId ? ` ${e.agentId}` : "";
      const what = e.taskId ? ` task=${e.taskId}` : "";
      console.log(`  #${e.sequence} ${sessionEventTypeName(e.type)}${who}${what}`);
    }
  } finally {
    bus.close();
  }
});
