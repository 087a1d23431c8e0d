// Goal: `glidekv device mount` checks the store before it mounts (issue 9 item 17): bad credentials or a missing bucket end the command with one line and a non-zero exit, nothing mounted, no secret printed; with a good store it mounts, publishes its --status-file and honours --store-retry-timeout.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { BIN, cleanupUnder, glidekv, kernelUnavailable, leftovers, ok } from './device-helpers.js';

const skipReason = kernelUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING device mount store-check KERNEL TESTS: ${skipReason}. !!!\n`);

/** Runs `glidekv device mount` until it exits or prints its ready line (then SIGTERM and wait). */
async function deviceMount(args: string[], env: Record<string, string>, timeoutMs = 90_000): Promise<{ code: number | null; stdout: string; stderr: string; mounted: boolean }> {
  const proc = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  proc.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
  let mounted = false;
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) break;
    if (/ mounted at /.test(stdout)) {
      mounted = true;
      proc.kill('SIGTERM');
      break;
    }
    if (Date.now() > end) {
      proc.kill('SIGKILL');
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const code = await exited;
  return { code, stdout, stderr, mounted };
}

describe.skipIf(skipReason !== undefined)('device mount checks its store first', () => {
  const m = inject('minio');
  const root = mkdtempSync(join(tmpdir(), 'glidekv-devcheck-'));
  const dir = join(root, 'dev');
  mkdirSync(dir);
  const prefix = `devcheck-${process.pid}-${Date.now()}`;
  const good = {
    GLIDEKV_STORE: `s3://${m.bucket}/${prefix}`,
    GLIDEKV_CATALOG: join(root, 'catalog.db'),
    GLIDEKV_CACHE: join(root, 'cache'),
    AWS_ACCESS_KEY_ID: m.accessKeyId,
    AWS_SECRET_ACCESS_KEY: m.secretAccessKey,
    AWS_REGION: m.region,
    AWS_ENDPOINT_URL_S3: m.endpoint,
  };

  afterAll(async () => {
    await cleanupUnder(root);
    rmSync(root, { recursive: true, force: true });
  });

  it('bad credentials: one line, exit 1, nothing mounted, no secret printed', async () => {
    await ok(glidekv(['volume', 'create', 'v', '--size', '16M'], good));
    const wrongSecret = 'wrong-' + m.secretAccessKey.slice(0, 8) + 'XYZ123';
    const r = await deviceMount(['device', 'mount', 'v', dir, '--flush-interval', '0'], { ...good, AWS_SECRET_ACCESS_KEY: wrongSecret });
expect(r.mounted, `mounted with bad credentials: ${r.stdout}`).toBe(false);
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^glidekv: E_ACCESS_DENIED: access denied to bucket/);
    expect(r.stderr + r.stdout).not.toContain(wrongSecret);
    expect(r.stderr + r.stdout).not.toContain(m.secretAccessKey);
    expect(leftovers(root).mounts).toEqual([]);
  });

  it('a missing bucket: one line, exit 1, nothing mounted', async () => {
    const r = await deviceMount(['device', 'mount', 'v', dir], { ...good, GLIDEKV_STORE: `s3://glidekv-no-such-bucket-${process.pid}/x` });
    expect(r.mounted).toBe(false);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^glidekv: E_NO_BUCKET: bucket 'glidekv-no-such-bucket-\d+' does not exist$/);
    expect(leftovers(root).mounts).toEqual([]);
  });

  it('a bad --store-retry-timeout or --status-file is a usage error; nothing mounted', async () => {
    const r = await deviceMount(['device', 'mount', 'v', dir, '--store-retry-timeout', 'soon'], good);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe("glidekv: 'soon' is not a duration (e.g. 60s, 2m, 500ms)");
    const inside = await deviceMount(['device', 'mount', 'v', dir, '--status-file', join(dir, 'st.json')], good);
    expect(inside.code).toBe(2);
    expect(inside.stderr.trim()).toMatch(/--status-file .* is inside .*: the daemon would write to its own mount$/);
    expect(leftovers(root).mounts).toEqual([]);
  });

  it('a good store mounts; the status file says ok and carries the retry timeout; stop removes it', async () => {
    const statusFile = join(root, 'device-status.json');
    const proc = spawn(process.execPath, [BIN, 'device', 'mount', 'v', dir, '--store-retry-timeout', '90s', '--status-file', statusFile], {
      env: { ...process.env, ...good },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    proc.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const exited = new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
    try {
      for (const end = Date.now() + 90_000; !/ mounted at /.test(stdout); await new Promise((r) => setTimeout(r, 50))) {
        if (proc.exitCode !== null || Date.now() > end) throw new Error(`device daemon did not mount: ${stderr}`);
      }
      const st = JSON.parse(readFileSync(statusFile, 'utf8'));
      expect(st).toMatchObject({ version: 1, pid: proc.pid, volume: 'v', store: 'ok', storeRetryTimeoutMs: 90_000 });
      expect(stderr).toContain('store retry timeout 90s');
    } finally {
      proc.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(() => readFileSync(statusFile)).toThrow();
    expect(leftovers(root).mounts).toEqual([]);
  });
});
