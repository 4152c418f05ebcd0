"""SessionService through the sync client: every mutation and its errors."""

import asyncio

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


# ---- aggregation and executive summaries ---------------------------------


def agg_session(client, uid, agents, steps=("design", "implementation")):
    """A session whose orchestrator and `agents` are registered, so they can exchange tasks."""
    for agent_id in (ORC, *agents):
        client.register_agent(agent_id, update=True)
    return client.create_session(ORC, list(agents), list(steps), session_id=f"sess_agg_{uid}")


def answer(client, session_id, agent_id, task_id, payload, message_type="task_response"):
    """The orchestrator delegates `task_id` to `agent_id`, which answers with `payload`."""
    client.send(ORC, agent_id, "task_request", {"question": "which database?"},
                session_id=session_id, task_id=task_id)
    with client.inbox(agent_id, idle_timeout=5) as inbox:
        for delivery in inbox:
            if delivery.message.task_id == task_id:
                client.reply(delivery, payload, message_type)
                return
    pytest.fail(f"{agent_id} never received {task_id}")


def test_task_results_are_recorded(client, uid):
    a = f"opencode://agg-a-{uid}"
    s = agg_session(client, uid, [a])
    answer(client, s.session_id, a, "t1", {"result": {"db": "postgres"}, "confidence": 0.8, "approach": "sql"})
    task = client.get_session(s.session_id).tasks[0]
    assert task.task_id == "t1" and task.step == "design"
    assert agentbus.to_python(task.result) == {"db": "postgres"}
    assert task.HasField("confidence") and task.confidence == pytest.approx(0.8)
    assert task.approach == "sql" and task.success
    assert task.HasField("duration")


def test_consensus_takes_the_majority_and_reports_disagreement(client, uid):
    a, b, c = f"opencode://agg-a-{uid}", f"codex://agg-b-{uid}", f"opencode://agg-c-{uid}"
    s = agg_session(client, uid, [a, b, c])
    answer(client, s.session_id, a, "t1", {"result": "postgres", "confidence": 0.9, "approach": "sql"})
    answer(client, s.session_id, b, "t2", {"result": "mongo", "confidence": 0.6, "approach": "sql"})
    answer(client, s.session_id, c, "t3", {"result": "postgres", "confidence": 0.5, "approach": "sql"})

    res = client.aggregate_results(s.session_id, step="design")  # strategy="consensus" by default
    agg = res.aggregation
    assert agg.aggregation_id and agg.step == "design"
    assert agg.strategy == session_pb2.AGGREGATION_STRATEGY_CONSENSUS
    assert agentbus.state_name(agg.strategy, "strategy") == "consensus"
    assert agentbus.to_python(agg.result) == "postgres"
    assert list(agg.contributing_task_ids) == ["t1", "t3"]
    assert [(c.task_id, c.agent_id, agentbus.to_python(c.result)) for c in agg.candidates] == [
        ("t1", a, "postgres"), ("t2", b, "mongo"), ("t3", c, "postgres")]
    kinds = {agentbus.state_name(k.kind, "conflict") for k in agg.conflicts}
    assert kinds == {"result_disagreement"}
    assert ["t1", "t2"] in [list(k.task_ids) for k in agg.conflicts]
    # 2 of 3 agree, less 0.1 per conflict (t1/t2 and t2/t3 disagree).
    assert agg.confidence == pytest.approx(2 / 3 - 0.2)
    assert list(agg.missing_task_ids) == []
    # Stored in the session, which the response carries too.
    assert res.session.aggregations[-1] == agg
    assert client.get_session(s.session_id).aggregations[-1] == agg


def test_consensus_of_two_different_results_takes_the_first(client, uid):
    a, b = f"opencode://agg-a-{uid}", f"codex://agg-b-{uid}"
    s = agg_session(client, uid, [a, b])
    answer(client, s.session_id, a, "t1", {"result": "postgres", "confidence": 0.9, "approach": "sql"})
    answer(client, s.session_id, b, "t2", {"result": "mongo", "confidence": 0.6, "approach": "nosql"})
    agg = client.aggregate_results(s.session_id, task_ids=["t1", "t2"], strategy="CONSENSUS").aggregation
    assert agentbus.to_python(agg.result) == "postgres"
    assert agg.step == ""
    by_kind = {k.kind: list(k.task_ids) for k in agg.conflicts}
    assert by_kind[session_pb2.CONFLICT_KIND_RESULT_DISAGREEMENT] == ["t1", "t2"]
    assert by_kind[session_pb2.CONFLICT_KIND_APPROACH_DIFFERENCE] == ["t1", "t2"]

    # Specialist priority prefers one agent's answer.
    agg = client.aggregate_results(s.session_id, strategy="specialist_priority", specialist=b).aggregation
    assert agentbus.to_python(agg.result) == "mongo"
    assert agg.specialist == b and agg.confidence == pytest.approx(0.6)


