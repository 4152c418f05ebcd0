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
    backend_task = f"task_impl_backend.{session_id}"
    frontend_task = f"task_impl_frontend.{session_id}"
    for expected in [
        "participant claude-code://orchestrator role=orchestrator status=active",
        "participant claude-code://qa role=reviewer status=active",
        "current step: design pending: ['implementation', 'review']",
        "Participant added: opencode://security (reviewer)",
        "Registered agent: opencode://backend",
        "Registered agent: codex://frontend",
        "Workflow: current implementation completed ['design'] pending ['review']",
        f"Task sent: {backend_task} (state queued)",
        f"Task sent: {frontend_task} (state queued)",
        f"opencode://backend received task_request {backend_task} from claude-code://orchestrator "
        f"(session {session_id}, attempt 1): "
        '{"context": {"component": "notification-service"}, "task_type": "implementation"}',
        f"codex://frontend received task_request {frontend_task} from claude-code://orchestrator "
        f"(session {session_id}, attempt 1): "
        '{"context": {"component": "notification-ui"}, "task_type": "implementation"}',
        f"Orchestrator received status_update from opencode://backend in reply to {backend_task}: "
        '{"progress": 0.5, "status": "in_progress"}',
        f"Orchestrator received task_response from opencode://backend in reply to {backend_task}: "
        '{"approach": "server push", "confidence": 0.9, "result": {"audit_log": true, "transport": "websocket"}}',
        f"Orchestrator received task_response from codex://frontend in reply to {frontend_task}: "
        '{"approach": "client subscription", "confidence": 0.7, "result": {"audit_log": true, "transport": "websocket"}}',
        "Task state: answered",
        f"Session task {backend_task}: completed, assignee opencode://backend, step implementation, "
        "confidence 0.9, approach 'server push'",
        f"Session task {frontend_task}: completed, assignee codex://frontend, step implementation, "
        "confidence 0.7, approach 'client subscription'",
        'Aggregated agg_1 (consensus) of step implementation: {"audit_log": true, "transport": "websocket"} '
        f"confidence 0.90 from ['{backend_task}', '{frontend_task}']",
        "  conflict approach_difference: approaches differ: client subscription, server push",
        'Shared context: {"branch": "feature/notifications", "latestCommit": "abc123", '
        '"project": "feature/notifications", "requirements": ["real-time updates", "audit logs"]}',
        f"Session done: {session_id} state=completed summary='All tasks completed successfully' "
        "artifacts=['s3://artifacts/build.zip']",
        f"    Session created {session_id}",
        f"    Task delegated {backend_task} to opencode://backend by claude-code://orchestrator",
        f"    Task delegated {frontend_task} to codex://frontend by claude-code://orchestrator",
        "    Results aggregated agg_1",
        f"    Session done {session_id}",
    ]:
        assert expected in out, f"missing {expected!r} in:\n{out}"

    # The executive summary, as Markdown, between the completion and the events.
    summary = out.split("Executive summary:\n", 1)[1].split("Events seen:", 1)[0]
    assert summary.startswith(f"# Session {session_id}: completed\n"), summary
    for expected in [
        "All tasks completed successfully",
        "**Totals:** 2 tasks completed, 0 failed, 0 timed out",
        "## design (completed)",
        "## implementation (current)",
        "## review (pending)",
        f"- `{backend_task}` by opencode://backend: completed",
        f"- `{frontend_task}` by codex://frontend: completed",
        'Result: `{"audit_log":true,"transport":"websocket"}`',
        "## Unresolved conflicts",
        "- approaches differ: client subscription, server push",
        "- s3://artifacts/build.zip",
        "| opencode://backend | 1 | 1 | 0 |",
    ]:
        assert expected in summary, f"missing {expected!r} in the summary:\n{summary}"

    # The watcher saw the whole story, each event once and in order.
    seen = re.findall(r"^  #(\d+) (\w+)", out, re.M)
    assert [name for _, name in seen] == [
        "session_created",
        "participant_added",
        "workflow_updated",
        "task_delegated",
        "task_delegated",
        "task_updated",
        "task_updated",
        "task_updated",
        "results_aggregated",
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
