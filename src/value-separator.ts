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
import type { ValueSeparator } from './engine.js';

export interface BlobSeparatorStats extends BlobStats {
  /** Live pointers whose blob file was missing at open (they read as E_CORRUPT). */
  danglingPointers: number;
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
