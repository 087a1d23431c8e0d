/**
 * VolumeCache: the bounded local write-back cache of one volume (FORMAT.md,
 * "Cache").
 *
 * `<cacheDir>/volumes/<volume uuid>/` (0700) holds:
 * - `blocks`: N fixed slots of BLOCK_SIZE bytes; slot s at s * BLOCK_SIZE.
 *             The file grows as slots are first used, never past N slots
 *             (Node has no hole punching: a sparse file as large as the volume
 *             would only ever grow).
 * - `slots`:  a 32-byte header and one 8-byte entry per slot: which block the
 *             slot holds (index + 1, 0 = free) and its state (1 clean, 2 dirty).
 * - `lock`:   the pid of the process that has the volume open (lib/pid-lock.ts).
 *
 * Rules:
 * - Only clean blocks are evicted (CLOCK over the slots, a reference bit set
 *   by every read); a dirty block — bytes not yet in the store — keeps its slot
 *   until a flush marks it clean. The caller (Volume) makes room before it
 *   writes: `hasRoom()` / `dirtyLimit`, and waits for a flush when dirty
 *   blocks reach the limit (backpressure).
 * - A slot is reused in this order: its entry is set free, the new bytes are
 *   pwritten, then the entry names the new block. A kill -9 anywhere in between
 *   leaves a free slot or, at worst, a clean entry whose bytes do not hash
 *   right, which the first read re-hashes and refetches (Volume). Dirty slots
 *   are never reused, so a dirty entry always points at its own bytes.
 *
 * Durability (the contract Volume documents):
 * - A write pwrites the bytes into `blocks`, then, if the block was not dirty,
 *   its slot entry. Both land in the OS page cache, which outlives a kill -9 of
 *   the process: a resolved write() survives the process dying.
 * - `sync()` fdatasyncs `blocks` and then `slots`: after it, the written bytes
 *   and the dirty set also survive an OS crash or power loss.
 * - Clean blocks are never trusted blindly: the first read of a clean block in
 *   a process re-hashes it against the catalog's key (Volume does this).
 */
