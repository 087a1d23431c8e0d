/**
 * Log records: the objects of a volume's log in the store (FORMAT.md, "The
 * volume log"). One codec for the three kinds (checkpoint, flush, delete).
 *
 * ┌──────────────┬─────────┬──────┬───────┬────────────┬─────────┬──────────────┬─────────────┐
 * │ "GLFSLOG1"   │ version │ kind │ codec │ stored len │ raw len │ checksum     │ body        │
 * │ 8 bytes      │ u16 LE  │ u8   │ u8    │ u32 LE     │ u32 LE  │ 16 bytes     │ stored len  │
 * └──────────────┴─────────┴──────┴───────┴────────────┴─────────┴──────────────┴─────────────┘
 * checksum = BLAKE3-128(header bytes 0..20 ++ stored body)
 * raw body = u32 LE json length | JSON header | sector bytes (4096 each)
 */
import { promisify } from 'node:util';
import { deflateRaw, deflateRawSync, inflateRawSync } from 'node:zlib';
import { hash } from 'blake3';
import { GlideFsError } from './errors.js';

export const LOG_MAGIC = Buffer.from('GLFSLOG1', 'latin1');
export const LOG_VERSION = 1;
/** Version 2: a checkpoint that names a base layer (`meta.base`) or holds tombstones (`[index, null]`). Readers take 1 and 2. */
export const LOG_VERSION_LAYERED = 2;
export const SECTOR_SIZE = 4096;
export const SECTORS_PER_BLOCK = 32;
export const FULL_MASK = 0xffffffff;
const HEADER = 36;

export const KIND_CHECKPOINT = 1;
export const KIND_FLUSH = 2;
export const KIND_DELETE = 3;

const CODEC_NONE = 0;
const CODEC_DEFLATE = 1;

const deflateAsync = promisify(deflateRaw);
/** Bodies up to this size are deflated on the main thread: a thread-pool hop costs more than the work (and queues behind the FUSE daemon's file I/O). */
const SYNC_DEFLATE_MAX = 256 * 1024;
/** deflate level 1: on a fsync's few sectors it saves about what level 6 does, in a fraction of the time. */
const DEFLATE_LEVEL = 1;

export interface VolumeMeta {
  name: string;
  sizeBytes: number;
  parent: string | null;
  parentUuid: string | null;
  parentSeq: number | null;
  /** uuid of the family's root volume. */
  family: string;
  /**
   * The layer this checkpoint's blocks lie on (FORMAT.md, "Layers"): the state
   * of volume `volume` as of its checkpoint record `seq`. Absent/null: none
   * (the blocks are the whole map).
   */
  base?: { volume: string; seq: number } | null;
  snapshot: boolean;
  createdAt: number;
}

interface Common {
  volume: string;
  seq: number;
  time: number;
  writer: string;
}

export interface CheckpointRecord extends Common {
  kind: typeof KIND_CHECKPOINT;
  meta: VolumeMeta;
  /** [block index, hash] of every non-hole block; [index, null] = a hole over the base (a tombstone, version 2). */
  blocks: Array<[number, string | null]>;
}

export interface SectorEntry {
  index: number;
  mask: number;
  /** Hash of the whole block after the sectors are applied. */
  hash: string;
  /** popcount(mask) * 4096 bytes, set bits ascending. */
  data: Buffer;
}

export interface FlushRecord extends Common {
  kind: typeof KIND_FLUSH;
  /** Blocks rewritten whole: [index, hash or null for a hole]. */
  blocks: Array<[number, string | null]>;
  sectors: SectorEntry[];
}

export interface DeleteRecord extends Common {
  kind: typeof KIND_DELETE;
}

export type LogRecord = CheckpointRecord | FlushRecord | DeleteRecord;

