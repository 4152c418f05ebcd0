"""Pure helpers: value, enum and duration conversions, message building, the
watch bookkeeping, address parsing (no server needed)."""

import datetime as dt

import grpc
import pytest

import agentbus
from agentbus import convert
from agentbus._base import Backoff, WatchState, parse_address
from agentbus.v1 import message_pb2, message_service_pb2, session_pb2, session_service_pb2


def test_values_round_trip():
    data = {"a": 1, "b": [True, None, "x", 2.5, {"c": []}], "d": {}}
    value = agentbus.to_value(data)
    assert value.struct_value.fields["a"].number_value == 1
    assert agentbus.to_python(value) == data
    assert agentbus.to_python(agentbus.to_struct(data)) == data
    assert agentbus.to_python(agentbus.to_value("text")) == "text"
    assert agentbus.to_python(agentbus.to_value(None)) is None
    assert agentbus.to_python(agentbus.to_value([1, "two"])) == [1, "two"]
    assert agentbus.to_struct(None) == agentbus.to_struct({})


def test_values_reject_non_json():
    with pytest.raises(TypeError, match=r"payload\.when"):
        agentbus.to_value({"when": dt.datetime.now()})
    with pytest.raises(TypeError, match="keys must be str"):
        agentbus.to_value({1: "x"})
    with pytest.raises(TypeError, match="dict"):
        agentbus.to_struct([1, 2])


@pytest.mark.parametrize(
    "given, expected",
    [
        ("task_request", message_pb2.MESSAGE_TYPE_TASK_REQUEST),
        ("TASK-RESPONSE", message_pb2.MESSAGE_TYPE_TASK_RESPONSE),
        ("MESSAGE_TYPE_STATUS_UPDATE", message_pb2.MESSAGE_TYPE_STATUS_UPDATE),
        (message_pb2.MESSAGE_TYPE_ERROR, message_pb2.MESSAGE_TYPE_ERROR),
        (None, message_pb2.MESSAGE_TYPE_UNSPECIFIED),
    ],
)
def test_message_type_names(given, expected):
    assert convert.message_type(given) == expected


def test_other_enum_names():
    assert convert.priority("high") == message_pb2.PRIORITY_HIGH
    assert convert.backoff("exponential") == message_pb2.BACKOFF_EXPONENTIAL
    assert convert.delivery_mode("sync") == message_pb2.DELIVERY_MODE_SYNC
    assert convert.session_state("completed") == session_pb2.SESSION_STATE_COMPLETED
    assert convert.session_event_type("task_delegated") == session_pb2.SESSION_EVENT_TYPE_TASK_DELEGATED
    assert convert.context_update_mode("merge") == session_service_pb2.CONTEXT_UPDATE_MODE_MERGE
    assert agentbus.event_type_name(session_pb2.SESSION_EVENT_TYPE_SESSION_CREATED) == "session_created"
    assert agentbus.message_type_name(message_pb2.MESSAGE_TYPE_TASK_REQUEST) == "task_request"
    assert agentbus.state_name(message_pb2.MESSAGE_STATE_ACKED, "message") == "acked"


def test_bad_enum_values_list_the_choices():
    with pytest.raises(ValueError, match="'low', 'medium', 'high', 'critical'"):
        convert.priority("urgent")
    with pytest.raises(ValueError, match="not a valid value"):
        convert.message_type(42)
    with pytest.raises(TypeError):
        convert.priority(True)


@pytest.mark.parametrize(
    "given, seconds, nanos",
    [
        ("300s", 300, 0),
        ("250ms", 0, 250_000_000),
        ("1m30s", 90, 0),
        ("2.5s", 2, 500_000_000),
        ("1h", 3600, 0),
        (1.5, 1, 500_000_000),
        (dt.timedelta(minutes=2), 120, 0),
    ],
)
def test_durations(given, seconds, nanos):
    d = agentbus.to_duration(given)
    assert (d.seconds, d.nanos) == (seconds, nanos)


