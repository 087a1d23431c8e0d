// Value separation wired into the engine: large values live in the blob store by default, are shared
// and refcounted across keys and namespaces, verified on read, survive the GC race, stream through
// watch (live and replay), and a reclaim crash can never resurrect a pointer to a collected blob.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { open, KvError, nodeFileIo, type FileIo, type ValueSeparator } from '../../src/index.js';
import { BlobStore } from '../../src/blob-store.js';
import { blobIoFromFileIo } from '../../src/blob-io.js';
import { BlobSeparator } from '../../src/value-separator.js';
import { bigValue } from './fixtures/sep-fault-io.js';
import { codeOf, rmDir, segFiles, tmpDir } from './helpers.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));
function dirFor(tag: string): string {
  const d = tmpDir(tag);
  dirs.push(d);
  return d;
}
const blobPath = (dir: string, v: Buffer) => path.join(dir, 'values', `blob-${BlobStore.hashOf(v).toString('hex')}`);
const blobFiles = (dir: string) => fs.readdirSync(path.join(dir, 'values')).sort();
const refs = (e: { separator: ValueSeparator | null }, v: Buffer) => (e.separator as BlobSeparator).blobs.refCount(BlobStore.hashOf(v));

describe('defaults', () => {
  it('values of 131072 bytes or more are separated by default; valueThreshold 0 keeps them inline; both read back either way', async () => {
    const dir = dirFor('sep-default');
    const at = bigValue(131072, 1);
    const below = bigValue(131071, 2);
    let e = await open(dir);
    await e.createNamespace('n');
    await e.put('n', 'at', at);
    await e.put('n', 'below', below);
    expect(blobFiles(dir)).toEqual([path.basename(blobPath(dir, at))]);
    expect(e.stats().blobs).toBe(1);
    expect(e.stats().blobBytes).toBe(131072);
    expect(e.stats().liveBytes).toBeLessThan(131071 + 1000); // the separated one costs a pointer record
    await e.close();

    e = await open(dir, { valueThreshold: 0 }); // baseline: never separate new values ...
    const big = bigValue(300_000, 3);
    await e.put('n', 'inline', big);
    expect(blobFiles(dir)).toHaveLength(1);
    expect((await e.get('n', 'at'))!.value.equals(at)).toBe(true); // ... existing pointers still read
    await e.close();

    e = await open(dir);
    expect((await e.get('n', 'inline'))!.value.equals(big)).toBe(true);
    expect((await e.get('n', 'below'))!.value.equals(below)).toBe(true);
    expect(e.stat('n', 'at')!.size).toBe(131072);
    await e.close();
  });
});

describe('sharing and refcounts', () => {
  it('equal values share one blob across keys and namespaces; counts are rebuilt on reopen; the last drop collects it', async () => {
    const dir = dirFor('sep-share');
    const v = bigValue(200_000, 7);
    let e = await open(dir);
    await e.createNamespace('a');
    await e.createNamespace('b');
    await e.put('a', 'x', v);
    await e.put('a', 'y', v);
    await e.batch('b', [{ type: 'put', key: 'z', value: v }, { type: 'put', key: 'small', value: 'tiny' }]);
    expect(blobFiles(dir)).toHaveLength(1);
    expect(refs(e, v)).toBe(3);
    await e.close();

    e = await open(dir);
    expect(refs(e, v)).toBe(3);
    expect(e.stats().orphansSwept).toBe(0);
    await e.delete('a', 'x');
    await e.dropNamespace('b', { force: true });
    await e.sync();
    expect(refs(e, v)).toBe(1);
    expect(fs.existsSync(blobPath(dir, v))).toBe(true);
    expect((await e.get('a', 'y'))!.value.equals(v)).toBe(true);
    await e.put('a', 'y', 'small now'); // overwrite drops the last pointer
    await e.sync();
    expect(fs.existsSync(blobPath(dir, v))).toBe(false);
    expect(e.stats().blobs).toBe(0);
    await e.close();
  });

  it("sync 'none': blobs are collected at sync(), reclaim() and close(), not before", async () => {
    const dir = dirFor('sep-none');
    const v1 = bigValue(150_000, 1);
    const v2 = bigValue(150_000, 2);
    let e = await open(dir, { sync: 'none' });
    await e.createNamespace('n');
    await e.put('n', 'k', v1);
    await e.put('n', 'k', v2);
    await new Promise((r) => setTimeout(r, 20));
    expect(fs.existsSync(blobPath(dir, v1))).toBe(true); // the overwrite is not durable yet
    await e.sync();
    expect(fs.existsSync(blobPath(dir, v1))).toBe(false);
    await e.delete('n', 'k');
    await e.reclaim();
    expect(fs.existsSync(blobPath(dir, v2))).toBe(false);
    await e.put('n', 'k', v1);
    await e.put('n', 'k', 'inline');
    await e.close();
    expect(fs.existsSync(blobPath(dir, v1))).toBe(false);
    e = await open(dir);
    expect(e.stats().orphansSwept).toBe(0);
    await e.close();
  });
});

