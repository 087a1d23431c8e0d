/**
 * RetryStore: retries an inner store's failed requests with exponential
 * backoff and jitter, when trying again may help.
 *
 * Retryable (isRetryable): a GlideFsError marked `retryable` (5xx, throttling,
 * timeouts, connection resets, unreachable endpoint — see s3-store.ts), or a
 * raw error with code ECONNRESET/EPIPE/ETIMEDOUT/..., HTTP status >= 500 or
 * 429. Never retried: 4xx, access denied, missing bucket, bad keys, closed
 * stores, anything unknown.
 *
 * Attempt n (n = 1..retries) waits d/2 + rand*d/2 with d = min(maxDelayMs,
 * baseDelayMs * 2^(n-1)). With `seed` the jitter is reproducible.
 *
 * Two bounds, whichever comes first: `retries` (a count) and `timeoutMs` (time
 * since the operation's first attempt; no retry starts after it, and the last
 * delay is shortened so that one attempt is made right at the bound). With
 * `timeoutMs` and no `retries` the count is unbounded: a store that is down
 * for a few seconds (a MinIO restart, a refused connection) is ridden through.
 * openStore() (store-url.ts) gives every s3:// store a time bound,
 * DEFAULT_STORE_RETRY_TIMEOUT_MS unless told otherwise (`glidekv device mount
 * --store-retry-timeout`, `glidekv up --store-retry-timeout`).
 *
 * While an operation waits for a retry, `outage()` says so (since when, how
 * many operations, the last error): the device daemon publishes it, and
 * `glidekv status` shows it.
 *
 * list() is retried too: a listing that fails part-way is started again and
 * keys already yielded are skipped, so each key is yielded once.
 *
 * When the retries run out, the last error is thrown again as a GlideFsError
 * with the same code and ` (gave up after N attempts)` appended.
 */
import { GlideFsError } from './errors.js';
import type { ObjectHead, ObjectStore, TaggedObject } from './object-store.js';
import { mulberry32 } from '../lib/prng.js';

/** How long openStore's s3:// stores retry a failing request by default (ms). */
export const DEFAULT_STORE_RETRY_TIMEOUT_MS = 60_000;

export interface RetryOptions {
  /** Retries after the first attempt (default 5; unbounded when `timeoutMs` is set). 0 disables retrying. */
  retries?: number;
  /** Give up once this long (ms) has passed since an operation's first attempt. Default: no time bound. */
  timeoutMs?: number;
  /** Delay before the first retry, ms (default 50). */
  baseDelayMs?: number;
  /** Upper bound of one delay, ms (default 2000). */
  maxDelayMs?: number;
  /** Seed of the jitter PRNG; default Math.random. */
  seed?: number;
  /** Called before each retry (logging). */
  onRetry?: (info: { op: string; key: string; attempt: number; delayMs: number; error: unknown }) => void;
}

/** What the store is waiting for right now (see RetryStore.outage). */
export interface RetryOutage {
  /** When the oldest operation now waiting for a retry first failed (ms since the epoch). */
  sinceMs: number;
  /** Operations now waiting for a retry. */
  operations: number;
  /** Retries made so far by those operations. */
  retries: number;
  /** The most recent error, first line. */
  lastError: string;
  /** When the oldest of them gives up (ms since the epoch), if there is a time bound. */
  giveUpAtMs?: number;
}

export interface RetryStats {
  /** Retry attempts made (not counting first attempts). */
  retries: number;
  /** Operations that failed in the end (retries exhausted or not retryable). */
  failures: number;
}

const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'ECONNABORTED',
  'ECONNREFUSED',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
]);

