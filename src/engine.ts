/**
 * The KV engine: namespaces of keys, each an append-only log of segments plus a keydir.
 *
 * KvEngine is the facade: it validates every call, owns the namespaces and the read path
 * (keydir + read cache + segment preads), and hands the rest to the concepts it holds:
 * - src/log-writer.ts (LogWriter): the one writer loop — group commit, segment roll,
 *   revision and file-id counters, poisoning after a failed append or fsync.
 * - src/engine-open.ts: open/replay — the version gate, recovery of every namespace from its
 *   segments, the first meta write, the blob store's rebuild.
 * - src/meta.ts (MetaStore): meta.json's state and its one writer.
 * - src/reclaim.ts: reclaim (compaction), through the narrow ReclaimHost.
 * - src/watch.ts: watch subscriptions; history replay from the log is here.
 *
 * Value separation (issue 4): values of `valueThreshold` bytes or more go to the blob store
 * (src/blob-store.ts) through the `ValueSeparator` seam (src/value-separator.ts); the default
 * separator is `BlobSeparator`. See FORMAT.md, "Value separation".
 */
import path from 'node:path';
import { KvError } from './errors.js';
import type { FileIo } from './file-io.js';
import { nodeFileIo, readFully } from './file-io.js';
import { FdCache } from './fd-cache.js';
import { DirLock } from './lock.js';
import { MetaStore } from './meta.js';
import { KF_POINTER, MAX_REVISION } from './keydir.js';
import { NsState, type SegInfo } from './ns-state.js';
import {
  decodeRecord, F_BATCH, F_POINTER, HASH_SIZE, HEADER_SIZE, recordSize, RecordView, T_COMMIT, T_DEL, T_PUT,
} from './record.js';
import { segmentName } from './segment.js';
import { scanRecords } from './recovery.js';
import { WatchHub, type Subscription, type WatchEvent } from './watch.js';
import { reclaimNamespace, type ReclaimHost } from './reclaim.js';
import { NS_DIR, rebuildBlobRefs, recoverDirectory, TRASH_DIR, validateEngineOptions, type OpenHost } from './engine-open.js';
import { BlobStore } from './blob-store.js';
import { blobIoFromFileIo } from './blob-io.js';
import { BlobSeparator, type ValueSeparator } from './value-separator.js';
import { ReadCache } from './read-cache.js';
import { listKeys } from './key-list.js';
import { LogWriter, OpKind, type BatchItem, type SyncMode } from './log-writer.js';

export type { ValueSeparator } from './value-separator.js';

export type { SyncMode } from './log-writer.js';

export interface EngineOptions {
  /** Durability of put/delete/batch when they resolve. Default 'batch' (group commit). */
  sync?: SyncMode;
  /** Values of this many bytes or more go to the blob store (issue 4). Default 131072; 0 = never. */
  valueThreshold?: number;
  /** Default 64 MiB. */
  maxValueBytes?: number;
  /** Default 1024. */
  maxNamespaces?: number;
  /** A segment rolls (is sealed, a new one started) past this size. Default 64 MiB. */
  segmentMaxBytes?: number;
  /** Automatic reclaim of a namespace when dead/(live+dead) passes this. Default 0.5. */
  reclaimDeadRatio?: number;
  /** ... and its dead bytes pass this. Default 1 MiB. */
  reclaimMinBytes?: number;
  /**
   * Reclaim policy (FORMAT.md "Reclaim policy"): a segment is reclaimed (its live records
   * copied) only when its garbage is at least this fraction of its bytes; mostly-live segments
   * stay where they are. Default 0.5; 0 = every segment at every reclaim.
   */
  reclaimSegmentDeadRatio?: number;
  /** Read descriptors kept open (LRU). Default 256. */
  maxOpenFiles?: number;
  /** Total watch subscriptions. Default 10000. */
  maxWatchers?: number;
  /** Undelivered events per subscription before it ends with E_LAGGED. Default 10000. */
  watchQueueMax?: number;
  /**
   * Records up to this many bytes are read and written with blocking pread/pwrite when the
   * FileIo offers them (like LevelDB's write(2) in the caller, or lmdb's mmap page faults).
   * Default 65536; 0 = always through the thread pool.
   */
  syncIoMaxBytes?: number;
  /**
   * Bytes of segment blocks kept in memory for reads (src/read-cache.ts): a get of a small
   * value in a cached block costs no pread. Default 33554432 (32 MiB); 0 = no cache.
   */
  readCacheBytes?: number;
  /** The file-system seam (tests inject faults). Default node:fs. */
  io?: FileIo;
  /**
   * The blob store adapter. Default: a `BlobSeparator` over `<dir>/values` (through `io`).
   * The blob store is opened even with valueThreshold 0, so pointers written earlier stay readable.
   */
  valueSeparator?: ValueSeparator;
  /** Surfaced, non-fatal problems (failed directory fsync, dangling pointers at open). Default: process.emitWarning. */
  onWarning?: (message: string, cause?: unknown) => void;
}

export interface EngineStats {
  keys: number;
  liveBytes: number;
  deadBytes: number;
  segments: number;
  revision: number;
  /** Bytes relocated by reclaim, over the data directory's life (persisted in meta.json; see FORMAT.md). */
  compactionBytes: number;
  /** ... by this process (since open). */
  compactionBytesSinceOpen: number;
  namespaces: number;
  /** Reclaims (one per namespace reclaimed), over the data directory's life / since open. */
  reclaims: number;
  reclaimsSinceOpen: number;
  /** Automatic reclaims that failed (the last error: engine.lastReclaimError). */
  reclaimFailures: number;
  keydirBytes: number;
  fsyncs: number;
  writes: number;
  watchers: number;
  openFiles: number;
  emfileRetries: number;
  poisoned: number;
  /** Blob files present and their bytes (value separation). */
  blobs: number;
  blobBytes: number;
  /** Orphan blobs and temp files removed by sweeps (open, gc), over the data directory's life / since open. */
  orphansSwept: number;
  orphansSweptSinceOpen: number;
  /** Failed fsyncs of `values/` since open (each also raised a warning). */
  dirFsyncFailures: number;
  /** Live pointers whose blob was missing at open (E_CORRUPT on read). */
  danglingPointers: number;
  /** Warnings raised since open (onWarning). */
  warnings: number;
  /** Read cache (src/read-cache.ts): bytes held, gets served from it, blocks read into it. */
  readCacheBytes: number;
  readCacheHits: number;
  readCacheMisses: number;
}

export type KeyInput = Buffer | string;
export type ValueInput = Buffer | Uint8Array | string;
export type BatchOp = { type: 'put'; key: KeyInput; value: ValueInput } | { type: 'delete'; key: KeyInput };

