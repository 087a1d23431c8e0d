// Goal: the blob store never shows a blob with wrong bytes, never deletes a referenced or pinned blob, and cleans up after crashes.
import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdtemp, rm, readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { BlobStore } from '../../src/blob-store.js';
import { KvError } from '../../src/errors.js';
import { nodeBlobIo, blobIoFromFileIo } from '../../src/blob-io.js';
import { nodeFileIo, type FileIo } from '../../src/file-io.js';
import { FaultyBlobIo, type IoStep } from './fixtures/faulty-blob-io.js';
import { makeValue } from './fixtures/blob-values.js';

const CHILD = fileURLToPath(new URL('./fixtures/blob-crash-child.ts', import.meta.url));
const KiB = 1024;
const MiB = 1024 * KiB;

let dataDir: string;
const stores: BlobStore[] = [];

beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'glidekv-blob-'));
});
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close().catch(() => {});
  await rm(dataDir, { recursive: true, force: true });
});

async function openStore(opts: Parameters<typeof BlobStore.open>[1] = {}): Promise<BlobStore> {
  const s = await BlobStore.open(dataDir, { onWarning: () => {}, ...opts });
  stores.push(s);
  return s;
}

const valuesDir = () => join(dataDir, 'values');
const names = async () => (await readdir(valuesDir())).sort();
const tempFiles = async () => (await names()).filter((n) => n.startsWith('tmp-'));
const blobFiles = async () => (await names()).filter((n) => n.startsWith('blob-'));

/** I1: every file under a final name holds bytes that hash to that name. */
async function expectEveryBlobIntact(): Promise<void> {
  for (const n of await blobFiles()) {
    const bytes = await readFile(join(valuesDir(), n));
    expect(`blob-${BlobStore.hashOf(bytes).toString('hex')}`).toBe(n);
  }
}

async function expectCode(p: Promise<unknown>, code: string): Promise<KvError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(KvError);
  expect((err as KvError).code).toBe(code);
  return err as KvError;
}

describe('write and read', () => {
  it('stores a value under its blake3-128 name, reads it back, and dedups equal values', async () => {
    const s = await openStore();
    const v = makeValue(300 * KiB, 1);
    const a = await s.write(v);
    expect(a.hex).toBe(BlobStore.hashOf(v).toString('hex'));
    expect(a.hash.length).toBe(16);
    expect(await blobFiles()).toEqual([`blob-${a.hex}`]);
    expect((await s.read(a.hash)).equals(v)).toBe(true);
    const b = await s.write(Buffer.from(v));
    expect(b.hex).toBe(a.hex);
    expect(s.stats()).toMatchObject({ blobs: 1, blobBytes: v.length, written: 1, dedupHits: 1, pinned: 1 });
    a.release(); b.release(); b.release();
    expect(s.stats().pinned).toBe(0);
    expect(await tempFiles()).toEqual([]);
  });

  it('writes a 64 MiB value in chunks that are views of the caller buffer (no copies)', async () => {
    const seen: Uint8Array[] = [];
    const s = await openStore({
      io: { ...nodeBlobIo, create: async (p) => {
        const f = await nodeBlobIo.create(p);
        return { write: (d, pos) => { seen.push(d); return f.write(d, pos); }, sync: () => f.sync(), close: () => f.close() };
      } },
      chunkBytes: 8 * MiB,
    });
    const v = Buffer.alloc(64 * MiB, 0x5a);
    v[12345678] = 1;
    const b = await s.write(v);
    expect(seen.length).toBe(8);
    for (const d of seen) expect(d.buffer).toBe(v.buffer);
    expect((await s.read(b.hex)).equals(v)).toBe(true);
  });

  it("runs over the engine's FileIo seam: faults injected there reach the blob store", async () => {
    let failFsync = false;
    const fileIo: FileIo = {
      ...nodeFileIo,
      fsync: (fd) => failFsync ? Promise.reject(Object.assign(new Error('EIO: injected'), { code: 'EIO' })) : nodeFileIo.fsync(fd),
    };
    const s = await openStore({ io: blobIoFromFileIo(fileIo) });
    const v = makeValue(300 * KiB, 27);
    const b = await s.write(v);
    expect((await s.read(b.hash)).equals(v)).toBe(true);
    expect((await s.write(v)).hex).toBe(b.hex);
    expect(s.stats()).toMatchObject({ blobs: 1, written: 1, dedupHits: 1 });
    failFsync = true;
    await expectCode(s.write(makeValue(300 * KiB, 28)), 'E_IO');
    expect(await tempFiles()).toEqual([]);
    expect(await blobFiles()).toEqual([`blob-${b.hex}`]);
  });

  it('learns existing blobs on open and rebuild reports pointers to missing blobs', async () => {
    const s1 = await openStore();
    const v = makeValue(200 * KiB, 2);
    (await s1.write(v)).release();
    await s1.close();
    const s2 = await openStore();
    expect(s2.stats()).toMatchObject({ blobs: 1, blobBytes: v.length });
    const missingHash = BlobStore.hashOf(Buffer.from('not there'));
    const { missing } = s2.rebuild([BlobStore.hashOf(v), missingHash]);
    expect(missing).toEqual([missingHash.toString('hex')]);
    await expectCode(s2.read(missingHash), 'E_CORRUPT');
  });
});

