/**
 * Reclaim (compaction) of one namespace. See FORMAT.md ("Reclaim").
 *
 * 0. The policy (chooseVictims, inside the writer barrier): a segment is a VICTIM when its
 *    garbage (bytes of records that are neither live in the keydir nor a tombstone reclaim
 *    kept) is at least `segmentDeadRatio` of its bytes. The active segment is a candidate
 *    too (it is sealed first when chosen). If the garbage left in the kept segments would
 *    still pass the whole-log bound (`logDeadRatio` of the namespace's bytes and at least
 *    `logMinBytes`, the automatic-reclaim trigger), every segment is a victim (a full
 *    reclaim). `full` (and segmentDeadRatio 0) makes every segment a victim, as before the
 *    policy. No victim: nothing is sealed, written or removed.
 * 1. Inside the writer (a barrier: every write enqueued before it is written and
 *    acknowledged, later writers wait in the queue — they are not failed): seal the
 *    active segment (footer, fsync) and start a new one, when it is a victim.
 * 2. Outside the writer (writers run again, into the active segment): copy every
 *    live record of the victims, byte for byte (same revision; a pointer record
 *    stays a 16-byte pointer) except that a batch record loses its BATCH flag (crc
 *    recomputed): its batch was committed, and a copy has no COMMIT next to it, so a scan
 *    of the copy (a damaged footer) must count it on its own, into new segments. After each chunk is written, keydir
 *    entries that still point at the copied record are switched to the copy. In a partial
 *    reclaim (some segment is kept), a victim's tombstone (listed in its footer) whose key
 *    is not live is copied too: a kept segment may hold an older put of that key.
 * 3. Footer + fsync each new segment, fsync the directory.
 * 4. Write meta.json (through the engine's MetaStore, src/meta.ts): the revision high-water mark, the
 *    counters (compactionBytes, reclaims), compacted[ns] = the revision written when the
 *    victims were chosen (watch replay from at or below it is now E_COMPACTED), and
 *    obsolete[ns] = the victims' ids (recovery deletes them first if we crash in 5).
 * 5. Only then delete the victims and fsync the directory.
 * A crash anywhere leaves the victims, or the copies, or both: recovery keeps the
 * highest revision per key, so nothing is lost and nothing resurrects (a tombstone is
 * dropped only when its key is live again or every segment is a victim).
 */
import { KvError } from './errors.js';
import { readFully, writeFully } from './file-io.js';
import { decodeRecord, RecordView, unbatchRecord, T_DEL, T_PUT } from './record.js';
import { FooterBuilder, parseTrailer, readFooterBody, segmentName, TRAILER_SIZE } from './segment.js';
import { KF_POINTER } from './keydir.js';
import type { NsState, SegInfo } from './ns-state.js';
import type { FileIo } from './file-io.js';
import type { FdCache } from './fd-cache.js';

/** Which segments a reclaim copies (FORMAT.md "Reclaim policy"). */
export interface ReclaimPolicy {
  /** A segment is reclaimed when its garbage is at least this fraction of its bytes. 0 = every segment. */
  readonly segmentDeadRatio: number;
  /** Whole-log bound: garbage left above this fraction of the namespace's bytes ... */
  readonly logDeadRatio: number;
  /** ... and above this many bytes makes the reclaim a full one. */
  readonly logMinBytes: number;
}

/** What reclaim sees of its engine: the log writer's barrier and roll, the file-id counter, the meta store. */
export interface ReclaimHost {
  readonly io: FileIo;
  readonly fds: FdCache;
  /** A new segment is started past this size. */
  readonly segmentMaxBytes: number;
  /** Which segments to reclaim. */
  readonly policy: ReclaimPolicy;
  /** The last revision handed out (a sealed copy's footer high-water mark). */
  readonly revision: number;
  /** The highest revision applied to a keydir (read inside a barrier: everything before it). */
  readonly writtenRevision: number;
  /** Runs fn inside the writer, after everything enqueued before it is written and acknowledged. */
  barrier<T>(fn: () => Promise<T>): Promise<T>;
  /** Inside the writer: seals st's active segment (footer + fsync) and starts a new one. */
  roll(st: NsState): Promise<void>;
  /** The next segment file id. */
  allocFileId(): number;
  /** Step 4 (MetaStore.recordReclaim): durable on return; returns the namespace's compacted revision. */
  recordReclaim(ns: string, sealRev: number, oldIds: number[], relocatedBytes: number): Promise<number>;
  /** A reclaim that found nothing to copy. */
  countReclaim(): void;
  /** Step 5 done: the old segments of ns are gone. */
  obsoleteRemoved(ns: string): void;
}

