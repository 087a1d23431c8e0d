/**
 * Volume: one open volume — reads, writes, flush — over its local cache, the
 * catalog's block map and the object store.
 *
 * Durability contract (also in FORMAT.md, "Dirty-set durability"):
 * - `write()` resolved: the bytes are in the cache file and the block is
 *   marked dirty in the cache's state file, both through the OS page cache
 *   (pwrite, no fsync). They survive a kill -9 of the process; after reopen a
 *   flush uploads them. They are not yet safe from an OS crash/power loss.
 * - `sync()` resolved: every write resolved before the call is on the local
 *   disk (data, then dirty set, fdatasync'd): survives power loss too.
 * - `flush()` resolved: `sync()` was done, and every block dirty when the
 *   flush started is committed in the catalog and its object is in the store
 *   — with the bytes it had at the start, or, when it was rewritten during the
 *   flush, possibly still dirty with the newer bytes (the next flush takes it).
 * - `close()`: waits for a running flush, then syncs the cache and releases
 *   the lock. It does not upload: dirty blocks stay dirty in the cache dir.
 *
 * Reads never return unverified store bytes: a GET is re-hashed against its
 * key (E_CORRUPT on mismatch, E_CORRUPT if the catalog names a missing
 * object); a clean cached block is re-hashed on its first read in a process.
 */
import { GlideFsError } from './errors.js';
import type { ObjectStore } from './object-store.js';
import { BLOCK_SIZE, blockHash, keyHash } from './block-key.js';
import { cacheFullError, STATE_CLEAN, STATE_DIRTY, STATE_NONE, type VolumeCache } from './cache.js';
import type { Catalog, LoggedBlock, Owner, VolumeRow } from './catalog.js';
import { emptyFlushResult, runFlush, type FlushOptions, type FlushResult, type FlushSource } from './flush.js';
import { appendRecord, runCheckpoint, catchUp, type CheckpointResult } from './checkpoint.js';
import { FULL_MASK, sectorMask, type FlushRecord } from './log-record.js';
import { BlockLookup } from './block-lookup.js';
import { materialize, RecordCache, RecordGone, ZERO_HASH } from './volume-log.js';

export type { FlushOptions, FlushProgress, FlushResult } from './flush.js';

export interface Volume {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every resolved write durable on the local disk (not uploaded). */
  sync(): Promise<void>;
  flush(opts?: FlushOptions): Promise<FlushResult>;
  /** Folds the log into whole block objects and writes a checkpoint record (FORMAT.md, "Checkpoint"). */
  checkpoint(): Promise<CheckpointResult>;
  /** Checkpoints when the log is not empty (unless checkpoint.onClose is false), then releases the volume. */
  close(): Promise<void>;
  /** Blocks written here and not yet committed by a flush. */
  readonly dirtyBlocks: number;
  /** Blocks the local cache holds at most (its slots; read-ahead stays well below it). */
  readonly cacheBlocks?: number;
}

const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

/** When a volume checkpoints in the background (FORMAT.md, "Checkpoint"). */
export interface CheckpointPolicy {
  /** Bytes of log records since the last checkpoint (default 64 MiB). */
  maxLogBytes: number;
  /** Records since the last checkpoint (default 10 000). */
  maxLogRecords: number;
  /** Age of the oldest record since the last checkpoint, ms (default 600 000). */
  maxAgeMs: number;
  /** Checkpoint on close when the log is not empty (default true). */
  onClose: boolean;
}

/**
 * A checkpoint uploads every logged block whole (about 128 KiB each); the log
 * costs ~1-2 KiB per fsync. The defaults keep recovery bounded (at most 10 000
 * records / 64 MiB to read) while folding rarely enough that the folds do not
 * dominate what is uploaded.
 */
export const DEFAULT_CHECKPOINT_POLICY: CheckpointPolicy = { maxLogBytes: 64 << 20, maxLogRecords: 10_000, maxAgeMs: 600_000, onClose: true };

export interface VolumeDeps {
  catalog: Catalog;
  store: ObjectStore;
  prefix: string;
  owner: Owner;
  uploadConcurrency: number;
  checkpoint: CheckpointPolicy;
  /** How long a writer waits for flushes to make room in a cache full of dirty blocks before E_CACHE_FULL (ms). */
  cacheWaitMs: number;
  onClose: () => void;
  releaseLock: () => void;
  /** Releases the volume's lease in the store (writable opens; lease.ts), after the last store write of close. */
  releaseLease?: () => Promise<void>;
}

