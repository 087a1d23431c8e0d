/**
 * Open/replay: what `open()` does to a data directory before the engine takes writes.
 *
 * 1. The format version gate: meta.json and every segment footer, read only, before anything
 *    changes (E_VERSION otherwise).
 * 2. Leftovers of crashes go: meta temp files, `trash/` (drops in progress), the segments a
 *    reclaim had replaced (meta.json's obsolete list), segment temp files.
 * 3. Recovery of every namespace from its segments (src/recovery.ts: footers, else a scan,
 *    torn tails cut, damaged footers rewritten): the keydir is rebuilt (max revision wins),
 *    the newest unsealed segment stays active, other unsealed ones are sealed.
 * 4. The revision counter starts at the maximum of meta.json's and every footer's and record's
 *    (E_REVISION_LIMIT past 2^48 - 1), the file-id counter past the highest id on disk.
 * 5. meta.json forgets the obsolete list once its segments are gone.
 * After the blob store is open, `rebuildBlobRefs` makes the recovered log durable and hands
 * every live pointer to the blob store (refcounts; orphans swept).
 * See FORMAT.md, "Recovery".
 */
import path from 'node:path';
import { KvError } from './errors.js';
import type { FileIo } from './file-io.js';
import type { FdCache } from './fd-cache.js';
import type { MetaStore } from './meta.js';
import { removeStaleMetaTemps } from './meta.js';
import { KF_POINTER, MAX_REVISION } from './keydir.js';
import { NsState } from './ns-state.js';
import { FooterBuilder, parseSegmentName } from './segment.js';
import { T_DEL } from './record.js';
import {
  checkSegmentVersions, dropTombstones, loadSegments, resealDamaged, revisionLimit, sealRecovered,
} from './recovery.js';
import type { ValueSeparator } from './value-separator.js';

export const NS_DIR = 'ns';
export const TRASH_DIR = 'trash';

/** What open/replay sees of the engine it opens. */
export interface OpenHost {
  readonly io: FileIo;
  /** The data directory (absolute). */
  readonly dir: string;
  readonly fds: FdCache;
  readonly meta: MetaStore;
  /** Where the recovered namespaces go. */
  readonly namespaces: Map<string, NsState>;
  /** The log writer's file-id counter starts here (before recovery may seal or start segments). */
  setNextFileId(id: number): void;
  /** The log writer's revision counters start here (once every namespace is recovered). */
  startRevision(rev: number): void;
  /** Creates the next segment file of a namespace and makes it the active one. */
  newActive(st: NsState): Promise<void>;
  warn(message: string, cause?: unknown): void;
}

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | null)?.code ?? 'EIO';
}

/** Steps 1-5 above. On failure the caller closes the active segments of `h.namespaces`. */
export async function recoverDirectory(h: OpenHost): Promise<void> {
  const { io, dir } = h;
  // format version gate (meta.json, every segment footer): reads only, before anything changes
  await h.meta.load();
  await checkSegmentVersions(io, path.join(dir, NS_DIR));
  await removeStaleMetaTemps(io, dir);
  await io.mkdir(path.join(dir, NS_DIR));
  await io.rm(path.join(dir, TRASH_DIR));
  let maxRev = h.meta.revision;
  const names = (await io.readdir(path.join(dir, NS_DIR))).sort();
  const perNs: Array<{ st: NsState; ids: number[] }> = [];
  let maxId = 0;
  for (const name of names) {
    const st = new NsState(name, path.join(dir, NS_DIR, name));
    const ids: number[] = [];
    let files: string[];
    try {
      files = await io.readdir(st.dir);
    } catch (err) {
      if (errnoOf(err) === 'ENOTDIR') continue; // a stray file, not a namespace
      throw err;
    }
    const obsolete = new Set(h.meta.obsoleteOf(name));
    for (const f of files) {
      const id = parseSegmentName(f);
      if (id >= 0 && obsolete.has(id)) {
        // a reclaim replaced it and crashed while deleting the old segments: finish that
        await io.unlink(path.join(st.dir, f));
        continue;
      }
      if (id >= 0) ids.push(id);
      else if (f.endsWith('.tmp')) await io.unlink(path.join(st.dir, f)).catch(() => {});
    }
    ids.sort((a, b) => a - b);
    for (const id of ids) if (id > maxId) maxId = id;
    perNs.push({ st, ids });
  }
  if (maxRev > MAX_REVISION) throw revisionLimit(`${path.join(dir, 'meta.json')}: revision ${maxRev}`);
  h.setNextFileId(maxId + 1);
  for (const { st, ids } of perNs) {
    const r = await loadSegments(io, st, ids);
    if (r.maxRev > maxRev) maxRev = r.maxRev;
    st.compactedThrough = h.meta.compactedThrough(st.name);
    // the newest unsealed segment stays active; other unsealed ones are sealed (or, empty, removed)
    const last = r.unsealed.length > 0 ? r.unsealed[r.unsealed.length - 1] : null;
    for (const seg of r.unsealed) {
      if (seg === last) continue;
      if (seg.size === 0) {
        st.segments.delete(seg.id);
        await io.unlink(seg.path);
      } else {
        await sealRecovered(io, st, seg, maxRev);
      }
    }
    for (const seg of r.resealed) await resealDamaged(io, st, seg, maxRev); // a damaged footer, rewritten
    for (const m of r.damage) h.warn(m);
    if (last !== null) {
      const fb = new FooterBuilder();
      // tombstones of the active segment go to its future footer
      const k = st.keydir;
      for (let e = 0, n = k.entryLimit; e < n; e++) {
        if (k.isLive(e) && k.fileId[e] === last.id && (k.flags[e] & 0x40) !== 0) {
          fb.add(T_DEL, 0, k.keyView(e), k.offset[e], 0, k.revOf(e), k.mtimeOf(e));
        }
      }
      const fd = await h.fds.openWithRetry(last.path, 'r+');
      st.active = { seg: last, fd, footer: fb };
    }
    dropTombstones(st);
    st.keydir.trim(); // no spare capacity left from the rebuild
    st.keydir.renumberSorted(false); // entries in key order: list walks the arrays in order
    if (st.active === null) await h.newActive(st);
    st.recount();
    h.namespaces.set(st.name, st);
  }
  if (h.namespaces.size > 0) await io.fsyncDir(path.join(dir, NS_DIR));
  if (maxRev > MAX_REVISION) throw revisionLimit(`${dir}: a segment footer's revision ${maxRev}`);
  h.startRevision(maxRev);
  if (h.meta.hasObsolete()) {
    for (const st of h.namespaces.values()) await io.fsyncDir(st.dir); // the unlinks above
    await h.meta.obsoleteDeleted(maxRev);
  }
}

