/**
 * Catalog schema 2 -> 3 in place (FORMAT.md, "Layers"): a catalog written by
 * the previous glidekv opens, reads back, forks in constant time; a newer
 * schema is refused with E_VERSION.
 */
import { afterEach, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GlideFs } from '../../glidefs/glidefs.js';
import { Catalog, OLD_SCHEMAS, SCHEMA_VERSION } from '../../glidefs/catalog.js';
import { MemoryStore } from '../../glidefs/memory-store.js';
import { BLOCK_SIZE, blockHash, blockKey } from '../../glidefs/block-key.js';
import { encodeRecord, KIND_CHECKPOINT, logKey } from '../../glidefs/log-record.js';
import { blockOf } from './helpers.js';

let root: string | undefined;
afterEach(() => {
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
});

describe('catalog schema migration', () => {
  it('opens a schema-2 catalog in place: its volumes read back and fork without copying rows', async () => {
    root = mkdtempSync(join(tmpdir(), 'fork-migrate-'));
    const path = join(root, 'catalog.db');
    const store = new MemoryStore();
    const uuid = 'a'.repeat(32);
    const data = [blockOf(11), blockOf(12)];
    const keys = data.map((b, i) => blockKey('', i, blockHash(b)));
    for (let i = 0; i < 2; i++) await store.put(keys[i], data[i]);
    const now = Date.now();
    await store.put(
      logKey('', uuid, 1),
      await encodeRecord({
        kind: KIND_CHECKPOINT,
        volume: uuid,
        seq: 1,
        time: now,
        writer: 'old',
        meta: { name: 'old', sizeBytes: 4 * BLOCK_SIZE, parent: null, parentUuid: null, parentSeq: null, family: uuid, snapshot: false, createdAt: now },
        blocks: keys.map((_, i) => [i, blockHash(data[i])]),
      }),
    );
    const db = new Database(path);
    db.exec(OLD_SCHEMAS.v1);
    db.exec(OLD_SCHEMAS.v2);
    db.prepare("INSERT INTO meta (key, value) VALUES ('catalog_id', 'x'), ('deletes', '0')").run();
    db.prepare(
      "INSERT INTO volumes (id, name, uuid, size_bytes, parent, family, snapshot, created_at, log_seq, checkpoint_seq, family_uuid) VALUES (1, 'old', ?, ?, NULL, 1, 0, ?, 1, 1, ?)",
    ).run(uuid, 4 * BLOCK_SIZE, now, uuid);
    for (let i = 0; i < 2; i++) {
      db.prepare('INSERT INTO blocks (volume_id, block_index, key) VALUES (1, ?, ?)').run(i, keys[i]);
      db.prepare('INSERT INTO objects (key, refcount, size, created_at) VALUES (?, 1, ?, ?)').run(keys[i], BLOCK_SIZE, now);
    }
    db.pragma('user_version = 2');
    db.close();

    const fs = await GlideFs.open({ store, catalogPath: path, cacheDir: join(root, 'cache') });
    try {
      expect(new Database(path, { readonly: true }).pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
      const want = Buffer.concat([...data, Buffer.alloc(2 * BLOCK_SIZE)]);
      const v = await fs.openVolume('old');
      expect((await v.read(0, 4 * BLOCK_SIZE)).equals(want)).toBe(true);
      await v.close();
      const rows = fs.catalog.rowCounts().blockRows;
      const f = await fs.fork('old', 'new');
      expect(f.rowsCopied).toBe(0);
      expect(fs.catalog.rowCounts().blockRows).toBe(rows);
      const n = await fs.openVolume('new');
      expect((await n.read(0, 4 * BLOCK_SIZE)).equals(want)).toBe(true);
      await n.write(0, blockOf(99));
      await n.flush();
      await n.close();
      expect((await (await fs.openVolume('old')).read(0, BLOCK_SIZE)).equals(data[0])).toBe(true);
      expect(fs.stats('new')).toMatchObject({ blocks: 2, sharedBlocks: 1 });
    } finally {
      await fs.close();
    }
  });

  it('refuses a newer schema with E_VERSION and changes nothing', () => {
    root = mkdtempSync(join(tmpdir(), 'fork-migrate-'));
    const path = join(root, 'catalog.db');
    Catalog.open(path).close();
    const db = new Database(path);
    db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    expect(() => Catalog.open(path)).toThrow(expect.objectContaining({ code: 'E_VERSION' }));
    const again = new Database(path, { readonly: true });
    expect(again.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION + 1);
    again.close();
  });
});
