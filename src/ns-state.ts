/**
 * The in-memory state of one namespace: its keydir, its segments, the active segment
 * being appended to, and the writer's staging buffer for it.
 */
import path from 'node:path';
import { Keydir } from './keydir.js';
import { FooterBuilder, segmentName } from './segment.js';
import { recordSize, T_PUT } from './record.js';

export interface SegInfo {
  id: number;
  path: string;
  /** Bytes of records (for a sealed segment: where its footer starts). */
  size: number;
  sealed: boolean;
}

export interface ActiveSeg {
  seg: SegInfo;
  /** Write descriptor (the writer's own, not from the read cache). */
  fd: number;
  /** Tombstones written to this segment; live entries are added from the keydir at seal. */
  footer: FooterBuilder;
}

export class NsState {
  readonly nameBuf: Buffer;
  readonly keydir = new Keydir();
  readonly segments = new Map<number, SegInfo>();
  active: ActiveSeg | null = null;
  /** Bytes of all records in all segments, and of the live ones (referenced by the keydir). */
  totalBytes = 0;
  liveBytes = 0;
  /** Writes enqueued and not yet applied to the keydir. */
  inflight = 0;
  dropped = false;
  /** Watch replay from at or below this revision is E_COMPACTED. */
  compactedThrough = 0;
  reclaiming: Promise<unknown> | null = null;
  /** No automatic reclaim before this time (ms) after one failed. */
  reclaimRetryAt = 0;
  /** Writer staging: records encoded but not yet written. */
  staging: Buffer = Buffer.allocUnsafe(64 * 1024);
  stagingLen = 0;
  /** Writer: operations encoded into `staging` (typed by the engine). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  stagedOps: any[] = [];

  constructor(readonly name: string, readonly dir: string) {
    this.nameBuf = Buffer.from(name, 'utf8');
  }

  segPath(id: number): string {
    return path.join(this.dir, segmentName(id));
  }

  addSegment(id: number, size: number, sealed: boolean): SegInfo {
    const s: SegInfo = { id, path: this.segPath(id), size, sealed };
    this.segments.set(id, s);
    return s;
  }

  /** Record length of keydir entry e. */
  entryRecordSize(e: number): number {
    const k = this.keydir;
    return recordSize(this.nameBuf.length, k.keyLen[e], T_PUT, k.flags[e] & 1, k.vsize[e]);
  }

  get deadBytes(): number {
    return this.totalBytes - this.liveBytes;
  }

  /** Recomputes the byte counters from the segments and the keydir. */
  recount(): void {
    let total = 0;
    for (const s of this.segments.values()) total += s.size;
    let live = 0;
    const k = this.keydir;
    for (let e = 0, n = k.entryLimit; e < n; e++) if (k.isLive(e)) live += this.entryRecordSize(e);
    this.totalBytes = total;
    this.liveBytes = live;
  }

  ensureStaging(extra: number): void {
    const need = this.stagingLen + extra;
    if (need <= this.staging.length) return;
    const b = Buffer.allocUnsafe(Math.max(need, this.staging.length * 2));
    this.staging.copy(b, 0, 0, this.stagingLen);
    this.staging = b;
  }

  /** Drops a staging buffer that grew for a large value. */
  shrinkStaging(): void {
    if (this.stagingLen === 0 && this.staging.length > 4 * 1024 * 1024) this.staging = Buffer.allocUnsafe(64 * 1024);
  }
}