export function popcount(m: number): number {
  m = m - ((m >>> 1) & 0x55555555);
  m = (m & 0x33333333) + ((m >>> 2) & 0x33333333);
  return (((m + (m >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

function checksum(head: Buffer, body: Buffer): Buffer {
  return hash(Buffer.concat([head.subarray(0, 20), body]), { length: 16 }) as Buffer;
}

function rawBody(rec: LogRecord): Buffer {
  const { kind: _k, ...rest } = rec as LogRecord & { sectors?: SectorEntry[] };
  let tail: Buffer[] = [];
  let json: unknown = rest;
  if (rec.kind === KIND_FLUSH) {
    json = { ...rest, sectors: rec.sectors.map((s) => [s.index, s.mask >>> 0, s.hash]) };
    tail = rec.sectors.map((s) => {
      if (s.data.length !== popcount(s.mask) * SECTOR_SIZE) throw GlideFsError.INVALID(`sector data of block ${s.index} does not match its mask`);
      return s.data;
    });
  }
  const j = Buffer.from(JSON.stringify(json), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(j.length, 0);
  return Buffer.concat([len, j, ...tail]);
}

function frame(kind: number, codec: number, stored: Buffer, rawLen: number, version: number): Buffer {
  const head = Buffer.alloc(HEADER);
  LOG_MAGIC.copy(head, 0);
  head.writeUInt16LE(version, 8);
  head.writeUInt8(kind, 10);
  head.writeUInt8(codec, 11);
  head.writeUInt32LE(stored.length, 12);
  head.writeUInt32LE(rawLen, 16);
  checksum(head, stored).copy(head, 20);
  return Buffer.concat([head, stored]);
}

/** Encodes a record, compressed (deflate-raw) when that makes it smaller. */
export async function encodeRecord(rec: LogRecord): Promise<Buffer> {
  const raw = rawBody(rec);
  const version =
    rec.kind === KIND_CHECKPOINT && (rec.meta.base || rec.blocks.some((b) => b[1] === null)) ? LOG_VERSION_LAYERED : LOG_VERSION;
  const z = raw.length <= SYNC_DEFLATE_MAX ? deflateRawSync(raw, { level: DEFLATE_LEVEL }) : ((await deflateAsync(raw, { level: DEFLATE_LEVEL })) as Buffer);
  return z.length < raw.length ? frame(rec.kind, CODEC_DEFLATE, z, raw.length, version) : frame(rec.kind, CODEC_NONE, raw, raw.length, version);
}

/** Decodes and verifies a record; `E_CORRUPT` on any damage, `E_VERSION` on another format version. */
export function decodeRecord(buf: Buffer, where: string): LogRecord {
  if (buf.length < HEADER || !buf.subarray(0, 8).equals(LOG_MAGIC)) throw GlideFsError.CORRUPT(`log record ${where} has no valid header`);
  const version = buf.readUInt16LE(8);
  if (version !== LOG_VERSION && version !== LOG_VERSION_LAYERED) {
    throw new GlideFsError('E_VERSION', `log record ${where} has format version ${version}, this glidekv reads versions ${LOG_VERSION} and ${LOG_VERSION_LAYERED}`);
  }
  const kind = buf.readUInt8(10);
  const codec = buf.readUInt8(11);
  const storedLen = buf.readUInt32LE(12);
  const rawLen = buf.readUInt32LE(16);
  if (buf.length !== HEADER + storedLen) throw GlideFsError.CORRUPT(`log record ${where} is ${buf.length} bytes, its header says ${HEADER + storedLen}`);
  const stored = buf.subarray(HEADER);
  if (!checksum(buf, stored).equals(buf.subarray(20, HEADER))) throw GlideFsError.CORRUPT(`log record ${where} fails its checksum`);
  let raw: Buffer;
  let jlen: number;
  let json: Record<string, unknown>;
  // a checksum only says the bytes are what their writer wrote: a body that does not inflate, parse
  // or have the shape readers index is E_CORRUPT too, never a raw zlib/Range/Syntax/TypeError
  try {
    if (codec === CODEC_NONE) raw = stored;
    else if (codec === CODEC_DEFLATE) raw = inflateRawSync(stored, { maxOutputLength: Math.max(1, rawLen) });
    else throw GlideFsError.CORRUPT(`log record ${where} has unknown codec ${codec}`);
    if (raw.length !== rawLen) throw GlideFsError.CORRUPT(`log record ${where} inflates to ${raw.length} bytes, header says ${rawLen}`);
    jlen = raw.length >= 4 ? raw.readUInt32LE(0) : -1;
    if (jlen < 0 || 4 + jlen > raw.length) throw GlideFsError.CORRUPT(`log record ${where}: its JSON header runs past the body`);
    json = JSON.parse(raw.subarray(4, 4 + jlen).toString('utf8')) as Record<string, unknown>;
    checkRecordShape(json, kind);
  } catch (err) {
    if (err instanceof GlideFsError) throw err;
    throw GlideFsError.CORRUPT(`log record ${where} is unreadable: ${(err as Error).message}`, err);
  }
  if (kind === KIND_CHECKPOINT) return { ...(json as object), kind } as CheckpointRecord;
  if (kind === KIND_DELETE) return { ...(json as object), kind } as DeleteRecord;
  if (kind !== KIND_FLUSH) throw GlideFsError.CORRUPT(`log record ${where} has unknown kind ${kind}`);
  let pos = 4 + jlen;
  const sectors: SectorEntry[] = (json.sectors as Array<[number, number, string]>).map(([index, mask, h]) => {
    const n = popcount(mask) * SECTOR_SIZE;
    const data = raw.subarray(pos, pos + n);
    pos += n;
    if (data.length !== n) throw GlideFsError.CORRUPT(`log record ${where}: sector data of block ${index} is short`);
    return { index, mask: mask >>> 0, hash: h, data };
  });
  if (pos !== raw.length) throw GlideFsError.CORRUPT(`log record ${where} has ${raw.length - pos} trailing bytes`);
  return { ...(json as object), kind, sectors } as FlushRecord;
}

/** Throws (plain Error, made E_CORRUPT by decodeRecord) unless the JSON header has the fields readers index. */
function checkRecordShape(j: unknown, kind: number): void {
  const nat = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
  const hash = (x: unknown) => typeof x === 'string' && /^[0-9a-f]{32}$/.test(x);
  if (j === null || typeof j !== 'object' || Array.isArray(j)) throw new Error('the header is not an object');
  const r = j as Record<string, unknown>;
  if (typeof r.volume !== 'string' || !nat(r.seq) || (r.seq as number) < 1 || typeof r.writer !== 'string' || typeof r.time !== 'number') {
    throw new Error('volume, seq, writer or time is missing or malformed');
  }
  if (kind === KIND_DELETE) return;
  const blocks = r.blocks;
  if (!Array.isArray(blocks) || !blocks.every((b) => Array.isArray(b) && b.length === 2 && nat(b[0]) && (b[1] === null || hash(b[1])))) {
    throw new Error('blocks is not a list of [index, hash|null]');
  }
  if (kind === KIND_CHECKPOINT) {
    const m = r.meta as Record<string, unknown> | null;
    if (m === null || typeof m !== 'object' || typeof m.name !== 'string' || !nat(m.sizeBytes) || typeof m.family !== 'string') throw new Error('meta is malformed');
    // a checkpoint names each block of its volume once (restore inserts them as the block map's rows)
    const nblocks = (m.sizeBytes as number) / (SECTOR_SIZE * SECTORS_PER_BLOCK);
    if (!Number.isInteger(nblocks) || nblocks < 1) throw new Error('meta.sizeBytes is not a whole number of blocks');
    if (!blocks.every((b) => (b as [number])[0] < nblocks)) throw new Error('blocks names a block past the volume');
    if (new Set(blocks.map((b) => (b as [number])[0])).size !== blocks.length) throw new Error('blocks names a block index twice');
    return;
  }
  const sectors = r.sectors;
  if (!Array.isArray(sectors) || !sectors.every((e) => Array.isArray(e) && e.length === 3 && nat(e[0]) && nat(e[1]) && (e[1] as number) <= FULL_MASK && hash(e[2]))) {
    throw new Error('sectors is not a list of [index, mask, hash]');
  }
}

/** Applies a sector entry's bytes onto a whole block (in place). */
export function applySectors(block: Buffer, e: { mask: number; data: Buffer }): void {
  let pos = 0;
  for (let s = 0; s < SECTORS_PER_BLOCK; s++) {
    if (((e.mask >>> s) & 1) === 0) continue;
    e.data.copy(block, s * SECTOR_SIZE, pos, pos + SECTOR_SIZE);
    pos += SECTOR_SIZE;
  }
}

/** Copies the sectors of `mask` out of a whole block. */
export function extractSectors(block: Buffer, mask: number): Buffer {
  const out = Buffer.allocUnsafe(popcount(mask) * SECTOR_SIZE);
  let pos = 0;
  for (let s = 0; s < SECTORS_PER_BLOCK; s++) {
    if (((mask >>> s) & 1) === 0) continue;
    block.copy(out, pos, s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE);
    pos += SECTOR_SIZE;
  }
  return out;
}

/** Mask of the sectors that bytes [from, to) of a block touch. */
export function sectorMask(from: number, to: number): number {
  const a = Math.floor(from / SECTOR_SIZE);
  const b = Math.ceil(to / SECTOR_SIZE);
  if (a === 0 && b === SECTORS_PER_BLOCK) return FULL_MASK;
  return (((1 << (b - a)) - 1) << a) >>> 0;
}

export function logPrefix(prefix: string, uuid: string): string {
  return `${prefix ? prefix + '/' : ''}volumes/${uuid}/log/`;
}

export function volumesPrefix(prefix: string): string {
  return `${prefix ? prefix + '/' : ''}volumes/`;
}

export function logKey(prefix: string, uuid: string, seq: number): string {
  return logPrefix(prefix, uuid) + seq.toString(16).padStart(16, '0');
}

/** Parses `<prefix>/volumes/<uuid>/log/<seq>`; null if it is not one. */
export function parseLogKey(prefix: string, key: string): { uuid: string; seq: number } | null {
  const vp = volumesPrefix(prefix);
  if (!key.startsWith(vp)) return null;
  const m = /^([0-9a-f]{32})\/log\/([0-9a-f]{16})$/.exec(key.slice(vp.length));
  if (!m) return null;
  return { uuid: m[1], seq: parseInt(m[2], 16) };
}
