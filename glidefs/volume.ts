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
import { STATE_CLEAN, STATE_DIRTY, STATE_NONE, type VolumeCache } from './cache.js';
import type { Catalog, Owner, VolumeRow } from './catalog.js';
import { runFlush, type FlushOptions, type FlushResult } from './flush.js';

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
  close(): Promise<void>;
  /** Blocks written here and not yet committed by a flush. */
  readonly dirtyBlocks: number;
}

const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

export interface VolumeDeps {
  catalog: Catalog;
  store: ObjectStore;
  prefix: string;
  owner: Owner;
  uploadConcurrency: number;
  onClose: () => void;
  releaseLock: () => void;
}

export class OpenVolume implements Volume {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  readonly volumeId: number;
  readonly blockCount: number;
  /** Block index -> object key, as committed in the catalog. */
  readonly map: Map<number, string>;
  /** Write generation per block: flush only marks a block clean if it did not change. */
  readonly gens: Uint32Array;
  /** Clean cached blocks re-hashed in this process. */
  private readonly verified: Uint8Array;
  private readonly fetches = new Map<number, Promise<void>>();
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
    this.map = deps.catalog.blockMap(row.id);
    this.gens = new Uint32Array(this.blockCount);
    this.verified = new Uint8Array(this.blockCount);
    this.statsTimer = setInterval(() => this.saveGets(), 2000);
    this.statsTimer.unref();
  }

  get dirtyBlocks(): number {
    return this.cache.dirtyCount;
  }

  private checkOpen(): void {
    if (this.closed) throw GlideFsError.CLOSED(`volume '${this.name}'`);
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
      if (this.map.has(i)) return false;
      return true; // a hole: `out` is already zeros
    }
    if (st === STATE_CLEAN && !this.verified[i]) {
      const buf = this.cache.readBlock(i);
      const key = this.map.get(i);
      const ok = key === undefined ? buf.equals(ZERO_BLOCK) : blockHash(buf) === keyHash(key);
      if (!ok) {
        this.cache.setState(i, STATE_NONE); // stale or damaged copy: fetch again
        return key === undefined; // a hole reads as zeros
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
      await this.fetch(i);
      if (this.readCached(i, from, len, out, outOff)) return;
    }
    throw GlideFsError.IO(`block ${i} of volume '${this.name}' could not be cached`);
  }

  /**
   * Brings block i into the cache as a clean, verified copy (one GET per
   * block at a time). A hole is cached as zeros without a GET.
   */
  private fetch(i: number): Promise<void> {
    let p = this.fetches.get(i);
    if (p) return p;
    p = (async () => {
      const key = this.map.get(i);
      if (key === undefined) {
        if (this.cache.state(i) === STATE_NONE) {
          this.cache.write(i, 0, ZERO_BLOCK);
          this.cache.setState(i, STATE_CLEAN);
          this.verified[i] = 1;
        }
        return;
      }
      const data = await this.deps.store.get(key);
      this.unsavedGets++;
      if (data === null) {
        throw GlideFsError.CORRUPT(`object ${key} (block ${i} of volume '${this.name}') is missing from the store`);
      }
      if (data.length !== BLOCK_SIZE || blockHash(data) !== keyHash(key)) {
        throw GlideFsError.CORRUPT(`object ${key} (block ${i} of volume '${this.name}') does not match its hash`);
      }
      if (this.closed) return;
      if (this.cache.state(i) === STATE_NONE && this.map.get(i) === key) {
        this.cache.write(i, 0, data);
        this.cache.setState(i, STATE_CLEAN);
        this.verified[i] = 1;
      }
    })().finally(() => this.fetches.delete(i));
    this.fetches.set(i, p);
    return p;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkOpen();
    if (this.readOnly) throw GlideFsError.READ_ONLY(this.name);
    this.checkRange(offset, data.length);
    if (data.length === 0) return;
    const first = Math.floor(offset / BLOCK_SIZE);
    const last = Math.floor((offset + data.length - 1) / BLOCK_SIZE);
    // A partial block needs its old bytes first (read-modify-write); a block
    // with a GET in flight is waited for so writes apply in order.
    for (let round = 0; ; round++) {
      const waits: Promise<void>[] = [];
      for (let i = first; i <= last; i++) {
        const f = this.fetches.get(i);
        if (f) waits.push(f);
        else if (this.cache.state(i) === STATE_NONE && !this.coversBlock(i, offset, data.length)) waits.push(this.fetch(i));
      }
      if (waits.length === 0) break;
      if (round === 3) throw GlideFsError.IO(`write to volume '${this.name}' could not cache its blocks`);
      await Promise.all(waits);
      this.checkOpen();
    }
    // All synchronous from here: the write applies atomically w.r.t. flush.
    for (let i = first; i <= last; i++) {
      const start = i * BLOCK_SIZE;
      const from = Math.max(offset, start);
      const to = Math.min(offset + data.length, start + BLOCK_SIZE);
      this.cache.write(i, from - start, data.subarray(from - offset, to - offset));
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
      return Promise.resolve({ uploads: 0, uploadedBytes: 0, reuploads: 0, skippedUnchanged: 0, committedBlocks: 0, deletes: 0, durationMs: 0 });
    }
    this.flushing++;
    const run = () => runFlush(this, opts).finally(() => this.flushing--);
    const p = this.flushChain.then(run, run);
    this.flushChain = p.catch(() => undefined);
    return p;
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
    await Promise.allSettled([...this.fetches.values()]);
    this.closed = true;
    clearInterval(this.statsTimer);
    try {
      const n = this.takeGets();
      if (n > 0) this.deps.catalog.addGets(this.volumeId, n);
    } finally {
      try {
        this.cache.close();
      } finally {
        this.deps.releaseLock();
        this.deps.onClose();
      }
    }
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
