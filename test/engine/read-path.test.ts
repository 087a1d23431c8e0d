// The engine's read path (issue 13): the synchronous get served from the read cache
// (src/read-cache.ts) must answer exactly what the slow path (getSlow: pread + checks, no
// cache) answers, and both what a Map model says, through puts, overwrites, deletes, CAS,
// batches, reclaim, reopen and namespace drops; a damaged record or blob is E_CORRUPT on both
// paths, never data; list (radix-sorted view, src/key-sort.ts + src/key-list.ts) keeps its
// order and its after/limit/prefix meaning.
// Replay a randomized failure: READ_PATH_SEED=<seed printed below> npx vitest run test/engine/read-path.test.ts
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { open, type Engine } from '../../src/index.js';
import type { KvEngine } from '../../src/engine.js';
import { Keydir } from '../../src/keydir.js';
import { sortEntriesByKey } from '../../src/key-sort.js';
import { codeOf, rmDir, segFiles, tmpDir } from './helpers.js';

type Eng = Engine & KvEngine;
type Got = { value: Buffer; revision: number; mtime: number } | undefined;

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length > 0) rmDir(dirs.pop()!);
});
function newDir(tag: string): string {
  const d = tmpDir(tag);
  dirs.push(d);
  return d;
}

/** The slow path of the same engine: reads the record with a pread and checks it, no cache. */
function slowGet(e: Eng, ns: string, key: Buffer): Promise<Got> {
  return (e as unknown as { getSlow(ns: string, k: Buffer): Promise<Got> }).getSlow(ns, key);
}

/** What a promise gives: the value, or the KvError code it fails with. */
async function outcome(p: Promise<Got>): Promise<{ value: string | null; revision: number; mtime: number } | string> {
  try {
    const r = await p;
    return r === undefined ? { value: null, revision: 0, mtime: 0 } : { value: r.value.toString('hex'), revision: r.revision, mtime: r.mtime };
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (typeof code !== 'string') throw err;
    return code;
  }
}

const cmpBuf = (a: Buffer, b: Buffer): number => Buffer.compare(a, b);

