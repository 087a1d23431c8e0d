// Watch: live events, replay from a revision in the log, E_COMPACTED, E_LAGGED, subscription cap.
import { afterEach, beforeEach, expect, it } from 'vitest';
import { open, KvError, nodeFileIo, type Engine, type FileIo, type WatchEvent } from '../../src/index.js';
import { codeOf, rmDir, segFiles, tmpDir } from './helpers.js';

let dir: string;
let e: Engine;
beforeEach(async () => {
  dir = tmpDir('watch');
  e = await open(dir, { sync: 'none', maxWatchers: 3, watchQueueMax: 5 });
  await e.createNamespace('n');
});
afterEach(async () => {
  await e.close();
  rmDir(dir);
});

/** The next n events (fewer if the subscription ends, or if none comes for `quietMs`). */
async function take(it: AsyncIterable<WatchEvent>, n: number, quietMs = 5000): Promise<WatchEvent[]> {
  const out: WatchEvent[] = [];
  const iter = it[Symbol.asyncIterator]();
  while (out.length < n) {
    let timer: NodeJS.Timeout | undefined;
    const quiet = new Promise<null>((r) => (timer = setTimeout(() => r(null), quietMs)));
    const r = await Promise.race([iter.next(), quiet]);
    clearTimeout(timer);
    if (r === null || r.done) break;
    out.push(r.value);
  }
  return out;
}

const brief = (evs: WatchEvent[]) => evs.map((x) => `${x.type} ${x.key} ${x.revision} ${x.value?.toString() ?? '-'}`);

it('delivers live put/delete events for a key and for a prefix', async () => {
  const wk = e.watch('n', { key: 'a' });
  const wp = e.watch('n', { prefix: 'p/' });
  const r1 = await e.put('n', 'a', '1');
  await e.put('n', 'b', 'ignored');
  const r2 = await e.put('n', 'p/x', '2');
  const r3 = await e.batch('n', [{ type: 'put', key: 'p/y', value: '3' }, { type: 'delete', key: 'p/x' }, { type: 'delete', key: 'a' }]);
  expect(brief(await take(wk, 2))).toEqual([`put a ${r1} 1`, `delete a ${r3} -`]);
  expect(brief(await take(wp, 3))).toEqual([`put p/x ${r2} 2`, `put p/y ${r3} 3`, `delete p/x ${r3} -`]);
  wk.close();
  wp.close();
  expect(await take(wk, 1)).toEqual([]);
});

it('replays from a revision still in the log, then continues live without gaps or duplicates', async () => {
  const revs: number[] = [];
  for (let i = 0; i < 6; i++) revs.push(await e.put('n', i % 2 ? 'k' : 'other', `v${i}`));
  const w = e.watch('n', { key: 'k' }, { fromRevision: revs[2] });
  const live = await e.put('n', 'k', 'live');
  const evs = await take(w, 3);
  expect(brief(evs)).toEqual([`put k ${revs[3]} v3`, `put k ${revs[5]} v5`, `put k ${live} live`]);
  w.close();
  // replay survives a restart (it reads the log)
  await e.close();
  e = await open(dir, { sync: 'none' });
  const w2 = e.watch('n', { prefix: '' }, { fromRevision: 1 });
  expect((await take(w2, 7)).map((x) => x.revision)).toEqual([...revs, live]);
  w2.close();
});

it('fromRevision 0 replays everything when nothing was reclaimed; a future fromRevision skips earlier events', async () => {
  const r1 = await e.put('n', 'k', 'a');
  const w = e.watch('n', { key: 'k' }, { fromRevision: 0 });
  expect(brief(await take(w, 1))).toEqual([`put k ${r1} a`]);
  w.close();
  const f = e.watch('n', { key: 'k' }, { fromRevision: r1 + 2 });
  await e.put('n', 'k', 'skipped');
  const r3 = await e.put('n', 'k', 'wanted');
  expect(brief(await take(f, 1))).toEqual([`put k ${r3} wanted`]);
  f.close();
});

it('replay from a reclaimed revision is E_COMPACTED; from after the reclaim it works', async () => {
  const r1 = await e.put('n', 'k', 'a');
  await e.put('n', 'k', 'b');
  await e.reclaim();
  const err = (() => {
    try {
      e.watch('n', { key: 'k' }, { fromRevision: r1 });
    } catch (x) {
      return x as KvError;
    }
    return null;
  })();
  expect(err?.code).toBe('E_COMPACTED');
  const r3 = await e.put('n', 'k', 'c');
  const w = e.watch('n', { key: 'k' }, { fromRevision: r3 });
  expect(brief(await take(w, 1))).toEqual([`put k ${r3} c`]);
  w.close();
  // still compacted after a restart (meta.json)
  await e.close();
  e = await open(dir, { sync: 'none' });
  expect(await codeOf(() => e.watch('n', { key: 'k' }, { fromRevision: r1 }))).toBe('E_COMPACTED');
});

