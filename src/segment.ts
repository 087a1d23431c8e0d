/**
 * Segments: append-only log files `ns/<namespace>/<file id, 8 hex digits>.seg`, and the
 * footer that seals one. See FORMAT.md.
 *
 * ```
 * FOOTER = entries, then a 40-byte trailer that ends the file
 * entry (28 + keyLen bytes, + 16 when flags has POINTER: the blob hash follows the key):
 * ┌──────┬───────┬────────┬────────┬───────┬───────┬───────┬──────────┬──────┐
 * │ type │ flags │ keyLen │ offset │ vsize │ revLo │ revHi │ mtime    │ key  │
 * │ u8   │ u8    │ u16    │ u32    │ u32   │ u32   │ u32   │ f64 (ms) │      │
 * └──────┴───────┴────────┴────────┴───────┴───────┴───────┴──────────┴──────┘
 *  0      1       2        4        8       12      16      20         28
 * trailer (40 bytes):
 * ┌────────┬──────┬─────────┬─────────┬─────────┬─────────┬───────┬───────┬────────┬─────┐
 * │ magic  │ crc  │ version │ entries │ dataEnd │ bodyLen │ hwmLo │ hwmHi │ fileId │ rsv │
 * │ u32    │ u32  │ u32 = 1 │ u32     │ u32     │ u32     │ u32   │ u32   │ u32    │ u32 │
 * └────────┴──────┴─────────┴─────────┴─────────┴─────────┴───────┴───────┴────────┴─────┘
 *  0        4      8         12        16        20        24      28      32       36
 * magic = 0x544b4c47 ("GLKT"); crc = CRC-32 of entries || trailer[8, 40)
 * valid iff file size = dataEnd + bodyLen + 40, magic, version, fileId and crc match.
 * hwm = the engine's revision counter when the segment was sealed.
 * ```
 */
import { crc32, F_POINTER, HASH_SIZE } from './record.js';

export const FOOTER_MAGIC = 0x544b4c47;
/** The footer format version this code reads and writes. */
export const FOOTER_VERSION = 1;
export const TRAILER_SIZE = 40;
export const FOOTER_ENTRY_HEADER = 28;
const TWO32 = 0x1_0000_0000;

export function segmentName(fileId: number): string {
  return fileId.toString(16).padStart(8, '0') + '.seg';
}

/** The file id of a segment file name, or -1 when the name is not a segment. */
export function parseSegmentName(name: string): number {
  if (!/^[0-9a-f]{8}\.seg$/.test(name)) return -1;
  return parseInt(name.slice(0, 8), 16);
}

/** Accumulates footer entries for a segment being written. */
export class FooterBuilder {
  private buf = Buffer.allocUnsafe(4096);
  private len = 0;
  count = 0;

  add(type: number, flags: number, key: Uint8Array, offset: number, vsize: number, rev: number, mtime: number,
    hash?: Uint8Array): void {
    const ptr = (flags & F_POINTER) !== 0;
    if (ptr && (hash === undefined || hash.length !== HASH_SIZE)) throw new Error('footer: pointer entry without its hash');
    const need = FOOTER_ENTRY_HEADER + key.length + (ptr ? HASH_SIZE : 0);
    if (this.len + need > this.buf.length) {
      const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + need));
      this.buf.copy(b, 0, 0, this.len);
      this.buf = b;
    }
    const b = this.buf;
    const o = this.len;
    b[o] = type;
    b[o + 1] = flags;
    b.writeUInt16LE(key.length, o + 2);
    b.writeUInt32LE(offset, o + 4);
    b.writeUInt32LE(vsize, o + 8);
    b.writeUInt32LE(rev % TWO32, o + 12);
    b.writeUInt32LE(Math.floor(rev / TWO32), o + 16);
    b.writeDoubleLE(mtime, o + 20);
    b.set(key, o + FOOTER_ENTRY_HEADER);
    if (ptr) b.set(hash!, o + FOOTER_ENTRY_HEADER + key.length);
    this.len += need;
    this.count++;
  }

  /** The whole footer (entries + trailer) for a segment whose records end at dataEnd. */
  finish(fileId: number, dataEnd: number, hwm: number): Buffer {
    const out = Buffer.allocUnsafe(this.len + TRAILER_SIZE);
    this.buf.copy(out, 0, 0, this.len);
    const t = this.len;
    out.writeUInt32LE(FOOTER_MAGIC, t);
    out.writeUInt32LE(FOOTER_VERSION, t + 8);
    out.writeUInt32LE(this.count, t + 12);
    out.writeUInt32LE(dataEnd, t + 16);
    out.writeUInt32LE(this.len, t + 20);
    out.writeUInt32LE(hwm % TWO32, t + 24);
    out.writeUInt32LE(Math.floor(hwm / TWO32), t + 28);
    out.writeUInt32LE(fileId, t + 32);
    out.writeUInt32LE(0, t + 36);
    const c = crc32(out.subarray(t + 8), crc32(out.subarray(0, t)));
    out.writeUInt32LE(c >>> 0, t + 4);
    return out;
  }
}

export interface FooterEntry {
  type: number;
  flags: number;
  key: Buffer;
  offset: number;
  vsize: number;
  rev: number;
  mtime: number;
  /** Blob hash when flags has POINTER. */
  hash: Buffer | null;
}