describe('crash at every step of a write', () => {
  // The steps of one write of a 3-chunk value, in order.
  const steps: Array<[IoStep, number]> = [
    ['size', 1], ['create', 1], ['write', 1], ['write', 2], ['write', 3],
    ['sync', 1], ['close', 1], ['rename', 1], ['syncDir', 1],
  ];

  for (const [step, nth] of steps) {
    it(`in-process crash after ${step} #${nth}: no wrong blob, temp swept on reopen`, async () => {
      const io = new FaultyBlobIo();
      const s = await BlobStore.open(dataDir, { io, chunkBytes: 100 * KiB, onWarning: () => {} });
      io.arm({ step, nth, action: 'crash' });
      const v = makeValue(300 * KiB, 3);
      await expectCode(s.write(v), 'E_IO');
      await expectEveryBlobIntact();
      const renamed = ['rename', 'syncDir'].includes(step);
      expect((await blobFiles()).length).toBe(renamed ? 1 : 0);
      // "Restart": a fresh store with real io; nothing references the value.
      const s2 = await openStore();
      s2.rebuild([]);
      const swept = await s2.sweep();
      expect(swept).toBe((renamed ? 1 : 0) + (['create', 'write', 'sync', 'close'].includes(step) ? 1 : 0));
      expect(await names()).toEqual([]);
      expect(s2.stats().orphansSwept).toBe(swept);
    });
  }

  for (const [step, nth] of steps.filter(([s]) => s !== 'size')) {
    it(`failure (EIO) at ${step} #${nth}: the write fails cleanly, temp removed at once, no pin left`, async () => {
      const warnings: string[] = [];
      const io = new FaultyBlobIo();
      const s = await openStore({ io, chunkBytes: 100 * KiB, onWarning: (m) => warnings.push(m) });
      io.arm({ step, nth, action: 'throw' });
      const v = makeValue(300 * KiB, 4);
      const err = await expectCode(s.write(v), 'E_IO');
      expect((err.cause as NodeJS.ErrnoException).code).toBe('EIO');
      expect(await tempFiles()).toEqual([]);
      await expectEveryBlobIntact();
      expect(s.stats().pinned).toBe(0);
      // The same value can be written afterwards.
      const ok = await s.write(v);
      expect((await s.read(ok.hash)).equals(v)).toBe(true);
    });
  }

  // kill -9 at every step, in a real child process: what is on disk after a real SIGKILL.
  // Armed before open(): syncDir #1 is open's own, #2 the write's.
  const killSteps: Array<[IoStep, number]> = [
    ['create', 1], ['write', 1], ['write', 2], ['sync', 1], ['close', 1], ['rename', 1], ['syncDir', 2],
  ];
  it('kill -9 of a child right after each step: never a wrong blob, temp files swept after', async () => {
    for (const [step, nth] of killSteps) {
      const dir = join(dataDir, `${step}-${nth}`);
      await mkdir(dir);
      const r = await runChild([dir, String(600 * KiB), '5', 'kill', step, String(nth)]);
      expect(r.signal, `${step} #${nth}`).toBe('SIGKILL');
      const files = await readdir(join(dir, 'values'));
      const renamed = ['rename', 'syncDir'].includes(step);
      expect(files.filter((n) => n.startsWith('blob-')).length, `${step}`).toBe(renamed ? 1 : 0);
      for (const n of files.filter((f) => f.startsWith('blob-'))) {
        const bytes = await readFile(join(dir, 'values', n));
        expect(`blob-${BlobStore.hashOf(bytes).toString('hex')}`).toBe(n);
      }
      const s = await BlobStore.open(dir, { onWarning: () => {} });
      s.rebuild([]);
      await s.sweep();
      expect(await readdir(join(dir, 'values')), `${step}`).toEqual([]);
      await s.close();
    }
  });

  it('kill -9 of a child mid-stream leaves only a partial temp file, which sweep removes', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dataDir, String(2 * MiB), '6', 'slow'],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<NodeJS.Signals | null>((res) => child.on('exit', (_c, sig) => res(sig)));
    try {
      await new Promise<void>((res, rej) => {
        let out = '';
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('chunk 3')) { child.kill('SIGKILL'); res(); }
          if (out.includes('done')) rej(new Error('child finished before the kill'));
        });
        child.on('exit', () => rej(new Error(`child exited early: ${out}`)));
      });
    } finally {
      child.kill('SIGKILL');
    }
    expect(await exited).toBe('SIGKILL');
    expect(await blobFiles()).toEqual([]);
    const temps = await tempFiles();
    expect(temps.length).toBe(1);
    const s = await openStore();
    s.rebuild([]);
    expect(await s.sweep()).toBe(1);
    expect(await names()).toEqual([]);
  });
});

