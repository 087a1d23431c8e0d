// kill -9 of the KV mount daemon at random points of a randomized workload, through the real
// kernel (FUSE): every put acknowledged by close(2) and every delete acknowledged by unlink(2)
// survives (small and separated values), the operation in flight at the kill is old or new, never
// other bytes, and the data directory opens cleanly after each kill. Seeded: GLIDEKV_KILL_SEED
// replays (printed), GLIDEKV_KILL_ROUNDS (8).
import { mkdirSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { open } from '../../src/index.js';
import { mulberry32 } from '../../lib/prng.js';
import { KillSchedule } from './kill-schedule.js';
import { fuseUnavailable, KvDaemon, kvMountDirs, sh } from './kv-daemon.js';

const skipReason = fuseUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING KV KILL TESTS: ${skipReason}. !!!\n`);

const seed = process.env.GLIDEKV_KILL_SEED !== undefined ? Number(process.env.GLIDEKV_KILL_SEED) : (Date.now() >>> 0);
const rounds = Number(process.env.GLIDEKV_KILL_ROUNDS ?? 8);
const KEYS = 24;
const q = (p: string) => `'${p.replace(/'/g, `'\\''`)}'`;

describe.skipIf(skipReason !== undefined)('kv daemon kill -9 under a random workload', () => {
  const { data, mnt } = kvMountDirs('glidekv-kill-kv-');


  it(`loses no put acknowledged by close and no acknowledged delete (${rounds} kills)`, async () => {
    console.log(`kill-kv: GLIDEKV_KILL_SEED=${seed} rounds ${rounds}`);
    const rand = mulberry32(seed);
    const int = (n: number) => Math.floor(rand() * n);
    mkdirSync(mnt);
    const model = new Map<string, Buffer>(); // acknowledged state
    for (let round = 0; round < rounds; round++) {
      const d = await KvDaemon.start(data, mnt, ['--max-value-size', '1M']);
      if (round === 0) await fsp.mkdir(join(mnt, 'n'));
      let inflight: { key: string; value: Buffer | null } | null = null;
      const kill = new KillSchedule(round, int, { maxMs: 700, maxOps: 30 }, () => d.kill9());
      let ops = 0;
      try {
        while (!kill.killed) {
          const key = `k${int(KEYS)}`;
          const file = join(mnt, 'n', key);
          if (rand() < 0.2) {
            inflight = { key, value: null };
            await fsp.unlink(file).catch((err: NodeJS.ErrnoException) => {
              if (err.code !== 'ENOENT' || kill.killed) throw err;
            });
            if (kill.killed) break;
            model.delete(key);
          } else if (rand() < 0.2) {
            // a read of an acknowledged value through the mount
            const want = model.get(key);
            const got = await fsp.readFile(file).catch((err: NodeJS.ErrnoException) => {
              if (err.code === 'ENOENT' && !kill.killed) return undefined;
              throw err;
            });
            if (kill.killed) break;
            expect(got?.equals(want!) ?? want === undefined, `read ${key} through the mount (GLIDEKV_KILL_SEED=${seed})`).toBe(true);
            continue;
          } else {
            const len = rand() < 0.25 ? 131072 + int(300_000) : int(3000);
            const value = Buffer.alloc(len, 1 + int(255));
            if (len >= 4) value.writeUInt32LE(round * 100_000 + ops, 0); // distinct from earlier values of the key
            inflight = { key, value };
            await fsp.writeFile(file, value); // open, write, close: the put is acknowledged when close returns
            if (kill.killed) break;
            model.set(key, value);
          }
          inflight = null;
          ops++;
          await kill.acked(ops);
        }
      } catch (err) {
        if (!kill.killed) throw err; // only the kill may fail an operation
      } finally {
        kill.clear();
      }
      await d.kill9();
      await sh(`fusermount -u -z ${q(mnt)} 2>/dev/null; true`);
      // the data directory, opened by the engine itself after the kill
      const e = await open(data);
      try {
        const what = `round ${round} (${ops} ops, kill ${kill}, GLIDEKV_KILL_SEED=${seed})`;
        for (let k = 0; k < KEYS; k++) {
          const key = `k${k}`;
          const got = (await e.get('n', key))?.value;
          const want = model.get(key);
          const same = (a: Buffer | undefined | null, b: Buffer | undefined | null) => (a == null || b == null ? a == null && b == null : a.equals(b));
          if (same(got, want)) continue;
          if (inflight && inflight.key === key && same(got, inflight.value)) {
            if (inflight.value === null) model.delete(key);
            else model.set(key, inflight.value);
            continue;
          }
          throw new Error(`${what}: key ${key} holds ${got ? `${got.length} bytes` : 'nothing'}, acknowledged ${want ? `${want.length} bytes` : 'nothing'}`);
        }
      } finally {
        await e.close();
      }
    }
  }, 600_000);
});
