/**
 * A MinIO server of a test's own (not the shared one of global-setup.ts) that can be stopped and started
 * again on the same port and data directory: a store outage on purpose. Loopback only; random credentials.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort, minioBinary } from '../../scripts/lib/minio.js';

export class RestartableMinio {
  proc: ChildProcess | undefined;
  readonly dataDir = mkdtempSync(join(tmpdir(), 'glidekv-restartable-minio-'));
  readonly user = 'glk' + randomBytes(6).toString('hex');
  readonly password = randomBytes(18).toString('base64url');
  constructor(readonly port: number) {}

  static async create(): Promise<RestartableMinio> {
    return new RestartableMinio(await freePort());
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null;
  }

  /** The AWS SDK variables for `glidekv` (the secrets a test must never see in output). */
  awsEnv(): Record<string, string> {
    return { AWS_ACCESS_KEY_ID: this.user, AWS_SECRET_ACCESS_KEY: this.password, AWS_REGION: 'us-east-1', AWS_ENDPOINT_URL_S3: this.endpoint };
  }

  async start(): Promise<void> {
    const consolePort = await freePort();
    const proc = spawn(minioBinary(), ['server', this.dataDir, '--address', `127.0.0.1:${this.port}`, '--console-address', `127.0.0.1:${consolePort}`, '--quiet'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', MINIO_ROOT_USER: this.user, MINIO_ROOT_PASSWORD: this.password, MINIO_BROWSER: 'off', MINIO_UPDATE: 'off' },
      stdio: 'ignore',
    });
    this.proc = proc;
    for (const end = Date.now() + 60_000; ; await new Promise((r) => setTimeout(r, 100))) {
      if (proc.exitCode !== null) throw new Error(`MinIO exited with ${proc.exitCode}`);
      if (Date.now() > end) throw new Error('MinIO did not become live in 60 s');
      const live = await fetch(`${this.endpoint}/minio/health/live`).then((r) => r.ok, () => false);
      if (live) return;
    }
  }

  async makeBucket(bucket: string): Promise<void> {
    const s3 = new S3Client({ endpoint: this.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: this.user, secretAccessKey: this.password } });
    try {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    } finally {
      s3.destroy();
    }
  }

  /** kill -9 (a crash of the store, not a clean shutdown). */
  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await exited;
  }

  /** Stops it and removes its data. */
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
