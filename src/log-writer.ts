/**
 * The log writer: the one writer loop of an engine (group commit, segment roll, poisoning).
 *
 *   put/delete/batch (src/engine.ts) validate, (CAS) wait until no write to the key's stripe
 *   is in flight, check the revision, take the next revision (`nextRevision`) and enqueue —
 *   all in one synchronous step, so the check and the append are atomic. The writer takes
 *   everything queued, encodes it into per-namespace staging buffers, writes each namespace's
 *   buffer with one write(2), applies the keydir updates, fsyncs every touched segment once
 *   ('batch': group commit, 'always': one fsync per operation, 'none': none), then resolves
 *   the operations and dispatches watch events, in revision order.
 *   A failed append or fsync poisons the writer: those operations fail (E_IO), queued and
 *   later ones fail fast (E_POISONED), reads keep working.
 *
 * A segment rolls (footer + fsync, a new active segment) when the next record would pass
 * `segmentMaxBytes`; reclaim rolls one inside a barrier. The writer owns the revision
 * counters and the segment file-id counter; it sees the engine through `LogHost` only.
 * See FORMAT.md, "Writes and durability" and "Segment and footer".
 */
import type { FileIo } from './file-io.js';
import { writeFully } from './file-io.js';
import type { FdCache } from './fd-cache.js';
import { KvError } from './errors.js';
import { fnv1a as fnv } from '../lib/hash.js';
import { KF_POINTER } from './keydir.js';
import type { ActiveSeg, NsState } from './ns-state.js';
import { encodeRecord, F_POINTER, T_COMMIT, T_DEL, T_PUT } from './record.js';
import { FooterBuilder } from './segment.js';
import { addKeydirEntries, writeFooter } from './recovery.js';
import type { ValueSeparator } from './value-separator.js';
import type { WatchHub } from './watch.js';

export type SyncMode = 'always' | 'batch' | 'none';

/** What the log writer sees of its engine. */
export interface LogHost {
  readonly io: FileIo;
  readonly fds: FdCache;
  readonly syncMode: SyncMode;
  /** A segment rolls past this size. */
  readonly segmentMaxBytes: number;
  /** Appends up to this many bytes use the FileIo's blocking writeSync when it has one. */
  readonly syncIoMaxBytes: number;
  /** Where acknowledged writes are dispatched as watch events. */
  readonly hub: WatchHub;
  /** The open namespaces (sync fsyncs their active segments; a poison clears their staging). */
  readonly namespaces: ReadonlyMap<string, NsState>;
  /** The blob-store seam (null until open has made it). */
  readonly separator: ValueSeparator | null;
  /** Is the engine closed? (a blob collection that fails after close raises no warning) */
  readonly closed: boolean;
  /** Called after a namespace's appended records were applied to its keydir (automatic reclaim). */
  afterApply(st: NsState): void;
  warn(message: string, cause?: unknown): void;
}

const STRIPES = 4096;

/**
 * Preallocated tail (sync 'always'/'batch'; FORMAT.md "Preallocated tail"): the active segment
 * is kept written with zeros ahead of its records, so the fsync (fdatasync) of an append that
 * lands there writes the data block only: the file size, and so the inode, does not change.
 * The tail grows by TAIL_MIN, doubling per extension up to TAIL_MAX, when less than TAIL_LOW
 * bytes of it are left; a roll and a close cut it off.
 */
const TAIL_MIN = 64 * 1024;
const TAIL_MAX = 1024 * 1024;
const TAIL_LOW = 16 * 1024;
const ZEROS = Buffer.alloc(TAIL_MAX);

interface Tail {
  /** File size: the zero-filled bytes are [seg.size, end). */
  end: number;
  /** The next extension's size (0 = a write of zeros failed: no more for this segment). */
  chunk: number;
}

export const enum OpKind { Put, Del, Batch, Barrier }

/** One record on its way to the log: what a put/delete op and a batch item both carry. */
export interface PendingRecord {
  value: Buffer | null;
  flags: number;
  vsize: number;
  hash: Buffer | null;
  handle: unknown;
  stripe: number;
  offset: number;
  applied: boolean;
}

export interface BatchItem extends PendingRecord {
  type: number; // T_PUT | T_DEL
  key: Buffer;
}

export interface Op extends PendingRecord {
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

function errnoOf(err: unknown): string {
  return (err as NodeJS.ErrnoException | null)?.code ?? 'EIO';
}

const EMPTY = Buffer.alloc(0);
function noop(): void {}

export class LogWriter {
  /** Last revision handed out. */
  revision = 0;
  /** Highest revision applied to a keydir (written to a segment). */
  writtenRevision = 0;
  /** Highest revision whose watch events were dispatched (acknowledged). */
  notifiedRevision = 0;
  /** The next segment file id (one u32 counter for the engine; open sets it past the highest on disk). */
  nextFileId = 1;
  fsyncs = 0;
  writes = 0;

