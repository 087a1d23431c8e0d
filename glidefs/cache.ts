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
import { crc32 } from 'node:zlib';
import { fsyncDirSync, writeAllSync } from '../lib/fsync.js';
import { GlideFsError } from './errors.js';
import { lockHolder as pidLockHolder, PidLock } from '../lib/pid-lock.js';

export const STATE_NONE = 0;
export const STATE_CLEAN = 1;
export const STATE_DIRTY = 2;

/*
 * slot table (`slots`), format version 3 (FORMAT.md, "Cache")
 * header, 64 bytes:
 * ┌──────────────────┬─────────────┬───────────────┬───────────────┬────────────────┬──────────────┬───────────┬───────────┐
 * │ magic "GLFSSLOT" │ version u32 │ slotCount u32 │ blockSize u32 │ blockCount u32 │ boot id      │ 20 zeros  │ CRC-32    │
 * │ 8                │ LE, = 3     │ LE (N)        │ LE            │ LE             │ 16 (0 = ?)   │           │ of 0..59  │
 * └──────────────────┴─────────────┴───────────────┴───────────────┴────────────────┴──────────────┴───────────┴───────────┘
 * then N entries of 8 bytes: block index + 1 (u32 LE, 0 = free) | state u8 | check u24 LE
 *   state: 0 free, 1 clean, 2 dirty, 3 dirty + synced (its bytes were fdatasync'd after the slot got the block)
 *   check: CRC-32 of (slot u32 LE, block index + 1 u32 LE, state u8), low 24 bits — free entries too
 * The file is exactly 64 + 8*N bytes.
 *
 * Format version 2 (32-byte header with 8 zeros, entries with 3 zero bytes,
 * no check, no boot id) and version 1 (`state` + sparse `data`) are migrated
 * at open.
 */
const SLOTS_MAGIC = Buffer.from('GLFSSLOT', 'latin1');
const V1_MAGIC = Buffer.from('GLFSCST1', 'latin1');
export const CACHE_FORMAT_VERSION = 3;
export const SLOTS_HEADER = 64;
export const SLOT_ENTRY = 8;
const V2_HEADER = 32;
const V1_HEADER = 16;
/** Byte offset of the boot id in the format-3 header, and of the header's CRC-32. */
export const HEADER_BOOT_ID = 24;
export const HEADER_CRC = 60;
/** Internal slot state: dirty, and its bytes are on the local disk (fdatasync'd after the slot got the block). */
export const STATE_DIRTY_SYNCED = 3;
const NO_BOOT = Buffer.alloc(16);

let bootIdCache: Buffer | null | undefined;
/**
 * This machine's boot id (/proc/sys/kernel/random/boot_id, 16 bytes), or
 * null where there is none: then a flush syncs the cache before its log PUT
 * (as format 2 did) and dirty entries are always trusted.
 */
export function currentBootId(): Buffer | null {
  if (bootIdCache !== undefined) return bootIdCache;
  try {
    const hex = readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim().replace(/-/g, '');
    bootIdCache = /^[0-9a-f]{32}$/i.test(hex) ? Buffer.from(hex, 'hex') : null;
  } catch {
    bootIdCache = null;
  }
  return bootIdCache;
}

const crcScratch = Buffer.alloc(9);
/** The check of slot entry s: low 24 bits of CRC-32(slot, block + 1, state). */
export function entryCheck(s: number, blockPlus1: number, state: number): number {
  crcScratch.writeUInt32LE(s, 0);
  crcScratch.writeUInt32LE(blockPlus1, 4);
  crcScratch[8] = state;
  return crc32(crcScratch) & 0xffffff;
}

/** The CRC-32 the format-3 header carries at HEADER_CRC (over bytes 0..59). */
export function headerCheck(h: Uint8Array): number {
  return crc32(h.subarray(0, HEADER_CRC));
}

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

/** Byte 40 of the format-3 header: flags. Bit 0: a catch-up is owed (an open after a reboot dropped dirty blocks; cleared once the volume caught up with its log). */
export const HEADER_FLAGS = 40;
const FLAG_CATCH_UP_OWED = 1;

