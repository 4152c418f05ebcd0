// A thin, idiomatic layer over the generated agentbus stubs: one client for
// the three services, plain JSON in and out, short enum names, and
// async iterators for the inbox and for session events.

import { create, isMessage, type JsonObject, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createClient,
  type CallOptions,
  type Client,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { timestampFromDate, type Value } from "@bufbuild/protobuf/wkt";

import type { Agent, AgentDescriptorSchema } from "./gen/agentbus/v1/agent_pb.js";
import { AgentService, type AgentToken } from "./gen/agentbus/v1/agent_service_pb.js";
import {
  DeliveryMode,
  MessageSchema,
  type AgentRef,
  type Message,
  type MessageState,
  type MessageStatus,
} from "./gen/agentbus/v1/message_pb.js";
import {
  MessageService,
  type AckResult,
  type PublishMessagesRequestSchema,
  type SendResult as MessageResult,
} from "./gen/agentbus/v1/message_service_pb.js";
import type { Aggregation, ExecutiveSummary, Session, SessionEvent } from "./gen/agentbus/v1/session_pb.js";
import { SessionService } from "./gen/agentbus/v1/session_service_pb.js";
import {
  fromValue,
  invalidArgument,
  messageTypeName,
  toAggregationStrategy,
  toBackoff,
  toContextUpdateMode,
  toDate,
  toDeliveryMode,
  toDuration,
  toMessageType,
  toPriority,
  toSessionEventType,
  toSessionState,
  toValue,
  type AggregationStrategyLike,
  type BackoffLike,
  type ContextUpdateModeLike,
  type DeliveryModeLike,
  type DurationLike,
  type MessageTypeLike,
  type MessageTypeName,
  type PriorityLike,
  type SessionEventTypeLike,
  type SessionStateLike,
} from "./convert.js";
import { resilientStream, type ReconnectInfo, type RetryOptions } from "./retry.js";

/** Metadata key the server reads the API key from. */
export const API_KEY_HEADER = "x-agent-api-key";

/** Adds `x-agent-api-key: KEY` to every call. */
export function apiKeyInterceptor(apiKey: string): Interceptor {
  return (next) => async (request) => {
    request.header.set(API_KEY_HEADER, apiKey);
    return next(request);
  };
}

/** Adds `authorization: Bearer TOKEN` to every call. */
export function tokenInterceptor(token: string): Interceptor {
  return (next) => async (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}

export interface AgentBusClientOptions {
  /** The bus's API key (admin), sent as `x-agent-api-key` on every call. */
  apiKey?: string | undefined;
  /**
   * An agent token (`abt_…`, from `issueAgentToken`), sent as
   * `authorization: Bearer TOKEN` on every call: the calls act as that agent.
   * Give `apiKey` or `token`, not both.
   */
  token?: string | undefined;
  /** Applied after the API-key or token interceptor. */
  interceptors?: Interceptor[] | undefined;
  /** Timeout of every call without its own `timeoutMs` (streams included). Default: none. */
  defaultTimeoutMs?: number | undefined;
  /**
   * HTTP/2 PING interval that detects a dead connection under open streams.
   * Default 30000; 0 disables pings.
   */
  pingIntervalMs?: number | undefined;
  /**
   * TLS (https:// addresses): PEM of the CA to trust instead of Node's
   * default roots, and for mutual TLS the client certificate and its key.
   * Strings or Buffers, e.g. `fs.readFileSync("ca.pem")`.
   */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer } | undefined;
}

/** `"host:port"` (h2c) or a URL: `http://host:port`, `https://host:port`. */
export function normalizeAddress(address: string): string {
  const trimmed = address.trim();
  if (trimmed === "") throw invalidArgument("address: empty; expected host:port or http://host:port");
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) ? trimmed.replace(/\/+$/, "") : `http://${trimmed}`;
}

// ---------------------------------------------------------------- inputs

/** An agent id such as `"opencode://backend"`, or a full reference. */
export type AgentRefLike = string | { agentId: string; framework?: string; sessionId?: string };

export type AgentDescriptorInit = MessageInitShape<typeof AgentDescriptorSchema>;

export interface RoutingInput {
  /** Dead-letter if not acknowledged within this ("300s", or milliseconds). */
  timeout?: DurationLike;
  retryPolicy?: { maxRetries?: number; backoff?: BackoffLike };
  fallbackAgents?: string[];
  deliveryMode?: DeliveryModeLike;
}

/** A message to send, with plain-JSON payload and metadata. */
export interface SendInput {
  /** Optional; the server makes `msg_<uuid v7>`. Re-sending the same id is idempotent. */
  messageId?: string;
  timestamp?: Date;
  sender: AgentRefLike;
  recipient: AgentRefLike;
  /** Shortcut for `sender.sessionId`: the session the message belongs to. */
  sessionId?: string;
  messageType: MessageTypeLike;
  /** Default (unspecified) is medium. */
  priority?: PriorityLike;
  /** Any JSON value. */
  payload?: JsonValue;
  metadata?: JsonObject;
  inReplyTo?: string;
  taskId?: string;
  routing?: RoutingInput;
}

