"""SessionService through the sync client: every mutation and its errors."""

import grpc
import pytest

import agentbus
from agentbus.v1 import session_pb2

ORC = "claude-code://orchestrator"


def make_session(client, uid, **kwargs):
    return client.create_session(
        ORC,
        participants=[
            {"agent_id": "opencode://backend", "role": "implementer"},
            {"agent_id": "codex://frontend", "role": "implementer"},
            {"agent_id": "claude-code://qa", "role": "reviewer"},
        ],
        steps=[
            {"name": "design", "required_agents": [ORC]},
            {"name": "implementation", "required_agents": ["opencode://backend", "codex://frontend"]},
            {"name": "review", "required_agents": ["claude-code://qa"], "dependencies": ["implementation"]},
        ],
        shared_context={"project": "feature/notifications", "requirements": ["real-time updates", "audit logs"]},
        session_id=kwargs.pop("session_id", f"sess_test_{uid}"),
        **kwargs,
    )


def test_create_and_get(client, uid):
    s = make_session(client, uid)
    assert s.session_id == f"sess_test_{uid}"
    assert s.orchestrator == ORC
    assert [(p.agent_id, p.role) for p in s.participants] == [
        (ORC, "orchestrator"),
        ("opencode://backend", "implementer"),
        ("codex://frontend", "implementer"),
        ("claude-code://qa", "reviewer"),
    ]
    assert all(p.status == session_pb2.PARTICIPANT_STATUS_ACTIVE for p in s.participants)
    assert s.participants[1].framework == "opencode"
    assert s.workflow.current_step == "design"
    assert list(s.workflow.pending_steps) == ["implementation", "review"]
    assert agentbus.to_python(s.shared_context)["project"] == "feature/notifications"
    assert s.state == session_pb2.SESSION_STATE_ACTIVE
    assert s.version == 1
    assert client.get_session(s.session_id) == s


def test_create_with_generated_id_and_plain_names(client):
    s = client.create_session(ORC, ["opencode://backend"], ["only-step"])
    assert s.session_id.startswith("sess_")
    assert s.participants[1].role == "participant"
    assert s.workflow.current_step == "only-step"


def test_create_errors(client, uid):
    make_session(client, uid)
    with pytest.raises(agentbus.AlreadyExistsError) as exc:
        make_session(client, uid)
    assert exc.value.code is grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(agentbus.InvalidArgumentError) as exc:
        client.create_session(ORC, session_id="bad id with spaces")
    assert exc.value.message.startswith("session_id")
    with pytest.raises(agentbus.InvalidArgumentError) as exc:
        client.create_session(ORC, participants=[{"agent_id": "nope"}])
    assert exc.value.message.startswith("participants[0].agent_id")
    with pytest.raises(agentbus.InvalidArgumentError):
        client.create_session("")


def test_get_unknown_session(client, uid):
    with pytest.raises(agentbus.NotFoundError) as exc:
        client.get_session(f"sess_missing_{uid}")
    assert exc.value.code is grpc.StatusCode.NOT_FOUND
    assert f"sess_missing_{uid}" in exc.value.message


def test_participants(client, uid):
    s = make_session(client, uid)
    s = client.add_participant(s.session_id, "opencode://security", framework="opencode", role="reviewer",
                               capabilities=["audit"], metadata={"team": "sec"})
    sec = s.participants[-1]
    assert (sec.agent_id, sec.role, list(sec.capabilities)) == ("opencode://security", "reviewer", ["audit"])
    assert agentbus.to_python(sec.metadata) == {"team": "sec"}
    with pytest.raises(agentbus.AlreadyExistsError):
        client.add_participant(s.session_id, {"agent_id": "opencode://security"})

    s = client.remove_participant(s.session_id, "opencode://security")
    assert s.participants[-1].status == session_pb2.PARTICIPANT_STATUS_LEFT
    assert s.participants[-1].HasField("leave_time")
    with pytest.raises(agentbus.FailedPreconditionError):
        client.remove_participant(s.session_id, ORC)  # the orchestrator cannot leave
    with pytest.raises(agentbus.NotFoundError):
        client.remove_participant(s.session_id, "opencode://stranger")
    with pytest.raises(agentbus.NotFoundError):
        client.add_participant(f"sess_missing_{uid}", "opencode://x")
    # Rejoining keeps the old record.
    s = client.add_participant(s.session_id, "opencode://security", role="reviewer")
    assert [p.agent_id for p in s.participants].count("opencode://security") == 1
    assert s.participants[-1].status == session_pb2.PARTICIPANT_STATUS_ACTIVE


def test_participant_limit(start_server):
    server = start_server(extra=["--max-participants", "2"])
    with server.client() as c:
        s = c.create_session(ORC, ["opencode://a"])
        with pytest.raises(agentbus.ResourceExhaustedError):
            c.add_participant(s.session_id, "opencode://b")


def test_workflow(client, uid):
    s = make_session(client, uid)
    s = client.update_workflow(s.session_id, current_step="implementation", completed_steps=["design"],
                               pending_steps=["review"])
    assert (s.workflow.current_step, list(s.workflow.completed_steps), list(s.workflow.pending_steps)) == (
        "implementation", ["design"], ["review"])
    with pytest.raises(agentbus.InvalidArgumentError):
        client.update_workflow(s.session_id, current_step="no-such-step")
    s = client.advance_workflow(s.session_id)
    assert s.workflow.current_step == "review"
    assert list(s.workflow.completed_steps) == ["design", "implementation"]
    s = client.advance_workflow(s.session_id)
    assert s.workflow.current_step == "" and s.state == session_pb2.SESSION_STATE_ACTIVE
    with pytest.raises(agentbus.FailedPreconditionError):
        client.advance_workflow(s.session_id)  # nothing left