def test_manual_aggregation_and_resolve(client, uid):
    a, b = f"opencode://agg-a-{uid}", f"codex://agg-b-{uid}"
    s = agg_session(client, uid, [a, b])
    answer(client, s.session_id, a, "t1", {"result": "postgres", "confidence": 0.9})
    answer(client, s.session_id, b, "t2", {"result": "mongo", "confidence": 0.6})
    agg = client.aggregate_results(s.session_id, step="design", strategy="manual").aggregation
    assert agg.strategy == session_pb2.AGGREGATION_STRATEGY_MANUAL
    assert not agg.HasField("result") and not agg.HasField("resolution")
    assert [c.task_id for c in agg.candidates] == ["t1", "t2"]
    assert session_pb2.CONFLICT_KIND_RESULT_DISAGREEMENT in [k.kind for k in agg.conflicts]

    with pytest.raises(agentbus.InvalidArgumentError):
        client.resolve_aggregation(s.session_id, agg.aggregation_id, "t9")  # not a candidate
    with pytest.raises(agentbus.NotFoundError):
        client.resolve_aggregation(s.session_id, "agg_999", "t1")
    version = client.get_session(s.session_id).version
    with pytest.raises(agentbus.AbortedError):
        client.resolve_aggregation(s.session_id, agg.aggregation_id, "t2", expected_version=version + 7)

    res = client.resolve_aggregation(s.session_id, agg.aggregation_id, "t2", "mongo fits the schema",
                                     expected_version=version)
    resolved = res.aggregation
    assert resolved.aggregation_id == agg.aggregation_id
    assert agentbus.to_python(resolved.result) == "mongo"
    assert resolved.resolution.chosen_task_id == "t2"
    assert resolved.resolution.note == "mongo fits the schema"
    assert resolved.resolution.resolved_by == ORC
    assert resolved.resolution.HasField("resolved_at")
    assert res.session.version == version + 1
    assert res.session.aggregations[-1] == resolved


def test_confidence_weighted_mean_of_numbers(client, uid):
    a, b, c = f"opencode://agg-a-{uid}", f"codex://agg-b-{uid}", f"opencode://agg-c-{uid}"
    s = agg_session(client, uid, [a, b, c])
    answer(client, s.session_id, a, "est-a", {"result": 10, "confidence": 0.9, "approach": "story points"})
    answer(client, s.session_id, b, "est-b", {"result": 20, "confidence": 0.1, "approach": "story points"})
    agg = client.aggregate_results(s.session_id, task_ids=["est-a", "est-b"], strategy="confidence_weighted").aggregation
    assert agg.strategy == session_pb2.AGGREGATION_STRATEGY_CONFIDENCE_WEIGHTED
    assert agentbus.to_python(agg.result) == pytest.approx((10 * 0.9 + 20 * 0.1) / (0.9 + 0.1))
    assert agg.confidence == pytest.approx(0.5)
    assert sorted(agg.contributing_task_ids) == ["est-a", "est-b"]

    answer(client, s.session_id, c, "words", {"result": "about ten"})
    with pytest.raises(agentbus.InvalidArgumentError):
        client.aggregate_results(s.session_id, task_ids=["est-a", "words"], strategy="confidence_weighted")


def test_aggregate_errors(client, server, uid):
    a, b = f"opencode://agg-a-{uid}", f"codex://agg-b-{uid}"
    s = agg_session(client, uid, [a, b])
    answer(client, s.session_id, a, "t1", {"result": 1})
    client.send(ORC, b, "task_request", {"q": 2}, session_id=s.session_id, task_id="t2")  # never answered

    agg = client.aggregate_results(s.session_id, task_ids=["t1", "t2"]).aggregation
    assert list(agg.missing_task_ids) == ["t2"] and agentbus.to_python(agg.result) == 1
    with pytest.raises(agentbus.FailedPreconditionError):
        client.aggregate_results(s.session_id, task_ids=["t1", "t2"], require_complete=True)
    with pytest.raises(agentbus.InvalidArgumentError):
        client.aggregate_results(s.session_id, task_ids=["no-such-task"])
    with pytest.raises(agentbus.NotFoundError):
        client.aggregate_results(f"sess_missing_{uid}")
    with pytest.raises(agentbus.AbortedError):
        client.aggregate_results(s.session_id, expected_version=1)
    with pytest.raises(ValueError):
        client.aggregate_results(s.session_id, strategy="majority")  # refused before sending
    with pytest.raises(TypeError):
        client.aggregate_results(s.session_id, task_ids="t1")  # a list, not a string

    # Only the orchestrator may aggregate or resolve.
    token = client.issue_agent_token(a).token
    with server.client(api_key="", token=token) as as_a:
        with pytest.raises(agentbus.PermissionDeniedError):
            as_a.aggregate_results(s.session_id)
        with pytest.raises(agentbus.PermissionDeniedError):
            as_a.resolve_aggregation(s.session_id, agg.aggregation_id, "t1")