@pytest.mark.parametrize("bad", ["", "5 parsecs", "s", "-1s"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        agentbus.to_duration(bad)


def test_build_message_from_plain_values():
    msg = agentbus.build_message(
        "claude-code://orchestrator",
        "opencode://backend",
        "task_request",
        {"task_type": "implementation"},
        session_id="sess_1",
        priority="high",
        metadata={"ticket": 7},
        routing_timeout="300s",
        backoff="linear",
        delivery_mode="async",
        fallback_agents=["codex://frontend"],
        message_id="task_impl_backend",
    )
    assert msg.sender.agent_id == "claude-code://orchestrator"
    assert msg.sender.session_id == "sess_1"
    assert msg.recipient.session_id == ""
    assert msg.message_type == message_pb2.MESSAGE_TYPE_TASK_REQUEST
    assert msg.priority == message_pb2.PRIORITY_HIGH
    assert agentbus.payload_of(msg) == {"task_type": "implementation"}
    assert agentbus.to_python(msg.metadata) == {"ticket": 7}
    assert msg.routing.timeout.seconds == 300
    assert msg.routing.retry_policy.max_retries == 3  # the server's default count
    assert msg.routing.retry_policy.backoff == message_pb2.BACKOFF_LINEAR
    assert list(msg.routing.fallback_agents) == ["codex://frontend"]
    assert msg.routing.delivery_mode == message_pb2.DELIVERY_MODE_ASYNC

    plain = agentbus.build_message("a://x", "b://y")
    assert not plain.HasField("routing")
    assert not plain.HasField("payload")
    with pytest.raises(TypeError, match="single string"):
        agentbus.build_message("a://x", "b://y", fallback_agents="c://z")


def test_build_reply_swaps_parties_and_keeps_session_and_task():
    request = agentbus.build_message(
        "claude-code://orchestrator", "opencode://backend", session_id="s1", task_id="t1", message_id="m1"
    )
    delivery = message_service_pb2.Delivery(message=request, attempt=1)
    reply = agentbus.build_reply(delivery, {"ok": True})
    assert reply.sender.agent_id == "opencode://backend"
    assert reply.recipient.agent_id == "claude-code://orchestrator"
    assert reply.sender.session_id == "s1"
    assert reply.task_id == "t1"
    assert reply.in_reply_to == "m1"
    assert reply.message_type == message_pb2.MESSAGE_TYPE_TASK_RESPONSE


def _event(seq):
    return session_service_pb2.WatchSessionsResponse(event=session_pb2.SessionEvent(sequence=seq))


def _state(after=None, **kw):
    kw.setdefault("max_retries", None)
    return WatchState(
        session_ids=None,
        event_types=["session_created"],
        after_sequence=after,
        reconnect=kw.pop("reconnect", True),
        backoff=Backoff(0.1, 1.0),
        retry_codes=agentbus.RETRYABLE_WATCH_CODES,
        **kw,
    )


def test_watch_state_drops_duplicates_and_resumes_after_last_event():
    state = _state(after=None)
    assert not state.request().HasField("after_sequence")
    assert list(state.request().event_types) == [session_pb2.SESSION_EVENT_TYPE_SESSION_CREATED]
    assert state.accept(_event(3)).sequence == 3
    assert state.accept(_event(3)) is None  # duplicate after a reconnect
    assert state.accept(_event(2)) is None  # older: already seen
    hb = session_service_pb2.WatchSessionsResponse(heartbeat=session_service_pb2.Heartbeat(last_sequence=9))
    assert state.accept(hb) is None
    assert state.last_heartbeat.last_sequence == 9
    # Everything up to a heartbeat's sequence was sent or filtered out: resume there.
    assert state.request().after_sequence == 9
    assert state.accept(_event(10)).sequence == 10
    older = session_service_pb2.WatchSessionsResponse(heartbeat=session_service_pb2.Heartbeat(last_sequence=4))
    assert state.accept(older) is None and state.request().after_sequence == 10
    # A live-only watch is positioned by the heartbeat it starts with.
    live = _state(after=None)
    assert live.accept(hb) is None and live.request().after_sequence == 9


def test_watch_state_retry_policy():
    state = _state(after=0, max_retries=2)
    unavailable = agentbus.UnavailableError(grpc.StatusCode.UNAVAILABLE, "down")
    d1 = state.retry_delay(unavailable)
    d2 = state.retry_delay(None)  # a clean end of stream is retried too
    assert 0 < d1 <= 0.1 and 0 < d2 <= 0.2
    with pytest.raises(agentbus.UnavailableError):
        state.retry_delay(unavailable)  # third consecutive failure > max_retries
    state.accept(_event(1))  # anything received resets the count
    assert state.failures == 0
    with pytest.raises(agentbus.UnauthenticatedError):
        state.retry_delay(agentbus.UnauthenticatedError(grpc.StatusCode.UNAUTHENTICATED, "key"))
    assert _state(reconnect=False).retry_delay(None) is None
    with pytest.raises(ValueError):
        _state(after=-1)


def test_backoff_grows_and_is_capped():
    b = Backoff(0.1, 1.0)
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (10, 1.0)]:
        assert cap / 2 <= b.delay(attempt) <= cap


def test_parse_address():
    assert parse_address("127.0.0.1:5000") == ("127.0.0.1:5000", False)
    assert parse_address("http://localhost:8080/") == ("localhost:8080", False)
    assert parse_address("https://bus.example") == ("bus.example:443", True)
    assert parse_address("grpc://[::1]:9000") == ("[::1]:9000", False)
    with pytest.raises(ValueError):
        parse_address("http://host:1/path")


def test_errors_carry_code_and_message():
    err = agentbus.errors.error_for(grpc.StatusCode.NOT_FOUND, "session x not found")
    assert isinstance(err, agentbus.NotFoundError) and isinstance(err, agentbus.AgentBusError)
    assert err.code is grpc.StatusCode.NOT_FOUND
    assert err.code_name == "NOT_FOUND"
    assert err.message == "session x not found"
    assert str(err) == "NOT_FOUND: session x not found"
    other = agentbus.errors.error_for(grpc.StatusCode.DATA_LOSS, "")
    assert type(other) is agentbus.AgentBusError and str(other) == "DATA_LOSS"
