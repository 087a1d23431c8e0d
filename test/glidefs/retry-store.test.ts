// Goal: RetryStore gets through a seeded faulty store, gives up clearly on a dead one, retries only what may help, and FaultyStore/CountingStore do what they say.
import { describe, expect, it } from 'vitest';
import { CountingStore } from '../../glidefs/counting-store.js';
import { GlideFsError } from '../../glidefs/errors.js';
import { FaultyStore } from '../../glidefs/faulty-store.js';
import { MemoryStore } from '../../glidefs/memory-store.js';
import type { ObjectStore } from '../../glidefs/object-store.js';
import { isRetryable, RetryStore } from '../../glidefs/retry-store.js';

const SEED = 20261124;

async function keysOf(store: ObjectStore, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list(prefix)) out.push(k);
  return out.sort();
}

/** A store whose every call fails with `err`, counting the calls. */
class FailingStore extends MemoryStore {
  calls = 0;
  constructor(private readonly err: () => unknown) {
    super();
  }
  override async put(): Promise<void> {
    this.calls++;
    throw this.err();
  }
  override async get(): Promise<Buffer | null> {
    this.calls++;
    throw this.err();
  }
}

describe('FaultyStore', () => {
  it('fails about the configured fraction, with retryable injected errors that name the seed', async () => {
    const faulty = new FaultyStore(new MemoryStore(), { seed: SEED, putErrorProbability: 0.3 });
    let failed = 0;
    let sample: GlideFsError | undefined;
    for (let i = 0; i < 400; i++) {
      try {
        await faulty.put(`k${i}`, Buffer.from('x'));
      } catch (err) {
        failed++;
        sample = err as GlideFsError;
      }
    }
    expect(failed).toBeGreaterThan(80);
    expect(failed).toBeLessThan(160);
    expect(sample).toBeInstanceOf(GlideFsError);
    expect(sample!.injected).toBe(true);
    expect(sample!.retryable).toBe(true);
    expect(sample!.status).toBe(503);
    expect(sample!.message).toContain(`seed ${SEED}`);
    expect(faulty.stats()).toMatchObject({ requests: 400, injectedErrors: failed });
    // A failed put stored nothing.
    expect((await keysOf(faulty.inner)).length).toBe(400 - failed);
  });

  it('is reproducible: the same seed fails the same requests', async () => {
    const pattern = async (seed: number) => {
      const f = new FaultyStore(new MemoryStore(), { seed, getErrorProbability: 0.5 });
      const out: boolean[] = [];
      for (let i = 0; i < 64; i++) out.push(await f.get('k').then(() => true, () => false));
      return out.join('');
    };
    expect(await pattern(7)).toBe(await pattern(7));
    expect(await pattern(7)).not.toBe(await pattern(8));
  });

  it('injects timeouts and latency', async () => {
    const f = new FaultyStore(new MemoryStore(), { seed: SEED, timeoutProbability: 1, timeoutMs: 30 });
    const t0 = Date.now();
    await expect(f.get('k')).rejects.toMatchObject({ code: 'E_STORE_TIMEOUT', injected: true, retryable: true });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
    const slow = new FaultyStore(new MemoryStore(), { seed: SEED, latencyMsMin: 40, latencyMsMax: 60 });
    const t1 = Date.now();
    await slow.put('k', Buffer.from('x'));
    expect(Date.now() - t1).toBeGreaterThanOrEqual(35);
  });

  it('failAll fails everything until it is switched off', async () => {
    const f = new FaultyStore(new MemoryStore(), { seed: SEED, failAll: true });
    await expect(f.put('k', Buffer.from('x'))).rejects.toThrow(/E_STORE: injected failure \(failAll\)/);
    await expect(f.get('k')).rejects.toMatchObject({ injected: true });
    await expect(f.delete('k')).rejects.toMatchObject({ injected: true });
    await expect(keysOf(f)).rejects.toMatchObject({ injected: true });
    f.failAll = false;
    await f.put('k', Buffer.from('x'));
    expect((await f.get('k'))!.toString()).toBe('x');
  });
});