/** A reply: sender, recipient, session, in_reply_to and task id come from the original. */
export type ReplyInput = Omit<SendInput, "sender" | "recipient" | "inReplyTo"> &
  Partial<Pick<SendInput, "sender" | "recipient">>;

export interface SendResult {
  messageId: string;
  state: MessageState;
  /** True once the message is durably stored. */
  accepted: boolean;
  /** SYNC delivery only: the reply (see `request`). */
  reply?: Message;
}

/**
 * What became of one message of `sendMessages` or `publish` (the generated
 * `SendResult`): `accepted` with `messageId` and `state`, or the gRPC `code`,
 * its name (`codeName`, e.g. "NOT_FOUND") and the `error` that `send` would
 * have thrown for that message alone.
 */
export type { MessageResult };

export interface ParticipantInput {
  agentId: string;
  framework?: string;
  /** Default `participant`. */
  role?: string;
  capabilities?: string[];
  metadata?: JsonObject;
}

export interface WorkflowStepInput {
  name: string;
  description?: string;
  requiredAgents?: string[];
  optionalAgents?: string[];
  dependencies?: string[];
  outputs?: string[];
  estimatedDuration?: DurationLike;
}

export interface CreateSessionInput {
  /** Optional; default `sess_<uuid v7>`. */
  sessionId?: string;
  /** Joins first, with role `orchestrator`. */
  orchestrator: string;
  /** Agent ids or full specs. */
  participants?: (string | ParticipantInput)[];
  /** Step names or full definitions; the first becomes current. */
  steps?: (string | WorkflowStepInput)[];
  sharedContext?: JsonObject;
}

export interface WorkflowInput {
  /** Empty or omitted: no step is current. */
  currentStep?: string;
  completedSteps?: string[];
  pendingSteps?: string[];
}

/** Options of every session mutation. */
export interface MutationOptions extends CallOptions {
  /** Apply only if the session is at this version (else ABORTED, nothing changed). */
  expectedVersion?: number | bigint;
}

/** Which task results `aggregateResults` combines, and how. */
export interface AggregateResultsInput {
  /** These tasks; else the tasks of `step`; else every task of the session. */
  taskIds?: string[];
  step?: string;
  /**
   * "consensus" (default): the most frequent successful result;
   * "specialist_priority": the `specialist` agent's result;
   * "confidence_weighted": the confidence-weighted mean of numeric results;
   * "manual": no result, pick one with `resolveAggregation`.
   */
  strategy?: AggregationStrategyLike;
  /** The agent whose result "specialist_priority" prefers. */
  specialist?: string;
  /** Fail with FAILED_PRECONDITION while a selected task is still running (else it is listed in `missingTaskIds`). */
  requireComplete?: boolean;
}

/** What `aggregateResults` and `resolveAggregation` return. */
export interface AggregationResult {
  /** `result` (use `jsonValue(aggregation.result)`), `confidence`, `conflicts`, `candidates`, ... */
  aggregation: Aggregation;
  /** The session after the change. */
  session: Session;
}

/** What `getSessionSummary` returns. */
export interface SessionSummary {
  summary: ExecutiveSummary;
  /** The same summary, as Markdown for a person to read. */
  markdown: string;
}

export interface IssueAgentTokenInput {
  /** How long the token is valid ("24h", or milliseconds); omitted: until revoked. */
  ttl?: DurationLike;
  /** What the token is for, shown by `listAgentTokens` (at most 256 characters). */
  description?: string;
}

export interface IssuedAgentToken {
  /** `abt_` and 64 hex digits; the bus returns it only this once. */
  token: string;
  tokenId: string;
  /** Undefined when the token does not expire. */
  expiresAt: Date | undefined;
}

export interface ListAgentsFilter {
  framework?: string;
  capability?: string;
  online?: boolean;
  pageSize?: number;
  pageToken?: string;
}

export interface ListSessionsFilter {
  states?: SessionStateLike[];
  /** Only sessions this agent has joined. */
  participant?: string;
  pageSize?: number;
  pageToken?: string;
}

export interface InboxOptions {
  /**
   * Prefetch: at most this many deliveries wait for their ack at once; the
   * server sends the next one when one is acknowledged. 0 (default): no limit.
   */
  maxInFlight?: number;
  /**
   * `true` (default): a delivery is acknowledged when the loop asks for the
   * next one, i.e. after the loop body for it has finished without throwing
   * or breaking. A delivery whose body throws or breaks out of the loop is
   * not acknowledged (call `delivery.ack()` first if you want it to be) and
   * is delivered again after the server's ack deadline.
   * `false`: call `delivery.ack()` yourself.
   * An automatic ack that fails (e.g. FAILED_PRECONDITION: the message was
   * dead-lettered meanwhile) rejects the loop with its error.
   */
  autoAck?: boolean;
  /** Stop the iterator (it then ends without an error). */
  signal?: AbortSignal;
  /** Reopen the inbox after a dropped connection; `false` to fail instead. */
  retry?: RetryOptions | false;
  /** Called before each reconnection attempt. */
  onReconnect?: (info: ReconnectInfo) => void;
  /** Called each time the server has opened the inbox stream (first time and after every reconnect). */
  onConnected?: () => void;
}

