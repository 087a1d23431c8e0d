/**
 * BlobStore: the content-addressed home of separated values.
 *
 * ## Why
 * Values of `valueThreshold` bytes or more live outside the log, one file per
 * distinct content: `<dataDir>/values/blob-<blake3-128 hex>`. The log record
 * then carries only the 16-byte hash (a pointer), so reclaim moves 16 bytes
 * and never the value; on GlideFS, where moving bytes means uploading them
 * again, that keeps each large value uploaded about once. Equal values share
 * one blob across keys and namespaces.
 *
 * ## Files (see src/FORMAT.md, "Value separation")
 *   values/blob-<32 hex>              the value's bytes, nothing else; the name
 *                                     is blake3(value) truncated to 16 bytes
 *   values/tmp-<32 hex>-<pid>-<seq>   a blob being written; never read; any
 *                                     temp file not being written right now is
 *                                     garbage (`sweep` removes it)
 *
 * ## Invariants
 *  I1 A file named `blob-<h>` holds bytes that hashed to `h` when written: it
 *     appears only by rename(2) of a temp file whose bytes were fsynced first.
 *     A crash at any point leaves either no `blob-<h>` or a whole one, plus
 *     perhaps a temp file. (Bit rot afterwards is caught by I4.)
 *  I2 `write()` resolves only after the file fsync, the rename AND the fsync of
 *     `values/`. The engine appends the pointer only after that, so no crash
 *     can leave a durable pointer to a blob whose name is not durable.
 *  I3 A blob is deleted only when (a) its refcount is 0, (b) it is not pinned,
 *     and (c) the dereference that brought it to 0 was recorded before an
 *     fsync of the log that has completed (epochs, below). Creation and
 *     deletion of one hash run under one per-hash lock (KeyedLock), so a
 *     `write` that reuses a blob and a `collect` that deletes it never
 *     interleave.
 *  I4 Every read re-hashes the bytes. A mismatch or a missing file is
 *     E_CORRUPT naming the blob; other blobs are unaffected.
 *
 * ## Refcounts, pins, epochs
 * Refcounts live in memory only; the engine rebuilds them on open from its
 * keydir (`rebuild`), and keeps them by `ref` (after appending a pointer) and
 * `unref` (after appending the record that drops one). A pin is a transient
 * hold that is not a reference: `write` returns its blob pinned, so between
 * "blob is durable" and "pointer appended + ref" nobody can delete it, even if
 * the last other key pointing at the same content is deleted and collected in
 * that window (the GC race). `read` pins for its own duration, so a get that
 * found a pointer never races the deletion of its blob.
 *
 * When a count falls to 0 the blob becomes a candidate tagged with the current
 * epoch. The engine calls `beginSync()` right before it starts a log fsync
 * (the epoch advances; later unrefs get the next tag), and after that fsync
 * succeeded, `collect(token)`: candidates tagged <= token, still at 0 and not
 * pinned, are deleted. A dereference appended after the fsync started is thus
 * never collected by that fsync. A candidate that is pinned at collect time
 * stays a candidate for the next collect; one that was re-referenced leaves
 * the candidate set.
 *
 * ## Orphans
 * A crash between `write` and the pointer append, or a delete that never got
 * collected, leaves a blob no pointer references. `sweep()` (on open, after
 * `rebuild`, and on demand) deletes every unreferenced, unpinned blob and
 * every stale temp file.
 *
 * ## Directory fsync failures
 * A failed fsync of `values/` is never swallowed: it raises `onWarning` and
 * `stats().dirFsyncFailures`. When the file system cannot fsync directories at
 * all (EINVAL/ENOTSUP), the write still succeeds (nothing better is possible);
 * any other error fails the write with E_IO, and a later write that reuses any
 * blob first fsyncs the directory again.
 *
 * ## Large values
 * The value is hashed in one pass over the caller's buffer and written with
 * `subarray` chunks (no copies): at most `chunkBytes` per write call.
 */
import { join } from 'node:path';
import blake3 from 'blake3';
import { nodeBlobIo, type BlobFile, type BlobIo } from './blob-io.js';
import { KeyedLock } from '../lib/keyed-lock.js';
import { KvError } from './errors.js';

