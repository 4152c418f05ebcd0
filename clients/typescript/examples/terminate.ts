// Handling the exceptional case: terminate a session with a reason.
//
//   AGENT_BUS_API_KEY=dev-key npx tsx examples/terminate.ts 127.0.0.1:8080
//
// Every participant becomes session_terminated, and the ended session refuses
// further changes with FAILED_PRECONDITION (a ConnectError carrying the code).

import { Code, ConnectError, participantStatusName, sessionStateName } from "../src/index.js";
import { busFromEnv, run, sessionName } from "./common.js";

run(async () => {
  const bus = busFromEnv();
  try {
    const session = await bus.createSession({
      sessionId: sessionName("notifications"),
      orchestrator: "claude-code://orchestrator",
      participants: [
        { agentId: "opencode://backend", role: "implementer" },
        { agentId: "codex://frontend", role: "implementer" },
      ],
      steps: ["design", "implementation", "review"],
    });
    console.log("New session:", session.sessionId);

    const ended = await bus.terminateSession(session.sessionId, {
      reason: "timeout",
      details: "Frontend agent offline",
    });
    console.log(
      `Session terminated: ${ended.sessionId} state=${sessionStateName(ended.state)} reason=${ended.terminationReason} details="${ended.terminationDetails}"`,
    );
    for (const p of ended.participants) console.log(`  ${p.agentId}: ${participantStatusName(p.status)}`);

    try {
      await bus.addParticipant(session.sessionId, { agentId: "claude-code://qa", role: "reviewer" });
      throw new Error("a terminated session accepted a new participant");
    } catch (error) {
      if (!(error instanceof ConnectError) || error.code !== Code.FailedPrecondition) throw error;
      console.log(`Further changes are refused: ${Code[error.code]}: ${error.rawMessage}`);
    }
  } finally {
    bus.close();
  }
});
