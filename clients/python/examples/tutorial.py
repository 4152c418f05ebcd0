#!/usr/bin/env python3
"""The session-management tutorial, end to end, against a running agentbus.

    pip install ./clients/python        # once
    python examples/tutorial.py [ADDRESS]

ADDRESS defaults to $AGENT_BUS_URL, else 127.0.0.1:8080; the API key comes from
$AGENT_BUS_API_KEY (if the server requires one).  Safe to run repeatedly: each
run uses a fresh session id (`sess_notifications_<timestamp>`).

What it does, as in the tutorial:
 1. creates a session: orchestrator claude-code://orchestrator, implementers
    opencode://backend and codex://frontend, reviewer claude-code://qa, and the
    steps design -> implementation -> review, with a shared context;
 2. adds a security reviewer (opencode://security);
 3. watches the session's events in a background thread;
 4. registers the orchestrator and the backend agent;
 5. the orchestrator sends the backend a high-priority task_request in the session;
 6. the backend receives it, acks it, answers with a status_update and a
    task_response (in_reply_to the request); the orchestrator reads both;
 7. updates the workflow and the shared context (branch, latest commit);
 8. completes the session with a summary and artifacts;
 9. prints the events the watcher saw.
Exits 0 on success, 1 when a call fails (the error is printed).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import agentbus
from agentbus import AgentBusClient, payload_of, to_python
from agentbus.v1 import session_pb2

ORCHESTRATOR = "claude-code://orchestrator"
BACKEND = "opencode://backend"


def show(value: object) -> str:
    """JSON with sorted keys (protobuf Structs do not keep key order)."""
    return json.dumps(value, sort_keys=True)


def main(argv: list[str]) -> int:
    address = argv[1] if len(argv) > 1 else os.environ.get("AGENT_BUS_URL", "127.0.0.1:8080")
    api_key = os.environ.get("AGENT_BUS_API_KEY")
    with AgentBusClient(address, api_key=api_key) as bus:
        try:
            bus.wait_ready(timeout=10)
            return run(bus)
        except agentbus.AgentBusError as err:
            print(f"error: {err.code.name}: {err.message}", file=sys.stderr)
            return 1


def run(bus: AgentBusClient) -> int:
    session_id = f"sess_notifications_{time.strftime('%Y%m%d%H%M%S')}_{os.getpid()}"

    # 1. Create the session.
    session = bus.create_session(
        ORCHESTRATOR,
        participants=[
            {"agent_id": BACKEND, "role": "implementer"},
            {"agent_id": "codex://frontend", "role": "implementer"},
            {"agent_id": "claude-code://qa", "role": "reviewer"},
        ],
        steps=[
            {"name": "design", "required_agents": [ORCHESTRATOR]},
            {"name": "implementation", "required_agents": [BACKEND, "codex://frontend"]},
            {"name": "review", "required_agents": ["claude-code://qa"]},
        ],
        shared_context={"project": "feature/notifications", "requirements": ["real-time updates", "audit logs"]},
        session_id=session_id,
    )
    print("New session:", session.session_id)
    for p in session.participants:
        print(f"  participant {p.agent_id} role={p.role} status={agentbus.state_name(p.status, 'participant')}")
    print("  current step:", session.workflow.current_step, "pending:", list(session.workflow.pending_steps))

    # 2. Add a security reviewer.
    session = bus.add_participant(session_id, "opencode://security", framework="opencode", role="reviewer")
    print("Participant added: opencode://security (reviewer)")

    # 3. Watch the session's events in the background. after_sequence=0
    #    replays the session's history first, so nothing is missed.
    watch = bus.watch_sessions(session_ids=[session_id], after_sequence=0)
    events: list = []
    completed = threading.Event()

    def watcher() -> None:
        for event in watch:
            events.append(event)
            if event.type in (
                session_pb2.SESSION_EVENT_TYPE_SESSION_COMPLETED,
                session_pb2.SESSION_EVENT_TYPE_SESSION_TERMINATED,
            ):
                completed.set()

    watcher_thread = threading.Thread(target=watcher, daemon=True)
    watcher_thread.start()

    # 4. Register the agents (update=True: re-running the tutorial is fine).
    for agent_id, caps in (
        (ORCHESTRATOR, {"optimal_tasks": ["planning", "review"]}),
        (BACKEND, {"languages": ["typescript", "rust"], "optimal_tasks": ["implementation"]}),
    ):
        bus.register_agent(agent_id, capabilities=caps, update=True)
        print("Registered agent:", agent_id)

    # 5. The orchestrator delegates the backend work inside the session.
    task_id = f"task_impl_backend.{session_id}"
    sent = bus.send(
        ORCHESTRATOR,
        BACKEND,
        "task_request",
        {"task_type": "implementation", "context": {"component": "notification-service"}},
        session_id=session_id,
        message_id=task_id,
        priority="high",
        routing_timeout="300s",
        max_retries=1,
        backoff="linear",
        delivery_mode="async",
    )
    print(f"Task sent: {sent.message_id} (state {agentbus.state_name(sent.state, 'message')})")

    # 6. The backend agent receives the task (acked once handled), reports
    #    progress and answers.
    with bus.inbox(BACKEND, idle_timeout=10) as inbox:
        for delivery in inbox:
            message = delivery.message
            if message.message_id != task_id:
                continue  # something left over from an earlier run: acked and skipped
            print(
                f"Backend received {agentbus.message_type_name(message.message_type)} {message.message_id} "
                f"from {message.sender.agent_id} (session {message.sender.session_id}, attempt {delivery.attempt}):",
                show(payload_of(delivery)),
            )
            bus.reply(delivery, {"status": "in_progress", "progress": 0.5}, "status_update")
            bus.reply(delivery, {"status": "done", "files_changed": ["src/notifications.ts"]}, "task_response")
            break
        else:
            print("error: the backend never received the task", file=sys.stderr)
            return 1
    print("Task state:", agentbus.state_name(bus.get_message(task_id).state, "message"))

    # The orchestrator reads both replies from its own inbox.
    replies = 0
    with bus.inbox(ORCHESTRATOR, idle_timeout=10) as inbox:
        for delivery in inbox:
            message = delivery.message
            if message.in_reply_to != task_id:
                continue
            replies += 1
            print(
                f"Orchestrator received {agentbus.message_type_name(message.message_type)} "
                f"in reply to {message.in_reply_to}:",
                show(payload_of(delivery)),
            )
            if replies == 2:
                break
    if replies != 2:
        print(f"error: the orchestrator got {replies} of 2 replies", file=sys.stderr)
        return 1
    task = bus.get_session(session_id).tasks[0]
    print(f"Session task {task.task_id}: {agentbus.state_name(task.state, 'task')}, assignee {task.assignee}")

    # 7. Move the workflow on and record the branch in the shared context.
    session = bus.update_workflow(
        session_id, current_step="implementation", completed_steps=["design"], pending_steps=["review"]
    )
    print(
        "Workflow: current", session.workflow.current_step,
        "completed", list(session.workflow.completed_steps),
        "pending", list(session.workflow.pending_steps),
    )
    # The tutorial's read-modify-write, made safe with expected_version
    # (merge_shared_context would do the same in one step).
    current = bus.get_session(session_id)
    session = bus.update_shared_context(
        session_id,
        {**to_python(current.shared_context), "branch": "feature/notifications", "latestCommit": "abc123"},
        expected_version=current.version,
    )
    print("Shared context:", show(to_python(session.shared_context)))

    # 8. Complete the session.
    session = bus.complete_session(
        session_id, summary="All tasks completed successfully", artifacts=["s3://artifacts/build.zip"]
    )
    print(
        f"Session done: {session.session_id} state={agentbus.state_name(session.state)} "
        f"summary={session.summary!r} artifacts={list(session.artifacts)}"
    )

    # 9. What the watcher saw.
    if not completed.wait(10):
        print("error: the watcher did not see the session complete", file=sys.stderr)
    watch.close()
    watcher_thread.join(5)
    print("Events seen:")
    for event in events:
        name = agentbus.event_type_name(event.type)
        detail = event.agent_id or event.task_id
        print(f"  #{event.sequence} {name}" + (f" {detail}" if detail else ""))
        if name == "session_created":
            print("    Session created", event.session_id)
        elif name == "task_delegated":
            # event.agent_id is the agent that acted (the delegator); the
            # session snapshot in the event names the assignee.
            assignee = next((t.assignee for t in event.session.tasks if t.task_id == event.task_id), "?")
            print("    Task delegated", event.task_id, "to", assignee, "by", event.agent_id)
        elif name == "session_completed":
            print("    Session done", event.session_id)
    sequences = [e.sequence for e in events]
    if not completed.is_set() or sequences != sorted(set(sequences)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
