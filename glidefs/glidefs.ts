/**
 * GlideFs: the block layer's entry point — one catalog, one cache directory,
 * one object store. Creates, opens, forks, snapshots and deletes volumes, runs
 * gc, and reports stats. Formats and rules: FORMAT.md.
 *
 * GlideFs does not own the store it is given: `close()` leaves it open.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import { GlideFsError } from './errors.js';
import type { ObjectStore } from './object-store.js';
import { BLOCK_SIZE, blockKey, blocksPrefix, normalizePrefix, parseBlockKey } from './block-key.js';
import { Catalog, checkVolumeName, newOwner, type Owner, type VolumeRow } from './catalog.js';
import { acquireLock, lockHolder, VolumeCache, volumeCacheDir } from './cache.js';
import { DEFAULT_CHECKPOINT_POLICY, OpenVolume, type CheckpointPolicy, type Volume } from './volume.js';
import { deleteObjects, readRecord } from './volume-log.js';
import type { CheckpointResult } from './checkpoint.js';
import { createVolumeInStore, deleteVolumeLog, forkInStore, writeDeleteRecord } from './volume-ops.js';
import { gcLogs, keysPastCatalog } from './restore.js';
import { leaseAtCatchUp } from './checkpoint.js';
import { isGlideFsError } from './errors.js';
import { checkNotLeased, DEFAULT_LEASE_MS, leaseKey, VolumeLease } from './lease.js';
import { KIND_DELETE, logKey } from './log-record.js';
import { ensureStoreOwner } from './store-marker.js';
import { defaultCacheSize, MAX_VOLUME_BYTES, MIN_CACHE_BYTES } from './cache.js';
import pLimit from 'p-limit';

/** Objects younger than this are never orphans (ms; GlideFsOptions.gcGraceMs, GcOptions.graceMs). */
export const DEFAULT_GC_GRACE_MS = 15 * 60_000;

/** Chains of more layers than this get their single-child sealed layers merged (GlideFsOptions.flattenDepth). */
export const DEFAULT_FLATTEN_DEPTH = 8;

/** A fork or snapshot: the new volume, and what it cost (FORMAT.md, "Layers"). */
export interface ForkInfo extends VolumeInfo {
  /** The whole call, including bringing the source to a checkpoint (ms). */
  durationMs: number;
  /** The catalog transaction alone (ms). */
  catalogMs: number;
  /** Block-map rows copied: 0 (the source's layer is sealed and shared). */
  rowsCopied: number;
  /** The source's checkpoint record the new volume lies on. */
  parentSeq: number;
}

export interface FlattenOptions {
  /** Merge layers in chains deeper than this (default: GlideFsOptions.flattenDepth; 0 = every single-child sealed layer). */
  depth?: number;
  /** Rows moved per catalog transaction (default 4096). */
  stepRows?: number;
  /** Called after each step (tests: run gc in the middle of a flatten). */
  onStep?: () => Promise<void> | void;
}

export interface FlattenResult {
  /** Sealed layers merged into their only child. */
  merged: number;
  /** Rows moved up (the rest were shadowed and released). */
  rowsMoved: number;
  /** Objects deleted (shadowed rows whose refcount fell to zero). */
  deletes: number;
  /** Volumes whose deep chain of live forks was replaced by one copied-up layer. */
  copiedUp: number;
  /** Rows written into copied-up layers (each raised its object's refcount). */
  rowsCopied: number;
  /** Copy-ups dropped because the chain changed under them (a fork of the volume, a delete). */
  abandoned: number;
}

export interface GlideFsOptions {
  store: ObjectStore;
  catalogPath: string;
  cacheDir: string;
  /** Key prefix inside the store (default none): keys are `<prefix>/blocks/...`. */
  prefix?: string;
  /** Parallel PUTs/DELETEs per flush (default 16). */
  uploadConcurrency?: number;
  /** When open volumes checkpoint (FORMAT.md, "Checkpoint"); defaults in DEFAULT_CHECKPOINT_POLICY. */
  checkpoint?: Partial<CheckpointPolicy>;
  /** gc's grace period: objects written less than this long ago are never orphans (ms, default 15 min). */
  gcGraceMs?: number;
  /** A writable open's lease in the store lasts this long without renewal (ms, default 30 000; renewed every third of it; FORMAT.md, "Volume lease"). */
  leaseMs?: number;
  /**
   * Layer chains deeper than this are flattened in the background after a
   * delete or gc (FORMAT.md, "Layers"; default DEFAULT_FLATTEN_DEPTH = 8).
   */
  flattenDepth?: number;
  /**
   * Bytes of local cache per open volume (FORMAT.md, "Cache"): a whole number
   * of 128K blocks is used, at least MIN_CACHE_BYTES (2 MiB). Default:
   * min(8 GiB, 1/4 of the free space of the cache dir's filesystem plus what
   * the volume's cache already holds), computed at each open.
   */
  cacheSize?: number;
  /** How long a writer waits for flushes to make room in a cache full of dirty blocks before E_CACHE_FULL (ms, default 120 000). */
  cacheWaitMs?: number;
}

