import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  AgentBusClient,
  Code,
  MessageState,
  SessionEventType,
  connect,
  sessionEventTypeName,
  type Interceptor,
  type ReconnectInfo,
  type SessionEvent,
} from "../src/index.js";
import { rejectsWithCode, startServer, tempDir, within } from "./server.js";

const ORCH = "claude-code://orchestrator";

/** Consumes a watch in the background, recording every event. */
function collect(events: AsyncIterable<SessionEvent>) {
  const seen: SessionEvent[] = [];
  let failure: unknown;
  const done = (async () => {
    try {
      for await (const event of events) seen.push(event);
    } catch (e) {
      failure = e;
    }
  })();
  return {
    seen,
    done,
    failure: () => failure,
    /** Waits until `count` events arrived. */
    until: (count: number, what: string) =>
      within(
        10_000,
        (async () => {
          while (seen.length < count) {
            if (failure !== undefined) throw failure;
            await new Promise((r) => setTimeout(r, 20));
          }
        })(),
        `${what} (saw ${seen.length} of ${count})`,
      ),
  };
}

/** Holds WatchSessions calls while closed, so a reconnect can be delayed on purpose. */
function gate() {
  let open: () => void = () => {};
  let opened: Promise<void> = Promise.resolve();
  const interceptor: Interceptor = (next) => async (request) => {
    if (request.method.name === "WatchSessions") await opened;
    return next(request);
  };
  return {
    interceptor,
    close() {
      opened = new Promise<void>((r) => (open = r));
    },
    open: () => open(),
  };
}

/** Five events on one session: created, participant added, workflow, context, completed. */
async function produce(bus: AgentBusClient, sessionId: string): Promise<void> {
  await bus.createSession({ sessionId, orchestrator: ORCH, steps: ["design", "build"] });
  await bus.addParticipant(sessionId, { agentId: "opencode://backend", role: "implementer" });
  await bus.advanceWorkflow(sessionId);
  await bus.mergeSharedContext(sessionId, { branch: "main" });
  await bus.completeSession(sessionId, { summary: "done" });
}