export interface Engine {
  createNamespace(ns: string): Promise<void>;
  dropNamespace(ns: string, opts?: { force?: boolean }): Promise<void>;
  listNamespaces(): string[];
  put(ns: string, key: KeyInput, value: ValueInput, opts?: { ifRevision?: number }): Promise<number>;
  get(ns: string, key: KeyInput): Promise<{ value: Buffer; revision: number; mtime: number } | undefined>;
  stat(ns: string, key: KeyInput): { size: number; revision: number; mtime: number } | undefined;
  delete(ns: string, key: KeyInput, opts?: { ifRevision?: number }): Promise<number | undefined>;
  list(ns: string, opts?: { prefix?: KeyInput; after?: KeyInput; limit?: number }):
    Array<{ key: Buffer; revision: number; size: number; mtime: number }>;
  batch(ns: string, ops: BatchOp[]): Promise<number>;
  watch(ns: string, sel: { key: KeyInput } | { prefix: KeyInput }, opts?: { fromRevision?: number }):
    AsyncIterable<WatchEvent> & { close(): void };
  sync(): Promise<void>;
  /**
   * Reclaims every namespace under the reclaim policy (segments with enough garbage);
   * `full: true` reclaims every segment (the log then holds live records only).
   */
  reclaim(opts?: { full?: boolean }): Promise<{ relocatedBytes: number; segmentsRemoved: number; durationMs: number }>;
  /** Makes every acknowledged write durable, then removes orphan blobs (unreferenced, unpinned). */
  gc(): Promise<{ orphansSwept: number }>;
  stats(): EngineStats;
  close(): Promise<void>;
}

const MAX_KEY = 1024;

/** Little-endian u32 at b[p] (plain reads: cheaper than readUInt32LE's checks on the hot path). */
function u32(b: Buffer, p: number): number {
  return (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16)) + b[p + 3] * 0x1000000;
}

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | null)?.code ?? 'EIO';
}

export function validateNamespaceName(ns: unknown): string {
  if (typeof ns !== 'string') throw new KvError('E_INVALID_NAME', 'namespace name must be a string');
  const b = Buffer.from(ns, 'utf8');
  if (b.length < 1 || b.length > 255) throw new KvError('E_INVALID_NAME', `namespace name must be 1-255 bytes of UTF-8 (got ${b.length})`);
  if (b.toString('utf8') !== ns) throw new KvError('E_INVALID_NAME', 'namespace name is not valid UTF-8');
  if (ns.includes('/') || ns.includes('\0')) throw new KvError('E_INVALID_NAME', 'namespace name must not contain "/" or NUL');
  if (ns === '.' || ns === '..') throw new KvError('E_INVALID_NAME', 'namespace name must not be "." or ".."');
  return ns;
}

function toKey(key: unknown): Buffer {
  let b: Buffer;
  if (typeof key === 'string') b = Buffer.from(key, 'utf8');
  else if (Buffer.isBuffer(key)) b = key;
  else if (key instanceof Uint8Array) b = Buffer.from(key.buffer, key.byteOffset, key.byteLength);
  else throw new KvError('E_INVALID_KEY', 'key must be a Buffer or a string');
  if (b.length < 1 || b.length > MAX_KEY) throw new KvError('E_INVALID_KEY', `key must be 1-${MAX_KEY} bytes (got ${b.length})`);
  return b;
}

function toBytes(v: unknown, what: string): Buffer {
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  throw new KvError('E_INVALID_ARGUMENT', `${what} must be a Buffer, Uint8Array or string`);
}

function checkRevisionArg(r: unknown, what: string): number {
  if (typeof r !== 'number' || !Number.isSafeInteger(r) || r < 0) {
    throw new KvError('E_INVALID_ARGUMENT', `${what} must be a non-negative integer`);
  }
  return r;
}

export class KvEngine implements Engine {
  readonly dir: string;
  readonly io: FileIo;
  readonly syncMode: SyncMode;
  readonly valueThreshold: number;
  readonly maxValueBytes: number;
  readonly maxNamespaces: number;
  readonly segmentMaxBytes: number;
  readonly reclaimDeadRatio: number;
  readonly reclaimMinBytes: number;
  readonly reclaimSegmentDeadRatio: number;
  readonly syncIoMaxBytes: number;
  readonly fds: FdCache;
  /** Segment blocks for small gets (null: readCacheBytes 0). */
  readonly readCache: ReadCache | null;
  readonly hub: WatchHub;
  separator: ValueSeparator | null;
  private readonly warnFn: (message: string, cause?: unknown) => void;
  warnings = 0;
  /** The writer loop: group commit, segment roll, revision and file-id counters, poisoning. */
  private readonly log: LogWriter;

  private lock: DirLock | null = null;
  readonly namespaces = new Map<string, NsState>();
  private readonly creating = new Set<string>();
  /** Namespaces being dropped (their directory is still there): a create of one waits for the drop. */
  private readonly dropping = new Map<string, Promise<void>>();
  /** meta.json: its state and its one writer. */
  private readonly meta: MetaStore;
  /** What reclaim sees of the engine. */
  private readonly reclaimHost: ReclaimHost;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly view = new RecordView();
  private reclaimChain: Promise<unknown> = Promise.resolve();
  private readonly autoReclaimPending = new Set<string>();

  // counters
  lastReclaimError: unknown = null;
  reclaimFailures = 0;

