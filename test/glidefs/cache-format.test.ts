// Cache format 3: every slot entry carries a check (low 24 bits of CRC-32 over slot, block, state) and the
// header a CRC-32; a damaged table is E_CORRUPT naming the file and the slot, never another block's bytes
// (finding 5 of notes/s3/model.md). Format 2 is migrated at open keeping its dirty blocks; a newer format is
// E_VERSION. A fuzz of the slot table: every mutation gives E_CORRUPT / E_VERSION or exactly the right data.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { GlideFs, GlideFsError, MemoryStore } from '../../glidefs/index.js';
import { entryCheck, SLOT_ENTRY, SLOTS_HEADER, STATE_CLEAN, STATE_DIRTY, volumeCacheDir } from '../../glidefs/cache.js';

const BS = 131072;
const root = mkdtempSync(join(tmpdir(), 'glidefs-cache-format-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(root, `t${n++}`);
const fill = (i: number) => Buffer.alloc(BS, (i * 37 + 11) & 0xff);

/** The slot holding block `i` in a format-3 table (by its entry), or -1. */
function slotOf(table: Buffer, i: number): number {
  const slots = table.readUInt32LE(12);
  for (let s = 0; s < slots; s++) if (table.readUInt32LE(SLOTS_HEADER + s * SLOT_ENTRY) === i + 1) return s;
  return -1;
}

/** A volume of 16 blocks: block 0 flushed (clean in the cache), blocks 4 and 9 dirty; closed. */
async function setup() {
  const dir = fresh();
  const store = new MemoryStore();
  const opts = { store, catalogPath: join(dir, 'c.db'), cacheDir: join(dir, 'cache'), cacheSize: 2 * 1024 * 1024 };
  const g = await GlideFs.open(opts);
  await g.createVolume('v', 16 * BS);
  const vol = await g.openVolume('v');
  await vol.write(0, fill(0));
  await vol.write(2 * BS, fill(2));
  await vol.flush();
  await vol.write(4 * BS, fill(4));
  await vol.write(9 * BS + 4096, fill(9).subarray(0, 8192));
  const want = Buffer.alloc(16 * BS);
  fill(0).copy(want, 0);
  fill(2).copy(want, 2 * BS);
  fill(4).copy(want, 4 * BS);
  fill(9).copy(want, 9 * BS + 4096, 0, 8192);
  await vol.close();
  const vdir = volumeCacheDir(opts.cacheDir, g.catalog.volume('v').uuid);
  return { g, opts, vdir, want };
}

describe('cache slot table, format 3', () => {
  it('finding 5: one flipped bit in a dirty slot entry is E_CORRUPT naming the file and the slot, not block 4 read as block 6', async () => {
    const { g, vdir, want } = await setup();
    const path = join(vdir, 'slots');
    const good = readFileSync(path);
    expect(good.readUInt32LE(8)).toBe(3);
    const s = slotOf(good, 4);
    expect(s).toBeGreaterThanOrEqual(0);
    expect(good[SLOTS_HEADER + s * SLOT_ENTRY + 4]).toBeGreaterThanOrEqual(STATE_DIRTY); // dirty (synced by close)
    const bad = Buffer.from(good);
    bad[SLOTS_HEADER + s * SLOT_ENTRY] ^= 0b10; // block + 1: 5 -> 7 (block 6)
    writeFileSync(path, bad);
    const err = await g.openVolume('v').then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GlideFsError);
    expect(err).toMatchObject({ code: 'E_CORRUPT' });
    expect((err as Error).message).toContain(path);
    expect((err as Error).message).toContain(`slot ${s}`);
    expect(readFileSync(path).equals(bad)).toBe(true); // nothing changed
    writeFileSync(path, good);
    const vol = await g.openVolume('v');
    expect((await vol.read(0, 16 * BS)).equals(want)).toBe(true);
    expect(vol.dirtyBlocks).toBe(2);
    await vol.close();
    await g.close();
  });

  it('format 2 is migrated at open, keeping its dirty blocks; a damaged format 2 is E_CORRUPT; a newer format is E_VERSION', async () => {
    const { g, vdir, want } = await setup();
    const path = join(vdir, 'slots');
    const v3 = readFileSync(path);
    const slots = v3.readUInt32LE(12);
    // the same table written as format 2 (32-byte header, no checks; dirty = 2)
    const v2 = Buffer.alloc(32 + 8 * slots);
    v3.copy(v2, 0, 0, 24);
    v2.writeUInt32LE(2, 8);
    for (let s = 0; s < slots; s++) {
      const o3 = SLOTS_HEADER + s * SLOT_ENTRY;
      v2.writeUInt32LE(v3.readUInt32LE(o3), 32 + s * 8);
      v2[32 + s * 8 + 4] = v3[o3 + 4] >= STATE_DIRTY ? STATE_DIRTY : v3[o3 + 4];
    }
    writeFileSync(path, Buffer.concat([v2, Buffer.alloc(8)])); // extended: damaged
    await expect(g.openVolume('v')).rejects.toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining(path) });
    writeFileSync(path, v2);
    let vol = await g.openVolume('v');
    expect(vol.dirtyBlocks).toBe(2);
    expect((await vol.read(0, 16 * BS)).equals(want)).toBe(true);
    await vol.close();
    const migrated = readFileSync(path);
    expect(migrated.readUInt32LE(8)).toBe(3);
    expect(migrated.length).toBe(SLOTS_HEADER + 8 * slots);
    const newer = Buffer.from(migrated);
    newer.writeUInt32LE(4, 8);
    writeFileSync(path, newer);
    await expect(g.openVolume('v')).rejects.toMatchObject({ code: 'E_VERSION', message: expect.stringMatching(/format version 4.*up to version 3/) });
    expect(readFileSync(path).equals(newer)).toBe(true);
    writeFileSync(path, migrated);
    vol = await g.openVolume('v');
    await vol.flush();
    expect((await vol.read(0, 16 * BS)).equals(want)).toBe(true);
    await vol.close();
    await g.close();
  });

  it('entries carry their slot: a valid entry copied to another slot is E_CORRUPT', async () => {
    const { g, vdir } = await setup();
    const path = join(vdir, 'slots');
    const good = readFileSync(path);
    const s = slotOf(good, 9);
    const free = slotOf(good, -1); // block + 1 = 0: a free entry
    expect(free).toBeGreaterThanOrEqual(0);
    const bad = Buffer.from(good);
    good.copy(bad, SLOTS_HEADER + free * SLOT_ENTRY, SLOTS_HEADER + s * SLOT_ENTRY, SLOTS_HEADER + (s + 1) * SLOT_ENTRY);
    writeFileSync(path, bad);
    await expect(g.openVolume('v')).rejects.toMatchObject({ code: 'E_CORRUPT', message: expect.stringContaining(`slot ${free}`) });
    // a well-formed entry (its check right) naming a block past the volume is refused too
    const past = Buffer.from(good);
    const o = SLOTS_HEADER + s * SLOT_ENTRY;
    past.writeUInt32LE(17, o);
    past.writeUIntLE(entryCheck(s, 17, past[o + 4]), o + 5, 3);
    writeFileSync(path, past);
    await expect(g.openVolume('v')).rejects.toMatchObject({ code: 'E_CORRUPT' });
    // and a clean entry with its check right opens (the check is what is read)
    writeFileSync(path, good);
    const c = slotOf(good, 0);
    expect(good[SLOTS_HEADER + c * SLOT_ENTRY + 4]).toBe(STATE_CLEAN);
    const vol = await g.openVolume('v');
    await vol.close();
    await g.close();
  });

  it('fuzz: any mutation of the slot table (flip, set, truncate, extend, overwrite) gives E_CORRUPT or E_VERSION, or exactly the right data', async () => {
    const { g, vdir, want } = await setup();
    const path = join(vdir, 'slots');
    const blocksPath = join(vdir, 'blocks');
    const good = readFileSync(path);
    const goodBlocks = readFileSync(blocksPath);
    const len = good.length;
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(len - 1), bit: fc.nat(7) }),
      fc.record({ kind: fc.constant('set' as const), at: fc.nat(len - 1), value: fc.nat(255) }),
      fc.record({ kind: fc.constant('truncate' as const), to: fc.nat(len - 1) }),
      fc.record({ kind: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 24 }) }),
      fc.record({ kind: fc.constant('overwrite' as const), at: fc.nat(len - 1), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
      // entries in use (the slots of blocks 0, 4, 9) are hit far more often than random bytes would
      fc.record({ kind: fc.constant('flipUsed' as const), which: fc.constantFrom(0, 4, 9), byte: fc.nat(7), bit: fc.nat(7) }),
    );
    const outcomes = { corrupt: 0, version: 0, same: 0 };
    await fc.assert(
      fc.asyncProperty(fc.array(mutation, { minLength: 1, maxLength: 3 }), async (muts) => {
        let t = Buffer.from(good);
        for (const m of muts) {
          if (m.kind === 'flip') t[Math.min(m.at, t.length - 1)] ^= 1 << m.bit;
          else if (m.kind === 'set') t[Math.min(m.at, t.length - 1)] = m.value;
          else if (m.kind === 'truncate') t = t.subarray(0, Math.min(m.to, t.length));
          else if (m.kind === 'extend') t = Buffer.concat([t, m.bytes]);
          else if (m.kind === 'overwrite') Buffer.from(m.bytes).copy(t, Math.min(m.at, t.length));
          else {
            const s = slotOf(good, m.which);
            const at = SLOTS_HEADER + s * SLOT_ENTRY + m.byte;
            if (at < t.length) t[at] ^= 1 << m.bit;
          }
          if (t.length === 0) break;
        }
        writeFileSync(path, t);
        writeFileSync(blocksPath, goodBlocks);
        let vol;
        try {
          vol = await g.openVolume('v');
        } catch (err) {
          if (err instanceof GlideFsError && err.code === 'E_CORRUPT') {
            outcomes.corrupt++;
            return;
          }
          if (err instanceof GlideFsError && err.code === 'E_VERSION') {
            outcomes.version++;
            return;
          }
          throw err;
        }
        try {
          const got = await vol.read(0, 16 * BS);
          if (!got.equals(want)) {
            let i = 0;
            while (got[i] === want[i]) i++;
            throw new Error(`mutation ${JSON.stringify(muts)} opened and read wrong bytes at ${i} (block ${Math.floor(i / BS)})`);
          }
          outcomes.same++;
        } finally {
          await vol.close();
        }
      }),
      { numRuns: Number(process.env.GLIDEFS_FUZZ_RUNS ?? 300), seed: process.env.GLIDEFS_FUZZ_SEED ? Number(process.env.GLIDEFS_FUZZ_SEED) : undefined },
    );
    console.log(`cache slot table fuzz: ${JSON.stringify(outcomes)}`);
    expect(outcomes.corrupt).toBeGreaterThan(0);
    await g.close();
  }, 120_000);
});
