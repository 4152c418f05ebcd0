import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  AgentBusClient,
  Code,
  InboxDelivery,
  MessageState,
  MessageType,
  Priority,
  connect,
  jsonPayload,
  messageStateName,
} from "../src/index.js";
import { rejectsWithCode, sleep, startServer, within, type RunningServer } from "./server.js";

const ORCH = "claude-code://orchestrator";

describe("messages", () => {
  let server: RunningServer;
  let bus: AgentBusClient;
  let n = 0;
  /** A registered agent of its own for each test, so inboxes don't mix. */
  const freshAgent = async (name: string) => {
    const id = `opencode://${name}-${++n}`;
    await bus.registerAgent(id);
    return id;
  };

  before(async () => {
    // A short ack timeout so redelivery can be observed quickly.
    server = await startServer({ args: ["--ack-timeout", "1s", "--retry-backoff", "100ms", "--heartbeat-interval", "1s"] });
    bus = connect(server.address);
    await bus.registerAgent(ORCH);
  });
  after(async () => {
    bus.close();
    await server.stop();
  });

  test("sends with short enum names and JSON payload; the inbox yields it and auto-acks", async () => {
    const worker = await freshAgent("backend");
    const sent = await bus.send({
      messageId: "task_impl_backend",
      sender: { agentId: ORCH, framework: "claude-code" },
      recipient: worker,
      messageType: "task_request",
      priority: "high",
      payload: { task_type: "implementation", context: { component: "notification-service", n: 3, ok: true } },
      metadata: { origin: "test" },
      routing: { timeout: "300s", retryPolicy: { maxRetries: 1, backoff: "linear" }, deliveryMode: "async" },
    });
    assert.equal(sent.accepted, true);
    assert.equal(sent.messageId, "task_impl_backend");
    assert.equal(messageStateName(sent.state), "queued");

    let seen: InboxDelivery | undefined;
    for await (const delivery of bus.inbox(worker)) {
      seen = delivery;
      assert.equal(delivery.messageId, "task_impl_backend");
      assert.equal(delivery.messageType, "task_request");
      assert.equal(delivery.message.priority, Priority.HIGH);
      assert.equal(delivery.sender, ORCH);
      assert.equal(delivery.attempt, 1);
      assert.ok(delivery.ackDeadline instanceof Date);
      assert.deepEqual(delivery.payload, {
        task_type: "implementation",
        context: { component: "notification-service", n: 3, ok: true },
      });
      assert.deepEqual(delivery.metadata, { origin: "test" });
      assert.equal(delivery.acked, false, "not acked while the body runs");
      const status = await bus.getMessage(delivery.messageId);
      assert.equal(status.state, MessageState.DELIVERED);
      break; // a break does not auto-ack ...
    }
    assert.ok(seen);
    // ... so it is not acked (the server may already have put it back in the queue).
    const afterBreak = (await bus.getMessage("task_impl_backend")).state;
    assert.ok(
      afterBreak === MessageState.DELIVERED || afterBreak === MessageState.QUEUED,
      `not acked after a break: ${messageStateName(afterBreak)}`,
    );

    // Reopened, the inbox redelivers it; this time the loop goes on, which acks it.
    const stop = new AbortController();
    let count = 0;
    const consumer = (async () => {
      for await (const delivery of bus.inbox(worker, { signal: stop.signal })) {
        assert.equal(delivery.messageId, "task_impl_backend");
        count += 1;
      }
    })();
    await within(
      8000,
      (async () => {
        while ((await bus.getMessage("task_impl_backend")).state !== MessageState.ACKED) await sleep(50);
      })(),
      "auto-ack after the loop body",
    );
    stop.abort();
    await consumer;
    assert.equal(count, 1);
    const status = await bus.getMessage("task_impl_backend");
    assert.ok(status.attempts >= 2, `redelivered (attempts ${status.attempts})`);
    assert.equal(status.currentRecipient, worker);
  });

  test("with autoAck off, deliveries are acked explicitly; unacked ones come back with a higher attempt", async () => {
    const worker = await freshAgent("manual");
    const { messageId } = await bus.send({ sender: ORCH, recipient: worker, messageType: MessageType.STATUS_UPDATE });
    const attempts: number[] = [];
    for await (const delivery of bus.inbox(worker, { autoAck: false })) {
      attempts.push(delivery.attempt);
      assert.equal(delivery.messageId, messageId);
      if (delivery.attempt === 2) {
        assert.equal(await delivery.ack(), MessageState.ACKED);
        assert.equal(await delivery.ack(), MessageState.ACKED, "a second ack() is harmless");
        break;
      }
      // Not acked: the server redelivers after its 1 s ack timeout.
    }
    assert.deepEqual(attempts, [1, 2]);
    assert.equal((await bus.getMessage(messageId)).state, MessageState.ACKED);
    // Acking an acked message again is allowed.
    assert.equal(await bus.ack(worker, messageId), MessageState.ACKED);
  });

  test("ackMany acknowledges several messages with one result each", async () => {
    const worker = await freshAgent("many");
    const sent: string[] = [];
    for (let i = 0; i < 2; i++) {
      sent.push((await bus.send({ sender: ORCH, recipient: worker, messageType: MessageType.STATUS_UPDATE })).messageId);
    }
    const results = await bus.ackMany(worker, [...sent, "never-sent-many"]);
    assert.deepEqual(
      results.map((r) => [r.messageId, r.code, r.codeName, r.state]),
      [
        [sent[0], 0, "OK", MessageState.ACKED],
        [sent[1], 0, "OK", MessageState.ACKED],
        ["never-sent-many", Code.NotFound, "NOT_FOUND", MessageState.UNSPECIFIED],
      ],
    );
    assert.match(results[2]?.error ?? "", /never-sent-many/);
    assert.equal((await bus.getMessage(sent[1] ?? "")).state, MessageState.ACKED);
    await rejectsWithCode(bus.ackMany(worker, []), Code.InvalidArgument, /message_ids/);
  });

  test("sendMessages answers one result per message, in order", async () => {
    const worker = await freshAgent("batch");
    const results = await bus.sendMessages([
      { messageId: "batch-1", sender: ORCH, recipient: worker, messageType: "task_request", payload: { n: 1 } },
      { messageId: "batch-2", sender: ORCH, recipient: "codex://nobody", messageType: "task_request" },
      { messageId: "batch-3", sender: ORCH, recipient: worker, messageType: "task_request", routing: { deliveryMode: "sync" } },
      { messageId: "batch-1", sender: ORCH, recipient: worker, messageType: "task_request", payload: { n: 1 } },
    ]);
    assert.deepEqual(
      results.map((r) => [r.messageId, r.accepted, r.codeName]),
      [
        ["batch-1", true, "OK"],
        ["batch-2", false, "NOT_FOUND"],
        ["batch-3", false, "INVALID_ARGUMENT"],
        ["batch-1", true, "OK"],
      ],
    );
    assert.equal(results[0]?.state, MessageState.QUEUED);
    assert.equal(results[1]?.code, Code.NotFound);
    assert.match(results[2]?.error ?? "", /SYNC/);
    await rejectsWithCode(bus.sendMessages([]), Code.InvalidArgument, /messages/);
  });

  test("publish streams results in request order", async () => {
    const worker = await freshAgent("publish");
    async function* inputs() {
      for (let i = 0; i < 200; i++) {
        const recipient = i % 40 === 9 ? "codex://nobody" : worker;
        yield { messageId: `pub-${i}`, sender: ORCH, recipient, messageType: "task_request" as const, payload: { i } };
      }
    }
    const results = [];
    for await (const result of bus.publish(inputs())) results.push(result);
    assert.deepEqual(
      results.map((r) => r.messageId),
      Array.from({ length: 200 }, (_, i) => `pub-${i}`),
    );
    assert.deepEqual(
      results.flatMap((r, i) => (r.accepted ? [] : [i])),
      [9, 49, 89, 129, 169],
    );
    assert.equal((await bus.getMessage("pub-199")).state, MessageState.QUEUED);
    const none = [];
    for await (const result of bus.publish([])) none.push(result);
    assert.equal(none.length, 0);
  });

  test("maxInFlight holds deliveries back until the previous one is acked", async () => {
    const worker = await freshAgent("prefetch");
    const ids: string[] = [];
    for (const payload of [1, 2]) {
      ids.push((await bus.send({ sender: ORCH, recipient: worker, messageType: "task_request", payload })).messageId);
    }
    const seen: unknown[] = [];
    for await (const delivery of bus.inbox(worker, { autoAck: false, maxInFlight: 1 })) {
      seen.push(delivery.payload);
      if (seen.length === 1) {
        // The server has not even claimed the second one yet.
        await new Promise((r) => setTimeout(r, 300));
        assert.equal((await bus.getMessage(ids[1]!)).attempts, 0, "the second was sent before the first was acked");
      }
      await delivery.ack();
      if (seen.length === 2) break;
    }
    assert.deepEqual(seen, [1, 2]);
  });

  test("queued messages come out highest priority first", async () => {
    const worker = await freshAgent("prio");
    for (const priority of ["low", "critical", "medium", "high"] as const) {
      await bus.send({ sender: ORCH, recipient: worker, messageType: "task_request", priority, payload: priority });
    }
    const order: unknown[] = [];
    for await (const delivery of bus.inbox(worker)) {
      order.push(delivery.payload);
      if (order.length === 4) {
        await delivery.ack();
        break;
      }
    }
    assert.deepEqual(order, ["critical", "high", "medium", "low"]);
  });

  test("request() blocks for the reply sent with reply()", async () => {
    const worker = await freshAgent("sync");
    const stop = new AbortController();
    const responder = (async () => {
      for await (const delivery of bus.inbox(worker, { signal: stop.signal })) {
        const question = delivery.payload as { q: string };
        await delivery.reply({ messageType: "task_response", payload: { answer: question.q.toUpperCase() } });
      }
    })();
    try {
      const reply = await bus.request(
        { sender: ORCH, recipient: worker, messageType: "task_request", payload: { q: "ping" }, taskId: "task-42" },
        { timeoutMs: 10_000 },
      );
      assert.equal(reply.messageType, MessageType.TASK_RESPONSE);
      assert.deepEqual(jsonPayload(reply), { answer: "PING" });
      assert.equal(reply.sender?.agentId, worker);
      assert.equal(reply.recipient?.agentId, ORCH);
      assert.equal(reply.taskId, "task-42");
      const status = await bus.getMessage(reply.inReplyTo);
      assert.equal(messageStateName(status.state), "answered");

      // send() with deliveryMode "sync" waits as well and hands back the reply.
      const viaSend = await bus.send(
        { sender: ORCH, recipient: worker, messageType: "task_request", payload: { q: "pong" }, routing: { deliveryMode: "sync" } },
        { timeoutMs: 10_000 },
      );
      assert.equal(messageStateName(viaSend.state), "answered");
      assert.deepEqual(viaSend.reply && jsonPayload(viaSend.reply), { answer: "PONG" });
    } finally {
      stop.abort();
      await responder;
    }
  });

  test("request() without a reply fails with DEADLINE_EXCEEDED and the request expires", async () => {
    const worker = await freshAgent("silent");
    const error = await rejectsWithCode(
      bus.request({ messageId: "unanswered", sender: ORCH, recipient: worker, messageType: "task_request" }, { timeoutMs: 600 }),
      Code.DeadlineExceeded,
    );
    assert.ok(error.rawMessage.length > 0);
    await within(
      5000,
      (async () => {
        while ((await bus.getMessage("unanswered")).state !== MessageState.EXPIRED) await sleep(50);
      })(),
      "SYNC request expired",
    );
  });

  test("sending to an unregistered agent fails with NOT_FOUND", async () => {
    await rejectsWithCode(
      bus.send({ sender: ORCH, recipient: "ghost://nobody", messageType: "task_request" }),
      Code.NotFound,
      /ghost:\/\/nobody/,
    );
  });

  test("reusing a message id for a different message fails with ALREADY_EXISTS; the same one is idempotent", async () => {
    const worker = await freshAgent("idem");
    const message = { messageId: "idem-1", sender: ORCH, recipient: worker, messageType: "task_request" as const, payload: 1 };
    const first = await bus.send(message);
    const again = await bus.send(message);
    assert.equal(again.messageId, first.messageId);
    await rejectsWithCode(bus.send({ ...message, payload: 2 }), Code.AlreadyExists, /idem-1/);
  });

  test("bad input fails with INVALID_ARGUMENT, from the server or before sending", async () => {
    const worker = await freshAgent("invalid");
    await rejectsWithCode(
      bus.send({ messageId: "has space", sender: ORCH, recipient: worker, messageType: "task_request" }),
      Code.InvalidArgument,
      /message_id/,
    );
    await rejectsWithCode(
      bus.send({ sender: ORCH, recipient: "not-an-id", messageType: "task_request" }),
      Code.InvalidArgument,
      /recipient/,
    );
    // Caught by the client: unknown enum names and durations.
    await rejectsWithCode(
      bus.send({ sender: ORCH, recipient: worker, messageType: "task_requets" as never }),
      Code.InvalidArgument,
      /message_type/,
    );
    await rejectsWithCode(
      bus.send({ sender: ORCH, recipient: worker, messageType: "task_request", routing: { timeout: "soon" } }),
      Code.InvalidArgument,
      /routing.timeout/,
    );
  });

  test("unknown messages and foreign acks fail with NOT_FOUND and FAILED_PRECONDITION", async () => {
    const worker = await freshAgent("acks");
    await rejectsWithCode(bus.getMessage("no-such-message"), Code.NotFound);
    await rejectsWithCode(bus.ack(worker, "no-such-message"), Code.NotFound);
    const { messageId } = await bus.send({ sender: ORCH, recipient: worker, messageType: "task_request" });
    await rejectsWithCode(bus.ack(ORCH, messageId), Code.FailedPrecondition, /addressed to/);
    for await (const delivery of bus.inbox(worker, { autoAck: false })) {
      await rejectsWithCode(bus.ack(ORCH, delivery.messageId), Code.FailedPrecondition, /addressed to/);
      await delivery.ack();
      break;
    }
    // Its recipient may ack a message by id even before receiving it here
    // (e.g. after a server restart forgot the delivery).
    const early = await bus.send({ sender: ORCH, recipient: worker, messageType: "task_request" });
    assert.equal(await bus.ack(worker, early.messageId), MessageState.ACKED);
  });

  test("opening the inbox of an unregistered agent fails with NOT_FOUND without retrying", async () => {
    let reconnects = 0;
    const inbox = bus.inbox("ghost://nobody", { onReconnect: () => reconnects++ });
    await rejectsWithCode(inbox.next(), Code.NotFound, /not registered/);
    assert.equal(reconnects, 0);
  });
});