/** How long a writer waits for room in a cache full of dirty blocks (ms). */
export const DEFAULT_CACHE_WAIT_MS = 120_000;

export interface GcOptions {
  /** Find what gc would delete and list it; delete nothing. */
  dryRun?: boolean;
  /** Overrides GlideFsOptions.gcGraceMs for this run (ms). */
  graceMs?: number;
}

/** One object gc deleted (or, in a dry run, would delete). */
export interface GcItem {
  key: string;
  size: number;
  /** Last write (ms since the epoch, the store's clock). */
  modifiedAt: number;
  /**
   * `unfinished-delete`: released by the catalog, its delete left undone by a dead process. `orphan`: named by nothing.
   * `log-record`: below a checkpoint, or of a volume this catalog deleted. `lease`: of a volume with no log left.
   */
  kind: 'unfinished-delete' | 'orphan' | 'log-record' | 'lease';
}

export interface VolumeInfo {
  name: string;
  sizeBytes: number;
  parent: string | null;
  snapshot: boolean;
  createdAt: number;
}

export interface VolumeStats {
  /** Objects PUT by flushes of this volume. */
  uploads: number;
  uploadedBytes: number;
  /** Uploads at an offset that had been uploaded before (in the volume's family). */
  reuploads: number;
  /** Dirty blocks found unchanged at flush (no upload). */
  skippedUnchanged: number;
  /** Blocks of this volume whose object another volume also references. */
  sharedBlocks: number;
  /** Object GETs made for this volume's reads. */
  gets: number;
  /** Objects deleted by this volume's flushes (refcount fell to zero). */
  deletes: number;
  /** Non-hole blocks in the volume's block map. */
  blocks: number;
  /** Objects the whole catalog names (all volumes; each stored once). */
  objects: number;
  /** Blocks written locally and not yet flushed (in this cache dir). */
  dirtyBlocks: number;
  /** Log records PUT for this volume (flushes, checkpoints, its create/fork record) and their bytes. */
  logPuts: number;
  logBytes: number;
  /** Checkpoints, and the block objects their folds PUT (part of `uploads`). */
  checkpoints: number;
  checkpointUploads: number;
  /** Newest record in the log, and the newest checkpoint. */
  logSeq: number;
  checkpointSeq: number;
  /** Blocks whose newest bytes are sectors in the log. */
  loggedBlocks: number;
  /** Log records deleted (covered by a checkpoint). */
  logDeletes: number;
  /** PUTs of the volume's lease object (acquire, renewals, release; FORMAT.md, "Volume lease"). */
  leasePuts: number;
}

export interface GcResult {
  /** Unreferenced objects deleted (deletes left unfinished by a dead process). */
  deletedObjects: number;
  /** Objects in the store that the catalog does not name. */
  orphansDeleted: number;
  /** Log records below a volume's checkpoint, or of a volume this catalog deleted (FORMAT.md, "gc rule"); in `items` too. */
  logRecordsDeleted: number;
  /** Logs of deleted volumes left alone: no writer of this catalog wrote their delete record. */
  unattributedLogs: number;
  /** Bytes of the objects in `deletedObjects` + `orphansDeleted`. */
  deletedBytes: number;
  /** Unnamed block objects younger than the grace period: left alone. */
  youngSkipped: number;
  /** Deletes that failed (their objects are looked at again by the next gc). */
  failed: number;
  /** True when nothing was deleted: the counts and items are what gc would delete. */
  dryRun: boolean;
  /** Every object counted above, with its size. */
  items: GcItem[];
}

export function volumeInfo(row: VolumeRow): VolumeInfo {
  return { name: row.name, sizeBytes: row.size_bytes, parent: row.parent, snapshot: row.snapshot === 1, createdAt: row.created_at };
}

