// Watch: live events, replay from a revision in the log, E_COMPACTED, E_LAGGED, subscription cap.
import { afterEach, beforeEach, expect, it } from 'vitest';
import { open, KvError, type Engine, type WatchEvent } from '../../src/index.js';
import { codeOf, rmDir, tmpDir } from './helpers.js';

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

async function take(it: AsyncIterable<WatchEvent>, n: number): Promise<WatchEvent[]> {
  const out: WatchEvent[] = [];
  const iter = it[Symbol.asyncIterator]();
  while (out.length < n) {
    const r = await iter.next();
    if (r.done) break;
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