import {
  closeSync,
  existsSync,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statfsSync,
  statSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { fsyncDirSync, writeAllSync } from '../lib/fsync.js';
import { GlideFsError } from './errors.js';
import { lockHolder as pidLockHolder, PidLock } from '../lib/pid-lock.js';

export const STATE_NONE = 0;
export const STATE_CLEAN = 1;
export const STATE_DIRTY = 2;

/*
 * slot table (`slots`), format version 2
 * ┌──────────────────┬─────────────┬───────────────┬───────────────┬────────────────┬──────────┐
 * │ magic "GLFSSLOT" │ version u32 │ slotCount u32 │ blockSize u32 │ blockCount u32 │ 8 zeros  │
 * └──────────────────┴─────────────┴───────────────┴───────────────┴────────────────┴──────────┘
 * then slotCount entries of 8 bytes: block index + 1 (u32 LE, 0 = free) | state u8 | 3 zeros
 *
 * Format version 1 (before the bound) was `state` (magic "GLFSCST1", one byte
 * per block) + `data` (sparse, as large as the volume); it is migrated at open.
 */
const SLOTS_MAGIC = Buffer.from('GLFSSLOT', 'latin1');
const V1_MAGIC = Buffer.from('GLFSCST1', 'latin1');
export const CACHE_FORMAT_VERSION = 2;
export const SLOTS_HEADER = 32;
export const SLOT_ENTRY = 8;
const V1_HEADER = 16;

/**
 * The largest volume: 8 TiB. Not because of the cache any more (its files are
 * bounded by the cache size, its memory by the slot count): an open Volume
 * keeps 9 bytes per block of the volume in memory (sector masks, write
 * generations, verified marks: 576 MiB at 8 TiB), and slot entries name a
 * block in 32 bits. GlideFs.createVolume refuses larger sizes (E_BAD_SIZE).
 */
export const MAX_VOLUME_BYTES = 8 * 1024 ** 4;

/** The smallest cache: 16 blocks (2 MiB). Below it one flush's worth of dirty blocks leaves no room for reads. */
export const MIN_CACHE_BYTES = 16 * 131072;

/** Default cache size: at most 8 GiB, and at most a quarter of what the cache dir's filesystem has free (plus what the cache already holds). */
export const DEFAULT_CACHE_MAX_BYTES = 8 * 1024 ** 3;
export const DEFAULT_CACHE_FREE_FRACTION = 0.25;

/**
 * Dirty blocks allowed in a cache of `slots` slots before writers wait for a
 * flush: all but a quarter (at least 2 slots), which stay for reads and for the
 * read-modify-write of partial blocks.
 */
export function dirtyLimitFor(slots: number): number {
  return Math.max(1, slots - Math.max(2, Math.floor(slots / 4)));
}

/**
 * The default cache size for a volume cache at `dir` (bytes, a whole number of
 * blocks): min(8 GiB, 1/4 of (free bytes of the filesystem + bytes this cache
 * already holds)), at least MIN_CACHE_BYTES. Never fills the disk by itself.
 */
export function defaultCacheSize(dir: string, blockSize = 131072): number {
  let free = DEFAULT_CACHE_MAX_BYTES / DEFAULT_CACHE_FREE_FRACTION;
  try {
    let probe = dir;
    while (!existsSync(probe) && probe !== '/') probe = join(probe, '..');
    const st = statfsSync(probe);
    free = st.bavail * st.bsize;
  } catch {
    // keep the cap
  }
  let held = 0;
  try {
    held = statSync(join(dir, 'blocks')).blocks * 512;
  } catch {
    // no cache yet
  }
  const want = Math.min(DEFAULT_CACHE_MAX_BYTES, Math.floor((free + held) * DEFAULT_CACHE_FREE_FRACTION));
  return Math.max(MIN_CACHE_BYTES, Math.floor(want / blockSize) * blockSize);
}

function encodeHeader(slotCount: number, blockSize: number, blockCount: number): Buffer {
  const h = Buffer.alloc(SLOTS_HEADER);
  SLOTS_MAGIC.copy(h, 0);
  h.writeUInt32LE(CACHE_FORMAT_VERSION, 8);
  h.writeUInt32LE(slotCount, 12);
  h.writeUInt32LE(blockSize, 16);
  h.writeUInt32LE(blockCount, 20);
  return h;
}

interface SlotTable {
  slotCount: number;
  blockSize: number;
  blockCount: number;
  /** per slot: block index + 1, 0 = free */
  blocks: Uint32Array;
  states: Uint8Array;
}

function decodeTable(raw: Buffer, path: string): SlotTable {
  if (raw.length < SLOTS_HEADER || !raw.subarray(0, 8).equals(SLOTS_MAGIC)) {
    throw GlideFsError.CORRUPT(`cache slot table ${path} has no valid header`);
  }
  const version = raw.readUInt32LE(8);
  if (version > CACHE_FORMAT_VERSION) {
    throw GlideFsError.VERSION(`cache slot table ${path} has format version ${version}; this glidekv reads up to version ${CACHE_FORMAT_VERSION}`);
  }
  if (version !== CACHE_FORMAT_VERSION) throw GlideFsError.CORRUPT(`cache slot table ${path} has unknown format version ${version}`);
  const slotCount = raw.readUInt32LE(12);
  if (raw.length < SLOTS_HEADER + slotCount * SLOT_ENTRY) {
    throw GlideFsError.CORRUPT(`cache slot table ${path} is cut short (${raw.length} bytes for ${slotCount} slots)`);
  }
  const blocks = new Uint32Array(slotCount);
  const states = new Uint8Array(slotCount);
  for (let s = 0; s < slotCount; s++) {
    const o = SLOTS_HEADER + s * SLOT_ENTRY;
    blocks[s] = raw.readUInt32LE(o);
    states[s] = raw[o + 4];
  }
  return { slotCount, blockSize: raw.readUInt32LE(16), blockCount: raw.readUInt32LE(20), blocks, states };
}

function encodeTable(t: SlotTable): Buffer {
  const buf = Buffer.alloc(SLOTS_HEADER + t.slotCount * SLOT_ENTRY);
  encodeHeader(t.slotCount, t.blockSize, t.blockCount).copy(buf, 0);
  for (let s = 0; s < t.slotCount; s++) {
    if (t.blocks[s] === 0) continue;
    const o = SLOTS_HEADER + s * SLOT_ENTRY;
    buf.writeUInt32LE(t.blocks[s], o);
    buf[o + 4] = t.states[s];
  }
  return buf;
}

/** Writes `buf` to `path` atomically: temp file, fdatasync, rename, fsync of the directory. */
function writeAtomic(dir: string, name: string, buf: Buffer): void {
  const tmp = join(dir, name + '.tmp');
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeAllSync(fd, buf, 0);
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, join(dir, name));
  fsyncDirSync(dir);
}

