#!/usr/bin/env python3
"""Terminating a session that cannot finish (the tutorial's exceptional case).

    pip install ./clients/python        # once
    python examples/terminate.py [ADDRESS]

ADDRESS defaults to $AGENT_BUS_URL, else 127.0.0.1:8080; the API key comes from
$AGENT_BUS_API_KEY.  Creates a session, terminates it with reason `timeout` and
details `Frontend agent offline`, shows that every participant is now
`session_terminated`, and that a later change is refused (FAILED_PRECONDITION).
Exits 0 on success, 1 when a call fails unexpectedly.
"""

from __future__ import annotations

import os
import sys
import time

import agentbus
from agentbus import AgentBusClient


def main(argv: list[str]) -> int:
    address = argv[1] if len(argv) > 1 else os.environ.get("AGENT_BUS_URL", "127.0.0.1:8080")
    with AgentBusClient(address, api_key=os.environ.get("AGENT_BUS_API_KEY")) as bus:
        try:
            bus.wait_ready(timeout=10)
            session = bus.create_session(
                "claude-code://orchestrator",
                participants=[
                    {"agent_id": "opencode://backend", "role": "implementer"},
                    {"agent_id": "codex://frontend", "role": "implementer"},
                ],
                steps=["design", "implementation", "review"],
                session_id=f"sess_terminate_demo_{time.strftime('%Y%m%d%H%M%S')}_{os.getpid()}",
            )
            print("New session:", session.session_id, "state:", agentbus.state_name(session.state))

            session = bus.terminate_session(session.session_id, reason="timeout", details="Frontend agent offline")
            print(
                f"Session terminated: {session.session_id} state={agentbus.state_name(session.state)} "
                f"reason={session.termination_reason!r} details={session.termination_details!r}"
            )
            for p in session.participants:
                print(f"  {p.agent_id}: {agentbus.state_name(p.status, 'participant')}")

            try:
                bus.complete_session(session.session_id, summary="too late")
            except agentbus.FailedPreconditionError as err:
                print("Completing it now fails as expected:", err.code.name, "-", err.message)
            else:
                print("error: completing a terminated session succeeded", file=sys.stderr)
                return 1
        except agentbus.AgentBusError as err:
            print(f"error: {err.code.name}: {err.message}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
