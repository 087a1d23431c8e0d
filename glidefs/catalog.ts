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

export const SCHEMA_VERSION = 5;

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

/**
 * Schema version 3: layers (FORMAT.md, "Layers"). The block map's rows belong
 * to layers (`blocks.volume_id` becomes `blocks.layer_id`; key '' is a
 * tombstone: a hole over the layers below); a volume points at its top layer;
 * a layer has a parent. Each version-2 volume becomes one layer with the same
 * id and no parent (its rows stay where they are).
 */
const SCHEMA_V3 = `
ALTER TABLE blocks RENAME COLUMN volume_id TO layer_id;
CREATE TABLE IF NOT EXISTS layers (
  id          INTEGER PRIMARY KEY,
  parent      INTEGER,
  sealed      INTEGER NOT NULL DEFAULT 0,
  volume_uuid TEXT NOT NULL,
  store_uuid  TEXT,
  store_seq   INTEGER,
  created_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS layers_parent ON layers (parent);
CREATE INDEX IF NOT EXISTS layers_store ON layers (store_uuid, store_seq);
CREATE TABLE IF NOT EXISTS kept_records (
  uuid      TEXT NOT NULL,
  seq       INTEGER NOT NULL,
  base_uuid TEXT,
  base_seq  INTEGER,
  PRIMARY KEY (uuid, seq)
) WITHOUT ROWID;
ALTER TABLE volumes ADD COLUMN layer INTEGER;
ALTER TABLE volumes ADD COLUMN base_uuid TEXT;
ALTER TABLE volumes ADD COLUMN base_seq INTEGER;
INSERT INTO layers (id, parent, sealed, volume_uuid, created_at) SELECT id, NULL, 0, uuid, created_at FROM volumes;
UPDATE volumes SET layer = id;
CREATE INDEX IF NOT EXISTS volumes_layer ON volumes (layer);
`;

/**
 * Schema version 4: `unapplied` (FORMAT.md, "gc rule"): block keys a log
 * record names that may be in the store while the catalog has not applied it
 * (noted before the record's PUT, dropped once the volume's `log_seq` passes
 * the record's seq). Release to refcount zero and gc leave these objects in
 * the store: the next catch-up may name them.
 */
const SCHEMA_V4 = `
CREATE TABLE IF NOT EXISTS unapplied (
  key       TEXT NOT NULL,
  volume_id INTEGER NOT NULL,
  seq       INTEGER NOT NULL,
  PRIMARY KEY (key, volume_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS unapplied_volume ON unapplied (volume_id, seq);
`;

/**
 * Schema version 5: `unapplied.noted_at` (ms since the epoch, the last time
 * the note was written). gc drops the notes of a record that is not in the
 * store once they are older than its grace period (FORMAT.md, "gc rule").
 * Notes migrated from schema 4 count from the migration.
 */
const SCHEMA_V5 = `
ALTER TABLE unapplied ADD COLUMN noted_at INTEGER NOT NULL DEFAULT 0;
`;

/** The DDL of schema versions 1 and 2, for migration tests (a catalog of an older glidekv). */
export const OLD_SCHEMAS = { v1: SCHEMA, v2: SCHEMA_V2 } as const;

/** A tombstone row's key: block hole in this layer, whatever the layers below hold. */
export const TOMBSTONE = '';

/** The chain of layers from a volume's top (pos 0) down to the root. */
const CHAIN_OF_VOLUME = `WITH RECURSIVE chain(id, pos) AS (
  SELECT layer, 0 FROM volumes WHERE id = @vol
  UNION ALL SELECT l.parent, c.pos + 1 FROM layers l JOIN chain c ON l.id = c.id WHERE l.parent IS NOT NULL)`;
const CHAIN_OF_LAYER = `WITH RECURSIVE chain(id, pos) AS (
  SELECT @layer, 0
  UNION ALL SELECT l.parent, c.pos + 1 FROM layers l JOIN chain c ON l.id = c.id WHERE l.parent IS NOT NULL)`;

/** A record in the store that names a layer's state: volume uuid + seq of a checkpoint record. */
export interface StoreName {
  volume: string;
  seq: number;
}