export interface WatchOptions {
  /**
   * Replay stored events with a larger sequence first (0: the whole history),
   * then follow live ones. Omitted: live events only.
   */
  afterSequence?: number | bigint;
  /** Only these sessions. */
  sessionIds?: string[];
  /** Only these event types, e.g. `["session_created", "task_delegated"]`. */
  eventTypes?: SessionEventTypeLike[];
  /** Stop the iterator (it then ends without an error). */
  signal?: AbortSignal;
  /** Reconnect policy; `false` to fail on the first dropped connection. */
  retry?: RetryOptions | false;
  /** Called before each reconnection attempt. */
  onReconnect?: (info: ReconnectInfo) => void;
  /**
   * Called each time the server has accepted the watch (first time and after
   * every reconnect). From then on every new event reaches this watch.
   */
  onConnected?: () => void;
}

// ---------------------------------------------------------------- deliveries

/** One message taken from an inbox. */
export class InboxDelivery {
  /** The message as sent (payload still a google.protobuf.Value). */
  readonly message: Message;
  /** The payload as plain JSON. */
  readonly payload: JsonValue;
  /** 1 for the first delivery to this agent. */
  readonly attempt: number;
  /** Acknowledge before this or the message is delivered again. */
  readonly ackDeadline: Date | undefined;
  readonly #client: AgentBusClient;
  readonly #agentId: string;
  #ack: Promise<MessageState> | undefined;

  constructor(client: AgentBusClient, agentId: string, message: Message, attempt: number, ackDeadline?: Date) {
    this.#client = client;
    this.#agentId = agentId;
    this.message = message;
    this.payload = fromValue(message.payload);
    this.attempt = attempt;
    this.ackDeadline = ackDeadline;
  }

  get messageId(): string {
    return this.message.messageId;
  }
  get messageType(): MessageTypeName {
    return messageTypeName(this.message.messageType);
  }
  get sender(): string {
    return this.message.sender?.agentId ?? "";
  }
  /** The session the sender put the message in, or "". */
  get sessionId(): string {
    return this.message.sender?.sessionId ?? "";
  }
  get metadata(): JsonObject {
    return this.message.metadata ?? {};
  }
  get acked(): boolean {
    return this.#ack !== undefined;
  }

  /** Acknowledges the delivery; later calls return the first call's result. */
  ack(options?: CallOptions): Promise<MessageState> {
    if (this.#ack === undefined) {
      const pending = this.#client.ack(this.#agentId, this.message.messageId, options);
      this.#ack = pending;
      // A failed ack may be tried again.
      pending.catch(() => {
        if (this.#ack === pending) this.#ack = undefined;
      });
    }
    return this.#ack;
  }

  /** Sends a reply (in_reply_to this message, same session and task). */
  reply(input: ReplyInput, options?: CallOptions): Promise<SendResult> {
    return this.#client.reply(this.message, input, options);
  }
}

// ---------------------------------------------------------------- client

/**
 * Client for one agentbus server. Every failing call rejects with a
 * `ConnectError` whose `code` is the gRPC status code (`Code.NotFound`,
 * `Code.AlreadyExists`, ...); invalid arguments caught on the client side are
 * `ConnectError`s with `Code.InvalidArgument` as well.
 */
export class AgentBusClient {
  /** The generated clients, for anything the layer does not cover. */
  readonly agents: Client<typeof AgentService>;
  readonly messages: Client<typeof MessageService>;
  readonly sessions: Client<typeof SessionService>;
  readonly baseUrl: string;
  readonly transport: Transport;
  readonly #sessionManager: Http2SessionManager;
  readonly #closed = new AbortController();

  constructor(address: string, options: AgentBusClientOptions = {}) {
    this.baseUrl = normalizeAddress(address);
    const ping = options.pingIntervalMs ?? 30_000;
    const tls = options.tls;
    if (tls !== undefined && !this.baseUrl.startsWith("https://")) {
      throw invalidArgument("tls: needs an https:// address");
    }
    if ((tls?.cert === undefined) !== (tls?.key === undefined)) {
      throw invalidArgument("tls: cert and key go together");
    }
    if (options.apiKey !== undefined && options.token !== undefined) {
      throw invalidArgument("give either apiKey (the admin key) or token (an agent token), not both");
    }
    this.#sessionManager = new Http2SessionManager(
      this.baseUrl,
      ping > 0 ? { pingIntervalMs: ping } : {},
      tls !== undefined ? { ...tls } : undefined,
    );
    const closed = this.#closed.signal;
    const refuseWhenClosed: Interceptor = (next) => async (request) => {
      if (closed.aborted) throw new ConnectError("the client is closed", Code.Canceled);
      return next(request);
    };
    const interceptors = [
      refuseWhenClosed,
      ...(options.apiKey !== undefined ? [apiKeyInterceptor(options.apiKey)] : []),
      ...(options.token !== undefined ? [tokenInterceptor(options.token)] : []),
      ...(options.interceptors ?? []),
    ];
    this.transport = createGrpcTransport({
      baseUrl: this.baseUrl,
      sessionManager: this.#sessionManager,
      interceptors,
      ...(options.defaultTimeoutMs !== undefined ? { defaultTimeoutMs: options.defaultTimeoutMs } : {}),
    });
    this.agents = createClient(AgentService, this.transport);
    this.messages = createClient(MessageService, this.transport);
    this.sessions = createClient(SessionService, this.transport);
  }

