// Goal: DeviceFs (the device mount's operations) without FUSE, root or /dev/fuse, over a
// glidefs volume on a memory store: the file's bytes are the volume's, fsync uploads and
// commits (or only syncs locally in 'local' mode), concurrent fsyncs share flushes, and
// every refused or failed operation answers the errno the kernel would see, through the
// same handlers (fuse.ts fuseHandlers) that the mount hands to the addon.
import { constants as fsc, mkdtempSync, rmSync } from 'node:fs';
import { constants as os, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BLOCK_SIZE, GlideFs, MemoryStore, type Volume } from '../../glidefs/index.js';
import { DeviceFs, DEVICE_FILE, type DeviceVolume } from '../../mount/device-fs.js';
import { fuseHandlers } from '../../mount/fuse.js';
import { blockOf } from '../glidefs/block-data.js';
import { GateStore } from '../glidefs/gate-store.js';

const FILE = '/' + DEVICE_FILE;
const E = (name: keyof typeof os.errno) => -os.errno[name];

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: { blocks?: number; store?: MemoryStore | GateStore; readOnly?: boolean } = {}) {
  const root = mkdtempSync(join(tmpdir(), 'glidekv-device-fs-'));
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  const store = opts.store ?? new MemoryStore();
  const g = await GlideFs.open({ store, catalogPath: join(root, 'catalog.db'), cacheDir: join(root, 'cache') });
  cleanups.push(() => g.close());
  // a gate holds every PUT: let the volume's create record through (glidefs writes one per create)
  if (opts.store instanceof GateStore) opts.store.closed = false;
  await g.createVolume('v', (opts.blocks ?? 4) * BLOCK_SIZE);
  if (opts.store instanceof GateStore) (opts.store.closed = true), (opts.store.arrived = 0);
  let vol: Volume = await g.openVolume('v');
  if (opts.readOnly) {
    await vol.write(0, blockOf(7));
    await vol.flush();
    await g.snapshot('v', 's');
    vol = await g.openVolume('s');
  }
  const log: string[] = [];
  return { g, vol, log, fs: (mode?: 'upload' | 'local') => new DeviceFs(vol, { log: (l) => log.push(l), fsync: mode }) };
}

/** Calls a handler the way fuse-native does and resolves the callback's arguments. */
function call(h: Record<string, (...a: any[]) => void>, op: string, ...args: unknown[]): Promise<unknown[]> {
  return new Promise((resolve) => h[op](...args, (...r: unknown[]) => resolve(r)));
}

