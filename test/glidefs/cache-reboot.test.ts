// The boot-id rule (FORMAT.md, "Cache" and "Dirty-set durability"): a flush does not fsync the cache before
// its log PUT. A kill -9 keeps the page cache; after a reboot (the table's boot id is not this boot's) every
// dirty block whose bytes were never synced is dropped and read from the store, which holds every byte an
// fsync acknowledged. Simulated power cuts: the cache files a power cut may leave (what fdatasync made durable,
// plus any subset of the later page-cache writes, per entry and per 4 KiB page) under another boot id.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { FaultyStore, GlideFs, MemoryStore, type Volume } from '../../glidefs/index.js';
import { cacheSyncObserver, HEADER_BOOT_ID, HEADER_CRC, HEADER_FLAGS, headerCheck, volumeCacheDir, type VolumeCache } from '../../glidefs/cache.js';
import { mulberry32 } from '../../lib/prng.js';

const BS = 131072;
const PAGE = 4096;
const MiB = 1024 * 1024;
const root = mkdtempSync(join(tmpdir(), 'glidefs-cache-reboot-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
afterEach(() => {
  cacheSyncObserver.onSync = null;
});
let n = 0;
const fresh = () => join(root, `t${n++}`);

/** Rewrites the boot id in a format-3 slot table (and its header CRC): the table was last opened in another boot. */
function otherBoot(table: Buffer): Buffer {
  const t = Buffer.from(table);
  for (let k = 0; k < 16; k++) t[HEADER_BOOT_ID + k] ^= 0x5a;
  t.writeUInt32LE(headerCheck(t), HEADER_CRC);
  return t;
}

const cacheOf = (vol: Volume) => (vol as unknown as { cache: VolumeCache }).cache;

describe('cache after a reboot (boot id)', () => {
  it('a flush does no fsync of the cache; after a reboot unsynced dirty blocks read the store\'s fsynced bytes (never the garbage in their slots), synced ones are kept', async () => {
    const dir = fresh();
    const store = new MemoryStore();
    const opts = { store, catalogPath: join(dir, 'c.db'), cacheDir: join(dir, 'cache'), cacheSize: 2 * MiB };
    const g = await GlideFs.open(opts);
    await g.createVolume('v', 32 * BS);
    const vol = await g.openVolume('v');
    const cache = cacheOf(vol);
    const a = Buffer.alloc(BS, 0xa1);
    const b = Buffer.alloc(PAGE, 0xb2);
    const c = Buffer.alloc(BS, 0xc3);
    const e = Buffer.alloc(BS, 0xe5);
    await vol.write(0, a);
    await vol.flush();
    await vol.write(2 * PAGE, b); // block 0, sector 2
    await vol.write(5 * BS, c); // block 5, whole
    const syncs = { ...cache.counters };
    await vol.flush(); // acknowledges A+B and C
    expect(cache.counters.dataSyncs - syncs.dataSyncs, 'fdatasyncs of blocks by a flush of unsynced dirty blocks').toBe(0);
    expect(cache.counters.tableSyncs - syncs.tableSyncs, 'fdatasyncs of slots by that flush').toBe(0);
    await vol.write(7 * BS, e); // block 7: synced locally (sync()), not flushed
    await vol.sync();
    await vol.write(7 * BS + PAGE, Buffer.alloc(PAGE, 0xf6)); // not acknowledged
    await vol.write(3 * PAGE, Buffer.alloc(PAGE, 0xdd)); // block 0 again: not acknowledged
    await vol.write(9 * BS, Buffer.alloc(BS, 0x99)); // block 9: never acknowledged
    const uuid = g.catalog.volume('v').uuid;
    const vdir = volumeCacheDir(opts.cacheDir, uuid);
    // the power cut: the page cache's bytes of the unsynced dirty blocks are lost; their slots hold other bytes
    const slots = readFileSync(join(vdir, 'slots'));
    const blocks = readFileSync(join(vdir, 'blocks'));
    const slotOf = (i: number) => {
      for (let s = 0; s < slots.readUInt32LE(12); s++) if (slots.readUInt32LE(64 + s * 8) === i + 1) return s;
      throw new Error(`block ${i} has no slot`);
    };
    blocks.fill(0x66, slotOf(0) * BS, slotOf(0) * BS + BS);
    c.copy(blocks, slotOf(0) * BS, 0, BS / 2); // half of another block's bytes
    blocks.fill(0x77, slotOf(5) * BS, slotOf(5) * BS + BS); // clean: re-hashed at its first read
    a.copy(blocks, slotOf(9) * BS); // block 9's bytes lost: its slot still holds block 0's old bytes
    await vol.close(); // its own cache dir; the machine that "rebooted" is the copy below
    await g.close();
    const cut = join(dir, 'cut');
    const cdir = volumeCacheDir(cut, uuid);
    mkdirSync(cdir, { recursive: true });
    writeFileSync(join(cdir, 'slots'), otherBoot(slots));
    writeFileSync(join(cdir, 'blocks'), blocks);

    const g2 = await GlideFs.open({ ...opts, cacheDir: cut });
    const v2 = await g2.openVolume('v');
    expect(cacheOf(v2).rebooted).toBe(true);
    expect(cacheOf(v2).distrusted).toBe(2); // blocks 0 and 9
    expect(v2.dirtyBlocks).toBe(1); // block 7, synced
    const want0 = Buffer.from(a);
    b.copy(want0, 2 * PAGE);
    expect((await v2.read(0, BS)).equals(want0), 'block 0 = the flushed A+B').toBe(true);
    expect((await v2.read(5 * BS, BS)).equals(c), 'block 5 = the flushed C').toBe(true);
    expect((await v2.read(9 * BS, BS)).equals(Buffer.alloc(BS)), 'block 9 = never acknowledged: the store\'s hole').toBe(true);
    const want7 = Buffer.from(e);
    want7.fill(0xf6, PAGE, 2 * PAGE); // the later write is in the page cache copy we kept: old or new are both right
    expect((await v2.read(7 * BS, BS)).equals(want7), 'block 7 = the locally synced E (+ its later write)').toBe(true);
    await v2.flush();
    await v2.close();
    await g2.close();
  });

  it('a synced dirty block rewritten and flushed, then cut before its table reaches the disk: reads the flushed bytes, not the synced ones; its slot reused by another block: never that block\'s bytes', async () => {
    const dir = fresh();
    const store = new MemoryStore();
    const opts = { store, catalogPath: join(dir, 'c.db'), cacheDir: join(dir, 'cache'), cacheSize: 2 * MiB }; // 16 slots
    const g = await GlideFs.open(opts);
    await g.createVolume('v', 40 * BS);
    const uuid = g.catalog.volume('v').uuid;
    const vdir = volumeCacheDir(opts.cacheDir, uuid);
    const durable = new Map<string, Buffer>();
    cacheSyncObserver.onSync = (path) => {
      if (path.startsWith(vdir)) durable.set(path, readFileSync(path));
    };
    const vol = await g.openVolume('v');
    for (let i = 20; i < 40; i++) {
      await vol.write(i * BS, Buffer.alloc(BS, i));
      if (i % 4 === 3) await vol.flush();
    }
    const cuts: Array<{ what: string; slots: Buffer; blocks: Buffer; want: Buffer }> = [];
    const cut = (what: string, want: Buffer) =>
      cuts.push({ what, slots: durable.get(join(vdir, 'slots'))!, blocks: readFileSync(join(vdir, 'blocks')), want });
    const v1 = Buffer.alloc(BS, 0x11);
    await vol.write(BS, v1);
    await vol.sync(); // block 1: dirty + synced, on the disk
    const v2 = Buffer.from(v1);
    v2.fill(0x22, 0, PAGE);
    await vol.write(BS, v2.subarray(0, PAGE));
    await vol.flush(); // acknowledges v2; block 1 clean in the page cache, its entry on the disk may still say synced
    // the power cut keeps only what was fdatasync'd: the table as synced, the data as synced
    cuts.push({ what: 'rewritten after a sync, flushed', slots: durable.get(join(vdir, 'slots'))!, blocks: durable.get(join(vdir, 'blocks'))!, want: v2 });
    for (let i = 20; i < 40; i++) await vol.read(i * BS, BS); // every slot is reused: block 1's old slot holds another block
    cut('its slot reused by a read', v2);
    cacheSyncObserver.onSync = null;
    await vol.close();
    await g.close();
    for (const c of cuts) {
      const cacheDir = join(dir, `cut-${cuts.indexOf(c)}`);
      mkdirSync(volumeCacheDir(cacheDir, uuid), { recursive: true });
      writeFileSync(join(volumeCacheDir(cacheDir, uuid), 'slots'), otherBoot(c.slots));
      writeFileSync(join(volumeCacheDir(cacheDir, uuid), 'blocks'), c.blocks);
      const g2 = await GlideFs.open({ ...opts, cacheDir });
      const vr = await g2.openVolume('v');
      expect((await vr.read(BS, BS)).equals(c.want), c.what).toBe(true);
      for (let i = 20; i < 40; i++) expect((await vr.read(i * BS, BS)).equals(Buffer.alloc(BS, i)), `${c.what}: block ${i}`).toBe(true);
      await vr.close();
      await g2.close();
    }
  });

  it('an open after a reboot that dropped blocks owes a catch-up: with the store down it fails, and so does the next open, until one catches up', async () => {
    const dir = fresh();
    const store = new MemoryStore();
    const opts = { store, catalogPath: join(dir, 'c.db'), cacheDir: join(dir, 'cache'), cacheSize: 2 * MiB };
    const g = await GlideFs.open(opts);
    await g.createVolume('v', 8 * BS);
    const vol = await g.openVolume('v');
    await vol.write(0, Buffer.alloc(BS, 0x31));
    await vol.flush();
    await vol.write(100, Buffer.alloc(10, 0x32)); // dirty, never synced: dropped after the reboot
    const uuid = g.catalog.volume('v').uuid;
    const vdir = volumeCacheDir(opts.cacheDir, uuid);
    const slots = readFileSync(join(vdir, 'slots'));
    const blocks = readFileSync(join(vdir, 'blocks'));
    await vol.close();
    await g.close();
    const cut = join(dir, 'cut');
    const cdir = volumeCacheDir(cut, uuid);
    mkdirSync(cdir, { recursive: true });
    writeFileSync(join(cdir, 'slots'), otherBoot(slots));
    writeFileSync(join(cdir, 'blocks'), blocks);
    const faulty = new FaultyStore(store, { seed: 1 });
    const g2 = await GlideFs.open({ ...opts, store: faulty, cacheDir: cut });
    await g2.checkStoreOwner();
    faulty.failAll = true;
    await expect(g2.openVolume('v')).rejects.toMatchObject({ code: 'E_STORE' });
    expect(readFileSync(join(cdir, 'slots'))[HEADER_FLAGS]).toBe(1); // owed, on the disk
    await expect(g2.openVolume('v'), 'the next open (same boot, nothing left to drop) still owes it').rejects.toMatchObject({ code: 'E_STORE' });
    faulty.failAll = false;
    const v2 = await g2.openVolume('v');
    expect(readFileSync(join(cdir, 'slots'))[HEADER_FLAGS]).toBe(0);
    expect((await v2.read(0, BS)).equals(Buffer.alloc(BS, 0x31))).toBe(true);
    await v2.close();
    // caught up: a later open with the store down opens (the catch-up is deferred, as without a reboot)
    faulty.failAll = true;
    const v3 = await g2.openVolume('v');
    await v3.close().catch(() => undefined);
    faulty.failAll = false;
    await g2.close();
  });

  it('random power cuts: every block reads an acknowledged version or a later one (per 4 KiB page), never other bytes', async () => {
    const seeds = Number(process.env.GLIDEFS_REBOOT_RUNS ?? 40);
    const base = Number(process.env.GLIDEFS_REBOOT_SEED ?? Date.now() % 1_000_000);
    console.log(`cache-reboot seeds ${base}..${base + seeds - 1} (GLIDEFS_REBOOT_SEED)`);
    for (let k = 0; k < seeds; k++) await powerCutRun(base + k);
  }, 240_000);
});

async function powerCutRun(seed: number): Promise<void> {
  const rnd = mulberry32(seed);
  const int = (m: number) => Math.floor(rnd() * m);
  const dir = fresh();
  const store = new MemoryStore();
  const BLOCKS = 24;
  const opts = { store, catalogPath: join(dir, 'c.db'), cacheDir: join(dir, 'cache'), cacheSize: 2 * MiB }; // 16 slots: reads evict, slots are reused
  const g = await GlideFs.open(opts);
  await g.createVolume('v', BLOCKS * BS);
  const uuid = g.catalog.volume('v').uuid;
  const vdir = volumeCacheDir(opts.cacheDir, uuid);
  const durable = new Map<string, Buffer>();
  cacheSyncObserver.onSync = (path) => {
    if (path.startsWith(vdir)) durable.set(path, readFileSync(path));
  };
  const vol = await g.openVolume('v');
  const cur = Array.from({ length: BLOCKS }, () => Buffer.alloc(BS));
  // per block: the versions a power cut may leave (the last acknowledged one, then every later one)
  const allowed: Buffer[][] = cur.map((b) => [Buffer.from(b)]);
  const ack = () => {
    for (let i = 0; i < BLOCKS; i++) allowed[i] = [Buffer.from(cur[i])];
  };
  const log: string[] = [];
  const ops = 20 + int(60); // the cut comes at any point
  for (let op = 0; op < ops; op++) {
    const r = rnd();
    if (r < 0.5) {
      const i = int(6); // writes hit a few blocks (synced, rewritten, flushed), reads all of them (evictions, slot reuse)
      const whole = rnd() < 0.4;
      const off = whole ? 0 : int(BS - 1);
      const len = whole ? BS : 1 + int(Math.min(3 * PAGE, BS - off));
      const data = Buffer.alloc(len, 1 + int(255));
      await vol.write(i * BS + off, data);
      data.copy(cur[i], off);
      allowed[i].push(Buffer.from(cur[i]));
      log.push(`w${i}@${off}+${len}`);
    } else if (r < 0.68) {
      const i = int(BLOCKS);
      expect((await vol.read(i * BS, BS)).equals(cur[i]), `seed ${seed}: read of block ${i} before the cut`).toBe(true);
      log.push(`r${i}`);
    } else if (r < 0.85) {
      await vol.flush();
      ack();
      log.push('F');
    } else {
      await vol.sync();
      ack();
      log.push('S');
    }
    if (vol.dirtyBlocks >= 5) {
      await vol.flush(); // below the background flush (half the dirty limit): every ack is one the test knows
      ack();
      log.push('F');
    }
  }
  cacheSyncObserver.onSync = null;
  const slotsPath = join(vdir, 'slots');
  const blocksPath = join(vdir, 'blocks');
  const curSlots = readFileSync(slotsPath);
  const curBlocks = readFileSync(blocksPath);
  const dSlots = durable.get(slotsPath) ?? curSlots;
  const dBlocks = durable.get(blocksPath) ?? Buffer.alloc(0);
  await vol.close(); // syncs its own dir; the cut machines are the copies below
  await g.close();
  // three images: nothing after the last fdatasync reached the disk, everything did, a random mix
  for (const mode of ['durable', 'current', 'mix'] as const) {
    const pick = () => (mode === 'durable' ? false : mode === 'current' ? true : rnd() < 0.5);
    const slots = Buffer.from(dSlots.length === curSlots.length ? dSlots : curSlots);
    for (let o = 64; o < slots.length; o += 8) if (pick()) curSlots.copy(slots, o, o, o + 8);
    const blocks = Buffer.alloc(curBlocks.length);
    for (let o = 0; o < blocks.length; o += PAGE) {
      if (pick()) curBlocks.copy(blocks, o, o, o + PAGE);
      else if (o < dBlocks.length) dBlocks.copy(blocks, o, o, Math.min(o + PAGE, dBlocks.length));
    }
    const cut = join(dir, `cut-${mode}`);
    const cdir = volumeCacheDir(cut, uuid);
    mkdirSync(cdir, { recursive: true });
    writeFileSync(join(cdir, 'slots'), otherBoot(slots));
    writeFileSync(join(cdir, 'blocks'), blocks);
    const g2 = await GlideFs.open({ ...opts, cacheDir: cut });
    const v2 = await g2.openVolume('v');
    try {
      for (let i = 0; i < BLOCKS; i++) {
        const got = await v2.read(i * BS, BS);
        for (let p = 0; p < BS; p += PAGE) {
          const page = got.subarray(p, p + PAGE);
          if (!allowed[i].some((v) => v.subarray(p, p + PAGE).equals(page))) {
            expect.fail(`seed ${seed}, ${mode} image: block ${i} page ${p / PAGE} is no acknowledged or later version (ops ${log.join(' ')})`);
          }
        }
      }
    } finally {
      await v2.close();
      await g2.close();
    }
  }

}