export interface ReclaimResult {
  relocatedBytes: number;
  segmentsRemoved: number;
  /** Segments left in place by the policy (mostly live). */
  segmentsKept: number;
  /** Tombstones copied because a kept segment may hold an older put of their key. */
  tombstonesKept: number;
  full: boolean;
}

const CHUNK = 4 * 1024 * 1024;

/**
 * Bytes of tombstones that a partial reclaim copied into a segment (they are needed, so the
 * policy does not count them as garbage). In memory only: after a restart they count as
 * garbage again, which costs at most one more copy of them.
 */
const keptTombstoneBytes = new WeakMap<SegInfo, number>();

export interface SegmentUse {
  id: number;
  size: number;
  /** Bytes of live records (keydir) and of kept tombstones in it. */
  live: number;
  active: boolean;
}

/**
 * The policy, pure: the ids of the segments to reclaim and whether that is every segment.
 * `deadBytes`/`totalBytes` are the namespace's (NsState), garbage and kept tombstones included.
 */
export function chooseVictims(segs: SegmentUse[], deadBytes: number, totalBytes: number, p: ReclaimPolicy, full: boolean):
  { victims: number[]; full: boolean } {
  const all = segs.filter((s) => s.size > 0 || !s.active).map((s) => s.id);
  if (full || p.segmentDeadRatio <= 0) return { victims: all, full: true };
  const victims: number[] = [];
  let freed = 0;
  for (const s of segs) {
    const garbage = s.size - s.live;
    if (s.size > 0 && garbage > 0 && garbage >= p.segmentDeadRatio * s.size) {
      victims.push(s.id);
      freed += garbage;
    } else if (s.size === 0 && !s.active) {
      victims.push(s.id); // an empty sealed segment (no records): nothing to copy, a file to drop
    }
  }
  // the whole-log bound: what the kept segments leave must not trigger reclaim again
  const left = deadBytes - freed;
  if (left >= p.logMinBytes && left > p.logDeadRatio * (totalBytes - freed)) return { victims: all, full: true };
  return { victims, full: false };
}

interface Out {
  seg: SegInfo;
  fd: number;
  fb: FooterBuilder;
  tombBytes: number;
}

