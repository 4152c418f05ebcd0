// Pure conversions; no server needed.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Code, MessageType, Priority, SessionEventType, backoffDelay, enumName, toDurationMs } from "../src/index.js";
import { MessageTypeSchema, PrioritySchema } from "../src/gen/agentbus/v1/message_pb.js";
import { fromValue, parseEnum, toValue } from "../src/convert.js";

const isInvalid = (e: { code?: Code }) => e.code === Code.InvalidArgument;

describe("conversions", () => {
  test("enums accept short names, proto names and numbers", () => {
    assert.equal(parseEnum(MessageTypeSchema, "task_request", "t"), MessageType.TASK_REQUEST);
    assert.equal(parseEnum(MessageTypeSchema, "TASK_RESPONSE", "t"), MessageType.TASK_RESPONSE);
    assert.equal(parseEnum(MessageTypeSchema, "MESSAGE_TYPE_STATUS_UPDATE", "t"), MessageType.STATUS_UPDATE);
    assert.equal(parseEnum(MessageTypeSchema, "status-update", "t"), MessageType.STATUS_UPDATE);
    assert.equal(parseEnum(PrioritySchema, Priority.CRITICAL, "p"), Priority.CRITICAL);
    assert.throws(() => parseEnum(PrioritySchema, "urgent", "priority"), isInvalid);
    assert.throws(() => parseEnum(PrioritySchema, "unspecified", "priority"), isInvalid);
    assert.throws(() => parseEnum(PrioritySchema, 42, "priority"), isInvalid);
    assert.equal(enumName(MessageTypeSchema, MessageType.TASK_REQUEST), "task_request");
  });

  test("durations: milliseconds or strings with a unit", () => {
    assert.equal(toDurationMs("300s", "d"), 300_000);
    assert.equal(toDurationMs("1.5s", "d"), 1500);
    assert.equal(toDurationMs("250ms", "d"), 250);
    assert.equal(toDurationMs("2m", "d"), 120_000);
    assert.equal(toDurationMs("1h", "d"), 3_600_000);
    assert.equal(toDurationMs(42, "d"), 42);
    assert.throws(() => toDurationMs("5 minutes", "d"), isInvalid);
    assert.throws(() => toDurationMs(-1, "d"), isInvalid);
  });

  test("JSON values survive the round trip through google.protobuf.Value", () => {
    for (const json of [null, true, 3.5, "x", [1, "two", null], { a: { b: [true] }, c: null }]) {
      assert.deepEqual(fromValue(toValue(json)), json);
    }
    assert.equal(fromValue(undefined), null);
  });

  test("backoff grows exponentially, capped, with jitter", () => {
    const options = { initialDelayMs: 100, maxDelayMs: 1000 };
    for (let i = 0; i < 20; i++) {
      const first = backoffDelay(1, options);
      assert.ok(first >= 50 && first <= 100, `first ${first}`);
      const third = backoffDelay(3, options);
      assert.ok(third >= 200 && third <= 400, `third ${third}`);
      const late = backoffDelay(30, options);
      assert.ok(late >= 500 && late <= 1000, `late ${late}`);
    }
    assert.equal(SessionEventType.TASK_DELEGATED, 9);
  });
});