/** A fork's catalog transaction found the source moved on since its checkpoint (a flush came in): checkpoint again. */
export class ForkMoved extends Error {
  constructor(readonly name: string) {
    super(`volume '${name}' changed since its checkpoint`);
  }
}

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
  /** Top layer (schema 3). */
  layer: number;
  /** The base named by the volume's newest checkpoint record (null: none). */
  base_uuid: string | null;
  base_seq: number | null;
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
  /** The database handle: private to the catalog (its methods are the interface; statements prepared once, q()). */
  private readonly db: Database.Database;
  private closed = false;
  /** Statements prepared once per catalog, by SQL text (q()). */
  private readonly stmts = new Map<string, Database.Statement>();

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

  /** The prepared statement for `sql` (prepared on first use; its pluck/raw modes reset). */
  private q(sql: string): Database.Statement {
    let st = this.stmts.get(sql);
    if (st === undefined) {
      st = this.db.prepare(sql);
      this.stmts.set(sql, st);
    } else if (st.reader) {
      st.pluck(false);
      st.raw(false);
    }
    return st;
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version === SCHEMA_VERSION) return;
    if (version > SCHEMA_VERSION) {
      throw GlideFsError.VERSION(`catalog schema version ${version} is newer than this glidekv (${SCHEMA_VERSION})`);
    }
    this.immediate(() => {
      const v = this.db.pragma('user_version', { simple: true }) as number;
      if (v === SCHEMA_VERSION) return;
      if (v < 1) {
        this.db.exec(SCHEMA);
        this.q('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run('catalog_id', randomBytes(8).toString('hex'));
        this.q('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run('deletes', '0');
      }
      if (v < 2) {
        this.db.exec(SCHEMA_V2);
        this.db.exec('UPDATE volumes SET family_uuid = (SELECT r.uuid FROM volumes r WHERE r.id = volumes.family) WHERE family_uuid IS NULL');
      }
      if (v < 3) this.db.exec(SCHEMA_V3);
      if (v < 4) this.db.exec(SCHEMA_V4);
      if (v < 5) {
        this.db.exec(SCHEMA_V5);
        this.q('UPDATE unapplied SET noted_at = ?').run(Date.now());
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
    return this.q('SELECT * FROM volumes WHERE name = ?').get(name) as VolumeRow | undefined;
  }

  volume(name: string): VolumeRow {
    const row = this.findVolume(name);
    if (!row) throw GlideFsError.NO_VOLUME(name);
    return row;
  }

  volumeById(id: number): VolumeRow | undefined {
    this.checkOpen();
    return this.q('SELECT * FROM volumes WHERE id = ?').get(id) as VolumeRow | undefined;
  }

  listVolumes(): VolumeRow[] {
    this.checkOpen();
    return this.q('SELECT * FROM volumes ORDER BY name').all() as VolumeRow[];
  }

  /**
   * Inserts a volume whose first record (a checkpoint, seq 1) is already in
   * the store: `uuid` is its id there. It gets an empty top layer.
   */
  createVolume(name: string, sizeBytes: number, uuid: string, createdAt: number, recordBytes: number): VolumeRow {
    return this.immediate(() => {
      if (this.findVolume(name)) throw GlideFsError.VOLUME_EXISTS(name);
      const info = this.q(
        'INSERT INTO volumes (name, uuid, size_bytes, parent, family, snapshot, created_at, log_seq, checkpoint_seq, family_uuid, log_puts, log_bytes) ' +
          'VALUES (?, ?, ?, NULL, 0, 0, ?, 1, 1, ?, 1, ?)',
      ).run(name, uuid, sizeBytes, createdAt, uuid, recordBytes);
      const id = Number(info.lastInsertRowid);
      const layer = this.newLayer(null, uuid);
      this.q('UPDATE volumes SET family = ?, layer = ? WHERE id = ?').run(id, layer, id);
      return this.volumeById(id)!;
    }, true);
  }

  /** A new, empty, unsealed layer over `parent`. In a transaction. */
  private newLayer(parent: number | null, volumeUuid: string): number {
    const info = this.q('INSERT INTO layers (parent, sealed, volume_uuid, created_at) VALUES (?, 0, ?, ?)').run(parent, volumeUuid, Date.now());
    return Number(info.lastInsertRowid);
  }

  /**
   * The catalog side of a fork or snapshot (FORMAT.md, "Layers"), one
   * transaction whose work does not depend on the volume's size: the
   * source's top layer is sealed (it becomes immutable and shared, named in
   * the store by the source's checkpoint record `parentSeq`), the source gets
   * a new empty top layer over it, and `dst` is inserted with its own empty
   * top layer over it. No block row is copied, no refcount changes (a row in
   * a sealed layer keeps its object alive). The source must be exactly at its
   * checkpoint `parentSeq` with nothing logged (ForkMoved otherwise).
   */
  sealAndFork(srcName: string, dst: string, uuid: string, snapshot: boolean, createdAt: number, parentSeq: number, recordBytes: number): VolumeRow {
    return this.immediate(() => {
      if (this.findVolume(dst)) throw GlideFsError.VOLUME_EXISTS(dst);
      const src = this.volume(srcName);
      if (src.log_seq !== parentSeq || src.checkpoint_seq !== parentSeq || this.q('SELECT 1 FROM logged WHERE volume_id = ? LIMIT 1').get(src.id)) {
        throw new ForkMoved(srcName);
      }
      this.q('INSERT OR REPLACE INTO kept_records (uuid, seq, base_uuid, base_seq) VALUES (?, ?, ?, ?)').run(src.uuid, parentSeq, src.base_uuid, src.base_seq);
      let under: number | null;
      if (this.q('SELECT 1 FROM blocks WHERE layer_id = ? LIMIT 1').get(src.layer) === undefined) {
        // an empty top layer (nothing written since the last fork): the child stands on what it stands on,
        // nothing is sealed, and repeated forks/snapshots of an idle volume do not deepen its chain
        under = this.q('SELECT parent FROM layers WHERE id = ?').pluck().get(src.layer) as number | null;
      } else {
        under = src.layer;
        this.q('UPDATE layers SET sealed = 1, store_uuid = ?, store_seq = ? WHERE id = ?').run(src.uuid, parentSeq, under);
        const srcTop = this.newLayer(under, src.uuid);
        this.q('UPDATE volumes SET layer = ? WHERE id = ?').run(srcTop, src.id);
      }
      const dstTop = this.newLayer(under, uuid);
      const info = this.q(
        'INSERT INTO volumes (name, uuid, size_bytes, parent, family, snapshot, created_at, log_seq, checkpoint_seq, parent_uuid, parent_seq, family_uuid, log_puts, log_bytes, layer, base_uuid, base_seq) ' +
          'VALUES (?, ?, ?, ?, ?, ?, ?, 1, 1, ?, ?, ?, 1, ?, ?, ?, ?)',
      ).run(dst, uuid, src.size_bytes, src.name, src.family, snapshot ? 1 : 0, createdAt, src.uuid, parentSeq, src.family_uuid ?? src.uuid, recordBytes, dstTop, src.uuid, parentSeq);
      return this.volumeById(Number(info.lastInsertRowid))!;
    }, true);
  }

  /** True when the volume has blocks whose newest bytes are sectors in the log. */
  hasLogged(volumeId: number): boolean {
    this.checkOpen();
    return this.q('SELECT 1 FROM logged WHERE volume_id = ? LIMIT 1').get(volumeId) !== undefined;
  }

  /**
   * Notes the block keys a log record about to be PUT at `seq` names
   * (FORMAT.md, "gc rule"): if the PUT lands while the commit does not (its
   * answer lost, a crash), the next catch-up names them, so until the
   * volume's `log_seq` reaches `seq` neither a release to refcount zero nor
   * gc deletes them. Before the PUT, so a crash leaves the note too.
   */
  noteUnapplied(volumeId: number, seq: number, keys: string[]): void {
    if (keys.length === 0) return;
    this.immediate(() => {
      const ins = this.q(
        'INSERT INTO unapplied (key, volume_id, seq, noted_at) VALUES (?, ?, ?, ?) ON CONFLICT (key, volume_id, seq) DO UPDATE SET noted_at = excluded.noted_at',
      );
      const now = Date.now();
      for (const k of keys) ins.run(k, volumeId, seq, now);
    });
  }

  /**
   * gc (FORMAT.md, "gc rule"): the records notes wait for, one row per
   * (volume, seq) with the newest `noted_at` of its notes.
   */
  unappliedRecords(): { volumeId: number; uuid: string; seq: number; notedAt: number }[] {
    this.checkOpen();
    return this.q(
      'SELECT u.volume_id AS volumeId, v.uuid AS uuid, u.seq AS seq, MAX(u.noted_at) AS notedAt FROM unapplied u JOIN volumes v ON v.id = u.volume_id WHERE u.seq > v.log_seq GROUP BY u.volume_id, u.seq',
    ).all() as { volumeId: number; uuid: string; seq: number; notedAt: number }[];
  }

  /**
   * gc: drops the notes at (`volumeId`, `seq`) of keys not in `keep` (what
   * the record the store holds at that seq names; empty when it holds none),
   * if no note there was written after `cutoff` (checked again here: a flush
   * retrying that seq renews them). Returns how many it dropped.
   */
  dropUnlanded(volumeId: number, seq: number, cutoff: number, keep: ReadonlySet<string>): number {
    return this.immediate(() => {
      const newest = this.q('SELECT MAX(noted_at) FROM unapplied WHERE volume_id = ? AND seq = ?').pluck().get(volumeId, seq) as number | null;
      if (newest === null || newest > cutoff) return 0;
      const keys = this.q('SELECT key FROM unapplied WHERE volume_id = ? AND seq = ?').pluck().all(volumeId, seq) as string[];
      const del = this.q('DELETE FROM unapplied WHERE key = ? AND volume_id = ? AND seq = ?');
      let n = 0;
      for (const k of keys) if (!keep.has(k)) n += del.run(k, volumeId, seq).changes;
      return n;
    }, true);
  }

  /** Drops the notes of records the volume's log has reached (applied, or replaced by another record at their seq). In a transaction. */
  private dropApplied(volumeId: number, logSeq: number): void {
    this.q('DELETE FROM unapplied WHERE volume_id = ? AND seq <= ?').run(volumeId, logSeq);
  }

  /**
   * Removes a volume: its top layer's rows are released, then every layer no
   * volume and no other layer stands on any more, downward (a parent with
   * live children keeps its sealed layer). Keys whose refcount fell to zero
   * are returned with `deleting` rows held by `owner`; the caller deletes the
   * objects and then calls `finishDeletes`.
   */
  deleteVolume(name: string, owner: Owner): { volume: VolumeRow; toDelete: string[] } {
    return this.immediate(() => {
      const v = this.volume(name);
      this.q('DELETE FROM upload_counts WHERE volume_id = ?').run(v.id);
      this.q('DELETE FROM logged WHERE volume_id = ?').run(v.id);
      this.q('DELETE FROM log_blocks WHERE volume_id = ?').run(v.id);
      this.q('DELETE FROM writers WHERE volume_id = ?').run(v.id);
      this.q('DELETE FROM unapplied WHERE volume_id = ?').run(v.id); // records past its log that did not land: its delete caught up the rest
      this.q('DELETE FROM volumes WHERE id = ?').run(v.id);
      const toDelete = this.dropUnusedLayers(v.layer, owner);
      return { volume: v, toDelete };
    }, true);
  }

  /** Drops `layer` and then its ancestors while nothing stands on them; releases their rows. In a transaction. */
  private dropUnusedLayers(layer: number | null, owner: Owner): string[] {
    const toDelete: string[] = [];
    const inUse = this.q('SELECT EXISTS (SELECT 1 FROM volumes WHERE layer = @l) OR EXISTS (SELECT 1 FROM layers WHERE parent = @l)').pluck();
    while (layer !== null) {
      if (inUse.get({ l: layer })) break;
      const row = this.q('SELECT parent FROM layers WHERE id = ?').get(layer) as { parent: number | null } | undefined;
      if (!row) break;
      for (const key of this.q('SELECT key FROM blocks WHERE layer_id = ?').pluck().all(layer) as string[]) {
        if (key !== TOMBSTONE && this.release(key, owner)) toDelete.push(key);
      }
      this.q('DELETE FROM blocks WHERE layer_id = ?').run(layer);
      this.q('DELETE FROM layers WHERE id = ?').run(layer);
      layer = row.parent;
    }
    return toDelete;
  }

  /**
   * The visible block map of a volume: block index -> object key, through its
   * layers (the top-most row of each block wins; a tombstone is a hole). A
   * full scan: for stats, restore and tests; reads use `lookup`.
   */
  blockMap(volumeId: number): Map<number, string> {
    this.checkOpen();
    const map = new Map<number, string>();
    const rows = this.q(`${CHAIN_OF_VOLUME} SELECT b.block_index, b.key, min(c.pos) FROM chain c JOIN blocks b ON b.layer_id = c.id GROUP BY b.block_index`)
      .raw()
      .all({ vol: volumeId }) as [number, string, number][];
    for (const [i, k] of rows) if (k !== TOMBSTONE) map.set(i, k);
    return map;
  }

  /** The object key of block i of a volume, through its layers; undefined = a hole. One point query per layer of the chain, prepared once. */
  lookup(volumeId: number, i: number): string | undefined {
    this.checkOpen();
    const k = this.q(`${CHAIN_OF_VOLUME} SELECT b.key FROM chain c CROSS JOIN blocks b ON b.layer_id = c.id AND b.block_index = @i ORDER BY c.pos LIMIT 1`)
      .pluck()
      .get({ vol: volumeId, i }) as string | undefined;
    return k === undefined || k === TOMBSTONE ? undefined : k;
  }

  /** Block i as seen from `layer` downward (undefined = a hole). In or out of a transaction. */
  private lookupFrom(layer: number | null, i: number): string | undefined {
    if (layer === null) return undefined;
    const k = this.q(`${CHAIN_OF_LAYER} SELECT b.key FROM chain c CROSS JOIN blocks b ON b.layer_id = c.id AND b.block_index = @i ORDER BY c.pos LIMIT 1`)
      .pluck()
      .get({ layer, i }) as string | undefined;
    return k === undefined || k === TOMBSTONE ? undefined : k;
  }

  /** Layers from `layer` down to the root, `layer` included. */
  depthBelow(layer: number): number {
    this.checkOpen();
    return this.q(`${CHAIN_OF_LAYER} SELECT count(*) FROM chain`).pluck().get({ layer }) as number;
  }

  /** The layer ids of a volume, top first (tests, stats). */
  layerChain(volumeId: number): number[] {
    this.checkOpen();
    return this.q(`${CHAIN_OF_VOLUME} SELECT id FROM chain ORDER BY pos`).pluck().all({ vol: volumeId }) as number[];
  }

  /** Row counts: all block rows of all layers, and layers (tests, bench: a fork adds none). */
  rowCounts(): { blockRows: number; layers: number; sealedLayers: number } {
    this.checkOpen();
    return {
      blockRows: this.q('SELECT count(*) FROM blocks').pluck().get() as number,
      layers: this.q('SELECT count(*) FROM layers').pluck().get() as number,
      sealedLayers: this.q('SELECT count(*) FROM layers WHERE sealed = 1').pluck().get() as number,
    };
  }

  /**
   * What a checkpoint record of the volume holds (FORMAT.md, "Layers"): the
   * rows of its top layer with `changes` applied (null hash = tombstone), and
   * the base they lie on: the store name of the top layer's parent.
   */
  checkpointContent(volumeId: number, changes: BlockChange[]): { blocks: Map<number, string | null>; base: StoreName | null } {
    return this.immediate(() => {
      const v = this.volumeById(volumeId);
      if (!v) throw GlideFsError.NO_VOLUME(`#${volumeId}`);
      const parent = this.q('SELECT parent FROM layers WHERE id = ?').pluck().get(v.layer) as number | null;
      let base: StoreName | null = null;
      if (parent !== null) {
        const p = this.q('SELECT store_uuid, store_seq FROM layers WHERE id = ?').get(parent) as { store_uuid: string | null; store_seq: number | null };
        if (p.store_uuid === null || p.store_seq === null) throw GlideFsError.CORRUPT(`volume '${v.name}': layer ${parent} is sealed without a name in the store`);
        base = { volume: p.store_uuid, seq: p.store_seq };
      }
      const blocks = new Map<number, string | null>();
      for (const [i, k] of this.q('SELECT block_index, key FROM blocks WHERE layer_id = ?').raw().all(v.layer) as [number, string][]) {
        blocks.set(i, k === TOMBSTONE ? null : k);
      }
      for (const c of changes) {
        if (c.newKey !== null) blocks.set(c.blockIndex, c.newKey);
        else if (this.lookupFrom(parent, c.blockIndex) !== undefined) blocks.set(c.blockIndex, null);
        else blocks.delete(c.blockIndex);
      }
      return { blocks, base };
    });
  }

  // --- flatten (FORMAT.md, "Layers") --------------------------------------------

  /** Sealed layers that no volume points at and exactly one layer stands on: [layer, its child]. */
  flattenCandidates(): Array<{ layer: number; child: number }> {
    this.checkOpen();
    return (
      this.q(
        'SELECT l.id, min(c.id) FROM layers l JOIN layers c ON c.parent = l.id WHERE l.sealed = 1 AND NOT EXISTS (SELECT 1 FROM volumes v WHERE v.layer = l.id) GROUP BY l.id HAVING count(*) = 1',
      )
        .raw()
        .all() as [number, number][]
    ).map(([layer, child]) => ({ layer, child }));
  }

  /**
   * One step of merging sealed `layer` into its only child: up to `limit` of
   * its rows move up (rows the child shadows are released instead). Every
   * step leaves each volume's view unchanged, so reads, flushes, forks and gc
   * may run between steps. When the layer is empty the child takes its
   * parent and the layer goes. Returns keys to delete (with `deleting` rows)
   * and whether the merge is over (done, or no longer applicable).
   */
  mergeStep(layer: number, child: number, limit: number, owner: Owner): { moved: number; toDelete: string[]; done: boolean } {
    return this.immediate(() => {
      const l = this.q('SELECT parent, sealed FROM layers WHERE id = ?').get(layer) as { parent: number | null; sealed: number } | undefined;
      if (!l || l.sealed !== 1) return { moved: 0, toDelete: [], done: true };
      const children = this.q('SELECT id FROM layers WHERE parent = ?').pluck().all(layer) as number[];
      if (children.length !== 1 || children[0] !== child || this.q('SELECT 1 FROM volumes WHERE layer = ?').get(layer)) {
        return { moved: 0, toDelete: [], done: true };
      }
      const rows = this.q('SELECT block_index, key FROM blocks WHERE layer_id = ? LIMIT ?').raw().all(layer, limit) as [number, string][];
      const toDelete: string[] = [];
      const shadow = this.q('SELECT 1 FROM blocks WHERE layer_id = ? AND block_index = ?');
      const move = this.q('UPDATE blocks SET layer_id = ? WHERE layer_id = ? AND block_index = ?');
      const drop = this.q('DELETE FROM blocks WHERE layer_id = ? AND block_index = ?');
      let moved = 0;
      for (const [i, key] of rows) {
        if (shadow.get(child, i) || (key === TOMBSTONE && l.parent === null)) {
          drop.run(layer, i);
          if (key !== TOMBSTONE && this.release(key, owner)) toDelete.push(key);
        } else {
          move.run(child, layer, i);
          moved++;
        }
      }
      if (rows.length < limit) {
        this.q('UPDATE layers SET parent = ? WHERE id = ?').run(l.parent, child);
        this.q('DELETE FROM layers WHERE id = ?').run(layer);
        return { moved, toDelete, done: true };
      }
      return { moved, toDelete, done: false };
    }, true);
  }

  // --- copy-up flatten (FORMAT.md, "Layers") ----------------------------------
  //
  // A volume whose chain is deeper than the limit gets a NEW sealed layer M
  // holding the visible rows of its sealed ancestors (the chain from its top
  // layer's parent P down), built in steps while M is marked `sealed = 2`
  // (building; its `volume_uuid` names the builder "flatten:<host>:<pid>").
  // The switch points the top at M (M takes P's store name, so checkpoint
  // records and restore are unchanged) and drops the layers nothing stands on.

  /** Volumes whose chain has more than `depth` layers (and at least 3): their top layer and its parent. */
  deepVolumes(depth: number): Array<{ volume: number; top: number; parent: number }> {
    this.checkOpen();
    const out: Array<{ volume: number; top: number; parent: number }> = [];
    for (const [id, top, parent] of this.q('SELECT v.id, v.layer, l.parent FROM volumes v JOIN layers l ON l.id = v.layer WHERE l.parent IS NOT NULL').raw().all() as [number, number, number][]) {
      const n = this.depthBelow(top);
      if (n > depth && n > 2) out.push({ volume: id, top, parent });
    }
    return out;
  }

  /** Starts a copy-up: an empty layer M being built by `owner` (sealed = 2, no parent). */
  copyUpBegin(owner: Owner): number {
    return this.immediate(() => {
      const info = this.q('INSERT INTO layers (parent, sealed, volume_uuid, created_at) VALUES (NULL, 2, ?, ?)').run(`flatten:${owner.host}:${owner.pid}`, Date.now());
      return Number(info.lastInsertRowid);
    }, true);
  }

  /**
   * One copy-up step: the visible rows below and including `parent` for the
   * block indexes [lo, lo + limit), lo = the first index after `after` that
   * any layer of the chain has a row for, go into M (holes get no row: M has
   * no parent), each raising its object's refcount. Index seeks per layer, so
   * a step costs its range, not the volume. `gone` when M or `parent` no
   * longer exist (the caller abandons).
   */
  copyUpStep(m: number, parent: number, after: number, limit: number): { next: number; rows: number; done: boolean; gone: boolean } {
    return this.immediate(() => {
      const ok = this.q('SELECT (SELECT sealed FROM layers WHERE id = @m) = 2 AND EXISTS (SELECT 1 FROM layers WHERE id = @p)').pluck().get({ m, p: parent });
      if (!ok) return { next: after, rows: 0, done: true, gone: true };
      const lo = this.q(
        `${CHAIN_OF_LAYER} SELECT min((SELECT b.block_index FROM blocks b WHERE b.layer_id = c.id AND b.block_index > @after ORDER BY b.block_index LIMIT 1)) FROM chain c`,
      )
        .pluck()
        .get({ layer: parent, after }) as number | null;
      if (lo === null) return { next: after, rows: 0, done: true, gone: false };
      const hi = lo + limit;
      const rows = this.q(
        `${CHAIN_OF_LAYER} SELECT b.block_index, b.key, min(c.pos) FROM chain c CROSS JOIN blocks b ON b.layer_id = c.id AND b.block_index >= @lo AND b.block_index < @hi GROUP BY b.block_index`,
      )
        .raw()
        .all({ layer: parent, lo, hi }) as [number, string, number][];
      const set = this.q('INSERT INTO blocks (layer_id, block_index, key) VALUES (?, ?, ?)');
      const ref = this.q('UPDATE objects SET refcount = refcount + 1 WHERE key = ?');
      let n = 0;
      for (const [i, k] of rows) {
        if (k === TOMBSTONE) continue;
        if (ref.run(k).changes !== 1) throw GlideFsError.CORRUPT(`layer ${parent}: block ${i} names ${k}, which has no objects row`);
        set.run(m, i, k);
        n++;
      }
      return { next: hi - 1, rows: n, done: false, gone: false };
    });
  }

  /**
   * The switch: if the volume still has `top` over `parent`, M is sealed under
   * P's store name, the top stands on M and the layers nothing stands on any
   * more are dropped (their rows released). Otherwise (a fork sealed the top,
   * the volume was deleted, M was dropped) M is abandoned. Returns keys to
   * delete (with `deleting` rows held by `owner`).
   */
  copyUpSwitch(m: number, volumeId: number, top: number, parent: number, owner: Owner): { switched: boolean; toDelete: string[] } {
    return this.immediate(() => {
      const v = this.volumeById(volumeId);
      const t = this.q('SELECT parent, sealed FROM layers WHERE id = ?').get(top) as { parent: number | null; sealed: number } | undefined;
      const building = this.q('SELECT sealed FROM layers WHERE id = ?').pluck().get(m) === 2;
      if (!building) return { switched: false, toDelete: [] };
      if (!v || v.layer !== top || !t || t.sealed !== 0 || t.parent !== parent) return { switched: false, toDelete: this.dropBuild(m, owner) };
      const p = this.q('SELECT store_uuid, store_seq FROM layers WHERE id = ?').get(parent) as { store_uuid: string | null; store_seq: number | null };
      this.q('UPDATE layers SET sealed = 1, volume_uuid = ?, store_uuid = ?, store_seq = ? WHERE id = ?').run(v.uuid, p.store_uuid, p.store_seq, m);
      this.q('UPDATE layers SET parent = ? WHERE id = ?').run(m, top);
      return { switched: true, toDelete: this.dropUnusedLayers(parent, owner) };
    }, true);
  }

  /** Abandons a copy-up: M's rows are released and M goes. Returns keys to delete. */
  copyUpAbandon(m: number, owner: Owner): string[] {
    return this.immediate(() => (this.q('SELECT sealed FROM layers WHERE id = ?').pluck().get(m) === 2 ? this.dropBuild(m, owner) : []), true);
  }

  /**
   * gc: drops layers being built (sealed = 2) whose builder is dead (a crash
   * mid copy-up) or is this process but not among `active`. Returns keys to delete.
   */
  dropStaleBuilds(owner: Owner, active: ReadonlySet<number>): string[] {
    return this.immediate(() => {
      const toDelete: string[] = [];
      for (const [id, who] of this.q('SELECT id, volume_uuid FROM layers WHERE sealed = 2').raw().all() as [number, string][]) {
        const m = /^flatten:(.*):(\d+)$/.exec(who);
        const alive = m !== null && ownerAlive(m[1], Number(m[2]));
        if (alive && !(m !== null && m[1] === owner.host && Number(m[2]) === owner.pid && !active.has(id))) continue;
        toDelete.push(...this.dropBuild(id, owner));
      }
      return toDelete;
    }, true);
  }

  /** Releases a building layer's rows and drops it. In a transaction. */
  private dropBuild(m: number, owner: Owner): string[] {
    const toDelete: string[] = [];
    for (const key of this.q('SELECT key FROM blocks WHERE layer_id = ?').pluck().all(m) as string[]) {
      if (key !== TOMBSTONE && this.release(key, owner)) toDelete.push(key);
    }
    this.q('DELETE FROM blocks WHERE layer_id = ?').run(m);
    this.q('DELETE FROM layers WHERE id = ?').run(m);
    return toDelete;
  }

  // --- records the store must keep (FORMAT.md, "Layers") ------------------------

  /**
   * Checkpoint records that layers need ("uuid:seq"): each sealed layer's
   * name, each volume's current base, and, recursively, the base each of
   * those records names. Log gc and a checkpoint's record deletes keep them.
   */
  keptRecords(): Set<string> {
    this.checkOpen();
    const rows = this.q(
      `WITH RECURSIVE k(uuid, seq) AS (
         SELECT store_uuid, store_seq FROM layers WHERE sealed = 1 AND store_uuid IS NOT NULL
         UNION SELECT base_uuid, base_seq FROM volumes WHERE base_uuid IS NOT NULL
         UNION SELECT r.base_uuid, r.base_seq FROM kept_records r JOIN k ON r.uuid = k.uuid AND r.seq = k.seq WHERE r.base_uuid IS NOT NULL)
       SELECT uuid, seq FROM k`,
    )
      .raw()
      .all() as [string, number][];
    return new Set(rows.map(([u, sq]) => `${u}:${sq}`));
  }

  /** Drops `kept_records` rows no layer needs any more (gc). */
  pruneKeptRecords(): number {
    const keep = this.keptRecords();
    return this.immediate(() => {
      let n = 0;
      for (const [u, sq] of this.q('SELECT uuid, seq FROM kept_records').raw().all() as [string, number][]) {
        if (!keep.has(`${u}:${sq}`)) n += this.q('DELETE FROM kept_records WHERE uuid = ? AND seq = ?').run(u, sq).changes;
      }
      return n;
    });
  }

  /** Counts log records deleted for a volume. */
  addLogDeletes(volumeId: number, n: number): void {
    if (n === 0) return;
    this.immediate(() => {
      this.q('UPDATE volumes SET log_deletes = log_deletes + ? WHERE id = ?').run(n, volumeId);
    });
  }

  // --- restore (restore.ts) -------------------------------------------------------

  /** Layer id of the sealed layer named `name` in the store, if the catalog has one (the newest: a copy-up layer carries the name of the layer it replaced, which may live on under other volumes). */
  layerByName(name: StoreName): number | undefined {
    this.checkOpen();
    return this.q('SELECT id FROM layers WHERE store_uuid = ? AND store_seq = ? AND sealed = 1 ORDER BY id DESC LIMIT 1').pluck().get(name.volume, name.seq) as number | undefined;
  }

  /** Restore: a sealed layer named `name` (a checkpoint record) holding `blocks` (null = tombstone) over `parent`. */
  insertSealedLayer(name: StoreName, base: StoreName | null, parent: number | null, blocks: Array<[number, string | null]>): number {
    return this.immediate(() => {
      const info = this.q('INSERT INTO layers (parent, sealed, volume_uuid, store_uuid, store_seq, created_at) VALUES (?, 1, ?, ?, ?, ?)').run(
        parent,
        name.volume,
        name.volume,
        name.seq,
        Date.now(),
      );
      const id = Number(info.lastInsertRowid);
      this.insertRows(id, blocks);
      this.q('INSERT OR REPLACE INTO kept_records (uuid, seq, base_uuid, base_seq) VALUES (?, ?, ?, ?)').run(name.volume, name.seq, base?.volume ?? null, base?.seq ?? null);
      return id;
    }, true);
  }

  /** Restore: a volume row at its checkpoint `seq`, its top layer over `parent` holding `blocks`, naming `base`. */
  insertRestoredVolume(
    uuid: string,
    m: { name: string; sizeBytes: number; parent: string | null; snapshot: boolean; createdAt: number; parentUuid: string | null; parentSeq: number | null; family: string },
    seq: number,
    parent: number | null,
    blocks: Array<[number, string | null]>,
    base: StoreName | null,
  ): number {
    return this.immediate(() => {
      const info = this.q(
        'INSERT INTO volumes (name, uuid, size_bytes, parent, family, snapshot, created_at, log_seq, checkpoint_seq, parent_uuid, parent_seq, family_uuid, base_uuid, base_seq) ' +
          'VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      ).run(m.name, uuid, m.sizeBytes, m.parent, m.snapshot ? 1 : 0, m.createdAt, seq, seq, m.parentUuid, m.parentSeq, m.family, base?.volume ?? null, base?.seq ?? null);
      const id = Number(info.lastInsertRowid);
      const layer = this.newLayer(parent, uuid);
      this.insertRows(layer, blocks);
      this.q('UPDATE volumes SET layer = ? WHERE id = ?').run(layer, id);
      return id;
    }, true);
  }

  /** Restore's last step: families, the re-upload history from the restored rows, no deleting rows. */
  finishRestore(): void {
    this.immediate(() => {
      // families: the root's id when it is restored, else the first member's
      this.db.exec(`UPDATE volumes SET family = COALESCE(
          (SELECT r.id FROM volumes r WHERE r.uuid = volumes.family_uuid),
          (SELECT min(r.id) FROM volumes r WHERE r.family_uuid = volumes.family_uuid))`);
      this.db.exec(`INSERT OR IGNORE INTO family_offsets (family, block_index)
          SELECT v.family, b.block_index FROM blocks b JOIN layers l ON l.id = b.layer_id JOIN volumes v ON v.uuid = l.volume_uuid`);
      // nothing is deleted by a restore: keys a replay released are orphans for gc
      this.db.exec('DELETE FROM deleting');
    }, true);
  }

  /** Inserts rows into a layer, raising refcounts. In a transaction. */
  private insertRows(layer: number, blocks: Array<[number, string | null]>): void {
    const addObj = this.q(
      'INSERT INTO objects (key, refcount, size, created_at) VALUES (?, 1, ?, ?) ON CONFLICT(key) DO UPDATE SET refcount = refcount + 1',
    );
    const set = this.q('INSERT INTO blocks (layer_id, block_index, key) VALUES (?, ?, ?)');
    const now = Date.now();
    for (const [i, k] of blocks) {
      set.run(layer, i, k ?? TOMBSTONE);
      if (k !== null) addObj.run(k, BLOCK_BYTES, now);
    }
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
      const hasObj = this.q('SELECT 1 FROM objects WHERE key = ?').pluck();
      const hasDel = this.q('SELECT 1 FROM deleting WHERE key = ?').pluck();
      const addPending = this.q(
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
    const get = this.q('SELECT owner_host, owner_pid FROM deleting WHERE key = ?');
    const out: string[] = [];
    for (const key of keys) {
      const row = get.get(key) as { owner_host: string; owner_pid: number } | undefined;
      if (!row) continue;
      if (!ownerAlive(row.owner_host, row.owner_pid)) {
        this.q('DELETE FROM deleting WHERE key = ?').run(key);
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
      const del = this.q('DELETE FROM pending WHERE key = ? AND owner = ?');
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
    durable = true,
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
      const delPending = this.q('DELETE FROM pending WHERE key = ? AND owner = ?');
      for (const k of pendingKeys) delPending.run(k, owner.token);
      this.dropApplied(volumeId, seq);
      this.q(
          'UPDATE volumes SET log_seq = ?, log_puts = log_puts + 1, log_bytes = log_bytes + ?, log_pending_bytes = log_pending_bytes + ?, ' +
            'log_since = CASE WHEN log_since = 0 THEN ? ELSE log_since END, skipped_unchanged = skipped_unchanged + ?, gets = gets + ? WHERE id = ?',
        )
        .run(seq, recordBytes, recordBytes, Date.now(), counters.skippedUnchanged, counters.gets, volumeId);
      return { uploads, uploadedBytes: uploads * BLOCK_BYTES, reuploads, toDelete };
    }, durable);
  }

  /**
   * The checkpoint commit, after its record `seq` is in the store: logged
   * blocks move to their folded objects (`folds`), `logged` and `log_blocks`
   * are emptied, `log_seq = checkpoint_seq = seq`.
   */
  commitCheckpoint(
    volumeId: number,
    seq: number,
    recordBytes: number,
    folds: BlockChange[],
    pendingKeys: string[],
    owner: Owner,
    base?: StoreName | null,
  ): CommitResult {
    return this.immediate(() => {
      if (base !== undefined) this.q('UPDATE volumes SET base_uuid = ?, base_seq = ? WHERE id = ?').run(base?.volume ?? null, base?.seq ?? null, volumeId);
      const v = this.volumeById(volumeId);
      if (!v) throw GlideFsError.NO_VOLUME(`#${volumeId}`);
      if (v.log_seq !== seq - 1) throw GlideFsError.CORRUPT(`volume '${v.name}': checkpoint ${seq} follows ${v.log_seq} in the catalog`);
      const toDelete = this.applyWhole(volumeId, folds, owner);
      const up = folds.filter((c) => c.uploaded).map((c) => c.blockIndex);
      const { uploads, reuploads } = this.countUploads(volumeId, v.family, up, false);
      this.q('DELETE FROM logged WHERE volume_id = ?').run(volumeId);
      this.q('DELETE FROM log_blocks WHERE volume_id = ?').run(volumeId);
      const delPending = this.q('DELETE FROM pending WHERE key = ? AND owner = ?');
      for (const k of pendingKeys) delPending.run(k, owner.token);
      this.dropApplied(volumeId, seq);
      this.q(
          'UPDATE volumes SET log_seq = ?, checkpoint_seq = ?, log_pending_bytes = 0, log_since = 0, log_puts = log_puts + 1, log_bytes = log_bytes + ?, ' +
            'checkpoints = checkpoints + 1, checkpoint_uploads = checkpoint_uploads + ? WHERE id = ?',
        )
        .run(seq, seq, recordBytes, uploads, volumeId);
      return { uploads, uploadedBytes: uploads * BLOCK_BYTES, reuploads, toDelete };
    }, true);
  }

  /**
   * Sets blocks of the volume's top layer to new keys (or holes), drops their
   * logged sectors, moves refcounts. A hole over a lower layer's block is a
   * tombstone row; a hole over nothing is no row. Only the top layer's own
   * row is released (rows of sealed layers stay). `oldKey` of a change is not
   * trusted: the row in the catalog is. Returns keys to delete. In a transaction.
   */
  private applyWhole(volumeId: number, changes: BlockChange[], owner: Owner): string[] {
    const top = this.q('SELECT layer FROM volumes WHERE id = ?').pluck().get(volumeId) as number;
    const parent = this.q('SELECT parent FROM layers WHERE id = ?').pluck().get(top) as number | null;
    const addObj = this.q(
      'INSERT INTO objects (key, refcount, size, created_at) VALUES (?, 1, ?, ?) ON CONFLICT(key) DO UPDATE SET refcount = refcount + 1',
    );
    const ownRow = this.q('SELECT key FROM blocks WHERE layer_id = ? AND block_index = ?').pluck();
    const setBlock = this.q('INSERT OR REPLACE INTO blocks (layer_id, block_index, key) VALUES (?, ?, ?)');
    const delBlock = this.q('DELETE FROM blocks WHERE layer_id = ? AND block_index = ?');
    const delLogged = this.q('DELETE FROM logged WHERE volume_id = ? AND block_index = ?');
    const delLogBlocks = this.q('DELETE FROM log_blocks WHERE volume_id = ? AND block_index = ?');
    const now = Date.now();
    const toDelete: string[] = [];
    for (const c of changes) {
      const old = ownRow.get(top, c.blockIndex) as string | undefined;
      if (c.newKey !== null) {
        addObj.run(c.newKey, BLOCK_BYTES, now);
        setBlock.run(top, c.blockIndex, c.newKey);
      } else if (this.lookupFrom(parent, c.blockIndex) !== undefined) {
        setBlock.run(top, c.blockIndex, TOMBSTONE);
      } else {
        delBlock.run(top, c.blockIndex);
      }
      delLogged.run(volumeId, c.blockIndex);
      delLogBlocks.run(volumeId, c.blockIndex);
      if (old !== undefined && old !== TOMBSTONE && this.release(old, owner) && old !== c.newKey) toDelete.push(old);
    }
    return toDelete;
  }

  private applySectors(volumeId: number, seq: number, sectors: Array<{ blockIndex: number; hash: string }>): void {
    const setLogged = this.q('INSERT OR REPLACE INTO logged (volume_id, block_index, hash) VALUES (?, ?, ?)');
    const addLogBlock = this.q('INSERT OR IGNORE INTO log_blocks (volume_id, block_index, seq) VALUES (?, ?, ?)');
    for (const s of sectors) {
      setLogged.run(volumeId, s.blockIndex, s.hash);
      addLogBlock.run(volumeId, s.blockIndex, seq);
    }
  }

  /** Per-offset upload counters and re-uploads. In a transaction. */
  private countUploads(volumeId: number, family: number, blockIndices: number[], addToVolume: boolean): { uploads: number; reuploads: number } {
    const bumpUpload = this.q(
      'INSERT INTO upload_counts (volume_id, block_index, uploads) VALUES (?, ?, 1) ON CONFLICT DO UPDATE SET uploads = uploads + 1',
    );
    const seenOffset = this.q('INSERT OR IGNORE INTO family_offsets (family, block_index) VALUES (?, ?)');
    let reuploads = 0;
    for (const i of blockIndices) {
      bumpUpload.run(volumeId, i);
      if (seenOffset.run(family, i).changes === 0) reuploads++;
    }
    const uploads = blockIndices.length;
    this.q('UPDATE volumes SET uploads = uploads + ?, uploaded_bytes = uploaded_bytes + ?, reuploads = reuploads + ? WHERE id = ?')
      .run(uploads, uploads * BLOCK_BYTES, reuploads, volumeId);
    if (addToVolume) this.q('UPDATE volumes SET checkpoint_uploads = checkpoint_uploads + ? WHERE id = ?').run(uploads, volumeId);
    return { uploads, reuploads };
  }

  /** Blocks with sectors in the log: index -> current hash and the records holding its sectors (ascending). */
  loggedBlocks(volumeId: number): Map<number, LoggedBlock> {
    this.checkOpen();
    const out = new Map<number, LoggedBlock>();
    for (const [i, h] of this.q('SELECT block_index, hash FROM logged WHERE volume_id = ?').raw().all(volumeId) as [number, string][]) {
      out.set(i, { hash: h, seqs: [] });
    }
    for (const [i, seq] of this.q('SELECT block_index, seq FROM log_blocks WHERE volume_id = ? ORDER BY block_index, seq')
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
      let toDelete: string[] = [];
      if (rec.kind === KIND_FLUSH) {
        toDelete = this.applyWhole(
          volumeId,
          rec.blocks.map(([i, h]) => ({ blockIndex: i, oldKey: null, newKey: h === null ? null : blockKey(prefix, i, h), uploaded: false })),
          owner,
        );
        this.applySectors(volumeId, rec.seq, rec.sectors.map((e) => ({ blockIndex: e.index, hash: e.hash })));
        this.q('UPDATE volumes SET log_seq = ?, log_pending_bytes = log_pending_bytes + ?, log_since = CASE WHEN log_since = 0 THEN ? ELSE log_since END WHERE id = ?').run(
          rec.seq,
          recordBytes,
          Date.now(),
          volumeId,
        );
      } else if (rec.kind === KIND_CHECKPOINT) {
        // the record is the top layer's content over its base (a layer the catalog must have)
        const base = rec.meta.base ?? null;
        let parent: number | null = null;
        if (base) {
          const l = this.layerByName(base);
          if (l === undefined) throw GlideFsError.CORRUPT(`volume '${v.name}': checkpoint ${rec.seq} lies on record ${base.seq} of volume ${base.volume}, which this catalog has no layer for`);
          parent = l;
        }
        const oldParent = this.q('SELECT parent FROM layers WHERE id = ?').pluck().get(v.layer) as number | null;
        const oldKeys = this.q('SELECT key FROM blocks WHERE layer_id = ?').pluck().all(v.layer) as string[];
        this.q('DELETE FROM blocks WHERE layer_id = ?').run(v.layer);
        this.q('UPDATE layers SET parent = ? WHERE id = ?').run(parent, v.layer);
        // new rows first: a key in both keeps its object
        this.insertRows(
          v.layer,
          rec.blocks.map(([i, h]) => [i, h === null ? null : blockKey(prefix, i, h)]),
        );
        for (const key of oldKeys) if (key !== TOMBSTONE && this.release(key, owner)) toDelete.push(key);
        if (oldParent !== parent) toDelete.push(...this.dropUnusedLayers(oldParent, owner));
        this.q('DELETE FROM logged WHERE volume_id = ?').run(volumeId);
        this.q('DELETE FROM log_blocks WHERE volume_id = ?').run(volumeId);
        this.q('UPDATE volumes SET log_seq = ?, checkpoint_seq = ?, log_pending_bytes = 0, log_since = 0, base_uuid = ?, base_seq = ? WHERE id = ?').run(
          rec.seq,
          rec.seq,
          base?.volume ?? null,
          base?.seq ?? null,
          volumeId,
        );
      } else {
        throw GlideFsError.CORRUPT(`volume '${v.name}' was deleted in the store (record ${rec.seq})`);
      }
      this.dropApplied(volumeId, rec.seq);
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
      const row = this.q('SELECT owner, owner_host, owner_pid, since FROM writers WHERE volume_id = ?').get(volumeId) as
        | { owner: string; owner_host: string; owner_pid: number; since: number }
        | undefined;
      if (row && row.owner !== owner.token && ownerAlive(row.owner_host, row.owner_pid)) {
        throw GlideFsError.LOCKED(
          `volume '${name}' is open for writing by pid ${row.owner_pid} on host ${row.owner_host} since ${new Date(row.since).toISOString()}`,
        );
      }
      this.q('INSERT OR REPLACE INTO writers (volume_id, owner, owner_host, owner_pid, since) VALUES (?, ?, ?, ?, ?)')
        .run(volumeId, owner.token, owner.host, owner.pid, Date.now());
    }, true);
  }

  dropWriter(volumeId: number, owner: Owner): void {
    if (this.closed) return;
    this.immediate(() => {
      this.q('DELETE FROM writers WHERE volume_id = ? AND owner = ?').run(volumeId, owner.token);
    });
  }

  /** The live writer of a volume (host, pid), or null. */
  writerOf(volumeId: number): { host: string; pid: number } | null {
    this.checkOpen();
    const row = this.q('SELECT owner_host, owner_pid FROM writers WHERE volume_id = ?').get(volumeId) as
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
    const row = this.q('SELECT refcount FROM objects WHERE key = ?').get(key) as { refcount: number } | undefined;
    if (!row) return false;
    if (row.refcount > 1) {
      this.q('UPDATE objects SET refcount = refcount - 1 WHERE key = ?').run(key);
      return false;
    }
    this.q('DELETE FROM objects WHERE key = ?').run(key);
    if (this.q('SELECT 1 FROM pending WHERE key = ?').get(key)) return false;
    if (this.q('SELECT 1 FROM unapplied WHERE key = ?').get(key)) return false; // a record not applied yet names it
    this.q('INSERT OR REPLACE INTO deleting (key, owner, owner_host, owner_pid, started_at) VALUES (?, ?, ?, ?, ?)')
      .run(key, owner.token, owner.host, owner.pid, Date.now());
    return true;
  }

  /** Drops the `deleting` rows of objects now deleted and counts the deletes. */
  finishDeletes(keys: string[], volumeId: number | null): void {
    if (keys.length === 0) return;
    this.immediate(() => {
      const del = this.q('DELETE FROM deleting WHERE key = ?');
      for (const k of keys) del.run(k);
      if (volumeId !== null) {
        this.q('UPDATE volumes SET deletes = deletes + ? WHERE id = ?').run(keys.length, volumeId);
      } else {
        this.q("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'deletes'").run(keys.length);
      }
    });
  }

  /** Counts dirty blocks a flush found unchanged when it had nothing to commit. */
  addSkipped(volumeId: number, n: number): void {
    if (n === 0) return;
    this.immediate(() => {
      this.q('UPDATE volumes SET skipped_unchanged = skipped_unchanged + ? WHERE id = ?').run(n, volumeId);
    });
  }

  /** Adds read-side counters (GETs) that are kept in memory between commits. */
  addGets(volumeId: number, gets: number): void {
    if (gets === 0) return;
    this.immediate(() => {
      this.q('UPDATE volumes SET gets = gets + ? WHERE id = ?').run(gets, volumeId);
    });
  }

  // --- gc --------------------------------------------------------------------

  /**
   * gc step 1: drops pending rows of dead owners and adopts deleting rows of
   * dead owners (they become this owner's). Returns the adopted keys.
   */
  adoptStale(owner: Owner): string[] {
    return this.immediate(() => {
      const pend = this.q('SELECT key, owner, owner_host, owner_pid FROM pending').all() as {
        key: string;
        owner: string;
        owner_host: string;
        owner_pid: number;
      }[];
      for (const p of pend) {
        if (!ownerAlive(p.owner_host, p.owner_pid)) this.q('DELETE FROM pending WHERE key = ? AND owner = ?').run(p.key, p.owner);
      }
      const dels = this.q('SELECT key, owner_host, owner_pid FROM deleting').all() as {
        key: string;
        owner_host: string;
        owner_pid: number;
      }[];
      const adopted: string[] = [];
      for (const d of dels) {
        if (ownerAlive(d.owner_host, d.owner_pid)) continue;
        if (this.q('SELECT 1 FROM objects WHERE key = ?').get(d.key)) {
          // Re-referenced since (cannot happen by the protocol, but never delete a named object).
          this.q('DELETE FROM deleting WHERE key = ?').run(d.key);
          continue;
        }
        this.q('UPDATE deleting SET owner = ?, owner_host = ?, owner_pid = ?, started_at = ? WHERE key = ?')
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
      const named = this.q(
        'SELECT EXISTS (SELECT 1 FROM objects WHERE key = @k) OR EXISTS (SELECT 1 FROM pending WHERE key = @k) OR EXISTS (SELECT 1 FROM deleting WHERE key = @k) OR EXISTS (SELECT 1 FROM unapplied WHERE key = @k)',
      ).pluck();
      const take = this.q(
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
    return this.q('SELECT key FROM objects').pluck().all() as string[];
  }

  // --- store owner and gc (glidefs-a; FORMAT.md, "Store marker", "gc rule") ----

  /** The store id this catalog owns (meta `store_id`), and whether the marker is known to hold it. */
  storeOwner(): { storeId: string; state: 'claimed' | 'confirmed' } | null {
    this.checkOpen();
    const id = this.q("SELECT value FROM meta WHERE key = 'store_id'").pluck().get() as string | undefined;
    if (id === undefined) return null;
    const state = this.q("SELECT value FROM meta WHERE key = 'store_id_state'").pluck().get() as string | undefined;
    return { storeId: id, state: state === 'claimed' ? 'claimed' : 'confirmed' };
  }

  /** Records the store id (durably: the marker is created only after a claim is on disk). */
  setStoreOwner(storeId: string, state: 'claimed' | 'confirmed'): void {
    this.immediate(() => {
      const put = this.q('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)');
      put.run('store_id', storeId);
      put.run('store_id_state', state);
    }, true);
  }

  /** Drops a claim of `storeId` (another catalog's marker won). */
  clearStoreOwner(storeId: string): void {
    this.immediate(() => {
      if (this.q("SELECT value FROM meta WHERE key = 'store_id'").pluck().get() !== storeId) return;
      this.q("DELETE FROM meta WHERE key IN ('store_id', 'store_id_state')").run();
    }, true);
  }

  /** Up to `n` object keys the catalog names (any). */
  sampleObjectKeys(n: number): string[] {
    this.checkOpen();
    return this.q('SELECT key FROM objects LIMIT ?').pluck().all(n) as string[];
  }

  /** Of `keys`, those the catalog names neither as an object nor in a pending or deleting row (no row is taken). */
  unnamedKeys(keys: string[]): string[] {
    this.checkOpen();
    const named = this.q('SELECT EXISTS (SELECT 1 FROM objects WHERE key = @k) OR EXISTS (SELECT 1 FROM pending WHERE key = @k) OR EXISTS (SELECT 1 FROM deleting WHERE key = @k) OR EXISTS (SELECT 1 FROM unapplied WHERE key = @k)')
      .pluck();
    return keys.filter((k) => !named.get({ k }));
  }

  /** Keys of `deleting` rows whose owner is dead (what gc would finish), without adopting them. */
  staleDeletes(): string[] {
    this.checkOpen();
    const rows = this.q('SELECT key, owner_host, owner_pid FROM deleting').all() as { key: string; owner_host: string; owner_pid: number }[];
    const named = this.q('SELECT 1 FROM objects WHERE key = ?');
    return rows.filter((r) => !ownerAlive(r.owner_host, r.owner_pid) && !named.get(r.key)).map((r) => r.key);
  }

  /** Drops `deleting` rows without counting them as deletes (gc found nothing to delete, or failed). */
  dropDeleting(keys: string[]): void {
    if (keys.length === 0) return;
    this.immediate(() => {
      const del = this.q('DELETE FROM deleting WHERE key = ?');
      for (const k of keys) del.run(k);
    });
  }

  // --- stats -----------------------------------------------------------------

  volumeCounts(volumeId: number): { blocks: number; sharedBlocks: number; objects: number; loggedBlocks: number } {
    this.checkOpen();
    // blocks: the visible map; shared: blocks another volume reads as the same object
    // (through a layer both stand on, or the same bytes written at the same offset)
    const mine = this.blockMap(volumeId);
    const blocks = mine.size;
    const shared = new Set<number>();
    if (blocks > 0) {
      for (const other of this.q('SELECT id FROM volumes WHERE id != ?').pluck().all(volumeId) as number[]) {
        for (const [i, k] of this.blockMap(other)) if (mine.get(i) === k) shared.add(i);
        if (shared.size === blocks) break;
      }
    }
    const sharedBlocks = shared.size;
    const objects = this.q('SELECT count(*) FROM objects').pluck().get() as number;
    const loggedBlocks = this.q('SELECT count(*) FROM logged WHERE volume_id = ?').pluck().get(volumeId) as number;
    return { blocks, sharedBlocks, objects, loggedBlocks };
  }

  uploadsPerOffset(volumeId: number): Array<{ blockIndex: number; uploads: number }> {
    this.checkOpen();
    const rows = this.q('SELECT block_index, uploads FROM upload_counts WHERE volume_id = ? ORDER BY block_index')
      .raw()
      .all(volumeId) as [number, number][];
    return rows.map(([blockIndex, uploads]) => ({ blockIndex, uploads }));
  }

  globalDeletes(): number {
    this.checkOpen();
    return Number(this.q("SELECT value FROM meta WHERE key = 'deletes'").pluck().get() ?? 0);
  }

  /** Remembers a writer token of this catalog, durably (meta `writer:<token>`): gc deletes a deleted volume's log only when its delete record carries one (restore.ts gcLogs). */
  noteWriter(token: string): void {
    this.checkOpen();
    this.immediate(() => this.q('INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)').run(`writer:${token}`, String(Date.now())), true);
  }

  /** True when `token` wrote for this catalog (noteWriter). */
  isOwnWriter(token: string): boolean {
    this.checkOpen();
    return this.q('SELECT 1 FROM meta WHERE key = ?').pluck().get(`writer:${token}`) !== undefined;
  }

  /** Counts PUTs of the volume's lease object (lease.ts; meta `lease_puts:<volume id>`): stats and `bench reupload` add them, so glidefs's PUT count stays MinIO's. */
  addLeasePuts(volumeId: number, n: number): void {
    this.checkOpen();
    this.q("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value")
      .run(`lease_puts:${volumeId}`, n);
  }

  /** PUTs of the volume's lease object so far (addLeasePuts). */
  leasePuts(volumeId: number): number {
    this.checkOpen();
    return Number(this.q('SELECT value FROM meta WHERE key = ?').pluck().get(`lease_puts:${volumeId}`) ?? 0);
  }
}