function encodeHeader(slotCount: number, blockSize: number, blockCount: number, bootId: Buffer, owed = false): Buffer {
  const h = Buffer.alloc(SLOTS_HEADER);
  SLOTS_MAGIC.copy(h, 0);
  h.writeUInt32LE(CACHE_FORMAT_VERSION, 8);
  h.writeUInt32LE(slotCount, 12);
  h.writeUInt32LE(blockSize, 16);
  h.writeUInt32LE(blockCount, 20);
  bootId.copy(h, HEADER_BOOT_ID);
  h[HEADER_FLAGS] = owed ? FLAG_CATCH_UP_OWED : 0;
  h.writeUInt32LE(headerCheck(h), HEADER_CRC);
  return h;
}

interface SlotTable {
  slotCount: number;
  blockSize: number;
  blockCount: number;
  /** per slot: block index + 1, 0 = free */
  blocks: Uint32Array;
  /** per slot: 0 free, 1 clean, 2 dirty, 3 dirty + synced */
  states: Uint8Array;
  /** the boot the table was last opened in (16 zero bytes: unknown) */
  bootId: Buffer;
  /** a catch-up with the log is owed before the catalog's view may be served (header flag) */
  owed: boolean;
  /** the format version read (a table of another version is rewritten at open) */
  version: number;
}

function corruptEntry(path: string, s: number, what: string): GlideFsError {
  return GlideFsError.CORRUPT(
    `cache slot table ${path}: slot ${s} ${what}; the unflushed writes held in this cache cannot be trusted ` +
      `(remove the directory to open the volume from the store: writes not yet flushed to it are lost)`,
  );
}

function decodeTable(raw: Buffer, path: string): SlotTable {
  if (raw.length < 12 || !raw.subarray(0, 8).equals(SLOTS_MAGIC)) {
    throw GlideFsError.CORRUPT(`cache slot table ${path} has no valid header`);
  }
  const version = raw.readUInt32LE(8);
  if (version > CACHE_FORMAT_VERSION) {
    throw GlideFsError.VERSION(`cache slot table ${path} has format version ${version}; this glidekv reads up to version ${CACHE_FORMAT_VERSION}`);
  }
  if (version === 2) return decodeV2(raw, path);
  if (version !== CACHE_FORMAT_VERSION) throw GlideFsError.CORRUPT(`cache slot table ${path} has unknown format version ${version}`);
  if (raw.length < SLOTS_HEADER || raw.readUInt32LE(HEADER_CRC) !== headerCheck(raw) || (raw[HEADER_FLAGS] & ~FLAG_CATCH_UP_OWED) !== 0 || !raw.subarray(HEADER_FLAGS + 1, HEADER_CRC).equals(Buffer.alloc(HEADER_CRC - HEADER_FLAGS - 1))) {
    throw GlideFsError.CORRUPT(`cache slot table ${path}: its header fails its check`);
  }
  const slotCount = raw.readUInt32LE(12);
  if (raw.length !== SLOTS_HEADER + slotCount * SLOT_ENTRY) {
    throw GlideFsError.CORRUPT(`cache slot table ${path} has ${raw.length} bytes, not ${SLOTS_HEADER + slotCount * SLOT_ENTRY} for ${slotCount} slots`);
  }
  const blocks = new Uint32Array(slotCount);
  const states = new Uint8Array(slotCount);
  for (let s = 0; s < slotCount; s++) {
    const o = SLOTS_HEADER + s * SLOT_ENTRY;
    const b = raw.readUInt32LE(o);
    const st = raw[o + 4];
    if ((raw[o + 5] | (raw[o + 6] << 8) | (raw[o + 7] << 16)) !== entryCheck(s, b, st)) {
      throw corruptEntry(path, s, `fails its check (block field ${b}, state ${st})`);
    }
    if (st > STATE_DIRTY_SYNCED || (b === 0) !== (st === 0)) throw corruptEntry(path, s, `has block field ${b} with state ${st}`);
    blocks[s] = b;
    states[s] = st;
  }
  return {
    slotCount,
    blockSize: raw.readUInt32LE(16),
    blockCount: raw.readUInt32LE(20),
    blocks,
    states,
    bootId: Buffer.from(raw.subarray(HEADER_BOOT_ID, HEADER_BOOT_ID + 16)),
    owed: (raw[HEADER_FLAGS] & FLAG_CATCH_UP_OWED) !== 0,
    version,
  };
}

/**
 * Format 2 (no checks): exactly 32 + 8*N bytes with its zero bytes zero, or
 * E_CORRUPT. Its dirty entries become dirty + synced: format 2 synced the
 * cache before every flush's PUT and trusted dirty entries after any restart,
 * so they keep that trust; its unknown states are dropped by sanitize.
 */
