// Issue 11 item 1, the command line: `--cache-size SIZE` (global) / GLIDEKV_CACHE_SIZE reach the
// volume's cache (its slot table has SIZE/128K slots, the cache dir stays within the bound), bad
// values are refused in one line with exit 2, and `glidekv up` records the size and `status` shows it.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupUnder, glidekv, kernelUnavailable, leftovers, ok, stackEnv } from '../mount/device-helpers.js';
import { allowedBytes, duBytes } from './cache-bound-ops.js';

const MiB = 1024 * 1024;
const root = mkdtempSync(join(tmpdir(), 'glidekv-cache-cli-'));
afterAll(async () => {
  await cleanupUnder(root);
  rmSync(root, { recursive: true, force: true });
});

/** Slot count of the one volume cache under `cacheDir`. */
function slotCount(cacheDir: string): number {
  const vols = readdirSync(join(cacheDir, 'volumes'));
  expect(vols).toHaveLength(1);
  const t = readFileSync(join(cacheDir, 'volumes', vols[0], 'slots'));
  expect(t.subarray(0, 8).toString('latin1')).toBe('GLFSSLOT');
  return t.readUInt32LE(12);
}

describe('--cache-size', () => {
  it('bad sizes are refused in one line (exit 2), flag and environment', async () => {
    const env = stackEnv(join(root, 'bad'));
    for (const [args, e, msg] of [
      [['--cache-size', '1M', 'volume', 'list'], {}, /cache size '1M' is below the minimum of 2M/],
      [['--cache-size', 'lots', 'volume', 'list'], {}, /'lots' is not a size/],
      [['volume', 'list'], { GLIDEKV_CACHE_SIZE: '12Q' }, /GLIDEKV_CACHE_SIZE: '12Q' is not a size/],
      [['volume', 'list'], { GLIDEKV_CACHE_SIZE: '100K' }, /GLIDEKV_CACHE_SIZE: cache size '100K' is below the minimum/],
    ] as const) {
      const r = await glidekv([...args], { ...env, ...e });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
    }
  });

  it('the flag and GLIDEKV_CACHE_SIZE size the cache; writing 4x the bound keeps the cache dir within it', async () => {
    const dir = join(root, 'w');
    mkdirSync(dir);
    const env = stackEnv(dir);
    const file = join(dir, 'in.bin');
    writeFileSync(file, randomBytes(8 * MiB));
    await ok(glidekv(['--cache-size', '2M', 'volume', 'create', 'v', '--size', '64M'], env));
    await ok(glidekv(['--cache-size', '2M', 'volume', 'write', 'v', '--from', file, '--offset', '1M', '--flush'], env));
    expect(slotCount(env.GLIDEKV_CACHE)).toBe(16);
    expect(duBytes(env.GLIDEKV_CACHE)).toBeLessThanOrEqual(allowedBytes(2 * MiB));
    const back = join(dir, 'out.bin');
    await ok(glidekv(['volume', 'read', 'v', '--offset', '1M', '--length', '8M', '--to', back], { ...env, GLIDEKV_CACHE_SIZE: '4M' }));
    expect(slotCount(env.GLIDEKV_CACHE)).toBe(32);
    expect(readFileSync(back).equals(readFileSync(file))).toBe(true);
    expect(duBytes(env.GLIDEKV_CACHE)).toBeLessThanOrEqual(allowedBytes(4 * MiB));
  }, 120_000);

  const skip = kernelUnavailable();
  it.skipIf(skip !== undefined)('up records the cache size, the device daemon uses it, status shows it', async () => {
    const dir = join(root, 'up');
    mkdirSync(dir);
    const env = stackEnv(dir);
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    try {
      await ok(glidekv(['--cache-size', '64M', 'up', 'v', mnt, '--size', '128M'], env));
      const st = JSON.parse(await ok(glidekv(['status', '--json'], env))) as Array<{ cacheSize: number | null; state: string }>;
      expect(st).toHaveLength(1);
      expect(st[0].cacheSize).toBe(64 * MiB);
      expect(await ok(glidekv(['status'], env))).toMatch(/cache .* \(size 64M per volume\)/);
      expect(slotCount(env.GLIDEKV_CACHE)).toBe(512);
      expect(duBytes(env.GLIDEKV_CACHE)).toBeLessThanOrEqual(allowedBytes(64 * MiB));
    } finally {
      await glidekv(['down', mnt], env);
    }
    expect(leftovers(dir)).toEqual({ mounts: [], loops: [], pids: [] });
  }, 180_000);
});