function preadFull(fd: number, target: Uint8Array, off: number, len: number, pos: number, what: string): void {
  let done = 0;
  while (done < len) {
    const n = readSync(fd, target, off + done, len - done, pos + done);
    if (n === 0) throw GlideFsError.IO(`short read in ${what}`);
    done += n;
  }
}

/** The typed error of a cache that cannot take more dirty blocks, or cannot shrink below them. */
export function cacheFullError(msg: string): GlideFsError {
  return new GlideFsError('E_CACHE_FULL', msg);
}

export function volumeCacheDir(cacheDir: string, uuid: string): string {
  return join(cacheDir, 'volumes', uuid);
}

export interface CacheCounters {
  /** Clean blocks evicted to make room. */
  evictions: number;
}

export class VolumeCache {
  readonly dir: string;
  readonly blockCount: number;
  readonly blockSize: number;
  readonly slotCount: number;
  /** Dirty blocks allowed before writers wait for a flush (dirtyLimitFor). */
  readonly dirtyLimit: number;
  readonly counters: CacheCounters = { evictions: 0 };
  /** per slot: block index + 1 (0 = free) and state (0 while a slot is being filled) */
  private readonly slotBlock: Uint32Array;
  private readonly slotState: Uint8Array;
  private readonly ref: Uint8Array;
  private readonly blockSlot = new Map<number, number>();
  private readonly free: number[] = [];
  private readonly pins = new Map<number, number>();
  private hand = 0;
  private dirty = 0;
  private clean = 0;
  private dataFd: number;
  private slotsFd: number;
  private readonly entry = Buffer.alloc(SLOT_ENTRY);
  private closed = false;

  private constructor(dir: string, t: SlotTable, dataFd: number, slotsFd: number) {
    this.dir = dir;
    this.blockCount = t.blockCount;
    this.blockSize = t.blockSize;
    this.slotCount = t.slotCount;
    this.dirtyLimit = dirtyLimitFor(t.slotCount);
    this.slotBlock = t.blocks;
    this.slotState = t.states;
    this.ref = new Uint8Array(t.slotCount);
    this.dataFd = dataFd;
    this.slotsFd = slotsFd;
    for (let s = t.slotCount - 1; s >= 0; s--) {
      if (t.blocks[s] === 0) {
        this.free.push(s); // popped lowest first: the file grows slot by slot
        continue;
      }
      this.blockSlot.set(t.blocks[s] - 1, s);
      if (t.states[s] === STATE_DIRTY) this.dirty++;
      else this.clean++;
    }
  }