describe('DeviceFs', () => {
  it('lists one file of the volume size; other paths do not exist', async () => {
    const { fs, vol } = await setup();
    const d = fs();
    const st = await d.getattr(FILE);
    expect(st.size).toBe(vol.sizeBytes);
    expect(st.mode & fsc.S_IFMT).toBe(fsc.S_IFREG);
    expect((await d.getattr('/')).mode & fsc.S_IFMT).toBe(fsc.S_IFDIR);
    expect((await d.readdir('/')).names).toEqual([DEVICE_FILE]);
    const h = fuseHandlers(d);
    expect(await call(h, 'getattr', '/other')).toEqual([E('ENOENT')]);
    expect(await call(h, 'readdir', FILE)).toEqual([E('ENOTDIR')]);
    expect(await call(h, 'open', '/', fsc.O_RDONLY)).toEqual([E('EISDIR')]);
    expect((await call(h, 'statfs', '/'))[0]).toBe(0);
  });

  it('reads and writes the volume bytes, clipped at its end; a write past the end is ENOSPC', async () => {
    const { fs, vol } = await setup({ blocks: 2 });
    const d = fs();
    const h = fuseHandlers(d);
    const fd = await d.open(FILE, fsc.O_RDWR);
    const data = Buffer.alloc(5000, 0xab);
    // The handler answers with the count as its first argument, like fuse-native wants.
    expect(await call(h, 'write', FILE, fd, data, data.length, BLOCK_SIZE - 100)).toEqual([5000]);
    expect((await vol.read(BLOCK_SIZE - 100, 5000)).equals(data)).toBe(true);
    const buf = Buffer.alloc(300);
    expect(await call(h, 'read', FILE, fd, buf, 300, BLOCK_SIZE - 150)).toEqual([300]);
    expect(buf.subarray(0, 50).every((b) => b === 0)).toBe(true);
    expect(buf.subarray(50).every((b) => b === 0xab)).toBe(true);
    // Clipped at the end; past the end: 0 bytes read, ENOSPC written.
    const end = vol.sizeBytes;
    expect(await call(h, 'read', FILE, fd, buf, 300, end - 10)).toEqual([10]);
    expect(await call(h, 'read', FILE, fd, buf, 300, end)).toEqual([0]);
    expect(await call(h, 'write', FILE, fd, data, 100, end - 10)).toEqual([10]);
    expect(await call(h, 'write', FILE, fd, data, 100, end)).toEqual([E('ENOSPC')]);
  });

  it("copies libfuse's write buffer: reusing it while the volume write is still pending changes nothing", async () => {
    const { vol } = await setup();
    // A volume whose writes land a little later, as they may under load.
    const later: DeviceVolume = {
      name: vol.name,
      sizeBytes: vol.sizeBytes,
      readOnly: false,
      read: (o, l) => vol.read(o, l),
      write: async (o, data) => {
        await new Promise((r) => setTimeout(r, 20));
        await vol.write(o, data);
      },
      flush: () => vol.flush(),
      sync: () => vol.sync(),
    };
    const d = new DeviceFs(later, { log: () => undefined });
    const fd = await d.open(FILE, fsc.O_RDWR);
    const src = Buffer.alloc(10, 1);
    const pending = d.write(FILE, fd, src, 10, 0);
    src.fill(9); // libfuse reuses (or detaches) its buffer once the handler returns
    expect(await pending).toBe(10);
    expect([...(await vol.read(0, 10))]).toEqual(Array(10).fill(1));
  });

  it('fsync uploads and commits; concurrent fsyncs share flushes; flush of a read-only handle does nothing', async () => {
    const gate = new GateStore(new MemoryStore());
    const { fs, g, vol } = await setup({ store: gate });
    const d = fs();
    const rw = await d.open(FILE, fsc.O_WRONLY);
    const ro = await d.open(FILE, fsc.O_RDONLY);
    await d.write(FILE, rw, blockOf(1), BLOCK_SIZE, 0);
    // The first flush stalls in its PUT; five fsyncs arrive meanwhile.
    const first = d.fsync(FILE, false, rw);
    for (let end = Date.now() + 10_000; gate.arrived < 1; await new Promise((r) => setTimeout(r, 5))) {
      if (Date.now() > end) throw new Error('the flush never reached the store');
    }
    await d.write(FILE, rw, blockOf(2), BLOCK_SIZE, BLOCK_SIZE);
    const later = [1, 2, 3, 4, 5].map(() => d.fsync(FILE, false, rw));
    gate.open();
    await Promise.all([first, ...later]);
    // One flush for the first fsync, ONE more for the five that came during it.
    expect(d.flushCount).toBe(2);
    expect(g.stats('v').dirtyBlocks).toBe(0);
    expect(g.stats('v').uploads).toBe(2);
    await d.flush(FILE, ro);
    expect(d.flushCount).toBe(2);
    await d.flush(FILE, rw);
    expect(d.flushCount).toBe(3);
    await d.release(FILE, rw);
    await d.release(FILE, ro);
    expect(d.openHandles).toBe(0);
    expect(vol.readOnly).toBe(false);
  });

  it("'local' fsync syncs the cache and uploads nothing; flushNow uploads", async () => {
    const { fs, g } = await setup();
    const d = fs('local');
    const fd = await d.open(FILE, fsc.O_RDWR);
    await d.write(FILE, fd, blockOf(3), BLOCK_SIZE, 0);
    await d.fsync(FILE, false, fd);
    await d.fsyncdir('/', false, 0);
    expect(d.flushCount).toBe(0);
    expect(g.stats('v').uploads).toBe(0);
    expect(g.stats('v').dirtyBlocks).toBe(1);
    await d.flushNow();
    expect(g.stats('v').uploads).toBe(1);
    expect(g.stats('v').dirtyBlocks).toBe(0);
  });

  it('refuses a bad fsync mode', async () => {
    const { vol } = await setup();
    expect(() => new DeviceFs(vol, { fsync: 'sometimes' as 'local' })).toThrow(/E_BAD_FSYNC_MODE/);
  });

  it('a snapshot is read-only: writable open and write are EROFS, reads work, fsync is a no-op', async () => {
    const { fs } = await setup({ readOnly: true });
    const d = fs();
    const h = fuseHandlers(d);
    expect((await d.getattr(FILE)).mode & 0o777).toBe(0o400);
    expect(await call(h, 'open', FILE, fsc.O_RDWR)).toEqual([E('EROFS')]);
    const fd = await d.open(FILE, fsc.O_RDONLY);
    expect(await call(h, 'write', FILE, fd, Buffer.alloc(1), 1, 0)).toEqual([E('EROFS')]);
    const buf = Buffer.alloc(4);
    expect(await d.read(FILE, fd, buf, 4, 0)).toBe(4);
    expect([...buf]).toEqual([...blockOf(7).subarray(0, 4)]);
    await d.fsync(FILE, false, fd);
    expect(d.flushCount).toBe(0);
  });

  it('the shape is fixed: create, unlink, rename, mkdir, chmod and a resize are EPERM; truncate to its size is fine', async () => {
    const { fs, vol } = await setup();
    const h = fuseHandlers(fs());
    const EPERM = [E('EPERM')];
    expect(await call(h, 'create', '/x', 0o644)).toEqual(EPERM);
    expect(await call(h, 'unlink', FILE)).toEqual(EPERM);
    expect(await call(h, 'rename', FILE, '/y')).toEqual(EPERM);
    expect(await call(h, 'mkdir', '/d', 0o755)).toEqual(EPERM);
    expect(await call(h, 'chmod', FILE, 0o777)).toEqual(EPERM);
    expect(await call(h, 'truncate', FILE, 1)).toEqual(EPERM);
    expect(await call(h, 'truncate', FILE, vol.sizeBytes)).toEqual([0]);
    expect(await call(h, 'utimens', FILE, 0, 0)).toEqual([0]);
  });

  it('a failing store makes fsync EIO, logged with the operation', async () => {
    const store = new MemoryStore();
    const { fs, log } = await setup({ store });
    const dd = fs();
    const fd = await dd.open(FILE, fsc.O_RDWR);
    await dd.write(FILE, fd, blockOf(5), BLOCK_SIZE, 0);
    store.put = async () => {
      throw new Error('store down');
    };
    const h = fuseHandlers(dd);
    expect(await call(h, 'fsync', FILE, 0, fd)).toEqual([E('EIO')]);
    expect(log.some((l) => /device v: fsync failed: .*store down/.test(l))).toBe(true);
  });
});