def test_advance_to_a_step_with_unmet_dependencies(client, uid):
    s = make_session(client, uid)
    with pytest.raises(agentbus.FailedPreconditionError):
        client.advance_workflow(s.session_id, "review")  # needs implementation first
    s = client.advance_workflow(s.session_id, "implementation")
    assert s.workflow.current_step == "implementation"


def test_shared_context_replace_and_merge(client, uid):
    s = make_session(client, uid)
    current = agentbus.to_python(s.shared_context)
    s = client.update_shared_context(s.session_id, {**current, "branch": "feature/notifications",
                                                    "latestCommit": "abc123"})
    ctx = agentbus.to_python(s.shared_context)
    assert ctx["latestCommit"] == "abc123" and ctx["project"] == "feature/notifications"
    s = client.update_shared_context(s.session_id, {"only": "this"})
    assert agentbus.to_python(s.shared_context) == {"only": "this"}
    s = client.merge_shared_context(s.session_id, {"deploy": {"env": "staging"}, "only": None})
    assert agentbus.to_python(s.shared_context) == {"deploy": {"env": "staging"}}
    s = client.merge_shared_context(s.session_id, {"deploy": {"approved": True}})
    assert agentbus.to_python(s.shared_context) == {"deploy": {"env": "staging", "approved": True}}


def test_shared_context_too_large(start_server):
    server = start_server(extra=["--max-context-bytes", "1024"])
    with server.client() as c:
        s = c.create_session(ORC)
        with pytest.raises(agentbus.ResourceExhaustedError):
            c.update_shared_context(s.session_id, {"blob": "x" * 4096})


def test_expected_version(client, uid):
    s = make_session(client, uid)
    assert s.version == 1
    s = client.merge_shared_context(s.session_id, {"a": 1}, expected_version=1)
    assert s.version == 2
    with pytest.raises(agentbus.AbortedError) as exc:
        client.merge_shared_context(s.session_id, {"a": 2}, expected_version=1)
    assert exc.value.code is grpc.StatusCode.ABORTED
    assert agentbus.to_python(client.get_session(s.session_id).shared_context)["a"] == 1
    for call in (
        lambda v: client.add_participant(s.session_id, "opencode://v", expected_version=v),
        lambda v: client.remove_participant(s.session_id, "opencode://backend", expected_version=v),
        lambda v: client.update_workflow(s.session_id, current_step="design", expected_version=v),
        lambda v: client.advance_workflow(s.session_id, expected_version=v),
        lambda v: client.complete_session(s.session_id, "x", expected_version=v),
        lambda v: client.terminate_session(s.session_id, "x", expected_version=v),
    ):
        with pytest.raises(agentbus.AbortedError):
            call(99)


def test_complete(client, uid):
    s = make_session(client, uid)
    s = client.complete_session(s.session_id, "All tasks completed successfully", ["s3://artifacts/build.zip"])
    assert s.state == session_pb2.SESSION_STATE_COMPLETED
    assert s.summary == "All tasks completed successfully"
    assert list(s.artifacts) == ["s3://artifacts/build.zip"]
    assert s.HasField("ended_at")
    with pytest.raises(agentbus.FailedPreconditionError) as exc:
        client.terminate_session(s.session_id, "timeout")
    assert exc.value.code is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(agentbus.FailedPreconditionError):
        client.merge_shared_context(s.session_id, {"late": True})
    with pytest.raises(agentbus.NotFoundError):
        client.complete_session(f"sess_missing_{uid}")


def test_terminate(client, uid):
    s = make_session(client, uid)
    with pytest.raises(agentbus.InvalidArgumentError):
        client.terminate_session(s.session_id, "")  # a reason is required
    s = client.terminate_session(s.session_id, "timeout", "Frontend agent offline")
    assert s.state == session_pb2.SESSION_STATE_TERMINATED
    assert (s.termination_reason, s.termination_details) == ("timeout", "Frontend agent offline")
    assert {p.status for p in s.participants} == {session_pb2.PARTICIPANT_STATUS_SESSION_TERMINATED}
    with pytest.raises(agentbus.FailedPreconditionError):
        client.complete_session(s.session_id, "too late")
    with pytest.raises(agentbus.NotFoundError):
        client.terminate_session(f"sess_missing_{uid}", "timeout")


def test_list_sessions(client, uid):
    member = f"opencode://lister-{uid}"
    ids = []
    for i in range(3):
        s = client.create_session(ORC, [member], session_id=f"sess_list_{uid}_{i}")
        ids.append(s.session_id)
    client.complete_session(ids[1], "done")
    assert [s.session_id for s in client.list_sessions(participant=member, page_size=1)] == ids
    page = client.list_sessions_page(participant=member, page_size=2)
    assert len(page.sessions) == 2 and page.next_page_token
    assert [s.session_id for s in client.list_sessions(participant=member, states=["completed"])] == [ids[1]]
    assert [s.session_id for s in client.list_sessions(participant=member, states=["active", "terminated"])] == [
        ids[0], ids[2]]
    with pytest.raises(ValueError):
        client.list_sessions(states=["finished"])
