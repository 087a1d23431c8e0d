// Issue 11 item 1: the bounded cache. The cache directory stays within the cache size + one
// block + the slot table under random writes of 4x the bound, also across kill -9 and restart;
// every acknowledged byte reads back; a block not yet in the store is never evicted (writers
// wait, then E_CACHE_FULL); a restart with a smaller size keeps every dirty block or is refused.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DirStore, FaultyStore, GlideFs, GlideFsError, MemoryStore, type Volume } from '../../glidefs/index.js';
import { STATE_DIRTY, volumeCacheDir } from '../../glidefs/cache.js';
import { allowedBytes, apply, BS, duBytes, opOf } from './cache-bound-ops.js';

const root = mkdtempSync(join(tmpdir(), 'glidefs-cache-bound-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const MiB = 1024 * 1024;
let n = 0;
const fresh = () => join(root, `t${n++}`);

async function readAll(vol: Volume, size: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let o = 0; o < size; o += 8 * BS) parts.push(await vol.read(o, Math.min(8 * BS, size - o)));
  return Buffer.concat(parts);
}

function expectSame(got: Buffer, want: Buffer, what: string): void {
  if (got.equals(want)) return;
  let i = 0;
  while (got[i] === want[i]) i++;
  expect.fail(`${what}: first difference at byte ${i} (block ${Math.floor(i / BS)})`);
}

describe('bounded cache', () => {
  it('holds the bound under random writes of 4x the bound; every byte reads back, also after reopen', async () => {
    const dir = fresh();
    const cacheSize = 2 * MiB;
    const volBytes = 32 * MiB;
    const store = new MemoryStore();
    const opts = { store, catalogPath: join(dir, 'c.db'), cacheDir: join(dir, 'cache'), cacheSize };
    let g = await GlideFs.open(opts);
    await g.createVolume('v', volBytes);
    let vol = await g.openVolume('v');
    const model = Buffer.alloc(volBytes);
    let written = 0;
    let maxDu = 0;
    for (let k = 0; written < 4 * cacheSize; k++) {
      const op = opOf(1, k, volBytes);
      await vol.write(op.offset, op.data);
      apply(model, op);
      written += op.data.length;
      maxDu = Math.max(maxDu, duBytes(opts.cacheDir));
      if (k % 5 === 4) {
        const o = Math.floor((k * 7919 * BS) % (volBytes - 3 * BS));
        expectSame(await vol.read(o, 3 * BS), model.subarray(o, o + 3 * BS), `read after write ${k}`);
        maxDu = Math.max(maxDu, duBytes(opts.cacheDir));
      }
    }
    expect(maxDu).toBeGreaterThan(cacheSize / 2); // the cache was used
    expect(maxDu).toBeLessThanOrEqual(allowedBytes(cacheSize));
    expectSame(await readAll(vol, volBytes), model, 'after the writes');
    expect(duBytes(opts.cacheDir)).toBeLessThanOrEqual(allowedBytes(cacheSize));
    await vol.close();
    await g.close();
    g = await GlideFs.open(opts);
    vol = await g.openVolume('v');
    expectSame(await readAll(vol, volBytes), model, 'after reopen');
    expect(duBytes(opts.cacheDir)).toBeLessThanOrEqual(allowedBytes(cacheSize));
    await vol.close();
    await g.close();
  });

  it('kill -9 of the writer in the middle: the bound holds during the run and after restart; every acknowledged byte reads back', async () => {
    const dir = fresh();
    const cacheSize = 4 * MiB;
    const volBytes = 32 * MiB;
    const seed = 7;
    const cacheDir = join(dir, 'cache');
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'fixtures', 'cache-bound-writer.ts'), dir, String(seed), String(cacheSize), String(volBytes)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    let maxDu = 0;
    try {
      const deadline = Date.now() + 90_000;
      // run until 4x the bound has been written and at least 3 flushes resolved, sampling du
      let acked = 0;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`child exited early: ${err}`);
        if (Date.now() > deadline) throw new Error(`child made too little progress (${acked} writes): ${err}`);
        maxDu = Math.max(maxDu, duBytes(cacheDir));
        const acks = out.match(/^A \d+$/gm) ?? [];
        acked = acks.length;
        let bytes = 0;
        for (let k = 0; k < acked; k++) bytes += opOf(seed, k, volBytes).data.length;
        if (bytes >= 4 * cacheSize && (out.match(/^F /gm)?.length ?? 0) >= 3) break;
        await new Promise((r) => setTimeout(r, 10));
      }
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    expect(err).not.toMatch(/Error/);
    maxDu = Math.max(maxDu, duBytes(cacheDir));
    expect(maxDu).toBeLessThanOrEqual(allowedBytes(cacheSize));

    const lines = out.split('\n').filter((l) => l.startsWith('A '));
    const last = Number(lines[lines.length - 1].slice(2));
    const model = Buffer.alloc(volBytes);
    for (let k = 0; k <= last; k++) apply(model, opOf(seed, k, volBytes));
    // write last+1 may have been applied, in whole blocks, without its acknowledgement reaching us
    const inflight = opOf(seed, last + 1, volBytes);
    const next = Buffer.from(model);
    apply(next, inflight);

    const g = await GlideFs.open({ store: new DirStore(join(dir, 'objects'), { fsync: false }), catalogPath: join(dir, 'catalog.db'), cacheDir, cacheSize });
    try {
      expect(duBytes(cacheDir)).toBeLessThanOrEqual(allowedBytes(cacheSize));
      const vol = await g.openVolume('v');
      const got = await readAll(vol, volBytes);
      const first = Math.floor(inflight.offset / BS);
      const lastB = Math.floor((inflight.offset + inflight.data.length - 1) / BS);
      for (let b = first; b <= lastB; b++) {
        const s = b * BS;
        const blk = got.subarray(s, s + BS);
        if (blk.equals(next.subarray(s, s + BS))) next.copy(model, s, s, s + BS); // the in-flight write reached this block
      }
      expectSame(got, model, `after kill -9 at write ${last + 1} and restart`);
      expect(duBytes(cacheDir)).toBeLessThanOrEqual(allowedBytes(cacheSize));
      await vol.flush();
      await vol.close();
    } finally {
      await g.close();
    }
  }, 180_000);

  it('eviction never drops a block not yet in the store: with uploads failing, writers wait, then E_CACHE_FULL; nothing lost', async () => {
    const dir = fresh();
    const cacheSize = 2 * MiB; // 16 slots, dirty limit 12
    const faulty = new FaultyStore(new MemoryStore(), { seed: 1 });
    // uploads (and log records) fail while `failPuts`; FaultyStore.failAll fails every request
    let failPuts = false;
    const store = new Proxy(faulty, {
      get(t, p) {
        const v = Reflect.get(t, p, t);
        if (typeof v !== 'function') return v;
        if (failPuts && (p === 'put' || p === 'putIfAbsent' || p === 'putIfMatch')) return async () => Promise.reject(new GlideFsError('E_STORE', 'injected: uploads failing'));
        return v.bind(t);
      },
    });
    const opts = { store, catalogPath: join(dir, 'c.db'), cacheDir: join(dir, 'cache'), cacheSize, cacheWaitMs: 1500 };
    const g = await GlideFs.open(opts);
    await g.createVolume('v', 64 * BS);
    const vol = await g.openVolume('v');
    const blockOf = (i: number, v: number) => Buffer.alloc(BS, (i * 31 + v) & 0xff);
    // 40 blocks in the store (clean in the cache, most of them evicted by now)
    for (let i = 0; i < 40; i++) await vol.write(i * BS, blockOf(i, 1));
    await vol.flush();
    failPuts = true;
    // 12 dirty blocks fill the dirty limit (the early background flush fails)
    for (let i = 0; i < 12; i++) await vol.write(i * BS, blockOf(i, 2));
    expect(vol.dirtyBlocks).toBe(12);
    // reads of other blocks need slots: clean ones are evicted, dirty ones never
    for (let i = 20; i < 40; i++) expect((await vol.read(i * BS, BS)).equals(blockOf(i, 1))).toBe(true);
    expect(vol.dirtyBlocks).toBe(12);
    failPuts = false;
    faulty.failAll = true;
    // a 13th dirty block: the writer waits for a flush, flushes fail, E_CACHE_FULL after cacheWaitMs
    const t0 = Date.now();
    await expect(vol.write(12 * BS, blockOf(12, 2))).rejects.toMatchObject({ code: 'E_CACHE_FULL', message: expect.stringContaining('not yet in the store') });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    expect(vol.dirtyBlocks).toBe(12);
    for (let i = 0; i < 12; i++) expect((await vol.read(i * BS, BS)).equals(blockOf(i, 2)), `dirty block ${i}`).toBe(true);
    expect(duBytes(opts.cacheDir)).toBeLessThanOrEqual(allowedBytes(cacheSize));
    // a writer that waits while the store heals goes through
    const w = vol.write(13 * BS, blockOf(13, 2));
    await new Promise((r) => setTimeout(r, 300));
    faulty.failAll = false;
    failPuts = false;
    await w;
    await vol.flush();
    expect(vol.dirtyBlocks).toBe(0);
    await vol.close();
    await g.close();
    // everything is in the store: a fresh cache reads it back
    const g2 = await GlideFs.open({ ...opts, cacheDir: join(dir, 'cache2') });
    const v2 = await g2.openVolume('v');
    for (let i = 0; i < 40; i++) {
      const want = i < 12 || i === 13 ? blockOf(i, 2) : blockOf(i, 1);
      expect((await v2.read(i * BS, BS)).equals(want), `block ${i} from the store`).toBe(true);
    }
    await v2.close();
    await g2.close();
  }, 60_000);

  it('restart with a smaller size keeps every dirty block and drops clean ones; dirty blocks that do not fit are refused, nothing changed', async () => {
    const dir = fresh();
    const store = new MemoryStore();
    const base = { store, catalogPath: join(dir, 'c.db'), cacheDir: join(dir, 'cache') };
    const blockOf = (i: number) => Buffer.alloc(BS, (i * 7 + 3) & 0xff);
    let g = await GlideFs.open({ ...base, cacheSize: 8 * MiB }); // 64 slots, dirty limit 48, early flush at 24
    await g.createVolume('v', 128 * BS);
    let vol = await g.openVolume('v');
    for (let i = 100; i < 128; i++) await vol.write(i * BS, blockOf(i));
    await vol.flush(); // 28 clean blocks
    for (let i = 0; i < 20; i++) await vol.write(i * BS + 100, blockOf(i).subarray(0, BS - 100)); // 20 dirty (partial: read-modify-write)
    expect(vol.dirtyBlocks).toBe(20);
    const uuid = g.catalog.volume('v').uuid;
    await vol.close();
    await g.close();
    const vdir = volumeCacheDir(base.cacheDir, uuid);
    const before = readFileSync(join(vdir, 'slots'));
    const blocksBefore = readFileSync(join(vdir, 'blocks'));

    g = await GlideFs.open({ ...base, cacheSize: 2 * MiB }); // 16 slots < 20 dirty
    await expect(g.openVolume('v')).rejects.toMatchObject({ code: 'E_CACHE_FULL', message: expect.stringMatching(/holds 20 dirty blocks.*at least 2621440 bytes/) });
    expect(readFileSync(join(vdir, 'slots')).equals(before)).toBe(true);
    expect(readFileSync(join(vdir, 'blocks')).equals(blocksBefore)).toBe(true);
    await g.close();

    const want = (i: number) => {
      const b = Buffer.alloc(BS);
      blockOf(i).copy(b, 100, 0, BS - 100);
      return i < 20 ? b : i >= 100 ? blockOf(i) : Buffer.alloc(BS);
    };
    g = await GlideFs.open({ ...base, cacheSize: 3 * MiB }); // 24 slots: the 20 dirty fit
    vol = await g.openVolume('v');
    expect(vol.dirtyBlocks).toBe(20);
    expect(statSync(join(vdir, 'blocks')).size).toBeLessThanOrEqual(3 * MiB);
    expect(duBytes(base.cacheDir)).toBeLessThanOrEqual(allowedBytes(3 * MiB));
    for (let i = 0; i < 128; i++) expect((await vol.read(i * BS, BS)).equals(want(i)), `block ${i}`).toBe(true);
    await vol.flush();
    await vol.close();
    await g.close();
    g = await GlideFs.open({ ...base, cacheSize: 2 * MiB }); // now clean: shrinks
    vol = await g.openVolume('v');
    expect(duBytes(base.cacheDir)).toBeLessThanOrEqual(allowedBytes(2 * MiB));
    for (let i = 0; i < 128; i++) expect((await vol.read(i * BS, BS)).equals(want(i)), `block ${i} after the second shrink`).toBe(true);
    await vol.close();
    await g.close();
  }, 60_000);

  it('a cache of format 1 (state + sparse data) opens: dirty blocks kept, clean dropped; too many dirty is refused untouched; a newer format is E_VERSION; a size below 2M is E_BAD_SIZE', async () => {
    const dir = fresh();
    const store = new MemoryStore();
    const base = { store, catalogPath: join(dir, 'c.db'), cacheDir: join(dir, 'cache') };
    let g = await GlideFs.open(base);
    await g.createVolume('v', 64 * BS);
    const uuid = g.catalog.volume('v').uuid;
    await g.close();
    const vdir = volumeCacheDir(base.cacheDir, uuid);
    const { mkdirSync } = await import('node:fs');
    mkdirSync(vdir, { recursive: true });
    // format 1: 20 dirty blocks (0..19), 5 clean (40..44) whose bytes are not in the store
    const state = Buffer.alloc(16 + 64);
    state.write('GLFSCST1', 0, 'latin1');
    state.writeUInt32LE(64, 8);
    state.writeUInt32LE(BS, 12);
    const data = Buffer.alloc(64 * BS);
    for (let i = 0; i < 20; i++) {
      state[16 + i] = STATE_DIRTY;
      data.fill(i + 1, i * BS, (i + 1) * BS);
    }
    for (let i = 40; i < 45; i++) {
      state[16 + i] = 1;
      data.fill(0xee, i * BS, (i + 1) * BS);
    }
    writeFileSync(join(vdir, 'state'), state);
    writeFileSync(join(vdir, 'data'), data);

    g = await GlideFs.open({ ...base, cacheSize: 2 * MiB });
    await expect(g.openVolume('v')).rejects.toMatchObject({ code: 'E_CACHE_FULL', message: expect.stringContaining('format 1') });
    expect(readFileSync(join(vdir, 'state')).equals(state)).toBe(true);
    expect(existsSync(join(vdir, 'slots'))).toBe(false);
    expect(g.stats('v').dirtyBlocks).toBe(20); // counted from format 1
    await g.close();

    g = await GlideFs.open({ ...base, cacheSize: 4 * MiB });
    let vol = await g.openVolume('v');
    expect(existsSync(join(vdir, 'state')) || existsSync(join(vdir, 'data'))).toBe(false);
    expect(vol.dirtyBlocks).toBe(20);
    for (let i = 0; i < 64; i++) {
      const want = Buffer.alloc(BS, i < 20 ? i + 1 : 0); // clean copies dropped: read from the store (holes)
      expect((await vol.read(i * BS, BS)).equals(want), `block ${i}`).toBe(true);
    }
    await vol.flush();
    await vol.close();

    // a newer slot table format is refused
    const slots = readFileSync(join(vdir, 'slots'));
    const newer = Buffer.from(slots);
    newer.writeUInt32LE(4, 8);
    writeFileSync(join(vdir, 'slots'), newer);
    await expect(g.openVolume('v')).rejects.toMatchObject({ code: 'E_VERSION', message: expect.stringContaining('format version 4') });
    expect(readFileSync(join(vdir, 'slots')).equals(newer)).toBe(true); // nothing touched
    writeFileSync(join(vdir, 'slots'), slots);
    vol = await g.openVolume('v');
    expect((await vol.read(3 * BS, BS)).equals(Buffer.alloc(BS, 4))).toBe(true);
    await vol.close();
    await g.close();

    await expect(GlideFs.open({ ...base, cacheSize: 2 * MiB - 1 })).rejects.toMatchObject({ code: 'E_BAD_SIZE' });
  }, 60_000);
});
