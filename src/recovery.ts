/**
 * Recovery: rebuilding a namespace's keydir from its segments on open. See FORMAT.md.
 *
 * - A segment with a valid footer is read through its footer only (values are not read).
 * - A segment without a valid footer (the active one, or one whose footer is torn) is
 *   scanned record by record; the scan stops at the first record that is not whole and
 *   intact, and the file is truncated there (the torn tail). Batch records count only
 *   when the COMMIT of their revision follows; an uncommitted batch is cut off too.
 * - Recovery cuts only what it understands, a torn tail: a segment that was sealed and
 *   whose footer is damaged (one flipped bit) loses nothing: its records are scanned (its
 *   batch records are committed copies) and a new footer replaces the damaged one. If a
 *   record of such a segment is damaged too, the unreadable bytes are saved to a side file
 *   (`<id>.seg.damaged-<offset>`) before the cut, and a warning names it.
 * - A footer of another format version is refused (E_VERSION) before anything is changed
 *   (checkSegmentVersions runs over every segment first).
 * - Per key the record with the highest revision wins, tombstones included (they are kept
 *   in the keydir while segments are merged, then dropped).
 * - Every unsealed segment except the newest is sealed (footer written, fsynced); the
 *   newest unsealed one stays the active segment.
 */
import path from 'node:path';
import type { FileIo } from './file-io.js';
import { readFully, writeFully } from './file-io.js';
import { KvError } from './errors.js';
import { decodeRecord, F_BATCH, F_POINTER, HASH_SIZE, RecordView, T_COMMIT, T_DEL, T_PUT } from './record.js';
import {
  damagedFooter, FOOTER_VERSION, FooterBuilder, otherFooterVersion, parseSegmentName, parseTrailer, readFooterBody,
  TRAILER_SIZE,
} from './segment.js';
import { KF_POINTER, KF_TOMBSTONE, MAX_REVISION } from './keydir.js';
import type { NsState, SegInfo } from './ns-state.js';

/**
 * Walks the records in buf[start, end) and calls onRecord for each committed PUT/DEL
 * (batch members once their COMMIT is seen, in order). A run of batch records followed by a
 * record that is not its COMMIT counts as committed: the writer always writes a COMMIT right
 * after its batch (one write), so such a run is a reclaim copy of a committed batch (written
 * by a glidekv before copies were unbatched). With `sealed` (the records of a segment that
 * was sealed: nothing was being appended) a run at the very end counts too, for the same reason.
 * Returns `committedEnd`, the offset just past the last counted record (everything after it is
 * a torn or uncommitted tail), and `decodedEnd`, where the first bytes that are not an intact
 * record start.
 */
export function scanSegment(buf: Buffer, start: number, end: number, onRecord: (v: RecordView, buf: Buffer) => void,
  sealed = false): { committedEnd: number; decodedEnd: number } {
  const v = new RecordView();
  const bv = new RecordView();
  let off = start;
  let committedEnd = start;
  let batch: number[] = [];
  let batchRev = -1;
  const flushCopies = (upTo: number): void => {
    for (const o of batch) {
      decodeRecord(buf, o, end, bv);
      onRecord(bv, buf);
    }
    batch = [];
    batchRev = -1;
    committedEnd = upTo;
  };
  while (off < end) {
    if (!decodeRecord(buf, off, end, v)) break;
    if (v.type === T_COMMIT) {
      if (batch.length === 0 || batch.length !== v.valueSize || v.revision !== batchRev) break;
      flushCopies(off + v.len);
    } else if ((v.flags & F_BATCH) !== 0) {
      if (batch.length > 0 && v.revision !== batchRev) flushCopies(off);
      batchRev = v.revision;
      batch.push(off);
    } else {
      if (batch.length > 0) flushCopies(off);
      onRecord(v, buf);
      committedEnd = off + v.len;
    }
    off += v.len;
  }
  if (sealed && batch.length > 0) flushCopies(off);
  return { committedEnd, decodedEnd: off };
}