export const BLOB_HASH_BYTES = 16;
export const BLOB_DIR = 'values';
const BLOB_RE = /^blob-([0-9a-f]{32})$/;
const TMP_PREFIX = 'tmp-';
/** Errors meaning "this file system does not fsync directories". */
const DIR_FSYNC_UNSUPPORTED = new Set(['EINVAL', 'ENOTSUP', 'EOPNOTSUPP']);

export interface BlobStoreOptions {
  /** The file-system seam (fault injection in tests). Default: node:fs. */
  io?: BlobIo;
  /** Called for every surfaced, non-fatal problem. Default: process.emitWarning. */
  onWarning?: (message: string, cause?: unknown) => void;
  /** Largest single write(2) of a value. Default 4 MiB. */
  chunkBytes?: number;
}

export interface BlobStats {
  /** Blob files present. */
  blobs: number;
  /** Sum of their sizes. */
  blobBytes: number;
  /** Blobs and temp files removed by `sweep` since open. */
  orphansSwept: number;
  /** Failed fsyncs of `values/` since open. */
  dirFsyncFailures: number;
  /** Hashes currently pinned (writes awaiting their pointer, reads). */
  pinned: number;
  /** Blobs written (new files) / bytes written since open. */
  written: number;
  writtenBytes: number;
  /** Writes that found the blob already present and wrote nothing. */
  dedupHits: number;
  /** Blobs deleted by `collect` since open. */
  collected: number;
  /** Blobs at refcount 0 awaiting `collect`. */
  candidates: number;
}

/** A blob that `write` made durable, pinned until `release()`. */
export interface PinnedBlob {
  readonly hash: Buffer;
  readonly hex: string;
  readonly size: number;
  /**
   * Drops the pin. Call it after `ref(hash)` once the pointer is appended, or
   * without `ref` if the append failed. Idempotent.
   */
  release(): void;
}

export class BlobStore {
  /** Absolute path of `values/`. */
  readonly dir: string;
  private readonly io: BlobIo;
  private readonly warn: (message: string, cause?: unknown) => void;
  private readonly chunkBytes: number;
  private readonly locks = new KeyedLock();
  private readonly refs = new Map<string, number>();
  private readonly pins = new Map<string, number>();
  /** hex -> epoch of the unref (or release) that left it at 0. */
  private readonly candidates = new Map<string, number>();
  /** hex -> size of every blob file known to exist. */
  private readonly sizes = new Map<string, number>();
  /** Temp file names being written right now (never swept). */
  private readonly inflight = new Set<string>();
  private epoch = 1;
  private tmpSeq = 0;
  private renameGen = 0;
  private syncedGen = 0;
  private blobBytes = 0;
  private closed = false;
  private readonly counters = {
    orphansSwept: 0, dirFsyncFailures: 0, written: 0, writtenBytes: 0, dedupHits: 0, collected: 0,
  };

  private constructor(dir: string, opts: BlobStoreOptions) {
    this.dir = dir;
    this.io = opts.io ?? nodeBlobIo;
    this.warn = opts.onWarning ?? ((m) => process.emitWarning(m, { code: 'GLIDEKV_BLOB' }));
    this.chunkBytes = opts.chunkBytes ?? 4 << 20;
  }

  /**
   * Opens (creating if needed) `<dataDir>/values`, learns the blobs present,
   * and fsyncs the directory once (a previous process may have crashed
   * between a rename and its directory fsync). Deletes nothing: call
   * `rebuild` and then `sweep`. Refcounts start at 0.
   * Throws E_IO when the directory cannot be created or listed.
   */
  static async open(dataDir: string, opts: BlobStoreOptions = {}): Promise<BlobStore> {
    const store = new BlobStore(join(dataDir, BLOB_DIR), opts);
    try {
      await store.io.mkdirp(store.dir);
      const names = await store.io.list(store.dir);
      const hexes = names.map((n) => BLOB_RE.exec(n)?.[1]).filter((h): h is string => h !== undefined);
      for (let i = 0; i < hexes.length; i += 64) {
        await Promise.all(hexes.slice(i, i + 64).map(async (hex) => {
          const size = await store.io.size(store.pathOf(hex));
          if (size !== null) store.setSize(hex, size);
        }));
      }
    } catch (err) {
      throw ioError(`opening blob store ${store.dir}`, err);
    }
    await store.syncDir();
    return store;
  }

  /** blake3-128 of `value`: the blob's name. */
  static hashOf(value: Uint8Array): Buffer {
    return blake3.hash(value, { length: BLOB_HASH_BYTES }) as Buffer;
  }