describe('RetryStore', () => {
  it('gets every operation through a store that fails 30% of requests (seeded)', async () => {
    const inner = new MemoryStore();
    const faulty = new FaultyStore(inner, {
      seed: SEED,
      putErrorProbability: 0.3,
      getErrorProbability: 0.3,
      deleteErrorProbability: 0.3,
      timeoutProbability: 0.05,
      timeoutMs: 2,
    });
    const store = new RetryStore(faulty, { retries: 8, baseDelayMs: 1, maxDelayMs: 4, seed: SEED });
    const n = 200;
    await Promise.all(Array.from({ length: n }, (_, i) => store.put(`obj/${i}`, Buffer.from(`v${i}`))));
    for (let i = 0; i < n; i++) expect((await store.get(`obj/${i}`))!.toString()).toBe(`v${i}`);
    expect((await keysOf(store, 'obj/')).length).toBe(n);
    for (let i = 0; i < n; i += 2) await store.delete(`obj/${i}`);
    expect((await keysOf(inner, 'obj/')).length).toBe(n / 2);
    const st = store.stats();
    expect(st.failures).toBe(0);
    // about 30% of ~700 requests failed and were retried
    expect(st.retries).toBeGreaterThan(100);
    expect(st.retries).toBe(faulty.stats().injectedErrors + faulty.stats().injectedTimeouts);
  });

  it('fails clearly while the store fails every request, and works again once it recovers', async () => {
    const faulty = new FaultyStore(new MemoryStore(), { seed: SEED, failAll: true });
    const store = new RetryStore(faulty, { retries: 3, baseDelayMs: 1, maxDelayMs: 2 });
    const err = await store.put('k', Buffer.from('x')).then(
      () => undefined,
      (e: unknown) => e as GlideFsError,
    );
    expect(err).toBeInstanceOf(GlideFsError);
    expect(err!.code).toBe('E_STORE');
    expect(err!.message).toMatch(/^E_STORE: injected failure \(failAll\).*seed 20261124.*\(gave up after 4 attempts\)$/);
    expect(store.stats()).toEqual({ retries: 3, failures: 1 });
    faulty.failAll = false;
    await store.put('k', Buffer.from('x'));
    expect((await store.get('k'))!.toString()).toBe('x');
    expect(store.stats()).toEqual({ retries: 3, failures: 1 });
  });

  it.each([
    ['access denied', () => GlideFsError.ACCESS_DENIED('access denied to bucket b', undefined, 403)],
    ['missing bucket', () => GlideFsError.NO_BUCKET('b')],
    ['a 4xx', () => GlideFsError.STORE('bad request', { status: 400 })],
    ['a bad key', () => GlideFsError.BAD_KEY('..', 'nope')],
    ['a plain Error', () => new Error('E_CLOSED: memory store is closed')],
  ])('does not retry %s', async (_name, make) => {
    const original = make();
    expect(isRetryable(original)).toBe(false);
    const inner = new FailingStore(() => original);
    const store = new RetryStore(inner, { retries: 5, baseDelayMs: 1 });
    const err = await store.get('k').catch((e: unknown) => e);
    expect(err).toBe(original); // thrown as it was
    expect(inner.calls).toBe(1);
    expect(store.stats()).toEqual({ retries: 0, failures: 1 });
    expect((err as Error).message).not.toContain('gave up');
  });

  it.each([
    ['ECONNRESET', Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })],
    ['EPIPE', Object.assign(new Error('broken pipe'), { code: 'EPIPE' })],
    ['ETIMEDOUT', Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })],
    ['an SDK 503', Object.assign(new Error('slow down'), { name: 'SlowDown', $metadata: { httpStatusCode: 503 } })],
    ['an SDK 429', Object.assign(new Error('too many'), { name: 'TooManyRequests', $metadata: { httpStatusCode: 429 } })],
    ['a TimeoutError', Object.assign(new Error('request timeout'), { name: 'TimeoutError' })],
    ['a retryable GlideFsError', GlideFsError.STORE('server error', { retryable: true, status: 500 })],
  ])('retries %s', async (_name, error) => {
    expect(isRetryable(error)).toBe(true);
    const inner = new FailingStore(() => error);
    const store = new RetryStore(inner, { retries: 2, baseDelayMs: 1 });
    await expect(store.put('k', Buffer.from('x'))).rejects.toThrow(/gave up after 3 attempts/);
    expect(inner.calls).toBe(3);
  });

  it('backs off exponentially with jitter, capped at maxDelayMs', async () => {
    const delays: number[] = [];
    const store = new RetryStore(new FailingStore(() => GlideFsError.STORE('x', { retryable: true })), {
      retries: 6,
      baseDelayMs: 8,
      maxDelayMs: 100,
      seed: SEED,
      onRetry: (i) => delays.push(i.delayMs),
    });
    const t0 = Date.now();
    await expect(store.get('k')).rejects.toThrow(/gave up after 7 attempts/);
    const caps = [8, 16, 32, 64, 100, 100];
    expect(delays.length).toBe(6);
    delays.forEach((d, i) => {
      expect(d).toBeGreaterThanOrEqual(caps[i] / 2);
      expect(d).toBeLessThanOrEqual(caps[i]);
    });
    expect(new Set(delays.map((d, i) => d / caps[i])).size).toBeGreaterThan(1); // jittered, not fixed
    expect(Date.now() - t0).toBeGreaterThanOrEqual(delays.reduce((a, b) => a + b, 0) - 5);
  });

  it('restarts a listing that fails part-way and yields each key once', async () => {
    const inner = new MemoryStore();
    for (let i = 0; i < 10; i++) await inner.put(`l/${i}`, Buffer.from('x'));
    let failuresLeft = 2;
    const flaky: ObjectStore = {
      description: 'flaky',
      put: (k, d) => inner.put(k, d),
      putIfAbsent: (k, d) => inner.putIfAbsent(k, d),
      putIfMatch: (k, d, t) => inner.putIfMatch(k, d, t),
      getTagged: (k) => inner.getTagged(k),
      head: (k) => inner.head(k),
      get: (k) => inner.get(k),
      delete: (k) => inner.delete(k),
      close: () => inner.close(),
      async *list(prefix: string) {
        let n = 0;
        for await (const k of inner.list(prefix)) {
          if (n++ === 4 && failuresLeft-- > 0) throw GlideFsError.STORE('reset mid-list', { retryable: true });
          yield k;
        }
      },
    };
    const store = new RetryStore(flaky, { retries: 3, baseDelayMs: 1 });
    const keys: string[] = [];
    for await (const k of store.list('l/')) keys.push(k);
    expect(keys.length).toBe(10);
    expect(new Set(keys).size).toBe(10);
    expect(store.stats().retries).toBe(2);
  });
});

