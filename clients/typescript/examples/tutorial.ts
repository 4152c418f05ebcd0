// The session-management tutorial, end to end, against a running bus:
//
//   AGENT_BUS_API_KEY=dev-key npx tsx examples/tutorial.ts 127.0.0.1:8080
//
// An orchestrator creates a session with two implementers and a reviewer and
// three workflow steps, adds a security reviewer, and delegates a task to the
// backend agent inside the session; the backend acknowledges it and answers
// with a status update and a task response; the orchestrator moves the
// workflow on, records the branch and latest commit in the shared context,
// and completes the session. A watcher prints every session event it saw.

import {
  jsonPayload,
  messageTypeName,
  participantStatusName,
  sessionEventTypeName,
  sessionStateName,
  taskStateName,
  type SessionEvent,
} from "../src/index.js";
import { busFromEnv, run, sessionName } from "./common.js";

const ORCHESTRATOR = "claude-code://orchestrator";
const BACKEND = "opencode://backend";

run(async () => {
  const bus = busFromEnv();
  try {
    // 1. A session: orchestrator, participants, workflow steps, shared context.
    const created = await bus.createSession({
      sessionId: sessionName("notifications"),
      orchestrator: ORCHESTRATOR,
      participants: [
        { agentId: BACKEND, role: "implementer" },
        { agentId: "codex://frontend", role: "implementer" },
        { agentId: "claude-code://qa", role: "reviewer" },
      ],
      steps: [
        { name: "design", requiredAgents: [ORCHESTRATOR] },
        { name: "implementation", requiredAgents: [BACKEND, "codex://frontend"] },
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
    console.log("Registered agents:", ORCHESTRATOR, BACKEND);

    // 5. The backend agent works through its inbox: ack, report progress, answer.
    const stopBackend = new AbortController();
    const backend = (async () => {
      for await (const task of bus.inbox(BACKEND, { autoAck: false, signal: stopBackend.signal })) {
        if (task.messageType !== "task_request") {
          await task.ack();
          continue;
        }
        console.log(`Backend received ${task.messageType} ${task.messageId} (session ${task.sessionId}):`, JSON.stringify(task.payload));
        await task.ack();
        console.log("Backend acked", task.messageId);
        await task.reply({ messageType: "status_update", payload: { status: "working", progress: 0.5 } });
        await task.reply({
          messageType: "task_response",
          payload: { status: "completed", files: ["src/notifications/service.ts"], commit: "abc123" },
        });
        break; // one task is all this tutorial hands out
      }
    })();

    // 6. The orchestrator delegates the task inside the session (sender.session_id).
    const request = await bus.send({
      messageId: `task_impl_backend_${sessionId}`,
      sender: { agentId: ORCHESTRATOR, framework: "claude-code", sessionId },
      recipient: { agentId: BACKEND, framework: "opencode" },
      messageType: "task_request",
      priority: "high",
      payload: { task_type: "implementation", context: { component: "notification-service" } },
      routing: { timeout: "300s", retryPolicy: { maxRetries: 1, backoff: "linear" }, deliveryMode: "async" },
    });
    console.log(`Orchestrator sent task_request ${request.messageId} to ${BACKEND}`);

    // 7. The orchestrator reads the answers to its request from its own inbox.
    for await (const answer of bus.inbox(ORCHESTRATOR)) {
      if (answer.message.inReplyTo !== request.messageId) continue;
      console.log(`Orchestrator received ${messageTypeName(answer.message.messageType)} from ${answer.sender}:`, JSON.stringify(jsonPayload(answer.message)));
      if (answer.messageType === "task_response") {
        await answer.ack(); // a break skips the automatic ack
        break;
      }
    }
    await backend;
    stopBackend.abort();

    // 8. Move the workflow on and record the work in the shared context.
    const workflow = await bus.updateWorkflow(sessionId, {
      currentStep: "implementation",
      completedSteps: ["design"],
      pendingSteps: ["review"],
    });
    console.log(
      `Workflow: current=${workflow.workflow?.currentStep} completed=[${workflow.workflow?.completedSteps.join(", ")}] pending=[${workflow.workflow?.pendingSteps.join(", ")}]`,
    );
    const context = await bus.mergeSharedContext(sessionId, {
      branch: "feature/notifications",
      latestCommit: "abc123",
    });
    console.log("Shared context:", JSON.stringify(context.sharedContext));
    const task = context.tasks.find((t) => t.requestId === request.messageId);
    console.log(`Task ${task?.taskId}: assignee=${task?.assignee} state=${task ? taskStateName(task.state) : "missing"}`);

    // 9. Done: summary and artifacts.
    const done = await bus.completeSession(sessionId, {
      summary: "All tasks completed successfully",
      artifacts: ["s3://artifacts/build.zip"],
    });
    console.log(`Session done: ${sessionId} state=${sessionStateName(done.state)} summary="${done.summary}" artifacts=${JSON.stringify(done.artifacts)}`);

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