describe('refcounts, epochs and collect', () => {
  it('a blob at zero is deleted only by a collect whose sync began after the unref', async () => {
    const s = await openStore();
    const b = await s.write(makeValue(200 * KiB, 7));
    s.ref(b.hash); b.release();
    const early = s.beginSync();      // an fsync that started before the unref
    s.unref(b.hash);
    expect(await s.collect(early)).toBe(0);
    expect(await blobFiles()).toEqual([`blob-${b.hex}`]);
    const late = s.beginSync();
    expect(await s.collect(late)).toBe(1);
    expect(await blobFiles()).toEqual([]);
    expect(s.stats()).toMatchObject({ blobs: 0, blobBytes: 0, collected: 1, candidates: 0 });
  });

  it('a re-ref before collect saves the blob; a failed fsync collects nothing', async () => {
    const s = await openStore();
    const b = await s.write(makeValue(200 * KiB, 8));
    s.ref(b.hash); b.release();
    s.unref(b.hash);
    expect(s.stats().candidates).toBe(1);
    s.ref(b.hash);
    expect(s.stats().candidates).toBe(0);
    expect(await s.collect(s.beginSync())).toBe(0);
    expect(await blobFiles()).toEqual([`blob-${b.hex}`]);
    s.unref(b.hash);
    await expect(s.syncThenCollect(async () => { throw new Error('fsync failed'); })).rejects.toThrow('fsync failed');
    expect(await blobFiles()).toEqual([`blob-${b.hex}`]);
    expect(await s.syncThenCollect(async () => {})).toBe(1);
    expect(() => s.unref(b.hash)).toThrow(/below zero/);
  });

  it('a candidate re-referenced and dropped again after the fsync began is spared by that collect', async () => {
    const io = new FaultyBlobIo();
    const s = await openStore({ io });
    const b1 = await s.write(makeValue(150 * KiB, 25)); s.ref(b1.hash); b1.release();
    const b2 = await s.write(makeValue(150 * KiB, 26)); s.ref(b2.hash); b2.release();
    s.unref(b1.hash); s.unref(b2.hash);
    const token = s.beginSync();
    const gate = io.pauseAt('unlink');
    const collecting = s.collect(token);
    await gate.reached;                 // collect is deleting b1; b2 is queued as due
    s.ref(b2.hash);                     // a new pointer to b2's content...
    s.unref(b2.hash);                   // ...dropped again, after the fsync began
    gate.resume();
    expect(await collecting).toBe(1);
    expect(await blobFiles()).toEqual([`blob-${b2.hex}`]);
    expect(await s.collect(s.beginSync())).toBe(1);
  });

  it('shared content: the blob stays until the last of several pointers is dropped', async () => {
    const s = await openStore();
    const v = makeValue(150 * KiB, 9);
    const a = await s.write(v); s.ref(a.hash); a.release();
    const b = await s.write(v); s.ref(b.hash); b.release();
    s.unref(a.hash);
    expect(await s.collect(s.beginSync())).toBe(0);
    s.unref(b.hash);
    expect(await s.collect(s.beginSync())).toBe(1);
  });

  it('a write whose pointer append failed (release without ref) is collected like a dereference', async () => {
    const s = await openStore();
    const b = await s.write(makeValue(150 * KiB, 10));
    expect(await s.collect(s.beginSync())).toBe(0);   // pinned
    b.release();
    expect(s.stats().candidates).toBe(1);
    expect(await s.collect(s.beginSync())).toBe(1);
  });
});