  private readonly io: FileIo;
  private readonly fds: FdCache;
  private readonly syncMode: SyncMode;
  private readonly segmentMaxBytes: number;
  private readonly syncIoMaxBytes: number;
  /** Keep a zero-filled tail ahead of the active segments' records (not with sync 'none'). */
  private readonly preallocate: boolean;
  private readonly tails = new WeakMap<ActiveSeg, Tail>();
  private queue: Op[] = [];
  private writerRunning = false;
  private poisonErr: KvError | null = null;
  private readonly stripes = new Uint32Array(STRIPES);
  private readonly stripeWaiters = new Map<number, Array<() => void>>();
  /** Blob collections started after a group commit's fsync (awaited by close). */
  private collecting: Promise<void> = Promise.resolve();

  constructor(private readonly host: LogHost) {
    this.io = host.io;
    this.fds = host.fds;
    this.syncMode = host.syncMode;
    this.segmentMaxBytes = host.segmentMaxBytes;
    this.syncIoMaxBytes = host.syncIoMaxBytes;
    this.preallocate = host.syncMode !== 'none';
  }

  /** Starts the counters at what recovery found (open). */
  start(revision: number): void {
    this.revision = revision;
    this.writtenRevision = revision;
    this.notifiedRevision = revision;
  }

  /** The next revision (call in the synchronous step that enqueues the op). */
  nextRevision(): number {
    return ++this.revision;
  }

  /** Is a write to stripe s in flight? */
  stripeBusy(s: number): boolean {
    return this.stripes[s] > 0;
  }

  /** Holds stripe s for an op about to be enqueued (released when it is applied or failed). */
  holdStripe(s: number): void {
    this.stripes[s]++;
  }

  /** Resolves once the blob collections started by group commits have finished (close). */
  drained(): Promise<void> {
    return this.collecting;
  }

  stripeOf(key: Buffer): number {
    return fnv(key) & (STRIPES - 1);
  }

