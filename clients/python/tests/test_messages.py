"""MessageService through the sync client: send, the inbox iterator with its
acks, sync request/reply, and the errors."""

import threading
import time

import grpc
import pytest

import agentbus
from agentbus.v1 import message_pb2, session_pb2


@pytest.fixture
def pair(client, uid):
    """(orchestrator id, backend id), both registered."""
    orc, backend = f"claude-code://orc-{uid}", f"opencode://backend-{uid}"
    client.register_agent(orc)
    client.register_agent(backend)
    return orc, backend


def test_send_receive_and_auto_ack(client, pair, uid):
    orc, backend = pair
    resp = client.send(orc, backend, "task_request", {"task_type": "implementation", "n": 1},
                       priority="high", metadata={"trace": uid}, message_id=f"m1-{uid}", routing_timeout="300s",
                       max_retries=1, backoff="linear", delivery_mode="async")
    assert resp.accepted and resp.message_id == f"m1-{uid}"
    assert resp.state == message_pb2.MESSAGE_STATE_QUEUED
    generated = client.send(orc, backend, "status_update", "plain string payload").message_id
    assert generated.startswith("msg_")

    seen = []
    with client.inbox(backend, idle_timeout=3) as inbox:
        for delivery in inbox:
            seen.append(delivery)
            if len(seen) == 2:
                break  # leaving the with block normally acks the one in hand
    # Higher priority first.
    assert [d.message.message_id for d in seen] == [f"m1-{uid}", generated]
    first = seen[0]
    assert first.attempt == 1 and first.HasField("ack_deadline")
    assert first.message.priority == message_pb2.PRIORITY_HIGH
    assert agentbus.payload_of(first) == {"task_type": "implementation", "n": 1}
    assert agentbus.to_python(first.message.metadata) == {"trace": uid}
    assert first.message.routing.retry_policy.max_retries == 1
    assert agentbus.payload_of(seen[1]) == "plain string payload"
    for message_id in (f"m1-{uid}", generated):
        assert client.get_message(message_id).state == message_pb2.MESSAGE_STATE_ACKED


def test_inbox_does_not_ack_when_the_handler_raises(client, pair, uid):
    orc, backend = pair
    client.send(orc, backend, payload={"try": 1}, message_id=f"boom-{uid}")
    with pytest.raises(RuntimeError):
        with client.inbox(backend, idle_timeout=3) as inbox:
            for delivery in inbox:
                raise RuntimeError("handler failed")
    status = client.get_message(f"boom-{uid}")
    assert status.state in (message_pb2.MESSAGE_STATE_QUEUED, message_pb2.MESSAGE_STATE_DELIVERED)
    # Closing the stream gave it back to the inbox: the next stream gets it again.
    with client.inbox(backend, idle_timeout=5) as inbox:
        again = next(inbox)
    assert again.message.message_id == f"boom-{uid}"
    assert again.attempt == 2
    assert client.get_message(f"boom-{uid}").state == message_pb2.MESSAGE_STATE_ACKED


def test_manual_ack_and_redelivery_after_ack_timeout(client, pair, uid):
    orc, backend = pair
    client.send(orc, backend, payload=1, message_id=f"slow-{uid}", max_retries=3)
    with client.inbox(backend, auto_ack=False) as inbox:
        first = inbox.receive(timeout=5)
        assert first is not None and first.attempt == 1
        # Not acked: the server's ack timeout (2s in tests) brings it back.
        second = inbox.receive(timeout=8)
        assert second is not None and second.message.message_id == f"slow-{uid}"
        assert second.attempt == 2
        assert inbox.ack(second) == message_pb2.MESSAGE_STATE_ACKED
        assert inbox.ack(second) == message_pb2.MESSAGE_STATE_ACKED  # idempotent
        before = inbox.last_heartbeat
        assert inbox.receive(timeout=2.5) is None  # heartbeats (every 1s) only
        assert inbox.last_heartbeat is not None and inbox.last_heartbeat is not before
        assert inbox.last_heartbeat.inbox_depth == 0
    status = client.get_message(f"slow-{uid}")
    assert status.attempts == 2 and status.state == message_pb2.MESSAGE_STATE_ACKED


def test_max_in_flight_holds_back_deliveries_until_acked(client, pair, uid):
    orc, backend = pair
    for n in (1, 2):
        client.send(orc, backend, payload=n, message_id=f"prefetch{n}-{uid}")
    with client.inbox(backend, auto_ack=False, max_in_flight=1) as inbox:
        first = inbox.receive(timeout=5)
        assert first is not None and first.message.message_id == f"prefetch1-{uid}"
        assert inbox.receive(timeout=0.5) is None  # held back until the ack
        inbox.ack(first)
        second = inbox.receive(timeout=5)
        assert second is not None and second.message.message_id == f"prefetch2-{uid}"
        inbox.ack(second)