it('a slow subscriber is ended with E_LAGGED and its queue dropped', async () => {
  const w = e.watch('n', { prefix: '' });
  for (let i = 0; i < 20; i++) await e.put('n', `k${i}`, 'x');
  const it = w[Symbol.asyncIterator]();
  await expect(it.next()).rejects.toMatchObject({ code: 'E_LAGGED' });
  // the lagged subscription no longer counts against the cap, nor holds events
  expect(e.stats().watchers).toBe(0);
  // a subscriber that keeps up is not lagged
  const ok = e.watch('n', { prefix: '' });
  const got: number[] = [];
  const consumer = (async () => {
    for await (const ev of ok) {
      got.push(ev.revision);
      if (got.length === 30) break;
    }
  })();
  for (let i = 0; i < 30; i++) await e.put('n', `m${i}`, 'x');
  await consumer;
  expect(got.length).toBe(30);
});

it('caps the number of subscriptions', async () => {
  const subs = [e.watch('n', { key: 'a' }), e.watch('n', { key: 'a' }), e.watch('n', { prefix: 'x' })];
  expect(await codeOf(() => e.watch('n', { key: 'b' }))).toBe('E_TOO_MANY_WATCHERS');
  subs[0].close();
  const again = e.watch('n', { key: 'b' });
  again.close();
  subs.forEach((s) => s.close());
  expect(e.stats().watchers).toBe(0);
});

// Issue 9 item 2: a batch that writes one key twice has two records of one revision; replay
// must give both, in batch order, exactly as live watchers saw them.
it('replay of a batch that writes a key twice equals what a live watcher saw', async () => {
  await e.close();
  e = await open(dir, { sync: 'none', valueThreshold: 64 });
  const live = e.watch('n', { prefix: '' });
  const big = 'B'.repeat(100); // separated (pointer) records too
  const r1 = await e.batch('n', [{ type: 'put', key: 'k', value: 'first' }, { type: 'put', key: 'k', value: 'final' }]);
  const r2 = await e.batch('n', [{ type: 'delete', key: 'k' }, { type: 'put', key: 'k', value: 'again' }]);
  // (a separated value overwritten in its own batch is collected: replay of it would be E_COMPACTED)
  const r3 = await e.batch('n', [{ type: 'put', key: 'j', value: 'small' }, { type: 'put', key: 'j', value: big }]);
  const seen = brief(await take(live, 6));
  expect(seen).toEqual([`put k ${r1} first`, `put k ${r1} final`, `delete k ${r2} -`, `put k ${r2} again`,
    `put j ${r3} small`, `put j ${r3} ${big}`]);
  live.close();
  for (const sel of [{ prefix: '' }, { key: 'k' }, { key: 'j' }]) {
    const w = e.watch('n', sel, { fromRevision: r1 });
    const want = seen.filter((s) => 'prefix' in sel || s.split(' ')[1] === sel.key);
    expect(brief(await take(w, want.length))).toEqual(want);
    w.close();
  }
  expect((await e.get('n', 'k'))?.value.toString()).toBe('again');
  // and from the log of a reopened engine
  await e.close();
  e = await open(dir, { sync: 'none', valueThreshold: 64 });
  const w = e.watch('n', { prefix: '' }, { fromRevision: 1 });
  expect(brief(await take(w, 6))).toEqual(seen);
  w.close();
});

/** A FileIo over node:fs whose next open(2) of a path ending in `suffix` waits until released. */
function gatedIo() {
  const gates: Array<{ suffix: string; entered: () => void; release: Promise<void> }> = [];
  const io: FileIo = {
    ...nodeFileIo,
    async open(p, flags, mode) {
      const i = gates.findIndex((g) => p.endsWith(g.suffix) && flags === 'r');
      if (i >= 0) {
        const g = gates.splice(i, 1)[0];
        g.entered();
        await g.release;
      }
      return nodeFileIo.open(p, flags, mode);
    },
  };
  const gate = (suffix: string) => {
    let release!: () => void;
    let entered!: () => void;
    const g = { suffix, release: new Promise<void>((r) => (release = r)), entered: () => {} };
    const hit = new Promise<void>((r) => (entered = r));
    g.entered = entered;
    gates.push(g);
    return { hit, release };
  };
  return { io, gate };
}

