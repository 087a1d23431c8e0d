/**
 * `<dir>/meta.json`: the format version, the revision high-water mark, per namespace the
 * revision through which history was reclaimed (watch replay from at or below it is
 * E_COMPACTED), the segments a reclaim in progress is deleting (`obsolete`), and the
 * lifetime counters of the data directory (`counters`). See FORMAT.md.
 *
 * Writes go through one MetaWriter per engine: one write at a time (a promise chain), each
 * writing the state as it is when its turn comes, to a temp file of its own
 * (`meta.json.<pid>.<seq>.tmp`, created O_EXCL), fsynced, renamed over `meta.json`, then the
 * directory fsynced. So `meta.json` is never torn, never a mix of two writers, and a rename
 * never finds its temp file gone. It is written before anything that removes revision
 * evidence from the log (reclaim deleting segments, a namespace drop) and on close.
 * Every failure is a KvError (E_IO with the errno error as cause; E_CORRUPT, E_VERSION on read).
 */
import path from 'node:path';
import type { FileIo } from './file-io.js';
import { writeFully } from './file-io.js';
import { KvError } from './errors.js';

/** The meta.json format version this code reads and writes. */
export const META_VERSION = 1;

/** Cumulative counters of the data directory, across processes (persisted at each meta write). */
export interface MetaCounters {
  /** Bytes of records reclaim relocated. */
  compactionBytes: number;
  /** Reclaims run (one per namespace reclaimed). */
  reclaims: number;
  /** Orphan blob files and blob temp files removed by sweeps (open, gc). */
  orphansSwept: number;
}

export function zeroCounters(): MetaCounters {
  return { compactionBytes: 0, reclaims: 0, orphansSwept: 0 };
}

export interface Meta {
  version: 1;
  revision: number;
  compacted: Record<string, number>;
  /**
   * Per namespace, segment ids a reclaim has replaced and is deleting. Written (with the
   * copies durable) before the first old segment is unlinked; on open they are deleted
   * before recovery reads anything. Without it a crash between two unlinks could leave an
   * old record whose tombstone was already deleted (a resurrected key, whose blob may be gone).
   */
  obsolete?: Record<string, number[]>;
  /** Lifetime counters (absent in a meta.json written before they existed: zeros). */
  counters?: MetaCounters;
}

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | null)?.code ?? 'EIO';
}

/**
 * Reads `<dir>/meta.json` (absent: a fresh directory). A version other than META_VERSION is
 * E_VERSION (naming the file and both versions); anything unparsable is E_CORRUPT. Reads only.
 */
export async function readMeta(io: FileIo, dir: string): Promise<Meta> {
  const file = path.join(dir, 'meta.json');
  let raw: Buffer;
  try {
    raw = await io.readFile(file);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return { version: 1, revision: 0, compacted: {} };
    throw new KvError('E_IO', `read ${file}: ${errnoOf(err)}`, { cause: err });
  }
  let m: Partial<Meta> & { version?: unknown };
  try {
    m = JSON.parse(raw.toString('utf8')) as Partial<Meta>;
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new Error('not an object');
  } catch (err) {
    throw new KvError('E_CORRUPT', `${file}: unreadable (${(err as Error).message})`);
  }
  // the version first: a newer format may have any shape
  if (m.version !== META_VERSION) {
    throw new KvError('E_VERSION', `${file}: format version ${JSON.stringify(m.version ?? null)}, this glidekv reads version ${META_VERSION}; nothing was changed`);
  }
  try {
    // revisions are non-negative safe integers: anything else would be handed on as a counter
    const nat = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
    if (!nat(m.revision) || typeof m.compacted !== 'object' || m.compacted === null || Array.isArray(m.compacted) || !Object.values(m.compacted).every(nat)) {
      throw new Error('bad shape');
    }
    const out: Meta = { version: 1, revision: m.revision as number, compacted: { ...m.compacted } };
    if (m.obsolete !== undefined && typeof m.obsolete === 'object' && m.obsolete !== null) {
      const ob: Record<string, number[]> = {};
      for (const [ns, ids] of Object.entries(m.obsolete)) {
        if (!Array.isArray(ids) || !ids.every((x) => Number.isInteger(x))) throw new Error('bad obsolete list');
        ob[ns] = ids;
      }
      out.obsolete = ob;
    }
    if (m.counters !== undefined) {
      const c = zeroCounters();
      for (const k of Object.keys(c) as Array<keyof MetaCounters>) {
        const v = (m.counters as unknown as Record<string, unknown>)[k];
        if (v === undefined) continue;
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`bad counter ${k}`);
        c[k] = v;
      }
      out.counters = c;
    }
    return out;
  } catch (err) {
    throw new KvError('E_CORRUPT', `${file}: unreadable (${(err as Error).message})`);
  }
}

