/**
 * The read cache: a bounded cache of segment bytes, in aligned blocks, so that a get of a
 * small value that was read before costs a hash lookup and a copy, not a pread(2).
 *
 * Why blocks of the file and not values: segment bytes below a segment's size never change
 * while the engine runs. Records are appended, a failed append is cut back to the size the
 * engine had before it, footers go after the records, reclaim writes new segments under new
 * file ids, and file ids are never reused within a process (KvEngine.allocFileId). So a
 * cached byte of (file id, offset) is the byte on disk for as long as the engine lives, and
 * the cache needs no invalidation on overwrite, delete, CAS, batch, reclaim or drop: the
 * keydir says where a key's current record is, and a key whose record moved is looked up at
 * its new place. Blocks of removed segments are never asked for again and age out.
 *
 * What is cached, and when:
 * - Block i of a file holds its bytes [i*B, i*B + valid), valid <= B, where valid is the
 *   segment's size when it was read (the active segment grows: a record past `valid` makes
 *   the block read the rest, up to the current size). A record that straddles two blocks or
 *   is larger than a block is not cached (the caller reads it).
 * - While the cache has free blocks, a miss reads the aligned window of `readAroundBlocks`
 *   blocks around it (default 32: 1 MiB) in one pread and keeps them all (what the kernel's
 *   read-around does for an mmap fault: a cold store warms up in few large reads; at most the
 *   cache's capacity is read this way, since it stops once the cache is full).
 * - Once full, CLOCK picks the victim, and a block is admitted only on its second miss among
 *   the recent ones (a ghost list as long as the cache): a working set larger than the cache
 *   costs one small pread per get, as without a cache, instead of a block read per get.
 * - Every record is checked (crc, and against the keydir's size, revision and mtime) the
 *   first time it is read from a block; the block then remembers it as verified (one bit per
 *   32 bytes, see lookupVerified), so later hits check only its type and key and take the
 *   rest from its header. A block read again from disk starts unverified.
 *
 * Not covered: bytes changed on disk by someone else while the engine runs are not seen
 * (as with any cache above the page cache); the log is the engine's alone (LOCK).
 */
import type { FileIo } from './file-io.js';

export interface ReadCacheStats {
  readCacheBytes: number;
  readCacheHits: number;
  readCacheMisses: number;
}

export class ReadCache {
  readonly blockBytes: number;
  private readonly shift: number;
  private readonly nslots: number;
  private readonly readAround: number;
  private used = 0;
  private readonly bufs: Buffer[] = [];
  private readonly verifiedBits: Uint8Array[] = [];
  private readonly slotFile: Uint32Array;
  private readonly slotBlock: Uint32Array;
  /** Bytes of the block that hold file bytes; 0 = slot free (or dropped). */
  private readonly slotValid: Uint32Array;
  private readonly ref: Uint8Array;
  private hand = 0;
  private readonly free: number[] = [];
  /** file id -> (block index -> slot + 1, 0 = not cached) */
  private readonly index = new Map<number, Int32Array>();
  private readonly ghost = new Set<number>();
  private readonly ghostRing: Float64Array;
  private ghostPos = 0;
  private scratch: Buffer | null = null;

  hits = 0;
  misses = 0;

  /**
   * @param capacityBytes bytes of blocks at most (rounded down to whole blocks; at least 1 block)
   * @param blockBytes a power of two
   * @param readAroundBlocks blocks read together on a miss while the cache has room (power of two)
   */
  constructor(capacityBytes: number, blockBytes = 32 * 1024, readAroundBlocks = 32) {
    if (blockBytes < 4096 || (blockBytes & (blockBytes - 1)) !== 0) throw new RangeError('read cache: blockBytes must be a power of two >= 4096');
    if (readAroundBlocks < 1 || (readAroundBlocks & (readAroundBlocks - 1)) !== 0) throw new RangeError('read cache: readAroundBlocks must be a power of two');
    this.blockBytes = blockBytes;
    this.shift = Math.log2(blockBytes);
    this.nslots = Math.max(1, Math.floor(capacityBytes / blockBytes));
    this.readAround = Math.min(readAroundBlocks, this.nslots);
    this.slotFile = new Uint32Array(this.nslots);
    this.slotBlock = new Uint32Array(this.nslots);
    this.slotValid = new Uint32Array(this.nslots);
    this.ref = new Uint8Array(this.nslots);
    this.ghostRing = new Float64Array(this.nslots).fill(-1);
  }

