// Reconnecting server streams: reopen after a dropped connection with
// exponential backoff, give up on codes that a retry cannot fix.

import { Code, ConnectError } from "@connectrpc/connect";

export interface RetryOptions {
  /**
   * Consecutive failed attempts before giving up and throwing the last error.
   * The count starts again once a stream delivers anything. Default 10.
   */
  maxAttempts?: number;
  /** First backoff delay. Default 100 ms. */
  initialDelayMs?: number;
  /** Longest backoff delay. Default 5000 ms. */
  maxDelayMs?: number;
  /** Codes worth reconnecting on. Default: see {@link DEFAULT_RETRYABLE_CODES}. */
  retryableCodes?: readonly Code[];
}

/**
 * Codes on which a stream is reopened: the connection dropped or the server
 * went away (UNAVAILABLE; UNKNOWN and INTERNAL, which a broken HTTP/2 stream
 * can turn into; a CANCELED that the caller did not cause is treated as
 * UNAVAILABLE), or the server asked the caller to come back later (ABORTED,
 * RESOURCE_EXHAUSTED). Every other code, e.g. UNAUTHENTICATED,
 * INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE, is final.
 */
export const DEFAULT_RETRYABLE_CODES: readonly Code[] = [
  Code.Unavailable,
  Code.Unknown,
  Code.Internal,
  Code.Aborted,
  Code.ResourceExhausted,
];

/** Reported to `onReconnect` before each new attempt. */
export interface ReconnectInfo {
  /** 1 for the first retry after a failure. */
  attempt: number;
  delayMs: number;
  /** Why the previous stream ended. */
  error: ConnectError;
}

interface Resolved {
  maxAttempts: number;
  initialDelayMs: number;
  maxDelayMs: number;
  retryableCodes: ReadonlySet<Code>;
}

function resolve(options: RetryOptions | undefined): Resolved {
  return {
    maxAttempts: options?.maxAttempts ?? 10,
    initialDelayMs: options?.initialDelayMs ?? 100,
    maxDelayMs: options?.maxDelayMs ?? 5000,
    retryableCodes: new Set(options?.retryableCodes ?? DEFAULT_RETRYABLE_CODES),
  };
}

/** Delay before retry `attempt` (1-based): exponential, capped, with jitter in [50%, 100%]. */
export function backoffDelay(attempt: number, options?: RetryOptions): number {
  const r = resolve(options);
  const base = Math.min(r.maxDelayMs, r.initialDelayMs * 2 ** (attempt - 1));
  return Math.round(base / 2 + (Math.random() * base) / 2);
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolvePromise) => {
    if (signal?.aborted) return resolvePromise();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolvePromise();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

export interface ResilientStreamOptions {
  retry?: RetryOptions | false;
  signal?: AbortSignal;
  onReconnect?: (info: ReconnectInfo) => void;
}

/**
 * Yields the items of `open(signal)`, reopening it after a retryable failure.
 * `open` is called again for every attempt, so it can resume from whatever
 * the caller has seen so far. A stream that ends without an error is also
 * reopened (a watch or an inbox never ends by itself). Stops quietly when
 * `options.signal` aborts; throws the error when it is not retryable or the
 * attempts are used up.
 */
export async function* resilientStream<T>(
  open: (signal: AbortSignal) => AsyncIterable<T>,
  options: ResilientStreamOptions,
): AsyncGenerator<T, void, undefined> {
  const retry = options.retry === false ? undefined : resolve(options.retry);
  const outer = options.signal;
  let failures = 0;
  while (!outer?.aborted) {
    const attempt = new AbortController();
    const forward = () => attempt.abort(outer?.reason);
    outer?.addEventListener("abort", forward, { once: true });
    let error: ConnectError;
    try {
      for await (const item of open(attempt.signal)) {
        failures = 0;
        yield item;
      }
      if (retry === undefined) return;
      error = new ConnectError("the server ended the stream", Code.Unavailable);
    } catch (e) {
      if (outer?.aborted) return;
      error = ConnectError.from(e);
      // connect-node reports a connection that died under the stream (server
      // killed, socket reset) as CANCELED, the code of a caller's own abort.
      // Nobody aborted this attempt, so it is a dropped connection.
      if (error.code === Code.Canceled && !attempt.signal.aborted) {
        error = new ConnectError(`connection lost: ${error.rawMessage}`, Code.Unavailable, undefined, undefined, error);
      }
    } finally {
      outer?.removeEventListener("abort", forward);
      attempt.abort(); // closes the HTTP/2 stream when the consumer stops early
    }
    if (retry === undefined || !retry.retryableCodes.has(error.code)) throw error;
    failures += 1;
    if (failures >= retry.maxAttempts) throw error;
    const delayMs = backoffDelay(failures, options.retry || undefined);
    options.onReconnect?.({ attempt: failures, delayMs, error });
    await sleep(delayMs, outer);
  }
}