  /**
   * Closes the HTTP/2 connection. Open inbox and watch iterators end (without
   * an error); pending and later calls fail with CANCELED.
   */
  close(): void {
    this.#closed.abort();
    this.#sessionManager.abort();
  }

  /** The caller's signal combined with close(). */
  #streamSignal(signal: AbortSignal | undefined): AbortSignal {
    return signal === undefined ? this.#closed.signal : AbortSignal.any([signal, this.#closed.signal]);
  }

  // ------------------------------------------------------------ agents

  /**
   * Registers an agent (an id alone, or a full descriptor). Fails with
   * ALREADY_EXISTS when it is registered, unless `update` is set.
   */
  async registerAgent(
    agent: string | AgentDescriptorInit,
    options: CallOptions & { update?: boolean } = {},
  ): Promise<{ agent: Agent; created: boolean }> {
    const { update = false, ...call } = options;
    const descriptor = typeof agent === "string" ? { agentId: agent } : agent;
    const res = await this.agents.registerAgent({ agent: descriptor, update }, call);
    return { agent: required(res.agent, "agent"), created: res.created };
  }

  /** Removes an agent; returns how many undelivered messages were dead-lettered. */
  async unregisterAgent(agentId: string, options?: CallOptions): Promise<{ deadLettered: number }> {
    const res = await this.agents.unregisterAgent({ agentId }, options);
    return { deadLettered: res.deadLettered };
  }

  async getAgent(agentId: string, options?: CallOptions): Promise<Agent> {
    const res = await this.agents.getAgent({ agentId }, options);
    return required(res.agent, "agent");
  }

  /** One page of agents, ordered by id. */
  async listAgents(
    filter: ListAgentsFilter = {},
    options?: CallOptions,
  ): Promise<{ agents: Agent[]; nextPageToken: string }> {
    const res = await this.agents.listAgents(
      {
        framework: filter.framework ?? "",
        capability: filter.capability ?? "",
        ...(filter.online !== undefined ? { online: filter.online } : {}),
        pageSize: filter.pageSize ?? 0,
        pageToken: filter.pageToken ?? "",
      },
      options,
    );
    return { agents: res.agents, nextPageToken: res.nextPageToken };
  }

  /** Every matching agent, page after page. */
  async *allAgents(filter: Omit<ListAgentsFilter, "pageToken"> = {}, options?: CallOptions): AsyncGenerator<Agent> {
    let pageToken = "";
    do {
      const page = await this.listAgents({ ...filter, pageToken }, options);
      yield* page.agents;
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }

  // ------------------------------------------------------------ agent tokens (admin only)

  /**
   * Issues a token that authenticates its holder as `agentId` (which need not
   * be registered yet); pass it as the `token` option of a client.
   */
  async issueAgentToken(
    agentId: string,
    input: IssueAgentTokenInput = {},
    options?: CallOptions,
  ): Promise<IssuedAgentToken> {
    const res = await this.agents.issueAgentToken(
      {
        agentId,
        ...(input.ttl !== undefined ? { ttl: toDuration(input.ttl, "ttl") } : {}),
        description: input.description ?? "",
      },
      options,
    );
    return { token: res.token, tokenId: res.tokenId, expiresAt: toDate(res.expiresAt) };
  }

  /** The tokens of an agent, oldest first: metadata only, never the token itself. */
  async listAgentTokens(agentId: string, options?: CallOptions): Promise<AgentToken[]> {
    const res = await this.agents.listAgentTokens({ agentId }, options);
    return res.tokens;
  }

  /**
   * Revokes a token at once: its next call fails with UNAUTHENTICATED and its
   * open streams end with UNAUTHENTICATED. With `agentId`, the token must
   * belong to that agent (NOT_FOUND otherwise).
   */
  async revokeAgentToken(tokenId: string, options: CallOptions & { agentId?: string } = {}): Promise<void> {
    const { agentId = "", ...call } = options;
    await this.agents.revokeAgentToken({ tokenId, agentId }, call);
  }

  // ------------------------------------------------------------ messages

  /** Sends a message and returns once it is stored (ASYNC delivery unless `routing.deliveryMode` says otherwise). */
  async send(input: SendInput, options?: CallOptions): Promise<SendResult> {
    const res = await this.messages.sendMessage({ message: buildMessage(input) }, options);
    return {
      messageId: res.messageId,
      state: res.state,
      accepted: res.accepted,
      ...(res.reply !== undefined ? { reply: res.reply } : {}),
    };
  }

  /**
   * Sends with SYNC delivery and resolves with the reply (the first message
   * whose `inReplyTo` is this one's id). Rejects with DEADLINE_EXCEEDED when no
   * reply arrives within `options.timeoutMs` or the routing timeout; the
   * request then ends EXPIRED. Set `timeoutMs`: without it the server waits up
   * to the routing timeout (default 300s). Any message in reply counts, a
   * STATUS_UPDATE included: the server ends the wait with the first one.
   */
  async request(input: SendInput, options?: CallOptions): Promise<Message> {
    const message = buildMessage({ ...input, routing: { ...input.routing, deliveryMode: DeliveryMode.SYNC } });
    const res = await this.messages.sendMessage({ message }, options);
    if (res.reply === undefined) {
      throw new ConnectError(`SYNC send of ${res.messageId} returned no reply`, Code.Internal);
    }
    return res.reply;
  }

  /**
   * Replies to `to`: from its recipient to its sender, in the sender's
   * session, with `inReplyTo` and `taskId` taken from it.
   */
  reply(to: Message, input: ReplyInput, options?: CallOptions): Promise<SendResult> {
    const original = required(to.sender, "message.sender");
    const sessionId = input.sessionId ?? (original.sessionId || undefined);
    const taskId = input.taskId ?? (to.taskId || undefined);
    return this.send(
      {
        ...input,
        sender: input.sender ?? agentRefOf(required(to.recipient, "message.recipient")),
        recipient: input.recipient ?? agentRefOf(original),
        inReplyTo: to.messageId,
        ...(sessionId !== undefined ? { sessionId } : {}),
        ...(taskId !== undefined ? { taskId } : {}),
      },
      options,
    );
  }

  /** Acknowledges a delivery. Acking again is harmless (returns ACKED or ANSWERED). */
  async ack(agentId: string, messageId: string, options?: CallOptions): Promise<MessageState> {
    const res = await this.messages.ackMessage({ agentId, messageId }, options);
    return res.state;
  }

  /**
   * Acknowledges up to 1000 messages of one agent in one call and one commit.
   * One result per id, in order: `code` 0 (`codeName` "OK") and the `state`,
   * or the gRPC code, its name (`codeName`, e.g. "NOT_FOUND") and the `error`
   * that `ack` would have thrown for that id alone.
   */
  async ackMany(agentId: string, messageIds: string[], options?: CallOptions): Promise<AckResult[]> {
    const res = await this.messages.ackMessages({ agentId, messageIds }, options);
    return res.results;
  }

  /**
   * Sends 1 to 1000 messages (`SendInput`s or built `Message`s) in one call;
   * the server writes them together, sharing commits. One `MessageResult`
   * per message, in order; one refused message leaves the others sent. SYNC
   * delivery is refused per message. No message or more than 1000 rejects
   * with INVALID_ARGUMENT.
   */
  async sendMessages(inputs: Array<SendInput | Message>, options?: CallOptions): Promise<MessageResult[]> {
    const res = await this.messages.sendMessages({ messages: inputs.map(messageOf) }, options);
    return res.results;
  }

  /**
   * Streams messages (from an iterable or async iterable, even an endless
   * one) over one PublishMessages call and yields one `MessageResult` per
   * message, in order, each once its message is durably stored (or refused,
   * as in `sendMessages`). The server keeps a bounded window of messages in
   * flight and stops reading `inputs` while it is full. Ends when `inputs`
   * is exhausted and every result is in; a failure of the stream itself
   * throws (UNAVAILABLE when the server shuts down). Breaking out of the
   * loop cancels the call; messages already sent may still be stored.
   */
  async *publish(
    inputs: Iterable<SendInput | Message> | AsyncIterable<SendInput | Message>,
    options?: CallOptions,
  ): AsyncGenerator<MessageResult, void, undefined> {
    async function* requests(): AsyncGenerator<MessageInitShape<typeof PublishMessagesRequestSchema>> {
      for await (const input of inputs) yield { message: messageOf(input) };
    }
    for await (const res of this.messages.publishMessages(requests(), options)) {
      yield required(res.result, "result");
    }
  }

  /** Delivery bookkeeping of a message. */
  async getMessage(messageId: string, options?: CallOptions): Promise<MessageStatus> {
    const res = await this.messages.getMessage({ messageId }, options);
    return required(res.status, "status");
  }

  /**
   * Opens an agent's inbox: yields deliveries (queued first, then live),
   * skips heartbeats, and acknowledges as `options.autoAck` says. After a
   * dropped connection the inbox is reopened; deliveries that were not
   * acknowledged come again (delivery is at least once: use `attempt` and
   * `messageId` to spot repeats).
   */
  inbox(agentId: string, options: InboxOptions = {}): AsyncGenerator<InboxDelivery, void, undefined> {
    return this.#inbox(agentId, options);
  }

  async *#inbox(agentId: string, options: InboxOptions): AsyncGenerator<InboxDelivery, void, undefined> {
    const autoAck = options.autoAck ?? true;
    const onHeader = options.onConnected && (() => options.onConnected?.());
    const stream = resilientStream(
      (signal) => this.messages.receiveMessages({ agentId, maxInFlight: options.maxInFlight ?? 0 }, { signal, ...(onHeader ? { onHeader } : {}) }),
      {
      ...(options.retry !== undefined ? { retry: options.retry } : {}),
      signal: this.#streamSignal(options.signal),
      ...(options.onReconnect !== undefined ? { onReconnect: options.onReconnect } : {}),
      },
    );
    for await (const item of stream) {
      if (item.kind.case !== "delivery") continue;
      const { message, attempt, ackDeadline } = item.kind.value;
      if (message === undefined) continue;
      const delivery = new InboxDelivery(this, agentId, message, attempt, toDate(ackDeadline));
      yield delivery;
      // Reached only when the consumer asks for the next delivery.
      if (autoAck && !delivery.acked) await delivery.ack();
    }
  }

  // ------------------------------------------------------------ sessions

  async createSession(input: CreateSessionInput, options?: CallOptions): Promise<Session> {
    const res = await this.sessions.createSession(
      {
        sessionId: input.sessionId ?? "",
        orchestrator: input.orchestrator,
        participants: (input.participants ?? []).map(participantSpec),
        steps: (input.steps ?? []).map(workflowStep),
        ...(input.sharedContext !== undefined ? { sharedContext: input.sharedContext } : {}),
      },
      options,
    );
    return required(res.session, "session");
  }

  async getSession(sessionId: string, options?: CallOptions): Promise<Session> {
    const res = await this.sessions.getSession({ sessionId }, options);
    return required(res.session, "session");
  }

  /** One page of sessions, oldest first. */
  async listSessions(
    filter: ListSessionsFilter = {},
    options?: CallOptions,
  ): Promise<{ sessions: Session[]; nextPageToken: string }> {
    const res = await this.sessions.listSessions(
      {
        states: (filter.states ?? []).map(toSessionState),
        participant: filter.participant ?? "",
        pageSize: filter.pageSize ?? 0,
        pageToken: filter.pageToken ?? "",
      },
      options,
    );
    return { sessions: res.sessions, nextPageToken: res.nextPageToken };
  }

  /** Every matching session, page after page. */
  async *allSessions(
    filter: Omit<ListSessionsFilter, "pageToken"> = {},
    options?: CallOptions,
  ): AsyncGenerator<Session> {
    let pageToken = "";
    do {
      const page = await this.listSessions({ ...filter, pageToken }, options);
      yield* page.sessions;
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }

  async addParticipant(
    sessionId: string,
    participant: string | ParticipantInput,
    options: MutationOptions = {},
  ): Promise<Session> {
    const [expected, call] = splitMutation(options);
    const res = await this.sessions.addParticipant(
      { sessionId, participant: participantSpec(participant), ...expected },
      call,
    );
    return required(res.session, "session");
  }

  /** The participant keeps its record with status `left`. */
  async removeParticipant(sessionId: string, agentId: string, options: MutationOptions = {}): Promise<Session> {
    const [expected, call] = splitMutation(options);
    const res = await this.sessions.removeParticipant({ sessionId, agentId, ...expected }, call);
    return required(res.session, "session");
  }

  /** Sets the workflow position explicitly. */
  async updateWorkflow(sessionId: string, workflow: WorkflowInput, options: MutationOptions = {}): Promise<Session> {
    const [expected, call] = splitMutation(options);
    const res = await this.sessions.updateWorkflow(
      {
        sessionId,
        currentStep: workflow.currentStep ?? "",
        completedSteps: workflow.completedSteps ?? [],
        pendingSteps: workflow.pendingSteps ?? [],
        ...expected,
      },
      call,
    );
    return required(res.session, "session");
  }

  /** Completes the current step and moves to `nextStep` (default: the first pending step). */
  async advanceWorkflow(
    sessionId: string,
    options: MutationOptions & { nextStep?: string } = {},
  ): Promise<Session> {
    const { nextStep = "", ...rest } = options;
    const [expected, call] = splitMutation(rest);
    const res = await this.sessions.advanceWorkflow({ sessionId, nextStep, ...expected }, call);
    return required(res.session, "session");
  }

  /**
   * Changes the shared context: `mode: "replace"` (default, the proto's
   * default) makes `context` the whole context; `"merge"` applies it as a JSON
   * merge patch (RFC 7386: nested objects merge, `null` deletes a key).
   */
  async updateSharedContext(
    sessionId: string,
    context: JsonObject,
    options: MutationOptions & { mode?: ContextUpdateModeLike } = {},
  ): Promise<Session> {
    const { mode = "replace", ...rest } = options;
    const [expected, call] = splitMutation(rest);
    const res = await this.sessions.updateSharedContext(
      { sessionId, context, mode: toContextUpdateMode(mode), ...expected },
      call,
    );
    return required(res.session, "session");
  }

  /** `updateSharedContext` with `mode: "merge"`. */
  mergeSharedContext(sessionId: string, patch: JsonObject, options: MutationOptions = {}): Promise<Session> {
    return this.updateSharedContext(sessionId, patch, { ...options, mode: "merge" });
  }

  async completeSession(
    sessionId: string,
    result: { summary?: string; artifacts?: string[] } = {},
    options: MutationOptions = {},
  ): Promise<Session> {
    const [expected, call] = splitMutation(options);
    const res = await this.sessions.completeSession(
      { sessionId, summary: result.summary ?? "", artifacts: result.artifacts ?? [], ...expected },
      call,
    );
    return required(res.session, "session");
  }

  /** Ends the session; every participant becomes `session_terminated`. `reason` is required. */
  async terminateSession(
    sessionId: string,
    why: { reason: string; details?: string },
    options: MutationOptions = {},
  ): Promise<Session> {
    const [expected, call] = splitMutation(options);
    const res = await this.sessions.terminateSession(
      { sessionId, reason: why.reason, details: why.details ?? "", ...expected },
      call,
    );
    return required(res.session, "session");
  }

  // ------------------------------------------------------------ results and summaries

  /**
   * Combines the results of the session's tasks into one answer, with the
   * conflicts among them (orchestrator only); the aggregation is stored in the
   * session. A task's result, confidence and approach come from the
   * `{ result, confidence, approach }` payload of its TASK_RESPONSE.
   */
  async aggregateResults(
    sessionId: string,
    input: AggregateResultsInput = {},
    options: MutationOptions = {},
  ): Promise<AggregationResult> {
    const [expected, call] = splitMutation(options);
    const res = await this.sessions.aggregateResults(
      {
        sessionId,
        taskIds: input.taskIds ?? [],
        step: input.step ?? "",
        strategy: toAggregationStrategy(input.strategy ?? "consensus"),
        specialist: input.specialist ?? "",
        requireComplete: input.requireComplete ?? false,
        ...expected,
      },
      call,
    );
    return { aggregation: required(res.aggregation, "aggregation"), session: required(res.session, "session") };
  }

  /**
   * Records the orchestrator's pick for an aggregation ("manual", or to
   * overrule another strategy): the result of `chosenTaskId`, one of its candidates.
   */
  async resolveAggregation(
    sessionId: string,
    aggregationId: string,
    pick: { chosenTaskId: string; note?: string },
    options: MutationOptions = {},
  ): Promise<AggregationResult> {
    const [expected, call] = splitMutation(options);
    const res = await this.sessions.resolveAggregation(
      { sessionId, aggregationId, chosenTaskId: pick.chosenTaskId, note: pick.note ?? "", ...expected },
      call,
    );
    return { aggregation: required(res.aggregation, "aggregation"), session: required(res.session, "session") };
  }

  /**
   * The executive summary of an ended session, and the same as Markdown.
   * Rejects with FAILED_PRECONDITION while the session is active; an ended
   * session also carries it as `executiveSummary`.
   */
  async getSessionSummary(sessionId: string, options?: CallOptions): Promise<SessionSummary> {
    const res = await this.sessions.getSessionSummary({ sessionId }, options);
    return { summary: required(res.summary, "summary"), markdown: res.markdown };
  }

  /**
   * Streams session events, skipping heartbeats. When the connection drops
   * (server restart, network), the stream is reopened with backoff from the
   * last sequence received, so no event is missed or repeated; it gives up
   * with the last error on a non-retryable code (UNAUTHENTICATED,
   * OUT_OF_RANGE, ...) or after `retry.maxAttempts` consecutive failures.
   *
   * Without `afterSequence`, the watch starts with live events; the server's
   * first heartbeat says where, so a drop even before the first event
   * resumes without a gap. Pass `afterSequence` (e.g. the `sequence` of the
   * last event you processed) to replay stored events first.
   */
  watchSessions(options: WatchOptions = {}): AsyncGenerator<SessionEvent, void, undefined> {
    return this.#watch(options);
  }

  async *#watch(options: WatchOptions): AsyncGenerator<SessionEvent, void, undefined> {
    let last: bigint | undefined = options.afterSequence === undefined ? undefined : BigInt(options.afterSequence);
    if (last !== undefined && last < 0n) throw invalidArgument(`afterSequence: ${last} is negative`);
    const sessionIds = options.sessionIds ?? [];
    const eventTypes = (options.eventTypes ?? []).map(toSessionEventType);
    const onHeader = options.onConnected && (() => options.onConnected?.());
    const stream = resilientStream(
      (signal) =>
        this.sessions.watchSessions(
          { sessionIds, eventTypes, ...(last !== undefined ? { afterSequence: last } : {}) },
          { signal, ...(onHeader ? { onHeader } : {}) },
        ),
      {
        ...(options.retry !== undefined ? { retry: options.retry } : {}),
        signal: this.#streamSignal(options.signal),
        ...(options.onReconnect !== undefined ? { onReconnect: options.onReconnect } : {}),
      },
    );
    for await (const item of stream) {
      if (item.kind.case === "heartbeat") {
        // Every event up to the heartbeat's sequence was sent before it or
        // filtered out: a safe resume point. A live-only watch starts with
        // one, so it is gap-free from the start.
        const beat = item.kind.value.lastSequence;
        if (last === undefined || beat > last) last = beat;
        continue;
      }
      if (item.kind.case !== "event") continue;
      const event = item.kind.value;
      // The server promises no duplicates; this keeps the promise across reconnects too.
      if (last !== undefined && event.sequence <= last) continue;
      last = event.sequence;
      yield event;
    }
  }
}

