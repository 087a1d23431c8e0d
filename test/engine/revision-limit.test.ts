// Issue 13: the keydir packs revision and mtime into 48 bits each (u32 + u16) to stay at or
// below 40 bytes per key beyond the key bytes. These tests check that (a) every revision up to
// MAX_REVISION and every whole-millisecond mtime comes back exact, through the keydir and
// through the engine (get, stat, list, after reopen), (b) a write past MAX_REVISION is a typed
// E_REVISION_LIMIT that changes nothing, and a data directory beyond it is refused on open,
// and (c) the keydir of 1M keys is at most 40 bytes per key beyond the key bytes once trimmed.
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, expect, it } from 'vitest';
import { Keydir, MAX_REVISION } from '../../src/keydir.js';
import { open } from '../../src/index.js';
import { codeOf, rmDir, tmpDir } from './helpers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmDir(d);
});

it('keydir: revisions and mtimes up to 2^48 - 1 come back exact (boundaries and random)', () => {
  const k = new Keydir();
  const edges = [0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 40 + 12345, MAX_REVISION - 1, MAX_REVISION];
  edges.forEach((r, i) => k.set(Buffer.from(`e${i}`), 1, 0, 0, r, r, 0));
  edges.forEach((r, i) => {
    const e = k.find(Buffer.from(`e${i}`));
    expect(k.revOf(e), `revision ${r}`).toBe(r);
    expect(k.mtimeOf(e), `mtime ${r}`).toBe(r);
  });
  fc.assert(fc.property(fc.integer({ min: 0, max: MAX_REVISION }), fc.integer({ min: 0, max: MAX_REVISION }), (rev, mtime) => {
    const e = k.set(Buffer.from('p'), 2, 3, 4, rev, mtime, 0);
    return k.revOf(e) === rev && k.mtimeOf(e) === mtime;
  }), { numRuns: 2000 });
});

it('keydir: a revision past 2^48 - 1 (or not an integer) is a RangeError and changes nothing', () => {
  const k = new Keydir();
  const e = k.set(Buffer.from('a'), 1, 10, 5, 7, 1000, 0);
  for (const bad of [MAX_REVISION + 1, 2 ** 53, -1, 1.5, Number.NaN]) {
    expect(() => k.set(Buffer.from('a'), 9, 99, 9, bad, 2000, 0), String(bad)).toThrow(RangeError);
    expect(() => k.set(Buffer.from('new'), 9, 99, 9, bad, 2000, 0), String(bad)).toThrow(RangeError);
  }
  expect(k.size).toBe(1);
  expect(k.find(Buffer.from('new'))).toBe(-1);
  expect([k.fileId[e], k.offset[e], k.vsize[e], k.revOf(e), k.mtimeOf(e)]).toEqual([1, 10, 5, 7, 1000]);
});

/** A fresh data directory whose meta.json says the revision counter is at `rev`. */
function dirAt(rev: number): string {
  const dir = tmpDir('revlimit');
  dirs.push(dir);
  fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify({ version: 1, revision: rev, compacted: {} }));
  return dir;
}