  constructor(dir: string, opts: EngineOptions) {
    validateEngineOptions(dir, opts); // E_INVALID_ARGUMENT before anything is touched
    this.dir = path.resolve(dir);
    this.io = opts.io ?? nodeFileIo;
    this.syncMode = opts.sync ?? 'batch';
    if (!['always', 'batch', 'none'].includes(this.syncMode)) {
      throw new KvError('E_INVALID_ARGUMENT', `sync must be 'always', 'batch' or 'none'`);
    }
    this.valueThreshold = opts.valueThreshold ?? 131072;
    this.maxValueBytes = Math.min(opts.maxValueBytes ?? 64 * 1024 * 1024, 0x7fff_0000);
    this.maxNamespaces = opts.maxNamespaces ?? 1024;
    this.segmentMaxBytes = Math.min(Math.max(opts.segmentMaxBytes ?? 64 * 1024 * 1024, 128), 0x7fff_ffff);
    this.reclaimDeadRatio = opts.reclaimDeadRatio ?? 0.5;
    this.reclaimMinBytes = opts.reclaimMinBytes ?? 1024 * 1024;
    this.reclaimSegmentDeadRatio = opts.reclaimSegmentDeadRatio ?? 0.5;
    if (!(this.reclaimSegmentDeadRatio >= 0 && this.reclaimSegmentDeadRatio <= 1)) {
      throw new KvError('E_INVALID_ARGUMENT', 'reclaimSegmentDeadRatio must be a number from 0 to 1');
    }
    this.syncIoMaxBytes = opts.syncIoMaxBytes ?? 65536;
    this.fds = new FdCache(this.io, Math.max(1, opts.maxOpenFiles ?? 256));
    const rcBytes = opts.readCacheBytes ?? 32 * 1024 * 1024;
    this.readCache = rcBytes > 0 ? new ReadCache(rcBytes) : null;
    this.hub = new WatchHub(opts.maxWatchers ?? 10000, Math.max(1, opts.watchQueueMax ?? 10000));
    this.separator = opts.valueSeparator ?? null;
    this.meta = new MetaStore(this.io, this.dir, {
      revision: () => this.log.revision,
      orphansSwept: () => this.separator?.stats?.().orphansSwept ?? 0,
    });
    const onWarning = opts.onWarning ?? ((m: string) => process.emitWarning(m, { code: 'GLIDEKV' }));
    this.warnFn = (m, cause) => {
      this.warnings++;
      onWarning(m, cause);
    };
    const eng = this;
    this.log = new LogWriter({
      io: this.io, fds: this.fds, syncMode: this.syncMode, segmentMaxBytes: this.segmentMaxBytes,
      syncIoMaxBytes: this.syncIoMaxBytes, hub: this.hub, namespaces: this.namespaces,
      get separator() { return eng.separator; },
      get closed() { return eng.closed; },
      afterApply: (st) => this.maybeAutoReclaim(st),
      warn: (m, cause) => this.warn(m, cause),
    });
    const log = this.log;
    const meta = this.meta;
    this.reclaimHost = {
      io: this.io, fds: this.fds, segmentMaxBytes: this.segmentMaxBytes,
      policy: { segmentDeadRatio: this.reclaimSegmentDeadRatio, logDeadRatio: this.reclaimDeadRatio, logMinBytes: this.reclaimMinBytes },
      get revision() { return log.revision; },
      get writtenRevision() { return log.writtenRevision; },
      barrier: (fn) => log.barrier(fn),
      roll: (st) => log.roll(st),
      allocFileId: () => log.allocFileId(),
      recordReclaim: (ns, sealRev, oldIds, relocatedBytes) => meta.recordReclaim(ns, sealRev, oldIds, relocatedBytes),
      countReclaim: () => meta.countReclaim(),
      obsoleteRemoved: (ns) => meta.obsoleteRemoved(ns),
    };
  }

  /** What open/replay (src/engine-open.ts) sees of this engine. */
  private openHost(): OpenHost {
    return {
      io: this.io, dir: this.dir, fds: this.fds, meta: this.meta, namespaces: this.namespaces,
      setNextFileId: (id) => { this.log.nextFileId = id; },
      startRevision: (rev) => this.log.start(rev),
      newActive: (st) => this.log.newActive(st),
      warn: (m, cause) => this.warn(m, cause),
    };
  }

  /** Bytes relocated by reclaim, reclaims run: by this process (since open). */
  get compactionBytes(): number {
    return this.meta.compactionBytes;
  }

  get reclaims(): number {
    return this.meta.reclaims;
  }

  /** Last revision handed out. */
  get revision(): number {
    return this.log.revision;
  }

  /** Highest revision applied to a keydir (written to a segment). */
  get writtenRevision(): number {
    return this.log.writtenRevision;
  }

  /** Highest revision whose watch events were dispatched (acknowledged). */
  get notifiedRevision(): number {
    return this.log.notifiedRevision;
  }

  get fsyncs(): number {
    return this.log.fsyncs;
  }

  get writes(): number {
    return this.log.writes;
  }

  /** The error that disabled writes (null while writes work). */
  get poisoned(): KvError | null {
    return this.log.poisoned;
  }

  /** Runs fn inside the writer, after everything enqueued before it is written and acknowledged. */
  barrier<T>(fn: () => Promise<T>): Promise<T> {
    return this.log.barrier(fn);
  }

  /** Inside the writer: seals the active segment of st (footer + fsync) and starts a new one. */
  roll(st: NsState): Promise<void> {
    return this.log.roll(st);
  }

  /** Creates the next segment file of a namespace and makes it the active one. */
  newActive(st: NsState): Promise<void> {
    return this.log.newActive(st);
  }

  allocFileId(): number {
    return this.log.allocFileId();
  }

  /** Raises a surfaced, non-fatal problem (counted in stats().warnings). */
  warn(message: string, cause?: unknown): void {
    this.warnFn(message, cause);
  }

  // ---------------------------------------------------------------- open / close

  async openInternal(): Promise<void> {
    await this.io.mkdir(this.dir);
    this.lock = await DirLock.acquire(this.io, this.dir);
    try {
      // the version gate, recovery of every namespace, the first meta write (src/engine-open.ts)
      await recoverDirectory(this.openHost());
      if (this.separator === null) {
        const blobs = await BlobStore.open(this.dir, { io: blobIoFromFileIo(this.io), onWarning: (m, c) => this.warn(m, c) });
        this.separator = new BlobSeparator(blobs, (m) => this.warn(m));
      }
      await rebuildBlobRefs(this.io, this.namespaces.values(), this.separator);
    } catch (err) {
      for (const st of this.namespaces.values()) if (st.active) await this.io.close(st.active.fd).catch(() => {});
      await this.separator?.close?.().catch(() => {});
      await this.fds.closeAll();
      await this.lock.release();
      throw err;
    }
  }