  /**
   * Opens (creating or migrating if needed) the cache of a volume with room
   * for `slotCount` blocks. The caller holds the lock. A cache of another
   * slot count is resized: growing only rewrites the table; shrinking keeps
   * every dirty block (moved into the first slots) and drops clean ones, or
   * fails with E_CACHE_FULL when the dirty blocks alone do not fit.
   */
  static open(dir: string, blockCount: number, blockSize: number, slotCount: number): VolumeCache {
    if (!Number.isSafeInteger(slotCount) || slotCount < 1 || slotCount > 0xffffffff) {
      throw GlideFsError.BAD_SIZE(`cache of ${slotCount} slots`);
    }
    if (blockCount > 0xffffffff - 1) throw GlideFsError.BAD_SIZE(`volume of ${blockCount} blocks is too large for the cache`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const slotsPath = join(dir, 'slots');
    const dataPath = join(dir, 'blocks');
    let t: SlotTable;
    if (existsSync(slotsPath)) {
      t = decodeTable(readFileSync(slotsPath), slotsPath);
      if (t.blockCount !== blockCount || t.blockSize !== blockSize) {
        throw GlideFsError.CORRUPT(`cache ${dir} is for ${t.blockCount} blocks of ${t.blockSize}, volume has ${blockCount} of ${blockSize}`);
      }
      // a migration from format 1 that committed before removing the old files
      rmSync(join(dir, 'state'), { force: true });
      rmSync(join(dir, 'data'), { force: true });
    } else if (existsSync(join(dir, 'state'))) {
      t = migrateV1(dir, blockCount, blockSize, slotCount);
    } else {
      rmSync(dataPath, { force: true });
      closeSync(openSync(dataPath, 'w', 0o600));
      t = { slotCount, blockSize, blockCount, blocks: new Uint32Array(slotCount), states: new Uint8Array(slotCount) };
      writeAtomic(dir, 'slots', encodeTable(t));
    }
    const dataFd = openSync(dataPath, existsSync(dataPath) ? 'r+' : 'w+', 0o600);
    try {
      t = sanitize(t, dir, dataFd);
      if (t.slotCount !== slotCount) t = resize(t, dir, dataFd, slotCount);
      // the data file never holds more than the slots (a crash after a shrink's table commit)
      if (fstatSync(dataFd).size > slotCount * blockSize) {
        ftruncateSync(dataFd, slotCount * blockSize);
        fdatasyncSync(dataFd);
      }
    } catch (err) {
      closeSync(dataFd);
      throw err;
    }
    const slotsFd = openSync(slotsPath, 'r+');
    return new VolumeCache(dir, t, dataFd, slotsFd);
  }

  get dirtyCount(): number {
    return this.dirty;
  }

  get cleanCount(): number {
    return this.clean;
  }

  get freeSlots(): number {
    return this.free.length;
  }

  state(i: number): number {
    const s = this.blockSlot.get(i);
    return s === undefined ? STATE_NONE : this.slotState[s];
  }

  /** Blocks currently held (clean or dirty). */
  get cachedCount(): number {
    return this.dirty + this.clean;
  }

  /** Keeps a clean block from being evicted (a write waits for its old bytes). Counted. */
  pin(i: number): void {
    this.pins.set(i, (this.pins.get(i) ?? 0) + 1);
  }

  unpin(i: number): void {
    const n = (this.pins.get(i) ?? 0) - 1;
    if (n <= 0) this.pins.delete(i);
    else this.pins.set(i, n);
  }

  /** Slots that can be had now: free ones and clean unpinned ones. */
  availableSlots(): number {
    let pinnedClean = 0;
    for (const b of this.pins.keys()) if (this.state(b) === STATE_CLEAN) pinnedClean++;
    return this.free.length + this.clean - pinnedClean;
  }

  /** True when `slots` new slots can be had and `newDirty` more blocks can become dirty. */
  hasRoom(slots: number, newDirty: number): boolean {
    if (this.dirty + newDirty > this.dirtyLimit) return false;
    if (slots === 0) return true;
    return this.availableSlots() >= slots;
  }

  private writeEntry(s: number, blockPlus1: number, state: number): void {
    this.entry.fill(0);
    this.entry.writeUInt32LE(blockPlus1, 0);
    this.entry[4] = blockPlus1 === 0 ? 0 : state;
    writeAllSync(this.slotsFd, this.entry, SLOTS_HEADER + s * SLOT_ENTRY);
  }

  /** CLOCK: the first clean, unpinned slot whose reference bit is clear (clearing bits on the way); -1 if none. */
  private evict(): number {
    if (this.clean === 0) return -1;
    for (let n = 0; n < 2 * this.slotCount + 1; n++) {
      const s = this.hand;
      this.hand = (this.hand + 1) % this.slotCount;
      if (this.slotState[s] !== STATE_CLEAN) continue;
      const b = this.slotBlock[s] - 1;
      if (this.pins.has(b)) continue;
      if (this.ref[s]) {
        this.ref[s] = 0;
        continue;
      }
      this.writeEntry(s, 0, 0);
      this.blockSlot.delete(b);
      this.slotBlock[s] = 0;
      this.slotState[s] = 0;
      this.clean--;
      this.counters.evictions++;
      return s;
    }
    return -1;
  }

  /** A slot for block i (free first, else an evicted clean one); its entry stays free until setState. */
  private allocate(i: number): number {
    let s = this.free.pop();
    if (s === undefined) {
      s = this.evict();
      if (s < 0) {
        throw cacheFullError(`cache ${this.dir} has no free slot: ${this.dirty} dirty and ${this.clean} clean blocks (pinned) in ${this.slotCount} slots`);
      }
    }
    this.blockSlot.set(i, s);
    this.slotBlock[s] = i + 1;
    this.slotState[s] = STATE_NONE;
    this.ref[s] = 1;
    return s;
  }

  /** Sets a block's state, in memory and in the slot table (pwrite, no fsync). NONE frees its slot. */
  setState(i: number, st: number): void {
    const s = this.blockSlot.get(i);
    if (s === undefined) {
      if (st === STATE_NONE) return;
      throw GlideFsError.IO(`cache ${this.dir}: block ${i} has no slot (write it before setting its state)`);
    }
    const prev = this.slotState[s];
    if (prev === st && st !== STATE_NONE) return;
    if (st === STATE_NONE) {
      this.writeEntry(s, 0, 0);
      this.blockSlot.delete(i);
      this.slotBlock[s] = 0;
      this.free.push(s);
    } else {
      this.writeEntry(s, i + 1, st);
    }
    this.slotState[s] = st;
    if (prev === STATE_DIRTY) this.dirty--;
    if (prev === STATE_CLEAN) this.clean--;
    if (st === STATE_DIRTY) this.dirty++;
    if (st === STATE_CLEAN) this.clean++;
  }

  private slotOf(i: number): number {
    const s = this.blockSlot.get(i);
    if (s === undefined) throw GlideFsError.IO(`cache ${this.dir}: block ${i} is not cached`);
    return s;
  }

  /** Reads `length` bytes of block `i` from `offsetInBlock` into `target` at `targetOffset`. */
  read(i: number, offsetInBlock: number, length: number, target: Uint8Array, targetOffset: number): void {
    const s = this.slotOf(i);
    this.ref[s] = 1;
    preadFull(this.dataFd, target, targetOffset, length, s * this.blockSize + offsetInBlock, `cache ${this.dir} at block ${i}`);
  }

  readBlock(i: number, target: Buffer = Buffer.allocUnsafe(this.blockSize)): Buffer {
    this.read(i, 0, this.blockSize, target, 0);
    return target;
  }

  /**
   * Writes bytes into block `i` at `offsetInBlock` (pwrite, no fsync). A
   * block without a slot gets one (E_CACHE_FULL when none can be had), and
   * must then be written whole; its state is NONE until setState.
   */
  write(i: number, offsetInBlock: number, data: Uint8Array): void {
    let s = this.blockSlot.get(i);
    if (s === undefined) {
      if (offsetInBlock !== 0 || data.length !== this.blockSize) {
        throw GlideFsError.IO(`cache ${this.dir}: block ${i} is not cached; only a whole block can be written into a new slot`);
      }
      s = this.allocate(i);
    }
    writeAllSync(this.dataFd, data, s * this.blockSize + offsetInBlock);
  }

  /** Every dirty block index, ascending. */
  dirtyIndices(): number[] {
    const out: number[] = [];
    for (let s = 0; s < this.slotCount; s++) if (this.slotState[s] === STATE_DIRTY) out.push(this.slotBlock[s] - 1);
    return out.sort((a, b) => a - b);
  }

  /** Makes the cached bytes and then the dirty set durable on the local disk. */
  sync(): void {
    if (this.closed) return;
    fdatasyncSync(this.dataFd);
    fdatasyncSync(this.slotsFd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.sync();
    } finally {
      closeSync(this.dataFd);
      closeSync(this.slotsFd);
      this.dataFd = -1;
      this.slotsFd = -1;
    }
  }

  /** Number of dirty blocks recorded in a volume's cache dir (for stats from any process); reads format 1 too. */
  static countDirty(dir: string): number {
    const path = join(dir, 'slots');
    if (existsSync(path)) {
      const t = decodeTable(readFileSync(path), path);
      let n = 0;
      for (let s = 0; s < t.slotCount; s++) if (t.blocks[s] !== 0 && t.states[s] === STATE_DIRTY) n++;
      return n;
    }
    const v1 = join(dir, 'state');
    if (!existsSync(v1)) return 0;
    const raw = readFileSync(v1);
    decodeV1Header(raw, v1);
    let n = 0;
    for (let i = V1_HEADER; i < raw.length; i++) if (raw[i] === STATE_DIRTY) n++;
    return n;
  }

  static remove(dir: string): void {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Drops entries that cannot be right: a block index past the volume, an
 * unknown state, a second entry for one block (a dirty one wins), a clean
 * slot past the end of the data file. A dirty slot past the end (its bytes
 * were lost with the page cache in a power cut before a sync) is kept and
 * reads zeros, as the sparse data file of format 1 did. Rewrites the table if
 * it changed anything.
 */
function sanitize(t: SlotTable, dir: string, dataFd: number): SlotTable {
  const size = fstatSync(dataFd).size;
  const seen = new Map<number, number>();
  let changed = false;
  let needSize = size;
  const drop = (s: number) => {
    t.blocks[s] = 0;
    t.states[s] = 0;
    changed = true;
  };
  for (let s = 0; s < t.slotCount; s++) {
    if (t.blocks[s] === 0) {
      if (t.states[s] !== 0) drop(s);
      continue;
    }
    const b = t.blocks[s] - 1;
    const st = t.states[s];
    if (b >= t.blockCount || (st !== STATE_CLEAN && st !== STATE_DIRTY)) {
      if (st === STATE_DIRTY) throw GlideFsError.CORRUPT(`cache slot table of ${dir}: slot ${s} names block ${b} of a volume of ${t.blockCount} blocks`);
      drop(s);
      continue;
    }
    const end = (s + 1) * t.blockSize;
    if (end > size) {
      if (st === STATE_CLEAN) {
        drop(s);
        continue;
      }
      needSize = Math.max(needSize, end);
    }
    const other = seen.get(b);
    if (other !== undefined) {
      // only the shrink's move leaves two entries (both dirty, same bytes), or a crash mid-reuse (a clean one)
      if (t.states[other] === STATE_DIRTY && st !== STATE_DIRTY) {
        drop(s);
        continue;
      }
      drop(other);
    }
    seen.set(b, s);
  }
  if (needSize > size) {
    ftruncateSync(dataFd, needSize);
    fdatasyncSync(dataFd);
  }
  if (changed) writeAtomic(dir, 'slots', encodeTable(t));
  return t;
}

/**
 * Gives the table `n` slots. Growing: the same entries, more free slots.
 * Shrinking: every dirty block in a slot >= n is copied into a free or clean
 * slot < n (the clean block there is dropped), the data file is fdatasync'd,
 * then the new table is committed atomically (rename); the data file is cut
 * to n slots only after that. A crash before the commit leaves the old table,
 * whose dirty slots were not touched (the copies went to free or clean slots;
 * a clean slot with other bytes is re-hashed and dropped on its first read).
 */
function resize(t: SlotTable, dir: string, dataFd: number, n: number): SlotTable {
  const blocks = new Uint32Array(n);
  const states = new Uint8Array(n);
  if (n >= t.slotCount) {
    blocks.set(t.blocks);
    states.set(t.states);
  } else {
    let dirty = 0;
    for (let s = 0; s < t.slotCount; s++) if (t.blocks[s] !== 0 && t.states[s] === STATE_DIRTY) dirty++;
    if (dirty > n) {
      throw cacheFullError(
        `cache ${dir} holds ${dirty} dirty blocks (${dirty * t.blockSize} bytes, written but not yet flushed to the store); ` +
          `a cache size of ${n * t.blockSize} bytes cannot hold them: open it with a cache size of at least ${dirty * t.blockSize} bytes and flush first`,
      );
    }
    // keep the low slots' dirty entries, then their clean ones, as far as room allows
    for (let s = 0; s < n; s++) if (t.states[s] === STATE_DIRTY && t.blocks[s] !== 0) {
      blocks[s] = t.blocks[s];
      states[s] = STATE_DIRTY;
    }
    const targets: number[] = [];
    for (let s = n - 1; s >= 0; s--) if (states[s] === 0) targets.push(s); // free or clean in the old table
    const buf = Buffer.allocUnsafe(t.blockSize);
    let moved = 0;
    for (let s = n; s < t.slotCount; s++) {
      if (t.blocks[s] === 0 || t.states[s] !== STATE_DIRTY) continue;
      const to = targets.pop()!;
      preadFull(dataFd, buf, 0, t.blockSize, s * t.blockSize, `cache ${dir} slot ${s}`);
      writeAllSync(dataFd, buf, to * t.blockSize);
      blocks[to] = t.blocks[s];
      states[to] = STATE_DIRTY;
      moved++;
    }
    // clean entries of low slots that no dirty block took
    for (let s = 0; s < n; s++) {
      if (states[s] === 0 && t.blocks[s] !== 0 && t.states[s] === STATE_CLEAN) {
        blocks[s] = t.blocks[s];
        states[s] = STATE_CLEAN;
      }
    }
    if (moved > 0) fdatasyncSync(dataFd);
  }
  const out: SlotTable = { slotCount: n, blockSize: t.blockSize, blockCount: t.blockCount, blocks, states };
  writeAtomic(dir, 'slots', encodeTable(out));
  if (fstatSync(dataFd).size > n * t.blockSize) {
    ftruncateSync(dataFd, n * t.blockSize);
    fdatasyncSync(dataFd);
  }
  return out;
}

function decodeV1Header(buf: Buffer, path: string): { blockCount: number; blockSize: number } {
  if (buf.length < V1_HEADER || !buf.subarray(0, 8).equals(V1_MAGIC)) {
    throw GlideFsError.CORRUPT(`cache state file ${path} has no valid header`);
  }
  return { blockCount: buf.readUInt32LE(8), blockSize: buf.readUInt32LE(12) };
}

/**
 * Format 1 (`state` + sparse `data`) to 2: every dirty block is copied into
 * the new `blocks` file (slots 0, 1, ...), which is fdatasync'd; the new table
 * is committed with a rename (the commit point); then `state` and `data` are
 * removed. Clean blocks are dropped (they are in the store). A crash before
 * the commit leaves format 1 intact; after it, open removes the old files.
 * More dirty blocks than slots: E_CACHE_FULL, nothing changed.
 */
function migrateV1(dir: string, blockCount: number, blockSize: number, slotCount: number): SlotTable {
  const statePath = join(dir, 'state');
  const raw = readFileSync(statePath);
  const h = decodeV1Header(raw, statePath);
  if (h.blockCount !== blockCount || h.blockSize !== blockSize) {
    throw GlideFsError.CORRUPT(`cache ${dir} is for ${h.blockCount} blocks of ${h.blockSize}, volume has ${blockCount} of ${blockSize}`);
  }
  const dirty: number[] = [];
  for (let i = 0; i < blockCount && V1_HEADER + i < raw.length; i++) if (raw[V1_HEADER + i] === STATE_DIRTY) dirty.push(i);
  if (dirty.length > slotCount) {
    throw cacheFullError(
      `cache ${dir} (format 1) holds ${dirty.length} dirty blocks (${dirty.length * blockSize} bytes, not yet flushed); ` +
        `a cache size of ${slotCount * blockSize} bytes cannot hold them: open it with a cache size of at least ${dirty.length * blockSize} bytes and flush first`,
    );
  }
  const t: SlotTable = { slotCount, blockSize, blockCount, blocks: new Uint32Array(slotCount), states: new Uint8Array(slotCount) };
  const dataPath = join(dir, 'blocks');
  const out = openSync(dataPath, 'w', 0o600); // leftovers of a migration cut short are rewritten
  try {
    if (dirty.length > 0) {
      const old = openSync(join(dir, 'data'), 'r');
      try {
        const buf = Buffer.alloc(blockSize);
        dirty.forEach((b, s) => {
          buf.fill(0);
          // a sparse region or a file cut short reads as zeros, as format 1 read it
          let done = 0;
          while (done < blockSize) {
            const n = readSync(old, buf, done, blockSize - done, b * blockSize + done);
            if (n === 0) break;
            done += n;
          }
          writeAllSync(out, buf, s * blockSize);
          t.blocks[s] = b + 1;
          t.states[s] = STATE_DIRTY;
        });
      } finally {
        closeSync(old);
      }
    }
    fdatasyncSync(out);
  } finally {
    closeSync(out);
  }
  writeAtomic(dir, 'slots', encodeTable(t));
  rmSync(statePath, { force: true });
  rmSync(join(dir, 'data'), { force: true });
  return t;
}

// --- lock file ----------------------------------------------------------------

/** The pid holding a volume's lock, or null (no lock, or its holder is dead). */
export function lockHolder(dir: string): number | null {
  return pidLockHolder(join(dir, 'lock'));
}

/**
 * Takes a volume's lock file `<dir>/lock` (lib/pid-lock.ts: the pid appears
 * atomically with the file; a lock whose pid is dead is taken over, by one
 * taker only). Throws E_LOCKED when a live process holds it. Returns the
 * release function.
 */
export async function acquireLock(dir: string, name: string): Promise<() => void> {
  let lock: PidLock;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    lock = await PidLock.acquire(join(dir, 'lock'), {
      heldError: (pid) =>
        GlideFsError.LOCKED(
          pid === null
            ? `volume '${name}': cannot take lock ${join(dir, 'lock')}`
            : pid === process.pid
              ? `volume '${name}' is already open in this process (pid ${pid})`
              : `volume '${name}' is open in another process (pid ${pid})`,
        ),
    });
  } catch (err) {
    if (err instanceof GlideFsError) throw err;
    throw GlideFsError.IO(`cannot take lock ${join(dir, 'lock')}: ${(err as Error).message}`, err);
  }
  return () => lock.releaseSync();
}