/** Removes temp files of meta writes that a crash left behind (`meta.json.tmp`, `meta.json.*.tmp`). */
export async function removeStaleMetaTemps(io: FileIo, dir: string): Promise<void> {
  for (const f of await io.readdir(dir)) {
    if (f.startsWith('meta.json.') && f.endsWith('.tmp')) await io.unlink(path.join(dir, f)).catch(() => {});
  }
}

let tmpSeq = 0;

/** Writes meta (as it is when called) atomically: own temp file, fsync, rename, fsync dir. Not serialized: use MetaWriter. */
async function writeMetaFile(io: FileIo, dir: string, meta: Meta): Promise<void> {
  const file = path.join(dir, 'meta.json');
  const tmp = path.join(dir, `meta.json.${process.pid}.${++tmpSeq}.tmp`);
  const b = Buffer.from(JSON.stringify(meta));
  let step = 'create';
  let created = false;
  try {
    const fd = await io.open(tmp, 'wx');
    created = true;
    try {
      step = 'write';
      await writeFully(io, fd, b, 0, b.length, 0);
      step = 'fsync';
      await io.fsync(fd);
    } finally {
      await io.close(fd);
    }
    step = 'rename';
    await io.rename(tmp, file);
    created = false;
    step = 'fsync the directory of';
  } catch (err) {
    if (created) await io.unlink(tmp).catch(() => {});
    throw new KvError('E_IO', `write ${file} (${step}): ${errnoOf(err)}`, { cause: err });
  }
  try {
    await io.fsyncDir(dir);
  } catch (err) {
    throw new KvError('E_IO', `write ${file} (${step}): ${errnoOf(err)}`, { cause: err });
  }
}

/**
 * The one writer of a data directory's meta.json: writes are serialized, and each writes
 * `snapshot()` taken when its turn comes (so the last write to finish holds the newest state).
 */
export class MetaWriter {
  private tail: Promise<void> = Promise.resolve();
  /** Writes completed (tests). */
  writes = 0;

  constructor(private readonly io: FileIo, private readonly dir: string, private readonly snapshot: () => Meta) {}

  /** Resolves once a meta.json holding the state of (at least) this moment is durable. Rejects with KvError. */
  write(): Promise<void> {
    const run = this.tail.then(async () => {
      await writeMetaFile(this.io, this.dir, this.snapshot());
      this.writes++;
    });
    this.tail = run.catch(() => {});
    return run;
  }
}

/** What the meta store reads of its engine when a write's turn comes. */
export interface MetaSource {
  /** The last revision handed out (meta.json's revision is never below it). */
  revision(): number;
  /** Orphan blobs swept by this process (added to the lifetime counter). */
  orphansSwept(): number;
}

/**
 * The meta store: the state meta.json holds (revision high-water mark, per-namespace
 * compacted revision, a reclaim's obsolete segments, lifetime counters) and its one writer.
 * Nothing else reads or changes that state: callers say what happened (a drop, a reclaim)
 * and the store records it durably. Every write is a KvError on failure (see MetaWriter).
 */
export class MetaStore {
  private meta: Meta = { version: 1, revision: 0, compacted: {} };
  /** Lifetime counters as read at open (this process adds its own). */
  private counterBase: MetaCounters = zeroCounters();
  private readonly writer: MetaWriter;
  /** Bytes relocated and reclaims run by this process (since open). */
  compactionBytes = 0;
  reclaims = 0;

  constructor(private readonly io: FileIo, private readonly dir: string, private readonly src: MetaSource) {
    this.writer = new MetaWriter(io, dir, () => this.snapshot());
  }

  /** Reads meta.json (E_VERSION / E_CORRUPT / E_IO; reads only). */
  async load(): Promise<void> {
    this.meta = await readMeta(this.io, this.dir);
    this.counterBase = { ...zeroCounters(), ...this.meta.counters };
  }

  /** The revision high-water mark as recorded. */
  get revision(): number {
    return this.meta.revision;
  }