function decodeV2(raw: Buffer, path: string): SlotTable {
  if (raw.length < V2_HEADER) throw GlideFsError.CORRUPT(`cache slot table ${path} (format 2) has no valid header`);
  const slotCount = raw.readUInt32LE(12);
  if (raw.length !== V2_HEADER + slotCount * SLOT_ENTRY || raw.readUInt32LE(24) !== 0 || raw.readUInt32LE(28) !== 0) {
    throw GlideFsError.CORRUPT(`cache slot table ${path} (format 2) is damaged (${raw.length} bytes for ${slotCount} slots)`);
  }
  const blocks = new Uint32Array(slotCount);
  const states = new Uint8Array(slotCount);
  for (let s = 0; s < slotCount; s++) {
    const o = V2_HEADER + s * SLOT_ENTRY;
    if (raw[o + 5] !== 0 || raw[o + 6] !== 0 || raw[o + 7] !== 0) throw corruptEntry(path, s, '(format 2) has non-zero reserved bytes');
    blocks[s] = raw.readUInt32LE(o);
    const st = raw[o + 4];
    states[s] = st === STATE_DIRTY ? STATE_DIRTY_SYNCED : st === STATE_DIRTY_SYNCED ? 0xff : st;
  }
  return { slotCount, blockSize: raw.readUInt32LE(16), blockCount: raw.readUInt32LE(20), blocks, states, bootId: NO_BOOT, owed: false, version: 2 };
}

function encodeTable(t: SlotTable): Buffer {
  const buf = Buffer.alloc(SLOTS_HEADER + t.slotCount * SLOT_ENTRY);
  encodeHeader(t.slotCount, t.blockSize, t.blockCount, t.bootId, t.owed).copy(buf, 0);
  for (let s = 0; s < t.slotCount; s++) {
    const o = SLOTS_HEADER + s * SLOT_ENTRY;
    const b = t.states[s] === 0 ? 0 : t.blocks[s];
    const st = b === 0 ? 0 : t.states[s];
    buf.writeUInt32LE(b, o);
    buf[o + 4] = st;
    buf.writeUIntLE(entryCheck(s, b, st), o + 5, 3);
  }
  return buf;
}

/**
 * Told the path of `blocks` or `slots` each time this module has made it
 * durable (fdatasync, or the atomic rename of a new table): crash tests use
 * it to keep the image a power cut would leave. Null (the default) in use.
 */
export const cacheSyncObserver: { onSync: ((path: string) => void) | null } = { onSync: null };

function fdatasyncPath(fd: number, path: string): void {
  fdatasyncSync(fd);
  cacheSyncObserver.onSync?.(path);
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
  cacheSyncObserver.onSync?.(join(dir, name));
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
  /** fdatasyncs of `blocks` and of `slots` since open (the flush path should do none: FORMAT.md, "Dirty-set durability"). */
  dataSyncs: number;
  tableSyncs: number;
}

export class VolumeCache {
  readonly dir: string;
  readonly blockCount: number;
  readonly blockSize: number;
  readonly slotCount: number;
  /** Dirty blocks allowed before writers wait for a flush (dirtyLimitFor). */
  readonly dirtyLimit: number;
  readonly counters: CacheCounters = { evictions: 0, dataSyncs: 0, tableSyncs: 0 };
  /**
   * Dirty entries dropped at this open because the machine rebooted since the
   * table was last opened and their bytes had not been synced (their
   * committed bytes in the store are the truth: FORMAT.md, "Cache").
   */
  readonly distrusted: number;
  /** True when the table was last opened in another boot of this machine. */
  readonly rebooted: boolean;
  private owed: boolean;
  private readonly header: { slotCount: number; blockSize: number; blockCount: number; bootId: Buffer };
  /** per slot: block index + 1 (0 = free) and state (0 while a slot is being filled; 3 = dirty + synced) */
  private readonly slotBlock: Uint32Array;
  private readonly slotState: Uint8Array;
  private readonly ref: Uint8Array;
  private readonly blockSlot = new Map<number, number>();
  private readonly free: number[] = [];
  private readonly pins = new Map<number, number>();
  private hand = 0;
  private dirty = 0;
  private clean = 0;
  /** slots in state 3 (dirty + synced) */
  private syncedDirty = 0;
  /** per slot: the entry on the local disk may say 3 (set by sync(); cleared by the next table fdatasync once the slot left 3) */
  private readonly disk3: Uint8Array;
  /** some slot left state 3 since the table was last fdatasync'd (its entry on disk may still claim synced bytes) */
  private tableStale = false;
  private readonly bootKnown: boolean;
  private dataFd: number;
  private slotsFd: number;
  private readonly entry = Buffer.alloc(SLOT_ENTRY);
  private closed = false;