def test_inbox_skips_heartbeats(client, pair):
    _, backend = pair
    with client.inbox(backend, idle_timeout=2.5) as inbox:
        assert list(inbox) == []  # only heartbeats (every 1s) arrived
        assert inbox.last_heartbeat is not None
    agent = client.get_agent(backend)
    assert agent.HasField("last_seen")


def test_agent_is_online_while_its_inbox_is_open(client, pair):
    _, backend = pair
    inbox = client.inbox(backend)
    try:
        deadline = time.monotonic() + 5
        while not client.get_agent(backend).online and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get_agent(backend).online
    finally:
        inbox.close()
    deadline = time.monotonic() + 5
    while client.get_agent(backend).online and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.get_agent(backend).online


def _respond(server, agent_id, reply_payload, ready, errors):
    """A responder agent on its own connection: answers one request."""
    try:
        with server.client() as responder, responder.inbox(agent_id, idle_timeout=10) as inbox:
            ready.set()
            for delivery in inbox:
                responder.reply(delivery, reply_payload(delivery))
                break
    except Exception as exc:  # surfaced by the test
        errors.append(exc)
        ready.set()


def test_request_returns_the_reply(server, client, pair, uid):
    orc, backend = pair
    ready, errors = threading.Event(), []
    worker = threading.Thread(
        target=_respond,
        args=(server, backend, lambda d: {"echo": agentbus.payload_of(d), "from": d.message.recipient.agent_id},
              ready, errors),
    )
    worker.start()
    ready.wait(5)
    reply = client.request(orc, backend, "task_request", {"q": 42}, message_id=f"req-{uid}", reply_timeout=15)
    worker.join(10)
    assert not errors
    assert reply.in_reply_to == f"req-{uid}"
    assert reply.message_type == message_pb2.MESSAGE_TYPE_TASK_RESPONSE
    assert reply.sender.agent_id == backend and reply.recipient.agent_id == orc
    assert agentbus.payload_of(reply) == {"echo": {"q": 42}, "from": backend}
    assert client.get_message(f"req-{uid}").state == message_pb2.MESSAGE_STATE_ANSWERED


def test_request_without_reply_times_out(client, pair, uid):
    orc, backend = pair
    started = time.monotonic()
    with pytest.raises(agentbus.DeadlineExceededError) as exc:
        client.request(orc, backend, payload={"q": 1}, message_id=f"lonely-{uid}", reply_timeout=1.0)
    assert exc.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    assert client.get_message(f"lonely-{uid}").state == message_pb2.MESSAGE_STATE_EXPIRED


def test_send_errors(client, pair, uid):
    orc, backend = pair
    with pytest.raises(agentbus.NotFoundError) as exc:
        client.send(orc, f"opencode://nobody-{uid}", payload={})
    assert exc.value.code is grpc.StatusCode.NOT_FOUND
    with pytest.raises(agentbus.InvalidArgumentError) as exc:
        client.send(orc, backend, message_id="bad id!")
    assert exc.value.message.startswith("message.message_id")
    with pytest.raises(agentbus.InvalidArgumentError):
        client.send(orc, backend, message_type=None)  # unspecified type
    client.send(orc, backend, payload={"v": 1}, message_id=f"dup-{uid}")
    again = client.send(orc, backend, payload={"v": 1}, message_id=f"dup-{uid}")  # idempotent resend
    assert again.accepted
    with pytest.raises(agentbus.AlreadyExistsError):
        client.send(orc, backend, payload={"v": 2}, message_id=f"dup-{uid}")
    with pytest.raises(ValueError):
        client.send(orc, backend, "shout")  # not a message type: refused before any call


def test_ack_and_get_message_errors(client, pair, uid):
    orc, backend = pair
    client.send(orc, backend, payload=1, message_id=f"acked-{uid}")
    with pytest.raises(agentbus.NotFoundError):
        client.ack(backend, f"never-sent-{uid}")
    with pytest.raises(agentbus.FailedPreconditionError):
        client.ack(orc, f"acked-{uid}")  # only the recipient may ack
    with pytest.raises(agentbus.NotFoundError):
        client.get_message(f"never-sent-{uid}")