export interface ParsedTrailer {
  entries: number;
  dataEnd: number;
  bodyLen: number;
  hwm: number;
}

/** Parses a trailer (the file's last 40 bytes); null when it is not a plausible trailer. */
export function parseTrailer(t: Buffer, fileSize: number, fileId: number): ParsedTrailer | null {
  if (t.length !== TRAILER_SIZE) return null;
  if (t.readUInt32LE(0) !== FOOTER_MAGIC || t.readUInt32LE(8) !== FOOTER_VERSION || t.readUInt32LE(32) !== fileId) return null;
  const dataEnd = t.readUInt32LE(16);
  const bodyLen = t.readUInt32LE(20);
  if (dataEnd + bodyLen + TRAILER_SIZE !== fileSize) return null;
  return { entries: t.readUInt32LE(12), dataEnd, bodyLen, hwm: t.readUInt32LE(24) + t.readUInt32LE(28) * TWO32 };
}

/**
 * Checks the footer crc and structure, then calls fn for each entry (the entry object is
 * reused between calls: copy what you keep). Returns false when the body is corrupt;
 * fn is then never called.
 */
export function readFooterBody(body: Buffer, trailer: Buffer, expectEntries: number, fn: (e: FooterEntry) => void): boolean {
  const c = crc32(trailer.subarray(8), crc32(body));
  if ((c >>> 0) !== trailer.readUInt32LE(4)) return false;
  // pass 1: structure only
  let o = 0;
  let n = 0;
  while (o < body.length) {
    if (body.length - o < FOOTER_ENTRY_HEADER) return false;
    const keyLen = body.readUInt16LE(o + 2);
    const hl = body[o + 1] & F_POINTER ? HASH_SIZE : 0;
    o += FOOTER_ENTRY_HEADER + keyLen + hl;
    if (o > body.length) return false;
    n++;
  }
  if (n !== expectEntries) return false;
  // pass 2: the entries
  const e: FooterEntry = { type: 0, flags: 0, key: body, offset: 0, vsize: 0, rev: 0, mtime: 0, hash: null };
  o = 0;
  while (o < body.length) {
    const keyLen = body.readUInt16LE(o + 2);
    const flags = body[o + 1];
    const hl = flags & F_POINTER ? HASH_SIZE : 0;
    const k = o + FOOTER_ENTRY_HEADER + keyLen;
    e.type = body[o];
    e.flags = flags;
    e.offset = body.readUInt32LE(o + 4);
    e.vsize = body.readUInt32LE(o + 8);
    e.rev = body.readUInt32LE(o + 12) + body.readUInt32LE(o + 16) * TWO32;
    e.mtime = body.readDoubleLE(o + 20);
    e.key = body.subarray(o + FOOTER_ENTRY_HEADER, k);
    e.hash = hl ? body.subarray(k, k + hl) : null;
    fn(e);
    o = k + hl;
  }
  return true;
}

/**
 * The version of a footer of ANOTHER format version, or null. `t` is the file's last 40 bytes,
 * `body` the footer entries the trailer claims (null when its lengths do not fit the file).
 * A trailer with the magic and a version other than FOOTER_VERSION is another version's,
 * unless it is one of ours whose version field alone is damaged: its crc then verifies with
 * the version set back to FOOTER_VERSION (a flipped bit is a damaged footer, scanned, not refused).
 */
export function otherFooterVersion(t: Buffer, body: Buffer | null): number | null {
  if (t.length !== TRAILER_SIZE || t.readUInt32LE(0) !== FOOTER_MAGIC) return null;
  const version = t.readUInt32LE(8);
  if (version === FOOTER_VERSION) return null;
  if (body !== null) {
    const fixed = Buffer.from(t);
    fixed.writeUInt32LE(FOOTER_VERSION, 8);
    if ((crc32(fixed.subarray(8), crc32(body)) >>> 0) === t.readUInt32LE(4)) return null;
  }
  return version;
}

/**
 * Did this file end with a footer (now damaged)? `t` = its last 40 bytes. At least two of
 * magic, file id, and lengths-fit-the-file hold: one flipped bit leaves two, a torn tail of
 * records matches them only by a 1 in 2^64 chance. `recordsEnd` = where the scan of its records
 * stopped: the footer is understood (only the footer is damaged) when the trailer's dataEnd,
 * or its bodyLen, puts the footer right there.
 */
export function damagedFooter(t: Buffer, fileSize: number, fileId: number, recordsEnd: number):
  { wasSealed: boolean; recordsWhole: boolean } {
  if (t.length !== TRAILER_SIZE) return { wasSealed: false, recordsWhole: false };
  const dataEnd = t.readUInt32LE(16);
  const bodyLen = t.readUInt32LE(20);
  const votes = (t.readUInt32LE(0) === FOOTER_MAGIC ? 1 : 0) + (t.readUInt32LE(32) === fileId ? 1 : 0) +
    (dataEnd + bodyLen + TRAILER_SIZE === fileSize ? 1 : 0);
  const wasSealed = votes >= 2;
  return { wasSealed, recordsWhole: wasSealed && (dataEnd === recordsEnd || recordsEnd + bodyLen + TRAILER_SIZE === fileSize) };
}
