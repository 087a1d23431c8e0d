// Everything the engine decodes from disk, fuzzed (fast-check): a data directory with sealed segments
// (footers), an active segment, a reclaim's copies, batches, tombstones, blobs and meta.json, then one
// or more random damages to its files (bit flips anywhere, in footers/trailers especially, bytes
// overwritten, cuts, garbage appended, meta.json replaced by other JSON, a blob cut or changed). Then
// open, get/stat every key, list, watch replay from revision 1, reclaim, get again, close.
// Every failure must be a KvError with a code (never a raw Error, never a hang), and every value
// returned must be the one written for that key at the revision returned (never wrong data).
// Hunt: DISK_FUZZ_RUNS=2000; replay: DISK_FUZZ_SEED=... DISK_FUZZ_PATH=...
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, it } from 'vitest';
import { open, KvError, type WatchEvent } from '../../src/index.js';
import { rmDir, tmpDir } from './helpers.js';

const root = tmpDir('disk-fuzz');
const template = path.join(root, 'template');
/** revision -> key -> value (undefined: a tombstone) as written. */
const written = new Map<number, Map<string, Buffer | undefined>>();
let files: string[] = [];

afterAll(() => rmDir(root));

function val(i: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let j = 0; j < n; j++) b[j] = (i * 31 + j * 7) & 0xff;
  return b;
}

function note(rev: number, key: string, v: Buffer | undefined): void {
  if (!written.has(rev)) written.set(rev, new Map());
  written.get(rev)!.set(key, v);
}

beforeAll(async () => {
  const e = await open(template, { valueThreshold: 64, segmentMaxBytes: 600, sync: 'none', reclaimMinBytes: 1 << 30 });
  await e.createNamespace('n');
  await e.createNamespace('m');
  for (let i = 0; i < 40; i++) {
    const k = `k${i % 9}`;
    const v = val(i, [0, 5, 63, 64, 200][i % 5]);
    note(await e.put('n', k, v), k, v);
    if (i % 7 === 3) note((await e.delete('n', `k${(i + 2) % 9}`)) ?? -1, `k${(i + 2) % 9}`, undefined);
    if (i % 11 === 5) {
      const ops = [{ type: 'put' as const, key: 'b1', value: val(i, 10) }, { type: 'put' as const, key: 'b2', value: val(i + 1, 100) },
        { type: 'delete' as const, key: 'k1' }];
      const rev = await e.batch('n', ops);
      note(rev, 'b1', val(i, 10));
      note(rev, 'b2', val(i + 1, 100));
      note(rev, 'k1', undefined);
    }
    if (i === 20) await e.reclaim();
    if (i % 5 === 0) note(await e.put('m', `x${i}`, val(i, 70)), `x${i}`, val(i, 70));
  }
  written.delete(-1);
  await e.close();
  const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((x) =>
    (x.isDirectory() ? walk(path.join(d, x.name)) : [path.relative(template, path.join(d, x.name))]));
  files = walk(template).filter((f) => f !== 'LOCK').sort();
});

type Damage =
  | { kind: 'flip'; file: number; at: number; bit: number }
  | { kind: 'trailer'; file: number; at: number; byte: number }
  | { kind: 'overwrite'; file: number; at: number; bytes: number[] }
  | { kind: 'cut'; file: number; at: number }
  | { kind: 'append'; file: number; bytes: number[] }
  | { kind: 'meta'; json: unknown };

const damageArb: fc.Arbitrary<Damage> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), file: fc.nat(), at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('trailer' as const), file: fc.nat(), at: fc.integer({ min: 1, max: 80 }), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('overwrite' as const), file: fc.nat(), at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
    bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 12 }) }),
  fc.record({ kind: fc.constant('cut' as const), file: fc.nat(), at: fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }) }),
  fc.record({ kind: fc.constant('append' as const), file: fc.nat(), bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 64 }) }),
  fc.record({ kind: fc.constant('meta' as const), json: fc.oneof(fc.jsonValue(), fc.record({
    version: fc.constantFrom(1, 1, 2, '1', null), revision: fc.oneof(fc.nat(), fc.constantFrom(-1, 1.5, 2 ** 49, '5', null)),
    compacted: fc.oneof(fc.constant({}), fc.dictionary(fc.constantFrom('n', 'm', 'z'), fc.oneof(fc.nat(), fc.constant(-3), fc.constant('x')))),
    obsolete: fc.oneof(fc.constant({}), fc.dictionary(fc.constantFrom('n', 'm', '../x'), fc.oneof(fc.array(fc.nat({ max: 40 })), fc.constant('1')))),
    counters: fc.oneof(fc.constant(undefined), fc.record({ compactionBytes: fc.oneof(fc.nat(), fc.constant(-1)) })),
  }, { requiredKeys: ['version'] })) }),
);

