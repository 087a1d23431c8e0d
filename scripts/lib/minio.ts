/**
 * A throwaway MinIO server for tests and benchmarks.
 *
 * Starts the MinIO binary that scripts/setup.sh built (pinned version, cached
 * outside the repository) on a free port of 127.0.0.1 with a temporary data
 * directory and random root credentials, waits until it is live, and creates
 * one bucket. `stop()` kills the server and removes its data directory; it is
 * also called on process exit so a failed run leaves nothing behind.
 *
 * Only loopback addresses are ever used.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { minioPutCount as minioPutCountOf, readMinioMetrics, sumMetric } from '../../src/cli/bench/minio-metrics.js';

export interface MinioServer {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** A bucket created at start. */
  bucket: string;
  /** Environment variables that point the AWS SDK (and glidekv) at this server. */
  env: Record<string, string>;
  /** PUT requests MinIO itself has counted (Prometheus metrics), all buckets. */
  serverPutCount(): Promise<number>;
  stop(): Promise<void>;
}

const here = dirname(fileURLToPath(import.meta.url));

/** Path of the cached MinIO binary, or an error telling how to build it. */
export function minioBinary(): string {
  if (process.env.GLIDEKV_MINIO_BIN) return process.env.GLIDEKV_MINIO_BIN;
  const version = readFileSync(join(here, '..', 'minio.version'), 'utf8').trim();
  const cacheHome = process.env.GLIDEKV_CACHE_HOME ?? join(homedir(), '.cache', 'glidekv');
  const bin = join(cacheHome, `minio-${version}`, 'minio');
  if (!existsSync(bin)) throw new Error(`MinIO binary not found at ${bin}: run scripts/setup.sh`);
  return bin;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function waitLive(endpoint: string, proc: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`MinIO exited early with code ${proc.exitCode}`);
    try {
      const res = await fetch(`${endpoint}/minio/health/live`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`MinIO did not become live within ${timeoutMs} ms`);
}

export async function startMinio(opts: { bucket?: string } = {}): Promise<MinioServer> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const bin = minioBinary();
  const dataDir = mkdtempSync(join(tmpdir(), 'glidekv-minio-'));
  const port = await freePort();
  const consolePort = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const accessKeyId = 'glk' + randomBytes(6).toString('hex');
  const secretAccessKey = randomBytes(18).toString('base64url');
  const region = 'us-east-1';
  const bucket = opts.bucket ?? 'glidekv-test';
  let stderr = '';
  const proc = spawn(
    bin,
    ['server', dataDir, '--address', `127.0.0.1:${port}`, '--console-address', `127.0.0.1:${consolePort}`, '--quiet'],
    {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: process.env.HOME ?? '/root',
        MINIO_ROOT_USER: accessKeyId,
        MINIO_ROOT_PASSWORD: secretAccessKey,
        MINIO_PROMETHEUS_AUTH_TYPE: 'public',
        MINIO_BROWSER: 'off',
        MINIO_UPDATE: 'off',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  proc.stderr?.on('data', (d) => {
    if (stderr.length < 8192) stderr += String(d);
  });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    process.off('exit', onExit);
    if (proc.exitCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  const onExit = () => {
    try {
      proc.kill('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    } catch {
      // best effort at exit
    }
  };
  process.on('exit', onExit);
  try {
    await waitLive(endpoint, proc, 30_000);
    await makeBucket({ endpoint, region, accessKeyId, secretAccessKey }, bucket);
  } catch (err) {
    await stop();
    throw new Error(`could not start MinIO: ${(err as Error).message}${stderr ? `\n${stderr}` : ''}`);
  }
  return {
    endpoint,
    accessKeyId,
    secretAccessKey,
    region,
    bucket,
    env: {
      AWS_ACCESS_KEY_ID: accessKeyId,
      AWS_SECRET_ACCESS_KEY: secretAccessKey,
      AWS_REGION: region,
      AWS_ENDPOINT_URL_S3: endpoint,
    },
    serverPutCount: () => minioPutCountOf(endpoint),
    stop,
  };
}

type MinioAccess = Pick<MinioServer, 'endpoint' | 'region' | 'accessKeyId' | 'secretAccessKey'>;

/** An S3 client of the server (path-style, its root credentials); the caller destroys it. */
export function s3ClientOf(m: MinioAccess): S3Client {
  return new S3Client({
    endpoint: m.endpoint,
    region: m.region,
    forcePathStyle: true,
    credentials: { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey },
  });
}

/** Creates `bucket` on the server. */
export async function makeBucket(m: MinioAccess, bucket: string): Promise<void> {
  const s3 = s3ClientOf(m);
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    s3.destroy();
  }
}

/**
 * PUT requests counted by MinIO, from its Prometheus v2 cluster metrics
 * (`minio_s3_requests_total{api="putobject"}`, summed over servers). Defined in
 * the product with the one metrics parser (the re-upload bench reads it);
 * scripts may import the product.
 */
export { minioPutCount } from '../../src/cli/bench/minio-metrics.js';

/**
 * PUT requests MinIO counted for one bucket (its Prometheus bucket metrics,
 * `minio_bucket_requests_total{api="putobject",bucket=...}`). A bucket of its
 * own per measurement keeps other clients of the same server out of the count.
 */
export async function minioBucketPutCount(endpoint: string, bucket: string): Promise<number> {
  return sumMetric(await readMinioMetrics(endpoint, '/minio/v2/metrics/bucket'), 'minio_bucket_requests_total', { api: 'putobject', bucket });
}

/**
 * Polls `read` until it returns the same value three times in a row and at
 * least `want`, or `timeoutMs` passes (then returns the last value). MinIO
 * caches its Prometheus figures for about 10 s, so a count read right after
 * the requests can be stale; reading a "before" value also pins that cache.
 */
export async function stableCount(read: () => Promise<number>, want: number, timeoutMs = 30_000): Promise<number> {
  let last = -1;
  let same = 0;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await read();
    same = v === last ? same + 1 : 0;
    last = v;
    if (same >= 2 && v >= want) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
  return last;
}
