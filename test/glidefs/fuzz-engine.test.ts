// Decoder fuzz: the engine's on-disk formats (src/record.ts records, src/segment.ts footers,
// src/meta.ts meta.json), one decoder at a time and end to end (open a data directory with one
// mutated file). Mutations: bit flips, truncation, extension, overwritten/inserted/cut bytes,
// random bytes. A decoder answers "not valid" (false/null) or a typed KvError with a code, never
// a raw TypeError/RangeError; accepts only the original bytes (or crc-consistent ones); never
// hangs. End to end: open gives a KvError (E_CORRUPT/E_VERSION, or E_IO with an errno cause) or
// an engine whose every key reads back its original value or nothing — never other bytes.
// Runs: GLIDEFS_FUZZ_RUNS (default 400 per decoder property, 1/8 of it end to end); replay: GLIDEFS_FUZZ_SEED.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KvError, open } from '../../src/index.js';
import { decodeRecord, RecordView } from '../../src/record.js';
import { parseTrailer, readFooterBody, TRAILER_SIZE } from '../../src/segment.js';
import { readMeta } from '../../src/meta.js';
import { nodeFileIo } from '../../src/file-io.js';
import { fuzzParams, fuzzRuns, mutate, mutationArb } from './model/fuzz.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'glidefs-fuzz-engine-'));
const golden = path.join(root, 'golden');
const values = new Map<string, Buffer>();
/** Deleted keys and their old values: a damaged tombstone may bring the old value back, never other bytes. */
const deleted = new Map<string, Buffer>();
let segs: string[] = [];

beforeAll(async () => {
  // a data directory with sealed segments (footers), inline and separated values, tombstones and a batch
  const e = await open(golden, { sync: 'always', segmentMaxBytes: 4096, valueThreshold: 2048 });
  await e.createNamespace('n');
  for (let i = 0; i < 40; i++) {
    const v = Buffer.alloc(i % 7 === 0 ? 3000 : 10 + i * 13, i + 1);
    await e.put('n', `k${i}`, v);
    values.set(`k${i}`, v);
  }
  for (let i = 0; i < 40; i += 5) {
    await e.delete('n', `k${i}`);
    deleted.set(`k${i}`, values.get(`k${i}`)!);
    values.delete(`k${i}`);
  }
  await e.batch('n', [
    { type: 'put', key: 'b1', value: Buffer.from('one') },
    { type: 'put', key: 'b2', value: Buffer.from('two') },
  ]);
  values.set('b1', Buffer.from('one'));
  values.set('b2', Buffer.from('two'));
  await e.close();
  segs = fs.readdirSync(path.join(golden, 'ns', 'n')).filter((f) => f.endsWith('.seg')).sort();
  expect(segs.length).toBeGreaterThan(2);
}, 60_000);
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const segBytes = (i: number) => fs.readFileSync(path.join(golden, 'ns', 'n', segs[i % segs.length]));
const fileIdOf = (name: string) => parseInt(name.slice(0, 8), 16);

