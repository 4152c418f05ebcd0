// @agentbus/client: generated agentbus.v1 types and service descriptors, plus
// a thin client layer (AgentBusClient) over them.

export {
  AgentBusClient,
  API_KEY_HEADER,
  InboxDelivery,
  apiKeyInterceptor,
  connect,
  jsonPayload,
  jsonValue,
  normalizeAddress,
  tokenInterceptor,
} from "./client.js";
export type {
  AggregateResultsInput,
  AggregationResult,
  AgentBusClientOptions,
  AgentDescriptorInit,
  AgentRefLike,
  CreateSessionInput,
  InboxOptions,
  IssueAgentTokenInput,
  IssuedAgentToken,
  ListAgentsFilter,
  ListSessionsFilter,
  MessageResult,
  MutationOptions,
  ParticipantInput,
  ReplyInput,
  RoutingInput,
  SendInput,
  SendResult,
  SessionSummary,
  WatchOptions,
  WorkflowInput,
  WorkflowStepInput,
} from "./client.js";
export {
  aggregationStrategyName,
  conflictKindName,
  enumName,
  messageStateName,
  messageTypeName,
  participantStatusName,
  priorityName,
  sessionEventTypeName,
  sessionStateName,
  taskStateName,
  toDurationMs,
} from "./convert.js";
export type {
  AggregationStrategyLike,
  AggregationStrategyName,
  BackoffLike,
  BackoffName,
  ConflictKindName,
  ContextUpdateModeLike,
  ContextUpdateModeName,
  DeliveryModeLike,
  DeliveryModeName,
  DurationLike,
  MessageStateName,
  MessageTypeLike,
  MessageTypeName,
  PriorityLike,
  PriorityName,
  SessionEventTypeLike,
  SessionEventTypeName,
  SessionStateLike,
  SessionStateName,
} from "./convert.js";
export { DEFAULT_RETRYABLE_CODES, backoffDelay } from "./retry.js";
export type { ReconnectInfo, RetryOptions } from "./retry.js";

// Errors: every failure is a ConnectError carrying the gRPC code.
export { Code, ConnectError } from "@connectrpc/connect";
export type { CallOptions, Interceptor, Transport } from "@connectrpc/connect";
export type { JsonObject, JsonValue } from "@bufbuild/protobuf";

// Generated code (protoc-gen-es): message types, their schemas, enums, services.
export * from "./gen/agentbus/v1/agent_pb.js";
export * from "./gen/agentbus/v1/agent_service_pb.js";
export * from "./gen/agentbus/v1/message_pb.js";
export * from "./gen/agentbus/v1/message_service_pb.js";
export * from "./gen/agentbus/v1/session_pb.js";
export * from "./gen/agentbus/v1/session_service_pb.js";