  private constructor(dir: string, t: SlotTable, dataFd: number, slotsFd: number, distrusted: number, rebooted: boolean, bootKnown: boolean) {
    this.dir = dir;
    this.distrusted = distrusted;
    this.rebooted = rebooted;
    this.owed = t.owed;
    this.header = { slotCount: t.slotCount, blockSize: t.blockSize, blockCount: t.blockCount, bootId: t.bootId };
    this.bootKnown = bootKnown;
    this.disk3 = new Uint8Array(t.slotCount);
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
      if (t.states[s] === STATE_DIRTY_SYNCED) {
        this.syncedDirty++;
        this.disk3[s] = 1; // open fdatasyncs the table
      }
      if (t.states[s] === STATE_DIRTY || t.states[s] === STATE_DIRTY_SYNCED) this.dirty++;
      else this.clean++;
    }
  }

  /**
   * Opens (creating or migrating if needed) the cache of a volume with room
   * for `slotCount` blocks. The caller holds the lock. A cache of another
   * slot count is resized: growing only rewrites the table; shrinking keeps
   * every dirty block (moved into the first slots) and drops clean ones, or
   * fails with E_CACHE_FULL when the dirty blocks alone do not fit.
   *
   * After a reboot (the table's boot id is not this boot's), dirty entries
   * whose bytes were never synced (state 2) are dropped: a power cut may have
   * lost their bytes, or left another block's old bytes in the slot; every
   * write of theirs that was acknowledged is in the store (FORMAT.md, "Cache").
   */
  static open(dir: string, blockCount: number, blockSize: number, slotCount: number, bootId: Buffer | null = currentBootId()): VolumeCache {
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
      // what a killed process left in the page cache reaches the disk before this open moves bytes between slots
      // (no entry on the disk may still claim dirty + synced bytes for a slot the file says is free or clean)
      const fd = openSync(slotsPath, 'r+');
      try {
        fdatasyncPath(fd, slotsPath);
      } finally {
        closeSync(fd);
      }
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
      t = { slotCount, blockSize, blockCount, blocks: new Uint32Array(slotCount), states: new Uint8Array(slotCount), bootId: bootId ?? NO_BOOT, owed: false, version: CACHE_FORMAT_VERSION };
      writeAtomic(dir, 'slots', encodeTable(t));
    }
    const me = bootId ?? NO_BOOT;
    const rebooted = bootId !== null && !t.bootId.equals(NO_BOOT) && !t.bootId.equals(bootId);
    let distrusted = 0;
    let changed = t.version !== CACHE_FORMAT_VERSION || !t.bootId.equals(me);
    if (rebooted) {
      for (let s = 0; s < t.slotCount; s++) {
        if (t.blocks[s] !== 0 && t.states[s] === STATE_DIRTY) {
          t.blocks[s] = 0;
          t.states[s] = 0;
          distrusted++;
        }
      }
    }
    t.bootId = me;
    if (distrusted > 0 && !t.owed) {
      t.owed = true; // until the volume has caught up with its log, also across a failed open and the next one
      changed = true;
    }
    t.version = CACHE_FORMAT_VERSION;
    const dataFd = openSync(dataPath, existsSync(dataPath) ? 'r+' : 'w+', 0o600);
    try {
      if (sanitize(t, dir, dataFd)) changed = true;
      if (t.slotCount !== slotCount) t = resize(t, dir, dataFd, slotCount);
      else if (changed) writeAtomic(dir, 'slots', encodeTable(t));
      // the data file never holds more than the slots (a crash after a shrink's table commit)
      if (fstatSync(dataFd).size > slotCount * blockSize) {
        ftruncateSync(dataFd, slotCount * blockSize);
        fdatasyncPath(dataFd, dataPath);
      }
    } catch (err) {
      closeSync(dataFd);
      throw err;
    }
    const slotsFd = openSync(slotsPath, 'r+');
    try {
      fdatasyncPath(slotsFd, slotsPath); // what the file says is on the disk: entries a killed process left in the page cache too
    } catch (err) {
      closeSync(dataFd);
      closeSync(slotsFd);
      throw err;
    }
    return new VolumeCache(dir, t, dataFd, slotsFd, distrusted, rebooted, bootId !== null);
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

  /** NONE, CLEAN or DIRTY (dirty + synced reads as DIRTY). */
  state(i: number): number {
    const s = this.blockSlot.get(i);
    if (s === undefined) return STATE_NONE;
    const st = this.slotState[s];
    return st === STATE_DIRTY_SYNCED ? STATE_DIRTY : st;
  }

  /**
   * True while a catch-up with the volume's log is owed: an open after a
   * reboot dropped dirty blocks, and the catalog may lack records whose
   * commit the power took (their blocks must not be served from it).
   */
  get catchUpOwed(): boolean {
    return this.owed;
  }

  /** The volume caught up with its log: clears the owed flag in the header (pwrite + fdatasync). */
  caughtUp(): void {
    if (!this.owed || this.closed) return;
    const h = this.header;
    writeAllSync(this.slotsFd, encodeHeader(h.slotCount, h.blockSize, h.blockCount, h.bootId, false), 0);
    this.syncTable();
    this.owed = false;
  }

  /** Dirty blocks whose bytes are synced to the local disk (state 3). */
  get syncedDirtyCount(): number {
    return this.syncedDirty;
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
    const st = blockPlus1 === 0 ? 0 : state;
    this.entry.writeUInt32LE(blockPlus1, 0);
    this.entry[4] = st;
    this.entry.writeUIntLE(entryCheck(s, blockPlus1, st), 5, 3);
    writeAllSync(this.slotsFd, this.entry, SLOTS_HEADER + s * SLOT_ENTRY);
  }

  /** Slot s leaves state 3 in memory: its entry on disk may still claim synced bytes until the table is fdatasync'd. */
  private leaveSynced(s: number): void {
    this.syncedDirty--;
    if (this.disk3[s]) this.tableStale = true;
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
    // an entry on the disk that may still say "block b, dirty + synced" must be gone before other bytes land in the slot
    if (this.disk3[s]) this.syncTable();
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
    if (prev === STATE_DIRTY_SYNCED && st === STATE_DIRTY) return; // stays synced: a flush syncs it before its PUT
    if (prev === STATE_DIRTY_SYNCED) this.leaveSynced(s);
    if (st === STATE_NONE) {
      this.writeEntry(s, 0, 0);
      this.blockSlot.delete(i);
      this.slotBlock[s] = 0;
      this.free.push(s);
    } else {
      this.writeEntry(s, i + 1, st);
    }
    this.slotState[s] = st;
    if (prev === STATE_DIRTY || prev === STATE_DIRTY_SYNCED) this.dirty--;
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
    for (let s = 0; s < this.slotCount; s++) {
      const st = this.slotState[s];
      if (st === STATE_DIRTY || st === STATE_DIRTY_SYNCED) out.push(this.slotBlock[s] - 1);
    }
    return out.sort((a, b) => a - b);
  }

  /**
   * Makes the cached bytes and then the dirty set durable on the local disk:
   * `blocks` is fdatasync'd, every dirty entry becomes dirty + synced (3),
   * then `slots` is fdatasync'd. A reboot keeps these blocks.
   */
  sync(): void {
    if (this.closed) return;
    fdatasyncPath(this.dataFd, join(this.dir, 'blocks'));
    this.counters.dataSyncs++;
    for (let s = 0; s < this.slotCount; s++) {
      if (this.slotState[s] !== STATE_DIRTY) continue;
      this.writeEntry(s, this.slotBlock[s], STATE_DIRTY_SYNCED);
      this.slotState[s] = STATE_DIRTY_SYNCED;
      this.syncedDirty++;
    }
    this.syncTable();
  }

  /** fdatasyncs `slots`: the disk's entries are the file's; none claims synced bytes it no longer has. */
  private syncTable(): void {
    fdatasyncPath(this.slotsFd, join(this.dir, 'slots'));
    this.counters.tableSyncs++;
    for (let s = 0; s < this.slotCount; s++) this.disk3[s] = this.slotState[s] === STATE_DIRTY_SYNCED ? 1 : 0;
    this.tableStale = false;
  }

  /**
   * What the cache must do before a flush's log PUT acknowledges the bytes it
   * takes now (FORMAT.md, "Dirty-set durability"). Nothing, as a rule: a
   * kill -9 keeps the page cache, and after a reboot every dirty block that
   * was never synced is dropped and read from the store, which holds every
   * acknowledged byte. But a dirty + synced block is trusted after a reboot,
   * so its bytes must be on the disk before a newer version of it is
   * acknowledged: then the whole cache is synced (as format 2 always did);
   * and an entry that left state 3 must not claim it on the disk any more:
   * then only the table is fdatasync'd. Without a boot id, always sync().
   */
  prepareAck(): void {
    if (this.closed) return;
    if (!this.bootKnown || this.syncedDirty > 0) this.sync();
    else if (this.tableStale) this.syncTable();
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
      for (let s = 0; s < t.slotCount; s++) if (t.blocks[s] !== 0 && (t.states[s] === STATE_DIRTY || t.states[s] === STATE_DIRTY_SYNCED)) n++;
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
 * reads zeros, as the sparse data file of format 1 did (only a format-2
 * table can hold one now). Returns true if it changed the table (the caller
 * rewrites it).
 */
function sanitize(t: SlotTable, dir: string, dataFd: number): boolean {
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
    const dirty = st === STATE_DIRTY || st === STATE_DIRTY_SYNCED;
    if (b >= t.blockCount || (st !== STATE_CLEAN && !dirty)) {
      if (dirty) throw GlideFsError.CORRUPT(`cache slot table of ${dir}: slot ${s} names block ${b} of a volume of ${t.blockCount} blocks`);
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
      if (t.states[other] !== STATE_CLEAN && !dirty) {
        drop(s);
        continue;
      }
      drop(other);
    }
    seen.set(b, s);
  }
  if (needSize > size) {
    ftruncateSync(dataFd, needSize);
    fdatasyncPath(dataFd, join(dir, 'blocks'));
  }
  return changed;
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
    const isDirty = (s: number) => t.blocks[s] !== 0 && (t.states[s] === STATE_DIRTY || t.states[s] === STATE_DIRTY_SYNCED);
    for (let s = 0; s < t.slotCount; s++) if (isDirty(s)) dirty++;
    if (dirty > n) {
      throw cacheFullError(
        `cache ${dir} holds ${dirty} dirty blocks (${dirty * t.blockSize} bytes, written but not yet flushed to the store); ` +
          `a cache size of ${n * t.blockSize} bytes cannot hold them: open it with a cache size of at least ${dirty * t.blockSize} bytes and flush first`,
      );
    }
    // keep the low slots' dirty entries, then their clean ones, as far as room allows
    for (let s = 0; s < n; s++) if (isDirty(s)) {
      blocks[s] = t.blocks[s];
      states[s] = t.states[s];
    }
    const targets: number[] = [];
    for (let s = n - 1; s >= 0; s--) if (states[s] === 0) targets.push(s); // free or clean in the old table
    const buf = Buffer.allocUnsafe(t.blockSize);
    let moved = 0;
    for (let s = n; s < t.slotCount; s++) {
      if (!isDirty(s)) continue;
      const to = targets.pop()!;
      preadFull(dataFd, buf, 0, t.blockSize, s * t.blockSize, `cache ${dir} slot ${s}`);
      writeAllSync(dataFd, buf, to * t.blockSize);
      blocks[to] = t.blocks[s];
      states[to] = t.states[s];
      moved++;
    }
    // clean entries of low slots that no dirty block took
    for (let s = 0; s < n; s++) {
      if (states[s] === 0 && t.blocks[s] !== 0 && t.states[s] === STATE_CLEAN) {
        blocks[s] = t.blocks[s];
        states[s] = STATE_CLEAN;
      }
    }
    if (moved > 0) fdatasyncPath(dataFd, join(dir, 'blocks'));
  }
  const out: SlotTable = { slotCount: n, blockSize: t.blockSize, blockCount: t.blockCount, blocks, states, bootId: t.bootId, owed: t.owed, version: CACHE_FORMAT_VERSION };
  writeAtomic(dir, 'slots', encodeTable(out));
  if (fstatSync(dataFd).size > n * t.blockSize) {
    ftruncateSync(dataFd, n * t.blockSize);
    fdatasyncPath(dataFd, join(dir, 'blocks'));
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
  // format 1 trusted its dirty blocks after any restart: they stay trusted (dirty + synced; their bytes are fdatasync'd below)
  const t: SlotTable = { slotCount, blockSize, blockCount, blocks: new Uint32Array(slotCount), states: new Uint8Array(slotCount), bootId: currentBootId() ?? NO_BOOT, owed: false, version: CACHE_FORMAT_VERSION };
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
          t.states[s] = STATE_DIRTY_SYNCED;
        });
      } finally {
        closeSync(old);
      }
    }
    fdatasyncPath(out, dataPath);
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
