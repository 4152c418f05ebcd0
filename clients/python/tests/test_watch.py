"""watch_sessions: replay, filters, live events, errors, and transparent
resumption across a server restart (durable SQLite store, same port)."""

import signal
import threading
import time

import pytest

import agentbus
from agentbus.v1 import session_pb2

ORC = "claude-code://orchestrator"
T = session_pb2


def test_replay_filters_and_live_events(client, uid):
    a = client.create_session(ORC, ["opencode://backend"], ["design", "build"], session_id=f"sess_wa_{uid}")
    b = client.create_session(ORC, session_id=f"sess_wb_{uid}")
    client.advance_workflow(a.session_id)
    with client.watch_sessions(session_ids=[a.session_id], after_sequence=0, idle_timeout=5) as watch:
        created = next(watch)
        assert created.type == T.SESSION_EVENT_TYPE_SESSION_CREATED and created.session_id == a.session_id
        assert created.session.version == 1
        advanced = next(watch)
        assert advanced.type == T.SESSION_EVENT_TYPE_WORKFLOW_UPDATED
        assert advanced.sequence > created.sequence
        # Live events follow the replay; b's events are filtered out.
        client.merge_shared_context(b.session_id, {"ignored": True})
        client.add_participant(a.session_id, "opencode://security", role="reviewer")
        live = next(watch)
        assert live.type == T.SESSION_EVENT_TYPE_PARTICIPANT_ADDED
        assert live.agent_id == "opencode://security"
        assert live.session.participants[-1].agent_id == "opencode://security"
        assert watch.last_sequence == live.sequence

    with client.watch_sessions(session_ids=[a.session_id, b.session_id], event_types=["shared_context_updated"],
                               after_sequence=0, idle_timeout=1) as watch:
        events = list(watch)
    assert [(e.session_id, e.type) for e in events] == [(b.session_id, T.SESSION_EVENT_TYPE_SHARED_CONTEXT_UPDATED)]


def test_live_only_without_after_sequence(client, uid):
    client.create_session(ORC, session_id=f"sess_old_{uid}")
    with client.watch_sessions(session_ids=[f"sess_old_{uid}", f"sess_new_{uid}"], idle_timeout=5) as watch:
        # The stream is open once a heartbeat (1s) arrived; then create.
        assert watch.next_event(timeout=2.5) is None
        assert watch.last_heartbeat is not None
        client.create_session(ORC, session_id=f"sess_new_{uid}")
        event = next(watch)
    assert event.session_id == f"sess_new_{uid}"  # the older session was not replayed


def test_non_retryable_errors_are_raised_at_once(client):
    started = time.monotonic()
    with pytest.raises(agentbus.OutOfRangeError) as exc:
        next(client.watch_sessions(after_sequence=10**12, max_retries=100))
    assert "after_sequence" in exc.value.message
    assert time.monotonic() - started < 2
    with pytest.raises(ValueError):
        client.watch_sessions(event_types=["not_an_event"])


def test_close_from_another_thread_ends_the_iteration(client):
    watch = client.watch_sessions()
    threading.Timer(0.3, watch.close).start()
    started = time.monotonic()
    assert list(watch) == []
    assert time.monotonic() - started < 5


def test_gives_up_after_max_retries_when_the_server_stays_down(start_server):
    server = start_server()
    with server.client() as c:
        c.create_session(ORC)
        watch = c.watch_sessions(after_sequence=0, max_retries=2, initial_backoff=0.05, max_backoff=0.1)
        assert next(watch).sequence == 1
        server.stop()
        started = time.monotonic()
        with pytest.raises(agentbus.UnavailableError):
            next(watch)
        assert time.monotonic() - started < 10
        assert watch.reconnects == 2


def _collector(watch, seen, errors):
    try:
        for event in watch:
            seen.append(event.sequence)
    except Exception as exc:
        errors.append(exc)


def _wait_for(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _restart(start_server, port, data_dir):
    # The port was just released; retry briefly in case it is not free yet.
    for attempt in range(20):
        try:
            return start_server(port=port, data_dir=data_dir)
        except RuntimeError:
            if attempt == 19:
                raise
            time.sleep(0.25)


def _produce(server, count, tag):
    with server.client() as c:
        # After a restart the channel may share grpc-core's subchannel with
        # the watcher's, still backing off from the refused connections of
        # the restart: without waiting, a call fails fast with UNAVAILABLE.
        c.wait_ready(10)
        for i in range(count):
            s = c.create_session(ORC, session_id=f"sess_{tag}_{i}")
            c.merge_shared_context(s.session_id, {"i": i})


def test_sync_watch_resumes_across_restarts_without_gaps_or_duplicates(start_server, tmp_path):
    data_dir = str(tmp_path / "data")
    server = start_server(data_dir=data_dir)
    port = server.port
    _produce(server, 3, "before")  # sequences 1..6

    client = agentbus.AgentBusClient(f"127.0.0.1:{port}", timeout=5)
    watch = client.watch_sessions(after_sequence=2, initial_backoff=0.05, max_backoff=0.5)
    seen, errors = [], []
    collector = threading.Thread(target=_collector, args=(watch, seen, errors), daemon=True)
    collector.start()
    assert _wait_for(lambda: len(seen) >= 4), seen

    # 1: graceful stop (streams end with UNAVAILABLE), restart on the same port.
    assert server.stop(signal.SIGTERM) == 0
    server = _restart(start_server, port, data_dir)
    _produce(server, 2, "after-term")  # 7..10
    assert _wait_for(lambda: len(seen) >= 8), seen

    # 2: crash (SIGKILL), restart, more events.
    server.stop(signal.SIGKILL)
    server = _restart(start_server, port, data_dir)
    _produce(server, 2, "after-kill")  # 11..14
    assert _wait_for(lambda: len(seen) >= 12), seen

    watch.close()
    collector.join(5)
    client.close()
    assert not errors, errors
    assert seen == list(range(3, 15))  # every sequence after 2 exactly once, in order
    assert watch.reconnects >= 2


def test_aio_watch_resumes_across_a_restart(start_server, tmp_path):
    import asyncio

    from agentbus.aio import AsyncAgentBusClient

    data_dir = str(tmp_path / "data")
    server = start_server(data_dir=data_dir)
    port = server.port

    async def main():
        nonlocal server
        seen = []
        async with AsyncAgentBusClient(f"127.0.0.1:{port}", timeout=5) as bus:
            await bus.create_session(ORC, session_id="sess_aio_0")
            watch = bus.watch_sessions(after_sequence=0, initial_backoff=0.05, max_backoff=0.5, idle_timeout=15)

            async def collect():
                async for event in watch:
                    seen.append((event.sequence, event.session_id))
                    if len(seen) == 4:
                        return

            task = asyncio.create_task(collect())
            await bus.create_session(ORC, session_id="sess_aio_1")
            while len(seen) < 2:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(server.stop, signal.SIGTERM)
            server = await asyncio.to_thread(_restart, start_server, port, data_dir)
            await bus.wait_ready(10)  # the channel is backing off after the restart
            await bus.create_session(ORC, session_id="sess_aio_2")
            await bus.create_session(ORC, session_id="sess_aio_3")
            await asyncio.wait_for(task, 20)
            assert watch.reconnects >= 1
            watch.close()
        return seen

    seen = asyncio.run(main())
    assert seen == [(1, "sess_aio_0"), (2, "sess_aio_1"), (3, "sess_aio_2"), (4, "sess_aio_3")]