export class GlideFs {
  readonly store: ObjectStore;
  readonly catalog: Catalog;
  readonly cacheDir: string;
  readonly prefix: string;
  readonly uploadConcurrency: number;
  readonly checkpointPolicy: CheckpointPolicy;
  readonly catalogPath: string;
  readonly gcGraceMs: number;
  readonly leaseMs: number;
  /** GlideFsOptions.cacheSize (undefined: the default, computed per open). */
  readonly cacheSize: number | undefined;
  readonly cacheWaitMs: number;
  readonly flattenDepth: number;
  private readonly owner: Owner = newOwner();
  /** The background flatten (close waits for it). */
  private flattening: Promise<unknown> = Promise.resolve();
  /** Copy-up layers this process is building (gc leaves them alone; a dead builder's are dropped). */
  private readonly building = new Set<number>();
  /** close() has begun: a running copy-up stops at its next step (its layer is dropped) instead of holding close up. */
  private closing = false;
  /** The store id once this catalog is known to own the store prefix. */
  private ownedStoreId: string | null = null;
  private ownerCheck: Promise<string> | null = null;
  private readonly open = new Map<string, OpenVolume>();
  private closed = false;

  private constructor(opts: GlideFsOptions, catalog: Catalog, prefix: string) {
    this.store = opts.store;
    this.catalog = catalog;
    this.cacheDir = opts.cacheDir;
    this.prefix = prefix;
    this.uploadConcurrency = opts.uploadConcurrency ?? 16;
    this.checkpointPolicy = { ...DEFAULT_CHECKPOINT_POLICY, ...(opts.checkpoint ?? {}) };
    this.catalogPath = opts.catalogPath;
    this.gcGraceMs = opts.gcGraceMs ?? DEFAULT_GC_GRACE_MS;
    this.leaseMs = opts.leaseMs ?? DEFAULT_LEASE_MS;
    this.flattenDepth = opts.flattenDepth ?? DEFAULT_FLATTEN_DEPTH;
    this.cacheSize = opts.cacheSize;
    this.cacheWaitMs = opts.cacheWaitMs ?? DEFAULT_CACHE_WAIT_MS;
  }

  static async open(opts: GlideFsOptions): Promise<GlideFs> {
    const prefix = normalizePrefix(opts.prefix);
    if (opts.uploadConcurrency !== undefined && !(Number.isInteger(opts.uploadConcurrency) && opts.uploadConcurrency > 0)) {
      throw GlideFsError.INVALID(`uploadConcurrency must be a positive integer`);
    }
    if (opts.gcGraceMs !== undefined) checkGrace(opts.gcGraceMs);
    if (opts.leaseMs !== undefined && !(Number.isSafeInteger(opts.leaseMs) && opts.leaseMs >= 300)) {
      throw GlideFsError.INVALID(`leaseMs must be an integer of at least 300 (ms), got ${opts.leaseMs}`);
    }
    if (opts.flattenDepth !== undefined && !(Number.isInteger(opts.flattenDepth) && opts.flattenDepth >= 0)) {
      throw GlideFsError.INVALID(`flattenDepth must be a non-negative integer`);
    }
    if (opts.cacheSize !== undefined && !(Number.isSafeInteger(opts.cacheSize) && opts.cacheSize >= MIN_CACHE_BYTES)) {
      throw GlideFsError.BAD_SIZE(`cache size ${opts.cacheSize} is below the minimum of ${MIN_CACHE_BYTES} bytes (2M, 16 blocks)`);
    }
    if (opts.cacheWaitMs !== undefined && !(Number.isSafeInteger(opts.cacheWaitMs) && opts.cacheWaitMs >= 0)) {
      throw GlideFsError.INVALID(`cacheWaitMs must be a non-negative integer (ms)`);
    }
    try {
      mkdirSync(opts.cacheDir, { recursive: true, mode: 0o700 });
      chmodSync(opts.cacheDir, 0o700);
    } catch (err) {
      throw GlideFsError.IO(`cannot create cache directory ${opts.cacheDir}: ${(err as Error).message}`, err);
    }
    return new GlideFs(opts, Catalog.open(opts.catalogPath), prefix);
  }

  private checkOpen(): void {
    if (this.closed) throw GlideFsError.CLOSED('glidefs');
  }

  /**
   * Makes sure this catalog owns the store prefix (FORMAT.md, "Store marker"):
   * creates the marker on first use, else compares ids. Every operation that
   * writes to the store or deletes from it calls this first; E_STORE_OWNED
   * (naming both ids) or E_VERSION otherwise. Checked once per GlideFs.
   */
  async checkStoreOwner(): Promise<string> {
    this.checkOpen();
    if (this.ownedStoreId !== null) return this.ownedStoreId;
    this.ownerCheck ??= ensureStoreOwner(this.store, this.prefix, this.catalog, this.catalogPath).finally(() => (this.ownerCheck = null));
    this.ownedStoreId = await this.ownerCheck;
    return this.ownedStoreId;
  }

