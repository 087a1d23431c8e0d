/**
 * Catalog: the block layer's metadata in one SQLite file (better-sqlite3, WAL).
 *
 * Several processes may open the same catalog at once (a device daemon with a
 * volume open, a CLI doing fork/stats/gc): WAL lets readers run beside the one
 * writer, `busy_timeout` makes writers queue instead of failing, and every
 * multi-row change is one `BEGIN IMMEDIATE` transaction. The file is 0600.
 * Schema in FORMAT.md ("Catalog"); `PRAGMA user_version` holds its version.
 *
 * Coordination between uploads, deletes and gc (see FORMAT.md, "gc rule"):
 * - `pending`: a flush records each key it is about to PUT before the PUT,
 *   and drops the rows in its commit transaction. gc never deletes a key that
 *   has a live pending row.
 * - `deleting`: a key whose object is about to be DELETEd (refcount fell to
 *   zero, or gc found an orphan). A flush that must PUT such a key waits until
 *   the row is gone (the delete is done), so a delete can never remove an
 *   object that a later commit names.
 * Rows are owned by a process (host, pid); rows of a dead owner are stale and
 * gc finishes or drops them.
 */
import Database from 'better-sqlite3';
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { GlideFsError } from './errors.js';
import { BLOCK_SIZE, blockKey } from './block-key.js';
import { KIND_CHECKPOINT, KIND_FLUSH, type LogRecord } from './log-record.js';
import { pidAlive } from '../lib/pid-alive.js';

