/**
 * The KV engine: namespaces of keys, each an append-only log of segments plus a keydir.
 *
 * Write path (one writer loop for the whole engine):
 *   put/delete/batch validate, (CAS) wait until no write to the key's stripe is in flight,
 *   check the revision, take the next revision and enqueue — all in one synchronous step,
 *   so the check and the append are atomic. The writer takes everything queued, encodes it
 *   into per-namespace staging buffers, writes each namespace's buffer with one write(2),
 *   applies the keydir updates, fsyncs every touched segment once ('batch': group commit,
 *   'always': one fsync per operation, 'none': none), then resolves the operations and
 *   dispatches watch events, in revision order.
 *   A failed append or fsync poisons the writer: those operations fail (E_IO), queued and
 *   later ones fail fast (E_POISONED), reads keep working.
 *
 * Value separation (issue 4): values of `valueThreshold` bytes or more go to the blob store
 * (src/blob-store.ts) through the `ValueSeparator` seam below; the default separator is
 * `BlobSeparator` (src/value-separator.ts). See FORMAT.md, "Value separation".
 */
import path from 'node:path';
import { KvError } from './errors.js';
import type { FileIo } from './file-io.js';
import { nodeFileIo, readFully, writeFully } from './file-io.js';
import { FdCache } from './fd-cache.js';
import { DirLock } from './lock.js';
import { MetaWriter, readMeta, removeStaleMetaTemps, zeroCounters, type Meta, type MetaCounters } from './meta.js';
import { KF_POINTER, MAX_REVISION, type Keydir } from './keydir.js';
import { NsState, type SegInfo } from './ns-state.js';
import {
  decodeRecord, encodeRecord, F_BATCH, F_POINTER, HASH_SIZE, HEADER_SIZE, recordSize, RecordView, T_COMMIT, T_DEL, T_PUT,
} from './record.js';
import { FooterBuilder, parseSegmentName, segmentName } from './segment.js';
import {
  addKeydirEntries, checkSegmentVersions, revisionLimit, dropTombstones, loadSegments, resealDamaged, scanRecords, sealRecovered, writeFooter,
} from './recovery.js';
import { WatchHub, type Subscription, type WatchEvent } from './watch.js';
import { reclaimNamespace } from './reclaim.js';
import { BlobStore } from './blob-store.js';
import { blobIoFromFileIo } from './blob-io.js';
import { BlobSeparator } from './value-separator.js';
import { ReadCache } from './read-cache.js';
import { listKeys } from './key-list.js';
import { fnv1a as fnv } from '../lib/hash.js';

export type SyncMode = 'always' | 'batch' | 'none';

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

/**
 * The seam where the blob store plugs in (issue 4). The engine calls:
 * - `store(value)` for a put/batch value of valueThreshold bytes or more, BEFORE the
 *   revision is taken; it must return once the blob is durable (file + dir fsynced) and
 *   pinned. The engine appends a POINTER record (flags bit0, payload = hash) and calls
 *   `appended(handle)` after the record is written and applied (ref the hash, drop the
 *   pin), or `failed(handle)` if the append failed or was refused (drop the pin only).
 * - `dropped(hash)` when a pointer stops being referenced: an overwrite or delete of a
 *   key whose entry was a pointer (called right after the record that drops it is
 *   applied), and for every live pointer of a dropped namespace.
 * - `beforeSync()` right before a log fsync starts and `afterSync(token)` after it
 *   succeeded (collect blobs whose last dereference that fsync made durable).
 *   In sync 'none' mode the engine calls them around `sync()` and reclaim.
 * - `read(hash, size)` for a get of a pointer entry.
 * - `rebuild(hashes)` once after open with every live pointer hash (duplicates counted).
 * Reclaim relocates pointer records as they are (16-byte payload): no refcount change.
 */
export interface ValueSeparator {
  store(value: Buffer): Promise<{ hash: Buffer; handle: unknown }>;
  appended(handle: unknown): void;
  failed(handle: unknown): void;
  dropped(hash: Buffer): void;
  beforeSync(): number;
  afterSync(token: number): Promise<void>;
  read(hash: Buffer, size: number): Promise<Buffer>;
  rebuild(hashes: Buffer[]): Promise<void>;
  close?(): Promise<void>;
  /** Is the hash referenced by a live pointer? (watch replay: a missing blob of an old record = history gone) */
  referenced?(hash: Buffer): boolean;
  /** Orphan sweep; the engine calls it with every dereference durable. Returns files removed. */
  sweep?(): Promise<number>;
  /** Blob counters for stats(). */
  stats?(): { blobs: number; blobBytes: number; orphansSwept: number; dirFsyncFailures: number; danglingPointers: number };
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
  reclaim(): Promise<{ relocatedBytes: number; segmentsRemoved: number; durationMs: number }>;
  /** Makes every acknowledged write durable, then removes orphan blobs (unreferenced, unpinned). */
  gc(): Promise<{ orphansSwept: number }>;
  stats(): EngineStats;
  close(): Promise<void>;
}

