// Every public API of the engine with bad input (fast-check): a KvError with a code, and nothing
// changes — neither what the engine reports (namespaces, keys, values, revisions) nor a byte of
// the data directory. open() with bad options too (E_INVALID_ARGUMENT naming the option, no
// directory made).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { open, KvError, type Engine, type KvEngine } from '../../src/index.js';
import { rmDir, tmpDir } from './helpers.js';

const dir = tmpDir('bad-input');
let e: Engine & KvEngine;
afterAll(async () => {
  await e?.close();
  rmDir(dir);
});

beforeAll(async () => {
  e = await open(dir, { valueThreshold: 64, maxValueBytes: 4096, sync: 'always' });
  await e.createNamespace('n');
  await e.put('n', 'a', 'x');
  await e.put('n', 'big', Buffer.alloc(100, 1));
  await e.delete('n', 'a');
  await e.put('n', 'a', 'y');
});

function dirDigest(d: string): string {
  const h = crypto.createHash('sha256');
  const walk = (p: string) => {
    for (const name of fs.readdirSync(p).sort()) {
      const f = path.join(p, name);
      const st = fs.statSync(f);
      h.update(`${path.relative(d, f)}\0`);
      if (st.isDirectory()) walk(f);
      else h.update(fs.readFileSync(f));
    }
  };
  walk(d);
  return h.digest('hex');
}

async function engineDigest(): Promise<string> {
  const out: unknown[] = [e.listNamespaces(), e.stats().revision, e.stats().keys];
  for (const ns of e.listNamespaces()) {
    for (const { key, revision } of e.list(ns)) out.push([ns, key.toString('hex'), revision, (await e.get(ns, key))!.value.toString('hex')]);
  }
  return JSON.stringify(out);
}

const badKey = fc.oneof(
  fc.constantFrom<unknown>('', Buffer.alloc(0), Buffer.alloc(1025, 0x61), 'x'.repeat(1025), 5, null, undefined, {}, [], true, NaN, 1n,
    Symbol('k'), () => 'a', new Uint16Array(0)),
  fc.integer(), fc.object(),
);
const badNs = fc.oneof(
  fc.constantFrom<unknown>('', '/', 'a/b', '.', '..', 'a\0b', 'x'.repeat(256), '\ud800', 5, null, undefined, {}, ['n'], Buffer.from('n')),
  fc.integer(),
);
const badRev = fc.constantFrom<unknown>(-1, NaN, 1.5, Infinity, -Infinity, '1', null, {}, 2 ** 53, -0.5, 1n, [1]);
const badValue = fc.constantFrom<unknown>(5, null, {}, [1, 2], true, Buffer.alloc(4097), 'v'.repeat(4097), 1n, NaN);
const badLimit = fc.constantFrom<unknown>(-1, NaN, '3', {}, -Infinity, 1n); // (null = the default, as for options)
const goodKey = fc.constantFrom('a', 'big', 'zz');

type Call = { what: string; run: () => unknown };
const calls: fc.Arbitrary<Call> = fc.oneof(
  badKey.map((k) => ({ what: `put key ${String(k).slice(0, 20)}`, run: () => e.put('n', k as string, 'v') })),
  badNs.map((ns) => ({ what: `put ns ${String(ns).slice(0, 20)}`, run: () => e.put(ns as string, 'k', 'v') })),
  badValue.map((v) => ({ what: `put value ${String(v).slice(0, 20)}`, run: () => e.put('n', 'k', v as string) })),
  fc.tuple(goodKey, badRev).map(([k, r]) => ({ what: `put ifRevision ${String(r)}`, run: () => e.put('n', k, 'v', { ifRevision: r as number }) })),
  fc.tuple(goodKey, badRev).map(([k, r]) => ({ what: `delete ifRevision ${String(r)}`, run: () => e.delete('n', k, { ifRevision: r as number }) })),
  badKey.map((k) => ({ what: `delete key`, run: () => e.delete('n', k as string) })),
  badNs.map((ns) => ({ what: `delete ns`, run: () => e.delete(ns as string, 'a') })),
  badKey.map((k) => ({ what: `get key`, run: () => e.get('n', k as string) })),
  badNs.map((ns) => ({ what: `get ns`, run: () => e.get(ns as string, 'a') })),
  badKey.map((k) => ({ what: `stat key`, run: () => e.stat('n', k as string) })),
  badNs.map((ns) => ({ what: `list ns`, run: () => e.list(ns as string) })),
  badLimit.map((l) => ({ what: `list limit ${String(l)}`, run: () => e.list('n', { limit: l as number }) })),
  fc.constantFrom<unknown>(5, {}, null, [1]).map((p) => ({ what: `list prefix ${String(p)}`, run: () => e.list('n', { prefix: p as string }) })),
  fc.constantFrom<unknown>(5, {}, [1]).map((p) => ({ what: `list after ${String(p)}`, run: () => e.list('n', { after: p as string }) })),
  fc.oneof(
    fc.constantFrom<unknown>(null, 5, 'ops', {}, [null], [5], [{ type: 'get', key: 'a' }], [{ type: 'put', key: 'a' }],
      [{ type: 'put', key: 'a', value: 'v' }, { type: 'put', key: '', value: 'v' }],
      [{ type: 'put', key: 'a', value: 'v' }, { type: 'delete', key: 5 }],
      [{ type: 'put', key: 'a', value: 'v' }, { type: 'put', key: 'b', value: Buffer.alloc(4097) }],
      [{ type: 'put', key: 'a', value: Buffer.alloc(100, 2) }, { type: 'put', key: 'b', value: 7 }]),
    badKey.map((k) => [{ type: 'put', key: 'ok', value: 'v' }, { type: 'delete', key: k }]),
  ).map((ops) => ({ what: `batch ${JSON.stringify(ops)?.slice(0, 60)}`, run: () => e.batch('n', ops as never) })),
  badNs.map((ns) => ({ what: `batch ns`, run: () => e.batch(ns as string, [{ type: 'put', key: 'a', value: 'v' }]) })),
  badNs.map((ns) => ({ what: `createNamespace ${String(ns).slice(0, 20)}`, run: () => e.createNamespace(ns as string) })),
  badNs.map((ns) => ({ what: `dropNamespace ${String(ns).slice(0, 20)}`, run: () => e.dropNamespace(ns as string, { force: true }) })),
  fc.constant({ what: 'dropNamespace not empty', run: () => e.dropNamespace('n') }),
  fc.constant({ what: 'createNamespace exists', run: () => e.createNamespace('n') }),
  badNs.map((ns) => ({ what: `watch ns`, run: () => e.watch(ns as string, { prefix: '' }) })),
  badKey.map((k) => ({ what: `watch key`, run: () => e.watch('n', { key: k as string }) })),
  fc.constantFrom<unknown>(null, 5, 'k', {}, { prefix: 5 }, { prefix: null }).map((s) => ({ what: `watch selector ${JSON.stringify(s)}`, run: () => e.watch('n', s as never) })),
  badRev.map((r) => ({ what: `watch fromRevision ${String(r)}`, run: () => e.watch('n', { prefix: '' }, { fromRevision: r as number }) })),
);

