/**
 * Shared pieces of the decoder fuzz tests (test/glidefs/fuzz-*.test.ts): byte
 * mutations and fast-check parameters (seed printed, GLIDEFS_FUZZ_SEED replays,
 * GLIDEFS_FUZZ_RUNS sets the runs per property).
 */
import fc from 'fast-check';

export type Mutation =
  | { t: 'flip'; pos: number; bit: number }
  | { t: 'set'; pos: number; byte: number }
  | { t: 'truncate'; pos: number }
  | { t: 'extend'; bytes: Uint8Array }
  | { t: 'overwrite'; pos: number; bytes: Uint8Array }
  | { t: 'insert'; pos: number; bytes: Uint8Array }
  | { t: 'cut'; pos: number; len: number }
  | { t: 'random'; bytes: Uint8Array };

const pos = fc.nat();
export const mutationArb: fc.Arbitrary<Mutation[]> = fc.array(
  fc.oneof(
    { weight: 5, arbitrary: fc.record({ t: fc.constant('flip' as const), pos, bit: fc.nat(7) }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant('set' as const), pos, byte: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff, 0x22, 0x5b, 0x7b) }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant('truncate' as const), pos }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant('overwrite' as const), pos, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('insert' as const), pos, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('cut' as const), pos, len: fc.integer({ min: 1, max: 64 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('random' as const), bytes: fc.uint8Array({ maxLength: 200 }) }) },
  ),
  { minLength: 1, maxLength: 4 },
);

/** Applies the mutations; positions are taken modulo the length, at or after `from` when the buffer is long enough. */
export function mutate(src: Buffer, muts: Mutation[], from = 0): Buffer {
  let b = Buffer.from(src);
  const at = (p: number) => (b.length > from ? from + (p % (b.length - from)) : b.length === 0 ? 0 : p % b.length);
  for (const m of muts) {
    switch (m.t) {
      case 'flip':
        if (b.length > 0) b[at(m.pos)] ^= 1 << m.bit;
        break;
      case 'set':
        if (b.length > 0) b[at(m.pos)] = m.byte;
        break;
      case 'truncate':
        b = b.subarray(0, b.length === 0 ? 0 : at(m.pos));
        break;
      case 'extend':
        b = Buffer.concat([b, m.bytes]);
        break;
      case 'overwrite': {
        if (b.length === 0) break;
        const p = at(m.pos);
        Buffer.from(m.bytes).copy(b, p, 0, Math.min(m.bytes.length, b.length - p));
        break;
      }
      case 'insert': {
        const p = b.length === 0 ? 0 : at(m.pos);
        b = Buffer.concat([b.subarray(0, p), m.bytes, b.subarray(p)]);
        break;
      }
      case 'cut': {
        if (b.length === 0) break;
        const p = at(m.pos);
        b = Buffer.concat([b.subarray(0, p), b.subarray(Math.min(b.length, p + m.len))]);
        break;
      }
      case 'random':
        b = Buffer.from(m.bytes);
        break;
    }
  }
  return Buffer.from(b);
}

const envSeed = process.env.GLIDEFS_FUZZ_SEED;
export const fuzzSeed = envSeed !== undefined ? Number(envSeed) : (Date.now() ^ (process.pid << 10)) >>> 0;
export const fuzzRuns = Number(process.env.GLIDEFS_FUZZ_RUNS ?? 400);

export function fuzzParams<T = never>(name: string): fc.Parameters<T> {
  console.log(`fuzz ${name}: GLIDEFS_FUZZ_SEED=${fuzzSeed} runs ${fuzzRuns}`);
  return { numRuns: fuzzRuns, seed: fuzzSeed, interruptAfterTimeLimit: 60_000 } as fc.Parameters<T>;
}