describe('the GC race', () => {
  it('put V under A while B, the last other pointer to V, is deleted and reclaimed: V survives, no orphan after', async () => {
    const dir = dirFor('sep-race');
    const v = bigValue(200_000, 9);
    // the default separator, with a gate between "blob durable + pinned" and the pointer append
    let armed = false;
    let gate: (() => void) | null = null;
    let reached: () => void = () => {};
    const atGate = new Promise<void>((r) => (reached = r));
    const blobs = await BlobStore.open(dir, { io: blobIoFromFileIo(nodeFileIo) });
    const inner = new BlobSeparator(blobs, () => {});
    const sep: ValueSeparator = Object.assign(Object.create(inner) as BlobSeparator, {
      async store(value: Buffer) {
        const r = await inner.store(value);
        if (armed && value.equals(v)) {
          armed = false;
          await new Promise<void>((res) => {
            gate = res;
            reached();
          });
        }
        return r;
      },
    });
    const e = await open(dir, { valueSeparator: sep, reclaimMinBytes: 1e12 });
    await e.createNamespace('n');
    await e.put('n', 'B', v);
    armed = true;
    const putA = e.put('n', 'A', v); // the blob exists: dedup, pinned, then waits at the gate
    await atGate;
    await e.delete('n', 'B');
    await e.reclaim();
    await e.sync(); // collects every candidate it may
    expect(refs(e, v)).toBe(0); // no pointer at all right now, only A's pin ...
    expect(fs.existsSync(blobPath(dir, v))).toBe(true); // ... which kept the blob
    (gate as unknown as () => void)();
    await putA;
    expect((await e.get('n', 'A'))!.value.equals(v)).toBe(true);
    expect(refs(e, v)).toBe(1);
    await e.close();

    const e2 = await open(dir);
    expect(e2.stats().orphansSwept).toBe(0);
    expect(e2.stats().danglingPointers).toBe(0);
    expect((await e2.get('n', 'A'))!.value.equals(v)).toBe(true);
    await e2.delete('n', 'A');
    await e2.sync();
    expect(blobFiles(dir)).toEqual([]); // and no orphan remains after the last reference goes
    await e2.close();
  });
});