  async close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.closing = this.closeInternal();
    return this.closing;
  }

  private async closeInternal(): Promise<void> {
    try {
      await this.reclaimChain.catch(() => {});
      if (this.log.poisoned === null) await this.barrier(async () => this.log.closeTails()).catch(() => {});
      await this.log.drained();
    } finally {
      this.closed = true;
      this.hub.endAll(null, null);
      for (const st of this.namespaces.values()) {
        if (st.active !== null) await this.io.close(st.active.fd).catch(() => {});
        st.active = null;
      }
      if (this.log.poisoned === null) {
        await this.meta.write().catch(() => {});
      }
      await this.separator?.close?.().catch(() => {});
      await this.fds.closeAll();
      await this.lock?.release();
    }
  }

  private checkOpen(): void {
    if (this.closed || this.closing !== null) throw new KvError('E_CLOSED', 'the engine is closed');
  }

  private checkWritable(): void {
    this.checkOpen();
    if (this.log.poisoned !== null) throw this.log.poisoned;
  }

  private nsOrThrow(ns: string): NsState {
    const st = typeof ns === 'string' ? this.namespaces.get(ns) : undefined;
    if (st === undefined) throw new KvError('E_NO_NAMESPACE', `no namespace ${JSON.stringify(ns)}`);
    return st;
  }

  // ---------------------------------------------------------------- namespaces

  async createNamespace(ns: string): Promise<void> {
    this.checkWritable();
    validateNamespaceName(ns);
    // a drop of this name still owns its directory: wait until it is gone (then create afresh)
    for (let d = this.dropping.get(ns); d !== undefined; d = this.dropping.get(ns)) {
      await d.catch(() => {});
      this.checkWritable();
    }
    if (this.namespaces.has(ns) || this.creating.has(ns)) {
      throw new KvError('E_NAMESPACE_EXISTS', `namespace ${JSON.stringify(ns)} exists`);
    }
    if (this.namespaces.size + this.creating.size >= this.maxNamespaces) {
      throw new KvError('E_TOO_MANY_NAMESPACES', `at most ${this.maxNamespaces} namespaces`);
    }
    this.creating.add(ns); // reserved synchronously: concurrent creates see it
    try {
      const st = new NsState(ns, path.join(this.dir, NS_DIR, ns));
      st.compactedThrough = this.meta.compactedThrough(ns);
      try {
        // a directory of this name that no namespace owns is what a drop that failed midway left
        // (its meta.json entry was written): never reuse it, or its old records come back on open
        const trash = path.join(this.dir, TRASH_DIR, `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`);
        let leftover = true;
        await this.io.mkdir(path.join(this.dir, TRASH_DIR));
        await this.io.rename(st.dir, trash).catch((err) => {
          if (errnoOf(err) !== 'ENOENT') throw err;
          leftover = false;
        });
        if (leftover) {
          await this.io.fsyncDir(path.join(this.dir, NS_DIR));
          await this.io.rm(trash).catch(() => {});
        }
        await this.io.mkdir(st.dir);
        await this.log.newActive(st);
        await this.io.fsyncDir(path.join(this.dir, NS_DIR));
      } catch (err) {
        if (st.active !== null) await this.io.close(st.active.fd).catch(() => {});
        // no half-made namespace after a reopen: if its directory cannot be removed, the next open
        // finds it (an empty namespace, as if the create had succeeded): the outcome of this create
        // is then unknown, so stop taking writes rather than report a create that may come back
        const left = await this.io.rm(st.dir).then(() => null, (e2: unknown) => e2);
        if (left !== null) {
          this.log.poison(new KvError('E_POISONED', `writes are disabled: the create of namespace ${JSON.stringify(ns)} ` +
            `failed (${errnoOf(err)}) and its directory could not be removed (${errnoOf(left)}); reopen the engine`, { cause: err }), []);
        }
        throw ioError(`create namespace ${ns}`, err);
      }
      this.checkOpen();
      this.namespaces.set(ns, st);
    } finally {
      this.creating.delete(ns);
    }
  }

  async dropNamespace(ns: string, opts?: { force?: boolean }): Promise<void> {
    this.checkWritable();
    const st = this.nsOrThrow(ns);
    const force = opts?.force === true;
    if (!force && (st.keydir.size > 0 || st.inflight > 0)) {
      throw new KvError('E_NAMESPACE_NOT_EMPTY', `namespace ${JSON.stringify(ns)} is not empty (use force)`);
    }
    if (st.reclaiming !== null) await st.reclaiming.catch(() => {});
    await this.barrier(async () => {
      if (this.namespaces.get(ns) !== st) throw new KvError('E_NO_NAMESPACE', `no namespace ${JSON.stringify(ns)}`);
      if (!force && (st.keydir.size > 0 || st.inflight > 0)) {
        throw new KvError('E_NAMESPACE_NOT_EMPTY', `namespace ${JSON.stringify(ns)} is not empty (use force)`);
      }
      await this.meta.recordDrop(ns, this.log.revision);
      let done!: () => void;
      const dropped = new Promise<void>((resolve) => (done = resolve));
      this.dropping.set(ns, dropped); // before the delete: a create waits for the drop, then sees one or the other
      try {
        // A drop that fails changes nothing (the namespace stays, with its keys; only its history
        // through now is compacted): the namespace goes from memory only once its directory is
        // out of ns/ durably. Its descriptors stay open until then (a rename keeps them valid).
        const trash = path.join(this.dir, TRASH_DIR);
        const dest = path.join(trash, `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`);
        try {
          await this.io.mkdir(trash);
          await this.io.rename(st.dir, dest);
        } catch (err) {
          throw ioError(`drop ${ns}`, err);
        }
        try {
          await this.io.fsyncDir(path.join(this.dir, NS_DIR));
        } catch (err) {
          // not durable: move it back and report; if even that fails, the namespace's files are in
          // trash/ (emptied on open): stop taking writes rather than acknowledge writes into it
          const back = await this.io.rename(dest, st.dir).then(() => null, (e2: unknown) => e2);
          if (back !== null) {
            this.namespaces.delete(ns);
            st.dropped = true;
            this.log.poison(new KvError('E_POISONED', `writes are disabled: the drop of namespace ${JSON.stringify(ns)} ` +
              `could not be made durable (${errnoOf(err)}) nor undone (${errnoOf(back)}); reopen the engine`, { cause: err }), []);
          }
          throw ioError(`drop ${ns}`, err);
        }
        st.dropped = true;
        this.namespaces.delete(ns);
        if (st.active !== null) await this.io.close(st.active.fd).catch(() => {});
        st.active = null;
        for (const s of st.segments.values()) this.fds.evict(s.path);
        // the drop is durable; what is left in trash/ goes on the next open
        await this.io.rm(dest).catch((err) => this.warn(`drop ${ns}: removing ${dest} failed (${errnoOf(err)}); it goes on the next open`, err));
      } finally {
        this.dropping.delete(ns);
        done();
      }
    });
    if (this.separator !== null) {
      const k = st.keydir;
      for (let e = 0, n = k.entryLimit; e < n; e++) {
        const h = k.isLive(e) ? k.pointerHash(e) : undefined;
        if (h !== undefined) this.separator.dropped(h);
      }
    }
    this.hub.endAll(ns, new KvError('E_NO_NAMESPACE', `namespace ${JSON.stringify(ns)} was dropped`));
  }

  listNamespaces(): string[] {
    this.checkOpen();
    return [...this.namespaces.keys()].sort();
  }

  // ---------------------------------------------------------------- reads

  get(ns: string, keyIn: KeyInput): Promise<{ value: Buffer; revision: number; mtime: number } | undefined> {
    // the synchronous fast path first (no promise of its own: one resolved promise per get)
    let r: { value: Buffer; revision: number; mtime: number } | undefined | null;
    try {
      r = this.getCached(ns, keyIn);
    } catch (err) {
      return Promise.reject(err);
    }
    return r !== null ? Promise.resolve(r) : this.getSlow(ns, keyIn);
  }

  /**
   * A get served from memory: the key is absent, or its record is in a read-cache block (read
   * into one now, with blocking preads, when the cache takes it). null = not served here: the
   * caller takes getSlow, which reads, checks and reports (E_CORRUPT, E_IO) on its own.
   */
  private getCached(ns: string, keyIn: KeyInput): { value: Buffer; revision: number; mtime: number } | undefined | null {
    this.checkOpen();
    const st = this.nsOrThrow(ns);
    const key = toKey(keyIn);
    const k = st.keydir;
    const e = k.find(key);
    if (e < 0) return undefined;
    const rc = this.readCache;
    if (rc === null) return null;
    const fileId = k.fileId[e];
    const offset = k.offset[e];
    let s = rc.lookupVerified(fileId, offset);
    if (s >= 0) {
      // The record at (fileId, offset) is the key's current one (the keydir says so), its bytes
      // were checked (crc) when first read into this block and cannot change: take its size,
      // revision and mtime from its header (the keydir holds the same values: fewer cache
      // misses than reading them from the keydir's arrays). A pointer record goes the slow way.
      const b = rc.buf(s);
      const p = offset - rc.blockBase(s);
      if (b[p + 8] !== T_PUT || (b[p + 9] & F_POINTER) !== 0 || (b[p + 12] | (b[p + 13] << 8)) !== key.length) return null;
      const keyOff = p + HEADER_SIZE + b[p + 10];
      for (let i = 0; i < key.length; i++) if (b[keyOff + i] !== key[i]) return null;
      const vsize = u32(b, p + 32);
      const value = Buffer.allocUnsafe(vsize);
      value.set(new Uint8Array(b.buffer, b.byteOffset + keyOff + key.length, vsize));
      return { value, revision: u32(b, p + 16) + u32(b, p + 20) * 0x1_0000_0000, mtime: b.readDoubleLE(p + 24) };
    }
    // not cached, or not checked yet: the keydir's fields say what the record must be
    if ((k.flags[e] & KF_POINTER) !== 0) return null;
    const vsize = k.vsize[e];
    const rev = k.revOf(e);
    const len = recordSize(st.nameBuf.length, key.length, T_PUT, 0, vsize);
    if (!rc.fits(offset, len)) return null;
    s = rc.lookup(fileId, offset, len);
    if (s < 0) {
      const seg = st.segments.get(fileId);
      if (seg === undefined || this.io.readSync === undefined) return null;
      const a = this.fds.acquire(seg.path);
      if (typeof a !== 'number') {
        // not open yet: the slow path opens it (this acquire is released once it resolves)
        a.then(() => this.fds.release(seg.path), () => {});
        return null;
      }
      try {
        s = rc.fill(fileId, offset, len, seg.size, a, this.io);
      } catch {
        return null; // the slow path reads again and reports the error
      } finally {
        this.fds.release(seg.path);
      }
      if (s < 0) return null;
    }
    const b = rc.buf(s);
    const p = offset - rc.blockBase(s);
    const v = this.view;
    if (!decodeRecord(b, p, p + len, v) || v.type !== T_PUT || (v.flags & F_POINTER) !== 0 || v.revision !== rev ||
      v.valueSize !== vsize || v.keyLen !== key.length || v.mtime !== k.mtimeOf(e)) {
      rc.drop(fileId, offset); // read it again next time; the slow path decides what it is
      return null;
    }
    for (let i = 0; i < key.length; i++) if (b[v.keyOff + i] !== key[i]) return null;
    rc.setVerified(s, offset);
    const value = Buffer.allocUnsafe(vsize);
    value.set(new Uint8Array(b.buffer, b.byteOffset + v.payloadOff, vsize));
    return { value, revision: rev, mtime: k.mtimeOf(e) };
  }

  private async getSlow(ns: string, keyIn: KeyInput): Promise<{ value: Buffer; revision: number; mtime: number } | undefined> {
    this.checkOpen();
    const st = this.nsOrThrow(ns);
    const key = toKey(keyIn);
    for (let attempt = 0; ; attempt++) {
      const k = st.keydir;
      const e = k.find(key);
      if (e < 0) return undefined;
      const fileId = k.fileId[e];
      const offset = k.offset[e];
      const rev = k.revOf(e);
      const mtime = k.mtimeOf(e);
      const vsize = k.vsize[e];
      const flags = k.flags[e] & KF_POINTER;
      if (flags !== 0) {
        // separated: the keydir holds the hash; read (which pins the blob on entry) in this same
        // tick, so a delete + collect that follows cannot remove the blob under us
        if (this.separator === null) throw new KvError('E_CORRUPT', `${ns}: value is in the blob store, which is not configured`);
        const value = await this.separator.read(k.pointerHash(e)!, vsize);
        if (value.length !== vsize) {
          throw new KvError('E_CORRUPT', `${ns}: blob has ${value.length} bytes, the pointer says ${vsize}`);
        }
        return { value, revision: rev, mtime };
      }
      const seg = st.segments.get(fileId);
      if (seg === undefined) {
        if (attempt < 3) continue;
        throw new KvError('E_CORRUPT', `${ns}: key points to missing segment ${segmentName(fileId)}`);
      }
      const len = recordSize(st.nameBuf.length, key.length, T_PUT, flags, vsize);
      const buf = Buffer.allocUnsafe(len);
      let fd: number;
      try {
        const a = this.fds.acquire(seg.path);
        fd = typeof a === 'number' ? a : await a;
      } catch (err) {
        if (errnoOf(err) === 'ENOENT' && attempt < 3) continue; // reclaimed meanwhile: look again
        throw new KvError('E_IO', `read ${seg.path}: ${errnoOf(err)}`, { cause: err });
      }
      let n: number;
      try {
        if (this.io.readSync !== undefined && len <= this.syncIoMaxBytes) {
          n = 0;
          while (n < len) {
            const r = this.io.readSync(fd, buf, n, len - n, offset + n);
            if (r === 0) break;
            n += r;
          }
        } else {
          n = await readFully(this.io, fd, buf, 0, len, offset);
        }
      } catch (err) {
        throw new KvError('E_IO', `read ${seg.path}: ${errnoOf(err)}`, { cause: err });
      } finally {
        this.fds.release(seg.path);
      }
      const v = this.view;
      if (n !== len || !decodeRecord(buf, 0, len, v) || v.type !== T_PUT || v.revision !== rev ||
        buf.compare(key, 0, key.length, v.keyOff, v.keyOff + v.keyLen) !== 0) {
        // the entry may have moved (reclaim) while we read: look again before calling it corrupt
        const e2 = st.keydir.find(key);
        if (attempt < 3 && (e2 < 0 || st.keydir.fileId[e2] !== fileId || st.keydir.offset[e2] !== offset)) continue;
        throw new KvError('E_CORRUPT', `${ns}: record at ${segmentName(fileId)}:${offset} failed its checksum`);
      }
      if ((v.flags & F_POINTER) !== 0) {
        if (this.separator === null) throw new KvError('E_CORRUPT', `${ns}: value is in the blob store, which is not configured`);
        const hash = Buffer.from(buf.subarray(v.payloadOff, v.payloadOff + HASH_SIZE));
        return { value: await this.separator.read(hash, vsize), revision: rev, mtime };
      }
      return { value: buf.subarray(v.payloadOff, v.payloadOff + vsize), revision: rev, mtime };
    }
  }

  stat(ns: string, keyIn: KeyInput): { size: number; revision: number; mtime: number } | undefined {
    this.checkOpen();
    const st = this.nsOrThrow(ns);
    const k = st.keydir;
    const e = k.find(toKey(keyIn));
    if (e < 0) return undefined;
    return { size: k.vsize[e], revision: k.revOf(e), mtime: k.mtimeOf(e) };
  }

  list(ns: string, opts?: { prefix?: KeyInput; after?: KeyInput; limit?: number }):
    Array<{ key: Buffer; revision: number; size: number; mtime: number }> {
    this.checkOpen();
    const st = this.nsOrThrow(ns);
    const prefix = opts?.prefix !== undefined ? toBytes(opts.prefix, 'prefix') : null;
    const after = opts?.after !== undefined ? toBytes(opts.after, 'after') : null;
    const limit = opts?.limit ?? Infinity;
    if (typeof limit !== 'number' || limit < 0 || Number.isNaN(limit)) throw new KvError('E_INVALID_ARGUMENT', 'limit must be >= 0');
    // entries in key order make list walk the keydir's arrays front to back; reclaim holds entry
    // numbers across its awaits, so never while one runs
    if (st.reclaiming === null && st.keydir.wantsRenumber()) st.keydir.renumberSorted();
    return listKeys(st.keydir, prefix, after, limit);
  }

  // ---------------------------------------------------------------- writes


  private checkValue(value: ValueInput): Buffer {
    const v = toBytes(value, 'value');
    if (v.length > this.maxValueBytes) {
      throw new KvError('E_VALUE_TOO_LARGE', `value of ${v.length} bytes exceeds the maximum of ${this.maxValueBytes}`);
    }
    return v;
  }

  private separates(v: Buffer): boolean {
    return this.separator !== null && this.valueThreshold > 0 && v.length >= this.valueThreshold;
  }


  async put(ns: string, keyIn: KeyInput, valueIn: ValueInput, opts?: { ifRevision?: number }): Promise<number> {
    this.checkWritable();
    let st = this.nsOrThrow(ns);
    const key = toKey(keyIn);
    const value = this.checkValue(valueIn);
    const ifRev = opts?.ifRevision;
    if (ifRev !== undefined) checkRevisionArg(ifRev, 'ifRevision');
    let hash: Buffer | null = null;
    let handle: unknown;
    if (this.separates(value)) {
      const r = await this.separator!.store(value);
      hash = r.hash;
      handle = r.handle;
      try {
        this.checkWritable();
        st = this.nsOrThrow(ns);
      } catch (err) {
        this.separator!.failed(handle);
        throw err;
      }
    }
    const s = this.log.stripeOf(key);
    if (ifRev !== undefined) {
      while (this.log.stripeBusy(s)) await this.log.waitStripe(s);
      try {
        this.checkWritable();
        st = this.nsOrThrow(ns);
        const e = st.keydir.find(key);
        const cur = e < 0 ? 0 : st.keydir.revOf(e);
        if (cur !== ifRev) throw KvError.casMismatch(ifRev, cur);
      } catch (err) {
        if (hash !== null) this.separator!.failed(handle);
        throw err;
      }
    }
    if (this.log.revision >= MAX_REVISION) {
      if (hash !== null) this.separator!.failed(handle);
      throw revisionExhausted();
    }
    // from here to enqueue: synchronous
    this.log.holdStripe(s);
    st.inflight++;
    const op = this.log.newOp(OpKind.Put, st);
    op.key = key;
    op.stripe = s;
    op.vsize = value.length;
    if (hash !== null) {
      op.flags = F_POINTER;
      op.hash = hash;
      op.handle = handle;
    } else {
      op.value = value;
    }
    op.rev = this.log.nextRevision();
    op.mtime = Date.now();
    op.size = recordSize(st.nameBuf.length, key.length, T_PUT, op.flags, op.vsize);
    if (hash !== null) op.value = value; // kept for watch events only
    return this.log.enqueue<number>(op);
  }

  async delete(ns: string, keyIn: KeyInput, opts?: { ifRevision?: number }): Promise<number | undefined> {
    this.checkWritable();
    let st = this.nsOrThrow(ns);
    const key = toKey(keyIn);
    const ifRev = opts?.ifRevision;
    if (ifRev !== undefined) checkRevisionArg(ifRev, 'ifRevision');
    const s = this.log.stripeOf(key);
    while (this.log.stripeBusy(s)) await this.log.waitStripe(s);
    this.checkWritable();
    st = this.nsOrThrow(ns);
    const e = st.keydir.find(key);
    const cur = e < 0 ? 0 : st.keydir.revOf(e);
    if (ifRev !== undefined && cur !== ifRev) throw KvError.casMismatch(ifRev, cur);
    if (e < 0) return undefined;
    if (this.log.revision >= MAX_REVISION) throw revisionExhausted();
    this.log.holdStripe(s);
    st.inflight++;
    const op = this.log.newOp(OpKind.Del, st);
    op.key = key;
    op.stripe = s;
    op.rev = this.log.nextRevision();
    op.mtime = Date.now();
    op.size = recordSize(st.nameBuf.length, key.length, T_DEL, 0, 0);
    return this.log.enqueue<number>(op);
  }

  async batch(ns: string, ops: BatchOp[]): Promise<number> {
    this.checkWritable();
    let st = this.nsOrThrow(ns);
    if (!Array.isArray(ops)) throw new KvError('E_INVALID_ARGUMENT', 'batch ops must be an array');
    const items: BatchItem[] = [];
    for (const o of ops) {
      if (o === null || typeof o !== 'object' || (o.type !== 'put' && o.type !== 'delete')) {
        throw new KvError('E_INVALID_ARGUMENT', "batch op type must be 'put' or 'delete'");
      }
      const key = toKey(o.key);
      const value = o.type === 'put' ? this.checkValue(o.value) : null;
      items.push({
        type: o.type === 'put' ? T_PUT : T_DEL, key, value, flags: F_BATCH, vsize: value?.length ?? 0,
        hash: null, handle: undefined, stripe: this.log.stripeOf(key), offset: 0, applied: false,
      });
    }
    if (items.length === 0) return this.log.revision;
    const stored: BatchItem[] = [];
    try {
      for (const it of items) {
        if (it.value !== null && this.separates(it.value)) {
          const r = await this.separator!.store(it.value);
          it.hash = r.hash;
          it.handle = r.handle;
          it.flags |= F_POINTER;
          stored.push(it);
        }
      }
      this.checkWritable();
      st = this.nsOrThrow(ns);
      if (this.log.revision >= MAX_REVISION) throw revisionExhausted();
    } catch (err) {
      for (const it of stored) this.separator!.failed(it.handle);
      throw err;
    }
    let size = recordSize(st.nameBuf.length, 0, T_COMMIT, 0, 0);
    for (const it of items) {
      this.log.holdStripe(it.stripe);
      size += recordSize(st.nameBuf.length, it.key.length, it.type, it.flags, it.vsize);
    }
    st.inflight++;
    const op = this.log.newOp(OpKind.Batch, st);
    op.items = items;
    op.rev = this.log.nextRevision();
    op.mtime = Date.now();
    op.size = size;
    return this.log.enqueue<number>(op);
  }


  async sync(): Promise<void> {
    this.checkWritable();
    await this.barrier(async () => this.log.syncAndCollect());
  }


  async gc(): Promise<{ orphansSwept: number }> {
    this.checkWritable();
    return this.barrier(async () => {
      // every dereference so far becomes durable first: a blob whose tombstone is only in the
      // page cache is not an orphan yet
      await this.log.syncAndCollect();
      const n = this.separator?.sweep !== undefined ? await this.separator.sweep() : 0;
      return { orphansSwept: n };
    });
  }


  // ---------------------------------------------------------------- watch

  watch(ns: string, sel: { key: KeyInput } | { prefix: KeyInput }, opts?: { fromRevision?: number }):
    AsyncIterable<WatchEvent> & { close(): void } {
    this.checkOpen();
    const st = this.nsOrThrow(ns);
    let selector: { key: Buffer } | { prefix: Buffer };
    if (sel !== null && typeof sel === 'object' && 'key' in sel) selector = { key: Buffer.from(toKey(sel.key)) };
    else if (sel !== null && typeof sel === 'object' && 'prefix' in sel) selector = { prefix: Buffer.from(toBytes(sel.prefix, 'prefix')) };
    else throw new KvError('E_INVALID_ARGUMENT', 'watch needs { key } or { prefix }');
    const from = opts?.fromRevision;
    if (from !== undefined) checkRevisionArg(from, 'fromRevision');
    if (from !== undefined && st.compactedThrough > 0 && from <= st.compactedThrough) {
      throw KvError.compacted(from, st.compactedThrough + 1);
    }
    const through = this.log.notifiedRevision;
    const replay = from !== undefined && from <= through ? this.replay(st, selector, from, through) : null;
    const sub: Subscription = this.hub.add(ns, selector, through, replay, from ?? 0);
    return sub;
  }

  /** History of a namespace from the log: events with from <= revision <= through, in revision order. */
  private async *replay(st: NsState, sel: { key: Buffer } | { prefix: Buffer }, from: number, through: number):
    AsyncGenerator<WatchEvent> {
    const key = 'key' in sel ? sel.key : null;
    const prefix = 'prefix' in sel ? sel.prefix : null;
    // A segment is removed (by reclaim) only after compactedThrough has passed every revision in
    // it: checked here, with the snapshot of segments below taken in the same tick, the snapshot
    // holds every record from `from` on.
    if (st.compactedThrough > 0 && from <= st.compactedThrough) throw KvError.compacted(from, st.compactedThrough + 1);
    const events: WatchEvent[] = [];
    const segOf = new Map<WatchEvent, number>();
    const hashes = new Map<WatchEvent, Buffer>(); // pointer events: the value is read when yielded
    const segs: SegInfo[] = [...st.segments.values()].sort((a, b) => a.id - b.id);
    for (const seg of segs) {
      const size = seg.size;
      if (size === 0) continue;
      let buf: Buffer;
      try {
        const fd = await this.fds.openWithRetry(seg.path, 'r');
        try {
          buf = Buffer.allocUnsafe(size);
          const n = await readFully(this.io, fd, buf, 0, size, 0);
          buf = buf.subarray(0, n);
        } finally {
          await this.io.close(fd);
        }
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') {
          // reclaimed since the snapshot: its revisions are all at or below compactedThrough now
          if (from <= st.compactedThrough) throw KvError.compacted(from, st.compactedThrough + 1);
          continue; // ... all below `from`: nothing of it was wanted
        }
        throw new KvError('E_IO', `replay ${seg.path}: ${errnoOf(err)}`, { cause: err });
      }
      scanRecords(buf, 0, buf.length, (v, b) => {
        if (v.revision < from || v.revision > through) return;
        const k = b.subarray(v.keyOff, v.keyOff + v.keyLen);
        if (key !== null ? !key.equals(k) : k.length < prefix!.length || prefix!.compare(k, 0, prefix!.length) !== 0) return;
        const ev: WatchEvent = { type: v.type === T_PUT ? 'put' : 'delete', key: Buffer.from(k), revision: v.revision };
        if (v.type === T_PUT && (v.flags & F_POINTER) === 0) ev.value = Buffer.from(b.subarray(v.payloadOff, v.payloadOff + v.valueSize));
        else if (v.type === T_PUT) hashes.set(ev, Buffer.from(b.subarray(v.payloadOff, v.payloadOff + HASH_SIZE)));
        events.push(ev);
        segOf.set(ev, seg.id);
      });
    }
    // stable: per revision, segments in id order, records in file order (a batch's order)
    events.sort((a, b) => a.revision - b.revision);
    let rev = -1;
    let revSeg = -1;
    for (const ev of events) {
      // all records of one revision are written to one segment; the same revision in a later
      // segment is a reclaim's copy of one of them (copies are made while the originals exist)
      if (ev.revision !== rev) {
        rev = ev.revision;
        revSeg = segOf.get(ev)!;
      } else if (segOf.get(ev) !== revSeg) {
        continue;
      }
      const hash = hashes.get(ev);
      if (hash !== undefined) ev.value = await this.replayBlob(hash, ev);
      yield ev;
    }
  }

  /**
   * The value of a replayed pointer record. Its blob may have been collected since the record
   * was superseded (overwrite/delete + fsync): that history is gone, as after a reclaim, so the
   * subscription ends with E_COMPACTED (compactRevision = the next revision, to resume from).
   * A blob that is present but corrupt, or missing while still referenced, is E_CORRUPT.
   */
  private async replayBlob(hash: Buffer, ev: WatchEvent): Promise<Buffer> {
    if (this.separator === null) throw new KvError('E_CORRUPT', 'a pointer record, but no blob store is configured');
    try {
      return await this.separator.read(hash, 0);
    } catch (err) {
      const missing = err instanceof KvError && err.code === 'E_CORRUPT' && / is missing/.test(err.message);
      if (missing && this.separator.referenced?.(hash) !== true) {
        const e = KvError.compacted(ev.revision, ev.revision + 1);
        e.message = `E_COMPACTED: the value of revision ${ev.revision} (a separated value since overwritten or deleted) ` +
          `was collected; resume from revision ${ev.revision + 1}`;
        throw e;
      }
      throw err;
    }
  }

  // ---------------------------------------------------------------- reclaim

  private maybeAutoReclaim(st: NsState): void {
    if (st.reclaiming !== null || this.autoReclaimPending.has(st.name) || this.closing !== null) return;
    if (st.reclaimRetryAt > Date.now()) return; // the last automatic reclaim failed: back off
    const dead = st.deadBytes;
    if (dead < this.reclaimMinBytes || dead <= this.reclaimDeadRatio * st.totalBytes) return;
    this.autoReclaimPending.add(st.name);
    setImmediate(() => {
      this.autoReclaimPending.delete(st.name);
      if (this.closing !== null || st.dropped || this.log.poisoned !== null) return;
      this.reclaimOne(st).catch((err) => {
        this.lastReclaimError = err;
        this.reclaimFailures++;
        st.reclaimRetryAt = Date.now() + 30_000;
      });
    });
  }

  /** Reclaims one namespace (serialized with other reclaims). */
  reclaimOne(st: NsState, opts: { full?: boolean } = {}): Promise<{ relocatedBytes: number; segmentsRemoved: number }> {
    const run = this.reclaimChain.catch(() => {}).then(async () => {
      if (st.dropped || this.closed) return { relocatedBytes: 0, segmentsRemoved: 0 };
      const p = reclaimNamespace(this.reclaimHost, st, opts);
      st.reclaiming = p;
      try {
        return await p; // (reclaimNamespace counts compactionBytes and reclaims)
      } finally {
        st.reclaiming = null;
        // writes during the reclaim may have passed the threshold again
        if (this.log.poisoned === null && !st.dropped) this.maybeAutoReclaim(st);
      }
    });
    this.reclaimChain = run;
    return run;
  }

  async reclaim(opts: { full?: boolean } = {}): Promise<{ relocatedBytes: number; segmentsRemoved: number; durationMs: number }> {
    this.checkWritable();
    const t0 = performance.now();
    let relocatedBytes = 0;
    let segmentsRemoved = 0;
    for (const st of [...this.namespaces.values()]) {
      const r = await this.reclaimOne(st, opts);
      relocatedBytes += r.relocatedBytes;
      segmentsRemoved += r.segmentsRemoved;
    }
    // sync 'none' never fsyncs per write: collect unreferenced blobs here as in sync()
    if (this.syncMode === 'none' && this.log.poisoned === null) await this.barrier(async () => this.log.syncAndCollect());
    return { relocatedBytes, segmentsRemoved, durationMs: performance.now() - t0 };
  }

  /** Used by reclaim: marks a fatal failure of the log. */
  poisonFromReclaim(err: unknown): void {
    this.log.poison(err, []);
  }

  // ---------------------------------------------------------------- stats

  stats(): EngineStats {
    let keys = 0, live = 0, dead = 0, segments = 0, keydirBytes = 0;
    for (const st of this.namespaces.values()) {
      keys += st.keydir.size;
      live += st.liveBytes;
      dead += st.deadBytes;
      segments += st.segments.size;
      keydirBytes += st.keydir.byteFootprint();
    }
    const b = this.separator?.stats?.();
    const life = this.meta.lifetime();
    return {
      keys, liveBytes: live, deadBytes: dead, segments, revision: this.log.revision,
      compactionBytes: life.compactionBytes, compactionBytesSinceOpen: this.meta.compactionBytes,
      namespaces: this.namespaces.size, reclaims: life.reclaims, reclaimsSinceOpen: this.meta.reclaims,
      reclaimFailures: this.reclaimFailures, keydirBytes, fsyncs: this.log.fsyncs, writes: this.log.writes,
      watchers: this.hub.size, openFiles: this.fds.size, emfileRetries: this.fds.emfileRetries,
      poisoned: this.log.poisoned !== null ? 1 : 0,
      blobs: b?.blobs ?? 0, blobBytes: b?.blobBytes ?? 0, orphansSwept: life.orphansSwept,
      orphansSweptSinceOpen: b?.orphansSwept ?? 0,
      dirFsyncFailures: b?.dirFsyncFailures ?? 0, danglingPointers: b?.danglingPointers ?? 0, warnings: this.warnings,
      readCacheBytes: this.readCache?.bytes ?? 0, readCacheHits: this.readCache?.hits ?? 0, readCacheMisses: this.readCache?.misses ?? 0,
    };
  }
}


/** A write when the revision counter is at MAX_REVISION (checked before anything is held or enqueued). */
function revisionExhausted(): KvError {
  return new KvError('E_REVISION_LIMIT', `the revision counter is at ${MAX_REVISION} (2^48 - 1), the largest revision ` +
    'this glidekv holds exactly; the write was refused and nothing was changed');
}

/** Opens (creating if needed) the engine in `dir`. */
export async function open(dir: string, options: EngineOptions = {}): Promise<Engine & KvEngine> {
  const e = new KvEngine(dir, options);
  try {
    await e.openInternal();
  } catch (err) {
    throw ioError(`open ${dir}`, err);
  }
  return e;
}

/** A KvError as is; an errno error as E_IO naming what failed (cause: the errno error). */
function ioError(what: string, err: unknown): KvError {
  if (err instanceof KvError) return err;
  return new KvError('E_IO', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