  /** Path of the blob file for a hash. */
  pathOf(hash: Uint8Array | string): string {
    return join(this.dir, `blob-${toHex(hash)}`);
  }

  /**
   * Makes `value` durably present as a blob and returns it PINNED.
   * When it resolves: the file `blob-<hash>` holds exactly `value`, was fsynced,
   * renamed into place, and `values/` was fsynced (I2); the blob cannot be
   * deleted until `release()`. If a blob of that hash and size exists already,
   * nothing is written (dedup). The pin is taken synchronously, before the
   * first await, so a `collect` or `sweep` that starts later sees it.
   * Throws E_IO (cause: the errno error, e.g. ENOSPC) when writing fails; the
   * temp file is removed (or left for `sweep` if even that fails), no blob
   * appears under its final name, and no pin is left behind.
   */
  async write(value: Uint8Array): Promise<PinnedBlob> {
    this.checkOpen();
    const hash = BlobStore.hashOf(value);
    const hex = hash.toString('hex');
    const release = this.pin(hex);
    try {
      await this.locks.run(hex, () => this.materialize(hex, value));
    } catch (err) {
      release();
      throw err;
    }
    return { hash, hex, size: value.length, release };
  }

  /**
   * Pins a hash until the returned function is called (idempotent). A pinned
   * blob is never deleted by `collect` or `sweep`. `write` and `read` pin on
   * their own; use this to hold a pointer across awaits elsewhere.
   */
  pin(hash: Uint8Array | string): () => void {
    const hex = toHex(hash);
    this.pins.set(hex, (this.pins.get(hex) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.pins.get(hex) ?? 1) - 1;
      if (n > 0) {
        this.pins.set(hex, n);
        return;
      }
      this.pins.delete(hex);
      // Unpinned and unreferenced (e.g. the pointer append failed): it may go,
      // but only through collect, like any dereference.
      if ((this.refs.get(hex) ?? 0) === 0 && this.sizes.has(hex) && !this.candidates.has(hex)) {
        this.candidates.set(hex, this.epoch);
      }
    };
  }

  /** Counts one more pointer to `hash`. Call after appending the pointer record. */
  ref(hash: Uint8Array | string): void {
    const hex = toHex(hash);
    this.refs.set(hex, (this.refs.get(hex) ?? 0) + 1);
    this.candidates.delete(hex);
  }

  /**
   * Counts one pointer less. Call after appending the record that drops it
   * (tombstone, overwrite, namespace drop). At 0 the blob becomes a deletion
   * candidate of the current epoch; it is deleted only by a later
   * `collect(token)` with token >= that epoch. Unref below 0 is a bug: it
   * throws a plain Error and changes nothing.
   */
  unref(hash: Uint8Array | string): void {
    const hex = toHex(hash);
    const n = this.refs.get(hex) ?? 0;
    if (n <= 0) throw new Error(`blob ${hex}: unref below zero`);
    if (n > 1) {
      this.refs.set(hex, n - 1);
      return;
    }
    this.refs.delete(hex);
    this.candidates.set(hex, this.epoch);
  }

  /** Current refcount of a hash. */
  refCount(hash: Uint8Array | string): number {
    return this.refs.get(toHex(hash)) ?? 0;
  }

  /**
   * Replaces all refcounts by one count per element of `pointers` (each live
   * pointer of the keydir, duplicates counted). Call once after open, before
   * any write. Returns the referenced hashes that have no blob file: those
   * pointers are dangling (E_CORRUPT on read); the engine should report them.
   */
  rebuild(pointers: Iterable<Uint8Array | string>): { missing: string[] } {
    this.refs.clear();
    this.candidates.clear();
    for (const p of pointers) {
      const hex = toHex(p);
      this.refs.set(hex, (this.refs.get(hex) ?? 0) + 1);
    }
    const missing = [...this.refs.keys()].filter((hex) => !this.sizes.has(hex));
    return { missing };
  }

  /**
   * Call right before starting a log fsync. Returns the token to pass to
   * `collect` once that fsync has succeeded. Every unref made before this call
   * (i.e. whose record was appended before the fsync began) has a tag <= the
   * token; every later unref has a greater tag.
   */
  beginSync(): number {
    return this.epoch++;
  }