describe('integrity and surfaced failures', () => {
  it('a flipped byte in a blob is E_CORRUPT on get; other keys are unaffected', async () => {
    const dir = dirFor('sep-flip');
    const v = bigValue(200_000, 4);
    const w = bigValue(200_000, 5);
    const e = await open(dir);
    await e.createNamespace('n');
    await e.put('n', 'bad', v);
    await e.put('n', 'good', w);
    await e.put('n', 'inline', 'fine');
    const f = blobPath(dir, v);
    const bytes = fs.readFileSync(f);
    bytes[123_456] ^= 0x20;
    fs.writeFileSync(f, bytes);
    const err = await e.get('n', 'bad').catch((x: unknown) => x);
    expect(err).toBeInstanceOf(KvError);
    expect((err as KvError).code).toBe('E_CORRUPT');
    expect((err as KvError).message).toMatch(/blob [0-9a-f]{32} is corrupt/);
    expect((await e.get('n', 'good'))!.value.equals(w)).toBe(true);
    expect((await e.get('n', 'inline'))!.value.toString()).toBe('fine');
    await e.close();
  });

  it('a blob missing at open is reported (warning + danglingPointers) and reads as E_CORRUPT', async () => {
    const dir = dirFor('sep-dangling');
    const v = bigValue(140_000, 6);
    let e = await open(dir);
    await e.createNamespace('n');
    await e.put('n', 'k', v);
    await e.put('n', 'other', 'ok');
    await e.close();
    fs.unlinkSync(blobPath(dir, v));
    const warnings: string[] = [];
    e = await open(dir, { onWarning: (m) => warnings.push(m) });
    expect(e.stats().danglingPointers).toBe(1);
    expect(warnings.join('\n')).toMatch(/1 blob\(s\) referenced by live pointers are missing/);
    expect(await codeOf(e.get('n', 'k'))).toBe('E_CORRUPT');
    expect((await e.get('n', 'other'))!.value.toString()).toBe('ok');
    await e.close();
  });

  it('a failed fsync of values/ is a warning and a stats counter: EINVAL (unsupported) lets the put through, EIO fails it', async () => {
    const dir = dirFor('sep-dirsync');
    let fail: string | null = null;
    const io: FileIo = {
      ...nodeFileIo,
      async fsyncDir(d) {
        if (fail !== null && d.endsWith('/values')) {
          const code = fail;
          fail = null;
          throw Object.assign(new Error(`${code}: injected`), { code });
        }
        return nodeFileIo.fsyncDir(d);
      },
    };
    const warnings: string[] = [];
    const e = await open(dir, { io, onWarning: (m) => warnings.push(m) });
    await e.createNamespace('n');
    fail = 'EINVAL';
    await e.put('n', 'a', bigValue(140_000, 1));
    expect(e.stats().dirFsyncFailures).toBe(1);
    expect(warnings.filter((w) => /fsync of directory .*values failed \(EINVAL\)/.test(w))).toHaveLength(1);
    fail = 'EIO';
    const v = bigValue(140_000, 2);
    expect(await codeOf(e.put('n', 'b', v))).toBe('E_IO');
    expect(e.stats().dirFsyncFailures).toBe(2);
    expect(e.stats().warnings).toBe(2);
    expect(warnings[1]).toMatch(/\(EIO\)/);
    expect(e.stat('n', 'b')).toBeUndefined(); // no pointer
    expect(e.stats().poisoned).toBe(0);
    await e.put('n', 'b', v); // the retry reuses the renamed blob and fsyncs the directory first
    expect((await e.get('n', 'b'))!.value.equals(v)).toBe(true);
    await e.close();
  });
});

