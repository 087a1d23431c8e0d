// The reclaim policy (FORMAT.md "Reclaim policy"): mostly-live segments stay where they are,
// segments with enough garbage are reclaimed, the whole log stays bounded, tombstones that a
// kept segment still needs survive, and a crash at any step of a partial reclaim loses nothing.
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { open, nodeFileIo, type FileIo } from '../../src/index.js';
import { chooseVictims, type ReclaimPolicy, type SegmentUse } from '../../src/reclaim.js';
import { mulberry32 } from '../../lib/prng.js';
import { rmDir, segFiles, tmpDir } from './helpers.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));

const P: ReclaimPolicy = { segmentDeadRatio: 0.5, logDeadRatio: 0.5, logMinBytes: 1000 };

describe('chooseVictims', () => {
  const seg = (id: number, size: number, live: number, active = false): SegmentUse => ({ id, size, live, active });

  it('leaves segments under the garbage ratio alone and takes those at or over it', () => {
    const segs = [seg(1, 1000, 900), seg(2, 1000, 500), seg(3, 1000, 100), seg(4, 1000, 1000), seg(5, 300, 100, true)];
    const dead = segs.reduce((a, s) => a + s.size - s.live, 0);
    const r = chooseVictims(segs, dead, 4300, P, false);
    expect(r).toEqual({ victims: [2, 3, 5], full: false });
  });

  it('an empty active segment is never a victim; full and ratio 0 take every segment', () => {
    const segs = [seg(1, 1000, 900), seg(2, 1000, 1000), seg(3, 0, 0, true)];
    expect(chooseVictims(segs, 100, 2000, P, false)).toEqual({ victims: [], full: false });
    expect(chooseVictims(segs, 100, 2000, P, true)).toEqual({ victims: [1, 2], full: true });
    expect(chooseVictims(segs, 100, 2000, { ...P, segmentDeadRatio: 0 }, false)).toEqual({ victims: [1, 2], full: true });
  });

  it('the whole-log bound makes it a full reclaim when the kept segments would leave too much garbage', () => {
    // each segment is 40% garbage (under the ratio), but kept tombstones counted as dead by the
    // namespace push the whole log over half dead
    const segs = [seg(1, 1000, 600), seg(2, 1000, 600)];
    expect(chooseVictims(segs, 800, 2000, P, false)).toEqual({ victims: [], full: false });
    expect(chooseVictims(segs, 1100, 2000, P, false)).toEqual({ victims: [1, 2], full: true });
    // ... but not below logMinBytes
    expect(chooseVictims(segs, 1100, 2000, { ...P, logMinBytes: 5000 }, false)).toEqual({ victims: [], full: false });
  });

  it('property: after the choice, garbage left is under the bound or the choice is full', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 1, max: 1e6 }), fc.double({ min: 0, max: 1, noNaN: true })), { minLength: 1, maxLength: 30 }),
        fc.integer({ min: 0, max: 1e6 }), (raw, extraDead) => {
          const segs = raw.map(([size, u], i) => seg(i + 1, size, Math.floor(size * u), i === raw.length - 1));
          const total = segs.reduce((a, s) => a + s.size, 0);
          const dead = segs.reduce((a, s) => a + s.size - s.live, 0) + Math.min(extraDead, total - segs.reduce((a, s) => a + s.size - s.live, 0));
          const r = chooseVictims(segs, dead, total, P, false);
          if (r.full) return;
          const v = new Set(r.victims);
          let left = dead;
          let leftTotal = total;
          for (const s of segs) {
            const g = s.size - s.live;
            if (v.has(s.id)) {
              left -= g;
              leftTotal -= g;
            } else expect(g).toBeLessThan(0.5 * s.size + (g === 0 ? 1 : 0));
          }
          expect(left < P.logMinBytes || left <= 0.5 * leftTotal).toBe(true);
        }),
      { numRuns: 300 },
    );
  });
});

const big = (i: number, gen = 0) => Buffer.alloc(4096, (i * 7 + gen * 13 + 1) & 255);

/** Mostly-live segments (4 KiB inline values with a few small keys between them), sealed by size. */
async function fill(e: Awaited<ReturnType<typeof open>>, model: Map<string, Buffer>): Promise<void> {
  await e.createNamespace('n');
  for (let i = 0; i < 12; i++) {
    await e.put('n', `big${i}`, big(i));
    model.set(`big${i}`, big(i));
    for (let j = 0; j < 3; j++) {
      const k = `s${i * 3 + j}`;
      const v = Buffer.from(`small ${k}`);
      await e.put('n', k, v);
      model.set(k, v);
    }
  }
}