/** scanSegment's committed end (see there). */
export function scanRecords(buf: Buffer, start: number, end: number, onRecord: (v: RecordView, buf: Buffer) => void,
  sealed = false): number {
  return scanSegment(buf, start, end, onRecord, sealed).committedEnd;
}

/** E_REVISION_LIMIT: `what` is beyond the revisions this engine holds exactly. */
export function revisionLimit(what: string): KvError {
  return new KvError('E_REVISION_LIMIT', `${what} is beyond the largest revision this glidekv holds (2^48 - 1 = ${MAX_REVISION})`);
}

/** Max-revision-wins merge of one record or footer entry into the keydir. */
function merge(st: NsState, key: Uint8Array, type: number, flags: number, fileId: number, offset: number,
  vsize: number, rev: number, mtime: number, hash: Buffer | null): void {
  if (rev > MAX_REVISION) throw revisionLimit(`${st.name}: a record of revision ${rev}`);
  const k = st.keydir;
  const e = k.find(key);
  // '>' not '>=': within one batch (one revision) the later record wins, as it did in memory
  if (e >= 0 && k.revOf(e) > rev) return;
  if (type === T_DEL) k.set(key, fileId, offset, 0, rev, mtime, KF_TOMBSTONE);
  else k.set(key, fileId, offset, vsize, rev, mtime, flags & KF_POINTER, hash);
}

export interface RecoveredNamespace {
  maxRev: number;
  /** Segments that had no valid footer, ascending by id. */
  unsealed: SegInfo[];
  /**
   * Segments whose footer is damaged (a flipped bit) while every record before it is intact:
   * loaded by a scan, to be sealed again (resealDamaged) once every segment is merged.
   */
  resealed: SegInfo[];
  /** Bytes cut off torn tails. */
  truncatedBytes: number;
  /** Segments read through their footer / by scanning. */
  footerReads: number;
  scans: number;
  /** Damage recovery did not simply cut (saved aside first): one message each, for warnings. */
  damage: string[];
}

/**
 * Refuses (E_VERSION, naming the file and both versions) a segment whose footer is of another
 * format version. Reads only; run over every segment before recovery changes anything.
 */
export async function checkSegmentVersion(io: FileIo, file: string): Promise<void> {
  const fd = await io.open(file, 'r');
  try {
    const size = await io.fstatSize(fd);
    if (size < TRAILER_SIZE) return;
    const t = Buffer.alloc(TRAILER_SIZE);
    await readFully(io, fd, t, 0, TRAILER_SIZE, size - TRAILER_SIZE);
    if (otherFooterVersion(t, null) === null) return;
    const dataEnd = t.readUInt32LE(16);
    const bodyLen = t.readUInt32LE(20);
    let body: Buffer | null = null;
    if (dataEnd + bodyLen + TRAILER_SIZE === size) {
      body = Buffer.alloc(bodyLen);
      if ((await readFully(io, fd, body, 0, bodyLen, dataEnd)) !== bodyLen) body = null;
    }
    const v = otherFooterVersion(t, body);
    if (v !== null) {
      throw new KvError('E_VERSION', `${file}: segment footer format version ${v}, this glidekv reads version ${FOOTER_VERSION}; nothing was changed`);
    }
  } finally {
    await io.close(fd);
  }
}

/**
 * checkSegmentVersion over every segment of every namespace under `nsRoot` (`<dir>/ns`), up to
 * 16 files at a time (an open costs a few thread-pool round trips per segment; in parallel they overlap).
 */