  /**
   * Deletes the candidates tagged <= `token` that are still at refcount 0 and
   * unpinned, each under its hash lock. Call only after the log fsync begun by
   * `beginSync()` -> `token` succeeded (never after a failed one). Returns the
   * number of blobs deleted. An unlink that fails keeps the candidate (warned).
   */
  async collect(token: number): Promise<number> {
    this.checkOpen();
    const due = [...this.candidates].filter(([, tag]) => tag <= token).map(([hex]) => hex);
    let deleted = 0;
    for (const hex of due) {
      const gone = await this.locks.run(hex, async () => {
        const tag = this.candidates.get(hex);
        if (tag === undefined || tag > token) return false; // re-referenced, or re-dropped later
        if ((this.refs.get(hex) ?? 0) > 0 || this.pins.has(hex)) return false;
        if (!(await this.removeBlob(hex))) return false;
        this.candidates.delete(hex);
        return true;
      });
      if (gone) deleted++;
    }
    this.counters.collected += deleted;
    return deleted;
  }

  /**
   * Convenience for the "only after fsync" contract:
   * `beginSync()`, await `fsync()`, then `collect()`. If `fsync` rejects,
   * nothing is collected and the error propagates.
   */
  async syncThenCollect(fsync: () => Promise<void>): Promise<number> {
    const token = this.beginSync();
    await fsync();
    return this.collect(token);
  }