describe('read path: fast == slow == model', () => {
  const seed = process.env.READ_PATH_SEED !== undefined ? Number(process.env.READ_PATH_SEED) : (Date.now() ^ (process.pid << 8)) >>> 1;

  // keys share prefixes and include 0x00/0xff bytes, so list order and prefix ends are exercised
  const KEYS = ['a', 'a\x00', 'ab', 'abc', 'b', 'b\xff', 'ba', 'key/0001', 'key/0002', 'key/01', 'z'].map((s) => Buffer.from(s, 'latin1'));
  const keyArb = fc.integer({ min: 0, max: KEYS.length - 1 });
  // inline (small and middling: several per 32 KiB block, some straddle blocks) and separated (>= 512)
  const sizeArb = fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 100, max: 300 }), fc.integer({ min: 600, max: 900 }));
  type Cmd =
    | { t: 'put'; k: number; size: number }
    | { t: 'del'; k: number }
    | { t: 'cas'; k: number; size: number; right: boolean }
    | { t: 'batch'; ops: Array<{ k: number; size: number | null }> }
    | { t: 'reclaim' }
    | { t: 'reopen' }
    | { t: 'drop' }
    | { t: 'list'; after: number | null; prefix: number | null; limit: number | null };
  const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
    { arbitrary: fc.record({ t: fc.constant('put' as const), k: keyArb, size: sizeArb }), weight: 8 },
    { arbitrary: fc.record({ t: fc.constant('del' as const), k: keyArb }), weight: 3 },
    { arbitrary: fc.record({ t: fc.constant('cas' as const), k: keyArb, size: sizeArb, right: fc.boolean() }), weight: 3 },
    {
      arbitrary: fc.record({ t: fc.constant('batch' as const), ops: fc.array(fc.record({ k: keyArb, size: fc.option(sizeArb) }), { minLength: 1, maxLength: 5 }) }),
      weight: 3,
    },
    { arbitrary: fc.constant({ t: 'reclaim' as const }), weight: 1 },
    { arbitrary: fc.constant({ t: 'reopen' as const }), weight: 1 },
    { arbitrary: fc.constant({ t: 'drop' as const }), weight: 1 },
    {
      arbitrary: fc.record({
        t: fc.constant('list' as const), after: fc.option(keyArb), prefix: fc.option(fc.integer({ min: 0, max: 3 })),
        limit: fc.option(fc.integer({ min: 0, max: 12 })),
      }),
      weight: 2,
    },
  );
  const PREFIXES = ['a', 'b', 'key/0', 'key/00'].map((s) => Buffer.from(s, 'latin1'));

  it(`randomized (seed ${seed}): get, the slow path and a Map model agree after every step`, async () => {
    // printed so a failure can be replayed (fast-check prints its own seed and path too)
    console.log(`read-path: seed ${seed} (replay: READ_PATH_SEED=${seed})`);
    let hits = 0;
    let valueNo = 0;
    const valueOf = (size: number): Buffer => {
      const n = valueNo++;
      const v = Buffer.alloc(size, (n * 7 + 1) & 0xff);
      for (let i = 0; i < Math.min(4, size); i++) v[i] = (n >>> (8 * i)) & 0xff;
      return v;
    };
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(2, 4, 32), fc.array(cmdArb, { minLength: 10, maxLength: 80 }), async (cacheBlocks, cmds) => {
        const dir = newDir('read-path');
        // small segments (rolls, reclaim work), a cache of 2 or 4 blocks (eviction, admission) or 32, a low blob threshold
        const opts = { sync: 'none' as const, segmentMaxBytes: 4096, readCacheBytes: cacheBlocks * 32768, valueThreshold: 512 };
        let e = (await open(dir, opts)) as Eng;
        await e.createNamespace('n');
        const model = new Map<string, { value: Buffer; revision: number }>();
        const check = async (): Promise<void> => {
          for (const k of KEYS) {
            const m = model.get(k.toString('hex'));
            const fast = await outcome(e.get('n', k));
            const slow = await outcome(slowGet(e, 'n', k));
            expect(fast, `key ${k.toString('hex')}: fast path vs slow path`).toEqual(slow);
            expect(typeof fast === 'string' ? fast : { value: fast.value, revision: fast.revision }, `key ${k.toString('hex')}: vs model`)
              .toEqual(m === undefined ? { value: null, revision: 0 } : { value: m.value.toString('hex'), revision: m.revision });
          }
        };
        try {
          for (const c of cmds) {
            if (c.t === 'put') {
              const v = valueOf(c.size);
              const rev = await e.put('n', KEYS[c.k], v);
              model.set(KEYS[c.k].toString('hex'), { value: v, revision: rev });
            } else if (c.t === 'del') {
              const rev = await e.delete('n', KEYS[c.k]);
              const had = model.delete(KEYS[c.k].toString('hex'));
              expect(rev !== undefined).toBe(had);
            } else if (c.t === 'cas') {
              const cur = model.get(KEYS[c.k].toString('hex'))?.revision ?? 0;
              const v = valueOf(c.size);
              if (c.right) {
                const rev = await e.put('n', KEYS[c.k], v, { ifRevision: cur });
                model.set(KEYS[c.k].toString('hex'), { value: v, revision: rev });
              } else {
                expect(await codeOf(e.put('n', KEYS[c.k], v, { ifRevision: cur + 1000 }))).toBe('E_CAS_MISMATCH');
              }
            } else if (c.t === 'batch') {
              const ops = c.ops.map((o) => (o.size === null ? { type: 'delete' as const, key: KEYS[o.k] } : { type: 'put' as const, key: KEYS[o.k], value: valueOf(o.size) }));
              const rev = await e.batch('n', ops);
              for (const o of ops) {
                if (o.type === 'put') model.set(o.key.toString('hex'), { value: o.value, revision: rev });
                else model.delete(o.key.toString('hex'));
              }
            } else if (c.t === 'reclaim') {
              await e.reclaim();
            } else if (c.t === 'reopen') {
              hits += e.stats().readCacheHits;
              await e.close();
              e = (await open(dir, opts)) as Eng;
            } else if (c.t === 'drop') {
              await e.dropNamespace('n', { force: true });
              await e.createNamespace('n');
              model.clear();
            } else {
              const after = c.after === null ? undefined : KEYS[c.after];
              const prefix = c.prefix === null ? undefined : PREFIXES[c.prefix];
              const limit = c.limit === null ? undefined : c.limit;
              let want = [...model.entries()].map(([h, m]) => ({ key: Buffer.from(h, 'hex'), revision: m.revision, size: m.value.length }))
                .sort((a, b) => cmpBuf(a.key, b.key));
              if (after !== undefined) want = want.filter((w) => cmpBuf(w.key, after) > 0);
              if (prefix !== undefined) want = want.filter((w) => w.key.subarray(0, prefix.length).equals(prefix));
              if (limit !== undefined) want = want.slice(0, limit);
              const got = e.list('n', { after, prefix, limit }).map((g) => ({ key: g.key.toString('hex'), revision: g.revision, size: g.size }));
              expect(got, `list after=${after?.toString('hex')} prefix=${prefix?.toString('hex')} limit=${limit}`)
                .toEqual(want.map((w) => ({ ...w, key: w.key.toString('hex') })));
            }
            await check();
          }
          hits += e.stats().readCacheHits;
        } finally {
          await e.close().catch(() => {});
        }
      }),
      { seed, numRuns: Number(process.env.READ_PATH_RUNS ?? 40) },
    );
    expect(hits, 'the cache served gets (else this test compared the slow path with itself)').toBeGreaterThan(1000);
  }, 300_000);
});