// Issue 9 item 5: a watch from above the compaction point must not end with E_COMPACTED when a
// reclaim removes, under its replay, a segment whose revisions are all below fromRevision.
it('a replay from above the compaction point survives a reclaim that removes an old segment under it', async () => {
  await e.close();
  const g = gatedIo();
  e = await open(dir, { sync: 'none', io: g.io });
  await e.put('n', 'a', '1');
  await e.put('n', 'a', '2'); // overwritten: dead, so the reclaim copies and then removes the segment
  const oldSeg = segFiles(dir, 'n')[0];
  // 1. the reclaim seals the segment (its last revision is 2), then waits at its read of it
  const reclaimReads = g.gate(oldSeg);
  const reclaim = e.reclaim();
  await reclaimReads.hit;
  // 2. a write into the new active segment, and a watch replaying from it (fromRevision 3 > 2)
  const r3 = await e.put('n', 'a', '3');
  const w = e.watch('n', { key: 'a' }, { fromRevision: r3 });
  const replayReads = g.gate(oldSeg);
  const first = w[Symbol.asyncIterator]().next();
  await replayReads.hit;
  // 3. the reclaim finishes (compacted through 2) and removes the segment; then the replay reads on
  reclaimReads.release();
  await reclaim;
  expect(segFiles(dir, 'n')).not.toContain(oldSeg);
  replayReads.release();
  const r = await first.then((x) => x, (err: KvError) => err);
  expect(r instanceof KvError ? `${r.code} compactRevision ${r.compactRevision}` : brief([r.value])).toEqual([`put a ${r3} 3`]);
  const r4 = await e.put('n', 'a', '4');
  expect(brief(await take(w, 1))).toEqual([`put a ${r4} 4`]);
  w.close();
});

// ... while one from at or below it still ends with E_COMPACTED, naming a revision above it.
it('a replay from at or below the compaction point of a reclaim that ran under it is E_COMPACTED past it', async () => {
  await e.close();
  const g = gatedIo();
  e = await open(dir, { sync: 'none', io: g.io });
  const r1 = await e.put('n', 'a', '1');
  const r2 = await e.put('n', 'a', '2');
  const oldSeg = segFiles(dir, 'n')[0];
  const w = e.watch('n', { key: 'a' }, { fromRevision: r1 });
  const replayReads = g.gate(oldSeg);
  const first = w[Symbol.asyncIterator]().next();
  await replayReads.hit;
  await e.reclaim();
  replayReads.release();
  const err = await first.then(() => null, (x: KvError) => x);
  expect(err?.code).toBe('E_COMPACTED');
  expect(err!.compactRevision).toBeGreaterThan(r2);
});

// A replay that runs while a reclaim has copied records but not yet removed the originals sees
// each record once (the copies carry the same revisions).
it('a replay during a reclaim, with originals and copies both present, yields each record once', async () => {
  await e.close();
  const g = gatedIo();
  e = await open(dir, { sync: 'none', io: g.io });
  const r1 = await e.batch('n', [{ type: 'put', key: 'k', value: 'first' }, { type: 'put', key: 'k', value: 'final' },
    { type: 'put', key: 'm', value: 'm1' }]);
  const r2 = await e.put('n', 'x', 'dead');
  await e.put('n', 'x', 'overwritten');
  const oldSeg = segFiles(dir, 'n')[0];
  // the reclaim copies k, m and x to a new segment, fsyncs it, then writes meta.json:
  // hold it at the meta write (by holding its fsyncDir of the namespace directory)
  let releaseDir!: () => void;
  let dirHit!: () => void;
  const hit = new Promise<void>((r) => (dirHit = r));
  const held = new Promise<void>((r) => (releaseDir = r));
  let calls = 0; // the reclaim's 1st fsyncDir of the namespace is its new active segment's, the 2nd the copies'
  const fsyncDir0 = g.io.fsyncDir;
  g.io.fsyncDir = async (d) => {
    if (d.endsWith(`${'/'}n`) && ++calls === 2) {
      dirHit();
      await held;
    }
    return fsyncDir0(d);
  };
  const reclaim = e.reclaim({ full: true });
  await hit;
  expect(segFiles(dir, 'n').length).toBe(3); // old, new active, copy
  expect(segFiles(dir, 'n')).toContain(oldSeg);
  const w = e.watch('n', { prefix: '' }, { fromRevision: r1 });
  const got = brief(await take(w, 5));
  releaseDir();
  await reclaim;
  expect(got).toEqual([`put k ${r1} first`, `put k ${r1} final`, `put m ${r1} m1`, `put x ${r2} dead`, `put x ${r2 + 1} overwritten`]);
  w.close();
});