  /**
   * Returns the value stored under `hash`, re-hashed (I4). The blob is pinned
   * for the duration from the synchronous call on, so call `read` in the same
   * tick as the keydir lookup that produced the pointer.
   * Throws E_CORRUPT (message names the blob) when the file is missing or its
   * bytes do not hash to `hash`; E_IO for other read errors.
   */
  async read(hash: Uint8Array | string): Promise<Buffer> {
    this.checkOpen();
    const hex = toHex(hash);
    const release = this.pin(hex);
    try {
      let bytes: Buffer;
      try {
        bytes = await this.io.readFile(this.pathOf(hex));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          throw new KvError('E_CORRUPT', `blob ${hex} is missing (a pointer references it)`);
        }
        throw ioError(`reading blob ${hex}`, err);
      }
      const actual = BlobStore.hashOf(bytes).toString('hex');
      if (actual !== hex) {
        throw new KvError('E_CORRUPT', `blob ${hex} is corrupt: its ${bytes.length} bytes hash to ${actual}`);
      }
      return bytes;
    } finally {
      release();
    }
  }

  /**
   * Orphan sweep: deletes every blob that is not live, not referenced and
   * not pinned, and every temp file not being written right now. `isLive`
   * defaults to "refcount > 0"; pass the keydir's view when counts are not
   * rebuilt yet. Also drops those hashes from the candidate set. Call after
   * the log state the liveness comes from is durable (after recovery, fsync
   * the segments first). Returns the number of files removed.
   */
  async sweep(isLive?: (hex: string) => boolean): Promise<number> {
    this.checkOpen();
    const live = isLive ?? ((hex: string) => (this.refs.get(hex) ?? 0) > 0);
    let names: string[];
    try {
      names = await this.io.list(this.dir);
    } catch (err) {
      throw ioError(`listing ${this.dir}`, err);
    }
    let removed = 0;
    for (const name of names) {
      if (name.startsWith(TMP_PREFIX)) {
        if (this.inflight.has(name)) continue;
        try {
          await this.io.unlink(join(this.dir, name));
          removed++;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.warn(`sweep: cannot remove ${name}`, err);
        }
        continue;
      }
      const hex = BLOB_RE.exec(name)?.[1];
      if (hex === undefined || live(hex)) continue;
      const gone = await this.locks.run(hex, async () => {
        if (live(hex) || (this.refs.get(hex) ?? 0) > 0 || this.pins.has(hex)) return false;
        if (!(await this.removeBlob(hex))) return false;
        this.candidates.delete(hex);
        return true;
      });
      if (gone) removed++;
    }
    this.counters.orphansSwept += removed;
    return removed;
  }

  stats(): BlobStats {
    return {
      blobs: this.sizes.size,
      blobBytes: this.blobBytes,
      pinned: this.pins.size,
      candidates: this.candidates.size,
      ...this.counters,
    };
  }

  /**
   * Waits for writes/deletes in progress, then refuses further calls
   * (E_CLOSED). Pins and counts are forgotten; nothing is deleted.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.locks.size > 0) await new Promise((r) => setImmediate(r));
  }

  // ---------------------------------------------------------------- internals

  /** Under the hash lock: reuse an existing blob or write a new one (I1, I2). */
  private async materialize(hex: string, value: Uint8Array): Promise<void> {
    const finalPath = this.pathOf(hex);
    let existing: number | null;
    try {
      existing = await this.io.size(finalPath);
    } catch (err) {
      throw ioError(`checking blob ${hex}`, err);
    }
    if (existing === value.length) {
      this.counters.dedupHits++;
      this.setSize(hex, existing);
      // A rename whose directory fsync failed may not be durable yet.
      if (this.syncedGen < this.renameGen) await this.syncDir();
      return;
    }
    if (existing !== null) {
      this.warn(`blob ${hex} has ${existing} bytes, expected ${value.length}: rewriting it`);
    }

    const tmpName = `${TMP_PREFIX}${hex}-${process.pid}-${++this.tmpSeq}`;
    const tmpPath = join(this.dir, tmpName);
    this.inflight.add(tmpName);
    let file: BlobFile | undefined;
    let renamed = false;
    let renameTried = false;
    try {
      file = await this.io.create(tmpPath);
      for (let off = 0; off < value.length; off += this.chunkBytes) {
        await file.write(value.subarray(off, Math.min(off + this.chunkBytes, value.length)), off);
      }
      await file.sync();
      const f = file;
      file = undefined;
      await f.close();
      renameTried = true;
      await this.io.rename(tmpPath, finalPath);
      renamed = true;
    } catch (err) {
      if (file) await file.close().catch(() => {});
      // A rename that reported failure may still have happened: make the next
      // reuse of any blob fsync the directory first.
      if (renameTried) this.renameGen++;
      if (!renamed) {
        await this.io.unlink(tmpPath).catch((e: NodeJS.ErrnoException) => {
          if (e.code !== 'ENOENT') this.warn(`cannot remove temp file ${tmpName}; sweep will`, e);
        });
      }
      throw ioError(`writing blob ${hex}`, err);
    } finally {
      this.inflight.delete(tmpName);
    }
    this.renameGen++;
    this.setSize(hex, value.length);
    this.counters.written++;
    this.counters.writtenBytes += value.length;
    await this.syncDir();
  }

  /** fsync of values/; surfaces every failure (see the essay). */
  private async syncDir(): Promise<void> {
    const gen = this.renameGen;
    try {
      await this.io.syncDir(this.dir);
      this.syncedGen = Math.max(this.syncedGen, gen);
    } catch (err) {
      this.counters.dirFsyncFailures++;
      const code = (err as NodeJS.ErrnoException).code ?? String(err);
      this.warn(`fsync of directory ${this.dir} failed (${code})`, err);
      if (DIR_FSYNC_UNSUPPORTED.has(code)) {
        this.syncedGen = Math.max(this.syncedGen, gen);
        return;
      }
      throw ioError(`fsync of directory ${this.dir}`, err);
    }
  }

  /** Unlinks a blob file; true when it is gone. Caller holds the hash lock. */
  private async removeBlob(hex: string): Promise<boolean> {
    try {
      await this.io.unlink(this.pathOf(hex));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.warn(`cannot delete blob ${hex}`, err);
        return false;
      }
    }
    this.setSize(hex, null);
    return true;
  }

  private setSize(hex: string, size: number | null): void {
    this.blobBytes -= this.sizes.get(hex) ?? 0;
    if (size === null) {
      this.sizes.delete(hex);
    } else {
      this.sizes.set(hex, size);
      this.blobBytes += size;
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new KvError('E_CLOSED', 'blob store is closed');
  }
}

function toHex(hash: Uint8Array | string): string {
  if (typeof hash === 'string') {
    if (!/^[0-9a-f]{32}$/.test(hash)) throw new TypeError(`not a blob hash: ${hash}`);
    return hash;
  }
  if (hash.length !== BLOB_HASH_BYTES) throw new TypeError(`blob hash must be ${BLOB_HASH_BYTES} bytes`);
  return Buffer.from(hash.buffer, hash.byteOffset, hash.length).toString('hex');
}

function ioError(what: string, err: unknown): KvError {
  if (err instanceof KvError) return err;
  const code = (err as NodeJS.ErrnoException)?.code;
  const msg = err instanceof Error ? err.message : String(err);
  return new KvError('E_IO', `${what}: ${code && !msg.startsWith(code) ? `${code}: ` : ''}${msg}`, { cause: err });
}