export const SCHEMA_VERSION = 2;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS volumes (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE,
  uuid        TEXT NOT NULL UNIQUE,
  size_bytes  INTEGER NOT NULL,
  parent      TEXT,
  family      INTEGER NOT NULL,
  snapshot    INTEGER NOT NULL DEFAULT 0,
  created_at  INTEGER NOT NULL,
  uploads           INTEGER NOT NULL DEFAULT 0,
  uploaded_bytes    INTEGER NOT NULL DEFAULT 0,
  reuploads         INTEGER NOT NULL DEFAULT 0,
  skipped_unchanged INTEGER NOT NULL DEFAULT 0,
  gets              INTEGER NOT NULL DEFAULT 0,
  deletes           INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS blocks (
  volume_id   INTEGER NOT NULL,
  block_index INTEGER NOT NULL,
  key         TEXT NOT NULL,
  PRIMARY KEY (volume_id, block_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
  key        TEXT PRIMARY KEY,
  refcount   INTEGER NOT NULL CHECK (refcount > 0),
  size       INTEGER NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS upload_counts (
  volume_id   INTEGER NOT NULL,
  block_index INTEGER NOT NULL,
  uploads     INTEGER NOT NULL,
  PRIMARY KEY (volume_id, block_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS family_offsets (
  family      INTEGER NOT NULL,
  block_index INTEGER NOT NULL,
  PRIMARY KEY (family, block_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
  key        TEXT NOT NULL,
  owner      TEXT NOT NULL,
  owner_host TEXT NOT NULL,
  owner_pid  INTEGER NOT NULL,
  started_at INTEGER NOT NULL,
  PRIMARY KEY (key, owner)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deleting (
  key        TEXT PRIMARY KEY,
  owner      TEXT NOT NULL,
  owner_host TEXT NOT NULL,
  owner_pid  INTEGER NOT NULL,
  started_at INTEGER NOT NULL
) WITHOUT ROWID;
`;

/** Schema version 2: the volume log (FORMAT.md, "The volume log"). Applied on top of version 1. */
const SCHEMA_V2 = `
ALTER TABLE volumes ADD COLUMN log_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN checkpoint_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN log_pending_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN log_since INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN parent_uuid TEXT;
ALTER TABLE volumes ADD COLUMN parent_seq INTEGER;
ALTER TABLE volumes ADD COLUMN family_uuid TEXT;
ALTER TABLE volumes ADD COLUMN log_puts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN checkpoints INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN checkpoint_uploads INTEGER NOT NULL DEFAULT 0;
ALTER TABLE volumes ADD COLUMN log_deletes INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS logged (
  volume_id   INTEGER NOT NULL,
  block_index INTEGER NOT NULL,
  hash        TEXT NOT NULL,
  PRIMARY KEY (volume_id, block_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_blocks (
  volume_id   INTEGER NOT NULL,
  block_index INTEGER NOT NULL,
  seq         INTEGER NOT NULL,
  PRIMARY KEY (volume_id, block_index, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS writers (
  volume_id  INTEGER PRIMARY KEY,
  owner      TEXT NOT NULL,
  owner_host TEXT NOT NULL,
  owner_pid  INTEGER NOT NULL,
  since      INTEGER NOT NULL
);
`;

export interface VolumeRow {
  id: number;
  name: string;
  uuid: string;
  size_bytes: number;
  parent: string | null;
  family: number;
  snapshot: number;
  created_at: number;
  uploads: number;
  uploaded_bytes: number;
  reuploads: number;
  skipped_unchanged: number;
  gets: number;
  deletes: number;
  log_seq: number;
  checkpoint_seq: number;
  log_pending_bytes: number;
  log_since: number;
  parent_uuid: string | null;
  parent_seq: number | null;
  family_uuid: string | null;
  log_puts: number;
  log_bytes: number;
  checkpoints: number;
  checkpoint_uploads: number;
  log_deletes: number;
}

/** One block's change in a flush commit. `newKey` null = the block became a hole. */
export interface BlockChange {
  blockIndex: number;
  oldKey: string | null;
  newKey: string | null;
  /** True when this flush PUT `newKey` (counts as an upload). */
  uploaded: boolean;
}

export interface CommitCounters {
  skippedUnchanged: number;
  gets: number;
}

export interface CommitResult {
  uploads: number;
  uploadedBytes: number;
  reuploads: number;
  /** Keys whose refcount fell to zero; rows in `deleting` are held for them. */
  toDelete: string[];
}

/** A block whose newest bytes are sectors in the log: hash of its current bytes, records holding its sectors. */
export interface LoggedBlock {
  hash: string;
  seqs: number[];
}

const BLOCK_BYTES = BLOCK_SIZE;

const VOLUME_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function checkVolumeName(name: string): void {
  if (typeof name !== 'string' || !VOLUME_NAME.test(name)) {
    throw GlideFsError.BAD_NAME(String(name), 'use 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit');
  }
}

/** The identity of this process as an owner of pending/deleting rows. */
export interface Owner {
  token: string;
  host: string;
  pid: number;
}

export function newOwner(): Owner {
  return { token: `${hostname()}:${process.pid}:${randomBytes(6).toString('hex')}`, host: hostname(), pid: process.pid };
}

/** True when the owner process of a row may still be running. */
export function ownerAlive(host: string, pid: number): boolean {
  if (host !== hostname()) return true; // cannot tell: treat as alive
  if (pid === process.pid) return true;
  return pidAlive(pid);
}

export class Catalog {
  readonly db: Database.Database;
  private closed = false;

  private constructor(db: Database.Database) {
    this.db = db;
  }

  static open(path: string): Catalog {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    try {
      closeSync(openSync(path, 'a', 0o600));
      chmodSync(path, 0o600);
    } catch (err) {
      throw GlideFsError.IO(`cannot create catalog ${path}: ${(err as Error).message}`, err);
    }
    let db: Database.Database;
    try {
      db = new Database(path);
      db.pragma('busy_timeout = 15000');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = OFF');
    } catch (err) {
      throw GlideFsError.CORRUPT(`cannot open catalog ${path}: ${(err as Error).message}`, err);
    }
    const cat = new Catalog(db);
    try {
      cat.migrate();
    } catch (err) {
      db.close();
      throw err;
    }
    return cat;
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version === SCHEMA_VERSION) return;
    if (version > SCHEMA_VERSION) {
      throw GlideFsError.CORRUPT(`catalog schema version ${version} is newer than this glidekv (${SCHEMA_VERSION})`);
    }
    this.immediate(() => {
      const v = this.db.pragma('user_version', { simple: true }) as number;
      if (v === SCHEMA_VERSION) return;
      if (v < 1) {
        this.db.exec(SCHEMA);
        this.db.prepare('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run('catalog_id', randomBytes(8).toString('hex'));
        this.db.prepare('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run('deletes', '0');
      }
      if (v < 2) {
        this.db.exec(SCHEMA_V2);
        this.db.exec('UPDATE volumes SET family_uuid = (SELECT r.uuid FROM volumes r WHERE r.id = volumes.family) WHERE family_uuid IS NULL');
      }
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    }, true);
  }

  /**
   * Runs `fn` in a BEGIN IMMEDIATE transaction (waits for the write lock).
   * `durable`: the commit is fsynced (synchronous=FULL) before this returns —
   * for changes that objects are deleted after, or that a caller is told are
   * done (create, fork, delete, flush commit). Other transactions (pending and
   * deleting rows, counters) commit with synchronous=NORMAL: a power loss may
   * drop them, which only leaves orphans for gc; the next durable commit
   * fsyncs them too (the WAL is sequential).
   */
  immediate<T>(fn: () => T, durable = false): T {
    this.checkOpen();
    if (!durable) return this.db.transaction(fn).immediate();
    this.db.pragma('synchronous = FULL');
    try {
      return this.db.transaction(fn).immediate();
    } finally {
      this.db.pragma('synchronous = NORMAL');
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  private checkOpen(): void {
    if (this.closed) throw GlideFsError.CLOSED('catalog');
  }

  // --- volumes ---------------------------------------------------------------

  findVolume(name: string): VolumeRow | undefined {
    this.checkOpen();
    return this.db.prepare('SELECT * FROM volumes WHERE name = ?').get(name) as VolumeRow | undefined;
  }

  volume(name: string): VolumeRow {
    const row = this.findVolume(name);
    if (!row) throw GlideFsError.NO_VOLUME(name);
    return row;
  }

  volumeById(id: number): VolumeRow | undefined {
    this.checkOpen();
    return this.db.prepare('SELECT * FROM volumes WHERE id = ?').get(id) as VolumeRow | undefined;
  }

  listVolumes(): VolumeRow[] {
    this.checkOpen();
    return this.db.prepare('SELECT * FROM volumes ORDER BY name').all() as VolumeRow[];
  }

  /**
   * Inserts a volume whose first record (a checkpoint, seq 1) is already in
   * the store: `uuid` is its id there.
   */
  createVolume(name: string, sizeBytes: number, uuid: string, createdAt: number, recordBytes: number): VolumeRow {
    return this.immediate(() => {
      if (this.findVolume(name)) throw GlideFsError.VOLUME_EXISTS(name);
      const info = this.db
        .prepare(
          'INSERT INTO volumes (name, uuid, size_bytes, parent, family, snapshot, created_at, log_seq, checkpoint_seq, family_uuid, log_puts, log_bytes) ' +
            'VALUES (?, ?, ?, NULL, 0, 0, ?, 1, 1, ?, 1, ?)',
        )
        .run(name, uuid, sizeBytes, createdAt, uuid, recordBytes);
      const id = Number(info.lastInsertRowid);
      this.db.prepare('UPDATE volumes SET family = ? WHERE id = ?').run(id, id);
      return this.volumeById(id)!;
    }, true);
  }

  /**
   * The catalog side of a fork: inserts volume `dst` with exactly the block
   * map `blocks` (index -> key; its seq-1 checkpoint is already in the
   * store), raises the refcount of every object it names and drops this
   * owner's pending rows for them. Every key is either in `objects` or was
   * uploaded under a pending row of `owner` (planFork): none can vanish.
   */
  insertFork(
    src: VolumeRow,
    dst: string,
    uuid: string,
    snapshot: boolean,
    createdAt: number,
    blocks: Map<number, string>,
    uploads: Array<{ blockIndex: number; key: string }>,
    recordBytes: number,
    owner: Owner,
  ): VolumeRow {
    return this.immediate(() => {
      if (this.findVolume(dst)) throw GlideFsError.VOLUME_EXISTS(dst);
      const info = this.db
        .prepare(
          'INSERT INTO volumes (name, uuid, size_bytes, parent, family, snapshot, created_at, log_seq, checkpoint_seq, parent_uuid, parent_seq, family_uuid, log_puts, log_bytes) ' +
            'VALUES (?, ?, ?, ?, ?, ?, ?, 1, 1, ?, ?, ?, 1, ?)',
        )
        .run(dst, uuid, src.size_bytes, src.name, src.family, snapshot ? 1 : 0, createdAt, src.uuid, src.log_seq, src.family_uuid ?? src.uuid, recordBytes);
      const id = Number(info.lastInsertRowid);
      const addObj = this.db.prepare(
        'INSERT INTO objects (key, refcount, size, created_at) VALUES (?, 1, ?, ?) ON CONFLICT(key) DO UPDATE SET refcount = refcount + 1',
      );
      const setBlock = this.db.prepare('INSERT INTO blocks (volume_id, block_index, key) VALUES (?, ?, ?)');
      const now = Date.now();
      for (const [i, key] of blocks) {
        setBlock.run(id, i, key);
        addObj.run(key, BLOCK_BYTES, now);
      }
      this.countUploads(id, src.family, uploads.map((u) => u.blockIndex), true);
      const delPending = this.db.prepare('DELETE FROM pending WHERE key = ? AND owner = ?');
      for (const key of new Set(blocks.values())) delPending.run(key, owner.token);
      return this.volumeById(id)!;
    }, true);
  }

  /**
   * A fork's plan, in one transaction: the source's block map and logged
   * blocks as committed now, with a `pending` row of `owner` on every base key
   * (so no flush or gc deletes them while the fork runs).
   */
  planFork(srcId: number, owner: Owner): { blocks: Map<number, string>; logged: Map<number, LoggedBlock> } {
    return this.immediate(() => {
      const blocks = this.blockMap(srcId);
      const logged = this.loggedBlocks(srcId);
      const addPending = this.db.prepare(
        'INSERT OR REPLACE INTO pending (key, owner, owner_host, owner_pid, started_at) VALUES (?, ?, ?, ?, ?)',
      );
      const now = Date.now();
      for (const key of new Set(blocks.values())) addPending.run(key, owner.token, owner.host, owner.pid, now);
      return { blocks, logged };
    });
  }

  /**
   * Removes a volume and its block map, releasing its refcounts. Keys whose
   * refcount fell to zero are returned with `deleting` rows held by `owner`;
   * the caller deletes the objects and then calls `finishDeletes`.
   */
  deleteVolume(name: string, owner: Owner): { volume: VolumeRow; toDelete: string[] } {
    return this.immediate(() => {
      const v = this.volume(name);
      const keys = (this.db.prepare('SELECT key FROM blocks WHERE volume_id = ?').all(v.id) as { key: string }[]).map((r) => r.key);
      const toDelete: string[] = [];
      for (const key of keys) if (this.release(key, owner)) toDelete.push(key);
      this.db.prepare('DELETE FROM blocks WHERE volume_id = ?').run(v.id);
      this.db.prepare('DELETE FROM upload_counts WHERE volume_id = ?').run(v.id);
      this.db.prepare('DELETE FROM logged WHERE volume_id = ?').run(v.id);
      this.db.prepare('DELETE FROM log_blocks WHERE volume_id = ?').run(v.id);
      this.db.prepare('DELETE FROM writers WHERE volume_id = ?').run(v.id);
      this.db.prepare('DELETE FROM volumes WHERE id = ?').run(v.id);
      return { volume: v, toDelete };
    }, true);
  }

  /** Block map of a volume: block index -> object key. */
  blockMap(volumeId: number): Map<number, string> {
    this.checkOpen();
    const map = new Map<number, string>();
    const rows = this.db.prepare('SELECT block_index, key FROM blocks WHERE volume_id = ?').raw().all(volumeId) as [number, string][];
    for (const [i, k] of rows) map.set(i, k);
    return map;
  }

  // --- flush -----------------------------------------------------------------

  /**
   * Plans the PUTs of a flush: keys already in `objects` are reused; the rest
   * must be uploaded. Every key gets a `pending` row of `owner` (gc leaves it
   * alone, and a release to refcount zero elsewhere does not delete it), so a
   * reused key cannot vanish before the commit. Keys in `wait` have a
   * `deleting` row: upload them only after it is gone.
   */
  planUploads(keys: string[], owner: Owner): { upload: string[]; reuse: string[]; wait: string[] } {
    return this.immediate(() => {
      const hasObj = this.db.prepare('SELECT 1 FROM objects WHERE key = ?').pluck();
      const hasDel = this.db.prepare('SELECT 1 FROM deleting WHERE key = ?').pluck();
      const addPending = this.db.prepare(
        'INSERT OR REPLACE INTO pending (key, owner, owner_host, owner_pid, started_at) VALUES (?, ?, ?, ?, ?)',
      );
      const upload: string[] = [];
      const reuse: string[] = [];
      const wait: string[] = [];
      const now = Date.now();
      for (const key of keys) {
        addPending.run(key, owner.token, owner.host, owner.pid, now);
        if (hasObj.get(key)) {
          reuse.push(key);
          continue;
        }
        upload.push(key);
        if (hasDel.get(key)) wait.push(key);
      }
      return { upload, reuse, wait };
    });
  }

  /**
   * Keys among `keys` that still have a `deleting` row. A row of a dead
   * owner is dropped here (its delete will never run; the uploader may go on).
   */
  stillDeleting(keys: string[]): string[] {
    this.checkOpen();
    const get = this.db.prepare('SELECT owner_host, owner_pid FROM deleting WHERE key = ?');
    const out: string[] = [];
    for (const key of keys) {
      const row = get.get(key) as { owner_host: string; owner_pid: number } | undefined;
      if (!row) continue;
      if (!ownerAlive(row.owner_host, row.owner_pid)) {
        this.db.prepare('DELETE FROM deleting WHERE key = ?').run(key);
        continue;
      }
      out.push(key);
    }
    return out;
  }

  /** Drops this owner's pending rows (a flush that failed before committing). */
  dropPending(keys: string[], owner: Owner): void {
    if (keys.length === 0) return;
    this.immediate(() => {
      const del = this.db.prepare('DELETE FROM pending WHERE key = ? AND owner = ?');
      for (const k of keys) del.run(k, owner.token);
    });
  }

  /**
   * The flush commit, after its log record `seq` is in the store: one
   * transaction that applies the whole-block changes (block map, refcounts,
   * upload counters), the logged blocks (`logged`, `log_blocks`), advances
   * the volume's `log_seq`, drops the flush's pending rows and adds its
   * counters. Keys whose refcount fell to zero come back in `toDelete` with
   * `deleting` rows of `owner`.
   */
  commitLog(
    volumeId: number,
    seq: number,
    recordBytes: number,
    whole: BlockChange[],
    sectors: Array<{ blockIndex: number; hash: string }>,
    pendingKeys: string[],
    counters: CommitCounters,
    owner: Owner,
  ): CommitResult {
    return this.immediate(() => {
      const v = this.volumeById(volumeId);
      if (!v) throw GlideFsError.NO_VOLUME(`#${volumeId}`);
      if (v.log_seq !== seq - 1) throw GlideFsError.CORRUPT(`volume '${v.name}': log record ${seq} follows ${v.log_seq} in the catalog`);
      const toDelete = this.applyWhole(volumeId, whole, owner);
      const { uploads, reuploads } = this.countUploads(
        volumeId,
        v.family,
        whole.filter((c) => c.uploaded).map((c) => c.blockIndex),
        false,
      );
      this.applySectors(volumeId, seq, sectors);
      const delPending = this.db.prepare('DELETE FROM pending WHERE key = ? AND owner = ?');
      for (const k of pendingKeys) delPending.run(k, owner.token);
      this.db
        .prepare(
          'UPDATE volumes SET log_seq = ?, log_puts = log_puts + 1, log_bytes = log_bytes + ?, log_pending_bytes = log_pending_bytes + ?, ' +
            'log_since = CASE WHEN log_since = 0 THEN ? ELSE log_since END, skipped_unchanged = skipped_unchanged + ?, gets = gets + ? WHERE id = ?',
        )
        .run(seq, recordBytes, recordBytes, Date.now(), counters.skippedUnchanged, counters.gets, volumeId);
      return { uploads, uploadedBytes: uploads * BLOCK_BYTES, reuploads, toDelete };
    }, true);
  }

  /**
   * The checkpoint commit, after its record `seq` is in the store: logged
   * blocks move to their folded objects (`folds`), `logged` and `log_blocks`
   * are emptied, `log_seq = checkpoint_seq = seq`.
   */
  commitCheckpoint(volumeId: number, seq: number, recordBytes: number, folds: BlockChange[], pendingKeys: string[], owner: Owner): CommitResult {
    return this.immediate(() => {
      const v = this.volumeById(volumeId);
      if (!v) throw GlideFsError.NO_VOLUME(`#${volumeId}`);
      if (v.log_seq !== seq - 1) throw GlideFsError.CORRUPT(`volume '${v.name}': checkpoint ${seq} follows ${v.log_seq} in the catalog`);
      const toDelete = this.applyWhole(volumeId, folds, owner);
      const up = folds.filter((c) => c.uploaded).map((c) => c.blockIndex);
      const { uploads, reuploads } = this.countUploads(volumeId, v.family, up, false);
      this.db.prepare('DELETE FROM logged WHERE volume_id = ?').run(volumeId);
      this.db.prepare('DELETE FROM log_blocks WHERE volume_id = ?').run(volumeId);
      const delPending = this.db.prepare('DELETE FROM pending WHERE key = ? AND owner = ?');
      for (const k of pendingKeys) delPending.run(k, owner.token);
      this.db
        .prepare(
          'UPDATE volumes SET log_seq = ?, checkpoint_seq = ?, log_pending_bytes = 0, log_since = 0, log_puts = log_puts + 1, log_bytes = log_bytes + ?, ' +
            'checkpoints = checkpoints + 1, checkpoint_uploads = checkpoint_uploads + ? WHERE id = ?',
        )
        .run(seq, seq, recordBytes, uploads, volumeId);
      return { uploads, uploadedBytes: uploads * BLOCK_BYTES, reuploads, toDelete };
    }, true);
  }

  /** Sets blocks to new keys (or holes), drops their logged sectors, moves refcounts. Returns keys to delete. In a transaction. */
  private applyWhole(volumeId: number, changes: BlockChange[], owner: Owner): string[] {
    const addObj = this.db.prepare(
      'INSERT INTO objects (key, refcount, size, created_at) VALUES (?, 1, ?, ?) ON CONFLICT(key) DO UPDATE SET refcount = refcount + 1',
    );
    const setBlock = this.db.prepare('INSERT OR REPLACE INTO blocks (volume_id, block_index, key) VALUES (?, ?, ?)');
    const delBlock = this.db.prepare('DELETE FROM blocks WHERE volume_id = ? AND block_index = ?');
    const delLogged = this.db.prepare('DELETE FROM logged WHERE volume_id = ? AND block_index = ?');
    const delLogBlocks = this.db.prepare('DELETE FROM log_blocks WHERE volume_id = ? AND block_index = ?');
    const now = Date.now();
    const toDelete: string[] = [];
    for (const c of changes) {
      if (c.newKey !== null) {
        addObj.run(c.newKey, BLOCK_BYTES, now);
        setBlock.run(volumeId, c.blockIndex, c.newKey);
      } else {
        delBlock.run(volumeId, c.blockIndex);
      }
      delLogged.run(volumeId, c.blockIndex);
      delLogBlocks.run(volumeId, c.blockIndex);
      if (c.oldKey !== null && c.oldKey !== c.newKey && this.release(c.oldKey, owner)) toDelete.push(c.oldKey);
      else if (c.oldKey !== null && c.oldKey === c.newKey) this.release(c.oldKey, owner); // refcount was raised twice
    }
    return toDelete;
  }

  private applySectors(volumeId: number, seq: number, sectors: Array<{ blockIndex: number; hash: string }>): void {
    const setLogged = this.db.prepare('INSERT OR REPLACE INTO logged (volume_id, block_index, hash) VALUES (?, ?, ?)');
    const addLogBlock = this.db.prepare('INSERT OR IGNORE INTO log_blocks (volume_id, block_index, seq) VALUES (?, ?, ?)');
    for (const s of sectors) {
      setLogged.run(volumeId, s.blockIndex, s.hash);
      addLogBlock.run(volumeId, s.blockIndex, seq);
    }
  }

  /** Per-offset upload counters and re-uploads. In a transaction. */
  private countUploads(volumeId: number, family: number, blockIndices: number[], addToVolume: boolean): { uploads: number; reuploads: number } {
    const bumpUpload = this.db.prepare(
      'INSERT INTO upload_counts (volume_id, block_index, uploads) VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET uploads = uploads + 1',
    );
    const seenOffset = this.db.prepare('INSERT OR IGNORE INTO family_offsets (family, block_index) VALUES (?, ?)');
    let reuploads = 0;
    for (const i of blockIndices) {
      bumpUpload.run(volumeId, i);
      if (seenOffset.run(family, i).changes === 0) reuploads++;
    }
    const uploads = blockIndices.length;
    this.db
      .prepare('UPDATE volumes SET uploads = uploads + ?, uploaded_bytes = uploaded_bytes + ?, reuploads = reuploads + ? WHERE id = ?')
      .run(uploads, uploads * BLOCK_BYTES, reuploads, volumeId);
    if (addToVolume) this.db.prepare('UPDATE volumes SET checkpoint_uploads = checkpoint_uploads + ? WHERE id = ?').run(uploads, volumeId);
    return { uploads, reuploads };
  }

  /** Blocks with sectors in the log: index -> current hash and the records holding its sectors (ascending). */
  loggedBlocks(volumeId: number): Map<number, LoggedBlock> {
    this.checkOpen();
    const out = new Map<number, LoggedBlock>();
    for (const [i, h] of this.db.prepare('SELECT block_index, hash FROM logged WHERE volume_id = ?').raw().all(volumeId) as [number, string][]) {
      out.set(i, { hash: h, seqs: [] });
    }
    for (const [i, seq] of this.db
      .prepare('SELECT block_index, seq FROM log_blocks WHERE volume_id = ? ORDER BY block_index, seq')
      .raw()
      .all(volumeId) as [number, number][]) {
      out.get(i)?.seqs.push(seq);
    }
    return out;
  }

  /**
   * Applies a record found in the store past the catalog's `log_seq` (a
   * flush whose commit a crash cut off, or a record of another writer):
   * catch-up. Block objects it names are added to `objects`. Returns keys
   * whose refcount fell to zero (with `deleting` rows of `owner`).
   */
  replayRecord(volumeId: number, rec: LogRecord, prefix: string, recordBytes: number, owner: Owner): string[] {
    return this.immediate(() => {
      const v = this.volumeById(volumeId);
      if (!v) throw GlideFsError.NO_VOLUME(`#${volumeId}`);
      // a checkpoint covers everything before it: it may follow a gap (records folded by another writer)
      const ok = rec.kind === KIND_CHECKPOINT ? rec.seq > v.log_seq : rec.seq === v.log_seq + 1;
      if (!ok) throw GlideFsError.CORRUPT(`volume '${v.name}': replaying record ${rec.seq} after ${v.log_seq}`);
      const map = this.blockMap(volumeId);
      let toDelete: string[] = [];
      if (rec.kind === KIND_FLUSH) {
        toDelete = this.applyWhole(
          volumeId,
          rec.blocks.map(([i, h]) => ({ blockIndex: i, oldKey: map.get(i) ?? null, newKey: h === null ? null : blockKey(prefix, i, h), uploaded: false })),
          owner,
        );
        this.applySectors(volumeId, rec.seq, rec.sectors.map((e) => ({ blockIndex: e.index, hash: e.hash })));
        this.db
          .prepare('UPDATE volumes SET log_seq = ?, log_pending_bytes = log_pending_bytes + ?, log_since = CASE WHEN log_since = 0 THEN ? ELSE log_since END WHERE id = ?')
          .run(rec.seq, recordBytes, Date.now(), volumeId);
      } else if (rec.kind === KIND_CHECKPOINT) {
        const want = new Map(rec.blocks.map(([i, h]) => [i, blockKey(prefix, i, h)] as [number, string]));
        const changes: BlockChange[] = [];
        for (const i of new Set([...map.keys(), ...want.keys()])) {
          const oldKey = map.get(i) ?? null;
          const newKey = want.get(i) ?? null;
          if (oldKey !== newKey) changes.push({ blockIndex: i, oldKey, newKey, uploaded: false });
        }
        toDelete = this.applyWhole(volumeId, changes, owner);
        this.db.prepare('DELETE FROM logged WHERE volume_id = ?').run(volumeId);
        this.db.prepare('DELETE FROM log_blocks WHERE volume_id = ?').run(volumeId);
        this.db.prepare('UPDATE volumes SET log_seq = ?, checkpoint_seq = ?, log_pending_bytes = 0, log_since = 0 WHERE id = ?').run(rec.seq, rec.seq, volumeId);
      } else {
        throw GlideFsError.CORRUPT(`volume '${v.name}' was deleted in the store (record ${rec.seq})`);
      }
      return toDelete;
    }, true);
  }

  // --- one writer per volume ---------------------------------------------------

  /**
   * Takes the writer row of a volume for `owner`. A row of a live other
   * process is refused with E_LOCKED naming it; a row of a dead process on
   * this host is stale and taken over.
   */
  takeWriter(volumeId: number, name: string, owner: Owner): void {
    this.immediate(() => {
      const row = this.db.prepare('SELECT owner, owner_host, owner_pid, since FROM writers WHERE volume_id = ?').get(volumeId) as
        | { owner: string; owner_host: string; owner_pid: number; since: number }
        | undefined;
      if (row && row.owner !== owner.token && ownerAlive(row.owner_host, row.owner_pid)) {
        throw GlideFsError.LOCKED(
          `volume '${name}' is open for writing by pid ${row.owner_pid} on host ${row.owner_host} since ${new Date(row.since).toISOString()}`,
        );
      }
      this.db
        .prepare('INSERT OR REPLACE INTO writers (volume_id, owner, owner_host, owner_pid, since) VALUES (?, ?, ?, ?, ?)')
        .run(volumeId, owner.token, owner.host, owner.pid, Date.now());
    }, true);
  }

  dropWriter(volumeId: number, owner: Owner): void {
    if (this.closed) return;
    this.immediate(() => {
      this.db.prepare('DELETE FROM writers WHERE volume_id = ? AND owner = ?').run(volumeId, owner.token);
    });
  }

  /** The live writer of a volume (host, pid), or null. */
  writerOf(volumeId: number): { host: string; pid: number } | null {
    this.checkOpen();
    const row = this.db.prepare('SELECT owner_host, owner_pid FROM writers WHERE volume_id = ?').get(volumeId) as
      | { owner_host: string; owner_pid: number }
      | undefined;
    if (!row || !ownerAlive(row.owner_host, row.owner_pid)) return null;
    return { host: row.owner_host, pid: row.owner_pid };
  }

  /**
   * Lowers a key's refcount. At zero the row goes and, unless another flush
   * is about to PUT the same key, a `deleting` row is taken. Returns true
   * when the caller must delete the object. Call inside a transaction.
   */
  private release(key: string, owner: Owner): boolean {
    const row = this.db.prepare('SELECT refcount FROM objects WHERE key = ?').get(key) as { refcount: number } | undefined;
    if (!row) return false;
    if (row.refcount > 1) {
      this.db.prepare('UPDATE objects SET refcount = refcount - 1 WHERE key = ?').run(key);
      return false;
    }
    this.db.prepare('DELETE FROM objects WHERE key = ?').run(key);
    if (this.db.prepare('SELECT 1 FROM pending WHERE key = ?').get(key)) return false;
    this.db
      .prepare('INSERT OR REPLACE INTO deleting (key, owner, owner_host, owner_pid, started_at) VALUES (?, ?, ?, ?, ?)')
      .run(key, owner.token, owner.host, owner.pid, Date.now());
    return true;
  }

  /** Drops the `deleting` rows of objects now deleted and counts the deletes. */
  finishDeletes(keys: string[], volumeId: number | null): void {
    if (keys.length === 0) return;
    this.immediate(() => {
      const del = this.db.prepare('DELETE FROM deleting WHERE key = ?');
      for (const k of keys) del.run(k);
      if (volumeId !== null) {
        this.db.prepare('UPDATE volumes SET deletes = deletes + ? WHERE id = ?').run(keys.length, volumeId);
      } else {
        this.db.prepare("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'deletes'").run(keys.length);
      }
    });
  }

  /** Counts dirty blocks a flush found unchanged when it had nothing to commit. */
  addSkipped(volumeId: number, n: number): void {
    if (n === 0) return;
    this.immediate(() => {
      this.db.prepare('UPDATE volumes SET skipped_unchanged = skipped_unchanged + ? WHERE id = ?').run(n, volumeId);
    });
  }

  /** Adds read-side counters (GETs) that are kept in memory between commits. */
  addGets(volumeId: number, gets: number): void {
    if (gets === 0) return;
    this.immediate(() => {
      this.db.prepare('UPDATE volumes SET gets = gets + ? WHERE id = ?').run(gets, volumeId);
    });
  }

  // --- gc --------------------------------------------------------------------

  /**
   * gc step 1: drops pending rows of dead owners and adopts deleting rows of
   * dead owners (they become this owner's). Returns the adopted keys.
   */
  adoptStale(owner: Owner): string[] {
    return this.immediate(() => {
      const pend = this.db.prepare('SELECT key, owner, owner_host, owner_pid FROM pending').all() as {
        key: string;
        owner: string;
        owner_host: string;
        owner_pid: number;
      }[];
      for (const p of pend) {
        if (!ownerAlive(p.owner_host, p.owner_pid)) this.db.prepare('DELETE FROM pending WHERE key = ? AND owner = ?').run(p.key, p.owner);
      }
      const dels = this.db.prepare('SELECT key, owner_host, owner_pid FROM deleting').all() as {
        key: string;
        owner_host: string;
        owner_pid: number;
      }[];
      const adopted: string[] = [];
      for (const d of dels) {
        if (ownerAlive(d.owner_host, d.owner_pid)) continue;
        if (this.db.prepare('SELECT 1 FROM objects WHERE key = ?').get(d.key)) {
          // Re-referenced since (cannot happen by the protocol, but never delete a named object).
          this.db.prepare('DELETE FROM deleting WHERE key = ?').run(d.key);
          continue;
        }
        this.db
          .prepare('UPDATE deleting SET owner = ?, owner_host = ?, owner_pid = ?, started_at = ? WHERE key = ?')
          .run(owner.token, owner.host, owner.pid, Date.now(), d.key);
        adopted.push(d.key);
      }
      return adopted;
    });
  }

  /**
   * gc step 2: of `listed` keys (found in the store), takes a `deleting` row
   * for each one the catalog does not name (no object row, no pending row,
   * not already being deleted). Returns those orphans.
   */
  claimOrphans(listed: string[], owner: Owner): string[] {
    return this.immediate(() => {
      const named = this.db.prepare(
        'SELECT EXISTS (SELECT 1 FROM objects WHERE key = @k) OR EXISTS (SELECT 1 FROM pending WHERE key = @k) OR EXISTS (SELECT 1 FROM deleting WHERE key = @k)',
      ).pluck();
      const take = this.db.prepare(
        'INSERT INTO deleting (key, owner, owner_host, owner_pid, started_at) VALUES (?, ?, ?, ?, ?)',
      );
      const now = Date.now();
      const out: string[] = [];
      for (const key of listed) {
        if (named.get({ k: key })) continue;
        take.run(key, owner.token, owner.host, owner.pid, now);
        out.push(key);
      }
      return out;
    });
  }

  /** Every key the catalog names as an object. */
  objectKeys(): string[] {
    this.checkOpen();
    return this.db.prepare('SELECT key FROM objects').pluck().all() as string[];
  }

  // --- store owner and gc (glidefs-a; FORMAT.md, "Store marker", "gc rule") ----

  /** The store id this catalog owns (meta `store_id`), and whether the marker is known to hold it. */
  storeOwner(): { storeId: string; state: 'claimed' | 'confirmed' } | null {
    this.checkOpen();
    const id = this.db.prepare("SELECT value FROM meta WHERE key = 'store_id'").pluck().get() as string | undefined;
    if (id === undefined) return null;
    const state = this.db.prepare("SELECT value FROM meta WHERE key = 'store_id_state'").pluck().get() as string | undefined;
    return { storeId: id, state: state === 'claimed' ? 'claimed' : 'confirmed' };
  }

  /** Records the store id (durably: the marker is created only after a claim is on disk). */
  setStoreOwner(storeId: string, state: 'claimed' | 'confirmed'): void {
    this.immediate(() => {
      const put = this.db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
      put.run('store_id', storeId);
      put.run('store_id_state', state);
    }, true);
  }

  /** Drops a claim of `storeId` (another catalog's marker won). */
  clearStoreOwner(storeId: string): void {
    this.immediate(() => {
      if (this.db.prepare("SELECT value FROM meta WHERE key = 'store_id'").pluck().get() !== storeId) return;
      this.db.prepare("DELETE FROM meta WHERE key IN ('store_id', 'store_id_state')").run();
    }, true);
  }

  /** Up to `n` object keys the catalog names (any). */
  sampleObjectKeys(n: number): string[] {
    this.checkOpen();
    return this.db.prepare('SELECT key FROM objects LIMIT ?').pluck().all(n) as string[];
  }

  /** Of `keys`, those the catalog names neither as an object nor in a pending or deleting row (no row is taken). */
  unnamedKeys(keys: string[]): string[] {
    this.checkOpen();
    const named = this.db
      .prepare('SELECT EXISTS (SELECT 1 FROM objects WHERE key = @k) OR EXISTS (SELECT 1 FROM pending WHERE key = @k) OR EXISTS (SELECT 1 FROM deleting WHERE key = @k)')
      .pluck();
    return keys.filter((k) => !named.get({ k }));
  }

  /** Keys of `deleting` rows whose owner is dead (what gc would finish), without adopting them. */
  staleDeletes(): string[] {
    this.checkOpen();
    const rows = this.db.prepare('SELECT key, owner_host, owner_pid FROM deleting').all() as { key: string; owner_host: string; owner_pid: number }[];
    const named = this.db.prepare('SELECT 1 FROM objects WHERE key = ?');
    return rows.filter((r) => !ownerAlive(r.owner_host, r.owner_pid) && !named.get(r.key)).map((r) => r.key);
  }

  /** Drops `deleting` rows without counting them as deletes (gc found nothing to delete, or failed). */
  dropDeleting(keys: string[]): void {
    if (keys.length === 0) return;
    this.immediate(() => {
      const del = this.db.prepare('DELETE FROM deleting WHERE key = ?');
      for (const k of keys) del.run(k);
    });
  }

  // --- stats -----------------------------------------------------------------

  volumeCounts(volumeId: number): { blocks: number; sharedBlocks: number; objects: number; loggedBlocks: number } {
    this.checkOpen();
    const blocks = this.db.prepare('SELECT count(*) FROM blocks WHERE volume_id = ?').pluck().get(volumeId) as number;
    const sharedBlocks = this.db
      .prepare('SELECT count(*) FROM blocks b JOIN objects o ON o.key = b.key WHERE b.volume_id = ? AND o.refcount > 1')
      .pluck()
      .get(volumeId) as number;
    const objects = this.db.prepare('SELECT count(*) FROM objects').pluck().get() as number;
    const loggedBlocks = this.db.prepare('SELECT count(*) FROM logged WHERE volume_id = ?').pluck().get(volumeId) as number;
    return { blocks, sharedBlocks, objects, loggedBlocks };
  }

  uploadsPerOffset(volumeId: number): Array<{ blockIndex: number; uploads: number }> {
    this.checkOpen();
    const rows = this.db
      .prepare('SELECT block_index, uploads FROM upload_counts WHERE volume_id = ? ORDER BY block_index')
      .raw()
      .all(volumeId) as [number, number][];
    return rows.map(([blockIndex, uploads]) => ({ blockIndex, uploads }));
  }

  globalDeletes(): number {
    this.checkOpen();
    return Number(this.db.prepare("SELECT value FROM meta WHERE key = 'deletes'").pluck().get() ?? 0);
  }
}