  /** Bytes held by block buffers (allocated lazily, up to the capacity). */
  get bytes(): number {
    return this.used * (this.blockBytes + this.blockBytes / 256);
  }

  stats(): ReadCacheStats {
    return { readCacheBytes: this.bytes, readCacheHits: this.hits, readCacheMisses: this.misses };
  }

  /** The block buffer of a slot; its byte 0 is file offset blockBase(slot). */
  buf(slot: number): Buffer {
    return this.bufs[slot];
  }

  blockBase(slot: number): number {
    return this.slotBlock[slot] * this.blockBytes;
  }

  /** Can [off, off+len) be cached at all (inside one block)? */
  fits(off: number, len: number): boolean {
    return len > 0 && off >>> this.shift === (off + len - 1) >>> this.shift;
  }

  /** The slot holding file bytes [off, off+len) (one block, see fits()), or -1. Marks it used. */
  lookup(fileId: number, off: number, len: number): number {
    const t = this.index.get(fileId);
    if (t === undefined) return -1;
    const b = off >>> this.shift;
    if (b >= t.length) return -1;
    const s = t[b] - 1;
    if (s < 0 || (off & (this.blockBytes - 1)) + len > this.slotValid[s]) return -1;
    this.ref[s] = 1;
    this.hits++;
    return s;
  }

  /**
   * The slot holding the record that starts at file offset `off`, if that record was checked
   * (crc) since its block was read; else -1. Marks the slot used.
   *
   * One bit per 32 bytes of block: a record is at least 37 bytes long and records lie end to
   * end, so at most one record starts in an aligned 32-byte window, and a keydir offset is
   * always a record start: the window's bit names that record.
   */
  lookupVerified(fileId: number, off: number): number {
    const t = this.index.get(fileId);
    if (t === undefined) return -1;
    const b = off >>> this.shift;
    if (b >= t.length) return -1;
    const s = t[b] - 1;
    if (s < 0) return -1;
    const r = off & (this.blockBytes - 1);
    if ((this.verifiedBits[s][r >>> 8] & (1 << ((r >>> 5) & 7))) === 0) return -1;
    this.ref[s] = 1;
    this.hits++;
    return s;
  }

  /** Marks the record starting at file offset `off` of slot s as checked (see lookupVerified). */
  setVerified(s: number, off: number): void {
    const r = off & (this.blockBytes - 1);
    this.verifiedBits[s][r >>> 8] |= 1 << ((r >>> 5) & 7);
  }