  /** Watch replay from at or below this revision of `ns` is E_COMPACTED (0: none reclaimed). */
  compactedThrough(ns: string): number {
    return this.meta.compacted[ns] ?? 0;
  }

  /** Segment ids of `ns` that a reclaim replaced and had not finished deleting. */
  obsoleteOf(ns: string): number[] {
    return this.meta.obsolete?.[ns] ?? [];
  }

  /**
   * Open: the obsolete segments are deleted (and their directories fsynced) — forget them and
   * record the recovered revision. Writes only when there was a list.
   */
  async obsoleteDeleted(maxRev: number): Promise<void> {
    if (this.meta.obsolete === undefined || Object.keys(this.meta.obsolete).length === 0) return;
    delete this.meta.obsolete;
    this.meta.revision = Math.max(this.meta.revision, maxRev);
    await this.writer.write();
  }

  /** Is there an obsolete list (open then fsyncs the namespace directories before obsoleteDeleted)? */
  hasObsolete(): boolean {
    return this.meta.obsolete !== undefined && Object.keys(this.meta.obsolete).length > 0;
  }

  /**
   * A namespace is being dropped at `revision`: its history through that revision is gone (a
   * namespace of the same name created later replays from after it). Durable on return.
   */
  async recordDrop(ns: string, revision: number): Promise<void> {
    // the revision high-water mark first: the namespace's records may carry the highest revisions
    const before = { compacted: this.meta.compacted[ns], obsolete: this.meta.obsolete?.[ns] };
    this.meta.revision = Math.max(this.meta.revision, revision);
    this.meta.compacted[ns] = revision;
    if (this.meta.obsolete !== undefined) delete this.meta.obsolete[ns];
    try {
      await this.writer.write();
    } catch (err) {
      // the drop fails and changes nothing: a later meta write must not drop the obsolete list
      // of a namespace that is still there (its segments would never be deleted on open)
      if (before.compacted === undefined) delete this.meta.compacted[ns];
      else this.meta.compacted[ns] = before.compacted;
      if (before.obsolete !== undefined) this.meta.obsolete = { ...this.meta.obsolete, [ns]: before.obsolete };
      throw err;
    }
  }

  /**
   * A reclaim of `ns` copied its live records (durable) and is about to delete `oldIds`:
   * history through `sealRev` is gone, the old segments are doomed as a set (open deletes any
   * left), and the counters take this reclaim. Durable on return; returns the namespace's
   * compacted revision.
   */
  async recordReclaim(ns: string, sealRev: number, oldIds: number[], relocatedBytes: number): Promise<number> {
    this.meta.revision = Math.max(this.meta.revision, this.src.revision());
    this.meta.compacted[ns] = Math.max(this.meta.compacted[ns] ?? 0, sealRev);
    this.meta.obsolete = { ...this.meta.obsolete, [ns]: oldIds };
    // the lifetime counters go into this same meta write (kv stats in a later process shows them)
    this.compactionBytes += relocatedBytes;
    this.reclaims++;
    await this.writer.write();
    return this.meta.compacted[ns];
  }

  /** A reclaim that had nothing to copy: counted, nothing written now. */
  countReclaim(): void {
    this.reclaims++;
  }

  /**
   * The old segments of a reclaim of `ns` are deleted. The list stays in meta.json until its
   * next write (deleting absent files on open is harmless; ids are never reused in a process).
   */
  obsoleteRemoved(ns: string): void {
    if (this.meta.obsolete === undefined) return;
    delete this.meta.obsolete[ns];
    if (Object.keys(this.meta.obsolete).length === 0) delete this.meta.obsolete;
  }

  /** Lifetime counters: as read at open plus this process's. */
  lifetime(): MetaCounters {
    return {
      compactionBytes: this.counterBase.compactionBytes + this.compactionBytes,
      reclaims: this.counterBase.reclaims + this.reclaims,
      orphansSwept: this.counterBase.orphansSwept + this.src.orphansSwept(),
    };
  }

  /** Writes meta.json as it is now (close). */
  write(): Promise<void> {
    return this.writer.write();
  }

  /** meta.json writes completed. */
  get writes(): number {
    return this.writer.writes;
  }

  /** What a write gets when its turn comes: the state now, the revision high-water mark, lifetime counters. */
  private snapshot(): Meta {
    return { ...this.meta, revision: Math.max(this.meta.revision, this.src.revision()), counters: this.lifetime() };
  }
}