const sequences = (events: SessionEvent[]) => events.map((e) => Number(e.sequence));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe("watchSessions and reconnecting streams", () => {
  test("replays history after a sequence, then follows live events, with filters", async () => {
    const server = await startServer();
    const bus = connect(server.address);
    const stop = new AbortController();
    try {
      await produce(bus, "sess_a");
      await produce(bus, "sess_b");

      const everything = collect(bus.watchSessions({ afterSequence: 0, signal: stop.signal }));
      await everything.until(10, "the whole history");
      assert.deepEqual(sequences(everything.seen), range(1, 10));
      assert.equal(sessionEventTypeName(everything.seen[0]!.type), "session_created");
      assert.equal(everything.seen[1]!.agentId, "opencode://backend");
      assert.equal(everything.seen[4]!.session?.summary, "done", "each event carries the session after it");

      const tail = collect(bus.watchSessions({ afterSequence: 7, signal: stop.signal }));
      const onlyB = collect(bus.watchSessions({ afterSequence: 0, sessionIds: ["sess_b"], signal: stop.signal }));
      const created = collect(
        bus.watchSessions({
          afterSequence: 0,
          eventTypes: ["session_created", SessionEventType.SESSION_COMPLETED],
          signal: stop.signal,
        }),
      );
      let liveConnected!: () => void;
      const liveUp = new Promise<void>((r) => (liveConnected = r));
      const live = collect(bus.watchSessions({ signal: stop.signal, onConnected: () => liveConnected() }));
      await tail.until(3, "events after 7");
      await onlyB.until(5, "sess_b events");
      await created.until(4, "created/completed events");
      await within(10_000, liveUp, "the live-only watch is accepted");
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(live.seen.length, 0, "a live-only watch replays nothing");

      await produce(bus, "sess_c");
      await everything.until(15, "live events");
      await live.until(5, "live-only events");
      await created.until(6, "live created/completed");
      await tail.until(8, "live events after 7");
      assert.deepEqual(sequences(everything.seen), range(1, 15));
      assert.deepEqual(sequences(tail.seen), range(8, 15));
      assert.deepEqual(sequences(live.seen), range(11, 15));
      assert.deepEqual(sequences(onlyB.seen), range(6, 10));
      assert.deepEqual(
        created.seen.map((e) => `${e.sessionId}:${sessionEventTypeName(e.type)}`),
        [
          "sess_a:session_created",
          "sess_a:session_completed",
          "sess_b:session_created",
          "sess_b:session_completed",
          "sess_c:session_created",
          "sess_c:session_completed",
        ],
      );

      stop.abort();
      await Promise.all([everything.done, tail.done, onlyB.done, created.done, live.done]);
      for (const w of [everything, tail, onlyB, created, live]) assert.equal(w.failure(), undefined, "aborting ends quietly");
    } finally {
      stop.abort();
      bus.close();
      await server.stop();
    }
  });

  for (const how of ["stop", "kill"] as const) {
    test(`resumes without gaps or duplicates when the server is ${how === "stop" ? "stopped (SIGTERM)" : "killed (SIGKILL)"} and restarted on the same port`, async () => {
      const data = tempDir();
      let server = await startServer({ dataDir: data.path });
      const port = server.port;
      const writer = connect(server.address);
      const held = gate();
      const watcherBus = connect(server.address, { interceptors: [held.interceptor] });
      const reconnects: ReconnectInfo[] = [];
      let connects = 0;
      const stop = new AbortController();
      try {
        const watch = collect(
          watcherBus.watchSessions({
            afterSequence: 0,
            signal: stop.signal,
            retry: { initialDelayMs: 50, maxDelayMs: 500, maxAttempts: 40 },
            onReconnect: (info) => reconnects.push(info),
            onConnected: () => connects++,
          }),
        );
        await produce(writer, "sess_before");
        await watch.until(5, "events before the restart");

        // Hold the watcher's reconnection until events were committed behind its back.
        held.close();
        await (how === "stop" ? server.stop() : server.kill());
        server = await startServer({ dataDir: data.path, port });
        assert.equal(server.port, port);
        await produce(writer, "sess_while_away");
        held.open();
        await watch.until(10, "events committed while the watcher was disconnected");

        await produce(writer, "sess_after");
        await watch.until(15, "live events after the reconnect");

        // A second restart, without holding the watcher back.
        await (how === "stop" ? server.stop() : server.kill());
        server = await startServer({ dataDir: data.path, port });
        await produce(writer, "sess_second");
        await watch.until(20, "events after the second restart");

        assert.deepEqual(sequences(watch.seen), range(1, 20), "every sequence exactly once, in order");
        assert.deepEqual(
          [...new Set(watch.seen.map((e) => e.sessionId))],
          ["sess_before", "sess_while_away", "sess_after", "sess_second"],
        );
        assert.ok(reconnects.length >= 2, `reconnected at least twice (${reconnects.length})`);
        assert.equal(connects, 3, "accepted by the first server and by each restarted one");
        assert.ok(
          reconnects.every((r) => r.error.code === Code.Unavailable),
          `dropped connections count as UNAVAILABLE: ${reconnects.map((r) => `${Code[r.error.code]} ${r.error.rawMessage}`).join("; ")}`,
        );
        stop.abort();
        await watch.done;
        assert.equal(watch.failure(), undefined);
      } finally {
        stop.abort();
        held.open();
        writer.close();
        watcherBus.close();
        await server.stop();
        data.remove();
      }
    });
  }

  test("the inbox reopens after a restart too, and delivers what was sent meanwhile", async () => {
    const data = tempDir();
    let server = await startServer({ dataDir: data.path });
    const port = server.port;
    const bus = connect(server.address);
    const stop = new AbortController();
    const reconnects: ReconnectInfo[] = [];
    try {
      await bus.registerAgent(ORCH);
      await bus.registerAgent("opencode://backend");
      const received: string[] = [];
      const consumer = (async () => {
        for await (const delivery of bus.inbox("opencode://backend", {
          signal: stop.signal,
          retry: { initialDelayMs: 50, maxDelayMs: 500, maxAttempts: 40 },
          onReconnect: (info) => reconnects.push(info),
        })) {
          received.push(`${delivery.messageId}#${delivery.attempt}`);
        }
      })();
      await bus.send({ messageId: "before", sender: ORCH, recipient: "opencode://backend", messageType: "task_request" });
      await within(
        10_000,
        (async () => {
          while ((await bus.getMessage("before")).state !== MessageState.ACKED) await new Promise((r) => setTimeout(r, 20));
        })(),
        "first delivery acked",
      );
      await server.kill();
      server = await startServer({ dataDir: data.path, port });
      await bus.send({ messageId: "after", sender: ORCH, recipient: "opencode://backend", messageType: "task_request" });
      await within(
        10_000,
        (async () => {
          while (!received.includes("after#1")) await new Promise((r) => setTimeout(r, 20));
        })(),
        "delivery after the restart",
      );
      assert.deepEqual(received, ["before#1", "after#1"]);
      assert.ok(reconnects.length >= 1);
      stop.abort();
      await consumer;
    } finally {
      stop.abort();
      bus.close();
      await server.stop();
      data.remove();
    }
  });

  test("close() ends open watches and inboxes quietly and refuses later calls", async () => {
    const server = await startServer();
    const bus = connect(server.address);
    try {
      await produce(bus, "sess_closing");
      await bus.registerAgent("opencode://closing");
      let reconnects = 0;
      const watch = collect(bus.watchSessions({ afterSequence: 0, onReconnect: () => reconnects++ }));
      const inbox = bus.inbox("opencode://closing", { onReconnect: () => reconnects++ }).next();
      await watch.until(5, "history");
      bus.close();
      await within(5000, watch.done, "the watch ends");
      assert.equal(watch.failure(), undefined);
      assert.equal((await within(5000, inbox, "the inbox ends")).done, true);
      assert.equal(reconnects, 0);
      await rejectsWithCode(bus.getSession("sess_closing"), Code.Canceled, /closed/);
    } finally {
      await server.stop();
    }
  });

  test("gives up at once on a non-retryable code (OUT_OF_RANGE)", async () => {
    const server = await startServer();
    const bus = connect(server.address);
    try {
      await produce(bus, "sess_only");
      let reconnects = 0;
      const watch = bus.watchSessions({ afterSequence: 99, onReconnect: () => reconnects++ });
      await rejectsWithCode(watch.next(), Code.OutOfRange, /after_sequence/);
      assert.equal(reconnects, 0);
      await rejectsWithCode(bus.watchSessions({ afterSequence: -1 }).next(), Code.InvalidArgument);
      await rejectsWithCode(
        bus.watchSessions({ eventTypes: ["session_exploded" as never] }).next(),
        Code.InvalidArgument,
        /event_types/,
      );
    } finally {
      bus.close();
      await server.stop();
    }
  });

  test("gives up with UNAVAILABLE after maxAttempts when the server stays down", async () => {
    const server = await startServer();
    const bus = connect(server.address);
    try {
      await produce(bus, "sess_gone");
      const reconnects: ReconnectInfo[] = [];
      const watch = collect(
        bus.watchSessions({
          afterSequence: 0,
          retry: { maxAttempts: 4, initialDelayMs: 20, maxDelayMs: 80 },
          onReconnect: (info) => reconnects.push(info),
        }),
      );
      await watch.until(5, "history");
      await server.stop();
      await within(10_000, watch.done, "the watch gives up");
      const failure = watch.failure();
      assert.ok(failure instanceof Error);
      assert.equal(Code[(failure as unknown as { code: Code }).code], "Unavailable");
      assert.deepEqual(
        reconnects.map((r) => r.attempt),
        [1, 2, 3],
        "three retries after the first failure, then the fourth failure is final",
      );
      assert.ok(reconnects.every((r) => r.delayMs <= 80));
    } finally {
      bus.close();
      await server.stop();
    }
  });

  test("with retry: false the first dropped connection fails the watch", async () => {
    const server = await startServer();
    const bus = connect(server.address);
    try {
      await produce(bus, "sess_once");
      const watch = collect(bus.watchSessions({ afterSequence: 0, retry: false }));
      await watch.until(5, "history");
      await server.stop();
      await within(10_000, watch.done, "the watch fails");
      assert.equal(Code[(watch.failure() as { code: Code }).code], "Unavailable");
    } finally {
      bus.close();
      await server.stop();
    }
  });
});