function applyDamage(dir: string, d: Damage): string {
  if (d.kind === 'meta') {
    fs.writeFileSync(path.join(dir, 'meta.json'), JSON.stringify(d.json) ?? 'null');
    return `meta.json := ${JSON.stringify(d.json)?.slice(0, 200)}`;
  }
  const rel = files[d.file % files.length];
  const f = path.join(dir, rel);
  if (!fs.existsSync(f)) return `${rel}: gone already`;
  const b = fs.readFileSync(f);
  if (d.kind === 'append') {
    fs.appendFileSync(f, Buffer.from(d.bytes));
    return `${rel}: appended ${d.bytes.length} bytes`;
  }
  if (b.length === 0) return `${rel}: empty`;
  switch (d.kind) {
    case 'flip': { const p = Math.floor(d.at * b.length); b[p] ^= 1 << d.bit; fs.writeFileSync(f, b); return `${rel}: flip bit ${d.bit} at ${p}/${b.length}`; }
    case 'trailer': { const p = Math.max(0, b.length - d.at); b[p] = d.byte; fs.writeFileSync(f, b); return `${rel}: byte ${p}/${b.length} := ${d.byte}`; }
    case 'overwrite': { const p = Math.floor(d.at * b.length); Buffer.from(d.bytes).copy(b, p); fs.writeFileSync(f, b); return `${rel}: overwrite at ${p}/${b.length}`; }
    case 'cut': { const p = Math.floor(d.at * b.length); fs.truncateSync(f, p); return `${rel}: cut at ${p}/${b.length}`; }
  }
}

function check(what: string, ns: string, key: Buffer, rev: number, value: Buffer | undefined, type: 'put' | 'delete'): void {
  const at = written.get(rev);
  const k = key.toString();
  if (at === undefined || !at.has(`${k}`)) throw new Error(`${what}: ${ns}/${k} at revision ${rev}: never written (wrong data)`);
  const w = at.get(k);
  if (type === 'delete' ? w !== undefined : w === undefined || value === undefined || !w.equals(value)) {
    throw new Error(`${what}: ${ns}/${k} at revision ${rev}: ${type} ${value?.toString('hex').slice(0, 40)} but was written ${w?.toString('hex').slice(0, 40)} (wrong data)`);
  }
}

async function typed<T>(what: string, fn: () => Promise<T> | T): Promise<T | KvError> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof KvError && typeof err.code === 'string') return err;
    throw new Error(`${what}: a non-KvError: ${(err as Error)?.stack ?? String(err)}`);
  }
}

async function withTimeout<T>(what: string, p: Promise<T>, ms = 20_000): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, rej) => (t = setTimeout(() => rej(new Error(`${what}: hung for ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

async function readAll(what: string, e: Awaited<ReturnType<typeof open>>): Promise<void> {
  for (const ns of e.listNamespaces()) {
    if (ns !== 'n' && ns !== 'm') throw new Error(`${what}: namespace ${ns} was never made`);
    const list = await typed(`${what}: list`, () => e.list(ns));
    if (list instanceof KvError) continue;
    for (const { key, revision } of list) {
      const g = await typed(`${what}: get ${key}`, () => e.get(ns, key));
      if (g instanceof KvError || g === undefined) continue;
      if (g.revision !== revision) throw new Error(`${what}: get ${ns}/${key} revision ${g.revision}, list says ${revision}`);
      check(`${what}: get`, ns, key, g.revision, g.value, 'put');
    }
    // replay: every event is one that was written
    const sub = await typed(`${what}: watch`, () => e.watch(ns, { prefix: '' }, { fromRevision: 1 }));
    if (sub instanceof KvError) continue;
    const through = e.stats().revision;
    await withTimeout(`${what}: replay`, (async () => {
      const it = sub[Symbol.asyncIterator]();
      try {
        for (;;) {
          const r = await typed(`${what}: replay`, () => Promise.race([it.next(),
            new Promise<'idle'>((res) => setTimeout(() => res('idle'), 300))]));
          if (r instanceof KvError || r === 'idle' || r.done) break;
          const ev: WatchEvent = r.value;
          check(`${what}: replay`, ns, ev.key, ev.revision, ev.value, ev.type);
          if (ev.revision >= through) break;
        }
      } finally {
        sub.close();
      }
    })());
  }
}

it('a damaged data directory: typed errors only, never wrong data', async () => {
  const seed = process.env.DISK_FUZZ_SEED !== undefined ? Number(process.env.DISK_FUZZ_SEED) : undefined;
  const p = process.env.DISK_FUZZ_PATH;
  let n = 0;
  await fc.assert(fc.asyncProperty(fc.array(damageArb, { minLength: 1, maxLength: 3 }), async (damages) => {
    const dir = path.join(root, `case-${n++}`);
    fs.cpSync(template, dir, { recursive: true });
    try {
      const what = damages.map((d) => applyDamage(dir, d)).join('; ');
      const e = await withTimeout(`${what}: open`, typed(`${what}: open`, () => open(dir, { valueThreshold: 64, onWarning: () => {} })));
      if (e instanceof KvError) return;
      try {
        await readAll(what, e);
        const r = await withTimeout(`${what}: reclaim`, typed(`${what}: reclaim`, () => e.reclaim()));
        if (!(r instanceof KvError)) await readAll(`${what} (after reclaim)`, e);
      } finally {
        await withTimeout(`${what}: close`, typed(`${what}: close`, () => e.close()));
      }
      // and again after a reopen (open may have repaired things)
      const e2 = await withTimeout(`${what}: reopen`, typed(`${what}: reopen`, () => open(dir, { valueThreshold: 64, onWarning: () => {} })));
      if (e2 instanceof KvError) return;
      try {
        await readAll(`${what} (reopened)`, e2);
      } finally {
        await e2.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }), { numRuns: Number(process.env.DISK_FUZZ_RUNS ?? 150), ...(seed !== undefined ? { seed } : {}), ...(p !== undefined ? { path: p, endOnFailure: true } : {}) });
}, 600_000);
