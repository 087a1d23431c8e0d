/**
 * Reclaim (compaction) of one namespace. See FORMAT.md.
 *
 * 1. Inside the writer (a barrier: every write enqueued before it is written and
 *    acknowledged, later writers wait in the queue — they are not failed): seal the
 *    active segment (footer, fsync) and start a new one. All other segments are "old".
 * 2. Outside the writer (writers run again, into the new active segment): copy every
 *    live record of the old segments, byte for byte (same revision; a pointer record
 *    stays a 16-byte pointer) except that a batch record loses its BATCH flag (crc
 *    recomputed): its batch was committed, and a copy has no COMMIT next to it, so a scan
 *    of the copy (a damaged footer) must count it on its own, into new segments. After each chunk is written, keydir
 *    entries that still point at the copied record are switched to the copy.
 * 3. Footer + fsync each new segment, fsync the directory.
 * 4. Write meta.json (through the engine's MetaStore, src/meta.ts): the revision high-water mark, the
 *    counters (compactionBytes, reclaims), compacted[ns] = the last revision
 *    in the old segments (watch replay from at or below it is now E_COMPACTED), and
 *    obsolete[ns] = the old segment ids (recovery deletes them first if we crash in 5).
 * 5. Only then delete the old segments and fsync the directory.
 * A crash anywhere leaves the old segments, or the copies, or both: recovery keeps the
 * highest revision per key, so nothing is lost and nothing resurrects (tombstones are
 * dropped only together with every older segment).
 */
import { KvError } from './errors.js';
import { readFully, writeFully } from './file-io.js';
import { decodeRecord, RecordView, unbatchRecord } from './record.js';
import { FooterBuilder, segmentName } from './segment.js';
import { KF_POINTER } from './keydir.js';
import { T_PUT } from './record.js';
import type { NsState, SegInfo } from './ns-state.js';
import type { FileIo } from './file-io.js';
import type { FdCache } from './fd-cache.js';

/** What reclaim sees of its engine: the log writer's barrier and roll, the file-id counter, the meta store. */
export interface ReclaimHost {
  readonly io: FileIo;
  readonly fds: FdCache;
  /** A new segment is started past this size. */
  readonly segmentMaxBytes: number;
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

const CHUNK = 4 * 1024 * 1024;

interface Out {
  seg: SegInfo;
  fd: number;
  fb: FooterBuilder;
}

/** Reclaims one namespace; every failure is a KvError (an errno error becomes E_IO naming the namespace). */
export async function reclaimNamespace(eng: ReclaimHost, st: NsState): Promise<{ relocatedBytes: number; segmentsRemoved: number }> {
  try {
    return await reclaimInner(eng, st);
  } catch (err) {
    if (err instanceof KvError) throw err;
    throw new KvError('E_IO', `reclaim of namespace ${JSON.stringify(st.name)} failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
}

async function reclaimInner(eng: ReclaimHost, st: NsState): Promise<{ relocatedBytes: number; segmentsRemoved: number }> {
  const io = eng.io;
  const sealed = await eng.barrier(async () => {
    if (st.dropped || st.active === null) return { oldIds: [] as number[], sealRev: 0 };
    await eng.roll(st);
    const activeId = st.active!.seg.id;
    return { oldIds: [...st.segments.keys()].filter((id) => id !== activeId).sort((a, b) => a - b), sealRev: eng.writtenRevision };
  });
  const oldIds = sealed.oldIds;
  if (oldIds.length === 0) {
    eng.countReclaim();
    return { relocatedBytes: 0, segmentsRemoved: 0 };
  }
  const old = new Set(oldIds);
  const k = st.keydir;

  // live entries in old segments, grouped by segment, in file order
  const bySeg = new Map<number, number[]>();
  for (let e = 0, n = k.entryLimit; e < n; e++) {
    if (!k.isLive(e) || !old.has(k.fileId[e])) continue;
    let a = bySeg.get(k.fileId[e]);
    if (a === undefined) bySeg.set(k.fileId[e], (a = []));
    a.push(e);
  }

  let relocated = 0;
  let out: Out | null = null;
  let chunk = Buffer.allocUnsafe(CHUNK);
  let chunkLen = 0;
  // (entry, old file, old offset, new offset) of records in the chunk
  let moves: number[] = [];
  const outs: Out[] = [];
  const v = new RecordView();

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
    await io.close(out.fd);
    out = null;
  };
  const startOut = async (): Promise<Out> => {
    const id = eng.allocFileId();
    const seg = st.addSegment(id, 0, false);
    const fd = await eng.fds.openWithRetry(seg.path, 'wx');
    const o: Out = { seg, fd, fb: new FooterBuilder() };
    outs.push(o);
    return o;
  };

  try {
    for (const id of oldIds) {
      const entries = bySeg.get(id);
      if (entries === undefined) continue;
      const seg = st.segments.get(id)!;
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
      for (const e of entries) {
        if (!k.isLive(e) || k.fileId[e] !== id) continue; // changed while we read
        const off = k.offset[e];
        const len = st.entryRecordSize(e);
        if (!decodeRecord(buf, off, off + len, v) || v.revision !== k.revOf(e) || v.type !== T_PUT) {
          throw new KvError('E_CORRUPT', `${st.name}: record at ${segmentName(id)}:${off} failed its checksum; reclaim stopped`);
        }
        if (out === null || (out.seg.size + chunkLen > 0 && out.seg.size + chunkLen + len > eng.segmentMaxBytes)) {
          await finishOut();
          out = await startOut();
        }
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
    await finishOut();
    if (outs.length > 0) await io.fsyncDir(st.dir);
  } catch (err) {
    const o = out as Out | null;
    if (o !== null) await io.close(o.fd).catch(() => {});
    st.recount();
    throw err;
  }

  // history at or below sealRev is gone once the old segments are; the old segments are
  // doomed as a set: a crash between two unlinks must not leave an old record whose tombstone
  // (in another old segment) is already gone — recovery deletes them all
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
  return { relocatedBytes: relocated, segmentsRemoved: removed };
}