describe('CountingStore', () => {
  it('counts requests and bytes that pass through, and errors apart', async () => {
    const faulty = new FaultyStore(new MemoryStore(), { seed: SEED });
    const c = new CountingStore(faulty);
    await c.put('a', Buffer.alloc(100));
    await c.put('b', Buffer.alloc(28));
    await c.get('a');
    await c.get('missing');
    await c.delete('a');
    await keysOf(c);
    for await (const _ of c.list('')) break; // a listing stopped early is still one
    faulty.failAll = true;
    await expect(c.put('z', Buffer.alloc(5))).rejects.toThrow();
    expect(c.stats()).toMatchObject({ puts: 2, putBytes: 128, gets: 2, getBytes: 100, getMisses: 1, deletes: 1, lists: 2, errors: 1 });
    c.reset();
    expect(c.stats()).toMatchObject({ puts: 0, putBytes: 0, gets: 0, getBytes: 0, getMisses: 0, deletes: 0, lists: 0, errors: 0 });
  });
});

// Issue 9 item 12: a store that is down for a few seconds (a MinIO restart)
// must not fail the fsync behind an upload; a time bound replaces the ~1 s of
// 5 quick retries, and the outage can be seen while it lasts.
describe('RetryStore with a time bound (timeoutMs)', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('rides through a store that fails every request for 400 ms, and outage() says so meanwhile', async () => {
    const faulty = new FaultyStore(new MemoryStore(), { seed: SEED, failAll: true });
    const store = new RetryStore(faulty, { timeoutMs: 10_000, baseDelayMs: 10, maxDelayMs: 50, seed: SEED });
    expect(store.outage()).toBeUndefined();
    const t0 = Date.now();
    const put = store.put('blk/1', Buffer.from('acknowledged'));
    const get = store.get('blk/2');
    await sleep(150);
    const o = store.outage();
    expect(o).toBeDefined();
    expect(o!.operations).toBe(2);
    expect(o!.sinceMs).toBeGreaterThanOrEqual(t0);
    expect(o!.giveUpAtMs).toBe(o!.sinceMs + 10_000);
    expect(o!.lastError).toMatch(/^E_STORE: injected failure \(failAll\)/);
    await sleep(250);
    faulty.failAll = false; // the store is back
    await put;
    expect(await get).toBeNull();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
    expect((await faulty.inner.get('blk/1'))!.toString()).toBe('acknowledged');
    expect(store.outage()).toBeUndefined();
    const st = store.stats();
    expect(st.failures).toBe(0);
    expect(st.retries).toBeGreaterThan(10); // far more than the count bound's 5
  });

  it('gives up once the time bound has passed, not before, saying how long it tried', async () => {
    const faulty = new FaultyStore(new MemoryStore(), { seed: SEED, failAll: true });
    const store = new RetryStore(faulty, { timeoutMs: 1200, baseDelayMs: 10, maxDelayMs: 100 });
    const t0 = Date.now();
    const err = (await store.put('k', Buffer.from('x')).catch((e: unknown) => e)) as GlideFsError;
    const took = Date.now() - t0;
    expect(err).toBeInstanceOf(GlideFsError);
    expect(err.code).toBe('E_STORE');
    expect(err.message).toMatch(/\(gave up after \d+ attempts in 1\.\d s\)$/);
    expect(took).toBeGreaterThanOrEqual(1200);
    expect(took).toBeLessThan(10_000);
    expect(store.outage()).toBeUndefined();
    expect(store.stats().failures).toBe(1);
    expect(faulty.stats().requests).toBeGreaterThan(6);
  });

  it('a count bound still applies when both are given; an error that is not retryable ends at once', async () => {
    const faulty = new FaultyStore(new MemoryStore(), { seed: SEED, failAll: true });
    const store = new RetryStore(faulty, { timeoutMs: 60_000, retries: 2, baseDelayMs: 1 });
    await expect(store.get('k')).rejects.toThrow(/gave up after 3 attempts/);
    const denied = new RetryStore(new FailingStore(() => GlideFsError.ACCESS_DENIED('access denied to bucket b', undefined, 403)), { timeoutMs: 60_000 });
    const t0 = Date.now();
    await expect(denied.get('k')).rejects.toMatchObject({ code: 'E_ACCESS_DENIED' });
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(() => new RetryStore(new MemoryStore(), { timeoutMs: -1 })).toThrow(TypeError);
  });

  it('putIfAbsent: transport errors are retried, false is an answer, and a retried create whose first attempt landed answers false', async () => {
    const inner = new MemoryStore();
    // First call: the object is created, then the answer is lost (a reset).
    let calls = 0;
    const lossy: ObjectStore = Object.assign(Object.create(inner) as ObjectStore, {
      description: 'lossy',
      async putIfAbsent(key: string, body: Uint8Array) {
        calls++;
        const created = await inner.putIfAbsent(key, body);
        if (calls === 1) throw GlideFsError.STORE('connection ECONNRESET', { retryable: true });
        return created;
      },
    });
    const store = new RetryStore(lossy, { timeoutMs: 5000, baseDelayMs: 1 });
    expect(await store.putIfAbsent('log/1', Buffer.from('mine'))).toBe(false); // the caller must read back
    expect(calls).toBe(2);
    expect((await store.get('log/1'))!.toString()).toBe('mine');
    // A key that exists: false at once, one call, no retry.
    const plain = new RetryStore(inner, { timeoutMs: 5000, baseDelayMs: 1 });
    expect(await plain.putIfAbsent('log/1', Buffer.from('other'))).toBe(false);
    expect(await plain.putIfAbsent('log/2', Buffer.from('new'))).toBe(true);
    expect(plain.stats()).toEqual({ retries: 0, failures: 0 });
    // Through a store that is down for a moment: retried until it is back.
    const faulty = new FaultyStore(inner, { seed: SEED, failAll: true });
    const retrying = new RetryStore(faulty, { timeoutMs: 10_000, baseDelayMs: 5, maxDelayMs: 20 });
    const p = retrying.putIfAbsent('log/3', Buffer.from('later'));
    await sleep(100);
    faulty.failAll = false;
    expect(await p).toBe(true);
    expect(retrying.stats().retries).toBeGreaterThan(0);
  });

  it('openStore gives s3:// stores a 60 s bound by default, and a refused connection is retried for the whole bound', async () => {
    const { freePort } = await import('../../scripts/lib/minio.js');
    const { openStore } = await import('../../glidefs/store-url.js');
    const port = await freePort(); // nothing listens there: every request is refused
    const s3 = { endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', credentials: { accessKeyId: 'test-key', secretAccessKey: 'test-secret' } };
    const byDefault = (await openStore('s3://glidekv-none/p', { s3 })) as RetryStore;
    expect(byDefault).toBeInstanceOf(RetryStore);
    expect(byDefault.timeoutMs).toBe(60_000);
    await byDefault.close();
    const store = (await openStore('s3://glidekv-none/p', { s3, retry: { timeoutMs: 3000 } })) as RetryStore;
    try {
      const t0 = Date.now();
      const err = (await store.put('k', Buffer.from('x')).catch((e: unknown) => e)) as GlideFsError;
      expect(err.code).toBe('E_STORE_UNREACHABLE');
      expect(Date.now() - t0).toBeGreaterThanOrEqual(3000);
      expect(store.stats().retries).toBeGreaterThan(5);
    } finally {
      await store.close();
    }
  });
});