def test_session_summary(client, uid):
    a, b = f"opencode://agg-a-{uid}", f"codex://agg-b-{uid}"
    s = agg_session(client, uid, [a, b])
    answer(client, s.session_id, a, "t1", {"result": "postgres", "confidence": 0.9, "approach": "sql"})
    answer(client, s.session_id, b, "t2", {"result": "mongo", "confidence": 0.6, "approach": "nosql"})
    client.aggregate_results(s.session_id, step="design")
    with pytest.raises(agentbus.FailedPreconditionError) as exc:
        client.get_session_summary(s.session_id)
    assert exc.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert not client.get_session(s.session_id).HasField("executive_summary")
    with pytest.raises(agentbus.NotFoundError):
        client.get_session_summary(f"sess_missing_{uid}")

    client.advance_workflow(s.session_id)
    done = client.complete_session(s.session_id, "Chose a database", ["docs/adr-001.md"])
    assert done.HasField("executive_summary")

    res = client.get_session_summary(s.session_id)
    summary = res.summary
    assert summary.outcome == session_pb2.SESSION_STATE_COMPLETED
    assert summary.text == "Chose a database"
    assert [(st.name, st.state) for st in summary.steps] == [("design", "completed"), ("implementation", "current")]
    design = summary.steps[0]
    assert [t.task_id for t in design.tasks] == ["t1", "t2"]
    assert agentbus.to_python(design.result) == "postgres"
    assert {k.kind for k in summary.unresolved_conflicts} == {
        session_pb2.CONFLICT_KIND_RESULT_DISAGREEMENT, session_pb2.CONFLICT_KIND_APPROACH_DIFFERENCE}
    assert list(summary.artifacts) == ["docs/adr-001.md"]
    assert summary.totals.tasks_completed == 2
    assert {c.agent_id for c in summary.totals.contributions} == {a, b}
    assert done.executive_summary.outcome == summary.outcome and done.executive_summary.text == summary.text

    md = res.markdown
    assert md.startswith(f"# Session {s.session_id}: completed")
    for expected in ("Chose a database", "## design (completed)", "## implementation (current)",
                     "`t1`", "docs/adr-001.md", a, b):
        assert expected in md, f"missing {expected!r} in:\n{md}"


def test_summary_of_a_terminated_session(client, uid):
    s = agg_session(client, uid, [f"opencode://agg-a-{uid}"])
    client.terminate_session(s.session_id, "timeout", "agents offline")
    res = client.get_session_summary(s.session_id)
    assert res.summary.outcome == session_pb2.SESSION_STATE_TERMINATED
    assert "timeout" in res.summary.text
    assert res.markdown.startswith(f"# Session {s.session_id}: terminated")


def test_aggregation_with_the_asyncio_client(server, uid):
    from agentbus.aio import AsyncAgentBusClient

    a, b = f"opencode://agg-a-{uid}", f"codex://agg-b-{uid}"
    with server.client() as sync:
        s = agg_session(sync, uid, [a, b])
        answer(sync, s.session_id, a, "t1", {"result": 3, "confidence": 1})
        answer(sync, s.session_id, b, "t2", {"result": 5, "confidence": 1})

    async def main():
        async with AsyncAgentBusClient(server.address) as bus:
            res = await bus.aggregate_results(s.session_id, strategy="manual")
            agg = res.aggregation
            resolved = (await bus.resolve_aggregation(s.session_id, agg.aggregation_id, "t2")).aggregation
            assert agentbus.to_python(resolved.result) == 5
            with pytest.raises(agentbus.FailedPreconditionError):
                await bus.get_session_summary(s.session_id)
            await bus.complete_session(s.session_id, "done")
            return await bus.get_session_summary(s.session_id)

    res = asyncio.run(asyncio.wait_for(main(), 30))
    assert res.markdown.startswith(f"# Session {s.session_id}: completed")