function noRaw<T>(what: string, fn: () => T): T {
  const t0 = performance.now();
  try {
    return fn();
  } catch (err) {
    throw new Error(`${what} threw a raw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
  } finally {
    expect(performance.now() - t0, `${what} took too long`).toBeLessThan(2000);
  }
}

/** The records of a segment as [offset, bytes] (a scan of the golden file). */
function records(buf: Buffer, end: number): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [];
  const v = new RecordView();
  let o = 0;
  while (o < end && decodeRecord(buf, o, end, v)) {
    out.push([o, Buffer.from(buf.subarray(o, o + v.len))]);
    o += v.len;
  }
  return out;
}

it('record decoder: a mutated segment yields only original records, never a raw error', () => {
  fc.assert(
    fc.property(fc.nat(), mutationArb, fc.array(fc.nat(), { maxLength: 32 }), (si, muts, starts) => {
      const orig = segBytes(si);
      const originals = new Set(records(orig, orig.length).map(([, b]) => b.toString('hex')));
      const bad = mutate(orig, muts);
      const v = new RecordView();
      // scan as recovery does, from 0 record by record, and from random offsets (a decoder must not throw anywhere)
      const offsets: number[] = [];
      for (let o = 0; o < bad.length && decodeRecord(bad, o, bad.length, v); o += v.len) offsets.push(o + v.len);
      for (const s of starts) offsets.push(s % (bad.length + 1));
      for (const o of [0, ...offsets]) {
        if (!noRaw('decodeRecord', () => decodeRecord(bad, o, bad.length, v))) continue;
        const rec = bad.subarray(o, o + v.len).toString('hex');
        if (originals.has(rec)) continue;
        // accepted bytes that were never written: only a crc collision could do that
        throw new Error(`decodeRecord accepted ${v.len} bytes at ${o} that are not an original record`);
      }
    }),
    fuzzParams('engine record'),
  );
});

it('footer decoder: a mutated footer is refused or is the original, never a raw error', () => {
  fc.assert(
    fc.property(fc.nat(), mutationArb, (si, muts) => {
      const name = segs[si % segs.length];
      const orig = segBytes(si);
      const bad = mutate(orig, muts, Math.max(0, orig.length - 200));
      const t = bad.subarray(Math.max(0, bad.length - TRAILER_SIZE));
      const tr = noRaw('parseTrailer', () => parseTrailer(Buffer.from(t), bad.length, fileIdOf(name)));
      if (tr === null) return;
      const body = bad.subarray(tr.dataEnd, tr.dataEnd + tr.bodyLen);
      const seen: string[] = [];
      const ok = noRaw('readFooterBody', () => readFooterBody(body, Buffer.from(t), tr.entries, (e) => seen.push(e.key.toString())));
      if (ok) expect(bad.subarray(tr.dataEnd).equals(orig.subarray(orig.length - (bad.length - tr.dataEnd))), 'a changed footer was accepted').toBe(true);
    }),
    fuzzParams('engine footer'),
  );
});

it('meta.json decoder: a mutated meta.json is refused with a typed error or reads well-formed', async () => {
  const good = fs.readFileSync(path.join(golden, 'meta.json'));
  const dir = path.join(root, 'meta');
  fs.mkdirSync(dir, { recursive: true });
  const shaped = fc.record({
    version: fc.constant(1),
    revision: fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.string(), fc.constant(2 ** 60)),
    compacted: fc.oneof(fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.string(), fc.constant(null)))),
  });
  await fc.assert(
    fc.asyncProperty(fc.oneof(mutationArb.map((m) => mutate(good, m)), fc.json().map((j) => Buffer.from(j)), shaped.map((o) => Buffer.from(JSON.stringify(o)))), async (bytes) => {
      fs.writeFileSync(path.join(dir, 'meta.json'), bytes);
      let m;
      try {
        m = await readMeta(nodeFileIo, dir);
      } catch (err) {
        if (err instanceof KvError && ['E_CORRUPT', 'E_VERSION'].includes(err.code)) return;
        throw new Error(`readMeta threw a raw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
      }
      // accepted: every number in it is a revision or a count — a non-negative safe integer
      const nat = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
      expect(nat(m.revision), `accepted revision ${m.revision}`).toBe(true);
      for (const [ns, r] of Object.entries(m.compacted)) expect(nat(r), `accepted compacted[${ns}] = ${JSON.stringify(r)}`).toBe(true);
    }),
    fuzzParams('engine meta'),
  );
});

it('end to end: open over one mutated file gives a typed error, or reads back only original values', async () => {
  const files = ['meta.json', ...segs.map((s) => path.join('ns', 'n', s))];
  let n = 0;
  await fc.assert(
    fc.asyncProperty(fc.nat(), mutationArb, async (fi, muts) => {
      const work = path.join(root, `e2e-${n++}`);
      fs.cpSync(golden, work, { recursive: true });
      const f = path.join(work, files[fi % files.length]);
      fs.writeFileSync(f, mutate(fs.readFileSync(f), muts));
      let e;
      try {
        e = await open(work, { segmentMaxBytes: 4096, valueThreshold: 2048, onWarning: () => undefined });
      } catch (err) {
        fs.rmSync(work, { recursive: true, force: true });
        if (!(err instanceof KvError)) throw new Error(`open threw a raw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
        const cause = (err as Error & { cause?: { code?: unknown } }).cause;
        if (err.code === 'E_IO' && !(typeof cause?.code === 'string' && /^E[A-Z]+$/.test(cause.code))) {
          throw new Error(`open hid a non-I/O failure as E_IO: ${err.message}`);
        }
        return;
      }
      try {
        for (const [k, v] of [...values, ...deleted]) {
          const got = await e.get('n', k).catch((err: unknown) => {
            if (err instanceof KvError) return undefined;
            throw err;
          });
          if (got !== undefined) expect(got.value.equals(v), `key ${k} reads other bytes than were written`).toBe(true);
        }
        for (const { key } of e.list('n')) expect(values.has(key.toString()) || deleted.has(key.toString()), `unknown key ${key}`).toBe(true);
      } finally {
        await e.close().catch(() => undefined);
        fs.rmSync(work, { recursive: true, force: true });
      }
    }),
    { ...fuzzParams('engine end to end'), numRuns: Math.max(10, Math.floor(fuzzRuns / 8)) },
  );
}, 300_000);
