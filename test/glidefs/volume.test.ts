// Goal: the block layer's behaviour (read/write, dedup, fork, snapshot, delete, gc, verified GETs, stats) over memory, dir and MinIO stores.
import { statSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { BLOCK_SIZE, GlideFsError, blockHash } from '../../glidefs/index.js';
import { blockOf, listKeys, makeEnv, type Env, type StoreKind } from './helpers.js';

const MiB = 1024 * 1024;
const kinds: StoreKind[] = ['memory', 'dir', 'minio'];

describe.each(kinds)('glidefs over %s', (kind) => {
  let env: Env;
  afterEach(async () => {
    await env?.cleanup();
  });

  it('reads back unaligned writes (read-modify-write), across flush, reopen and a cold cache', async () => {
    env = await makeEnv(kind);
    await env.fs.createVolume('v', 4 * MiB);
    const v = await env.fs.openVolume('v');
    const a = blockOf(1, 3 * BLOCK_SIZE);
    await v.write(0, a);
    await v.flush();
    // unaligned write across two block boundaries, on top of committed data
    const patch = blockOf(2, BLOCK_SIZE + 1000);
    await v.write(BLOCK_SIZE - 500, patch);
    const expected = Buffer.from(a);
    patch.copy(expected, BLOCK_SIZE - 500);
    expect((await v.read(0, 3 * BLOCK_SIZE)).equals(expected)).toBe(true);
    // a tiny write into a hole block reads back with zeros around it
    await v.write(3 * BLOCK_SIZE + 7, Buffer.from('hello'));
    const r = await v.read(3 * BLOCK_SIZE, 16);
    expect(r.toString('latin1')).toBe('\0'.repeat(7) + 'hello' + '\0'.repeat(4));
    await v.flush();
    await v.close();
    // cold: a fresh cache dir reads everything from the store (verified GETs)
    const g2 = await env.reopen({ fresh: true });
    const v2 = await g2.openVolume('v');
    expect((await v2.read(0, 3 * BLOCK_SIZE)).equals(expected)).toBe(true);
    expect((await v2.read(3 * BLOCK_SIZE, 16)).toString('latin1')).toBe('\0'.repeat(7) + 'hello' + '\0'.repeat(4));
    expect((await v2.read(3 * MiB, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    await v2.close();
    expect(g2.stats('v').gets).toBe(4);
  });

  it('dedups by offset: same bytes same offset upload once, new offset uploads again, zero blocks upload nothing', async () => {
    env = await makeEnv(kind);
    await env.fs.createVolume('v', 2 * MiB);
    const v = await env.fs.openVolume('v');
    const b = blockOf(7);
    await v.write(0, b);
    let r = await v.flush();
    expect(r.uploads).toBe(1);
    await v.write(0, b); // same bytes, same offset
    r = await v.flush();
    expect(r.uploads).toBe(0);
    expect(r.skippedUnchanged).toBe(1);
    await v.write(BLOCK_SIZE, b); // same bytes, new offset
    r = await v.flush();
    expect(r.uploads).toBe(1);
    await v.write(2 * BLOCK_SIZE, Buffer.alloc(BLOCK_SIZE)); // zeros
    r = await v.flush();
    expect(r.uploads).toBe(0);
    // two block objects; every other PUT is a log record (the create, one per flush that changed something)
    expect(env.fs.stats('v').logPuts).toBe(3);
    expect(env.store.stats().puts).toBe(2 + 3 + 1); // + the volume's lease, taken at the open
    const keys = await listKeys(env.raw);
    expect(keys).toEqual([`blocks/0/${blockHash(b)}`, `blocks/1/${blockHash(b)}`]);
    const s = env.fs.stats('v');
    expect(s).toMatchObject({ uploads: 2, uploadedBytes: 2 * BLOCK_SIZE, reuploads: 0, skippedUnchanged: 2, blocks: 2, objects: 2, dirtyBlocks: 0 });
    // overwrite block 0 with other bytes: a re-upload; the old object is deleted after the commit
    await v.write(0, blockOf(8));
    r = await v.flush();
    expect(r).toMatchObject({ uploads: 1, reuploads: 1, deletes: 1 });
    // a block rewritten to zeros becomes a hole: its object goes
    await v.write(BLOCK_SIZE, Buffer.alloc(BLOCK_SIZE));
    r = await v.flush();
    expect(r).toMatchObject({ uploads: 0, deletes: 1, committedBlocks: 1 });
    expect(await listKeys(env.raw)).toEqual([`blocks/0/${blockHash(blockOf(8))}`]);
    expect(env.fs.uploadsPerOffset('v')).toEqual([
      { blockIndex: 0, uploads: 2 },
      { blockIndex: 1, uploads: 1 },
    ]);
    expect(env.fs.stats('v')).toMatchObject({ uploads: 3, reuploads: 1, deletes: 2, blocks: 1 });
  });

  it('forks without copying; a write in the fork uploads one object and leaves the parent unchanged', async () => {
    env = await makeEnv(kind);
    await env.fs.createVolume('p', 2 * MiB);
    const p = await env.fs.openVolume('p');
    const data = blockOf(3, 4 * BLOCK_SIZE);
    await p.write(0, data);
    await p.flush();
    const putsBefore = env.store.stats().puts;
    const info = await env.fs.fork('p', 'f');
    expect(info).toMatchObject({ name: 'f', parent: 'p', snapshot: false, sizeBytes: 2 * MiB });
    expect(env.store.stats().puts).toBe(putsBefore + 2); // p's checkpoint (the fork point) and the fork's first log record; no block object
    expect(await listKeys(env.raw)).toHaveLength(4);
    expect(env.fs.stats('f')).toMatchObject({ blocks: 4, sharedBlocks: 4, uploads: 0 });
    const f = await env.fs.openVolume('f');
    expect((await f.read(0, 4 * BLOCK_SIZE)).equals(data)).toBe(true);
    await f.write(BLOCK_SIZE, blockOf(99));
    const r = await f.flush();
    expect(r.uploads).toBe(1);
    expect(r.deletes).toBe(0); // the parent still references the old object
    expect(env.store.stats().puts).toBe(putsBefore + 5); // p's checkpoint, fork record, the fork's lease (taken at its open), one block object, one log record
    expect(await listKeys(env.raw)).toHaveLength(5);
    expect((await p.read(0, 4 * BLOCK_SIZE)).equals(data)).toBe(true);
    expect((await f.read(BLOCK_SIZE, BLOCK_SIZE)).equals(blockOf(99))).toBe(true);
    expect(env.fs.stats('f')).toMatchObject({ sharedBlocks: 3, reuploads: 1 });
    expect(env.fs.stats('p').sharedBlocks).toBe(3);
    // parent unchanged also from a cold cache
    await p.close();
    const g2 = await env.reopen({ fresh: true });
    expect((await (await g2.openVolume('p')).read(0, 4 * BLOCK_SIZE)).equals(data)).toBe(true);
  });

  it('snapshot is read-only; fork includes unflushed writes of a closed volume', async () => {
    env = await makeEnv(kind);
    await env.fs.createVolume('v', MiB);
    const v = await env.fs.openVolume('v');
    await v.write(0, blockOf(5));
    await v.close(); // dirty, not flushed
    const s = await env.fs.snapshot('v', 's');
    expect(s.snapshot).toBe(true);
    const sv = await env.fs.openVolume('s');
    expect(sv.readOnly).toBe(true);
    await expect(sv.write(0, Buffer.from('x'))).rejects.toMatchObject({ code: 'E_READ_ONLY' });
    expect((await sv.read(0, BLOCK_SIZE)).equals(blockOf(5))).toBe(true);
    await expect(env.fs.fork('v', 's')).rejects.toMatchObject({ code: 'E_VOLUME_EXISTS' });
    await expect(env.fs.fork('nope', 'x')).rejects.toMatchObject({ code: 'E_NO_VOLUME' });
  });

  it('delete releases refcounts; gc removes unreferenced objects and orphans, never named ones', async () => {
    env = await makeEnv(kind);
    await env.fs.createVolume('a', MiB);
    const a = await env.fs.openVolume('a');
    await a.write(0, blockOf(1, 2 * BLOCK_SIZE));
    await a.flush();
    await a.close();
    await env.fs.fork('a', 'b');
    const b = await env.fs.openVolume('b');
    await b.write(2 * BLOCK_SIZE, blockOf(9));
    await b.flush();
    await b.close();
    expect((await listKeys(env.raw)).length).toBe(3);
    await env.fs.deleteVolume('a'); // b still references a's two objects
    expect((await listKeys(env.raw)).length).toBe(3);
    // orphans: an object the catalog does not name (a crashed flush's upload)
    const orphan = `blocks/7/${blockHash(blockOf(42))}`;
    await env.raw.put(orphan, blockOf(42));
    expect(await env.fs.gc({ graceMs: 0 })).toMatchObject({ deletedObjects: 0, orphansDeleted: 1 });
    expect((await listKeys(env.raw)).length).toBe(3);
    const g2 = await env.reopen({ fresh: true });
    expect((await (await g2.openVolume('b')).read(0, 2 * BLOCK_SIZE)).equals(blockOf(1, 2 * BLOCK_SIZE))).toBe(true);
    await g2.close();
    await env.fs.deleteVolume('b');
    expect(await listKeys(env.raw)).toEqual([]);
    const logs: string[] = [];
    for await (const k of env.raw.list('volumes/')) logs.push(k);
    expect(logs).toEqual([]); // a deleted volume's log goes too
    expect(await env.fs.gc({ graceMs: 0 })).toMatchObject({ deletedObjects: 0, orphansDeleted: 0, logRecordsDeleted: 0 });
    expect(env.fs.listVolumes()).toEqual([]);
    await expect(env.fs.deleteVolume('b')).rejects.toMatchObject({ code: 'E_NO_VOLUME' });
  });

  it('verifies every GET: a corrupted object is E_CORRUPT, never data', async () => {
    env = await makeEnv(kind);
    await env.fs.createVolume('v', MiB);
    const v = await env.fs.openVolume('v');
    await v.write(0, blockOf(11));
    await v.flush();
    await v.close();
    const [key] = await listKeys(env.raw);
    const bad = blockOf(11);
    bad[1000] ^= 1;
    await env.raw.put(key, bad);
    const g2 = await env.reopen({ fresh: true });
    const v2 = await g2.openVolume('v');
    const err = await v2.read(0, 10).catch((e) => e);
    expect(err).toBeInstanceOf(GlideFsError);
    expect(err.code).toBe('E_CORRUPT');
    // a partial write needs the old bytes: also refused
    await expect(v2.write(5, Buffer.from('x'))).rejects.toMatchObject({ code: 'E_CORRUPT' });
    await env.raw.delete(key);
    await expect(v2.read(0, 10)).rejects.toMatchObject({ code: 'E_CORRUPT' });
  });

  it('keeps the dirty set across close and reopen; rejects bad input with typed errors', async () => {
    env = await makeEnv(kind);
    await expect(env.fs.createVolume('z', 0)).rejects.toMatchObject({ code: 'E_BAD_SIZE' });
    await expect(env.fs.createVolume('z', BLOCK_SIZE + 1)).rejects.toMatchObject({ code: 'E_BAD_SIZE' });
    await expect(env.fs.createVolume('bad/name', MiB)).rejects.toMatchObject({ code: 'E_BAD_NAME' });
    await env.fs.createVolume('v', MiB);
    await expect(env.fs.createVolume('v', MiB)).rejects.toMatchObject({ code: 'E_VOLUME_EXISTS' });
    expect(() => env.fs.getVolume('nope')).toThrow(/E_NO_VOLUME/);
    const v = await env.fs.openVolume('v');
    await expect(env.fs.openVolume('v')).rejects.toMatchObject({ code: 'E_LOCKED' });
    await expect(v.write(MiB - 1, Buffer.alloc(2))).rejects.toMatchObject({ code: 'E_OUT_OF_RANGE' });
    await expect(v.read(MiB, 1)).rejects.toMatchObject({ code: 'E_OUT_OF_RANGE' });
    await expect(v.read(-1, 1)).rejects.toMatchObject({ code: 'E_OUT_OF_RANGE' });
    await v.write(3 * BLOCK_SIZE + 100, blockOf(4, 5000));
    await v.write(5 * BLOCK_SIZE, blockOf(6));
    // private files: catalog (and its WAL) 0600, cache dir 0700
    for (const f of [env.catalogPath, `${env.catalogPath}-wal`]) expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(statSync(env.cacheDir).mode & 0o777).toBe(0o700);
    await v.close();
    expect(env.fs.stats('v').dirtyBlocks).toBe(2);
    expect(env.store.stats().puts).toBe(3); // the volume's create record, and its lease (taken at the open, released at the close)
    const v2 = await env.fs.openVolume('v');
    expect(v2.dirtyBlocks).toBe(2);
    const r = await v2.flush();
    expect(r.uploads).toBe(2);
    expect(v2.dirtyBlocks).toBe(0);
    expect((await v2.read(3 * BLOCK_SIZE + 100, 5000)).equals(blockOf(4, 5000))).toBe(true);
  });
});

describe('key prefix', () => {
  it('puts block keys under <prefix>/blocks/ and gc touches nothing outside them', async () => {
    const { MemoryStore, GlideFs } = await import('../../glidefs/index.js');
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const root = mkdtempSync(join(tmpdir(), 'glidefs-prefix-'));
    const store = new MemoryStore();
    try {
      const fs = await GlideFs.open({ store, catalogPath: join(root, 'c.db'), cacheDir: join(root, 'cache'), prefix: '/team/a/' });
      await fs.createVolume('v', MiB);
      const v = await fs.openVolume('v');
      await v.write(0, blockOf(1));
      await v.flush();
      await store.put('team/a/notes.txt', Buffer.from('keep'));
      await store.put('blocks/0/' + blockHash(blockOf(2)), blockOf(2)); // another prefix's block
      await store.put(`team/a/blocks/5/${blockHash(blockOf(3))}`, blockOf(3)); // an orphan under ours
      expect(await fs.gc({ graceMs: 0 })).toMatchObject({ deletedObjects: 0, orphansDeleted: 1, logRecordsDeleted: 0 });
      const keys: string[] = [];
      for await (const k of store.list('')) if (!k.startsWith('team/a/volumes/')) keys.push(k);
      expect(keys.sort()).toEqual(['blocks/0/' + blockHash(blockOf(2)), `team/a/blocks/0/${blockHash(blockOf(1))}`, 'team/a/notes.txt', 'team/a/glidekv-store.json'].sort());
      const logs: string[] = [];
      for await (const k of store.list('team/a/volumes/')) if (!k.endsWith('/lease')) logs.push(k);
      expect(logs).toHaveLength(2); // the volume's log lives under the prefix too (create + one flush)
      await fs.close();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
