/**
 * The log record codec. One record per put, delete, or batch commit; see FORMAT.md.
 *
 * ```
 * RECORD (little-endian)
 * ┌──────┬──────┬──────┬───────┬───────┬──────┬────────┬───────┬───────┬───────┬─────────┬──────┬──────┬─────────┐
 * │ crc  │ len  │ type │ flags │ nsLen │ rsv  │ keyLen │ rsv   │ revLo │ revHi │ mtime   │ vsize│  ns  │ key │ payload │
 * │ u32  │ u32  │ u8   │ u8    │ u8    │ u8   │ u16    │ u16   │ u32   │ u32   │ f64 (ms)│ u32  │ nsLen│keyLen│         │
 * └──────┴──────┴──────┴───────┴───────┴──────┴────────┴───────┴───────┴───────┴─────────┴──────┴──────┴──────┴─────────┘
 *  0      4      8      9       10      11     12       14      16      20      24        32     36
 * crc  = CRC-32 (IEEE, zlib.crc32) of bytes [4, len)
 * len  = total record length, header (36) + nsLen + keyLen + payload
 * type = 1 PUT, 2 DEL (tombstone), 3 COMMIT (ends a batch; vsize = number of batch records)
 * flags: bit0 POINTER (payload is a 16-byte blake3-128 blob hash, vsize = the blob's size),
 *        bit1 BATCH (part of a batch; valid only once the COMMIT of the same revision follows)
 * payload: PUT inline = vsize value bytes; PUT pointer = 16 bytes; DEL, COMMIT = none
 * ```
 */
import zlib from 'node:zlib';

export const HEADER_SIZE = 36;
export const T_PUT = 1;
export const T_DEL = 2;
export const T_COMMIT = 3;
export const F_POINTER = 1;
export const F_BATCH = 2;
export const HASH_SIZE = 16;
const TWO32 = 0x1_0000_0000;

export const crc32: (data: Uint8Array, value?: number) => number = (zlib as unknown as {
  crc32: (data: Uint8Array, value?: number) => number;
}).crc32;

/** Byte length of a record, from its parts. */
export function recordSize(nsLen: number, keyLen: number, type: number, flags: number, valueSize: number): number {
  if (type !== T_PUT) return HEADER_SIZE + nsLen + keyLen;
  return HEADER_SIZE + nsLen + keyLen + (flags & F_POINTER ? HASH_SIZE : valueSize);
}

/**
 * Encodes one record into `buf` at `off` (buf must have room: see recordSize).
 * `payload` is the inline value, the 16-byte hash (F_POINTER), or null. Returns the length.
 */
export function encodeRecord(
  buf: Buffer, off: number, type: number, flags: number, ns: Buffer, key: Buffer,
  revision: number, mtime: number, valueSize: number, payload: Uint8Array | null,
): number {
  const plen = payload === null ? 0 : payload.length;
  const len = HEADER_SIZE + ns.length + key.length + plen;
  buf.writeUInt32LE(len, off + 4);
  buf[off + 8] = type;
  buf[off + 9] = flags;
  buf[off + 10] = ns.length;
  buf[off + 11] = 0;
  buf.writeUInt16LE(key.length, off + 12);
  buf.writeUInt16LE(0, off + 14);
  buf.writeUInt32LE(revision % TWO32, off + 16);
  buf.writeUInt32LE(Math.floor(revision / TWO32), off + 20);
  buf.writeDoubleLE(mtime, off + 24);
  buf.writeUInt32LE(valueSize, off + 32);
  let p = off + HEADER_SIZE;
  p += ns.copy(buf, p);
  p += key.copy(buf, p);
  if (payload !== null) {
    buf.set(payload, p);
    p += plen;
  }
  buf.writeUInt32LE(crc32(buf.subarray(off + 4, off + len)) >>> 0, off);
  return len;
}

/** A decoded record header, reused across calls (no allocation per record). */
export class RecordView {
  off = 0;
  len = 0;
  type = 0;
  flags = 0;
  nsLen = 0;
  keyLen = 0;
  revision = 0;
  mtime = 0;
  valueSize = 0;
  /** Absolute offsets into the buffer that was decoded. */
  nsOff = 0;
  keyOff = 0;
  payloadOff = 0;
  payloadLen = 0;
}

/**
 * Validates and decodes the record at buf[off..end). Returns false when the bytes
 * there are not a whole, intact record (torn, corrupt, or not a record at all).
 */
export function decodeRecord(buf: Buffer, off: number, end: number, out: RecordView): boolean {
  if (end - off < HEADER_SIZE) return false;
  const len = buf.readUInt32LE(off + 4);
  if (len < HEADER_SIZE || len > end - off) return false;
  const type = buf[off + 8];
  const flags = buf[off + 9];
  const nsLen = buf[off + 10];
  const keyLen = buf.readUInt16LE(off + 12);
  const valueSize = buf.readUInt32LE(off + 32);
  if (type < T_PUT || type > T_COMMIT || (flags & ~3) !== 0) return false;
  if (len !== recordSize(nsLen, keyLen, type, flags, valueSize)) return false;
  if ((crc32(buf.subarray(off + 4, off + len)) >>> 0) !== buf.readUInt32LE(off)) return false;
  out.off = off;
  out.len = len;
  out.type = type;
  out.flags = flags;
  out.nsLen = nsLen;
  out.keyLen = keyLen;
  out.revision = buf.readUInt32LE(off + 16) + buf.readUInt32LE(off + 20) * TWO32;
  out.mtime = buf.readDoubleLE(off + 24);
  out.valueSize = valueSize;
  out.nsOff = off + HEADER_SIZE;
  out.keyOff = out.nsOff + nsLen;
  out.payloadOff = out.keyOff + keyLen;
  out.payloadLen = len - (out.payloadOff - off);
  return true;
}

/**
 * Clears the BATCH flag of the whole, intact record at buf[off, off+len) and recomputes its crc.
 * Reclaim copies a live batch record this way: its batch was committed, and the copy (which
 * has no COMMIT next to it) must count on its own when a scan reads it.
 */
export function unbatchRecord(buf: Buffer, off: number, len: number): void {
  if ((buf[off + 9] & F_BATCH) === 0) return;
  buf[off + 9] &= ~F_BATCH;
  buf.writeUInt32LE(crc32(buf.subarray(off + 4, off + len)) >>> 0, off);
}
