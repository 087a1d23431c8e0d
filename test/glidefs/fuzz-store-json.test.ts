// Decoder fuzz: the JSON objects of the store that are not log records — the store marker
// (glidefs/store-marker.ts decodeMarker) and the volume lease (glidefs/lease.ts parseLease, and what
// reads a parsed lease: freeReason, leasedError). Byte mutations of valid objects, and random JSON
// values put into their fields (wrong types, fractions, negatives, huge numbers, 1e400 = Infinity),
// must each give a GlideFsError with a code (E_CORRUPT / E_VERSION) — never a raw TypeError/RangeError —
// and whatever is accepted must be well-formed (what the consumers rely on).
// Runs: GLIDEFS_FUZZ_RUNS (default 400 per property); replay: GLIDEFS_FUZZ_SEED (printed).
import fc from 'fast-check';
import { expect, it } from 'vitest';
import { GlideFsError } from '../../glidefs/index.js';
import { LEASE_FORMAT, LEASE_VERSION, freeReason, leasedError, parseLease, type LeaseBody } from '../../glidefs/lease.js';
import { MARKER_FORMAT, MARKER_VERSION, decodeMarker, encodeMarker, newMarker } from '../../glidefs/store-marker.js';
import { fuzzParams, mutate, mutationArb } from './model/fuzz.js';

const isNat = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
/** A time a Date can show (ms since the epoch). */
const isTime = (x: unknown) => typeof x === 'number' && x >= 0 && x <= 8.64e15;

/** Odd JSON values: wrong types, fractions, negatives, beyond 2^53, Infinity (1e400), nested. */
const oddJson: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('null', 'true', 'false', '0', '-1', '1.5', '1e400', '-1e400', '9007199254740993', '8.64e15', '8.65e15', '""', '"1"', '"false"', '[]', '{}', '[1]', '"x"'),
  fc.json({ maxDepth: 2 }),
);

/** Typed error or a value `ok` accepts; anything else fails with the input. */
function expectTyped<T>(input: string | Buffer, fn: () => T, ok: (v: T) => string | null): void {
  let v: T;
  try {
    v = fn();
  } catch (err) {
    if (!(err instanceof GlideFsError) || !['E_CORRUPT', 'E_VERSION'].includes(err.code)) {
      throw new Error(`raw or unexpected error ${(err as Error)?.name} ${(err as { code?: string }).code ?? ''}: ${(err as Error)?.message} for input ${String(input).slice(0, 400)}`);
    }
    return;
  }
  const why = ok(v);
  if (why !== null) throw new Error(`accepted a malformed value (${why}): ${String(input).slice(0, 400)}`);
}

// ------------------------------------------------------------------ store marker

function markerOk(m: ReturnType<typeof decodeMarker>): string | null {
  if (m.format !== MARKER_FORMAT) return 'format';
  if (!Number.isInteger(m.version) || m.version < 1 || m.version > MARKER_VERSION) return `version ${m.version}`;
  if (typeof m.storeId !== 'string' || !/^[0-9a-f-]{8,64}$/.test(m.storeId)) return 'storeId';
  if (typeof m.createdAt !== 'string') return 'createdAt';
  return null;
}

it('store marker: mutated bytes give E_CORRUPT/E_VERSION or a well-formed marker', () => {
  fc.assert(
    fc.property(mutationArb, (muts) => {
      const good = encodeMarker(newMarker());
      const bad = mutate(good, muts);
      expectTyped(bad, () => decodeMarker(bad, 'fuzz'), markerOk);
    }),
    fuzzParams('store marker bytes'),
  );
});

it('store marker: odd JSON in each field gives E_CORRUPT/E_VERSION or a well-formed marker', () => {
  fc.assert(
    fc.property(fc.constantFrom('format', 'version', 'storeId', 'createdAt', '*'), oddJson, (field, value) => {
      const m = newMarker() as unknown as Record<string, unknown>;
      const text = field === '*' ? value : JSON.stringify(m).replace(new RegExp(`"${field}":("[^"]*"|[^,}]*)`), `"${field}":${value}`);
      expectTyped(text, () => decodeMarker(Buffer.from(text), 'fuzz'), markerOk);
    }),
    fuzzParams('store marker fields'),
  );
});

