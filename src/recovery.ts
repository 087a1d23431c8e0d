/**
 * Recovery: rebuilding a namespace's keydir from its segments on open. See FORMAT.md.
 *
 * - A segment with a valid footer is read through its footer only (values are not read).
 * - A segment without a valid footer (the active one, or one whose footer is torn) is
 *   scanned record by record; the scan stops at the first record that is not whole and
 *   intact, and the file is truncated there (the torn tail). Batch records count only
 *   when the COMMIT of their revision follows; an uncommitted batch is cut off too.
 * - Per key the record with the highest revision wins, tombstones included (they are kept
 *   in the keydir while segments are merged, then dropped).
 * - Every unsealed segment except the newest is sealed (footer written, fsynced); the
 *   newest unsealed one stays the active segment.
 */
import type { FileIo } from './file-io.js';
import { readFully, writeFully } from './file-io.js';
import { decodeRecord, F_BATCH, F_POINTER, HASH_SIZE, RecordView, T_COMMIT, T_DEL, T_PUT } from './record.js';
import { FooterBuilder, parseTrailer, readFooterBody, TRAILER_SIZE } from './segment.js';
import { KF_POINTER, KF_TOMBSTONE } from './keydir.js';
import type { NsState, SegInfo } from './ns-state.js';

/**
 * Walks the records in buf[start, end) and calls onRecord for each committed PUT/DEL
 * (batch members only once their COMMIT is seen, in order). Returns the offset just past
 * the last committed record: everything after it is a torn or uncommitted tail.
 */
export function scanRecords(buf: Buffer, start: number, end: number, onRecord: (v: RecordView, buf: Buffer) => void): number {
  const v = new RecordView();
  const bv = new RecordView();
  let off = start;
  let committedEnd = start;
  let batch: number[] = [];
  let batchRev = -1;
  while (off < end) {
    if (!decodeRecord(buf, off, end, v)) break;
    if (v.type === T_COMMIT) {
      if (batch.length === 0 || batch.length !== v.valueSize || v.revision !== batchRev) break;
      for (const o of batch) {
        decodeRecord(buf, o, end, bv);
        onRecord(bv, buf);
      }
      batch = [];
      batchRev = -1;
      committedEnd = off + v.len;
    } else if ((v.flags & F_BATCH) !== 0) {
      if (batch.length > 0 && v.revision !== batchRev) break;
      batchRev = v.revision;
      batch.push(off);
    } else {
      if (batch.length > 0) break;
      onRecord(v, buf);
      committedEnd = off + v.len;
    }
    off += v.len;
  }
  return committedEnd;
}

/** Max-revision-wins merge of one record or footer entry into the keydir. */
function merge(st: NsState, key: Uint8Array, type: number, flags: number, fileId: number, offset: number,
  vsize: number, rev: number, mtime: number, hash: Buffer | null): void {
  const k = st.keydir;
  const e = k.find(key);
  // '>' not '>=': within one batch (one revision) the later record wins, as it did in memory
  if (e >= 0 && k.rev[e] > rev) return;
  if (type === T_DEL) k.set(key, fileId, offset, 0, rev, mtime, KF_TOMBSTONE);
  else k.set(key, fileId, offset, vsize, rev, mtime, flags & KF_POINTER, hash);
}

export interface RecoveredNamespace {
  maxRev: number;
  /** Segments that had no valid footer, ascending by id. */
  unsealed: SegInfo[];
  /** Bytes cut off torn tails. */
  truncatedBytes: number;
  /** Segments read through their footer / by scanning. */
  footerReads: number;
  scans: number;
}