export class OpenVolume implements Volume, FlushSource {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly volumeId: number;
  readonly blockCount: number;
  /** The volume's id in the store (`volumes/<uuid>/log/`). */
  readonly uuid: string;
  /** Block index -> object key, as committed in the catalog: lookups through the layers behind a bounded cache (block-lookup.ts). */
  readonly map: BlockLookup;
  /** Blocks whose newest committed bytes include sectors in the log (catalog `logged` + `log_blocks`). */
  logged: Map<number, LoggedBlock>;
  /** Per block, the 4 KiB sectors written since the last flush (FULL_MASK: rewritten whole, or unknown after a restart). */
  readonly masks: Uint32Array;
  /** Decoded log records, for rebuilding blocks after the cache is lost. */
  readonly records: RecordCache;
  /** Set when another writer took the volume over: every later write/flush/checkpoint fails with it. */
  fenced: Error | null = null;
  /** The last background checkpoint's error, if it failed (it is retried). */
  lastCheckpointError: unknown = null;
  /** Write generation per block: flush only marks a block clean if it did not change. */
  readonly gens: Uint32Array;
  /** Clean cached blocks re-hashed in this process. */
  private readonly verified: Uint8Array;
  private readonly fetches = new Map<number, Promise<Buffer | null>>();
  /** GETs not yet added to the catalog's counter. */
  unsavedGets = 0;
  private flushChain: Promise<unknown> = Promise.resolve();
  private flushing = 0;
  private closed = false;
  private readonly statsTimer: NodeJS.Timeout;

  constructor(
    row: VolumeRow,
    readonly cache: VolumeCache,
    readonly deps: VolumeDeps,
  ) {
    this.name = row.name;
    this.sizeBytes = row.size_bytes;
    this.readOnly = row.snapshot === 1;
    this.volumeId = row.id;
    this.blockCount = row.size_bytes / BLOCK_SIZE;
    this.uuid = row.uuid;
    this.map = new BlockLookup(deps.catalog, row.id);
    this.logged = deps.catalog.loggedBlocks(row.id);
    this.masks = new Uint32Array(this.blockCount);
    for (const i of cache.dirtyIndices()) this.masks[i] = FULL_MASK; // sectors unknown after a restart
    this.records = new RecordCache(deps.store, deps.prefix, row.uuid);
    this.gens = new Uint32Array(this.blockCount);
    this.verified = new Uint8Array(this.blockCount);
    this.statsTimer = setInterval(() => {
      this.saveGets();
      this.maybeCheckpoint();
    }, 2000);
    this.statsTimer.unref();
  }

  get dirtyBlocks(): number {
    return this.cache.dirtyCount;
  }

  get cacheBlocks(): number {
    return this.cache.slotCount;
  }

  private checkOpen(): void {
    if (this.closed) throw GlideFsError.CLOSED(`volume '${this.name}'`);
  }

  private checkFenced(): void {
    if (this.fenced) throw this.fenced;
  }

  /** Hash of block i's committed bytes. */
  committedHash(i: number): string {
    const l = this.logged.get(i);
    if (l) return l.hash;
    const k = this.map.get(i);
    return k === undefined ? ZERO_HASH : keyHash(k);
  }

