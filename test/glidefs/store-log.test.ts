// Goal: the volume log in the store — one log object per flush, reads rebuilt from the log after the
// cache is lost, checkpoints, restore from the store alone (forks included), fencing of a second
// writer (E_FENCED), one writer per volume in a catalog (E_LOCKED), and the record codec.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BLOCK_SIZE, GlideFs, type ObjectStore } from '../../glidefs/index.js';
import { restoreCatalog } from '../../glidefs/restore.js';
import { leaseKey, parseLease } from '../../glidefs/lease.js';
import { decodeRecord, encodeRecord, KIND_FLUSH, type FlushRecord } from '../../glidefs/log-record.js';
import { blockOf, makeEnv, type Env, catalogSql } from './helpers.js';

const BS = BLOCK_SIZE;

async function keys(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list(prefix)) out.push(k);
  return out.sort();
}

describe('log record codec', () => {
  const rec: FlushRecord = {
    kind: KIND_FLUSH,
    volume: 'a'.repeat(32),
    seq: 7,
    time: 1,
    writer: 'w',
    blocks: [
      [3, 'b'.repeat(32)],
      [4, null],
    ],
    sectors: [{ index: 9, mask: 0b1011, hash: 'c'.repeat(32), data: blockOf(5, 3 * 4096) }],
  };

  it('round-trips, and refuses a flipped bit (E_CORRUPT) and another format version (E_VERSION)', async () => {
    const buf = await encodeRecord(rec);
    expect(decodeRecord(buf, 'k')).toEqual(rec);
    for (const pos of [12, 25, 40, buf.length - 1]) {
      const bad = Buffer.from(buf);
      bad[pos] ^= 0x10;
      expect(() => decodeRecord(bad, 'k')).toThrow(/E_CORRUPT/);
    }
    const v2 = Buffer.from(buf);
    v2.writeUInt16LE(3, 8); // versions 1 and 2 are read (2: layered checkpoints)
    expect(() => decodeRecord(v2, 'k')).toThrow(/E_VERSION/);
  });
});

