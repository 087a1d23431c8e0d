// Goal: S3Store maps every S3/network failure to a clear GlideFsError code, fails fast, never leaks credentials, and its PUT count matches MinIO's.
import { randomBytes } from 'node:crypto';
import { createServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { inspect } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CountingStore } from '../../glidefs/counting-store.js';
import { GlideFsError } from '../../glidefs/errors.js';
import { RetryStore } from '../../glidefs/retry-store.js';
import { S3Store, type S3StoreOptions } from '../../glidefs/s3-store.js';
import { checkStore, openStore } from '../../glidefs/store-url.js';
import { freePort, minioBucketPutCount, minioPutCount, stableCount } from '../../scripts/lib/minio.js';

const m = inject('minio');
const FAKE_SECRET = 'SeCrEt-glidekv-MUST-NOT-LEAK-7f3a9c';
const FAKE_KEY_ID = 'AKIAGLIDEKVLEAKCHECK42';

function minioOpts(extra: Partial<S3StoreOptions> = {}): S3StoreOptions {
  return {
    bucket: m.bucket,
    prefix: `s3test/${randomBytes(6).toString('hex')}`,
    endpoint: m.endpoint,
    region: m.region,
    credentials: { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey },
    ...extra,
  };
}

/** Runs `fn`, expects a GlideFsError with `code`, and returns it. */
async function failure(fn: () => Promise<unknown>, code: string): Promise<GlideFsError> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(GlideFsError);
    expect((err as GlideFsError).code, (err as Error).message).toBe(code);
    expect((err as Error).message.startsWith(`${code}: `)).toBe(true);
    return err as GlideFsError;
  }
  throw new Error(`expected ${code}, but it succeeded`);
}

/** Every rendering of the error a user or a log could see. */
function renderings(err: unknown): string[] {
  const e = err as Error;
  return [e.message, String(e.stack), JSON.stringify(e), inspect(e, { depth: 10 }), String(e)];
}

function expectNoSecrets(err: unknown, ...secrets: string[]): void {
  for (const text of renderings(err)) for (const s of secrets) expect(text).not.toContain(s);
}