  async createVolume(name: string, sizeBytes: number): Promise<VolumeInfo> {
    this.checkOpen();
    checkVolumeName(name);
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
      throw GlideFsError.BAD_SIZE(`volume size must be a positive whole number of bytes, got ${sizeBytes}`);
    }
    if (sizeBytes % BLOCK_SIZE !== 0) {
      throw GlideFsError.BAD_SIZE(`volume size ${sizeBytes} is not a multiple of the block size (${BLOCK_SIZE} bytes = 128K)`);
    }
    if (sizeBytes / BLOCK_SIZE > 0xffffffff) throw GlideFsError.BAD_SIZE(`volume size ${sizeBytes} is too large`);
    checkVolumeSize(sizeBytes);
    if (this.catalog.findVolume(name)) throw GlideFsError.VOLUME_EXISTS(name);
    await this.checkStoreOwner();
    return volumeInfo(await createVolumeInStore(this.opsDeps, name, sizeBytes));
  }

  listVolumes(): VolumeInfo[] {
    this.checkOpen();
    return this.catalog.listVolumes().map(volumeInfo);
  }

  getVolume(name: string): VolumeInfo {
    this.checkOpen();
    return volumeInfo(this.catalog.volume(name));
  }

  /** Opens a volume; one opener per volume per cache dir (E_LOCKED otherwise). */
  async openVolume(name: string): Promise<Volume> {
    return this.openInternal(name);
  }

  private async openInternal(name: string): Promise<OpenVolume> {
    this.checkOpen();
    const row = this.catalog.volume(name);
    if (this.open.has(name)) throw GlideFsError.LOCKED(`volume '${name}' is already open in this process (pid ${process.pid})`);
    const dir = volumeCacheDir(this.cacheDir, row.uuid);
    const release = await acquireLock(dir, name);
    if (this.closed || this.open.has(name)) {
      release();
      this.checkOpen();
      throw GlideFsError.LOCKED(`volume '${name}' is already open in this process (pid ${process.pid})`);
    }
    let cache: VolumeCache;
    const writable = row.snapshot !== 1;
    if (writable) {
      try {
        await this.checkStoreOwner(); // a catalog that is not the store's writes nothing (E_STORE_OWNED)
      } catch (err) {
        release();
        throw err;
      }
    }
    try {
      if (writable) this.catalog.takeWriter(row.id, name, this.owner); // one writer per volume (E_LOCKED)
      cache = VolumeCache.open(dir, row.size_bytes / BLOCK_SIZE, BLOCK_SIZE, Math.floor((this.cacheSize ?? defaultCacheSize(dir)) / BLOCK_SIZE));
    } catch (err) {
      if (writable) this.catalog.dropWriter(row.id, this.owner);
      release();
      throw err;
    }
    const held: { lease: VolumeLease | null } = { lease: null };
    const vol = new OpenVolume(row, cache, {
      catalog: this.catalog,
      store: this.store,
      prefix: this.prefix,
      owner: this.owner,
      uploadConcurrency: this.uploadConcurrency,
      checkpoint: this.checkpointPolicy,
      cacheWaitMs: this.cacheWaitMs,
      releaseLock: release,
      releaseLease: async () => held.lease?.release(),
      onClose: () => this.open.delete(name),
    });
    this.open.set(name, vol);
    if (writable) {
      // one writer per volume across catalogs and machines: the lease in the store, taken first
      // thing in the catch-up (E_LEASED naming the holder; FORMAT.md, "Volume lease")
      const holder = { token: this.owner.token, host: this.owner.host, pid: this.owner.pid, catalog: this.catalogPath };
      leaseAtCatchUp.set(vol, async () => {
        const countPut = () => this.catalog.addLeasePuts(row.id, 1);
        const got = await VolumeLease.acquire(this.store, this.prefix, row.uuid, name, holder, this.leaseMs, countPut, this.catalogPath); // takeWriter above: no live writer of this catalog
        held.lease = got.lease;
        got.lease.start((err) => (vol.fenced ??= err));
        return got.takenOver !== null;
      });
    }
    if (writable) {
      try {
        await vol.recover(); // records past the catalog's log_seq (FORMAT.md, "Flush")
      } catch (err) {
        if (isGlideFsError(err, 'E_LEASED')) vol.fenced = err; // refused: its close writes nothing to the store
        await vol.close().catch(() => undefined);
        throw err;
      }
    }
    return vol;
  }

  /**
   * Brings a fork source to a checkpoint with nothing logged (FORMAT.md,
   * "Layers"): open here, it is flushed and checkpointed; held by nobody, it
   * is opened, flushed, checkpointed and closed (only when it has dirty
   * blocks here or log records since its checkpoint); held by another
   * process, that process must checkpoint it (the device daemon does on
   * SIGUSR2; `glidekv fork` asks it) — the fork then finds it ready or fails
   * with E_BUSY. A snapshot is always at its checkpoint.
   */
  private async settle(name: string): Promise<void> {
    const open = this.open.get(name);
    if (open) {
      await open.flush();
      await open.checkpoint();
      return;
    }
    const row = this.catalog.volume(name);
    if (row.snapshot === 1) return;
    const dir = volumeCacheDir(this.cacheDir, row.uuid);
    if (lockHolder(dir) !== null || this.catalog.writerOf(row.id) !== null) return;
    const clean = VolumeCache.countDirty(dir) === 0 && row.log_seq === row.checkpoint_seq && row.log_seq > 0 && !this.catalog.hasLogged(row.id);
    if (clean) return;
    const vol = await this.openInternal(name);
    try {
      await vol.flush();
      await vol.checkpoint();
    } finally {
      await vol.close();
    }
  }

  /**
   * A writable fork of `src`, in constant time (FORMAT.md, "Layers"): the
   * source's top layer is sealed and shared, both get a new empty top layer;
   * no block-map row is copied, no object copied or uploaded.
   */
  async fork(src: string, dst: string): Promise<ForkInfo> {
    return this.forkAs(src, dst, false);
  }

  /** A read-only fork of `src` (same cost as a fork). */
  async snapshot(src: string, dst: string): Promise<ForkInfo> {
    return this.forkAs(src, dst, true);
  }

  private async forkAs(src: string, dst: string, snapshot: boolean): Promise<ForkInfo> {
    const t0 = performance.now();
    this.checkOpen();
    checkVolumeName(dst);
    this.catalog.volume(src);
    if (this.catalog.findVolume(dst)) throw GlideFsError.VOLUME_EXISTS(dst);
    await this.checkStoreOwner();
    const out = await forkInStore(this.opsDeps, src, dst, snapshot, () => this.settle(src));
    return { ...volumeInfo(out.row), durationMs: performance.now() - t0, catalogMs: out.catalogMs, rowsCopied: out.rowsCopied, parentSeq: out.parentSeq };
  }

  /**
   * Merges sealed layers that no volume points at and that have exactly one
   * child layer into that child, for chains deeper than `depth` (FORMAT.md,
   * "Layers"), a bounded number of rows per transaction: every step keeps
   * every volume's view, so reads, writes, forks and gc go on beside it.
   * Objects only shadowed rows named are deleted after each step. Then
   * volumes whose chain is still deeper than `depth` (live forks of forks:
   * sealed layers with two children) get a copied-up layer (`copyUp`).
   */
  async flatten(opts: FlattenOptions = {}): Promise<FlattenResult> {
    this.checkOpen();
    // one flatten at a time in this process (a background one waits; two copy-ups of one volume would race)
    const run = this.flattening.then(() => this.flattenNow(opts));
    this.flattening = run.catch(() => undefined);
    return run;
  }

  private async flattenNow(opts: FlattenOptions): Promise<FlattenResult> {
    this.checkOpen();
    const depth = opts.depth ?? this.flattenDepth;
    const stepRows = opts.stepRows ?? 4096;
    const out: FlattenResult = { merged: 0, rowsMoved: 0, deletes: 0, copiedUp: 0, rowsCopied: 0, abandoned: 0 };
    const skip = new Set<number>();
    for (;;) {
      const c = this.catalog.flattenCandidates().find((x) => !skip.has(x.layer) && this.catalog.depthBelow(x.child) > depth);
      if (!c) break;
      skip.add(c.layer);
      await this.checkStoreOwner();
      for (;;) {
        const step = this.catalog.mergeStep(c.layer, c.child, stepRows, this.owner);
        out.rowsMoved += step.moved;
        out.deletes += await deleteObjects(this, step.toDelete, null);
        if (opts.onStep) await opts.onStep();
        if (step.done) break;
        await new Promise((r) => setImmediate(r));
        this.checkOpen();
      }
      if (this.catalog.flattenCandidates().every((x) => x.layer !== c.layer)) out.merged++;
    }
    // copy-up: live forks of forks leave sealed layers with two children, which nothing above merges
    const tried = new Map<number, number>();
    for (;;) {
      const c = this.closing ? undefined : this.catalog.deepVolumes(depth).find((x) => (tried.get(x.volume) ?? 0) < 2);
      if (!c) return out;
      tried.set(c.volume, (tried.get(c.volume) ?? 0) + 1);
      await this.checkStoreOwner();
      await this.copyUp(c.volume, c.top, c.parent, stepRows, opts.onStep, out);
    }
  }

  /**
   * Builds a new sealed layer M with the visible rows of the chain from
   * `parent` down, `stepRows` block indexes per transaction, then points `top`
   * at M in one transaction (FORMAT.md, "Layers"). Sealed layers never change,
   * so writes to the top go on meanwhile; if the chain under the top changed
   * (a fork sealed it, a delete) M is dropped instead.
   */
  private async copyUp(volume: number, top: number, parent: number, stepRows: number, onStep: FlattenOptions['onStep'], out: FlattenResult): Promise<void> {
    const m = this.catalog.copyUpBegin(this.owner);
    this.building.add(m);
    let switched = false;
    try {
      let after = -1;
      for (;;) {
        const step = this.catalog.copyUpStep(m, parent, after, stepRows);
        if (step.gone) break;
        out.rowsCopied += step.rows;
        after = step.next;
        if (onStep) await onStep();
        if (step.done) {
          const sw = this.catalog.copyUpSwitch(m, volume, top, parent, this.owner);
          out.deletes += await deleteObjects(this, sw.toDelete, null);
          switched = sw.switched;
          break;
        }
        await new Promise((r) => setImmediate(r));
        this.checkOpen();
        if (this.closing) break;
      }
    } finally {
      this.building.delete(m);
      if (!switched) {
        out.abandoned++;
        out.deletes += await deleteObjects(this, this.catalog.copyUpAbandon(m, this.owner), null);
      }
    }
    if (switched) out.copiedUp++;
  }

  /**
   * Deletes checkpoint records that were kept for a layer (`before`) and no
   * longer are: of deleted volumes, their whole remaining log (tombstone
   * last, unless another of their records is still kept); of live volumes,
   * the ones below their checkpoint. Failures are left to log gc.
   */
  private async deleteFreedRecords(before: Set<string>): Promise<void> {
    const after = this.catalog.keptRecords();
    const freed = new Map<string, number[]>();
    for (const k of before) {
      if (after.has(k)) continue;
      const [uuid, seq] = k.split(':');
      const l = freed.get(uuid) ?? [];
      l.push(Number(seq));
      freed.set(uuid, l);
    }
    const live = new Map(this.catalog.listVolumes().map((v) => [v.uuid, v]));
    for (const [uuid, seqs] of freed) {
      const v = live.get(uuid);
      try {
        if (!v) await deleteVolumeLog(this.opsDeps, uuid);
        else for (const seq of seqs) if (seq < v.checkpoint_seq) await this.store.delete(logKey(this.prefix, uuid, seq));
      } catch {
        // left to log gc
      }
    }
  }

  /** Starts a flatten in the background (after a delete or gc); close() waits for it. */
  private flattenSoon(): void {
    this.flattening = this.flattening.then(() => (this.closed ? undefined : this.flattenNow({}))).catch(() => undefined);
  }

  /** Deletes a volume: releases its refcounts, deletes objects no one references, drops its cache. */
  async deleteVolume(name: string): Promise<void> {
    this.checkOpen();
    const row = this.catalog.volume(name);
    if (this.open.has(name)) throw GlideFsError.BUSY(`volume '${name}' is open in this process; close it first`);
    const dir = volumeCacheDir(this.cacheDir, row.uuid);
    const holder = lockHolder(dir);
    if (holder !== null) throw GlideFsError.BUSY(`volume '${name}' is open in another process (pid ${holder})`);
    const writer = this.catalog.writerOf(row.id);
    if (writer !== null) throw GlideFsError.BUSY(`volume '${name}' is open for writing by pid ${writer.pid} on host ${writer.host}`);
    await this.checkStoreOwner();
    // the delete holds the writer row (dropped by the catalog transaction): no writer of this catalog meanwhile,
    // so a lease held through this catalog (a close whose release did not land) is not a live writer's
    this.catalog.takeWriter(row.id, name, this.owner);
    try {
      await checkNotLeased(this.store, this.prefix, row.uuid, name, this.owner.token, this.catalogPath);
      this.catalog.noteWriter(this.owner.token); // gc attributes the deleted volume's log to this catalog by it
      await writeDeleteRecord(this.opsDeps, row); // catches up records past the catalog's log_seq first
    } catch (err) {
      this.catalog.dropWriter(row.id, this.owner);
      throw err;
    }
    const keptBefore = this.catalog.keptRecords();
    const { toDelete } = this.catalog.deleteVolume(name, this.owner);
    // the volume is deleted (tombstone in the store, row gone): what follows is cleanup, and what a store
    // fault leaves of it gc finishes (objects left are orphans; the log of a deleted volume is gc's)
    VolumeCache.remove(dir);
    await deleteObjects(this, toDelete, null);
    await deleteVolumeLog(this.opsDeps, row.uuid).catch(() => undefined);
    await this.store.delete(leaseKey(this.prefix, row.uuid)).catch(() => undefined); // a leftover is removed by gc
    await this.deleteFreedRecords(keptBefore);
    this.flattenSoon();
  }

  /** Folds a volume's log into block objects and writes a checkpoint (opens it unless it is open here). */
  async checkpoint(name: string): Promise<CheckpointResult> {
    this.checkOpen();
    const open = this.open.get(name);
    if (open) return open.checkpoint();
    const vol = await this.openInternal(name);
    try {
      return await vol.checkpoint();
    } finally {
      await vol.close();
    }
  }

  get deps() {
    return { store: this.store, catalog: this.catalog, uploadConcurrency: this.uploadConcurrency };
  }

  private get opsDeps() {
    return { store: this.store, catalog: this.catalog, prefix: this.prefix, owner: this.owner, uploadConcurrency: this.uploadConcurrency };
  }

  /**
   * Deletes what the store holds and no volume needs (FORMAT.md, "gc rule"):
   * objects the catalog released whose delete a dead process left unfinished,
   * and orphans — block-shaped keys under `<prefix>/blocks/` that the catalog
   * names neither as an object nor in a pending or deleting row, and that were
   * written at least the grace period ago. Only the store's owner catalog runs
   * it (E_STORE_OWNED otherwise). Counts only objects that existed when gc
   * deleted them. `dryRun` lists them (with sizes) and deletes nothing.
   */
  async gc(opts: GcOptions = {}): Promise<GcResult> {
    this.checkOpen();
    const graceMs = opts.graceMs ?? this.gcGraceMs;
    checkGrace(graceMs);
    const dryRun = opts.dryRun === true;
    await this.checkStoreOwner();
    const limit = pLimit(this.uploadConcurrency);
    const items: GcItem[] = [];
    let failed = 0;

    // 1. Deletes left unfinished by dead processes (released objects: no grace needed), after
    // dropping copy-up layers a dead process left half built (their rows release their objects).
    if (!dryRun) await deleteObjects(this, this.catalog.dropStaleBuilds(this.owner, this.building), null);
    const stale = dryRun ? this.catalog.staleDeletes() : this.catalog.adoptStale(this.owner);
    const unfinished = await this.deleteExisting(stale, 'unfinished-delete', dryRun, limit);
    failed += unfinished.failed;
    items.push(...unfinished.items);

    // 2. Orphans: block keys nothing names, old enough.
    const listed: string[] = [];
    for await (const key of this.store.list(blocksPrefix(this.prefix))) {
      if (parseBlockKey(this.prefix, key)) listed.push(key);
    }
    const cutoff = Date.now() - graceMs;
    // `unapplied` notes of a record that never landed (its PUT failed, or a crash came before it) and
    // were written at least the grace period ago (a dead process's PUT may still land within it):
    // dropped, so their keys are ordinary orphans. A record that is in the store keeps its notes.
    if (!dryRun) await this.dropUnlandedNotes(cutoff, limit);
    // keys named by log records the catalog has not applied yet (a commit cut off): the next catch-up names them
    const unapplied = await keysPastCatalog(this.opsDeps);
    const candidates = this.catalog.unnamedKeys(listed).filter((k) => !unapplied.has(k));
    const heads = await Promise.all(candidates.map((key) => limit(async () => ({ key, head: await this.store.head(key) }))));
    let youngSkipped = 0;
    const old: string[] = [];
    for (const { key, head } of heads) {
      if (head === null) continue; // deleted meanwhile (by a flush): nothing to do, nothing to count
      if (head.modifiedAt > cutoff) youngSkipped++;
      else old.push(key);
    }
    // claimOrphans re-checks each key in a transaction and takes its deleting row, so a flush
    // that names it meanwhile keeps it, and one that wants to PUT it waits for the row to go.
    const claimed = dryRun ? this.catalog.unnamedKeys(old) : this.catalog.claimOrphans(old, this.owner);
    const orphans = await this.deleteExisting(claimed, 'orphan', dryRun, limit);
    failed += orphans.failed;
    items.push(...orphans.items);

    if (!dryRun) this.catalog.pruneKeptRecords();
    const deletedBytes = items.reduce((n, i) => n + i.size, 0);
    const logs = await gcLogs(this.opsDeps, { dryRun }); // log records and leases (FORMAT.md, "gc rule")
    const logRecordsDeleted = logs.records;
    items.push(...logs.items);
    if (!dryRun) this.flattenSoon();
    return {
      deletedObjects: unfinished.items.length,
      orphansDeleted: orphans.items.length,
      logRecordsDeleted,
      deletedBytes,
      unattributedLogs: logs.unattributed,
      youngSkipped,
      failed,
      dryRun,
      items,
    };
  }

  /**
   * gc step 2 (FORMAT.md, "gc rule"): drops the `unapplied` notes noted
   * before `cutoff` of keys the record at their (volume, seq) does not name:
   * all of them when the store holds no record there (its PUT failed or was
   * never sent), the others when it holds one (the next catch-up applies it).
   */
  private async dropUnlandedNotes(cutoff: number, limit: ReturnType<typeof pLimit>): Promise<void> {
    const old = this.catalog.unappliedRecords().filter((r) => r.notedAt <= cutoff);
    await Promise.all(
      old.map((r) =>
        limit(async () => {
          const got = await readRecord(this.store, this.prefix, r.uuid, r.seq);
          const keep = new Set<string>();
          if (got !== null && got.rec.kind !== KIND_DELETE) for (const [i, h] of got.rec.blocks) if (h !== null) keep.add(blockKey(this.prefix, i, h));
          this.catalog.dropUnlanded(r.volumeId, r.seq, cutoff, keep);
        }),
      ),
    );
  }

  /**
   * HEADs each key (held in a `deleting` row unless dry) and DELETEs the ones
   * that exist. Rows are dropped; only objects that existed count as deletes.
   */
  private async deleteExisting(
    keys: string[],
    kind: GcItem['kind'],
    dryRun: boolean,
    limit: ReturnType<typeof pLimit>,
  ): Promise<{ items: GcItem[]; failed: number }> {
    const items: GcItem[] = [];
    const absent: string[] = [];
    const failedKeys: string[] = [];
    await Promise.all(
      keys.map((key) =>
        limit(async () => {
          try {
            const head = await this.store.head(key);
            if (head === null) return void absent.push(key);
            if (!dryRun) await this.store.delete(key);
            items.push({ key, size: head.size, modifiedAt: head.modifiedAt, kind });
          } catch {
            failedKeys.push(key);
          }
        }),
      ),
    );
    if (!dryRun) {
      this.catalog.finishDeletes(
        items.map((i) => i.key),
        null,
      );
      this.catalog.dropDeleting([...absent, ...failedKeys]);
    }
    items.sort((a, b) => (a.key < b.key ? -1 : 1));
    return { items, failed: failedKeys.length };
  }

  stats(name: string): VolumeStats {
    this.checkOpen();
    const row = this.catalog.volume(name);
    const counts = this.catalog.volumeCounts(row.id);
    const open = this.open.get(name);
    const dirtyBlocks = open ? open.dirtyBlocks : VolumeCache.countDirty(volumeCacheDir(this.cacheDir, row.uuid));
    return {
      uploads: row.uploads,
      uploadedBytes: row.uploaded_bytes,
      reuploads: row.reuploads,
      skippedUnchanged: row.skipped_unchanged,
      sharedBlocks: counts.sharedBlocks,
      gets: row.gets + (open ? open.unsavedGets : 0),
      deletes: row.deletes,
      blocks: counts.blocks,
      objects: counts.objects,
      dirtyBlocks,
      logPuts: row.log_puts,
      logBytes: row.log_bytes,
      checkpoints: row.checkpoints,
      checkpointUploads: row.checkpoint_uploads,
      logSeq: row.log_seq,
      checkpointSeq: row.checkpoint_seq,
      loggedBlocks: counts.loggedBlocks,
      logDeletes: row.log_deletes,
      leasePuts: this.catalog.leasePuts(row.id),
    };
  }

  uploadsPerOffset(name: string): Array<{ blockIndex: number; uploads: number }> {
    this.checkOpen();
    return this.catalog.uploadsPerOffset(this.catalog.volume(name).id);
  }

  /** Closes every volume opened through this instance, then the catalog. The store stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closing = true;
    await this.flattening;
    if (this.closed) return;
    const errors: unknown[] = [];
    for (const v of [...this.open.values()]) {
      try {
        await v.close();
      } catch (err) {
        errors.push(err);
      }
    }
    this.closed = true;
    this.catalog.close();
    if (errors.length > 0) throw errors[0];
  }
}

function checkGrace(ms: number): void {
  if (!Number.isFinite(ms) || ms < 0) throw GlideFsError.INVALID(`gc grace period must be a non-negative number of ms, got ${ms}`);
}

/** E_BAD_SIZE above MAX_VOLUME_BYTES, naming the limit and why. */
export function checkVolumeSize(sizeBytes: number): void {
  if (sizeBytes > MAX_VOLUME_BYTES) {
    throw GlideFsError.BAD_SIZE(
      `volume size ${sizeBytes} is larger than the limit of ${MAX_VOLUME_BYTES} bytes (8T): the local cache keeps a sparse file as large as the volume (ext4 ends files at 16 TiB) and one state byte per 128K block in memory`,
    );
  }
}
