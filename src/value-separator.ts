/**
 * The default `ValueSeparator`: the engine's value-separation seam backed by the real
 * BlobStore (src/blob-store.ts). `open(dir)` uses it unless `EngineOptions.valueSeparator`
 * is given. The mapping (engine call -> blob store call) is the table in FORMAT.md,
 * "Value separation":
 *   store -> write (durable + pinned)     appended -> ref + release     failed -> release
 *   dropped -> unref                      beforeSync/afterSync -> beginSync/collect
 *   read -> read (re-hashed, pinned on entry)
 *   rebuild -> rebuild (dangling pointers counted + warned) then sweep (orphans)
 */
import { BlobStore, type BlobStats, type PinnedBlob } from './blob-store.js';

export interface BlobSeparatorStats extends BlobStats {
  /** Live pointers whose blob file was missing at open (they read as E_CORRUPT). */
  danglingPointers: number;
}

/**
 * The seam where the blob store plugs in (issue 4). The engine calls:
 * - `store(value)` for a put/batch value of valueThreshold bytes or more, BEFORE the
 *   revision is taken; it must return once the blob is durable (file + dir fsynced) and
 *   pinned. The engine appends a POINTER record (flags bit0, payload = hash) and calls
 *   `appended(handle)` after the record is written and applied (ref the hash, drop the
 *   pin), or `failed(handle)` if the append failed or was refused (drop the pin only).
 * - `dropped(hash)` when a pointer stops being referenced: an overwrite or delete of a
 *   key whose entry was a pointer (called right after the record that drops it is
 *   applied), and for every live pointer of a dropped namespace.
 * - `beforeSync()` right before a log fsync starts and `afterSync(token)` after it
 *   succeeded (collect blobs whose last dereference that fsync made durable).
 *   In sync 'none' mode the engine calls them around `sync()` and reclaim.
 * - `read(hash, size)` for a get of a pointer entry.
 * - `rebuild(hashes)` once after open with every live pointer hash (duplicates counted).
 * Reclaim relocates pointer records as they are (16-byte payload): no refcount change.
 */
export interface ValueSeparator {
  store(value: Buffer): Promise<{ hash: Buffer; handle: unknown }>;
  appended(handle: unknown): void;
  failed(handle: unknown): void;
  dropped(hash: Buffer): void;
  beforeSync(): number;
  afterSync(token: number): Promise<void>;
  read(hash: Buffer, size: number): Promise<Buffer>;
  rebuild(hashes: Buffer[]): Promise<void>;
  close?(): Promise<void>;
  /** Is the hash referenced by a live pointer? (watch replay: a missing blob of an old record = history gone) */
  referenced?(hash: Buffer): boolean;
  /** Orphan sweep; the engine calls it with every dereference durable. Returns files removed. */
  sweep?(): Promise<number>;
  /** Blob counters for stats(). */
  stats?(): { blobs: number; blobBytes: number; orphansSwept: number; dirFsyncFailures: number; danglingPointers: number };
}

export class BlobSeparator implements ValueSeparator {
  /** Distinct hashes referenced by the keydir at open that had no blob file. */
  danglingPointers = 0;

  constructor(readonly blobs: BlobStore, private readonly warn: (message: string) => void) {}

  async store(value: Buffer): Promise<{ hash: Buffer; handle: unknown }> {
    const p = await this.blobs.write(value);
    return { hash: p.hash, handle: p };
  }

  appended(handle: unknown): void {
    const p = handle as PinnedBlob;
    this.blobs.ref(p.hash);
    p.release();
  }

  failed(handle: unknown): void {
    (handle as PinnedBlob).release();
  }

  dropped(hash: Buffer): void {
    this.blobs.unref(hash);
  }

  beforeSync(): number {
    return this.blobs.beginSync();
  }

  async afterSync(token: number): Promise<void> {
    await this.blobs.collect(token);
  }

  read(hash: Buffer): Promise<Buffer> {
    return this.blobs.read(hash);
  }

  referenced(hash: Buffer): boolean {
    return this.blobs.refCount(hash) > 0;
  }

  async rebuild(hashes: Buffer[]): Promise<void> {
    const { missing } = this.blobs.rebuild(hashes);
    this.danglingPointers = missing.length;
    if (missing.length > 0) {
      this.warn(`${missing.length} blob(s) referenced by live pointers are missing (reads of those keys fail with E_CORRUPT): ` +
        `${missing.slice(0, 4).join(', ')}${missing.length > 4 ? ', ...' : ''}`);
    }
    await this.blobs.sweep();
  }

  /** Orphan sweep on demand. The caller makes every dereference durable first. */
  sweep(): Promise<number> {
    return this.blobs.sweep();
  }

  stats(): BlobSeparatorStats {
    return { ...this.blobs.stats(), danglingPointers: this.danglingPointers };
  }

  close(): Promise<void> {
    return this.blobs.close();
  }
}