/** Connects to `address` (`host:port` or `http://host:port`). Connections are opened lazily. */
export function connect(address: string, options?: AgentBusClientOptions): AgentBusClient {
  return new AgentBusClient(address, options);
}

/** The payload of any message (delivery, reply) as plain JSON. */
export function jsonPayload(message: Message): JsonValue {
  return fromValue(message.payload);
}

/** A google.protobuf.Value field (a task's or an aggregation's `result`) as plain JSON; unset is `null`. */
export function jsonValue(value: Value | undefined): JsonValue {
  return fromValue(value);
}

// ---------------------------------------------------------------- helpers

function required<T>(value: T | undefined, field: string): T {
  if (value === undefined) throw new ConnectError(`the server's response has no ${field}`, Code.Internal);
  return value;
}

function agentRef(ref: AgentRefLike, field: string, sessionId?: string) {
  const base = typeof ref === "string" ? { agentId: ref } : ref;
  if (base.agentId === undefined || base.agentId === "") throw invalidArgument(`${field}.agent_id: required`);
  return {
    agentId: base.agentId,
    framework: base.framework ?? "",
    sessionId: sessionId ?? base.sessionId ?? "",
  };
}

function agentRefOf(ref: AgentRef): AgentRefLike {
  return { agentId: ref.agentId, framework: ref.framework };
}