it('bad input to every API: a KvError with a code, and nothing changes', async () => {
  const disk0 = dirDigest(dir);
  const eng0 = await engineDigest();
  await fc.assert(fc.asyncProperty(calls, async (c) => {
    let err: unknown = null;
    try {
      const r = c.run();
      if (r instanceof Promise) await r;
    } catch (x) {
      err = x;
    }
    if (!(err instanceof KvError)) throw new Error(`${c.what}: expected a KvError, got ${err === null ? 'success' : (err as Error)?.stack ?? String(err)}`);
    expect(typeof err.code, c.what).toBe('string');
    expect(err.message.startsWith(`${err.code}: `), c.what).toBe(true);
    expect(e.poisoned, c.what).toBeNull();
  }), { numRuns: Number(process.env.BAD_INPUT_RUNS ?? 400) });
  expect(await engineDigest()).toBe(eng0);
  expect(dirDigest(dir)).toBe(disk0);
}, 120_000);

it('open() with bad options or a bad directory: E_INVALID_ARGUMENT naming the option, no directory made', async () => {
  const bad: Array<[string, unknown]> = [
    ['sync', 'x'], ['valueThreshold', -1], ['valueThreshold', NaN], ['valueThreshold', 1.5], ['valueThreshold', 'a'],
    ['maxValueBytes', NaN], ['maxNamespaces', 0], ['maxNamespaces', NaN], ['segmentMaxBytes', NaN], ['segmentMaxBytes', 'a'],
    ['reclaimDeadRatio', NaN], ['reclaimDeadRatio', 2], ['reclaimMinBytes', -1], ['reclaimMinBytes', NaN], ['maxOpenFiles', 0],
    ['maxOpenFiles', NaN], ['maxWatchers', NaN], ['maxWatchers', -1], ['watchQueueMax', 0], ['watchQueueMax', NaN],
    ['syncIoMaxBytes', NaN], ['readCacheBytes', NaN], ['readCacheBytes', 1.5], ['io', 5], ['io', {}], ['valueSeparator', 5],
    ['onWarning', 5],
  ];
  for (const [k, v] of bad) {
    const d = path.join(dir, `..`, `${path.basename(dir)}-opt-${k}`);
    let err: unknown = null;
    try {
      const x = await open(d, { [k]: v } as never);
      await x.close();
    } catch (y) {
      err = y;
    }
    expect(err instanceof KvError && err.code, `${k}=${String(v)}: ${String(err)}`).toBe(k === 'sync' ? 'E_INVALID_ARGUMENT' : 'E_INVALID_ARGUMENT');
    if (k !== 'sync') expect((err as Error).message, k).toContain(k);
    expect(fs.existsSync(d), `${k}: directory made`).toBe(false);
  }
  for (const d of [5, '', null, 'a\0b']) {
    let err: unknown = null;
    try {
      await open(d as string);
    } catch (y) {
      err = y;
    }
    expect(err instanceof KvError && err.code, String(d)).toBe('E_INVALID_ARGUMENT');
  }
}, 60_000);