/** Runs `fn` with the AWS credential variables set, restoring them afterwards. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved: Record<string, string | undefined> = {};
  for (const k of Object.keys(vars)) {
    saved[k] = process.env[k];
    if (vars[k] === undefined) delete process.env[k];
    else process.env[k] = vars[k];
  }
  try {
    return await fn();
  } finally {
    for (const k of Object.keys(saved)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
}

describe('S3Store error mapping (MinIO)', () => {
  it('a missing bucket is E_NO_BUCKET naming the bucket, for every operation and the probe', async () => {
    const s = new S3Store(minioOpts({ bucket: 'no-such-bucket-glidekv' }));
    try {
      const e = await failure(() => s.put('k', Buffer.from('x')), 'E_NO_BUCKET');
      expect(e.message).toContain("bucket 'no-such-bucket-glidekv' does not exist");
      expect(e.retryable).toBe(false);
      await failure(() => s.get('k'), 'E_NO_BUCKET');
      await failure(async () => {
        for await (const _ of s.list('')) void _;
      }, 'E_NO_BUCKET');
      await failure(() => checkStore(s), 'E_NO_BUCKET');
    } finally {
      await s.close();
    }
  });

  it('a wrong secret is E_ACCESS_DENIED and the secret appears nowhere in the error', async () => {
    const s = new S3Store(minioOpts({ credentials: { accessKeyId: m.accessKeyId, secretAccessKey: FAKE_SECRET } }));
    try {
      for (const op of [() => s.put('k', Buffer.from('x')), () => s.get('k'), () => checkStore(s)]) {
        const e = await failure(op, 'E_ACCESS_DENIED');
        expect(e.message).toContain(m.bucket);
        expectNoSecrets(e, FAKE_SECRET, m.secretAccessKey);
      }
    } finally {
      await s.close();
    }
  });

  it('an unknown access key from the environment is E_ACCESS_DENIED, and neither key id nor secret leaks', async () => {
    await withEnv(
      { AWS_ACCESS_KEY_ID: FAKE_KEY_ID, AWS_SECRET_ACCESS_KEY: FAKE_SECRET, AWS_ENDPOINT_URL_S3: m.endpoint, AWS_REGION: m.region },
      async () => {
        const store = await openStore(`s3://${m.bucket}/leakcheck`, { retry: { retries: 1, baseDelayMs: 1 } });
        try {
          expect(store.description).toBe(`s3://${m.bucket}/leakcheck`);
          const e1 = await failure(() => store.put('k', Buffer.from('x')), 'E_ACCESS_DENIED');
          const e2 = await failure(() => checkStore(store), 'E_ACCESS_DENIED');
          expect((store as RetryStore).stats()).toEqual({ retries: 0, failures: 1 });
          for (const e of [e1, e2]) expectNoSecrets(e, FAKE_SECRET, FAKE_KEY_ID);
        } finally {
          await store.close();
        }
      },
    );
  });

  it('credentials and endpoint from the standard environment variables work through openStore', async () => {
    await withEnv(
      {
        AWS_ACCESS_KEY_ID: m.accessKeyId,
        AWS_SECRET_ACCESS_KEY: m.secretAccessKey,
        AWS_ENDPOINT_URL_S3: m.endpoint,
        AWS_REGION: m.region,
      },
      async () => {
        const store = await openStore(`s3://${m.bucket}/envtest-${randomBytes(4).toString('hex')}`);
        try {
          await checkStore(store);
          await store.put('a/b', Buffer.from('via env'));
          expect((await store.get('a/b'))!.toString()).toBe('via env');
          expect(store.description).not.toContain(m.secretAccessKey);
        } finally {
          await store.close();
        }
      },
    );
  });
});

describe('S3Store against broken endpoints (loopback)', () => {
  let deadPort: number;
  let silent: TcpServer;
  let silentPort: number;
  const sockets = new Set<Socket>();
  let http: HttpServer;
  let httpPort: number;
  let httpStatus = 500;
  let httpCode = 'InternalError';
  let httpRequests = 0;
  let lastIfNoneMatch: string | undefined;

  beforeAll(async () => {
    deadPort = await freePort(); // nothing listens there
    silent = createTcpServer((sock) => sockets.add(sock)); // accepts, never answers
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    silentPort = (silent.address() as { port: number }).port;
    http = createServer((req, res) => {
      httpRequests++;
      lastIfNoneMatch = req.headers['if-none-match'] as string | undefined;
      req.resume();
      req.on('end', () => {
        res.writeHead(httpStatus, { 'content-type': 'application/xml' });
        res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${httpCode}</Code><Message>injected by test</Message><RequestId>1</RequestId></Error>`);
      });
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
    httpPort = (http.address() as { port: number }).port;
  });

  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => silent.close(r));
    http.closeAllConnections();
    await new Promise((r) => http.close(r));
  });

  const fake = (port: number, extra: Partial<S3StoreOptions> = {}) =>
    new S3Store({
      bucket: 'bkt',
      endpoint: `http://127.0.0.1:${port}`,
      region: 'us-east-1',
      credentials: { accessKeyId: FAKE_KEY_ID, secretAccessKey: FAKE_SECRET },
      ...extra,
    });

  it('a closed loopback port is E_STORE_UNREACHABLE naming the endpoint, quickly', async () => {
    const s = fake(deadPort);
    try {
      const t0 = Date.now();
      const e = await failure(() => s.put('k', Buffer.from('x')), 'E_STORE_UNREACHABLE');
      expect(e.message).toContain(`store unreachable at http://127.0.0.1:${deadPort}`);
      await failure(() => checkStore(s), 'E_STORE_UNREACHABLE');
      // a refused connection fails without waiting (a hang or retry loop would take far longer);
      // generous: a loaded 2-core CI machine can stall the first SDK request for seconds
      expect(Date.now() - t0).toBeLessThan(10_000);
      expectNoSecrets(e, FAKE_SECRET, FAKE_KEY_ID);
    } finally {
      await s.close();
    }
  });

  it('credentials written into the endpoint URL never reach a message or the description', async () => {
    const s = fake(deadPort, { endpoint: `http://${FAKE_KEY_ID}:${FAKE_SECRET}@127.0.0.1:${deadPort}` });
    try {
      const e = await failure(() => s.get('k'), 'E_STORE_UNREACHABLE');
      expect(e.message).toContain(`127.0.0.1:${deadPort}`);
      expectNoSecrets(e, FAKE_SECRET, FAKE_KEY_ID);
      expect(s.endpoint + s.description).not.toContain(FAKE_SECRET);
    } finally {
      await s.close();
    }
  });

  it('checkStore does not retry: an unreachable store behind RetryStore fails at once', async () => {
    // a retry would sleep >= 30 s first (60 s, half jitter): far beyond what a slow machine adds to one attempt
    const s = new RetryStore(fake(deadPort), { retries: 1, baseDelayMs: 60_000, maxDelayMs: 60_000 });
    try {
      const t0 = Date.now();
      await failure(() => checkStore(s), 'E_STORE_UNREACHABLE');
      expect(Date.now() - t0).toBeLessThan(15_000);
      expect(s.stats().retries).toBe(0);
    } finally {
      await s.close();
    }
  });

  it('a server that never answers times out (E_STORE_TIMEOUT, retryable) instead of hanging', async () => {
    const s = fake(silentPort, { requestTimeoutMs: 400 });
    try {
      const t0 = Date.now();
      const e = await failure(() => s.get('k'), 'E_STORE_TIMEOUT');
      expect(e.retryable).toBe(true);
      expect(Date.now() - t0).toBeLessThan(10_000); // 400 ms timeout; generous for a loaded machine
      expectNoSecrets(e, FAKE_SECRET, FAKE_KEY_ID);
    } finally {
      await s.close();
    }
  }, 30_000);

  it('HTTP 500 is retryable E_STORE; the SDK itself never retries, so N retries are N+1 requests', async () => {
    httpStatus = 500;
    httpCode = 'InternalError';
    httpRequests = 0;
    const s = new RetryStore(fake(httpPort), { retries: 2, baseDelayMs: 1, seed: 1 });
    try {
      const e = await failure(() => s.put('k', Buffer.from('x')), 'E_STORE');
      expect(e.retryable).toBe(true);
      expect(e.status).toBe(500);
      expect(e.message).toContain('gave up after 3 attempts');
      expect(httpRequests).toBe(3);
      expect(s.stats()).toEqual({ retries: 2, failures: 1 });
      expectNoSecrets(e, FAKE_SECRET, FAKE_KEY_ID);
    } finally {
      await s.close();
    }
  });

  it('putIfAbsent sends If-None-Match: *; 412 is false, 409 ConditionalRequestConflict is a retryable E_CONFLICT', async () => {
    const r = new RetryStore(fake(httpPort), { retries: 2, baseDelayMs: 1, seed: 1 });
    try {
      httpStatus = 412;
      httpCode = 'PreconditionFailed';
      lastIfNoneMatch = undefined;
      expect(await r.putIfAbsent('k', Buffer.from('x'))).toBe(false);
      expect(lastIfNoneMatch).toBe('*');
      httpStatus = 409;
      httpCode = 'ConditionalRequestConflict';
      httpRequests = 0;
      const e = await failure(() => r.putIfAbsent('k', Buffer.from('x')), 'E_CONFLICT');
      expect(e.retryable).toBe(true);
      expect(httpRequests).toBe(3); // retried like any retryable error
      expectNoSecrets(e, FAKE_SECRET, FAKE_KEY_ID);
    } finally {
      await r.close();
    }
  });

  it('503 SlowDown is retryable throttling; 403 AccessDenied is not retried', async () => {
    const s = fake(httpPort);
    const r = new RetryStore(fake(httpPort), { retries: 3, baseDelayMs: 1 });
    try {
      httpStatus = 503;
      httpCode = 'SlowDown';
      const e = await failure(() => s.get('k'), 'E_STORE');
      expect(e.retryable).toBe(true);
      expect(e.message).toContain('throttled');
      httpStatus = 403;
      httpCode = 'AccessDenied';
      httpRequests = 0;
      await failure(() => r.get('k'), 'E_ACCESS_DENIED');
      expect(httpRequests).toBe(1);
      expect(r.stats()).toEqual({ retries: 0, failures: 1 });
    } finally {
      await s.close();
      await r.close();
    }
  });
});

describe('MinIO cross-check', () => {
  it('PUTs counted by CountingStore(S3Store) equal the PUTs MinIO counted', async () => {
    // A bucket of our own, so other test files' PUTs (same server) do not mix in.
    const bucket = `xcheck-${randomBytes(4).toString('hex')}`;
    const admin = new S3Client({
      endpoint: m.endpoint,
      region: m.region,
      forcePathStyle: true,
      credentials: { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey },
    });
    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
    admin.destroy();
    const store = new CountingStore(new S3Store(minioOpts({ bucket })));
    try {
      // A fresh bucket has 0 PUTs; not reading its metrics before the PUTs
      // also keeps MinIO's metrics cache (~10 s) from serving a stale value.
      const bucketBefore = 0;
      const globalBefore = await minioPutCount(m.endpoint);
      const n = 40;
      await Promise.all(Array.from({ length: n }, (_, i) => store.put(`obj/${i}`, randomBytes(1000 + i))));
      await store.put('obj/0', Buffer.from('again')); // an overwrite is a PUT too
      const st = store.stats();
      expect(st.puts).toBe(n + 1);
      expect(st.putBytes).toBe(Array.from({ length: n }, (_, i) => 1000 + i).reduce((a, b) => a + b, 0) + 5);
      const bucketAfter = await stableCount(() => minioBucketPutCount(m.endpoint, bucket), bucketBefore + st.puts);
      expect(bucketAfter - bucketBefore).toBe(st.puts);
      // Server-wide (other test files share the server): at least ours.
      const globalAfter = await stableCount(() => minioPutCount(m.endpoint), globalBefore + st.puts);
      expect(globalAfter - globalBefore).toBeGreaterThanOrEqual(st.puts);
      await store.get('obj/1');
      await store.get('obj/none');
      expect(store.stats()).toMatchObject({ gets: 2, getBytes: 1001, getMisses: 1 });
      store.reset();
      expect(store.stats().puts).toBe(0);
    } finally {
      await store.close();
    }
  });
});