/** Loads the given segments (ascending ids) of a namespace into its keydir. */
export async function loadSegments(io: FileIo, st: NsState, ids: number[]): Promise<RecoveredNamespace> {
  const out: RecoveredNamespace = { maxRev: 0, unsealed: [], truncatedBytes: 0, footerReads: 0, scans: 0 };
  for (const id of ids) {
    const p = st.segPath(id);
    const fd = await io.open(p, 'r+');
    try {
      const size = await io.fstatSize(fd);
      let ok = false;
      if (size >= TRAILER_SIZE) {
        const t = Buffer.alloc(TRAILER_SIZE);
        await readFully(io, fd, t, 0, TRAILER_SIZE, size - TRAILER_SIZE);
        const tr = parseTrailer(t, size, id);
        if (tr !== null) {
          const body = Buffer.alloc(tr.bodyLen);
          if ((await readFully(io, fd, body, 0, tr.bodyLen, tr.dataEnd)) === tr.bodyLen) {
            ok = readFooterBody(body, t, tr.entries, (en) => {
              merge(st, en.key, en.type, en.flags, id, en.offset, en.vsize, en.rev, en.mtime, en.hash ? Buffer.from(en.hash) : null);
              if (en.rev > out.maxRev) out.maxRev = en.rev;
            });
          }
          if (ok) {
            if (tr.hwm > out.maxRev) out.maxRev = tr.hwm;
            st.addSegment(id, tr.dataEnd, true);
            out.footerReads++;
          }
        }
      }
      if (!ok) {
        out.scans++;
        const buf = Buffer.allocUnsafe(size);
        const n = await readFully(io, fd, buf, 0, size, 0);
        const end = scanRecords(buf, 0, n, (v, b) => {
          const key = b.subarray(v.keyOff, v.keyOff + v.keyLen);
          const hash = (v.flags & F_POINTER) !== 0 ? Buffer.from(b.subarray(v.payloadOff, v.payloadOff + HASH_SIZE)) : null;
          merge(st, key, v.type, v.flags, id, v.off, v.type === T_PUT ? v.valueSize : 0, v.revision, v.mtime, hash);
          if (v.revision > out.maxRev) out.maxRev = v.revision;
        });
        if (end < size) {
          await io.ftruncate(fd, end);
          await io.fsync(fd);
          out.truncatedBytes += size - end;
        }
        out.unsealed.push(st.addSegment(id, end, false));
      }
    } finally {
      await io.close(fd);
    }
  }
  return out;
}

/**
 * Adds to `fb` the keydir entries that live in segment `id`: live records, and (during
 * recovery) tombstones. Together with the tombstones the writer added, that is the footer.
 */
export function addKeydirEntries(st: NsState, id: number, fb: FooterBuilder): void {
  const k = st.keydir;
  for (let e = 0, n = k.entryLimit; e < n; e++) {
    if (!k.isLive(e) || k.fileId[e] !== id) continue;
    const tomb = (k.flags[e] & KF_TOMBSTONE) !== 0;
    const flags = tomb ? 0 : k.flags[e] & KF_POINTER;
    fb.add(tomb ? T_DEL : T_PUT, flags, k.keyView(e), k.offset[e], k.vsize[e], k.rev[e], k.mtime[e], k.pointerHash(e));
  }
}

/** Writes the footer of a segment whose records end at seg.size, and fsyncs it. */
export async function writeFooter(io: FileIo, fd: number, seg: SegInfo, fb: FooterBuilder, hwm: number): Promise<void> {
  const footer = fb.finish(seg.id, seg.size, hwm);
  await writeFully(io, fd, footer, 0, footer.length, seg.size);
  await io.fsync(fd);
  seg.sealed = true;
}

/** Seals a segment left unsealed (not the newest) during recovery. */
export async function sealRecovered(io: FileIo, st: NsState, seg: SegInfo, hwm: number): Promise<void> {
  const fb = new FooterBuilder();
  addKeydirEntries(st, seg.id, fb);
  const fd = await io.open(seg.path, 'r+');
  try {
    await writeFooter(io, fd, seg, fb, hwm);
  } finally {
    await io.close(fd);
  }
}

/** Drops the tombstones merge() kept in the keydir. */
export function dropTombstones(st: NsState): void {
  const k = st.keydir;
  for (let e = 0, n = k.entryLimit; e < n; e++) {
    if (k.isLive(e) && (k.flags[e] & KF_TOMBSTONE) !== 0) k.remove(e);
  }
}
