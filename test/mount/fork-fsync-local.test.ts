// Goal: a stack up with `--fsync local` records the mode (status --json), keeps ext4 journal commits local (dirty blocks stay), and a live fork still holds every synced key (fork asks the device daemon to upload via SIGUSR1).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupUnder, glidekv, kernelUnavailable, stackEnv, leftovers, ok, q, sh } from './device-helpers.js';

const skipReason = kernelUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING fork --fsync local KERNEL TESTS: ${skipReason}. They need root, /dev/fuse and loop devices. !!!\n`);

describe.skipIf(skipReason !== undefined)('glidekv up --fsync local, live fork', () => {
  const root = mkdtempSync(join(tmpdir(), 'glidekv-fork-local-'));
  const env = stackEnv(root);
  const mnt = join(root, 'mnt');
  const mnt2 = join(root, 'mnt2');
  const big = join(root, 'big');
  const stats = async (vol: string) => JSON.parse(await ok(glidekv(['volume', 'stats', vol, '--json'], env))) as Record<string, number>;

  beforeAll(async () => {
    mkdirSync(mnt);
    mkdirSync(mnt2);
    await ok(sh(`head -c 4000000 /dev/urandom > ${q(big)}`));
  });

  afterAll(async () => {
    for (const m of [mnt2, mnt]) await glidekv(['down', m], env);
    for (const p of leftovers(root).pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await cleanupUnder(root);
    rmSync(root, { recursive: true, force: true });
  });

  it('status shows fsync local; synced keys stay dirty locally; the live fork uploads them first and holds them', async () => {
    const u = await glidekv(['up', 'l1', mnt, '--size', '128M', '--fsync', 'local'], env);
    expect(u.code, u.stderr).toBe(0);
    expect(u.stdout).toMatch(/^device .*fsync local/m);
    const st = JSON.parse(await ok(glidekv(['status', '--json'], env))) as { volume: string; fsync: string }[];
    expect(st.map((s) => [s.volume, s.fsync])).toEqual([['l1', 'local']]);

    await ok(sh(`mkdir ${q(mnt + '/ns')} && cp ${q(big)} ${q(mnt + '/ns/big')} && echo small > ${q(mnt + '/ns/s1')}`));
    // The KV engine fsyncs (sync always): journal commits reach the device as fsyncs, which stay local.
    expect((await stats('l1')).dirtyBlocks).toBeGreaterThan(0);

    const f = await glidekv(['fork', 'l1', 'l1-fork', '--json'], env);
    expect(f.code, f.stderr).toBe(0);
    const res = JSON.parse(f.stdout) as { live: boolean; uploads: number };
    expect(res.live).toBe(true);
    expect(res.uploads).toBeGreaterThan(0);
    expect(await ok(sh(`cat ${q(mnt + '/ns/s1')}`))).toBe('small\n'); // the original keeps serving

    const u2 = await glidekv(['up', 'l1-fork', mnt2], env);
    expect(u2.code, u2.stderr).toBe(0);
    expect(u2.stdout).toMatch(/^device .*fsync upload/m); // default for a stack up without the option
    await ok(sh(`cmp ${q(big)} ${q(mnt2 + '/ns/big')} && test "$(cat ${q(mnt2 + '/ns/s1')})" = small`));

    for (const m of [mnt2, mnt]) {
      const d = await glidekv(['down', m], env);
      expect(d.code, d.stderr).toBe(0);
    }
    expect((await stats('l1')).dirtyBlocks).toBe(0);
    expect(leftovers(root)).toEqual({ mounts: [], loops: [], pids: [] });
  });
});
