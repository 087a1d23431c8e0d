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
 * list() is retried too: a listing that fails part-way is started again and
 * keys already yielded are skipped, so each key is yielded once.
 *
 * When the retries run out, the last error is thrown again as a GlideFsError
 * with the same code and ` (gave up after N attempts)` appended.
 */
import { GlideFsError } from './errors.js';
import type { ObjectStore } from './object-store.js';
import { mulberry32 } from '../lib/prng.js';

export interface RetryOptions {
  /** Retries after the first attempt (default 5). 0 disables retrying. */
  retries?: number;
  /** Delay before the first retry, ms (default 50). */
  baseDelayMs?: number;
  /** Upper bound of one delay, ms (default 2000). */
  maxDelayMs?: number;
  /** Seed of the jitter PRNG; default Math.random. */
  seed?: number;
  /** Called before each retry (logging). */
  onRetry?: (info: { op: string; key: string; attempt: number; delayMs: number; error: unknown }) => void;
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
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly rand: () => number;
  private readonly onRetry: RetryOptions['onRetry'];
  private counters: RetryStats = { retries: 0, failures: 0 };

  constructor(inner: ObjectStore, opts: RetryOptions = {}) {
    this.inner = inner;
    this.description = inner.description;
    this.retries = opts.retries ?? 5;
    this.baseDelayMs = opts.baseDelayMs ?? 50;
    this.maxDelayMs = opts.maxDelayMs ?? 2000;
    this.rand = opts.seed === undefined ? Math.random : mulberry32(opts.seed);
    this.onRetry = opts.onRetry;
  }

  put(key: string, data: Uint8Array): Promise<void> {
    return this.run('put', key, () => this.inner.put(key, data));
  }

  get(key: string): Promise<Buffer | null> {
    return this.run('get', key, () => this.inner.get(key));
  }

  delete(key: string): Promise<void> {
    return this.run('delete', key, () => this.inner.delete(key));
  }

  async *list(prefix: string): AsyncIterable<string> {
    const seen = new Set<string>();
    for (let attempt = 0; ; attempt++) {
      try {
        for await (const k of this.inner.list(prefix)) {
          if (seen.has(k)) continue;
          seen.add(k);
          yield k;
        }
        return;
      } catch (err) {
        await this.afterFailure('list', prefix, attempt, err);
      }
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

  private async run<T>(op: string, key: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        await this.afterFailure(op, key, attempt, err);
      }
    }
  }

  /** Waits before the next attempt, or throws when there is none. */
  private async afterFailure(op: string, key: string, attempt: number, err: unknown): Promise<void> {
    if (!isRetryable(err)) {
      this.counters.failures++;
      throw err;
    }
    if (attempt >= this.retries) {
      this.counters.failures++;
      throw gaveUp(err, attempt + 1);
    }
    const d = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** attempt);
    const delayMs = Math.round(d / 2 + this.rand() * (d / 2));
    this.counters.retries++;
    this.onRetry?.({ op, key, attempt: attempt + 1, delayMs, error: err });
    if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
  }
}

function gaveUp(err: unknown, attempts: number): GlideFsError {
  if (err instanceof GlideFsError) {
    const msg = err.message.startsWith(`${err.code}: `) ? err.message.slice(err.code.length + 2) : err.message;
    return new GlideFsError(err.code, `${msg} (gave up after ${attempts} attempts)`, {
      cause: err,
      retryable: err.retryable,
      injected: err.injected,
      status: err.status,
    });
  }
  const e = err as { code?: string; message?: string };
  return GlideFsError.STORE(`${e?.code ?? 'error'}: ${e?.message ?? String(err)} (gave up after ${attempts} attempts)`, {
    cause: err,
    retryable: true,
  });
}