describe('read path: damaged bytes are E_CORRUPT on both paths, never data', () => {
  it('a flipped byte in a record: E_CORRUPT from get (every time) and from the slow path; other keys read', async () => {
    const dir = newDir('read-path-corrupt');
    // small segments: k7 lands in a sealed one, which recovery reads through its footer (an
    // unsealed one would be scanned and cut at the damage, a torn tail)
    const opts = { sync: 'none' as const, segmentMaxBytes: 2048 };
    let e = (await open(dir, opts)) as Eng;
    await e.createNamespace('n');
    for (let i = 0; i < 50; i++) await e.put('n', `k${i}`, Buffer.alloc(100, i));
    await e.close();
    // flip one byte of k7's value in its segment
    const pattern = Buffer.concat([Buffer.from('k7'), Buffer.alloc(100, 7)]);
    const seg = segFiles(dir, 'n').map((f) => path.join(dir, 'ns', 'n', f)).find((f) => fs.readFileSync(f).includes(pattern))!;
    expect(seg).not.toBe(path.join(dir, 'ns', 'n', segFiles(dir, 'n').at(-1)!));
    const bytes = fs.readFileSync(seg);
    const at = bytes.indexOf(pattern);
    bytes[at + 2 + 50] ^= 0x10;
    fs.writeFileSync(seg, bytes);
    e = (await open(dir, opts)) as Eng;
    try {
      expect(await codeOf(e.get('n', 'k7'))).toBe('E_CORRUPT');
      expect(await codeOf(slowGet(e, 'n', Buffer.from('k7')))).toBe('E_CORRUPT');
      expect(await codeOf(e.get('n', 'k7'))).toBe('E_CORRUPT'); // the block was dropped and read again: still damaged
      for (const i of [6, 8, 0, 49]) expect((await e.get('n', `k${i}`))!.value).toEqual(Buffer.alloc(100, i));
      expect(e.stats().readCacheHits).toBeGreaterThan(0);
    } finally {
      await e.close();
    }
  });

  it('a flipped byte in a blob: E_CORRUPT on both paths, before and after reopen', async () => {
    const dir = newDir('read-path-blob');
    let e = (await open(dir, { sync: 'none', valueThreshold: 1024 })) as Eng;
    await e.createNamespace('n');
    await e.put('n', 'big', Buffer.alloc(4096, 3));
    await e.put('n', 'small', Buffer.alloc(10, 4));
    expect((await e.get('n', 'big'))!.value).toEqual(Buffer.alloc(4096, 3));
    const blobDir = path.join(dir, 'values');
    const blob = path.join(blobDir, fs.readdirSync(blobDir).find((f) => f.startsWith('blob-'))!);
    const b = fs.readFileSync(blob);
    b[b.length - 100] ^= 1;
    fs.writeFileSync(blob, b);
    for (let round = 0; round < 2; round++) {
      expect(await codeOf(e.get('n', 'big'))).toBe('E_CORRUPT');
      expect(await codeOf(slowGet(e, 'n', Buffer.from('big')))).toBe('E_CORRUPT');
      expect((await e.get('n', 'small'))!.value).toEqual(Buffer.alloc(10, 4));
      await e.close();
      e = (await open(dir, { sync: 'none', valueThreshold: 1024 })) as Eng;
    }
    await e.close();
  });
});

describe('read path: the cache follows a growing active segment and evicts', () => {
  it('puts and gets interleaved in one block, a one-block cache, many keys: every get is the last put', async () => {
    const dir = newDir('read-path-grow');
    // one 32 KiB block of cache, records of ~150 bytes: the active block grows under the cache
    const e = (await open(dir, { sync: 'none', readCacheBytes: 32 * 1024 })) as Eng;
    await e.createNamespace('n');
    const want = new Map<number, Buffer>();
    for (let i = 0; i < 2000; i++) {
      const k = (i * 37) % 300;
      const v = Buffer.alloc(100, i & 0xff);
      v.writeUInt32LE(i, 0);
      await e.put('n', `key-${k}`, v);
      want.set(k, v);
      const probe = (i * 13) % 300;
      const got = await e.get('n', `key-${probe}`);
      expect(got?.value, `key-${probe} after put ${i}`).toEqual(want.get(probe));
    }
    const s = e.stats();
    expect(s.readCacheHits).toBeGreaterThan(500);
    expect(s.readCacheBytes).toBeLessThanOrEqual(32 * 1024 * 1.125);
    await e.close();
  });
});