/**
 * Overwrites 6 small keys 50 times (the rest of the active segment fills up and is sealed), then
 * deletes 20 small keys and overwrites again: the segment holding the tombstones is mostly garbage,
 * while the old puts of the deleted keys sit in the mostly-live segments.
 */
async function churn(e: Awaited<ReturnType<typeof open>>, model: Map<string, Buffer>): Promise<void> {
  const overwrite = async (tag: string) => {
    for (let r = 0; r < 50; r++) {
      for (let i = 20; i < 26; i++) {
        const v = Buffer.from(`${tag} ${r} ${i}`);
        await e.put('n', `s${i}`, v);
        model.set(`s${i}`, v);
      }
    }
  };
  await overwrite('first');
  for (let i = 0; i < 20; i++) {
    await e.delete('n', `s${i}`);
    model.delete(`s${i}`);
  }
  await overwrite('second');
}

async function expectModel(e: Awaited<ReturnType<typeof open>>, model: Map<string, Buffer>, what: string): Promise<void> {
  for (const [k, v] of model) expect((await e.get('n', k))?.value.equals(v), `${what}: ${k}`).toBe(true);
  const keys = e.list('n').map((x) => x.key.toString()).sort();
  expect(keys, `${what}: keys`).toEqual([...model.keys()].sort());
}

const OPTS = { sync: 'always' as const, segmentMaxBytes: 16 * 1024, reclaimMinBytes: 1e12 };

describe('the policy in the engine', () => {
  it('mostly-live segments are not moved; segments over the ratio are; deleted keys stay deleted (tombstones kept)', async () => {
    const dir = tmpDir('policy');
    dirs.push(dir);
    const model = new Map<string, Buffer>();
    const e = await open(dir, OPTS);
    await fill(e, model);
    const filled = segFiles(dir, 'n');
    expect(filled.length).toBeGreaterThanOrEqual(3);
    await churn(e, model);
    const r1 = await e.reclaim();
    // the big values sit in mostly-live segments: none of them was copied
    expect(r1.relocatedBytes).toBeLessThan(4096);
    expect(r1.segmentsRemoved).toBeGreaterThan(0);
    const after1 = segFiles(dir, 'n');
    const sealedFill = filled.slice(0, -1); // the last one was the active segment
    for (const s of sealedFill) expect(after1, `${s} left in place`).toContain(s);
    await expectModel(e, model, 'after the partial reclaim');
    // nothing new to reclaim: nothing is sealed, written or removed
    const r2 = await e.reclaim();
    expect(r2).toMatchObject({ relocatedBytes: 0, segmentsRemoved: 0 });
    expect(segFiles(dir, 'n')).toEqual(after1);
    await e.close();
    // the tombstones of s0..s19 outlive the active segment they were written in: the kept
    // segments still hold the old puts
    const e2 = await open(dir, OPTS);
    await expectModel(e2, model, 'after reopen');
    // overwrite most big values: their segments pass the ratio and are reclaimed
    for (let i = 0; i < 10; i++) {
      await e2.put('n', `big${i}`, big(i, 1));
      model.set(`big${i}`, big(i, 1));
    }
    const r3 = await e2.reclaim();
    expect(r3.segmentsRemoved).toBeGreaterThan(0);
    const after3 = segFiles(dir, 'n');
    expect(sealedFill.filter((s) => !after3.includes(s)).length).toBeGreaterThan(0);
    await expectModel(e2, model, 'after the second reclaim');
    // a full reclaim leaves live records only: every tombstone may go now
    await e2.reclaim({ full: true });
    expect(e2.stats().deadBytes).toBe(0);
    await e2.close();
    const e3 = await open(dir, OPTS);
    await expectModel(e3, model, 'after the full reclaim and reopen');
    await e3.close();
  });

  it('reclaimSegmentDeadRatio is checked', async () => {
    const dir = tmpDir('policy-opt');
    dirs.push(dir);
    await expect(open(dir, { reclaimSegmentDeadRatio: 1.5 })).rejects.toMatchObject({ code: 'E_INVALID_ARGUMENT' });
    await expect(open(dir, { reclaimSegmentDeadRatio: Number.NaN })).rejects.toMatchObject({ code: 'E_INVALID_ARGUMENT' });
  });

  it('a long random overwrite/delete run: after every reclaim the garbage is within the bound; the data matches a model', async () => {
    const dir = tmpDir('policy-bound');
    dirs.push(dir);
    const seed = Number(process.env.RECLAIM_SEED ?? 0x5eed) >>> 0;
    const rnd = mulberry32(seed);
    const minBytes = 8192;
    const e = await open(dir, { sync: 'none', segmentMaxBytes: 8192, reclaimMinBytes: minBytes, reclaimDeadRatio: 0.5 });
    await e.createNamespace('n');
    const model = new Map<string, Buffer>();
    let maxDeadRatioSeen = 0;
    for (let step = 0; step < 4000; step++) {
      const k = `k${Math.floor(rnd() * 300)}`;
      if (rnd() < 0.2) {
        await e.delete('n', k);
        model.delete(k);
      } else {
        const v = Buffer.alloc(20 + Math.floor(rnd() * (rnd() < 0.1 ? 3000 : 200)), step & 255);
        await e.put('n', k, v);
        model.set(k, v);
      }
      if (step % 100 === 99) {
        await e.reclaim();
        const s = e.stats();
        const total = s.liveBytes + s.deadBytes;
        maxDeadRatioSeen = Math.max(maxDeadRatioSeen, s.deadBytes / total);
        // the documented bound: dead <= max(reclaimMinBytes, reclaimDeadRatio x log)
        expect(s.deadBytes, `step ${step} (seed ${seed})`).toBeLessThanOrEqual(Math.max(minBytes, 0.5 * total));
      }
    }
    await expectModel(e, model, `seed ${seed}`);
    await e.close();
    const e2 = await open(dir);
    await expectModel(e2, model, `seed ${seed}, reopened`);
    await e2.close();
    expect(maxDeadRatioSeen).toBeGreaterThan(0); // garbage was left in place (not a full reclaim each time)
  }, 120_000);
});

