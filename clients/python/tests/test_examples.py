"""The examples, run as scripts against a real server with an API key."""

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, *args, key="test-key", url=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_BUS_")}
    if key is not None:
        env["AGENT_BUS_API_KEY"] = key
    if url is not None:
        env["AGENT_BUS_URL"] = url
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_tutorial(auth_server):
    result = run_example("tutorial.py", auth_server.address)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    session_id = re.search(r"^New session: (sess_notifications_\S+)$", out, re.M).group(1)
    for expected in [
        "participant claude-code://orchestrator role=orchestrator status=active",
        "participant claude-code://qa role=reviewer status=active",
        "current step: design pending: ['implementation', 'review']",
        "Participant added: opencode://security (reviewer)",
        "Registered agent: opencode://backend",
        f"Task sent: task_impl_backend.{session_id} (state queued)",
        f"Backend received task_request task_impl_backend.{session_id} from claude-code://orchestrator "
        f"(session {session_id}, attempt 1): "
        '{"context": {"component": "notification-service"}, "task_type": "implementation"}',
        f"Orchestrator received status_update in reply to task_impl_backend.{session_id}: "
        '{"progress": 0.5, "status": "in_progress"}',
        f"Orchestrator received task_response in reply to task_impl_backend.{session_id}: "
        '{"files_changed": ["src/notifications.ts"], "status": "done"}',
        "Task state: answered",
        f"Session task task_impl_backend.{session_id}: completed, assignee opencode://backend",
        "Workflow: current implementation completed ['design'] pending ['review']",
        'Shared context: {"branch": "feature/notifications", "latestCommit": "abc123", '
        '"project": "feature/notifications", "requirements": ["real-time updates", "audit logs"]}',
        f"Session done: {session_id} state=completed summary='All tasks completed successfully' "
        "artifacts=['s3://artifacts/build.zip']",
        f"    Session created {session_id}",
        f"    Task delegated task_impl_backend.{session_id} to opencode://backend by claude-code://orchestrator",
        f"    Session done {session_id}",
    ]:
        assert expected in out, f"missing {expected!r} in:\n{out}"
    # The watcher saw the whole story, each event once and in order.
    seen = re.findall(r"^  #(\d+) (\w+)", out, re.M)
    assert [name for _, name in seen] == [
        "session_created",
        "participant_added",
        "task_delegated",
        "task_updated",
        "task_updated",
        "workflow_updated",
        "shared_context_updated",
        "session_completed",
    ]
    sequences = [int(n) for n, _ in seen]
    assert sequences == sorted(set(sequences))

    # Running it again on the same bus works too (fresh session, agents updated).
    again = run_example("tutorial.py", key="test-key", url=f"http://{auth_server.address}")
    assert again.returncode == 0, again.stdout + again.stderr


def test_tutorial_with_a_wrong_key_fails_cleanly(auth_server):
    result = run_example("tutorial.py", auth_server.address, key="wrong-key")
    assert result.returncode == 1
    assert "error: UNAUTHENTICATED" in result.stderr


def test_terminate(auth_server):
    result = run_example("terminate.py", auth_server.address)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(
        r"^Session terminated: sess_terminate_demo_\S+ state=terminated reason='timeout' "
        r"details='Frontend agent offline'$", out, re.M), out
    assert "  claude-code://orchestrator: session_terminated" in out
    assert "  codex://frontend: session_terminated" in out
    assert "Completing it now fails as expected: FAILED_PRECONDITION" in out