it('engine: revisions up to 2^48 - 1 are exact in get/stat/list/watch and after reopen; the next write is E_REVISION_LIMIT and changes nothing', async () => {
  const dir = dirAt(MAX_REVISION - 3);
  let eng = await open(dir, { valueThreshold: 64 });
  await eng.createNamespace('n');
  expect(await eng.put('n', 'a', 'one')).toBe(MAX_REVISION - 2);
  expect(await eng.batch('n', [{ type: 'put', key: 'b', value: Buffer.alloc(100, 1) }, { type: 'put', key: 'c', value: 'x' }]))
    .toBe(MAX_REVISION - 1);
  expect(await eng.put('n', 'a', 'two', { ifRevision: MAX_REVISION - 2 })).toBe(MAX_REVISION);
  const before = JSON.stringify(eng.list('n'));
  // every kind of write is refused, typed, before anything is held or appended
  expect(await codeOf(eng.put('n', 'd', 'v'))).toBe('E_REVISION_LIMIT');
  expect(await codeOf(eng.put('n', 'd', Buffer.alloc(100, 2)))).toBe('E_REVISION_LIMIT'); // separated: blob released
  expect(await codeOf(eng.delete('n', 'a'))).toBe('E_REVISION_LIMIT');
  expect(await codeOf(eng.batch('n', [{ type: 'delete', key: 'c' }]))).toBe('E_REVISION_LIMIT');
  expect(await codeOf(eng.batch('n', [{ type: 'put', key: 'e', value: Buffer.alloc(100, 3) }]))).toBe('E_REVISION_LIMIT');
  expect(JSON.stringify(eng.list('n'))).toBe(before);
  expect(eng.stats().revision).toBe(MAX_REVISION);
  expect((await eng.get('n', 'a'))?.revision).toBe(MAX_REVISION);
  expect(eng.stat('n', 'b')?.revision).toBe(MAX_REVISION - 1);
  // still usable for reads and other operations (not poisoned): sync, gc, reclaim
  await eng.sync();
  expect((await eng.gc()).orphansSwept).toBe(0); // the refused separated values left no blob behind
  const events: number[] = [];
  const w = eng.watch('n', { prefix: '' }, { fromRevision: MAX_REVISION - 1 });
  for await (const ev of w) {
    events.push(ev.revision);
    if (ev.revision === MAX_REVISION) break;
  }
  expect(events).toEqual([MAX_REVISION - 1, MAX_REVISION - 1, MAX_REVISION]);
  await eng.reclaim(); // relocates the records with their revisions as they are
  await eng.close();
  eng = await open(dir, { valueThreshold: 64 });
  try {
    expect(eng.stats().revision).toBe(MAX_REVISION);
    expect(eng.list('n').map((x) => [x.key.toString(), x.revision])).toEqual([
      ['a', MAX_REVISION], ['b', MAX_REVISION - 1], ['c', MAX_REVISION - 1],
    ]);
    const got = await eng.get('n', 'b');
    expect(got?.revision).toBe(MAX_REVISION - 1);
    expect(got?.value.equals(Buffer.alloc(100, 1))).toBe(true);
    expect(await codeOf(eng.put('n', 'z', 'v'))).toBe('E_REVISION_LIMIT');
  } finally {
    await eng.close();
  }
});

it('engine: a data directory whose revision is past 2^48 - 1 is refused on open with E_REVISION_LIMIT', async () => {
  const dir = dirAt(MAX_REVISION + 1);
  expect(await codeOf(open(dir))).toBe('E_REVISION_LIMIT');
});

it('keydir: 1M keys of 16 bytes take at most 40 bytes per key beyond the key bytes once trimmed (its own count)', () => {
  const N = 1_000_000;
  const k = new Keydir();
  const key = Buffer.alloc(16);
  for (let i = 0; i < N; i++) {
    key.writeUInt32BE(Math.imul(i, 2654435761) >>> 0, 0);
    key.writeUInt32BE(i, 4);
    key.writeDoubleBE(i, 8);
    k.set(key, 1 + (i & 7), i * 100, 100, i + 1, 1700000000000 + i, 0);
  }
  k.trim(); // what open does after recovery rebuilt the keydir
  const beyond = (k.byteFootprint() - k.keyBytes()) / N;
  console.log(`keydir at 1M keys after trim: ${beyond.toFixed(2)} B/key beyond the 16 key bytes (its own count)`);
  expect(beyond).toBeLessThanOrEqual(40);
  key.writeUInt32BE(Math.imul(777777, 2654435761) >>> 0, 0);
  key.writeUInt32BE(777777, 4);
  key.writeDoubleBE(777777, 8);
  const e = k.find(key);
  expect([k.revOf(e), k.mtimeOf(e), k.offset[e]]).toEqual([777778, 1700000777777, 77777700]);
});