describe('a crash at every step of a partial reclaim loses and resurrects nothing', () => {
  it('snapshot of the directory before each file-system call of the reclaim, opened as after a kill -9', async () => {
    // one run to count the reclaim's calls, then one run per call: the directory is copied as it is
    // when that call is about to run (what a kill -9 there leaves), and the call then fails
    let calls = 0;
    let armed = false;
    let crashAt = -1;
    let snapDir = '';
    let workDir = '';
    const hook = <T>(f: () => Promise<T>): Promise<T> => {
      if (armed) {
        if (calls === crashAt) {
          fs.cpSync(workDir, snapDir, { recursive: true });
          fs.rmSync(path.join(snapDir, 'LOCK'), { force: true }); // our pid is alive: as if it had died
          calls++;
          return Promise.reject(Object.assign(new Error('injected crash'), { code: 'EIO' }));
        }
        calls++;
      }
      return f();
    };
    const io: FileIo = {
      ...nodeFileIo,
      write: (...a) => hook(() => nodeFileIo.write(...a)),
      fsync: (fd) => hook(() => nodeFileIo.fsync(fd)),
      fsyncDir: (d) => hook(() => nodeFileIo.fsyncDir(d)),
      rename: (a, b) => hook(() => nodeFileIo.rename(a, b)),
      unlink: (p) => hook(() => nodeFileIo.unlink(p)),
      open: (p, f, m) => hook(() => nodeFileIo.open(p, f, m)),
      writeSync: undefined,
      readSync: undefined,
    };
    const run = async (at: number): Promise<{ calls: number; model: Map<string, Buffer> }> => {
      workDir = tmpDir('policy-crash');
      snapDir = tmpDir('policy-crash-snap');
      dirs.push(workDir, snapDir);
      fs.rmSync(snapDir, { recursive: true });
      const model = new Map<string, Buffer>();
      const e = await open(workDir, { ...OPTS, io });
      await fill(e, model);
      await churn(e, model);
      calls = 0;
      crashAt = at;
      armed = true;
      let failed = false;
      await e.reclaim().catch(() => {
        failed = true;
      });
      armed = false;
      const n = calls;
      await e.close().catch(() => {});
      if (at >= 0) expect(failed, `crash at call ${at} of ${n}`).toBe(true);
      return { calls: n, model };
    };
    const { calls: total, model: want } = await run(-1);
    expect(total).toBeGreaterThan(5);
    for (let at = 0; at < total; at++) {
      await run(at);
      const e = await open(snapDir, OPTS);
      try {
        await expectModel(e, want, `crash before call ${at} of ${total}`);
      } finally {
        await e.close();
      }
      rmDir(workDir);
      rmDir(snapDir);
    }
  }, 120_000);
});