function messageOf(input: SendInput | Message): Message {
  return isMessage(input, MessageSchema) ? input : buildMessage(input);
}

function buildMessage(input: SendInput): Message {
  const routing = input.routing;
  return create(MessageSchema, {
    messageId: input.messageId ?? "",
    ...(input.timestamp !== undefined
      ? { timestamp: timestampFromDate(input.timestamp) }
      : {}),
    sender: agentRef(input.sender, "sender", input.sessionId),
    recipient: agentRef(input.recipient, "recipient"),
    messageType: toMessageType(input.messageType),
    ...(input.priority !== undefined ? { priority: toPriority(input.priority) } : {}),
    ...(input.payload !== undefined ? { payload: toValue(input.payload) } : {}),
    ...(input.metadata !== undefined ? { metadata: input.metadata } : {}),
    inReplyTo: input.inReplyTo ?? "",
    taskId: input.taskId ?? "",
    ...(routing !== undefined
      ? {
          routing: {
            ...(routing.timeout !== undefined ? { timeout: toDuration(routing.timeout, "routing.timeout") } : {}),
            ...(routing.retryPolicy !== undefined
              ? {
                  retryPolicy: {
                    maxRetries: routing.retryPolicy.maxRetries ?? 0,
                    ...(routing.retryPolicy.backoff !== undefined
                      ? { backoff: toBackoff(routing.retryPolicy.backoff) }
                      : {}),
                  },
                }
              : {}),
            fallbackAgents: routing.fallbackAgents ?? [],
            ...(routing.deliveryMode !== undefined ? { deliveryMode: toDeliveryMode(routing.deliveryMode) } : {}),
          },
        }
      : {}),
  });
}

function participantSpec(p: string | ParticipantInput) {
  const spec = typeof p === "string" ? { agentId: p } : p;
  return {
    agentId: spec.agentId,
    framework: spec.framework ?? "",
    role: spec.role ?? "",
    capabilities: spec.capabilities ?? [],
    ...(spec.metadata !== undefined ? { metadata: spec.metadata } : {}),
  };
}

function workflowStep(s: string | WorkflowStepInput) {
  const step = typeof s === "string" ? { name: s } : s;
  return {
    name: step.name,
    description: step.description ?? "",
    requiredAgents: step.requiredAgents ?? [],
    optionalAgents: step.optionalAgents ?? [],
    dependencies: step.dependencies ?? [],
    outputs: step.outputs ?? [],
    ...(step.estimatedDuration !== undefined
      ? { estimatedDuration: toDuration(step.estimatedDuration, `steps[${step.name}].estimated_duration`) }
      : {}),
  };
}

function splitMutation(options: MutationOptions): [{ expectedVersion?: bigint }, CallOptions] {
  const { expectedVersion, ...call } = options;
  return [expectedVersion === undefined ? {} : { expectedVersion: BigInt(expectedVersion) }, call];
}