describe('volume log (directory store)', () => {
  let env: Env;
  afterEach(async () => env?.cleanup());

  it('a flush of partial writes PUTs exactly one log object and no block object; reads survive the loss of the cache', async () => {
    env = await makeEnv('dir');
    // no checkpoint on close: the cold reader must rebuild the blocks from base + log
    const g = await GlideFs.open({ store: env.store, catalogPath: env.catalogPath, cacheDir: join(env.root, 'c1'), checkpoint: { onClose: false } });
    await g.createVolume('v', 8 * BS);
    const v = await g.openVolume('v');
    await v.write(2 * BS, blockOf(1)); // whole block
    await v.flush();
    const before = env.store.stats().puts;
    await v.write(2 * BS + 4096 * 3 + 10, Buffer.from('journal entry'));
    await v.write(5 * BS + 100, Buffer.from('inode'));
    const r = await v.flush();
    expect(r).toMatchObject({ uploads: 0, logPuts: 1, loggedBlocks: 2 });
    expect(env.store.stats().puts - before).toBe(1);
    expect(r.logBytes).toBeLessThan(2 * 4096 + 1024); // two sectors (one of random bytes), compressed
    // the cache is lost: another cache dir reads base + log
    const expected = Buffer.from(await v.read(0, 8 * BS));
    await g.close();
    const g2 = await GlideFs.open({ store: env.store, catalogPath: env.catalogPath, cacheDir: join(env.root, 'c2'), checkpoint: { onClose: false } });
    expect(g2.stats('v')).toMatchObject({ loggedBlocks: 2, checkpoints: 0 });
    const v2 = await g2.openVolume('v');
    expect((await v2.read(0, 8 * BS)).equals(expected)).toBe(true);
    expect((await v2.read(2 * BS + 4096 * 3 + 10, 13)).toString()).toBe('journal entry');
    await g2.close();
    // a checkpoint with nothing cached folds from the store (base + records, each record read once)
    const g3 = await env.reopen({ fresh: true });
    const v3 = await g3.openVolume('v');
    expect(await v3.checkpoint()).toMatchObject({ foldedBlocks: 2, uploads: 2 });
    expect((await v3.read(0, 8 * BS)).equals(expected)).toBe(true);
  });

  it('a checkpoint folds the log into block objects, deletes the records it covers, and reads stay identical', async () => {
    env = await makeEnv('dir');
    const g = await GlideFs.open({ store: env.store, catalogPath: env.catalogPath /* the store's owner catalog */, cacheDir: join(env.root, 'c2'), checkpoint: { onClose: false } });
    await g.createVolume('v', 8 * BS);
    const v = await g.openVolume('v');
    for (let k = 0; k < 5; k++) {
      await v.write(k * 4096 + 7, Buffer.from(`rec ${k}`));
      await v.flush();
    }
    const uuid = g.catalog.volume('v').uuid;
    expect((await keys(env.raw, `volumes/${uuid}/log/`)).length).toBe(6); // create + 5 flushes
    expect(await keys(env.raw, 'blocks/')).toEqual([]);
    const expected = Buffer.from(await v.read(0, 2 * BS));
    const c = await v.checkpoint();
    expect(c).toMatchObject({ seq: 7, foldedBlocks: 1, uploads: 1, deletedRecords: 6 });
    expect(await keys(env.raw, `volumes/${uuid}/log/`)).toEqual([`volumes/${uuid}/log/0000000000000007`]);
    expect((await keys(env.raw, 'blocks/')).length).toBe(1);
    expect(g.stats('v')).toMatchObject({ checkpoints: 1, checkpointUploads: 1, uploads: 1, loggedBlocks: 0, logSeq: 7, checkpointSeq: 7 });
    expect(g.uploadsPerOffset('v')).toEqual([{ blockIndex: 0, uploads: 1 }]);
    await v.close();
    const g2 = await GlideFs.open({ store: env.store, catalogPath: env.catalogPath /* the store's owner catalog */, cacheDir: join(env.root, 'c3') });
    expect((await (await g2.openVolume('v')).read(0, 2 * BS)).equals(expected)).toBe(true);
    await g2.close();
    await g.close();
  });

  it('background checkpoints start when the log passes maxLogRecords', async () => {
    env = await makeEnv('dir');
    const g = await GlideFs.open({ store: env.store, catalogPath: env.catalogPath /* the store's owner catalog */, cacheDir: join(env.root, 'c2'), checkpoint: { maxLogRecords: 3 } });
    await g.createVolume('v', 4 * BS);
    const v = await g.openVolume('v');
    for (let k = 0; k < 6; k++) {
      await v.write(k * 4096, Buffer.from(`x${k}`));
      await v.flush();
    }
    await v.sync();
    await v.flush(); // runs after the queued checkpoint
    expect(g.stats('v').checkpoints).toBeGreaterThanOrEqual(1);
    const uuid = g.catalog.volume('v').uuid;
    expect((await keys(env.raw, `volumes/${uuid}/log/`)).length).toBeLessThan(7);
    await g.close();
  });

  it('machine loss: delete the catalog and the cache, restore from the store alone: every volume and fork reads back identical', async () => {
    env = await makeEnv('dir');
    // the machine is lost, not shut down: nothing checkpoints on the way out
    const g = await GlideFs.open({ store: env.store, catalogPath: env.catalogPath, cacheDir: env.cacheDir, checkpoint: { onClose: false } });
    await g.createVolume('a', 16 * BS);
    await g.createVolume('b', 4 * BS);
    const a = await g.openVolume('a');
    for (let i = 0; i < 16; i += 3) await a.write(i * BS, blockOf(i + 1));
    await a.write(5 * BS + 333, Buffer.from('partial in a'));
    await a.flush();
    await g.fork('a', 'a-fork');
    await g.snapshot('a', 'a-snap');
    await a.write(5 * BS + 333, Buffer.from('PARTIAL IN A'));
    await a.write(7 * BS, blockOf(99));
    await a.flush();
    const f = await g.openVolume('a-fork');
    await f.write(1 * BS + 4096, Buffer.from('fork only'));
    await f.flush();
    const b = await g.openVolume('b');
    await b.write(100, Buffer.from('b bytes'));
    await b.flush();
    await g.createVolume('gone', 4 * BS);
    await g.deleteVolume('gone');
    const want = new Map<string, Buffer>();
    for (const [n, vol] of [
      ['a', a],
      ['a-fork', f],
      ['b', b],
    ] as const)
      want.set(n, Buffer.from(await vol.read(0, vol.sizeBytes)));
    const snap = await g.openVolume('a-snap');
    want.set('a-snap', Buffer.from(await snap.read(0, snap.sizeBytes)));
    const seqs = Object.fromEntries([...want.keys()].map((n) => [n, g.stats(n).logSeq]));
    // not flushed: not promised, and must not break the restore
    await b.write(200, Buffer.from('never fsynced'));
    await g.close();
    rmSync(env.catalogPath);
    rmSync(env.cacheDir, { recursive: true, force: true });

    const res = await restoreCatalog(env.store, '', join(env.root, 'restored.db'));
    expect(res.recordsRead).toBeGreaterThan(res.volumes.length); // flush records after the checkpoints were replayed
    // the restored catalog itself is up to date (before any open could catch up from the store)
    expect(Object.fromEntries(res.volumes.map((v) => [v.name, v.logSeq]))).toEqual(seqs);
    expect(res.volumes.map((v) => v.name).sort()).toEqual(['a', 'a-fork', 'a-snap', 'b']);
    const g2 = await GlideFs.open({ store: env.store, catalogPath: join(env.root, 'restored.db'), cacheDir: join(env.root, 'cache-r') });
    for (const [n, bytes] of want) {
      const v = await g2.openVolume(n);
      expect((await v.read(0, v.sizeBytes)).equals(bytes), `volume ${n}`).toBe(true);
      await v.close();
    }
    expect(g2.getVolume('a-fork')).toMatchObject({ parent: 'a', snapshot: false });
    expect(g2.getVolume('a-snap')).toMatchObject({ parent: 'a', snapshot: true });
    // a restored catalog writes on: the log continues at the next seq
    const a2 = await g2.openVolume('a');
    await a2.write(0, Buffer.from('after restore'));
    await a2.flush();
    // and gc of the restored catalog deletes nothing any volume names
    await g2.gc({ graceMs: 0 });
    for (const [n, bytes] of want) {
      if (n === 'a') continue;
      const v = await g2.openVolume(n);
      expect((await v.read(0, v.sizeBytes)).equals(bytes), `volume ${n} after gc`).toBe(true);
      await v.close();
    }
    await g2.close();
    // restore refuses a catalog that holds volumes, changing nothing
    await expect(restoreCatalog(env.store, '', join(env.root, 'restored.db'))).rejects.toThrow(/E_INVALID/);
  });

  it('fencing: a second writer (a catalog restored elsewhere) takes the volume; the first gets E_FENCED and nothing acknowledged is lost', async () => {
    env = await makeEnv('dir');
    await env.fs.createVolume('v', 4 * BS);
    const v1 = await env.fs.openVolume('v');
    await v1.write(0, Buffer.from('one'));
    await v1.flush();
    await restoreCatalog(env.store, '', join(env.root, 'other.db'));
    const g2 = await GlideFs.open({ store: env.store, catalogPath: join(env.root, 'other.db'), cacheDir: join(env.root, 'other') });
    await expect(g2.openVolume('v')).rejects.toMatchObject({ code: 'E_LEASED' }); // v1 holds the lease (lease.test.ts)
    // v1's lease runs out (its renewals no longer reach the store): the second writer takes over and claims the log
    const lk = leaseKey('', env.fs.catalog.volume('v').uuid);
    await env.store.put(lk, Buffer.from(JSON.stringify({ ...parseLease((await env.store.get(lk))!, lk), expiresAt: Date.now() - 1 })));
    const v2 = await g2.openVolume('v');
    expect((await v2.read(0, 3)).toString()).toBe('one');
    await v2.write(BS, Buffer.from('two'));
    await v2.flush();
    await v1.write(2 * BS, Buffer.from('lost'));
    await expect(v1.flush()).rejects.toMatchObject({ code: 'E_FENCED' });
    await expect(v1.write(0, Buffer.from('x'))).rejects.toMatchObject({ code: 'E_FENCED' });
    await expect(v1.flush()).rejects.toMatchObject({ code: 'E_FENCED' });
    await v2.write(3 * BS, Buffer.from('three'));
    await v2.flush();
    await v2.close();
    await g2.close();
    await restoreCatalog(env.store, '', join(env.root, 'third.db'));
    const g3 = await GlideFs.open({ store: env.store, catalogPath: join(env.root, 'third.db'), cacheDir: join(env.root, 'third') });
    const v3 = await g3.openVolume('v');
    expect((await v3.read(0, 3)).toString()).toBe('one');
    expect((await v3.read(BS, 3)).toString()).toBe('two');
    expect((await v3.read(2 * BS, 4)).equals(Buffer.alloc(4))).toBe(true);
    expect((await v3.read(3 * BS, 5)).toString()).toBe('three');
    await g3.close();
  });

  it('one writer per volume in a catalog: a second writable open is E_LOCKED naming host and pid; a dead holder is taken over', async () => {
    env = await makeEnv('dir');
    await env.fs.createVolume('v', 4 * BS);
    await env.fs.snapshot('v', 's');
    const v = await env.fs.openVolume('v');
    const other = await env.reopen({ fresh: true });
    await expect(other.openVolume('v')).rejects.toThrow(new RegExp(`E_LOCKED: volume 'v' is open for writing by pid ${process.pid} on host `));
    await (await other.openVolume('s')).close(); // snapshots are read-only: no writer row
    await v.close();
    const v2 = await other.openVolume('v');
    await v2.close();
    // a row of a dead process is stale
    catalogSql(env.fs).prepare("INSERT INTO writers (volume_id, owner, owner_host, owner_pid, since) VALUES (?, 'dead', ?, 2147483646, 0)").run(env.fs.catalog.volume('v').id, (await import('node:os')).hostname());
    await (await other.openVolume('v')).close();
  });

  it('a log PUT whose answer was lost is recognised as our own at the next flush (caught up, not fenced)', async () => {
    let loseNext = false;
    env = await makeEnv('dir', {
      wrap: (s) => {
        const inner = s as ObjectStore & { putIfAbsent(k: string, b: Uint8Array): Promise<boolean> };
        return new Proxy(inner, {
          get(target, prop, recv) {
            if (prop === 'putIfAbsent')
              return async (k: string, b: Uint8Array) => {
                const ok = await target.putIfAbsent(k, b);
                if (loseNext) {
                  loseNext = false;
                  throw Object.assign(new Error('E_STORE_TIMEOUT: answer lost'), { code: 'E_STORE_TIMEOUT' });
                }
                return ok;
              };
            const v = Reflect.get(target, prop, recv);
            return typeof v === 'function' ? v.bind(target) : v;
          },
        });
      },
    });
    await env.fs.createVolume('v', 4 * BS);
    const v = await env.fs.openVolume('v');
    await v.write(10, Buffer.from('first'));
    loseNext = true;
    await expect(v.flush()).rejects.toThrow(/answer lost/);
    expect(v.dirtyBlocks).toBe(1);
    await v.write(20, Buffer.from('second'));
    await v.flush();
    expect(env.fs.stats('v')).toMatchObject({ logSeq: 3 });
    await v.close();
    const g = await env.reopen({ fresh: true });
    const r = await (await g.openVolume('v')).read(0, 32);
    expect(r.subarray(10, 15).toString()).toBe('first');
    expect(r.subarray(20, 26).toString()).toBe('second');
  });
});
