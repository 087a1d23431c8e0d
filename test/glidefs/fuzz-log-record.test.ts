// Decoder fuzz: the volume log record (glidefs/log-record.ts decodeRecord).
// Random mutations of valid records (bit flips, truncation, extension, overwritten and random
// bytes), and mutations whose checksum is made right again (a buggy writer, a version skew: the
// checksum cannot stand for validity), and random JSON headers in a valid frame, must each give a
// GlideFsError with a code — never a raw TypeError/RangeError/SyntaxError/zlib error, never a hang —
// and whatever is accepted must be the original record or a well-formed one.
// Runs: GLIDEFS_FUZZ_RUNS (default 400 per property); replay: GLIDEFS_FUZZ_SEED (printed).
import { deflateRawSync } from 'node:zlib';
import { hash } from 'blake3';
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { GlideFsError } from '../../glidefs/index.js';
import {
  KIND_CHECKPOINT,
  KIND_DELETE,
  KIND_FLUSH,
  SECTOR_SIZE,
  decodeRecord,
  encodeRecord,
  popcount,
  type LogRecord,
} from '../../glidefs/log-record.js';
import { mutationArb, mutate, fuzzParams } from './model/fuzz.js';

const HEADER = 36;
const hex32 = fc.stringMatching(/^[0-9a-f]{32}$/);
const common = { volume: hex32, seq: fc.integer({ min: 1, max: 2 ** 40 }), time: fc.nat(), writer: fc.string({ maxLength: 40 }) };

const recordArb: fc.Arbitrary<LogRecord> = fc.oneof<fc.Arbitrary<LogRecord>[]>(
  fc.record({
    kind: fc.constant(KIND_CHECKPOINT as typeof KIND_CHECKPOINT),
    ...common,
    meta: fc.record({
      name: fc.string({ minLength: 1, maxLength: 20 }),
      sizeBytes: fc.integer({ min: 1, max: 64 }).map((n) => n * 131072),
      parent: fc.option(fc.string({ minLength: 1, maxLength: 20 })),
      parentUuid: fc.option(hex32),
      parentSeq: fc.option(fc.nat()),
      family: hex32,
      snapshot: fc.boolean(),
      createdAt: fc.nat(),
    }),
    blocks: fc.array(fc.tuple(fc.nat(63), hex32), { maxLength: 8 }),
  }) as fc.Arbitrary<LogRecord>,
  fc.record({
    kind: fc.constant(KIND_FLUSH as typeof KIND_FLUSH),
    ...common,
    blocks: fc.array(fc.tuple(fc.nat(63), fc.option(hex32)), { maxLength: 4 }) as fc.Arbitrary<Array<[number, string | null]>>,
    sectors: fc.array(
      fc.record({ index: fc.nat(63), mask: fc.integer({ min: 1, max: 0xffffffff }).map((m) => m & 0x80000007 || 1), hash: hex32, fill: fc.nat(255) }),
      { maxLength: 3 },
    ).map((ss) => ss.map((s) => ({ index: s.index, mask: s.mask >>> 0, hash: s.hash, data: Buffer.alloc(popcount(s.mask) * SECTOR_SIZE, s.fill) }))),
  }) as fc.Arbitrary<LogRecord>,
  fc.record({ kind: fc.constant(KIND_DELETE as typeof KIND_DELETE), ...common }) as fc.Arbitrary<LogRecord>,
);

/** Recomputes a frame's checksum (and, when asked, its length fields) after a mutation. */
function reframe(buf: Buffer, fixLengths: boolean): Buffer {
  if (buf.length < HEADER) return buf;
  const b = Buffer.from(buf);
  if (fixLengths) b.writeUInt32LE(b.length - HEADER, 12);
  (hash(Buffer.concat([b.subarray(0, 20), b.subarray(HEADER)]), { length: 16 }) as Buffer).copy(b, 20);
  return b;
}

const HEX32 = /^[0-9a-f]{32}$/;
const isNat = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;

