// Decoder fuzz: checkpoint records as their readers see them (restore.ts rebuilding the catalog from
// the store, checkpoint.ts/volume open replaying the log). The frame and its checksum are right (the
// record is re-encoded with encodeRecord, as a buggy writer or a version skew would leave it), but its
// content is wrong: block indexes past the volume or huge, sizes that are no whole number of blocks or
// smaller than the blocks named, seq/volume differing from the key, duplicate indexes, a volume its own
// parent or base, a base that does not exist, odd names/families/flags, a hash of another block.
// restoreCatalog + open + read of every volume must give a GlideFsError with a code — never a raw
// Error, never a hang — and a volume that reads must read its original bytes.
// Runs: GLIDEFS_FUZZ_RUNS (default 400, capped at 30 here: each run builds a store); replay GLIDEFS_FUZZ_SEED.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { it } from 'vitest';
import { BLOCK_SIZE, GlideFs, GlideFsError, MemoryStore, restoreCatalog } from '../../glidefs/index.js';
import { KIND_CHECKPOINT, decodeRecord, encodeRecord, parseLogKey, type CheckpointRecord } from '../../glidefs/log-record.js';
import { mulberry32 } from '../../lib/prng.js';
import { fuzzParams } from './model/fuzz.js';

const BS = BLOCK_SIZE;
const NB = 4;

type Mut =
  | { t: 'index'; which: number; to: number }
  | { t: 'size'; to: number }
  | { t: 'seq'; add: number }
  | { t: 'volume'; seed: number }
  | { t: 'dup'; which: number }
  | { t: 'selfParent' }
  | { t: 'base'; self: boolean; seq: number }
  | { t: 'name'; to: string }
  | { t: 'family'; to: string }
  | { t: 'flags'; snapshot: unknown; createdAt: unknown }
  | { t: 'swapHash' };

const mutArb: fc.Arbitrary<Mut> = fc.oneof(
  fc.record({ t: fc.constant('index' as const), which: fc.nat(), to: fc.constantFrom(NB, NB + 1, 2 ** 31, 2 ** 32, 2 ** 32 + 1, Number.MAX_SAFE_INTEGER) }),
  fc.record({ t: fc.constant('size' as const), to: fc.constantFrom(0, 1, BS - 1, BS, BS + 1, 2 * BS, 2 ** 32 * BS, Number.MAX_SAFE_INTEGER) }),
  fc.record({ t: fc.constant('seq' as const), add: fc.constantFrom(-1, 1, 2, 1000) }),
  fc.record({ t: fc.constant('volume' as const), seed: fc.nat() }),
  fc.record({ t: fc.constant('dup' as const), which: fc.nat() }),
  fc.record({ t: fc.constant('selfParent' as const) }),
  fc.record({ t: fc.constant('base' as const), self: fc.boolean(), seq: fc.constantFrom(1, 2, 3, 99) }),
  fc.record({ t: fc.constant('name' as const), to: fc.constantFrom('', 'a/b', '..', '\u0000', 'x'.repeat(5000), 'v', 'other') }),
  fc.record({ t: fc.constant('family' as const), to: fc.constantFrom('', 'zz', '0'.repeat(32)) }),
  fc.record({ t: fc.constant('flags' as const), snapshot: fc.constantFrom(true, 'yes', 1, null), createdAt: fc.constantFrom(-1, 1e300, 'x', 0) }),
  fc.record({ t: fc.constant('swapHash' as const) }),
);

function hex32(seed: number): string {
  const r = mulberry32(seed);
  return Array.from({ length: 32 }, () => ((r() * 16) | 0).toString(16)).join('');
}

function apply(rec: CheckpointRecord, uuid: string, m: Mut): void {
  const meta = rec.meta as unknown as Record<string, unknown>;
  const live = rec.blocks.filter((b) => b[1] !== null);
  switch (m.t) {
    case 'index':
      if (rec.blocks.length > 0) rec.blocks[m.which % rec.blocks.length][0] = m.to;
      else rec.blocks.push([m.to, hex32(m.which)]);
      break;
    case 'size':
      meta.sizeBytes = m.to;
      break;
    case 'seq':
      rec.seq = Math.max(1, rec.seq + m.add);
      break;
    case 'volume':
      rec.volume = hex32(m.seed);
      break;
    case 'dup':
      if (rec.blocks.length > 0) rec.blocks.push([rec.blocks[m.which % rec.blocks.length][0], hex32(m.which)]);
      break;
    case 'selfParent':
      meta.parentUuid = uuid;
      meta.parentSeq = rec.seq;
      meta.parent = meta.name;
      break;
    case 'base':
      meta.base = { volume: m.self ? uuid : hex32(m.seq), seq: m.self ? rec.seq : m.seq };
      break;
    case 'name':
      meta.name = m.to;
      break;
    case 'family':
      meta.family = m.to;
      break;
    case 'flags':
      meta.snapshot = m.snapshot;
      meta.createdAt = m.createdAt;
      break;
    case 'swapHash':
      if (live.length >= 2) [live[0][1], live[1][1]] = [live[1][1], live[0][1]];
      break;
  }
}