def test_ack_many_answers_each_id(client, pair, uid):
    orc, backend = pair
    for n in (1, 2):
        client.send(orc, backend, payload=n, message_id=f"many{n}-{uid}")
    with client.inbox(backend, auto_ack=False) as inbox:
        deliveries = [inbox.receive(timeout=5) for _ in range(2)]
    results = client.ack_many(backend, [deliveries[0], f"many2-{uid}", f"never-sent-{uid}"])
    assert [(r.message_id, r.code, r.code_name) for r in results] == [
        (f"many1-{uid}", 0, "OK"),
        (f"many2-{uid}", 0, "OK"),
        (f"never-sent-{uid}", grpc.StatusCode.NOT_FOUND.value[0], "NOT_FOUND"),
    ]
    assert results[0].state == message_pb2.MESSAGE_STATE_ACKED and "never-sent" in results[2].error
    assert client.get_message(f"many2-{uid}").state == message_pb2.MESSAGE_STATE_ACKED
    with pytest.raises(agentbus.InvalidArgumentError):
        client.ack_many(backend, [])


def test_messages_in_a_session_track_tasks(client, pair, uid):
    orc, backend = pair
    outsider = f"codex://outsider-{uid}"
    client.register_agent(outsider)
    s = client.create_session(orc, [{"agent_id": backend, "role": "implementer"}], session_id=f"sess_msg_{uid}")
    client.send(orc, backend, "task_request", {"task_type": "implementation"}, session_id=s.session_id,
                message_id=f"task-{uid}")
    with pytest.raises(agentbus.FailedPreconditionError):
        client.send(orc, outsider, payload={}, session_id=s.session_id)  # not a participant
    with client.inbox(backend, idle_timeout=5) as inbox:
        delivery = next(inbox)
        assert delivery.message.sender.session_id == s.session_id
        client.reply(delivery, {"progress": 50}, "status_update")
        assert client.get_session(s.session_id).tasks[0].state == session_pb2.TASK_STATE_WORKING
        client.reply(delivery, {"result": "done"})
    task = client.get_session(s.session_id).tasks[0]
    assert (task.task_id, task.assignee, task.delegated_by) == (f"task-{uid}", backend, orc)
    assert task.state == session_pb2.TASK_STATE_COMPLETED
    assert agentbus.to_python(task.last_payload) == {"result": "done"}
    client.complete_session(s.session_id, "done")
    with pytest.raises(agentbus.FailedPreconditionError):
        client.send(orc, backend, payload={}, session_id=s.session_id)  # session ended


def test_send_messages_answers_each_message_in_order(client, pair, uid):
    orc, backend = pair
    results = client.send_messages([
        agentbus.build_message(orc, backend, payload={"n": 1}, message_id=f"b1-{uid}"),
        {"sender": orc, "recipient": f"codex://ghost-{uid}", "payload": {}, "message_id": f"b2-{uid}"},
        {"sender": orc, "recipient": backend, "payload": {}, "message_id": f"b3-{uid}", "delivery_mode": "sync"},
        {"sender": orc, "recipient": backend, "payload": {"n": 1}, "message_id": f"b1-{uid}"},  # a resend
    ])
    assert [(r.message_id, r.accepted, r.code_name) for r in results] == [
        (f"b1-{uid}", True, "OK"),
        (f"b2-{uid}", False, "NOT_FOUND"),
        (f"b3-{uid}", False, "INVALID_ARGUMENT"),
        (f"b1-{uid}", True, "OK"),
    ]
    assert results[0].state == message_pb2.MESSAGE_STATE_QUEUED
    assert results[1].code == grpc.StatusCode.NOT_FOUND.value[0] and "not registered" in results[1].error
    assert "SYNC" in results[2].error
    with pytest.raises(agentbus.InvalidArgumentError):
        client.send_messages([])
    with pytest.raises(TypeError):
        client.send_messages(["not a message"])  # type: ignore[list-item]


def test_publish_streams_results_in_order(client, pair, uid):
    orc, backend = pair

    def messages():
        for n in range(300):
            recipient = f"codex://ghost-{uid}" if n % 50 == 7 else backend
            yield {"sender": orc, "recipient": recipient, "payload": {"n": n}, "message_id": f"p{n}-{uid}"}

    results = list(client.publish(messages()))
    assert [r.message_id for r in results] == [f"p{n}-{uid}" for n in range(300)]
    assert [n for n, r in enumerate(results) if not r.accepted] == [7, 57, 107, 157, 207, 257]
    assert client.get_message(f"p299-{uid}").state == message_pb2.MESSAGE_STATE_QUEUED
    assert list(client.publish([])) == []