/** Reclaims one namespace; every failure is a KvError (an errno error becomes E_IO naming the namespace). */
export async function reclaimNamespace(eng: ReclaimHost, st: NsState, opts: { full?: boolean } = {}): Promise<ReclaimResult> {
  try {
    return await reclaimInner(eng, st, opts.full === true);
  } catch (err) {
    if (err instanceof KvError) throw err;
    throw new KvError('E_IO', `reclaim of namespace ${JSON.stringify(st.name)} failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
}

/** The tombstones listed in a sealed segment's footer: [offset, record length] pairs; null = no valid footer. */
async function footerTombstones(eng: ReclaimHost, seg: SegInfo): Promise<number[] | null> {
  const fd = await eng.fds.openWithRetry(seg.path, 'r');
  try {
    const fileSize = await eng.io.fstatSize(fd);
    if (fileSize < seg.size + TRAILER_SIZE) return null;
    const t = Buffer.allocUnsafe(TRAILER_SIZE);
    if ((await readFully(eng.io, fd, t, 0, TRAILER_SIZE, fileSize - TRAILER_SIZE)) !== TRAILER_SIZE) return null;
    const tr = parseTrailer(t, fileSize, seg.id);
    if (tr === null || tr.dataEnd !== seg.size) return null;
    const body = Buffer.allocUnsafe(tr.bodyLen);
    if ((await readFully(eng.io, fd, body, 0, tr.bodyLen, tr.dataEnd)) !== tr.bodyLen) return null;
    const out: number[] = [];
    const ok = readFooterBody(body, t, tr.entries, (e) => {
      if (e.type === T_DEL) out.push(e.offset);
    });
    return ok ? out : null;
  } finally {
    await eng.io.close(fd);
  }
}

/** Offsets of every tombstone record in buf[0, size) (a scan: the footer is damaged). */
function scanTombstones(buf: Buffer, size: number, seg: SegInfo, ns: string): number[] {
  const v = new RecordView();
  const out: number[] = [];
  for (let off = 0; off < size; off += v.len) {
    if (!decodeRecord(buf, off, size, v)) {
      throw new KvError('E_CORRUPT', `${ns}: record at ${segmentName(seg.id)}:${off} failed its checksum (footer damaged too); reclaim stopped`);
    }
    if (v.type === T_DEL) out.push(off);
  }
  return out;
}

async function reclaimInner(eng: ReclaimHost, st: NsState, forceFull: boolean): Promise<ReclaimResult> {
  const io = eng.io;
  const k = st.keydir;
  const sealed = await eng.barrier(async () => {
    if (st.dropped || st.active === null) return { oldIds: [] as number[], sealRev: 0, full: true, kept: 0 };
    const activeId = st.active.seg.id;
    const live = new Map<number, number>();
    for (let e = 0, n = k.entryLimit; e < n; e++) {
      if (!k.isLive(e)) continue;
      const f = k.fileId[e];
      live.set(f, (live.get(f) ?? 0) + st.entryRecordSize(e));
    }
    const use: SegmentUse[] = [];
    for (const s of st.segments.values()) {
      use.push({ id: s.id, size: s.size, live: (live.get(s.id) ?? 0) + (keptTombstoneBytes.get(s) ?? 0), active: s.id === activeId });
    }
    const choice = chooseVictims(use, st.deadBytes, st.totalBytes, eng.policy, forceFull);
    const victims = new Set(choice.victims);
    if (choice.full || victims.has(activeId)) {
      await eng.roll(st);
      victims.add(activeId);
    }
    const newActive = st.active!.seg.id;
    victims.delete(newActive);
    const oldIds = [...victims].filter((id) => st.segments.has(id)).sort((a, b) => a - b);
    return { oldIds, sealRev: eng.writtenRevision, full: choice.full, kept: st.segments.size - oldIds.length - 1 };
  });
  const oldIds = sealed.oldIds;
  if (oldIds.length === 0) {
    eng.countReclaim();
    return { relocatedBytes: 0, segmentsRemoved: 0, segmentsKept: Math.max(0, sealed.kept), tombstonesKept: 0, full: sealed.full };
  }
  const old = new Set(oldIds);
  // a tombstone may go only when no segment outside the victims can hold an older put of its key
  const keepTombstones = !sealed.full;

  // live entries in old segments, grouped by segment, in file order
  const bySeg = new Map<number, number[]>();
  for (let e = 0, n = k.entryLimit; e < n; e++) {
    if (!k.isLive(e) || !old.has(k.fileId[e])) continue;
    let a = bySeg.get(k.fileId[e]);
    if (a === undefined) bySeg.set(k.fileId[e], (a = []));
    a.push(e);
  }

  let relocated = 0;
  let tombstonesKept = 0;
  let out: Out | null = null;
  let chunk = Buffer.allocUnsafe(CHUNK);
  let chunkLen = 0;
  // (entry, old file, old offset, new offset) of records in the chunk
  let moves: number[] = [];
  const outs: Out[] = [];
  const v = new RecordView();
  // the newest tombstone per key among the victims: key (latin1) -> [victim id, offset, revision]
  const tombs = new Map<string, [number, number, number]>();

  const flushChunk = async (): Promise<void> => {
    if (out === null || chunkLen === 0) return;
    await writeFully(io, out.fd, chunk, 0, chunkLen, out.seg.size);
    out.seg.size += chunkLen;
    for (let i = 0; i < moves.length; i += 4) {
      const e = moves[i];
      // still the same record? (not overwritten, deleted or moved meanwhile)
      if (k.isLive(e) && k.fileId[e] === moves[i + 1] && k.offset[e] === moves[i + 2]) {
        k.relocate(e, out.seg.id, moves[i + 3]);
        relocated += st.entryRecordSize(e);
      }
    }
    chunkLen = 0;
    moves = [];
  };
  const finishOut = async (): Promise<void> => {
    if (out === null) return;
    await flushChunk();
    const footer = out.fb.finish(out.seg.id, out.seg.size, eng.revision);
    await writeFully(io, out.fd, footer, 0, footer.length, out.seg.size);
    await io.fsync(out.fd);
    out.seg.sealed = true;
    if (out.tombBytes > 0) keptTombstoneBytes.set(out.seg, out.tombBytes);
    await io.close(out.fd);
    out = null;
  };
  const startOut = async (): Promise<Out> => {
    const id = eng.allocFileId();
    const seg = st.addSegment(id, 0, false);
    const fd = await eng.fds.openWithRetry(seg.path, 'wx');
    const o: Out = { seg, fd, fb: new FooterBuilder(), tombBytes: 0 };
    outs.push(o);
    return o;
  };
  /** Room for a record of len bytes in the current output (a new segment past segmentMaxBytes). */
  const room = async (len: number): Promise<void> => {
    if (out === null || (out.seg.size + chunkLen > 0 && out.seg.size + chunkLen + len > eng.segmentMaxBytes)) {
      await finishOut();
      out = await startOut();
    }
  };

  try {
    const bufs = new Map<number, Buffer>();
    for (const id of oldIds) {
      const entries = bySeg.get(id) ?? [];
      const seg = st.segments.get(id)!;
      const fromFooter = keepTombstones ? await footerTombstones(eng, seg) : [];
      if (entries.length === 0 && fromFooter !== null && fromFooter.length === 0) continue;
      entries.sort((a, b) => k.offset[a] - k.offset[b]);
      const fd = await eng.fds.openWithRetry(seg.path, 'r');
      let buf: Buffer;
      try {
        buf = Buffer.allocUnsafe(seg.size);
        const n = await readFully(io, fd, buf, 0, seg.size, 0);
        if (n !== seg.size) throw new KvError('E_CORRUPT', `${seg.path}: shorter than its records (${n} < ${seg.size})`);
      } finally {
        await io.close(fd);
      }
      if (keepTombstones) {
        for (const off of fromFooter ?? scanTombstones(buf, seg.size, seg, st.name)) {
          if (!decodeRecord(buf, off, seg.size, v) || v.type !== T_DEL) {
            throw new KvError('E_CORRUPT', `${st.name}: tombstone at ${segmentName(id)}:${off} failed its checksum; reclaim stopped`);
          }
          const key = buf.toString('latin1', v.keyOff, v.keyOff + v.keyLen);
          const had = tombs.get(key);
          if (had === undefined || had[2] < v.revision) tombs.set(key, [id, off, v.revision]);
        }
        if (tombs.size > 0) bufs.set(id, buf);
      }
      for (const e of entries) {
        if (!k.isLive(e) || k.fileId[e] !== id) continue; // changed while we read
        const off = k.offset[e];
        const len = st.entryRecordSize(e);
        if (!decodeRecord(buf, off, off + len, v) || v.revision !== k.revOf(e) || v.type !== T_PUT) {
          throw new KvError('E_CORRUPT', `${st.name}: record at ${segmentName(id)}:${off} failed its checksum; reclaim stopped`);
        }
        await room(len);
        if (!k.isLive(e) || k.fileId[e] !== id || k.offset[e] !== off) continue; // changed during the await
        if (chunkLen + len > chunk.length) {
          await flushChunk();
          if (len > chunk.length) chunk = Buffer.allocUnsafe(len);
          if (!k.isLive(e) || k.fileId[e] !== id || k.offset[e] !== off) continue;
        }
        const o: Out = out!;
        const newOff = o.seg.size + chunkLen;
        buf.copy(chunk, chunkLen, off, off + len);
        // the copy stands alone, without its batch's COMMIT: it must count on its own when scanned
        unbatchRecord(chunk, chunkLen, len);
        chunkLen += len;
        moves.push(e, id, off, newOff);
        o.fb.add(T_PUT, k.flags[e] & KF_POINTER, k.keyView(e), newOff, k.vsize[e], k.revOf(e), k.mtimeOf(e), k.pointerHash(e));
      }
    }
    // tombstones of keys not live now (a live key's record is newer than any tombstone of it)
    for (const [key, [id, off]] of tombs) {
      const kb = Buffer.from(key, 'latin1');
      const e = k.find(kb);
      if (e >= 0 && k.isLive(e)) continue;
      const buf = bufs.get(id)!;
      if (!decodeRecord(buf, off, st.segments.get(id)!.size, v)) throw new KvError('E_CORRUPT', `${st.name}: tombstone at ${segmentName(id)}:${off} changed`);
      const len = v.len;
      await room(len);
      if (chunkLen + len > chunk.length) {
        await flushChunk();
        if (len > chunk.length) chunk = Buffer.allocUnsafe(len);
      }
      const o: Out = out!;
      const newOff = o.seg.size + chunkLen;
      buf.copy(chunk, chunkLen, off, off + len);
      unbatchRecord(chunk, chunkLen, len);
      chunkLen += len;
      o.fb.add(T_DEL, 0, kb, newOff, 0, v.revision, v.mtime);
      o.tombBytes += len;
      tombstonesKept++;
    }
    await finishOut();
    if (outs.length > 0) await io.fsyncDir(st.dir);
  } catch (err) {
    const o = out as Out | null;
    if (o !== null) await io.close(o.fd).catch(() => {});
    st.recount();
    throw err;
  }

  // history at or below sealRev is gone once the victims are; the victims are
  // doomed as a set: a crash between two unlinks must not leave an old record whose tombstone
  // (in another victim) is already gone — recovery deletes them all
  st.compactedThrough = await eng.recordReclaim(st.name, sealed.sealRev, oldIds.filter((id) => st.segments.has(id)), relocated);

  let removed = 0;
  for (const id of oldIds) {
    const seg = st.segments.get(id);
    if (seg === undefined) continue;
    eng.fds.evict(seg.path);
    st.segments.delete(id);
    await io.unlink(seg.path).catch((err) => {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    });
    removed++;
  }
  await io.fsyncDir(st.dir);
  // (the list stays in meta.json until its next write; deleting absent files on open is harmless,
  // and ids are never reused within a process, while open clears the list)
  eng.obsoleteRemoved(st.name);
  st.recount();
  return { relocatedBytes: relocated, segmentsRemoved: removed, segmentsKept: Math.max(0, sealed.kept), tombstonesKept, full: sealed.full };
}