const MAX_KEY = 1024;
const STRIPES = 4096;
const NS_DIR = 'ns';
const TRASH_DIR = 'trash';

const enum OpKind { Put, Del, Batch, Barrier }

/** One record on its way to the log: what a put/delete op and a batch item both carry. */
interface PendingRecord {
  value: Buffer | null;
  flags: number;
  vsize: number;
  hash: Buffer | null;
  handle: unknown;
  stripe: number;
  offset: number;
  applied: boolean;
}

interface BatchItem extends PendingRecord {
  type: number; // T_PUT | T_DEL
  key: Buffer;
}

interface Op extends PendingRecord {
  kind: OpKind;
  ns: NsState | null;
  key: Buffer | null;
  rev: number;
  mtime: number;
  items: BatchItem[] | null;
  size: number;
  fileId: number;
  fn: (() => Promise<unknown>) | null;
  result: unknown;
  resolve: (v: any) => void;
  reject: (e: unknown) => void;
}

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
  readonly syncIoMaxBytes: number;
  readonly fds: FdCache;
  /** Segment blocks for small gets (null: readCacheBytes 0). */
  readonly readCache: ReadCache | null;
  readonly hub: WatchHub;
  separator: ValueSeparator | null;
  private readonly warnFn: (message: string, cause?: unknown) => void;
  warnings = 0;
  /** Blob collections started after a group commit's fsync (awaited by close). */
  private collecting: Promise<void> = Promise.resolve();

  private lock: DirLock | null = null;
  readonly namespaces = new Map<string, NsState>();
  private readonly creating = new Set<string>();
  /** Namespaces being dropped (their directory is still there): a create of one waits for the drop. */
  private readonly dropping = new Map<string, Promise<void>>();
  meta: Meta = { version: 1, revision: 0, compacted: {} };
  /** The one writer of meta.json: writes are serialized, each writes metaSnapshot() as of its turn. */
  readonly metaWriter: MetaWriter;
  /** Lifetime counters as read from meta.json at open (this process adds its own). */
  private counterBase: MetaCounters = zeroCounters();
  /** Last revision handed out. */
  revision = 0;
  /** Highest revision applied to a keydir (written to a segment). */
  writtenRevision = 0;
  /** Highest revision whose watch events were dispatched (acknowledged). */
  notifiedRevision = 0;
  nextFileId = 1;

  private queue: Op[] = [];
  private writerRunning = false;
  private poisonErr: KvError | null = null;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly stripes = new Uint32Array(STRIPES);
  private readonly stripeWaiters = new Map<number, Array<() => void>>();
  private readonly view = new RecordView();
  private reclaimChain: Promise<unknown> = Promise.resolve();
  private readonly autoReclaimPending = new Set<string>();

  // counters
  compactionBytes = 0;
  reclaims = 0;
  fsyncs = 0;
  writes = 0;
  lastReclaimError: unknown = null;
  reclaimFailures = 0;

  constructor(dir: string, opts: EngineOptions) {
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
    this.syncIoMaxBytes = opts.syncIoMaxBytes ?? 65536;
    this.fds = new FdCache(this.io, Math.max(1, opts.maxOpenFiles ?? 256));
    const rcBytes = opts.readCacheBytes ?? 32 * 1024 * 1024;
    this.readCache = rcBytes > 0 ? new ReadCache(rcBytes) : null;
    this.hub = new WatchHub(opts.maxWatchers ?? 10000, Math.max(1, opts.watchQueueMax ?? 10000));
    this.separator = opts.valueSeparator ?? null;
    this.metaWriter = new MetaWriter(this.io, this.dir, () => this.metaSnapshot());
    const onWarning = opts.onWarning ?? ((m: string) => process.emitWarning(m, { code: 'GLIDEKV' }));
    this.warnFn = (m, cause) => {
      this.warnings++;
      onWarning(m, cause);
    };
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
      // format version gate (meta.json, every segment footer): reads only, before anything changes
      this.meta = await readMeta(this.io, this.dir);
      await checkSegmentVersions(this.io, path.join(this.dir, NS_DIR));
      this.counterBase = { ...zeroCounters(), ...this.meta.counters };
      await removeStaleMetaTemps(this.io, this.dir);
      await this.io.mkdir(path.join(this.dir, NS_DIR));
      await this.io.rm(path.join(this.dir, TRASH_DIR));
      let maxRev = this.meta.revision;
      const names = (await this.io.readdir(path.join(this.dir, NS_DIR))).sort();
      const perNs: Array<{ st: NsState; ids: number[] }> = [];
      let maxId = 0;
      for (const name of names) {
        const st = new NsState(name, path.join(this.dir, NS_DIR, name));
        const ids: number[] = [];
        let files: string[];
        try {
          files = await this.io.readdir(st.dir);
        } catch (err) {
          if (errnoOf(err) === 'ENOTDIR') continue; // a stray file, not a namespace
          throw err;
        }
        const obsolete = new Set(this.meta.obsolete?.[name] ?? []);
        for (const f of files) {
          const id = parseSegmentName(f);
          if (id >= 0 && obsolete.has(id)) {
            // a reclaim replaced it and crashed while deleting the old segments: finish that
            await this.io.unlink(path.join(st.dir, f));
            continue;
          }
          if (id >= 0) ids.push(id);
          else if (f.endsWith('.tmp')) await this.io.unlink(path.join(st.dir, f)).catch(() => {});
        }
        ids.sort((a, b) => a - b);
        for (const id of ids) if (id > maxId) maxId = id;
        perNs.push({ st, ids });
      }
      if (maxRev > MAX_REVISION) throw revisionLimit(`${path.join(this.dir, 'meta.json')}: revision ${maxRev}`);
      this.nextFileId = maxId + 1;
      for (const { st, ids } of perNs) {
        const r = await loadSegments(this.io, st, ids);
        if (r.maxRev > maxRev) maxRev = r.maxRev;
        st.compactedThrough = this.meta.compacted[st.name] ?? 0;
        // the newest unsealed segment stays active; other unsealed ones are sealed (or, empty, removed)
        const last = r.unsealed.length > 0 ? r.unsealed[r.unsealed.length - 1] : null;
        for (const seg of r.unsealed) {
          if (seg === last) continue;
          if (seg.size === 0) {
            st.segments.delete(seg.id);
            await this.io.unlink(seg.path);
          } else {
            await sealRecovered(this.io, st, seg, maxRev);
          }
        }
        for (const seg of r.resealed) await resealDamaged(this.io, st, seg, maxRev); // a damaged footer, rewritten
        for (const m of r.damage) this.warn(m);
        if (last !== null) {
          const fb = new FooterBuilder();
          // tombstones of the active segment go to its future footer
          const k = st.keydir;
          for (let e = 0, n = k.entryLimit; e < n; e++) {
            if (k.isLive(e) && k.fileId[e] === last.id && (k.flags[e] & 0x40) !== 0) {
              fb.add(T_DEL, 0, k.keyView(e), k.offset[e], 0, k.revOf(e), k.mtimeOf(e));
            }
          }
          const fd = await this.fds.openWithRetry(last.path, 'r+');
          st.active = { seg: last, fd, footer: fb };
        }
        dropTombstones(st);
        st.keydir.trim(); // no spare capacity left from the rebuild
        st.keydir.renumberSorted(false); // entries in key order: list walks the arrays in order
        if (st.active === null) await this.newActive(st);
        st.recount();
        this.namespaces.set(st.name, st);
      }
      if (this.namespaces.size > 0) await this.io.fsyncDir(path.join(this.dir, NS_DIR));
      if (maxRev > MAX_REVISION) throw revisionLimit(`${this.dir}: a segment footer's revision ${maxRev}`);
      this.revision = maxRev;
      this.writtenRevision = maxRev;
      this.notifiedRevision = maxRev;
      if (this.meta.obsolete !== undefined && Object.keys(this.meta.obsolete).length > 0) {
        for (const st of this.namespaces.values()) await this.io.fsyncDir(st.dir); // the unlinks above
        delete this.meta.obsolete;
        this.meta.revision = Math.max(this.meta.revision, maxRev);
        await this.metaWriter.write();
      }
      if (this.separator === null) {
        const blobs = await BlobStore.open(this.dir, { io: blobIoFromFileIo(this.io), onWarning: (m, c) => this.warn(m, c) });
        this.separator = new BlobSeparator(blobs, (m) => this.warn(m));
      }
      {
        // the recovered log must be durable before the sweep trusts it: a tombstone read from the
        // page cache of a killed predecessor must not let its blob go and then vanish in a power cut
        const fds: number[] = [];
        for (const st of this.namespaces.values()) if (st.active !== null) fds.push(st.active.fd);
        await Promise.all(fds.map((fd) => this.io.fsync(fd)));
        const hashes: Buffer[] = [];
        for (const st of this.namespaces.values()) {
          const k = st.keydir;
          for (let e = 0, n = k.entryLimit; e < n; e++) {
            const h = k.isLive(e) && (k.flags[e] & KF_POINTER) !== 0 ? k.pointerHash(e) : undefined;
            if (h !== undefined) hashes.push(h);
          }
        }
        await this.separator.rebuild(hashes);
      }
    } catch (err) {
      for (const st of this.namespaces.values()) if (st.active) await this.io.close(st.active.fd).catch(() => {});
      await this.separator?.close?.().catch(() => {});
      await this.fds.closeAll();
      await this.lock.release();
      throw err;
    }
  }

  /** Creates the next segment file of a namespace and makes it the active one. */
  async newActive(st: NsState): Promise<void> {
    const id = this.allocFileId();
    const seg = st.addSegment(id, 0, false);
    const fd = await this.fds.openWithRetry(seg.path, 'wx');
    st.active = { seg, fd, footer: new FooterBuilder() };
    await this.io.fsyncDir(st.dir);
  }

  allocFileId(): number {
    if (this.nextFileId > 0xfffffffe) throw new KvError('E_IO', 'segment file ids (u32) exhausted');
    return this.nextFileId++;
  }

  async close(): Promise<void> {
    if (this.closing !== null) return this.closing;
    this.closing = this.closeInternal();
    return this.closing;
  }

  private async closeInternal(): Promise<void> {
    try {
      await this.reclaimChain.catch(() => {});
      if (this.poisonErr === null) await this.barrier(async () => this.syncAndCollect()).catch(() => {});
      await this.collecting;
    } finally {
      this.closed = true;
      this.hub.endAll(null, null);
      for (const st of this.namespaces.values()) {
        if (st.active !== null) await this.io.close(st.active.fd).catch(() => {});
        st.active = null;
      }
      if (this.poisonErr === null) {
        await this.metaWriter.write().catch(() => {});
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
    if (this.poisonErr !== null) throw this.poisonErr;
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
      st.compactedThrough = this.meta.compacted[ns] ?? 0;
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
        await this.newActive(st);
        await this.io.fsyncDir(path.join(this.dir, NS_DIR));
      } catch (err) {
        if (st.active !== null) await this.io.close(st.active.fd).catch(() => {});
        await this.io.rm(st.dir).catch(() => {}); // no half-made namespace after a restart
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
      // the revision high-water mark first: the namespace's records may carry the highest revisions
      this.meta.revision = Math.max(this.meta.revision, this.revision);
      this.meta.compacted[ns] = this.revision;
      if (this.meta.obsolete !== undefined) delete this.meta.obsolete[ns];
      await this.metaWriter.write();
      st.dropped = true;
      let done!: () => void;
      const dropped = new Promise<void>((resolve) => (done = resolve));
      this.dropping.set(ns, dropped); // in the same tick as the delete: a create sees one or the other
      this.namespaces.delete(ns);
      try {
        if (st.active !== null) await this.io.close(st.active.fd).catch(() => {});
        st.active = null;
        for (const s of st.segments.values()) this.fds.evict(s.path);
        const trash = path.join(this.dir, TRASH_DIR);
        await this.io.mkdir(trash);
        const dest = path.join(trash, `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`);
        await this.io.rename(st.dir, dest);
        await this.io.fsyncDir(path.join(this.dir, NS_DIR));
        await this.io.rm(dest);
      } catch (err) {
        throw ioError(`drop ${ns}`, err);
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

  private stripeOf(key: Buffer): number {
    return fnv(key) & (STRIPES - 1);
  }

  /** Resolves when the stripe has no write in flight (call in a loop: re-check after). */
  private waitStripe(s: number): Promise<void> {
    return new Promise((resolve) => {
      let w = this.stripeWaiters.get(s);
      if (w === undefined) this.stripeWaiters.set(s, (w = []));
      w.push(resolve);
    });
  }

  private releaseStripe(s: number): void {
    if (--this.stripes[s] === 0) {
      const w = this.stripeWaiters.get(s);
      if (w !== undefined) {
        this.stripeWaiters.delete(s);
        for (const r of w) r();
      }
    }
  }

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

  private newOp(kind: OpKind, st: NsState | null): Op {
    return {
      kind, ns: st, key: null, value: null, flags: 0, vsize: 0, hash: null, handle: undefined, stripe: 0, rev: 0,
      mtime: 0, items: null, size: 0, fileId: 0, offset: 0, applied: false, fn: null, result: undefined,
      resolve: noop, reject: noop,
    };
  }

  private enqueue<T>(op: Op): Promise<T> {
    const p = new Promise<T>((resolve, reject) => {
      op.resolve = resolve;
      op.reject = reject;
    });
    this.queue.push(op);
    if (!this.writerRunning) void this.runWriter();
    return p;
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
    const s = this.stripeOf(key);
    if (ifRev !== undefined) {
      while (this.stripes[s] > 0) await this.waitStripe(s);
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
    if (this.revision >= MAX_REVISION) {
      if (hash !== null) this.separator!.failed(handle);
      throw revisionExhausted();
    }
    // from here to enqueue: synchronous
    this.stripes[s]++;
    st.inflight++;
    const op = this.newOp(OpKind.Put, st);
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
    op.rev = ++this.revision;
    op.mtime = Date.now();
    op.size = recordSize(st.nameBuf.length, key.length, T_PUT, op.flags, op.vsize);
    if (hash !== null) op.value = value; // kept for watch events only
    return this.enqueue<number>(op);
  }

  async delete(ns: string, keyIn: KeyInput, opts?: { ifRevision?: number }): Promise<number | undefined> {
    this.checkWritable();
    let st = this.nsOrThrow(ns);
    const key = toKey(keyIn);
    const ifRev = opts?.ifRevision;
    if (ifRev !== undefined) checkRevisionArg(ifRev, 'ifRevision');
    const s = this.stripeOf(key);
    while (this.stripes[s] > 0) await this.waitStripe(s);
    this.checkWritable();
    st = this.nsOrThrow(ns);
    const e = st.keydir.find(key);
    const cur = e < 0 ? 0 : st.keydir.revOf(e);
    if (ifRev !== undefined && cur !== ifRev) throw KvError.casMismatch(ifRev, cur);
    if (e < 0) return undefined;
    if (this.revision >= MAX_REVISION) throw revisionExhausted();
    this.stripes[s]++;
    st.inflight++;
    const op = this.newOp(OpKind.Del, st);
    op.key = key;
    op.stripe = s;
    op.rev = ++this.revision;
    op.mtime = Date.now();
    op.size = recordSize(st.nameBuf.length, key.length, T_DEL, 0, 0);
    return this.enqueue<number>(op);
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
        hash: null, handle: undefined, stripe: this.stripeOf(key), offset: 0, applied: false,
      });
    }
    if (items.length === 0) return this.revision;
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
      if (this.revision >= MAX_REVISION) throw revisionExhausted();
    } catch (err) {
      for (const it of stored) this.separator!.failed(it.handle);
      throw err;
    }
    let size = recordSize(st.nameBuf.length, 0, T_COMMIT, 0, 0);
    for (const it of items) {
      this.stripes[it.stripe]++;
      size += recordSize(st.nameBuf.length, it.key.length, it.type, it.flags, it.vsize);
    }
    st.inflight++;
    const op = this.newOp(OpKind.Batch, st);
    op.items = items;
    op.rev = ++this.revision;
    op.mtime = Date.now();
    op.size = size;
    return this.enqueue<number>(op);
  }

  /** Runs fn inside the writer, after everything enqueued before it is written and acknowledged. */
  barrier<T>(fn: () => Promise<T>): Promise<T> {
    const op = this.newOp(OpKind.Barrier, null);
    op.fn = fn;
    return this.enqueue<T>(op);
  }

  async sync(): Promise<void> {
    this.checkWritable();
    await this.barrier(async () => this.syncAndCollect());
  }

  /** Inside the writer: fsync every active segment, then collect the blobs it made unreferenced for good. */
  private async syncAndCollect(): Promise<void> {
    const token = this.separator?.beforeSync();
    await this.syncActive(); // throws (and poisons) on failure: nothing is collected then
    if (token !== undefined) await this.separator!.afterSync(token);
  }

  async gc(): Promise<{ orphansSwept: number }> {
    this.checkWritable();
    return this.barrier(async () => {
      // every dereference so far becomes durable first: a blob whose tombstone is only in the
      // page cache is not an orphan yet
      await this.syncAndCollect();
      const n = this.separator?.sweep !== undefined ? await this.separator.sweep() : 0;
      return { orphansSwept: n };
    });
  }

  private async syncActive(): Promise<void> {
    const fds: number[] = [];
    for (const st of this.namespaces.values()) if (st.active !== null) fds.push(st.active.fd);
    try {
      await Promise.all(fds.map((fd) => this.io.fsync(fd)));
    } catch (err) {
      this.poison(err, []); // after a failed fsync the page cache can no longer be trusted
      throw new KvError('E_IO', `sync failed: ${errnoOf(err)}`, { cause: err });
    }
    this.fsyncs += fds.length;
  }

  // ---------------------------------------------------------------- the writer

  private async runWriter(): Promise<void> {
    this.writerRunning = true;
    try {
      while (this.queue.length > 0) {
        const group = this.queue;
        this.queue = [];
        if (this.poisonErr !== null) {
          this.failOps(group, this.poisonErr);
          continue;
        }
        await this.processGroup(group);
      }
    } finally {
      this.writerRunning = false;
    }
  }

  /** Rejects ops that were never applied, releasing what they hold. */
  private failOps(ops: Op[], err: unknown): void {
    for (const op of ops) {
      if (op.kind === OpKind.Barrier) {
        op.reject(err);
        continue;
      }
      if (!op.applied) this.unhold(op);
      op.reject(err);
    }
  }

  private unhold(op: Op): void {
    if (op.kind === OpKind.Batch) {
      for (const it of op.items!) {
        if (it.applied) continue;
        this.releaseStripe(it.stripe);
        if (it.hash !== null) this.separator!.failed(it.handle);
      }
    } else {
      this.releaseStripe(op.stripe);
      if (op.hash !== null) this.separator!.failed(op.handle);
    }
    op.ns!.inflight--;
    op.applied = true; // nothing left to release
  }

  private async processGroup(group: Op[]): Promise<void> {
    let pending: Op[] = []; // staged or written, not yet acknowledged
    const touched = new Set<NsState>();
    const complete = async (): Promise<boolean> => {
      if (pending.length === 0) return true;
      const ops = pending;
      pending = [];
      try {
        await Promise.all([...touched].map((st) => this.appendStaged(st)));
      } catch (err) {
        touched.clear();
        this.poison(err, ops); // the append failed: E_IO
        return false;
      }
      try {
        for (const st of touched) this.applyStaged(st); // throws E_POISONED, never an I/O error
      } catch (err) {
        touched.clear();
        this.poison(err, ops);
        return false;
      }
      try {
        if (this.syncMode !== 'none') {
          const token = this.separator?.beforeSync();
          const fds = [...touched].filter((st) => st.active !== null).map((st) => st.active!.fd);
          await Promise.all(fds.map((fd) => this.io.fsync(fd)));
          this.fsyncs += fds.length;
          if (token !== undefined) {
            // not awaited (the acknowledgements do not wait for unlinks); close() waits for it
            const sep = this.separator!;
            this.collecting = this.collecting.then(() => sep.afterSync(token)).catch((err) => {
              if (!this.closed) this.warn(`blob collection failed: ${(err as Error)?.message ?? err}`, err);
            });
          }
        }
      } catch (err) {
        touched.clear();
        this.poison(err, ops);
        return false;
      }
      touched.clear();
      for (const op of ops) {
        this.notify(op);
        op.resolve(op.rev);
      }
      return true;
    };

    for (let i = 0; i < group.length; i++) {
      const op = group[i];
      if (op.kind === OpKind.Barrier) {
        if (!(await complete())) {
          this.failOps(group.slice(i), this.poisonErr);
          return;
        }
        try {
          op.resolve(await op.fn!());
        } catch (err) {
          op.reject(err);
        }
        if (this.poisonErr !== null) {
          this.failOps(group.slice(i + 1), this.poisonErr);
          return;
        }
        continue;
      }
      const st = op.ns!;
      if (st.dropped || st.active === null) {
        this.unhold(op);
        op.reject(new KvError('E_NO_NAMESPACE', `namespace ${JSON.stringify(st.name)} was dropped`));
        continue;
      }
      let act = st.active;
      const used = act.seg.size + st.stagingLen;
      if (used > 0 && used + op.size > this.segmentMaxBytes) {
        try {
          await this.writeStaged(st);
          await this.roll(st);
        } catch (err) {
          this.poison(err, pending.concat(group.slice(i)));
          return;
        }
        act = st.active!;
      }
      this.stage(st, op);
      pending.push(op);
      touched.add(st);
      if (this.syncMode === 'always' || st.stagingLen >= 8 * 1024 * 1024) {
        if (!(await complete())) {
          this.failOps(group.slice(i + 1), this.poisonErr);
          return;
        }
      }
    }
    await complete();
  }

  /** Encodes op into its namespace's staging buffer (at the position it will have in the file). */
  private stage(st: NsState, op: Op): void {
    st.ensureStaging(op.size);
    const act = st.active!;
    const base = act.seg.size;
    op.fileId = act.seg.id;
    if (op.kind === OpKind.Put) {
      op.offset = base + st.stagingLen;
      st.stagingLen += encodeRecord(st.staging, st.stagingLen, T_PUT, op.flags, st.nameBuf, op.key!, op.rev, op.mtime,
        op.vsize, op.hash !== null ? op.hash : op.value);
    } else if (op.kind === OpKind.Del) {
      op.offset = base + st.stagingLen;
      st.stagingLen += encodeRecord(st.staging, st.stagingLen, T_DEL, 0, st.nameBuf, op.key!, op.rev, op.mtime, 0, null);
    } else {
      const items = op.items!;
      for (const it of items) {
        it.offset = base + st.stagingLen;
        st.stagingLen += encodeRecord(st.staging, st.stagingLen, it.type, it.flags, st.nameBuf, it.key, op.rev, op.mtime,
          it.vsize, it.type === T_PUT ? (it.hash !== null ? it.hash : it.value) : null);
      }
      op.offset = base + st.stagingLen;
      st.stagingLen += encodeRecord(st.staging, st.stagingLen, T_COMMIT, 0, st.nameBuf, EMPTY, op.rev, op.mtime,
        items.length, null);
    }
    st.stagedOps.push(op);
  }

  /** Writes a namespace's staging buffer with one write and applies its ops to the keydir. */
  private async writeStaged(st: NsState): Promise<void> {
    await this.appendStaged(st);
    this.applyStaged(st);
  }

  /** Writes a namespace's staging buffer with one write. Throws the errno error of a failed write. */
  private async appendStaged(st: NsState): Promise<void> {
    const len = st.stagingLen;
    if (len === 0) return;
    const act = st.active!;
    try {
      if (this.io.writeSync !== undefined && len <= this.syncIoMaxBytes) {
        let done = 0;
        while (done < len) {
          const w = this.io.writeSync(act.fd, st.staging, done, len - done, act.seg.size + done);
          if (w <= 0) throw Object.assign(new Error('short write'), { code: 'EIO' });
          done += w;
        }
      } else {
        await writeFully(this.io, act.fd, st.staging, 0, len, act.seg.size);
      }
    } catch (err) {
      // best effort: cut what may have reached the file, so the segment ends on a record
      await this.io.ftruncate(act.fd, act.seg.size).catch(() => {});
      throw err;
    }
    this.writes++;
    act.seg.size += len;
    st.totalBytes += len;
    st.stagingLen = 0;
  }

  /**
   * Applies a namespace's appended ops to its keydir. Their records are in the log, so a
   * failure here is no I/O error: it is E_POISONED (the index no longer matches the log;
   * a reopen rebuilds it from the log).
   */
  private applyStaged(st: NsState): void {
    const ops = st.stagedOps;
    st.stagedOps = [];
    for (const op of ops) {
      try {
        this.apply(st, op);
      } catch (err) {
        throw new KvError('E_POISONED', `writes are disabled: updating the in-memory index of ${JSON.stringify(st.name)} ` +
          `failed after revision ${op.rev} was appended (${(err as Error)?.message ?? String(err)}); reopen the engine`,
        { cause: err });
      }
    }
    st.shrinkStaging();
    this.maybeAutoReclaim(st);
  }

  private apply(st: NsState, op: Op): void {
    if (op.kind === OpKind.Put) {
      this.applyPut(st, op.key!, op.fileId, op.offset, op.vsize, op.rev, op.mtime, op.flags, op.hash);
      this.releaseStripe(op.stripe);
      if (op.hash !== null) this.separator!.appended(op.handle);
    } else if (op.kind === OpKind.Del) {
      this.applyDel(st, op.key!, op.fileId, op.offset, op.rev, op.mtime);
      this.releaseStripe(op.stripe);
    } else {
      for (const it of op.items!) {
        if (it.type === T_PUT) {
          this.applyPut(st, it.key, op.fileId, it.offset, it.vsize, op.rev, op.mtime, it.flags & F_POINTER, it.hash);
          if (it.hash !== null) this.separator!.appended(it.handle);
        } else {
          this.applyDel(st, it.key, op.fileId, it.offset, op.rev, op.mtime);
        }
        it.applied = true;
        this.releaseStripe(it.stripe);
      }
    }
    st.inflight--;
    op.applied = true;
    if (op.rev > this.writtenRevision) this.writtenRevision = op.rev;
  }

  private applyPut(st: NsState, key: Buffer, fileId: number, offset: number, vsize: number, rev: number, mtime: number,
    flags: number, hash: Buffer | null): void {
    const k = st.keydir;
    const old = k.find(key);
    let oldHash: Buffer | undefined;
    if (old >= 0) {
      st.liveBytes -= st.entryRecordSize(old);
      oldHash = k.pointerHash(old);
    }
    const e = k.set(key, fileId, offset, vsize, rev, mtime, flags & KF_POINTER, hash);
    st.liveBytes += st.entryRecordSize(e);
    if (oldHash !== undefined) this.separator?.dropped(oldHash);
  }

  private applyDel(st: NsState, key: Buffer, fileId: number, offset: number, rev: number, mtime: number): void {
    const k = st.keydir;
    const old = k.find(key);
    if (old >= 0) {
      st.liveBytes -= st.entryRecordSize(old);
      const oldHash = k.pointerHash(old);
      k.remove(old);
      if (oldHash !== undefined) this.separator?.dropped(oldHash);
    }
    st.active!.footer.add(T_DEL, 0, key, offset, 0, rev, mtime);
  }

  /** Seals the active segment (footer + fsync) and starts a new one. Runs inside the writer. */
  async roll(st: NsState): Promise<void> {
    const act = st.active!;
    if (act.seg.size === 0) return;
    try {
      addKeydirEntries(st, act.seg.id, act.footer);
      await writeFooter(this.io, act.fd, act.seg, act.footer, this.revision);
      this.fsyncs++;
      await this.io.close(act.fd).catch(() => {});
      st.active = null;
      await this.newActive(st);
    } catch (err) {
      this.poison(err, []); // a half-sealed segment takes no more appends
      throw err;
    }
  }

  private notify(op: Op): void {
    if (op.rev > this.notifiedRevision) this.notifiedRevision = op.rev;
    const st = op.ns!;
    if (!this.hub.has(st.name)) return;
    if (op.kind === OpKind.Put) {
      this.hub.dispatch(st.name, 'put', op.key!, op.rev, op.value ?? undefined);
    } else if (op.kind === OpKind.Del) {
      this.hub.dispatch(st.name, 'delete', op.key!, op.rev, undefined);
    } else {
      for (const it of op.items!) {
        this.hub.dispatch(st.name, it.type === T_PUT ? 'put' : 'delete', it.key, op.rev, it.value ?? undefined);
      }
    }
  }

  private poison(err: unknown, ops: Op[]): void {
    const code = err instanceof KvError ? err.code : errnoOf(err);
    if (this.poisonErr === null) {
      this.poisonErr = err instanceof KvError && err.code === 'E_POISONED' ? err
        : new KvError('E_POISONED', `writes are disabled after a failed append (${code}); reopen the engine`, { cause: err });
    }
    const failure = err instanceof KvError ? err : new KvError('E_IO', `append failed: ${code}`, { cause: err });
    for (const st of this.namespaces.values()) {
      if (st.stagedOps.length > 0) {
        st.stagedOps = [];
        st.stagingLen = 0;
      }
    }
    this.failOps(ops, failure);
    const queued = this.queue;
    this.queue = [];
    this.failOps(queued, this.poisonErr);
  }

  get poisoned(): KvError | null {
    return this.poisonErr;
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
    const through = this.notifiedRevision;
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
      if (this.closing !== null || st.dropped || this.poisonErr !== null) return;
      this.reclaimOne(st).catch((err) => {
        this.lastReclaimError = err;
        this.reclaimFailures++;
        st.reclaimRetryAt = Date.now() + 30_000;
      });
    });
  }

  /** Reclaims one namespace (serialized with other reclaims). */
  reclaimOne(st: NsState): Promise<{ relocatedBytes: number; segmentsRemoved: number }> {
    const run = this.reclaimChain.catch(() => {}).then(async () => {
      if (st.dropped || this.closed) return { relocatedBytes: 0, segmentsRemoved: 0 };
      const p = reclaimNamespace(this, st);
      st.reclaiming = p;
      try {
        return await p; // (reclaimNamespace counts compactionBytes and reclaims)
      } finally {
        st.reclaiming = null;
        // writes during the reclaim may have passed the threshold again
        if (this.poisonErr === null && !st.dropped) this.maybeAutoReclaim(st);
      }
    });
    this.reclaimChain = run;
    return run;
  }

  async reclaim(): Promise<{ relocatedBytes: number; segmentsRemoved: number; durationMs: number }> {
    this.checkWritable();
    const t0 = performance.now();
    let relocatedBytes = 0;
    let segmentsRemoved = 0;
    for (const st of [...this.namespaces.values()]) {
      const r = await this.reclaimOne(st);
      relocatedBytes += r.relocatedBytes;
      segmentsRemoved += r.segmentsRemoved;
    }
    // sync 'none' never fsyncs per write: collect unreferenced blobs here as in sync()
    if (this.syncMode === 'none' && this.poisonErr === null) await this.barrier(async () => this.syncAndCollect());
    return { relocatedBytes, segmentsRemoved, durationMs: performance.now() - t0 };
  }

  /** What meta.json gets when a write's turn comes: the state now, the revision high-water mark, lifetime counters. */
  private metaSnapshot(): Meta {
    const swept = this.separator?.stats?.().orphansSwept ?? 0;
    return {
      ...this.meta,
      revision: Math.max(this.meta.revision, this.revision),
      counters: {
        compactionBytes: this.counterBase.compactionBytes + this.compactionBytes,
        reclaims: this.counterBase.reclaims + this.reclaims,
        orphansSwept: this.counterBase.orphansSwept + swept,
      },
    };
  }

  /** Used by reclaim: marks a fatal failure of the log. */
  poisonFromReclaim(err: unknown): void {
    this.poison(err, []);
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
    return {
      keys, liveBytes: live, deadBytes: dead, segments, revision: this.revision,
      compactionBytes: this.counterBase.compactionBytes + this.compactionBytes, compactionBytesSinceOpen: this.compactionBytes,
      namespaces: this.namespaces.size, reclaims: this.counterBase.reclaims + this.reclaims, reclaimsSinceOpen: this.reclaims,
      reclaimFailures: this.reclaimFailures, keydirBytes, fsyncs: this.fsyncs, writes: this.writes,
      watchers: this.hub.size, openFiles: this.fds.size, emfileRetries: this.fds.emfileRetries,
      poisoned: this.poisonErr !== null ? 1 : 0,
      blobs: b?.blobs ?? 0, blobBytes: b?.blobBytes ?? 0, orphansSwept: this.counterBase.orphansSwept + (b?.orphansSwept ?? 0),
      orphansSweptSinceOpen: b?.orphansSwept ?? 0,
      dirFsyncFailures: b?.dirFsyncFailures ?? 0, danglingPointers: b?.danglingPointers ?? 0, warnings: this.warnings,
      readCacheBytes: this.readCache?.bytes ?? 0, readCacheHits: this.readCache?.hits ?? 0, readCacheMisses: this.readCache?.misses ?? 0,
    };
  }
}

const EMPTY = Buffer.alloc(0);

/** A write when the revision counter is at MAX_REVISION (checked before anything is held or enqueued). */
function revisionExhausted(): KvError {
  return new KvError('E_REVISION_LIMIT', `the revision counter is at ${MAX_REVISION} (2^48 - 1), the largest revision ` +
    'this glidekv holds exactly; the write was refused and nothing was changed');
}
function noop(): void {}

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