  /** Resolves when the stripe has no write in flight (call in a loop: re-check after). */
  waitStripe(s: number): Promise<void> {
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

  newOp(kind: OpKind, st: NsState | null): Op {
    return {
      kind, ns: st, key: null, value: null, flags: 0, vsize: 0, hash: null, handle: undefined, stripe: 0, rev: 0,
      mtime: 0, items: null, size: 0, fileId: 0, offset: 0, applied: false, fn: null, result: undefined,
      resolve: noop, reject: noop,
    };
  }

  enqueue<T>(op: Op): Promise<T> {
    const p = new Promise<T>((resolve, reject) => {
      op.resolve = resolve;
      op.reject = reject;
    });
    this.queue.push(op);
    if (!this.writerRunning) void this.runWriter();
    return p;
  }

  /** Runs fn inside the writer, after everything enqueued before it is written and acknowledged. */
  barrier<T>(fn: () => Promise<T>): Promise<T> {
    const op = this.newOp(OpKind.Barrier, null);
    op.fn = fn;
    return this.enqueue<T>(op);
  }

  /** Inside the writer: fsync every active segment, then collect the blobs it made unreferenced for good. */
  async syncAndCollect(): Promise<void> {
    const token = this.host.separator?.beforeSync();
    await this.syncActive(); // throws (and poisons) on failure: nothing is collected then
    if (token !== undefined) await this.host.separator!.afterSync(token);
  }

  private async syncActive(): Promise<void> {
    const fds: number[] = [];
    for (const st of this.host.namespaces.values()) if (st.active !== null) fds.push(st.active.fd);
    try {
      await Promise.all(fds.map((fd) => this.io.fsync(fd)));
    } catch (err) {
      this.poison(err, []); // after a failed fsync the page cache can no longer be trusted
      throw new KvError('E_IO', `sync failed: ${errnoOf(err)}`, { cause: err });
    }
    this.fsyncs += fds.length;
  }

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
        if (it.hash !== null) this.host.separator!.failed(it.handle);
      }
    } else {
      this.releaseStripe(op.stripe);
      if (op.hash !== null) this.host.separator!.failed(op.handle);
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
          const token = this.host.separator?.beforeSync();
          const fds = [...touched].filter((st) => st.active !== null).map((st) => st.active!.fd);
          await Promise.all(fds.map((fd) => this.io.fsync(fd)));
          this.fsyncs += fds.length;
          if (token !== undefined) {
            // not awaited (the acknowledgements do not wait for unlinks); close() waits for it
            const sep = this.host.separator!;
            this.collecting = this.collecting.then(() => sep.afterSync(token)).catch((err) => {
              if (!this.host.closed) this.host.warn(`blob collection failed: ${(err as Error)?.message ?? err}`, err);
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
    if (this.preallocate) await this.extendTail(act);
  }

  /**
   * Writes zeros ahead of the active segment's records when less than TAIL_LOW bytes of its
   * zero-filled tail are left (never past segmentMaxBytes, where it rolls). Best effort: a
   * failed write of zeros (ENOSPC) only stops preallocating this segment; the records are
   * unaffected (bytes past seg.size are never read as records).
   */
  private async extendTail(act: ActiveSeg): Promise<void> {
    const size = act.seg.size;
    let t = this.tails.get(act);
    if (t === undefined) this.tails.set(act, (t = { end: size, chunk: TAIL_MIN }));
    if (t.chunk === 0 || t.end - size >= TAIL_LOW) return;
    const from = Math.max(t.end, size);
    const to = Math.min(from + t.chunk, this.segmentMaxBytes);
    if (to <= from) return;
    try {
      if (this.io.writeSync !== undefined && to - from <= this.syncIoMaxBytes) {
        for (let o = from; o < to;) {
          const w = this.io.writeSync(act.fd, ZEROS, 0, to - o, o);
          if (w <= 0) throw Object.assign(new Error('short write'), { code: 'EIO' });
          o += w;
        }
      } else {
        await writeFully(this.io, act.fd, ZEROS, 0, to - from, from);
      }
      t.end = to;
      t.chunk = Math.min(t.chunk * 2, TAIL_MAX);
    } catch {
      t.chunk = 0; // the file may hold some zeros past t.end: cut with the rest (cutTail)
      t.end = Math.max(t.end, to);
    }
  }

  /** Cuts the zero-filled tail of a namespace's active segment (before its footer, and on close). */
  private async cutTail(act: ActiveSeg): Promise<void> {
    const t = this.tails.get(act);
    if (t === undefined) return;
    this.tails.delete(act);
    if (t.end > act.seg.size) await this.io.ftruncate(act.fd, act.seg.size);
  }

  /**
   * Inside the writer (close): cuts the zero-filled tail of every active segment and fsyncs
   * them, so a closed data directory holds records (and footers) only.
   */
  async closeTails(): Promise<void> {
    for (const st of this.host.namespaces.values()) {
      // a tail left in place is harmless (recovery cuts it): the fsync below matters more
      if (st.active !== null) await this.cutTail(st.active).catch(() => {});
    }
    await this.syncAndCollect();
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
    this.host.afterApply(st);
  }

  private apply(st: NsState, op: Op): void {
    if (op.kind === OpKind.Put) {
      this.applyPut(st, op.key!, op.fileId, op.offset, op.vsize, op.rev, op.mtime, op.flags, op.hash);
      this.releaseStripe(op.stripe);
      if (op.hash !== null) this.host.separator!.appended(op.handle);
    } else if (op.kind === OpKind.Del) {
      this.applyDel(st, op.key!, op.fileId, op.offset, op.rev, op.mtime);
      this.releaseStripe(op.stripe);
    } else {
      for (const it of op.items!) {
        if (it.type === T_PUT) {
          this.applyPut(st, it.key, op.fileId, it.offset, it.vsize, op.rev, op.mtime, it.flags & F_POINTER, it.hash);
          if (it.hash !== null) this.host.separator!.appended(it.handle);
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
    if (oldHash !== undefined) this.host.separator?.dropped(oldHash);
  }

  private applyDel(st: NsState, key: Buffer, fileId: number, offset: number, rev: number, mtime: number): void {
    const k = st.keydir;
    const old = k.find(key);
    if (old >= 0) {
      st.liveBytes -= st.entryRecordSize(old);
      const oldHash = k.pointerHash(old);
      k.remove(old);
      if (oldHash !== undefined) this.host.separator?.dropped(oldHash);
    }
    st.active!.footer.add(T_DEL, 0, key, offset, 0, rev, mtime);
  }

  /** Seals the active segment (footer + fsync) and starts a new one. Runs inside the writer. */
  async roll(st: NsState): Promise<void> {
    const act = st.active!;
    if (act.seg.size === 0) return;
    try {
      addKeydirEntries(st, act.seg.id, act.footer);
      await this.cutTail(act); // the footer ends the file
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
    if (!this.host.hub.has(st.name)) return;
    if (op.kind === OpKind.Put) {
      this.host.hub.dispatch(st.name, 'put', op.key!, op.rev, op.value ?? undefined);
    } else if (op.kind === OpKind.Del) {
      this.host.hub.dispatch(st.name, 'delete', op.key!, op.rev, undefined);
    } else {
      for (const it of op.items!) {
        this.host.hub.dispatch(st.name, it.type === T_PUT ? 'put' : 'delete', it.key, op.rev, it.value ?? undefined);
      }
    }
  }

  poison(err: unknown, ops: Op[]): void {
    const code = err instanceof KvError ? err.code : errnoOf(err);
    if (this.poisonErr === null) {
      this.poisonErr = err instanceof KvError && err.code === 'E_POISONED' ? err
        : new KvError('E_POISONED', `writes are disabled after a failed append (${code}); reopen the engine`, { cause: err });
    }
    const failure = err instanceof KvError ? err : new KvError('E_IO', `append failed: ${code}`, { cause: err });
    for (const st of this.host.namespaces.values()) {
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
}