describe('GC race: write of V for key A while key B, the last other ref to V, is dropped and collected', () => {
  it('write pinned before the collect: V survives, is referenced, no orphan after', async () => {
    const io = new FaultyBlobIo();
    const s = await openStore({ io });
    const v = makeValue(256 * KiB, 11);
    const b = await s.write(v); s.ref(b.hash); b.release();   // key B -> V
    s.unref(b.hash);                                          // B deleted (tombstone appended)
    const token = s.beginSync();                              // log fsync starts
    const gate = io.pauseAt('size');                          // put A=V: hashing done, pinned, at the existence check
    const writing = s.write(v);
    await gate.reached;
    const collecting = s.collect(token);                      // fsync done: collect runs now
    gate.resume();
    const a = await writing;
    expect(await collecting).toBe(0);
    s.ref(a.hash); a.release();                               // pointer A -> V appended
    expect((await s.read(a.hash)).equals(v)).toBe(true);
    expect(await s.collect(s.beginSync())).toBe(0);
    expect(await s.sweep()).toBe(0);
    expect(await blobFiles()).toEqual([`blob-${a.hex}`]);
  });

  it('collect already deleting when the write starts: the write waits and re-creates V', async () => {
    const io = new FaultyBlobIo();
    const s = await openStore({ io });
    const v = makeValue(256 * KiB, 12);
    const b = await s.write(v); s.ref(b.hash); b.release();
    s.unref(b.hash);
    const gate = io.pauseAt('unlink');
    const collecting = s.collect(s.beginSync());
    await gate.reached;                                       // collect holds V's lock, about to unlink
    const writing = s.write(v);
    gate.resume();
    expect(await collecting).toBe(1);
    const a = await writing;
    s.ref(a.hash); a.release();
    expect((await s.read(a.hash)).equals(v)).toBe(true);
    expect(s.stats()).toMatchObject({ blobs: 1, written: 2 });
    expect(await s.sweep()).toBe(0);
  });

  it('a read in progress keeps its blob through a concurrent unref + collect', async () => {
    const io = new FaultyBlobIo();
    const s = await openStore({ io });
    const v = makeValue(200 * KiB, 13);
    const b = await s.write(v); s.ref(b.hash); b.release();
    const gate = io.pauseAt('readFile');
    const reading = s.read(b.hash);                           // get found the pointer
    await gate.reached;
    s.unref(b.hash);                                          // delete of the key
    expect(await s.collect(s.beginSync())).toBe(0);
    gate.resume();
    expect((await reading).equals(v)).toBe(true);
    expect(await s.collect(s.beginSync())).toBe(1);           // still a candidate, goes now
  });
});

describe('integrity', () => {
  it('a flipped byte gives E_CORRUPT naming the blob; other blobs stay readable', async () => {
    const s = await openStore();
    const v1 = makeValue(200 * KiB, 14);
    const v2 = makeValue(200 * KiB, 15);
    const b1 = await s.write(v1);
    const b2 = await s.write(v2);
    const p = join(valuesDir(), `blob-${b1.hex}`);
    const bytes = await readFile(p);
    bytes[100 * KiB] ^= 0x01;
    await writeFile(p, bytes);
    const err = await expectCode(s.read(b1.hash), 'E_CORRUPT');
    expect(err.message).toContain(b1.hex);
    expect((await s.read(b2.hash)).equals(v2)).toBe(true);
    await rm(p);
    expect((await expectCode(s.read(b1.hash), 'E_CORRUPT')).message).toMatch(/missing/);
  });

  it('a truncated blob with the right name is rewritten by the next write of that value', async () => {
    const s = await openStore();
    const v = makeValue(200 * KiB, 16);
    const b = await s.write(v);
    await writeFile(join(valuesDir(), `blob-${b.hex}`), v.subarray(0, 1000));
    await expectCode(s.read(b.hash), 'E_CORRUPT');
    await s.write(v);
    expect((await s.read(b.hash)).equals(v)).toBe(true);
  });
});

