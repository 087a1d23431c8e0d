// kill -9 of the device daemon at random points of a randomized workload, through the real
// kernel (FUSE): every write the daemon acknowledged survives the kill (the dirty set is on the
// local disk), and every fsync'd byte survives the loss of the machine (catalog and cache
// deleted, `glidekv restore` from the store alone). The write in flight at a kill may land or not
// (each byte old or new). Seeded: GLIDEKV_KILL_SEED replays (printed), GLIDEKV_KILL_ROUNDS (8).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { open as openFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mulberry32 } from '../../lib/prng.js';
import { KillSchedule } from './kill-schedule.js';
import { cleanupUnder, DeviceDaemon, glidekv, kernelUnavailable, killDaemons, ok, q, sh } from './device-helpers.js';

const skipReason = kernelUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING DEVICE KILL TESTS: ${skipReason}. They need root, /dev/fuse. !!!\n`);

const SIZE = 8 << 20;
const seed = process.env.GLIDEKV_KILL_SEED !== undefined ? Number(process.env.GLIDEKV_KILL_SEED) : (Date.now() >>> 0);
const rounds = Number(process.env.GLIDEKV_KILL_ROUNDS ?? 8);

/** Bytes of `got` outside the in-flight write must equal `want`; inside, each byte is old or new. */
function compare(got: Buffer, want: Buffer, inflight: { off: number; data: Buffer } | null, what: string): void {
  expect(got.length, `${what}: size`).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (got[i] === want[i]) continue;
    if (inflight && i >= inflight.off && i < inflight.off + inflight.data.length && got[i] === inflight.data[i - inflight.off]) continue;
    throw new Error(`${what}: byte ${i} (block ${Math.floor(i / 131072)}) is ${got[i]}, want ${want[i]}${inflight ? ` (in flight: ${inflight.off}+${inflight.data.length})` : ''} (GLIDEKV_KILL_SEED=${seed})`);
  }
}

describe.skipIf(skipReason !== undefined)('device daemon kill -9 under a random workload', () => {
  const root = mkdtempSync(join(tmpdir(), 'glidekv-kill-device-'));
  const env = {
    GLIDEKV_STORE: `file://${join(root, 'objects')}`,
    GLIDEKV_CATALOG: join(root, 'catalog.db'),
    GLIDEKV_CACHE: join(root, 'cache'),
  };
  const dev = join(root, 'dev');

  afterAll(async () => {
    await killDaemons();
    await cleanupUnder(root);
    rmSync(root, { recursive: true, force: true });
  });

  it(`loses no acknowledged write, and no fsync'd byte even with the machine lost (${rounds} kills)`, async () => {
    console.log(`kill-device: GLIDEKV_KILL_SEED=${seed} rounds ${rounds}`);
    const rand = mulberry32(seed);
    const int = (n: number) => Math.floor(rand() * n);
    mkdirSync(dev);
    await ok(glidekv(['volume', 'create', 'v', '--size', '8M'], env));
    let acked: Buffer = Buffer.alloc(SIZE); // what every acknowledged write made of the volume
    let synced: Buffer = Buffer.alloc(SIZE); // as of the last acknowledged fsync
    for (let round = 0; round < rounds; round++) {
      const d = await DeviceDaemon.start('v', dev, env);
      const fh = await openFile(join(dev, 'volume'), 'r+');
      let inflight: { off: number; data: Buffer } | null = null;
      let syncInflight: Buffer | null = null; // acked bytes at the start of an fsync in flight
      // half the rounds: kill at a random time (mid-operation); the others: right after the k-th acknowledgement
      const kill = new KillSchedule(round, int, { maxMs: 600, maxOps: 40 }, () => d.kill9());
      let ops = 0;
      try {
        while (!kill.killed) {
          if (rand() < 0.15) {
            syncInflight = Buffer.from(acked);
            await fh.sync();
            if (kill.killed) break; // answered after the kill: not counted as acknowledged
            synced = syncInflight;
            syncInflight = null;
          } else {
            const len = rand() < 0.3 ? 131072 * (1 + int(2)) : 1 + int(200_000);
            const off = rand() < 0.3 ? 131072 * int(SIZE / 131072 - 2) : int(SIZE - len);
            const data = Buffer.alloc(len);
            for (let i = 0; i < len; i += 4096) data.fill(1 + int(255), i, Math.min(len, i + 4096));
            inflight = { off, data };
            await fh.write(data, 0, len, off);
            if (kill.killed) break;
            data.copy(acked, off);
            inflight = null;
          }
          ops++;
          await kill.acked(ops);
        }
      } catch (err) {
        if (!kill.killed) throw err; // only the kill may fail an operation (ENOTCONN, EIO)
      } finally {
        kill.clear();
        await fh.close().catch(() => undefined);
      }
      await d.kill9();
      await sh(`fusermount -u -z ${q(dev)} 2>/dev/null; true`);
      const lose = round % 3 === 2;
      if (lose) {
        // the machine is lost: only the store remains
        rmSync(env.GLIDEKV_CATALOG, { force: true });
        rmSync(env.GLIDEKV_CATALOG + '-wal', { force: true });
        rmSync(env.GLIDEKV_CATALOG + '-shm', { force: true });
        rmSync(env.GLIDEKV_CACHE, { recursive: true, force: true });
        await ok(glidekv(['restore'], env));
      }
      const d2 = await DeviceDaemon.start('v', dev, env);
      try {
        const got = await readFile(join(dev, 'volume'));
        if (lose) {
          // fsync'd bytes all there; an fsync in flight may have made the acked state of its start durable
          const candidates = syncInflight ? [synced, syncInflight] : [synced];
          const match = candidates.find((c) => c.equals(got));
          if (!match) compare(got, synced, null, `round ${round} after machine loss (${ops} ops, kill ${kill})`);
          acked = Buffer.from(got);
          synced = Buffer.from(got);
        } else {
          compare(got, acked, inflight, `round ${round} after kill -9 (${ops} ops, kill ${kill})`);
          acked = Buffer.from(got);
          if (syncInflight === null && inflight === null) expect(got.equals(acked)).toBe(true);
        }
      } finally {
        expect(await d2.stop()).toBe(0); // SIGTERM flushes: the store then holds all of it
      }
      synced = Buffer.from(acked);
    }
  }, 600_000);
});