/** What a consumer of a decoded record relies on (checkpoint.ts, volume-log.ts, restore.ts). */
function wellFormed(r: LogRecord): string | null {
  if (typeof r.volume !== 'string' || !isNat(r.seq) || r.seq < 1) return 'volume/seq';
  if (r.kind === KIND_DELETE) return null;
  if (!Array.isArray(r.blocks)) return 'blocks is not a list';
  for (const b of r.blocks) {
    if (!Array.isArray(b) || !isNat(b[0]) || !(b[1] === null || (typeof b[1] === 'string' && HEX32.test(b[1])))) return `bad block entry ${JSON.stringify(b)}`;
  }
  if (r.kind === KIND_CHECKPOINT) {
    const m = r.meta as unknown as Record<string, unknown>;
    if (m === null || typeof m !== 'object' || typeof m.name !== 'string' || !isNat(m.sizeBytes)) return 'bad meta';
    return null;
  }
  if (r.kind !== KIND_FLUSH || !Array.isArray(r.sectors)) return 'bad kind/sectors';
  for (const s of r.sectors) {
    if (!isNat(s.index) || !Number.isInteger(s.mask) || typeof s.hash !== 'string' || !HEX32.test(s.hash)) return 'bad sector entry';
    if (s.data.length !== popcount(s.mask) * SECTOR_SIZE) return 'sector data length';
  }
  return null;
}

/** Decodes; returns the record, or the GlideFsError; any other throw fails the test. */
function decode(buf: Buffer): LogRecord | GlideFsError {
  const t0 = performance.now();
  try {
    return decodeRecord(buf, 'fuzz');
  } catch (err) {
    if (!(err instanceof GlideFsError) || !/^E_[A-Z_]+$/.test(err.code)) {
      throw new Error(`decodeRecord threw a raw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
    }
    return err;
  } finally {
    expect(performance.now() - t0, 'decode took too long').toBeLessThan(2000);
  }
}

it('a mutated log record is refused with a typed error, or is the original', async () => {
  await fc.assert(
    fc.asyncProperty(recordArb, mutationArb, async (rec, muts) => {
      const buf = await encodeRecord(rec);
      const bad = mutate(buf, muts);
      const r = decode(bad);
      if (!(r instanceof GlideFsError)) expect(bad.equals(buf), 'a changed record was accepted').toBe(true);
      else expect(['E_CORRUPT', 'E_VERSION']).toContain(r.code);
    }),
    fuzzParams('log-record raw'),
  );
});

it('a mutated log record with a valid checksum is refused with a typed error, or decodes well-formed', async () => {
  await fc.assert(
    fc.asyncProperty(recordArb, mutationArb, fc.boolean(), async (rec, muts, fixLengths) => {
      const buf = await encodeRecord(rec);
      // mutate the body (and maybe the header fields), then make the checksum right again
      const bad = reframe(mutate(buf, muts, HEADER), fixLengths);
      const r = decode(bad);
      if (!(r instanceof GlideFsError)) expect(wellFormed(r), 'accepted a malformed record').toBeNull();
    }),
    fuzzParams('log-record rechecksummed'),
  );
});

it('a valid frame around any JSON header is refused with a typed error, or decodes well-formed', () => {
  fc.assert(
    fc.property(
      fc.constantFrom(KIND_CHECKPOINT, KIND_FLUSH, KIND_DELETE, 0, 4, 255),
      fc.oneof(fc.json(), fc.string(), fc.constant('{"volume":"a","seq":1,"sectors":[[0,1,"x"]]}')),
      fc.uint8Array({ maxLength: 64 }),
      fc.boolean(),
      fc.integer({ min: -8, max: 8 }),
      (kind, json, tail, deflate, jlenSkew) => {
        const j = Buffer.from(json, 'utf8');
        const len = Buffer.alloc(4);
        len.writeUInt32LE(Math.max(0, j.length + jlenSkew), 0);
        const raw = Buffer.concat([len, j, Buffer.from(tail)]);
        const stored = deflate ? deflateRawSync(raw) : raw;
        const head = Buffer.alloc(HEADER);
        head.write('GLFSLOG1', 0, 'latin1');
        head.writeUInt16LE(1, 8);
        head.writeUInt8(kind, 10);
        head.writeUInt8(deflate ? 1 : 0, 11);
        head.writeUInt32LE(stored.length, 12);
        head.writeUInt32LE(raw.length, 16);
        const r = decode(reframe(Buffer.concat([head, stored]), false));
        if (!(r instanceof GlideFsError)) expect(wellFormed(r), 'accepted a malformed record').toBeNull();
      },
    ),
    fuzzParams('log-record json'),
  );
});