  private checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0) throw GlideFsError.OUT_OF_RANGE(`offset ${offset} is not a non-negative integer`);
    if (!Number.isSafeInteger(length) || length < 0) throw GlideFsError.OUT_OF_RANGE(`length ${length} is not a non-negative integer`);
    if (offset + length > this.sizeBytes) {
      throw GlideFsError.OUT_OF_RANGE(
        `range ${offset}+${length} ends past the end of volume '${this.name}' (${this.sizeBytes} bytes)`,
      );
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkOpen();
    this.checkRange(offset, length);
    const out = Buffer.alloc(length);
    if (length === 0) return out;
    const first = Math.floor(offset / BLOCK_SIZE);
    const last = Math.floor((offset + length - 1) / BLOCK_SIZE);
    const waits: Promise<void>[] = [];
    for (let i = first; i <= last; i++) {
      const start = i * BLOCK_SIZE;
      const from = Math.max(offset, start) - start;
      const to = Math.min(offset + length, start + BLOCK_SIZE) - start;
      const outOff = start + from - offset;
      if (!this.fetches.has(i) && this.readCached(i, from, to - from, out, outOff)) continue;
      waits.push(this.readSlow(i, from, to - from, out, outOff));
    }
    if (waits.length > 0) await Promise.all(waits);
    return out;
  }

  /** Serves a read from the cache, or from a hole; false if the block must be fetched. */
  private readCached(i: number, from: number, len: number, out: Buffer, outOff: number): boolean {
    const st = this.cache.state(i);
    if (st === STATE_NONE) {
      if (this.map.has(i) || this.logged.has(i)) return false;
      return true; // a hole: `out` is already zeros
    }
    if (st === STATE_CLEAN && !this.verified[i]) {
      const buf = this.cache.readBlock(i);
      const ok = blockHash(buf) === this.committedHash(i);
      if (!ok) {
        this.cache.setState(i, STATE_NONE); // stale or damaged copy: fetch again
        return !this.map.has(i) && !this.logged.has(i); // a hole reads as zeros
      }
      this.verified[i] = 1;
      buf.copy(out, outOff, from, from + len);
      return true;
    }
    this.cache.read(i, from, len, out, outOff);
    return true;
  }

  private async readSlow(i: number, from: number, len: number, out: Buffer, outOff: number): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const uncached = await this.fetch(i);
      if (uncached && this.cache.state(i) === STATE_NONE) {
        uncached.copy(out, outOff, from, from + len); // verified bytes the full cache had no slot for
        return;
      }
      if (this.readCached(i, from, len, out, outOff)) return;
    }
    throw GlideFsError.IO(`block ${i} of volume '${this.name}' could not be cached`);
  }

  /**
   * Brings block i into the cache as a clean, verified copy (one GET per
   * block at a time). A hole is cached as zeros without a GET.
   */
  private fetch(i: number): Promise<Buffer | null> {
    let p = this.fetches.get(i);
    if (p) return p;
    p = (async (): Promise<Buffer | null> => {
      const key = this.map.get(i);
      const logged = this.logged.get(i);
      if (logged) {
        for (let attempt = 0; ; attempt++) {
          const l = this.logged.get(i);
          const base = this.map.get(i);
          if (!l) return null; // folded meanwhile: the caller retries from the block map
          try {
            const data = await materialize(this.deps.store, this.records, `volume '${this.name}'`, i, base, l, () => this.unsavedGets++);
            if (this.closed) return null;
            if (this.cache.state(i) === STATE_NONE && this.logged.get(i) === l && this.map.get(i) === base) {
              if (!this.fill(i, data)) return data;
            }
            return null;
          } catch (err) {
            if (!(err instanceof RecordGone) || attempt >= 3) {
              if (err instanceof RecordGone) throw GlideFsError.CORRUPT(`block ${i} of volume '${this.name}': log record ${err.seq} is missing from the store`);
              throw err;
            }
            this.records.forget(err.seq);
            await this.flushChain; // a checkpoint folded it: its commit changes this.logged
          }
        }
      }
      if (key === undefined) {
        if (this.cache.state(i) === STATE_NONE && !this.fill(i, ZERO_BLOCK)) return ZERO_BLOCK;
        return null;
      }
      const data = await this.deps.store.get(key);
      this.unsavedGets++;
      if (data === null) {
        throw GlideFsError.CORRUPT(`object ${key} (block ${i} of volume '${this.name}') is missing from the store`);
      }
      if (data.length !== BLOCK_SIZE || blockHash(data) !== keyHash(key)) {
        throw GlideFsError.CORRUPT(`object ${key} (block ${i} of volume '${this.name}') does not match its hash`);
      }
      if (this.closed) return null;
      if (this.cache.state(i) === STATE_NONE && this.map.get(i) === key && !this.fill(i, data)) return data;
      return null;
    })().finally(() => this.fetches.delete(i));
    this.fetches.set(i, p);
    return p;
  }

  /**
   * Caches fetched, verified bytes of block i as clean; false when the cache
   * has no slot for them (every slot dirty or pinned): the read is then
   * served from `data` without caching it (the bound holds).
   */
  private fill(i: number, data: Buffer): boolean {
    if (this.cache.availableSlots() < 1) return false;
    this.cache.write(i, 0, data);
    this.cache.setState(i, STATE_CLEAN);
    this.verified[i] = 1;
    return true;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkOpen();
    if (this.readOnly) throw GlideFsError.READ_ONLY(this.name);
    this.checkFenced();
    this.checkRange(offset, data.length);
    if (data.length === 0) return;
    // A write spanning more blocks than half the dirty limit is applied in
    // pieces (each atomic w.r.t. flush), so the bounded cache can take it.
    const piece = Math.max(1, Math.floor(this.cache.dirtyLimit / 2)) * BLOCK_SIZE;
    if (Math.floor((offset + data.length - 1) / BLOCK_SIZE) - Math.floor(offset / BLOCK_SIZE) + 1 > piece / BLOCK_SIZE) {
      let pos = offset;
      while (pos < offset + data.length) {
        const end = Math.min(offset + data.length, (Math.floor(pos / BLOCK_SIZE) * BLOCK_SIZE) + piece);
        await this.writeRange(pos, data.subarray(pos - offset, end - offset));
        pos = end;
      }
      return;
    }
    await this.writeRange(offset, data);
  }

  private async writeRange(offset: number, data: Uint8Array): Promise<void> {
    const first = Math.floor(offset / BLOCK_SIZE);
    const last = Math.floor((offset + data.length - 1) / BLOCK_SIZE);
    // Partial blocks are pinned while the write waits, so their fetched old bytes are not evicted before it applies.
    const partial = [first, last].filter((i, k) => (k === 0 || i !== first) && !this.coversBlock(i, offset, data.length));
    for (const i of partial) this.cache.pin(i);
    try {
      // Room first (backpressure: a cache whose dirty blocks reach the limit
      // waits for a flush), then a partial block needs its old bytes
      // (read-modify-write); a block with a GET in flight is waited for so
      // writes apply in order.
      for (let round = 0; ; round++) {
        let slots = 0;
        let newDirty = 0;
        for (let i = first; i <= last; i++) {
          const st = this.cache.state(i);
          if (st !== STATE_DIRTY) newDirty++;
          if (st === STATE_NONE) slots++;
        }
        if (!this.cache.hasRoom(slots, newDirty)) {
          await this.makeRoom(slots, newDirty);
          this.checkOpen();
          this.checkFenced();
          continue;
        }
        const waits: Promise<unknown>[] = [];
        for (let i = first; i <= last; i++) {
          const f = this.fetches.get(i);
          if (f) waits.push(f);
          else if (this.cache.state(i) === STATE_NONE && !this.coversBlock(i, offset, data.length)) waits.push(this.fetch(i));
        }
        if (waits.length === 0) break;
        if (round === 20) throw GlideFsError.IO(`write to volume '${this.name}' could not cache its blocks`);
        await Promise.all(waits);
        this.checkOpen();
      }
      this.applyWrite(first, last, offset, data);
    } finally {
      for (const i of partial) this.cache.unpin(i);
    }
    // Write-back starts before the limit is reached, so writers seldom wait.
    if (this.cache.dirtyCount >= this.cache.dirtyLimit / 2) this.startPressureFlush();
  }

  private pressure: Promise<void> | null = null;
  private lastPressureError: unknown = null;

  /** One flush at a time on behalf of the cache bound, shared by every waiting writer. */
  private startPressureFlush(): Promise<void> {
    if (this.pressure) return this.pressure;
    if (this.closed || this.fenced) return Promise.resolve();
    this.pressure = this.flush()
      .then(
        () => {
          this.lastPressureError = null;
        },
        async (err) => {
          this.lastPressureError = err;
          await new Promise((r) => setTimeout(r, 100));
        },
      )
      .finally(() => (this.pressure = null));
    return this.pressure;
  }

  /**
   * Waits until `slots` slots can be had and `newDirty` more blocks may be
   * dirty: flushes (uploads) the dirty blocks and waits, again while flushes
   * fail, for at most `cacheWaitMs`; then E_CACHE_FULL naming the last flush
   * error. Nothing is dropped: dirty blocks stay in the cache.
   */
  private async makeRoom(slots: number, newDirty: number): Promise<void> {
    const deadline = Date.now() + this.deps.cacheWaitMs;
    while (!this.cache.hasRoom(slots, newDirty)) {
      this.checkOpen();
      this.checkFenced();
      const flushing = this.startPressureFlush(); // also when the writer will not wait (cacheWaitMs 0): the next write finds room
      if (Date.now() >= deadline) {
        const why = this.lastPressureError ? `; the last flush failed: ${(this.lastPressureError as Error).message ?? String(this.lastPressureError)}` : '';
        throw cacheFullError(
          `volume '${this.name}': the cache holds ${this.cache.dirtyCount} dirty blocks (limit ${this.cache.dirtyLimit} of ${this.cache.slotCount} slots) not yet in the store, and flushes made no room for ${Math.round(this.deps.cacheWaitMs / 1000)} s${why}`,
        );
      }
      const before = this.cache.dirtyCount;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([flushing, new Promise((r) => (timer = setTimeout(r, Math.max(1, deadline - Date.now()))))]);
      clearTimeout(timer);
      // room lacking for pinned clean slots (not dirty ones): a flush cannot help, give the pins time
      if (this.cache.dirtyCount === before && this.cache.dirtyCount + newDirty <= this.cache.dirtyLimit) await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** All synchronous: the write applies atomically w.r.t. flush. */
  private applyWrite(first: number, last: number, offset: number, data: Uint8Array): void {
    for (let i = first; i <= last; i++) {
      const start = i * BLOCK_SIZE;
      const from = Math.max(offset, start);
      const to = Math.min(offset + data.length, start + BLOCK_SIZE);
      this.cache.write(i, from - start, data.subarray(from - offset, to - offset));
      this.masks[i] = (this.masks[i] | sectorMask(from - start, to - start)) >>> 0;
      this.gens[i]++;
      this.cache.setState(i, STATE_DIRTY);
    }
  }

  private coversBlock(i: number, offset: number, length: number): boolean {
    const start = i * BLOCK_SIZE;
    return offset <= start && offset + length >= start + BLOCK_SIZE;
  }

  async sync(): Promise<void> {
    this.checkOpen();
    this.cache.sync();
  }

  flush(opts: FlushOptions = {}): Promise<FlushResult> {
    this.checkOpen();
    if (this.readOnly) {
      return Promise.resolve(emptyFlushResult(0));
    }
    if (this.fenced) return Promise.reject(this.fenced);
    this.flushing++;
    const p = this.chain(async () => {
      try {
        await this.caughtUp();
        return await runFlush(this, opts);
      } finally {
        this.flushing--;
      }
    });
    p.then(() => this.maybeCheckpoint(), () => undefined);
    return p;
  }

  /** Runs `fn` after every flush/checkpoint queued before it. */
  private chain<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.flushChain.then(fn, fn);
    this.flushChain = p.catch(() => undefined);
    return p;
  }

  checkpoint(): Promise<CheckpointResult> {
    this.checkOpen();
    if (this.readOnly) return Promise.resolve({ seq: 0, foldedBlocks: 0, uploads: 0, reuploads: 0, recordBytes: 0, deletedRecords: 0, deletes: 0, durationMs: 0 });
    if (this.fenced) return Promise.reject(this.fenced);
    return this.chain(async () => {
      await this.caughtUp();
      return runCheckpoint(this);
    });
  }

  /** True when the catch-up of the open could not reach the store: the next flush or checkpoint runs it first. */
  private catchUpDeferred = false;

  private async caughtUp(): Promise<void> {
    if (!this.catchUpDeferred) return;
    await catchUp(this);
    this.catchUpDeferred = false;
  }

  /** Replays records past the catalog's log_seq (a commit a crash cut off, or another writer's); writes the first checkpoint of a volume from before the log. */
  recover(): Promise<void> {
    return this.chain(async () => {
      try {
        await catchUp(this);
        this.cache.caughtUp();
      } catch (err) {
        // the store is unreachable now: open anyway (the cache serves reads), catch up before the first append;
        // not while the cache owes a catch-up (an open after a reboot dropped unsynced dirty blocks, FORMAT.md
        // "Reboot"): their acknowledged bytes may be in records the catalog lost with the power (a sectors-only
        // commit is not fsynced), so the open fails until the catch-up succeeds (this open's or a later one's)
        if (!(err instanceof GlideFsError && err.retryable) || this.cache.catchUpOwed) throw err;
        this.catchUpDeferred = true;
      }
    });
  }

  private checkpointQueued = false;

  /** Starts a background checkpoint when the log since the last one passes a threshold of the policy. */
  maybeCheckpoint(): void {
    if (this.closed || this.readOnly || this.fenced || this.checkpointQueued) return;
    let row: VolumeRow | undefined;
    try {
      row = this.deps.catalog.volumeById(this.volumeId);
    } catch {
      return;
    }
    if (!row || row.log_seq <= row.checkpoint_seq) return;
    const pol = this.deps.checkpoint;
    const due =
      row.log_pending_bytes >= pol.maxLogBytes ||
      row.log_seq - row.checkpoint_seq >= pol.maxLogRecords ||
      (row.log_since > 0 && Date.now() - row.log_since >= pol.maxAgeMs);
    if (!due) return;
    this.checkpointQueued = true;
    this.chain(async () => {
      if (this.closed || this.fenced) return undefined;
      await this.caughtUp();
      return runCheckpoint(this);
    })
      .then(
        () => (this.lastCheckpointError = null),
        (err) => (this.lastCheckpointError = err),
      )
      .finally(() => (this.checkpointQueued = false));
  }

  /** Drops a clean cached copy of block i whose committed bytes changed under it (catch-up); dirty blocks stay. */
  invalidate(i: number): void {
    if (this.cache.state(i) === STATE_CLEAN) this.cache.setState(i, STATE_NONE);
    this.verified[i] = 0;
  }

  // FlushSource (flush.ts): what a flush reads and moves of the committed state in memory

  baseKey(i: number): string | undefined {
    return this.map.get(i);
  }

  loggedRecords(i: number): number {
    return this.logged.get(i)?.seqs.length ?? 0;
  }

  returnGets(n: number): void {
    this.unsavedGets += n;
  }

  appendRecord(rec: FlushRecord): Promise<{ seq: number; bytes: number }> {
    return appendRecord(this, rec);
  }

  setCommitted(i: number, key: string | null): void {
    if (key === null) this.map.delete(i);
    else this.map.set(i, key);
    this.logged.delete(i);
  }

  addLogged(i: number, hash: string, seq: number): void {
    const l = this.logged.get(i);
    this.logged.set(i, { hash, seqs: [...(l?.seqs ?? []), seq] });
  }

  /** Marks block i clean after a commit, unless it was written since `gen`. */
  markClean(i: number, gen: number): void {
    if (this.gens[i] !== gen) return;
    this.cache.setState(i, STATE_CLEAN);
    this.verified[i] = 1;
  }

  takeGets(): number {
    const n = this.unsavedGets;
    this.unsavedGets = 0;
    return n;
  }

  private saveGets(): void {
    if (this.unsavedGets === 0 || this.closed) return;
    const n = this.takeGets();
    try {
      this.deps.catalog.addGets(this.volumeId, n);
    } catch {
      this.unsavedGets += n; // catalog busy: try again later
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flushChain;
    let checkpointError: unknown;
    if (!this.readOnly && !this.fenced && this.deps.checkpoint.onClose) {
      const row = this.deps.catalog.volumeById(this.volumeId);
      if (row && row.log_seq > row.checkpoint_seq) {
        await this.checkpoint().catch((err) => (checkpointError = err));
      }
    }
    await this.flushChain;
    await Promise.allSettled([...this.fetches.values()]);
    await this.deps.releaseLease?.();
    this.closed = true;
    clearInterval(this.statsTimer);
    try {
      const n = this.takeGets();
      if (n > 0) this.deps.catalog.addGets(this.volumeId, n);
    } finally {
      try {
        this.cache.close();
      } finally {
        try {
          if (!this.readOnly) this.deps.catalog.dropWriter(this.volumeId, this.deps.owner);
        } finally {
          this.deps.releaseLock();
          this.deps.onClose();
        }
      }
    }
    // A failed checkpoint on close loses nothing (the log holds every flushed byte): the next opener checkpoints.
    if (checkpointError !== undefined) this.lastCheckpointError = checkpointError;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The state of block i in the cache (tests). */
  blockState(i: number): number {
    return this.cache.state(i);
  }
}

export { STATE_CLEAN, STATE_DIRTY, STATE_NONE };
