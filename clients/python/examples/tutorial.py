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
 4. registers the orchestrator and the two implementers;
 5. moves the workflow on to the implementation step;
 6. the orchestrator sends each implementer a high-priority task_request in
    the session;
 7. each implementer receives its task, acks it and answers (the backend
    first with a status_update) with a task_response whose payload is
    {"result": ..., "confidence": ..., "approach": ...}; the orchestrator
    reads the replies;
 8. aggregates the implementation step's results by consensus;
 9. records the branch and latest commit in the shared context;
10. completes the session and prints its executive summary (Markdown);
11. prints the events the watcher saw.
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
FRONTEND = "codex://frontend"

# What each implementer answers: the task's result, how sure it is, and how it
# got there.  The bus records these on the session's tasks and aggregates them.
ANSWERS = {
    BACKEND: {
        "result": {"transport": "websocket", "audit_log": True},
        "confidence": 0.9,
        "approach": "server push",
    },
    FRONTEND: {
        "result": {"transport": "websocket", "audit_log": True},
        "confidence": 0.7,
        "approach": "client subscription",
    },
}


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
            {"agent_id": FRONTEND, "role": "implementer"},
            {"agent_id": "claude-code://qa", "role": "reviewer"},
        ],
        steps=[
            {"name": "design", "required_agents": [ORCHESTRATOR]},
            {"name": "implementation", "required_agents": [BACKEND, FRONTEND]},
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
    events: list[session_pb2.SessionEvent] = []
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
        (FRONTEND, {"languages": ["typescript"], "optimal_tasks": ["implementation"]}),
    ):
        bus.register_agent(agent_id, capabilities=caps, update=True)
        print("Registered agent:", agent_id)

    # 5. Design is done: move on to the implementation step.  Tasks belong to
    #    the step that is current when they are delegated.
    session = bus.update_workflow(
        session_id, current_step="implementation", completed_steps=["design"], pending_steps=["review"]
    )
    print(
        "Workflow: current", session.workflow.current_step,
        "completed", list(session.workflow.completed_steps),
        "pending", list(session.workflow.pending_steps),
    )

    # 6. The orchestrator delegates the work to both implementers inside the session.
    task_ids = {}
    for agent_id, component in ((BACKEND, "notification-service"), (FRONTEND, "notification-ui")):
        name = agent_id.split("://", 1)[1]
        task_id = f"task_impl_{name}.{session_id}"
        sent = bus.send(
            ORCHESTRATOR,
            agent_id,
            "task_request",
            {"task_type": "implementation", "context": {"component": component}},
            session_id=session_id,
            message_id=task_id,
            priority="high",
            routing_timeout="300s",
            max_retries=1,
            backoff="linear",
            delivery_mode="async",
        )
        task_ids[agent_id] = task_id
        print(f"Task sent: {sent.message_id} (state {agentbus.state_name(sent.state, 'message')})")

    # 7. Each implementer receives its task (acked once handled) and answers
    #    with its result, confidence and approach; the backend reports
    #    progress first.
    for agent_id, task_id in task_ids.items():
        with bus.inbox(agent_id, idle_timeout=10) as inbox:
            for delivery in inbox:
                message = delivery.message
                if message.message_id != task_id:
                    continue  # something left over from an earlier run: acked and skipped
                print(
                    f"{agent_id} received {agentbus.message_type_name(message.message_type)} {message.message_id} "
                    f"from {message.sender.agent_id} (session {message.sender.session_id}, attempt {delivery.attempt}):",
                    show(payload_of(delivery)),
                )
                if agent_id == BACKEND:
                    bus.reply(delivery, {"status": "in_progress", "progress": 0.5}, "status_update")
                bus.reply(delivery, ANSWERS[agent_id], "task_response")
                break
            else:
                print(f"error: {agent_id} never received its task", file=sys.stderr)
                return 1
    backend_task = task_ids[BACKEND]
    print("Task state:", agentbus.state_name(bus.get_message(backend_task).state, "message"))

    # The orchestrator reads the replies (a status update, two answers) from its own inbox.
    expected_replies = 3
    replies = 0
    with bus.inbox(ORCHESTRATOR, idle_timeout=10) as inbox:
        for delivery in inbox:
            message = delivery.message
            if message.in_reply_to not in task_ids.values():
                continue
            replies += 1
            print(
                f"Orchestrator received {agentbus.message_type_name(message.message_type)} "
                f"from {message.sender.agent_id} in reply to {message.in_reply_to}:",
                show(payload_of(delivery)),
            )
            if replies == expected_replies:
                break
    if replies != expected_replies:
        print(f"error: the orchestrator got {replies} of {expected_replies} replies", file=sys.stderr)
        return 1
    for task in bus.get_session(session_id).tasks:
        print(
            f"Session task {task.task_id}: {agentbus.state_name(task.state, 'task')}, assignee {task.assignee}, "
            f"step {task.step}, confidence {task.confidence:.1f}, approach {task.approach!r}"
        )

    # 8. Combine the implementation step's answers: consensus picks the most
    #    frequent result and lists the conflicts among the answers.
    aggregation = bus.aggregate_results(session_id, step="implementation", strategy="consensus").aggregation
    print(
        f"Aggregated {aggregation.aggregation_id} ({agentbus.state_name(aggregation.strategy, 'strategy')}) "
        f"of step {aggregation.step}: {show(to_python(aggregation.result))} "
        f"confidence {aggregation.confidence:.2f} from {list(aggregation.contributing_task_ids)}"
    )
    for conflict in aggregation.conflicts:
        print(f"  conflict {agentbus.state_name(conflict.kind, 'conflict')}: {conflict.detail}")

    # 9. Record the branch in the shared context: the tutorial's
    #    read-modify-write, made safe with expected_version
    #    (merge_shared_context would do the same in one step).
    current = bus.get_session(session_id)
    session = bus.update_shared_context(
        session_id,
        {**to_python(current.shared_context), "branch": "feature/notifications", "latestCommit": "abc123"},
        expected_version=current.version,
    )
    print("Shared context:", show(to_python(session.shared_context)))

    # 10. Complete the session; the bus then writes its executive summary.
    session = bus.complete_session(
        session_id, summary="All tasks completed successfully", artifacts=["s3://artifacts/build.zip"]
    )
    print(
        f"Session done: {session.session_id} state={agentbus.state_name(session.state)} "
        f"summary={session.summary!r} artifacts={list(session.artifacts)}"
    )
    print("Executive summary:")
    print(bus.get_session_summary(session_id).markdown)

    # 11. What the watcher saw.
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
        elif name == "results_aggregated":
            print("    Results aggregated", event.session.aggregations[-1].aggregation_id)
        elif name == "session_completed":
            print("    Session done", event.session_id)
    sequences = [e.sequence for e in events]
    if not completed.is_set() or sequences != sorted(set(sequences)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