/** A typed error is fine; anything else (raw error) fails with the mutation. */
async function typed<T>(what: string, m: Mut[], fn: () => Promise<T>): Promise<T | null> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof GlideFsError && typeof err.code === 'string') return null;
    throw new Error(`${what}: raw ${(err as Error)?.name}: ${(err as Error)?.message} after ${JSON.stringify(m)}\n${(err as Error)?.stack}`);
  }
}

it('checkpoint records with a right checksum and wrong content: restore, open and read give typed errors or the original bytes', async () => {
  const params = fuzzParams<[Mut[], number]>('checkpoint records');
  await fc.assert(
    fc.asyncProperty(fc.array(mutArb, { minLength: 1, maxLength: 3 }), fc.nat(), async (muts, seed) => {
      const root = mkdtempSync(join(tmpdir(), 'glidefs-fuzz-ckpt-'));
      const store = new MemoryStore();
      try {
        // a volume with two written blocks, flushed and checkpointed, and a fork of it
        const g = await GlideFs.open({ store, catalogPath: join(root, 'a.db'), cacheDir: join(root, 'cache-a'), gcGraceMs: 0 });
        await g.createVolume('v', NB * BS);
        const orig = Buffer.alloc(NB * BS);
        const r = mulberry32(seed);
        for (let i = 0; i < BS * 2; i++) orig[i] = (r() * 256) | 0;
        const vol = await g.openVolume('v');
        await vol.write(0, orig.subarray(0, 2 * BS));
        await vol.flush();
        await vol.checkpoint();
        await vol.close();
        if (seed % 2 === 0) await g.fork('v', 'f');
        const uuid = g.getVolume('v') as unknown as { uuid?: string };
        await g.close();
        // the newest checkpoint record of 'v'
        let best: { key: string; rec: CheckpointRecord } | null = null;
        for await (const k of store.list('volumes/')) {
          const lk = parseLogKey('', k);
          if (!lk) continue;
          const rec = decodeRecord((await store.get(k))!, k);
          if (rec.kind !== KIND_CHECKPOINT || rec.meta.name !== 'v') continue;
          if (!best || rec.seq > best.rec.seq) best = { key: k, rec };
        }
        if (!best) throw new Error(`no checkpoint record of 'v' (uuid ${uuid.uuid})`);
        const vu = parseLogKey('', best.key)!.uuid;
        for (const m of muts) apply(best.rec, vu, m);
        await store.put(best.key, await encodeRecord(best.rec));

        const restored = await typed('restoreCatalog', muts, () => restoreCatalog(store, '', join(root, 'b.db')));
        if (restored === null) return;
        const h = await GlideFs.open({ store, catalogPath: join(root, 'b.db'), cacheDir: join(root, 'cache-b'), gcGraceMs: 0 });
        try {
          for (const info of h.listVolumes()) {
            const got = await typed(`open+read '${info.name}'`, muts, async () => {
              const v = await h.openVolume(info.name);
              try {
                return await v.read(0, info.sizeBytes);
              } finally {
                await v.close();
              }
            });
            if (got === null) continue;
            if (info.sizeBytes === NB * BS && !got.equals(orig)) {
              let i = 0;
              while (got[i] === orig[i]) i++;
              throw new Error(`volume '${info.name}' reads wrong bytes (from byte ${i}, block ${Math.floor(i / BS)}) after ${JSON.stringify(muts)}`);
            }
          }
        } finally {
          await h.close();
        }
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    }),
    { ...params, numRuns: Math.min(params.numRuns ?? 30, Number(process.env.GLIDEFS_FUZZ_RUNS ?? 30)), timeout: 30_000 },
  );
}, 600_000);