export async function checkSegmentVersions(io: FileIo, nsRoot: string): Promise<void> {
  let names: string[];
  try {
    names = await io.readdir(nsRoot);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  const files: string[] = [];
  await Promise.all(names.map(async (name) => {
    let list: string[];
    try {
      list = await io.readdir(path.join(nsRoot, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOTDIR') return;
      throw err;
    }
    for (const f of list) if (parseSegmentName(f) >= 0) files.push(path.join(nsRoot, name, f));
  }));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < files.length) await checkSegmentVersion(io, files[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(16, files.length) }, worker));
}

/** Loads the given segments (ascending ids) of a namespace into its keydir. */
export async function loadSegments(io: FileIo, st: NsState, ids: number[]): Promise<RecoveredNamespace> {
  const out: RecoveredNamespace = { maxRev: 0, unsealed: [], resealed: [], truncatedBytes: 0, footerReads: 0, scans: 0, damage: [] };
  for (const id of ids) {
    const p = st.segPath(id);
    const fd = await io.open(p, 'r+');
    try {
      const size = await io.fstatSize(fd);
      let ok = false;
      const t = Buffer.alloc(TRAILER_SIZE);
      if (size >= TRAILER_SIZE) {
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
        // first find where the intact records end, then decide what the rest is
        const probe = scanSegment(buf, 0, n, () => {}, true);
        const dmg = size >= TRAILER_SIZE ? damagedFooter(t, size, id, probe.decodedEnd) : { wasSealed: false, recordsWhole: false };
        const onRecord = (v: RecordView, b: Buffer): void => {
          const key = b.subarray(v.keyOff, v.keyOff + v.keyLen);
          const hash = (v.flags & F_POINTER) !== 0 ? Buffer.from(b.subarray(v.payloadOff, v.payloadOff + HASH_SIZE)) : null;
          merge(st, key, v.type, v.flags, id, v.off, v.type === T_PUT ? v.valueSize : 0, v.revision, v.mtime, hash);
          if (v.revision > out.maxRev) out.maxRev = v.revision;
        };
        if (dmg.recordsWhole) {
          // a sealed segment whose footer alone is damaged: every record counts (its batch records
          // are committed copies); the footer is written again after the merge (resealDamaged)
          const end = scanSegment(buf, 0, n, onRecord, true).committedEnd;
          out.resealed.push(st.addSegment(id, end, false));
          continue;
        }
        // (sealed = false even if it was sealed: its records are not all intact, so a batch run
        // without its COMMIT may be one whose COMMIT was lost, e.g. a power cut in the middle of
        // a roll; all or nothing wins, and the bytes are saved aside below)
        const end = scanSegment(buf, 0, n, onRecord, false).committedEnd;
        if (end < size) {
          if (dmg.wasSealed) {
            // a sealed segment with a damaged record AND a damaged footer: not a torn tail. Keep
            // the bytes we cannot read in a side file before the segment is cut back to its intact records.
            const aside = `${p}.damaged-${end}`;
            const afd = await io.open(aside, 'w');
            try {
              await writeFully(io, afd, buf, end, n - end, 0);
              await io.fsync(afd);
            } finally {
              await io.close(afd);
            }
            await io.fsyncDir(st.dir);
            out.damage.push(`${p}: footer and the record at offset ${end} are damaged; ` +
              `the ${n - end} bytes from there were saved to ${aside} and cut from the segment`);
          }
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
    fb.add(tomb ? T_DEL : T_PUT, flags, k.keyView(e), k.offset[e], k.vsize[e], k.revOf(e), k.mtimeOf(e), k.pointerHash(e));
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

/**
 * Writes a new footer over the damaged one of a segment recovery loaded by scanning (see
 * RecoveredNamespace.resealed): footer at seg.size, fsync, then cut the file to its end. A crash
 * in between leaves the old damaged trailer at the end (found again next time) or the new one.
 */
export async function resealDamaged(io: FileIo, st: NsState, seg: SegInfo, hwm: number): Promise<void> {
  const fb = new FooterBuilder();
  addKeydirEntries(st, seg.id, fb);
  const footer = fb.finish(seg.id, seg.size, hwm);
  const fd = await io.open(seg.path, 'r+');
  try {
    await writeFully(io, fd, footer, 0, footer.length, seg.size);
    await io.fsync(fd);
    await io.ftruncate(fd, seg.size + footer.length);
    await io.fsync(fd);
    seg.sealed = true;
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