  /**
   * Reads the block holding [off, off+len) of a file (whose bytes below `fileSize` are final)
   * through `fd` with blocking preads, and returns its slot; or -1 when the cache declines
   * (full, and the block has not missed recently): the caller then reads the record itself.
   * Throws the errno error of a failed read (nothing is cached then).
   */
  fill(fileId: number, off: number, len: number, fileSize: number, fd: number, io: FileIo): number {
    if (io.readSync === undefined || !this.fits(off, len) || off + len > fileSize) return -1;
    const B = this.blockBytes;
    const b = off >>> this.shift;
    let t = this.index.get(fileId);
    const have = t !== undefined && b < t.length ? t[b] - 1 : -1;
    if (have >= 0) {
      // the file grew past what the block holds (active segment): read the rest
      const from = this.slotValid[have];
      const to = Math.min(B, fileSize - b * B);
      const n = readAll(io, fd, this.bufs[have], from, to - from, b * B + from);
      this.slotValid[have] = from + n;
      this.ref[have] = 1;
      this.misses++;
      return (off & (B - 1)) + len <= this.slotValid[have] ? have : -1;
    }
    this.misses++;
    const roomy = this.free.length + (this.nslots - this.used) >= this.readAround;
    if (!roomy) {
      const g = fileId * 1048576 + b;
      if (!this.ghost.has(g)) {
        const old = this.ghostRing[this.ghostPos];
        if (old >= 0) this.ghost.delete(old);
        this.ghostRing[this.ghostPos] = g;
        this.ghostPos = (this.ghostPos + 1) % this.nslots;
        this.ghost.add(g);
        return -1;
      }
      this.ghost.delete(g);
    }
    // the blocks to read: the aligned read-around window while there is room, else this one
    const w = roomy ? this.readAround : 1;
    const first = roomy ? b & ~(w - 1) : b;
    const start = first * B;
    const end = Math.min(fileSize, start + w * B);
    if (w === 1) {
      const s = this.take();
      let n: number;
      try {
        n = readAll(io, fd, this.bufs[s], 0, end - start, start);
      } catch (err) {
        this.free.push(s);
        throw err;
      }
      this.place(s, fileId, b, n, t);
      return (off & (B - 1)) + len <= n ? s : -1;
    }
    if (this.scratch === null || this.scratch.length < w * B) this.scratch = Buffer.allocUnsafeSlow(w * B);
    const buf = this.scratch;
    const n = readAll(io, fd, buf, 0, end - start, start);
    let mine = -1;
    for (let i = 0; i < w; i++) {
      const bi = first + i;
      const lo = i * B;
      if (lo >= n) break;
      t = this.index.get(fileId);
      if (t !== undefined && bi < t.length && t[bi] !== 0) continue; // cached already: keep it (not block b: checked above)
      const s = this.take();
      const cnt = Math.min(B, n - lo);
      buf.copy(this.bufs[s], 0, lo, lo + cnt);
      this.place(s, fileId, bi, cnt, t);
      if (bi === b) mine = s;
    }
    return mine >= 0 && (off & (B - 1)) + len <= this.slotValid[mine] ? mine : -1;
  }

  /** Forgets the block holding file offset `off` (its bytes failed a check: read them again next time). */
  drop(fileId: number, off: number): void {
    const t = this.index.get(fileId);
    const b = off >>> this.shift;
    if (t === undefined || b >= t.length || t[b] === 0) return;
    const s = t[b] - 1;
    t[b] = 0;
    this.slotValid[s] = 0;
    this.ref[s] = 0;
    this.free.push(s);
  }

  /** Forgets every block of a file (it is being removed). */
  dropFile(fileId: number): void {
    const t = this.index.get(fileId);
    if (t === undefined) return;
    for (let b = 0; b < t.length; b++) if (t[b] !== 0) this.drop(fileId, b * this.blockBytes);
    this.index.delete(fileId);
  }

  /** A slot to fill: a free one, a new one, or the CLOCK victim (unlinked from the index). */
  private take(): number {
    if (this.free.length > 0) return this.free.pop()!;
    if (this.used < this.nslots) {
      const s = this.used++;
      this.bufs.push(Buffer.allocUnsafeSlow(this.blockBytes));
      this.verifiedBits.push(new Uint8Array(this.blockBytes / 256));
      return s;
    }
    for (;;) {
      const s = this.hand;
      this.hand = (this.hand + 1) % this.nslots;
      if (this.ref[s] !== 0) {
        this.ref[s] = 0;
        continue;
      }
      const t = this.index.get(this.slotFile[s]);
      if (t !== undefined && t[this.slotBlock[s]] === s + 1) t[this.slotBlock[s]] = 0;
      this.slotValid[s] = 0;
      return s;
    }
  }

  private place(s: number, fileId: number, b: number, valid: number, t: Int32Array | undefined): number {
    if (t === undefined || b >= t.length) {
      const n = new Int32Array(Math.max(b + 1, t === undefined ? 64 : t.length * 2));
      if (t !== undefined) n.set(t);
      t = n;
      this.index.set(fileId, t);
    }
    t[b] = s + 1;
    this.slotFile[s] = fileId;
    this.slotBlock[s] = b;
    this.slotValid[s] = valid;
    this.ref[s] = 1;
    this.verifiedBits[s].fill(0);
    return s;
  }
}

function readAll(io: FileIo, fd: number, buf: Buffer, off: number, len: number, pos: number): number {
  let n = 0;
  while (n < len) {
    const r = io.readSync!(fd, buf, off + n, len - n, pos + n);
    if (r === 0) break;
    n += r;
  }
  return n;
}