/** True when trying the request again may succeed. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof GlideFsError) return err.retryable;
  const e = err as { code?: string; name?: string; $metadata?: { httpStatusCode?: number } } | null;
  if (!e || typeof e !== 'object') return false;
  if (e.code && RETRYABLE_CODES.has(e.code)) return true;
  if (e.name === 'TimeoutError') return true;
  const status = e.$metadata?.httpStatusCode;
  return status !== undefined && (status >= 500 || status === 429);
}

export class RetryStore implements ObjectStore {
  readonly description: string;
  readonly inner: ObjectStore;
  private readonly retries: number;
  /** The time bound of one operation's retries (ms), or undefined. */
  readonly timeoutMs: number | undefined;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly rand: () => number;
  private readonly onRetry: RetryOptions['onRetry'];
  private counters: RetryStats = { retries: 0, failures: 0 };
  /** Operations between a retryable failure and their end, by operation id. */
  private readonly waiting = new Map<number, { sinceMs: number; retries: number }>();
  private lastError = '';
  private nextOpId = 1;

  constructor(inner: ObjectStore, opts: RetryOptions = {}) {
    this.inner = inner;
    this.description = inner.description;
    this.timeoutMs = opts.timeoutMs;
    if (this.timeoutMs !== undefined && !(this.timeoutMs >= 0)) throw new TypeError(`timeoutMs must be >= 0, got ${opts.timeoutMs}`);
    this.retries = opts.retries ?? (this.timeoutMs === undefined ? 5 : Infinity);
    this.baseDelayMs = opts.baseDelayMs ?? 50;
    this.maxDelayMs = opts.maxDelayMs ?? 2000;
    this.rand = opts.seed === undefined ? Math.random : mulberry32(opts.seed);
    this.onRetry = opts.onRetry;
  }

  put(key: string, data: Uint8Array): Promise<void> {
    return this.run('put', key, () => this.inner.put(key, data));
  }

  /**
   * The inner store's conditional create, retried on transport errors only
   * (isRetryable: resets, timeouts, 5xx, a refused connection, E_CONFLICT).
   * `false` is an answer (the key exists), never retried. Beware: when an
   * attempt did create the object but its answer was lost (a timeout, a
   * reset), the retry finds the key taken and resolves false for the
   * caller's own object. A caller that must tell "mine" from "someone
   * else's" reads the key back and compares the bytes (volume-log.ts does).
   */
  putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    return this.run('putIfAbsent', key, () => this.inner.putIfAbsent(key, body));
  }

  /** The inner store's conditional replace, retried like putIfAbsent: null is an answer; a retried replace whose first attempt landed answers null (read back to tell). */
  putIfMatch(key: string, body: Uint8Array, etag: string): Promise<string | null> {
    return this.run('putIfMatch', key, () => this.inner.putIfMatch(key, body, etag));
  }

  getTagged(key: string): Promise<TaggedObject | null> {
    return this.run('get', key, () => this.inner.getTagged(key));
  }

  head(key: string): Promise<ObjectHead | null> {
    return this.run('head', key, () => this.inner.head(key));
  }

  get(key: string): Promise<Buffer | null> {
    return this.run('get', key, () => this.inner.get(key));
  }

  delete(key: string): Promise<void> {
    return this.run('delete', key, () => this.inner.delete(key));
  }

  async *list(prefix: string): AsyncIterable<string> {
    const seen = new Set<string>();
    const id = this.nextOpId++;
    const startMs = Date.now();
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          for await (const k of this.inner.list(prefix)) {
            if (seen.has(k)) continue;
            seen.add(k);
            if (attempt > 0) this.waiting.delete(id); // a page came through: no longer waiting
            yield k;
          }
          return;
        } catch (err) {
          await this.afterFailure('list', prefix, attempt, err, id, startMs);
        }
      }
    } finally {
      this.waiting.delete(id);
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  stats(): RetryStats {
    return { ...this.counters };
  }

  resetStats(): void {
    this.counters = { retries: 0, failures: 0 };
  }

  /**
   * The operations now waiting to retry a failed request (the store looks
   * down), or undefined when none is. Cheap; meant to be polled.
   */
  outage(): RetryOutage | undefined {
    if (this.waiting.size === 0) return undefined;
    let sinceMs = Infinity;
    let retries = 0;
    for (const w of this.waiting.values()) {
      sinceMs = Math.min(sinceMs, w.sinceMs);
      retries += w.retries;
    }
    return {
      sinceMs,
      operations: this.waiting.size,
      retries,
      lastError: this.lastError,
      ...(this.timeoutMs !== undefined ? { giveUpAtMs: sinceMs + this.timeoutMs } : {}),
    };
  }

  private async run<T>(op: string, key: string, fn: () => Promise<T>): Promise<T> {
    const id = this.nextOpId++;
    const startMs = Date.now();
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          return await fn();
        } catch (err) {
          await this.afterFailure(op, key, attempt, err, id, startMs);
        }
      }
    } finally {
      this.waiting.delete(id);
    }
  }

  /** Waits before the next attempt, or throws when there is none. */
  private async afterFailure(op: string, key: string, attempt: number, err: unknown, id: number, startMs: number): Promise<void> {
    if (!isRetryable(err)) {
      this.counters.failures++;
      throw err;
    }
    const elapsedMs = Date.now() - startMs;
    if (attempt >= this.retries || (this.timeoutMs !== undefined && elapsedMs >= this.timeoutMs)) {
      this.counters.failures++;
      throw gaveUp(err, attempt + 1, elapsedMs);
    }
    const d = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(attempt, 52));
    let delayMs = Math.round(d / 2 + this.rand() * (d / 2));
    // The last retry happens right at the time bound, not after it.
    if (this.timeoutMs !== undefined) delayMs = Math.max(0, Math.min(delayMs, startMs + this.timeoutMs - Date.now()));
    this.counters.retries++;
    const w = this.waiting.get(id) ?? { sinceMs: Date.now(), retries: 0 };
    w.retries++;
    this.waiting.set(id, w);
    this.lastError = firstLine(err);
    this.onRetry?.({ op, key, attempt: attempt + 1, delayMs, error: err });
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
  }
}

function firstLine(err: unknown): string {
  const e = err as { code?: string; message?: string } | null;
  const text = err instanceof Error ? err.message : `${e?.code ?? 'error'}: ${e?.message ?? String(err)}`;
  return text.split('\n')[0];
}

function gaveUp(err: unknown, attempts: number, elapsedMs: number): GlideFsError {
  const took = elapsedMs >= 1000 ? ` in ${(elapsedMs / 1000).toFixed(1)} s` : '';
  if (err instanceof GlideFsError) {
    const msg = err.message.startsWith(`${err.code}: `) ? err.message.slice(err.code.length + 2) : err.message;
    return new GlideFsError(err.code, `${msg} (gave up after ${attempts} attempts${took})`, {
      cause: err,
      retryable: err.retryable,
      injected: err.injected,
      status: err.status,
    });
  }
  const e = err as { code?: string; message?: string };
  return GlideFsError.STORE(`${e?.code ?? 'error'}: ${e?.message ?? String(err)} (gave up after ${attempts} attempts${took})`, {
    cause: err,
    retryable: true,
  });
}
