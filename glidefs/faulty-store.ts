/**
 * FaultyStore: a wrapping layer that makes an inner store fail on purpose,
 * reproducibly, for tests of retries and of what survives a failing store.
 *
 * Every request draws from one seeded PRNG (mulberry32), in call order:
 * first latency (uniform in [latencyMsMin, latencyMsMax]), then a timeout
 * (probability timeoutProbability), then an error (putErrorProbability,
 * getErrorProbability, deleteErrorProbability; list uses getErrorProbability).
 * - An injected error is a GlideFsError E_STORE, status 503, retryable, with
 *   `injected: true`; its message names the seed and the request number so a
 *   failure can be replayed.
 * - An injected timeout waits timeoutMs, then throws E_STORE_TIMEOUT
 *   (retryable, injected). A timed-out put or putIfAbsent is carried out on
 *   the inner store half of the time first, as a real timeout may or may not
 *   have stored the object. putIfAbsent draws like put (putErrorProbability),
 *   head and getTagged like get (getErrorProbability), putIfMatch like put.
 * - `failAll` (a plain field, switchable at run time) fails every request.
 * Faults happen before the inner call, so a failed put/delete changed nothing
 * (except the timed-out puts above).
 */
import { GlideFsError } from './errors.js';
import type { ObjectHead, ObjectStore, TaggedObject } from './object-store.js';
import { mulberry32 } from '../lib/prng.js';

export interface FaultyStoreOptions {
  seed: number;
  putErrorProbability?: number;
  getErrorProbability?: number;
  deleteErrorProbability?: number;
  /** Probability of an injected timeout, per request. */
  timeoutProbability?: number;
  /** How long an injected timeout waits before failing, ms (default 20). */
  timeoutMs?: number;
  latencyMsMin?: number;
  latencyMsMax?: number;
  /** Fail every request (switchable later through the `failAll` field). */
  failAll?: boolean;
}

export interface FaultyStats {
  requests: number;
  injectedErrors: number;
  injectedTimeouts: number;
}

export class FaultyStore implements ObjectStore {
  readonly description: string;
  readonly inner: ObjectStore;
  readonly seed: number;
  /** Fail every request while true. */
  failAll: boolean;
  private readonly opts: Required<Omit<FaultyStoreOptions, 'failAll'>>;
  private readonly rand: () => number;
  private counters: FaultyStats = { requests: 0, injectedErrors: 0, injectedTimeouts: 0 };

  constructor(inner: ObjectStore, opts: FaultyStoreOptions) {
    this.inner = inner;
    this.description = `faulty(${inner.description}, seed ${opts.seed})`;
    this.seed = opts.seed;
    this.failAll = opts.failAll ?? false;
    this.opts = {
      seed: opts.seed,
      putErrorProbability: opts.putErrorProbability ?? 0,
      getErrorProbability: opts.getErrorProbability ?? 0,
      deleteErrorProbability: opts.deleteErrorProbability ?? 0,
      timeoutProbability: opts.timeoutProbability ?? 0,
      timeoutMs: opts.timeoutMs ?? 20,
      latencyMsMin: opts.latencyMsMin ?? 0,
      latencyMsMax: opts.latencyMsMax ?? opts.latencyMsMin ?? 0,
    };
    this.rand = mulberry32(opts.seed);
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    await this.fault('put', key, this.opts.putErrorProbability, () => this.inner.put(key, data));
    return this.inner.put(key, data);
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    await this.fault('putIfAbsent', key, this.opts.putErrorProbability, async () => {
      await this.inner.putIfAbsent(key, body);
    });
    return this.inner.putIfAbsent(key, body);
  }

  async putIfMatch(key: string, body: Uint8Array, etag: string): Promise<string | null> {
    await this.fault('putIfMatch', key, this.opts.putErrorProbability, async () => {
      await this.inner.putIfMatch(key, body, etag);
    });
    return this.inner.putIfMatch(key, body, etag);
  }

  async getTagged(key: string): Promise<TaggedObject | null> {
    await this.fault('get', key, this.opts.getErrorProbability);
    return this.inner.getTagged(key);
  }

  async head(key: string): Promise<ObjectHead | null> {
    await this.fault('head', key, this.opts.getErrorProbability);
    return this.inner.head(key);
  }

  async get(key: string): Promise<Buffer | null> {
    await this.fault('get', key, this.opts.getErrorProbability);
    return this.inner.get(key);
  }

  async delete(key: string): Promise<void> {
    await this.fault('delete', key, this.opts.deleteErrorProbability);
    return this.inner.delete(key);
  }

  async *list(prefix: string): AsyncIterable<string> {
    await this.fault('list', prefix, this.opts.getErrorProbability);
    yield* this.inner.list(prefix);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  stats(): FaultyStats {
    return { ...this.counters };
  }

  /** Draws this request's fate; throws an injected error or returns to let it through. */
  private async fault(op: string, key: string, errorProbability: number, onTimeout?: () => Promise<void>): Promise<void> {
    const n = ++this.counters.requests;
    const { latencyMsMin, latencyMsMax, timeoutProbability, timeoutMs } = this.opts;
    const latency = latencyMsMin + this.rand() * (latencyMsMax - latencyMsMin);
    const timedOut = this.rand() < timeoutProbability;
    const errored = this.rand() < errorProbability;
    const halfDone = this.rand() < 0.5;
    if (latency > 0) await sleep(latency);
    const where = `${op} '${key}' (request #${n}, seed ${this.seed})`;
    if (this.failAll) {
      this.counters.injectedErrors++;
      throw new GlideFsError('E_STORE', `injected failure (failAll): ${where}`, { retryable: true, injected: true, status: 503 });
    }
    if (timedOut) {
      this.counters.injectedTimeouts++;
      if (onTimeout && halfDone) await onTimeout();
      else await sleep(timeoutMs);
      throw new GlideFsError('E_STORE_TIMEOUT', `injected timeout: ${where}`, { retryable: true, injected: true });
    }
    if (errored) {
      this.counters.injectedErrors++;
      throw new GlideFsError('E_STORE', `injected error 503 SlowDown: ${where}`, { retryable: true, injected: true, status: 503 });
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