describe('ENOSPC', () => {
  it('on a 1 MiB tmpfs: the write fails cleanly, no temp file, no blob, smaller writes still work', async () => {
    const mnt = join(dataDir, 'small');
    await mkdir(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    try {
      const s = await BlobStore.open(mnt, { onWarning: () => {} });
      const err = await expectCode(s.write(makeValue(2 * MiB, 17)), 'E_IO');
      expect((err.cause as NodeJS.ErrnoException).code).toBe('ENOSPC');
      expect(err.message).toContain('ENOSPC');
      expect(await readdir(join(mnt, 'values'))).toEqual([]);
      expect(s.stats()).toMatchObject({ blobs: 0, pinned: 0 });
      const small = makeValue(200 * KiB, 18);
      const b = await s.write(small);
      expect((await s.read(b.hash)).equals(small)).toBe(true);
      await s.close();
    } finally {
      // A failed assertion can leave the store's files open: detach lazily then, never leak the mount.
      try {
        execFileSync('umount', [mnt]);
      } catch {
        execFileSync('umount', ['-l', mnt]);
      }
    }
  });

  it('injected ENOSPC whose temp cleanup also fails: the temp is left for sweep, which removes it', async () => {
    const io = new FaultyBlobIo();
    const warnings: string[] = [];
    const s = await openStore({ io, chunkBytes: 64 * KiB, onWarning: (m) => warnings.push(m) });
    io.arm({ step: 'write', nth: 2, action: 'throw', code: 'ENOSPC' });
    io.arm({ step: 'unlink', nth: 1, when: 'before', action: 'throw', code: 'EROFS' });
    await expectCode(s.write(makeValue(300 * KiB, 19)), 'E_IO');
    expect((await tempFiles()).length).toBe(1);
    expect(warnings.some((w) => w.includes('sweep will'))).toBe(true);
    expect(await s.sweep()).toBe(1);
    expect(await names()).toEqual([]);
  });
});

describe('directory fsync failures are surfaced', () => {
  it('EIO: warning + counter, the write fails, and the next reuse fsyncs the directory again', async () => {
    const io = new FaultyBlobIo();
    const warnings: string[] = [];
    const s = await openStore({ io, onWarning: (m) => warnings.push(m) });
    io.arm({ step: 'syncDir', action: 'throw', code: 'EIO' });
    const v = makeValue(200 * KiB, 20);
    await expectCode(s.write(v), 'E_IO');
    expect(s.stats().dirFsyncFailures).toBe(1);
    expect(warnings.filter((w) => /fsync of directory .* failed \(EIO\)/.test(w)).length).toBe(1);
    const before = io.counts.get('syncDir') ?? 0;
    const b = await s.write(v);                               // reuses the renamed blob
    expect(s.stats().dedupHits).toBe(1);
    expect(io.counts.get('syncDir')).toBe(before + 1);
    b.release();
    (await s.write(v)).release();                             // now the directory is clean: no fsync
    expect(io.counts.get('syncDir')).toBe(before + 1);
  });

  it('EINVAL (file system cannot fsync directories): warning + counter, the write succeeds', async () => {
    const io = new FaultyBlobIo();
    const warnings: string[] = [];
    const s = await openStore({ io, onWarning: (m) => warnings.push(m) });
    io.arm({ step: 'syncDir', action: 'throw', code: 'EINVAL' });
    const b = await s.write(makeValue(200 * KiB, 21));
    expect(b.hex).toMatch(/^[0-9a-f]{32}$/);
    expect(s.stats().dirFsyncFailures).toBe(1);
    expect(warnings.length).toBe(1);
  });
});

describe('sweep', () => {
  it('removes unreferenced blobs and stale temps, keeps live, referenced and pinned ones', async () => {
    const s1 = await openStore();
    const live = makeValue(140 * KiB, 22);
    const orphan = makeValue(140 * KiB, 23);
    const bl = await s1.write(live);
    const bo = await s1.write(orphan);
    await writeFile(join(valuesDir(), 'tmp-deadbeef-1-1'), 'partial');
    await s1.close();
    const s = await openStore();
    s.rebuild([bl.hash]);
    const pinnedV = makeValue(140 * KiB, 24);
    const bp = await s.write(pinnedV);                        // in flight: pinned, no ref yet
    expect(await s.sweep()).toBe(2);                          // the orphan and the temp
    expect(await blobFiles()).toEqual([`blob-${bl.hex}`, `blob-${bp.hex}`].sort());
    expect(s.stats()).toMatchObject({ orphansSwept: 2, blobs: 2 });
    bp.release();
    expect(await s.sweep((hex) => hex === bl.hex)).toBe(1);
    expect(await blobFiles()).toEqual([`blob-${bl.hex}`]);
    void bo;
  });
});

function runChild(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.on('error', rej);
    child.on('exit', (code, signal) => res({ code, signal, out }));
  });
}
