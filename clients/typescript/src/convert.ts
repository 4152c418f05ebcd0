// Conversions between the plain values the client layer accepts (JSON,
// short enum names, "300s" durations) and the generated protobuf types.

import { Code, ConnectError } from "@connectrpc/connect";
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import type { DescEnum } from "@bufbuild/protobuf";
import {
  ValueSchema,
  durationFromMs,
  timestampDate,
  type Duration,
  type Timestamp,
  type Value,
} from "@bufbuild/protobuf/wkt";

import {
  Backoff,
  BackoffSchema,
  DeliveryMode,
  DeliveryModeSchema,
  MessageState,
  MessageStateSchema,
  MessageType,
  MessageTypeSchema,
  Priority,
  PrioritySchema,
} from "./gen/agentbus/v1/message_pb.js";
import {
  AggregationStrategy,
  AggregationStrategySchema,
  ConflictKindSchema,
  ParticipantStatusSchema,
  SessionEventType,
  SessionEventTypeSchema,
  SessionState,
  SessionStateSchema,
  TaskStateSchema,
} from "./gen/agentbus/v1/session_pb.js";
import { ContextUpdateMode, ContextUpdateModeSchema } from "./gen/agentbus/v1/session_service_pb.js";

/** Short, lower-case names of the enums, as the prototype's JSON wire used them. */
export type MessageTypeName = "task_request" | "task_response" | "status_update" | "error" | "heartbeat";
export type PriorityName = "low" | "medium" | "high" | "critical";
export type DeliveryModeName = "async" | "sync";
export type BackoffName = "linear" | "exponential";
export type ContextUpdateModeName = "replace" | "merge";
export type SessionStateName = "active" | "completed" | "terminated" | "expired";
export type SessionEventTypeName =
  | "session_created"
  | "participant_added"
  | "participant_removed"
  | "workflow_updated"
  | "shared_context_updated"
  | "session_completed"
  | "session_terminated"
  | "session_expired"
  | "task_delegated"
  | "task_updated"
  | "results_aggregated";
export type AggregationStrategyName = "consensus" | "specialist_priority" | "confidence_weighted" | "manual";
export type ConflictKindName = "result_disagreement" | "approach_difference";
export type MessageStateName =
  | "queued"
  | "delivered"
  | "acked"
  | "answered"
  | "dead_lettered"
  | "expired";

/**
 * Where an enum is accepted, the generated enum value and its short name both
 * work: `MessageType.TASK_REQUEST`, `"task_request"`. At run time upper case and
 * the full proto name (`"MESSAGE_TYPE_TASK_REQUEST"`) are accepted too.
 */
export type MessageTypeLike = MessageType | MessageTypeName;
export type PriorityLike = Priority | PriorityName;
export type DeliveryModeLike = DeliveryMode | DeliveryModeName;
export type BackoffLike = Backoff | BackoffName;
export type ContextUpdateModeLike = ContextUpdateMode | ContextUpdateModeName;
export type SessionStateLike = SessionState | SessionStateName;
export type SessionEventTypeLike = SessionEventType | SessionEventTypeName;
export type AggregationStrategyLike = AggregationStrategy | AggregationStrategyName;

/** Client-side validation failures are ConnectErrors too, like the server's. */
export function invalidArgument(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/** Parses an enum given as its number, its proto name or its short name. */
export function parseEnum(desc: DescEnum, value: number | string, field: string): number {
  if (typeof value === "number") {
    if (desc.value[value] === undefined) {
      throw invalidArgument(`${field}: ${value} is not a ${desc.name}`);
    }
    return value;
  }
  const wanted = value.trim().toUpperCase().replace(/-/g, "_");
  for (const v of desc.values) {
    if (v.number === 0) continue; // UNSPECIFIED is never a useful choice by name
    if (v.name === wanted || v.localName === wanted) return v.number;
  }
  const names = desc.values.filter((v) => v.number !== 0).map((v) => `"${v.localName.toLowerCase()}"`);
  throw invalidArgument(`${field}: "${value}" is not one of ${names.join(", ")}`);
}

/** The short lower-case name of an enum value, e.g. "task_request"; "unspecified" for 0. */
export function enumName(desc: DescEnum, value: number): string {
  const v = desc.value[value];
  return v === undefined ? String(value) : v.localName.toLowerCase();
}

export const messageTypeName = (v: MessageType) => enumName(MessageTypeSchema, v) as MessageTypeName;
export const priorityName = (v: Priority) => enumName(PrioritySchema, v) as PriorityName;
export const messageStateName = (v: MessageState) => enumName(MessageStateSchema, v) as MessageStateName;
export const sessionStateName = (v: SessionState) => enumName(SessionStateSchema, v) as SessionStateName;
export const sessionEventTypeName = (v: SessionEventType) =>
  enumName(SessionEventTypeSchema, v) as SessionEventTypeName;
export const participantStatusName = (v: number) => enumName(ParticipantStatusSchema, v);
export const taskStateName = (v: number) => enumName(TaskStateSchema, v);
export const aggregationStrategyName = (v: AggregationStrategy) =>
  enumName(AggregationStrategySchema, v) as AggregationStrategyName;
export const conflictKindName = (v: number) => enumName(ConflictKindSchema, v) as ConflictKindName;

export const toMessageType = (v: MessageTypeLike) => parseEnum(MessageTypeSchema, v, "message_type") as MessageType;
export const toPriority = (v: PriorityLike) => parseEnum(PrioritySchema, v, "priority") as Priority;
export const toDeliveryMode = (v: DeliveryModeLike) =>
  parseEnum(DeliveryModeSchema, v, "routing.delivery_mode") as DeliveryMode;
export const toBackoff = (v: BackoffLike) => parseEnum(BackoffSchema, v, "routing.retry_policy.backoff") as Backoff;
export const toContextUpdateMode = (v: ContextUpdateModeLike) =>
  parseEnum(ContextUpdateModeSchema, v, "mode") as ContextUpdateMode;
export const toSessionState = (v: SessionStateLike) => parseEnum(SessionStateSchema, v, "states") as SessionState;
export const toSessionEventType = (v: SessionEventTypeLike) =>
  parseEnum(SessionEventTypeSchema, v, "event_types") as SessionEventType;
export const toAggregationStrategy = (v: AggregationStrategyLike) =>
  parseEnum(AggregationStrategySchema, v, "strategy") as AggregationStrategy;

/** Milliseconds, or a string such as "300s", "1.5s", "250ms", "2m", "1h". */
export type DurationLike = number | string;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function toDurationMs(value: DurationLike, field: string): number {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0) throw invalidArgument(`${field}: ${value} is not a duration`);
    return value;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(value);
  if (!match) throw invalidArgument(`${field}: "${value}" is not a duration like "300s" or "250ms"`);
  return Number(match[1]) * UNIT_MS[match[2]!]!;
}

export function toDuration(value: DurationLike, field: string): Duration {
  return durationFromMs(toDurationMs(value, field));
}

/** Any JSON value into google.protobuf.Value. */
export function toValue(json: JsonValue): Value {
  return fromJson(ValueSchema, json);
}

/** google.protobuf.Value back into plain JSON; a missing value is `null`. */
export function fromValue(value: Value | undefined): JsonValue {
  return value === undefined ? null : toJson(ValueSchema, value);
}

export function toDate(ts: Timestamp | undefined): Date | undefined {
  return ts === undefined ? undefined : timestampDate(ts);
}