/**
 * Makes the recovered log durable, then gives the blob store every live pointer hash
 * (duplicates counted): the sweep that follows must not trust a tombstone that only a killed
 * predecessor's page cache held.
 */
export async function rebuildBlobRefs(io: FileIo, namespaces: Iterable<NsState>, separator: ValueSeparator): Promise<void> {
  const all = [...namespaces];
  // the recovered log must be durable before the sweep trusts it: a tombstone read from the
  // page cache of a killed predecessor must not let its blob go and then vanish in a power cut
  const fds: number[] = [];
  for (const st of all) if (st.active !== null) fds.push(st.active.fd);
  await Promise.all(fds.map((fd) => io.fsync(fd)));
  const hashes: Buffer[] = [];
  for (const st of all) {
    const k = st.keydir;
    for (let e = 0, n = k.entryLimit; e < n; e++) {
      const h = k.isLive(e) && (k.flags[e] & KF_POINTER) !== 0 ? k.pointerHash(e) : undefined;
      if (h !== undefined) hashes.push(h);
    }
  }
  await separator.rebuild(hashes);
}

/**
 * Checks open()'s directory and options before anything is touched: a wrong type or range is
 * E_INVALID_ARGUMENT naming the option (an option left undefined or null takes its default).
 * Without this a NaN silently disabled a bound (NaN segment size: no segment ever rolled;
 * NaN maxWatchers / watchQueueMax / maxOpenFiles: unbounded).
 */
export function validateEngineOptions(dir: unknown, opts: unknown): void {
  if (typeof dir !== 'string' || dir.length === 0 || dir.includes('\0')) {
    throw new KvError('E_INVALID_ARGUMENT', 'the data directory must be a non-empty path string');
  }
  if (opts === undefined || opts === null) return;
  if (typeof opts !== 'object') throw new KvError('E_INVALID_ARGUMENT', 'options must be an object');
  const o = opts as Record<string, unknown>;
  const num = (name: string, min: number, opt: { int?: boolean; max?: number; infinite?: boolean } = {}) => {
    const v = o[name];
    if (v === undefined || v === null) return;
    const ok = typeof v === 'number' && !Number.isNaN(v) && v >= min && v <= (opt.max ?? Infinity) &&
      (Number.isFinite(v) ? opt.int !== true || Number.isInteger(v) : opt.infinite === true);
    if (!ok) {
      throw new KvError('E_INVALID_ARGUMENT', `option ${name} must be ${opt.int ? 'an integer' : 'a number'} ` +
        `>= ${min}${opt.max !== undefined ? ` and <= ${opt.max}` : ''} (got ${typeof v === 'number' ? v : typeof v})`);
    }
  };
  num('valueThreshold', 0, { int: true });
  num('maxValueBytes', 0, { int: true });
  num('maxNamespaces', 1, { int: true });
  num('segmentMaxBytes', 1, { int: true });
  num('reclaimDeadRatio', 0, { max: 1 });
  num('reclaimMinBytes', 0, { infinite: true });
  num('maxOpenFiles', 1, { int: true });
  num('maxWatchers', 0, { int: true });
  num('watchQueueMax', 1, { int: true });
  num('syncIoMaxBytes', 0, { int: true });
  num('readCacheBytes', 0, { int: true });
  const fnObj = (name: string, fns: string[]) => {
    const v = o[name];
    if (v === undefined || v === null) return;
    if (typeof v !== 'object' || fns.some((f) => typeof (v as Record<string, unknown>)[f] !== 'function')) {
      throw new KvError('E_INVALID_ARGUMENT', `option ${name} must be an object with ${fns.join(', ')}`);
    }
  };
  fnObj('io', ['open', 'read', 'write', 'fsync', 'close', 'mkdir']);
  fnObj('valueSeparator', ['store', 'appended', 'failed', 'dropped', 'beforeSync', 'afterSync', 'read', 'rebuild']);
  if (o.onWarning !== undefined && o.onWarning !== null && typeof o.onWarning !== 'function') {
    throw new KvError('E_INVALID_ARGUMENT', 'option onWarning must be a function');
  }
}