// ------------------------------------------------------------------ volume lease

function lease(): LeaseBody {
  const now = Date.now();
  return {
    format: LEASE_FORMAT,
    version: LEASE_VERSION,
    volume: 'ab'.repeat(16),
    name: 'v',
    holder: { token: 'tok', host: 'elsewhere', pid: 4242, catalog: '/c.db' },
    acquiredAt: now,
    renewedAt: now,
    expiresAt: now + 30_000,
    durationMs: 30_000,
    released: false,
    n: 3,
  };
}

/** What freeReason/leasedError/acquire/gc rely on. */
function leaseOk(b: LeaseBody): string | null {
  if (b.format !== LEASE_FORMAT) return 'format';
  if (!Number.isInteger(b.version) || b.version < 1 || b.version > LEASE_VERSION) return `version ${b.version}`;
  for (const f of ['acquiredAt', 'renewedAt', 'expiresAt'] as const) if (!isTime(b[f])) return `${f} ${b[f]}`;
  if (!(Number.isFinite(b.durationMs) && b.durationMs >= 0) || !(Number.isFinite(b.n) && b.n >= 0)) return 'durationMs/n';
  if (typeof b.released !== 'boolean') return `released ${JSON.stringify(b.released)}`;
  if (typeof b.volume !== 'string' || typeof b.name !== 'string') return 'volume/name';
  const h = b.holder as unknown as Record<string, unknown>;
  if (h === null || typeof h !== 'object' || typeof h.token !== 'string' || typeof h.host !== 'string' || typeof h.catalog !== 'string') return 'holder';
  if (!Number.isSafeInteger(h.pid) || (h.pid as number) <= 0) return `holder pid ${String(h.pid)}`;
  return null;
}

/** Parses and then uses the lease as acquire/checkNotLeased do. */
function useLease(buf: Buffer): LeaseBody {
  const b = parseLease(buf, 'volumes/fuzz/lease');
  const now = Date.now();
  if (freeReason(b, now, 'mine', '/c.db') === null) leasedError('v', 'fuzz', b, now);
  return b;
}

it('lease: mutated bytes give E_CORRUPT/E_VERSION or a well-formed lease', () => {
  fc.assert(
    fc.property(mutationArb, (muts) => {
      const bad = mutate(Buffer.from(JSON.stringify(lease())), muts);
      expectTyped(bad, () => useLease(bad), leaseOk);
    }),
    fuzzParams('lease bytes'),
  );
});

const LEASE_FIELDS = ['format', 'version', 'volume', 'name', 'holder', 'token', 'host', 'pid', 'catalog', 'acquiredAt', 'renewedAt', 'expiresAt', 'durationMs', 'released', 'n', '*'];

it('lease: odd JSON in each field gives E_CORRUPT/E_VERSION or a well-formed lease (freeReason/leasedError never throw raw)', () => {
  fc.assert(
    fc.property(fc.constantFrom(...LEASE_FIELDS), oddJson, (field, value) => {
      const text =
        field === '*'
          ? value
          : field === 'holder'
            ? JSON.stringify(lease()).replace(/"holder":\{[^}]*\}/, `"holder":${value}`)
            : JSON.stringify(lease()).replace(new RegExp(`"${field}":("[^"]*"|[^,}]*)`), `"${field}":${value}`);
      expectTyped(text, () => useLease(Buffer.from(text)), leaseOk);
    }),
    fuzzParams('lease fields'),
  );
});

it('lease: the examples each check was seen failing on', () => {
  // expiresAt past what a Date can show: leasedError threw a raw RangeError (toISOString)
  const far = JSON.stringify({ ...lease(), expiresAt: 1e16 });
  expectTyped(far, () => useLease(Buffer.from(far)), leaseOk);
  // released as a string: a corrupt lease was taken as released (free)
  const str = JSON.stringify({ ...lease(), released: 'no' });
  expect(() => parseLease(Buffer.from(str), 'k')).toThrow(/E_CORRUPT/);
  // a lease naming pid 0 or -1 (process.kill(-1, 0) probes every process) is not a holder
  expect(() => parseLease(Buffer.from(JSON.stringify({ ...lease(), holder: { ...lease().holder, pid: -1 } })), 'k')).toThrow(/E_CORRUPT/);
});