describe('watch', () => {
  it('events of separated values carry the value, live and on replay; a collected blob ends a replay with E_COMPACTED', async () => {
    const dir = dirFor('sep-watch');
    const v1 = bigValue(150_000, 1);
    const v2 = bigValue(150_000, 2);
    const e = await open(dir, { reclaimMinBytes: 1e12 });
    await e.createNamespace('n');
    const live = e.watch('n', { key: 'k' });
    const r1 = await e.put('n', 'k', v1);
    const it = live[Symbol.asyncIterator]();
    const ev = (await it.next()).value;
    expect(ev.revision).toBe(r1);
    expect(ev.value.equals(v1)).toBe(true);
    live.close();

    const replay = e.watch('n', { key: 'k' }, { fromRevision: 1 });
    const ev2 = (await replay[Symbol.asyncIterator]().next()).value;
    expect(ev2.revision).toBe(r1);
    expect(ev2.value.equals(v1)).toBe(true); // read from the blob store
    replay.close();

    const r2 = await e.put('n', 'k', v2); // v1's blob is collected after this fsync
    await e.sync();
    expect(fs.existsSync(blobPath(dir, v1))).toBe(false);
    const gone = e.watch('n', { key: 'k' }, { fromRevision: 1 });
    const err = await gone[Symbol.asyncIterator]().next().catch((x: unknown) => x);
    expect((err as KvError).code).toBe('E_COMPACTED');
    expect((err as KvError).compactRevision).toBe(r1 + 1);
    const resumed = e.watch('n', { key: 'k' }, { fromRevision: r1 + 1 });
    const ev3 = (await resumed[Symbol.asyncIterator]().next()).value;
    expect(ev3.revision).toBe(r2);
    expect(ev3.value.equals(v2)).toBe(true);
    resumed.close();
    await e.close();
  });
});

describe('reclaim and tombstones', () => {
  it('a crash between the unlinks of a reclaim cannot resurrect a deleted key whose blob was collected', async () => {
    const dir = dirFor('sep-tomb');
    const snap = dirFor('sep-tomb-snap');
    const v = bigValue(150_000, 8);
    let crashAt: string | null = null;
    const io: FileIo = {
      ...nodeFileIo,
      async unlink(p) {
        if (p === crashAt) {
          // the disk at the moment of the crash: everything before this unlink happened
          fs.cpSync(dir, snap, { recursive: true });
          fs.rmSync(path.join(snap, 'LOCK'));
          throw Object.assign(new Error('EIO: injected crash'), { code: 'EIO' });
        }
        return nodeFileIo.unlink(p);
      },
    };
    const e = await open(dir, { io, reclaimMinBytes: 1e12 });
    await e.createNamespace('n');
    await e.put('n', 'gone', v);
    await e.put('n', 'kept', 'alive');
    await e.reclaim(); // 'gone' is copied into a segment with a HIGHER id than the active one
    await e.delete('n', 'gone'); // its tombstone goes into the (lower-id) active segment
    await e.sync();
    expect(fs.existsSync(blobPath(dir, v))).toBe(false); // collected: the delete is durable
    const segs = segFiles(dir, 'n');
    crashAt = path.join(dir, 'ns', 'n', segs[segs.length - 1]); // the copy holding 'gone'; unlinked after the tombstone's segment
    await expect(e.reclaim()).rejects.toThrow(/injected crash/);
    await e.close();

    const e2 = await open(snap, { onWarning: () => {} });
    expect(e2.stats().danglingPointers).toBe(0);
    expect(e2.stat('n', 'gone')).toBeUndefined();
    expect(await e2.get('n', 'gone')).toBeUndefined();
    expect((await e2.get('n', 'kept'))!.value.toString()).toBe('alive');
    await e2.close();
  });
});

describe('gc', () => {
  it('gc() makes dereferences durable, then sweeps orphans (and only orphans)', async () => {
    const dir = dirFor('sep-gc');
    const v = bigValue(150_000, 3);
    const e = await open(dir, { sync: 'none' });
    await e.createNamespace('n');
    await e.put('n', 'k', v);
    const orphan = bigValue(140_000, 99);
    fs.writeFileSync(blobPath(dir, orphan), orphan);
    fs.writeFileSync(path.join(dir, 'values', 'tmp-0123-1-1'), 'partial');
    expect(await e.gc()).toEqual({ orphansSwept: 2 });
    expect(blobFiles(dir)).toEqual([path.basename(blobPath(dir, v))]);
    await e.delete('n', 'k'); // not durable yet (sync 'none'); gc syncs before it sweeps
    expect((await e.gc()).orphansSwept).toBe(0); // collected by the sync, not swept as an orphan
    expect(blobFiles(dir)).toEqual([]);
    expect(e.stats().orphansSwept).toBe(2);
    await e.close();
  });
});