describe('list renumbers the keydir in key order, never under a running reclaim', () => {
  it('lists while a reclaim runs (entries it holds keep their numbers), then every key reads as the model says', async () => {
    const dir = newDir('read-path-renumber');
    const opts = { sync: 'none' as const, segmentMaxBytes: 64 * 1024, reclaimDeadRatio: 1 };
    let e = (await open(dir, opts)) as Eng;
    await e.createNamespace('n');
    const model = new Map<string, Buffer>();
    const put = async (k: string, v: Buffer): Promise<void> => {
      await e.put('n', k, v);
      model.set(k, v);
    };
    for (let i = 0; i < 3000; i++) await put(`k${(i * 7919) % 3000}`, Buffer.alloc(50, i & 0xff));
    await e.close();
    e = (await open(dir, opts)) as Eng; // renumbered in key order at open
    // dead bytes for reclaim, and 1/8+ new keys so that the next list wants to renumber
    for (let i = 0; i < 3000; i += 2) await put(`k${i}`, Buffer.alloc(60, (i + 1) & 0xff));
    for (let i = 0; i < 600; i++) await put(`new${(i * 31) % 600}`, Buffer.alloc(40, i & 0xff));
    const st = e.namespaces.get('n')!;
    expect(st.keydir.wantsRenumber()).toBe(true);
    const r = e.reclaim();
    for (let i = 0; i < 1000 && st.reclaiming === null; i++) await Promise.resolve(); // until it holds entry numbers
    let listsDuringReclaim = 0;
    let batchNo = 0;
    while (st.reclaiming !== null) {
      // new keys (1/8+ of them) while the reclaim copies: the next list wants to renumber again
      const ops = Array.from({ length: 600 }, (_, i) => ({ type: 'put' as const, key: `b${batchNo}-${i}`, value: Buffer.alloc(30, batchNo) }));
      batchNo++;
      await e.batch('n', ops);
      for (const o of ops) model.set(o.key, o.value);
      if (st.reclaiming === null) break;
      const want = [...model.keys()].sort((a, b) => cmpBuf(Buffer.from(a), Buffer.from(b)));
      expect(e.list('n').map((x) => x.key.toString())).toEqual(want);
      listsDuringReclaim++;
    }
    expect((await r).relocatedBytes).toBeGreaterThan(0);
    expect(listsDuringReclaim, 'list ran while the reclaim held entry numbers').toBeGreaterThan(0);
    e.list('n'); // no reclaim now: renumbers
    expect(st.keydir.wantsRenumber()).toBe(false);
    for (const [k, v] of model) {
      expect((await e.get('n', k))?.value, k).toEqual(v);
      expect((await slowGet(e, 'n', Buffer.from(k)))?.value, k).toEqual(v);
    }
    await e.close();
    e = (await open(dir, opts)) as Eng;
    for (const [k, v] of model) expect((await e.get('n', k))?.value, `${k} after reopen`).toEqual(v);
    await e.close();
  });
});

describe('key sort: the radix sort orders as Buffer.compare', () => {
  it('random keys with long shared prefixes, 0x00 bytes, prefixes of each other (enough of them for the radix passes)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom('', 'common/prefix/12345678/', '\x00\x00\x00\x00\x00\x00\x00\x00'), fc.uint8Array({ maxLength: 20, size: 'max' })), { minLength: 30, maxLength: 400, size: 'max' }),
        (parts) => {
          const k = new Keydir();
          const keys = new Map<string, Buffer>();
          for (const [pre, rest] of parts) {
            const key = Buffer.concat([Buffer.from(pre, 'latin1'), Buffer.from(rest)]);
            if (key.length === 0) continue;
            keys.set(key.toString('hex'), key);
            k.set(key, 1, 0, 1, 1, 0, 0);
          }
          const { arr, len } = k.sortedEntries();
          const got = Array.from(arr.subarray(0, len), (e) => k.keyCopy(e).toString('hex'));
          expect(got).toEqual([...keys.values()].sort(cmpBuf).map((b) => b.toString('hex')));
          // the sorter alone, on a shuffled copy
          const a = Uint32Array.from(arr.subarray(0, len)).reverse();
          sortEntriesByKey(a, a.length, k, (x, y) => k.compareEntries(x, y));
          expect(Array.from(a)).toEqual(Array.from(arr.subarray(0, len)));
        },
      ),
      { numRuns: 300 },
    );
  });
});
