/**
 * The KV mount's file system, as async operations on an engine (no FUSE here:
 * KvFs implements fuse.ts's FsOps; mount/kv.ts mounts it).
 *
 *   /                 directory: one entry per namespace (mkdir creates,
 *                     rmdir drops an empty one)
 *   /<ns>/            directory: one entry per key (engine.list, no value reads)
 *   /<ns>/<name>      regular file: the value of the key `name` stands for
 *                     (see key-names.ts)
 *
 * An open file gets a handle. Reads load the value once per handle. The first
 * write, truncate or an open with O_TRUNC/create gives the handle a
 * WriteBuffer; flush (close), fsync and release commit it as ONE put, so a
 * reader sees either the old or the new value, never a mix. A commit error is
 * the errno of that flush/fsync, so `cp` fails loudly. getattr of a file with
 * uncommitted writes reports the buffered size.
 *
 * Errors are thrown (FsError or engine KvError) and turned into errno by the
 * binding (fuse.ts) with errno.ts's table.
 *
 * Times, modes and owners are not stored: utimens/chmod/chown succeed on an
 * existing path (so cp and touch work) and change nothing. Links, symlinks
 * and device nodes are EPERM; extended attributes are read-only (one,
 * user.glidekv.revision).
 */
import { statfs as statfsCb } from 'node:fs';
import { constants } from 'node:fs';
import { promisify } from 'node:util';
import { asFsError, FsError } from './errno.js';
import type { FsOps, FuseStat, FuseStatfs } from './fuse.js';
import { keyInode, namespaceInode, ROOT_INODE } from './inode-number.js';
import { KeyedLock } from '../lib/keyed-lock.js';
import { keyToName, nameToKey, resolveLongName } from './key-names.js';
import { WriteBuffer } from './write-buffer.js';

const statfsAsync = promisify(statfsCb);

/** What the mount needs of the engine (src/index.ts `Engine` satisfies it). */
export interface MountEngine {
  createNamespace(ns: string): Promise<void>;
  dropNamespace(ns: string, opts?: { force?: boolean }): Promise<void>;
  listNamespaces(): string[];
  put(ns: string, key: Buffer | string, value: Buffer | Uint8Array | string): Promise<number>;
  get(ns: string, key: Buffer | string): Promise<{ value: Buffer; revision: number; mtime: number } | undefined>;
  stat(ns: string, key: Buffer | string): { size: number; revision: number; mtime: number } | undefined;
  delete(ns: string, key: Buffer | string): Promise<number | undefined>;
  list(
    ns: string,
    opts?: { prefix?: Buffer | string; after?: Buffer | string; limit?: number },
  ): Array<{ key: Buffer; revision: number; size: number; mtime: number }>;
  batch(
    ns: string,
    ops: Array<{ type: 'put'; key: Buffer | string; value: Buffer | Uint8Array | string } | { type: 'delete'; key: Buffer | string }>,
  ): Promise<number>;
  sync(): Promise<void>;
  stats(): { keys: number };
}

export interface KvFsOptions {
  /** Where write buffers spill (inside the data directory). */
  spillDir: string;
  /** Bytes a write buffer keeps in memory before it spills; default 1 MiB. */
  spillThreshold?: number;
  /** Largest value; a write past it is EFBIG. Default 64 MiB (the engine's default). */
  maxValueBytes?: number;
  /** Directory whose file system statfs reports (the data directory). */
  dataDir: string;
  /** Called with a message when a commit fails (at release nobody else would hear of it). */
  onError?: (msg: string) => void;
}

export interface Attr {
  mode: number;
  size: number;
  nlink: number;
  ino: number;
  uid: number;
  gid: number;
  mtime: Date;
  atime: Date;
  ctime: Date;
  blocks: number;
  blksize: number;
}

export const REVISION_XATTR = 'user.glidekv.revision';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const O_ACCMODE = 3;
const O_TRUNC = constants.O_TRUNC;

type Path = { kind: 'root' } | { kind: 'ns'; ns: string } | { kind: 'key'; ns: string; name: string };

interface Handle {
  readonly id: number;
  ns: string;
  key: Buffer;
  buffer: WriteBuffer | null;
  cached: Buffer | null;
  loading: Promise<WriteBuffer> | null;
  dirty: boolean;
  /** Written or ftruncated since open (an O_TRUNC/create alone is not). */
  written: boolean;
  /**
   * The last commit failed and nothing was written since: the app got the
   * error (from close/fsync); release does not try again behind its back.
   */
  failed: boolean;
  /**
   * A write or ftruncate on this handle failed (EFBIG, ENOSPC of the spill
   * file...): its bytes are incomplete, so they are never committed; flush,
   * fsync and release repeat the error.
   */
  writeError: FsError | null;
  /** Unlinked (or replaced by a rename) while open: keeps working, never commits. */
  detached: boolean;
  mtime: number;
}

export function parsePath(path: string): Path {
  if (path === '/') return { kind: 'root' };
  const parts = path.split('/');
  if (parts.length === 2) return { kind: 'ns', ns: parts[1] };
  if (parts.length === 3) return { kind: 'key', ns: parts[1], name: parts[2] };
  throw new FsError('ENOENT', path);
}

export class KvFs implements FsOps {
  private readonly handles = new Map<number, Handle>();
  private readonly byKey = new Map<string, Set<Handle>>();
  private readonly locks = new KeyedLock();
  private nextFd = 1;
  private readonly startedAt = new Date();
  private readonly uid = process.getuid?.() ?? 0;
  private readonly gid = process.getgid?.() ?? 0;
  private readonly maxValueBytes: number;

  constructor(
    private readonly engine: MountEngine,
    private readonly opts: KvFsOptions,
  ) {
    this.maxValueBytes = opts.maxValueBytes ?? 64 * 1024 * 1024;
  }

  /** Open handles (for shutdown and tests). */
  get openHandles(): number {
    return this.handles.size;
  }

  // ---- attributes and directories ----

  async getattr(path: string): Promise<Attr> {
    const p = parsePath(path);
    if (p.kind === 'root') return this.dirAttr(ROOT_INODE, 2 + this.engine.listNamespaces().length);
    this.requireNamespace(p.ns);
    if (p.kind === 'ns') return this.dirAttr(namespaceInode(p.ns), 2);
    const key = await this.resolveKey(p.ns, p.name, false);
    const pending = this.pendingHandle(p.ns, key);
    if (pending) return this.fileAttr(p.ns, key, pending.buffer!.size, pending.mtime);
    const st = this.engine.stat(p.ns, key);
    if (!st) throw new FsError('ENOENT', path);
    return this.fileAttr(p.ns, key, st.size, st.mtime);
  }

  /** Names in a directory, with attributes cheap enough for 100,000 keys. */
  async readdir(path: string): Promise<{ names: string[]; stats: FuseStat[] }> {
    const p = parsePath(path);
    if (p.kind === 'key') {
      this.requireNamespace(p.ns);
      throw new FsError('ENOTDIR', path);
    }
    const names = ['.', '..'];
    const self = p.kind === 'root' ? ROOT_INODE : namespaceInode(p.ns);
    const stats: FuseStat[] = [
      { mode: S_IFDIR | 0o755, ino: self },
      { mode: S_IFDIR | 0o755, ino: ROOT_INODE },
    ];
    if (p.kind === 'root') {
      for (const ns of this.engine.listNamespaces()) {
        names.push(ns);
        stats.push({ mode: S_IFDIR | 0o755, ino: namespaceInode(ns) });
      }
      return { names, stats };
    }
    this.requireNamespace(p.ns);
    const seen = new Set<string>();
    for (const e of this.engine.list(p.ns)) {
      if (e.key.length === 0) continue;
      names.push(keyToName(e.key));
      stats.push({ mode: S_IFREG | 0o644, ino: keyInode(p.ns, e.key) });
      if (this.byKey.size > 0) seen.add(e.key.toString('hex'));
    }
    // Files created but not committed yet.
    for (const set of this.byKey.values()) {
      for (const h of set) {
        if (h.ns !== p.ns || h.detached || h.failed || h.writeError || !h.dirty || !h.buffer || seen.has(h.key.toString('hex'))) continue;
        seen.add(h.key.toString('hex'));
        names.push(keyToName(h.key));
        stats.push({ mode: S_IFREG | 0o644, ino: keyInode(p.ns, h.key) });
      }
    }
    return { names, stats };
  }

  async mkdir(path: string): Promise<void> {
    const p = parsePath(path);
    if (p.kind === 'root') throw new FsError('EEXIST', path);
    if (p.kind === 'key') {
      this.requireNamespace(p.ns);
      throw new FsError('EPERM', 'keys cannot be directories');
    }
    await this.engine.createNamespace(p.ns);
  }

  async rmdir(path: string): Promise<void> {
    const p = parsePath(path);
    if (p.kind === 'root') throw new FsError('EBUSY', path);
    if (p.kind === 'key') {
      this.requireNamespace(p.ns);
      throw new FsError('ENOTDIR', path);
    }
    for (const set of this.byKey.values()) {
      for (const h of set) if (h.ns === p.ns && h.dirty && !h.detached && !h.failed && !h.writeError && h.buffer) throw new FsError('ENOTEMPTY', path);
    }
    await this.engine.dropNamespace(p.ns);
  }

  // ---- files ----

  async create(path: string): Promise<number> {
    const p = parsePath(path);
    if (p.kind !== 'key') throw new FsError(p.kind === 'root' ? 'EISDIR' : 'EPERM', 'only keys are files');
    this.requireNamespace(p.ns);
    const key = await this.resolveKey(p.ns, p.name, true);
    const h = this.newHandle(p.ns, key);
    h.buffer = this.newBuffer();
    h.dirty = true;
    return h.id;
  }

  async open(path: string, flags: number): Promise<number> {
    const p = parsePath(path);
    if (p.kind !== 'key') throw new FsError('EISDIR', path);
    this.requireNamespace(p.ns);
    const key = await this.resolveKey(p.ns, p.name, false);
    if (!this.engine.stat(p.ns, key) && !this.pendingHandle(p.ns, key)) throw new FsError('ENOENT', path);
    const h = this.newHandle(p.ns, key);
    if ((flags & O_TRUNC) !== 0 && (flags & O_ACCMODE) !== 0) {
      h.buffer = this.newBuffer();
      h.dirty = true;
    }
    return h.id;
  }

  async read(_path: string, fd: number, target: Buffer, length: number, position: number): Promise<number> {
    const h = this.handle(fd);
    if (h.buffer) return h.buffer.readInto(target, position, length);
    if (!h.cached) {
      const pending = this.pendingHandle(h.ns, h.key);
      if (pending) {
        // Another handle holds newer, uncommitted bytes: read those.
        return pending.buffer!.readInto(target, position, length);
      }
      h.cached = (await this.engine.get(h.ns, h.key))?.value ?? Buffer.alloc(0);
    }
    const v = h.cached;
    if (position >= v.length) return 0;
    const n = Math.min(length, v.length - position);
    v.copy(target, 0, position, position + n);
    return n;
  }

  async write(_path: string, fd: number, buf: Buffer, length: number, position: number): Promise<number> {
    const h = this.handle(fd);
    const data = buf.subarray(0, length);
    await this.guardWrite(h, async () => {
      if (position + data.length > this.maxValueBytes) throw new FsError('EFBIG', `value over ${this.maxValueBytes} bytes`);
      const buf = await this.bufferFor(h);
      await buf.write(position, data);
    });
    h.dirty = true;
    h.written = true;
    h.failed = false;
    h.mtime = Date.now();
    return data.length;
  }

  async ftruncate(_path: string, fd: number, size: number): Promise<void> {
    const h = this.handle(fd);
    await this.guardWrite(h, async () => {
      if (size > this.maxValueBytes) throw new FsError('EFBIG', `value over ${this.maxValueBytes} bytes`);
      const buf = await this.bufferFor(h);
      await buf.truncate(size);
    });
    h.dirty = true;
    h.written = true;
    h.failed = false;
    h.mtime = Date.now();
  }

  /** truncate(2) by path: one put of the resized value (or of the buffered bytes of an open writer). */
  async truncate(path: string, size: number): Promise<void> {
    const p = parsePath(path);
    if (p.kind !== 'key') throw new FsError('EISDIR', path);
    this.requireNamespace(p.ns);
    if (size > this.maxValueBytes) throw new FsError('EFBIG', `value over ${this.maxValueBytes} bytes`);
    const key = await this.resolveKey(p.ns, p.name, false);
    const pending = this.pendingHandle(p.ns, key);
    if (pending) {
      await pending.buffer!.truncate(size);
      pending.mtime = Date.now();
      return this.commit(pending);
    }
    await this.locks.run([this.lockKey(p.ns, key)], async () => {
      const cur = await this.engine.get(p.ns, key);
      if (!cur) throw new FsError('ENOENT', path);
      const next = Buffer.alloc(size);
      cur.value.copy(next, 0, 0, Math.min(size, cur.value.length));
      await this.engine.put(p.ns, key, next);
    });
  }

  /**
   * close(2) of a descriptor: commits buffered writes; the error is close's.
   * An O_TRUNC open of an existing key with nothing written yet is not
   * committed here (a shell's `echo x > f` closes a dup of the descriptor
   * before writing: committing then would publish an empty value between the
   * old and the new one); release commits it.
   */
  async flush(_path: string, fd: number): Promise<void> {
    const h = this.handle(fd);
    if (!h.written && !h.writeError && this.engine.stat(h.ns, h.key)) return;
    await this.commit(h);
  }

  async fsync(_path: string, _datasync: boolean, fd: number): Promise<void> {
    await this.commit(this.handle(fd));
    await this.engine.sync();
  }

  async release(_path: string, fd: number): Promise<void> {
    const h = this.handles.get(fd);
    if (!h) return;
    try {
      if (!h.failed && !h.writeError) await this.commit(h);
    } finally {
      this.dropHandle(h);
      await h.buffer?.close();
    }
  }

  async unlink(path: string): Promise<void> {
    const p = parsePath(path);
    if (p.kind !== 'key') throw new FsError(p.kind === 'root' ? 'EISDIR' : 'EISDIR', path);
    this.requireNamespace(p.ns);
    const key = await this.resolveKey(p.ns, p.name, false);
    await this.locks.run([this.lockKey(p.ns, key)], async () => {
      const pending = this.pendingHandle(p.ns, key);
      const rev = await this.engine.delete(p.ns, key);
      if (rev === undefined && !pending) throw new FsError('ENOENT', path);
      for (const h of this.byKey.get(this.lockKey(p.ns, key)) ?? []) h.detached = true;
    });
  }

  /** rename within a namespace: one batch (delete old + put new), so nobody sees both or neither. */
  async rename(from: string, to: string): Promise<void> {
    const a = parsePath(from);
    const b = parsePath(to);
    if (a.kind !== 'key' || b.kind !== 'key' || a.ns !== b.ns) {
      if (a.kind === 'root' || b.kind === 'root') throw new FsError('EBUSY', 'the root cannot be renamed');
      // Across namespaces (or a namespace itself): mv falls back to copy + delete.
      throw new FsError('EXDEV', `${from} -> ${to}`);
    }
    this.requireNamespace(a.ns);
    const src = await this.resolveKey(a.ns, a.name, false);
    const dst = await this.resolveKey(b.ns, b.name, true);
    if (src.equals(dst)) return;
    // Bytes written but not yet committed under the old name go with it.
    for (const h of this.byKey.get(this.lockKey(a.ns, src)) ?? []) if (h.dirty && !h.detached) await this.commit(h);
    const srcLock = this.lockKey(a.ns, src);
    const dstLock = this.lockKey(a.ns, dst);
    await this.locks.run([srcLock, dstLock], async () => {
      const cur = await this.engine.get(a.ns, src);
      if (!cur) throw new FsError('ENOENT', from);
      await this.engine.batch(a.ns, [
        { type: 'delete', key: src },
        { type: 'put', key: dst, value: cur.value },
      ]);
      // Handles on the replaced destination now refer to an unlinked file.
      for (const h of this.byKey.get(dstLock) ?? []) h.detached = true;
      // Handles on the source follow the file to its new name.
      for (const h of [...(this.byKey.get(srcLock) ?? [])]) {
        this.unindexHandle(h);
        h.key = dst;
        this.indexHandle(h);
      }
    });
  }

  // ---- extended attributes ----

  async getxattr(path: string, name: string): Promise<Buffer | null> {
    const p = parsePath(path);
    if (p.kind !== 'key') {
      if (p.kind === 'ns') this.requireNamespace(p.ns);
      return null;
    }
    this.requireNamespace(p.ns);
    const key = await this.resolveKey(p.ns, p.name, false);
    const st = this.engine.stat(p.ns, key);
    if (!st && !this.pendingHandle(p.ns, key)) throw new FsError('ENOENT', path);
    if (name !== REVISION_XATTR || !st) return null;
    return Buffer.from(String(st.revision));
  }

  async listxattr(path: string): Promise<string[]> {
    const p = parsePath(path);
    if (p.kind !== 'key') {
      if (p.kind === 'ns') this.requireNamespace(p.ns);
      return [];
    }
    this.requireNamespace(p.ns);
    const key = await this.resolveKey(p.ns, p.name, false);
    if (this.engine.stat(p.ns, key)) return [REVISION_XATTR];
    if (this.pendingHandle(p.ns, key)) return [];
    throw new FsError('ENOENT', path);
  }

  /**
   * Extended attributes are read-only: the revision is the engine's, nothing
   * else is stored. ENOTSUP (not EPERM) so that `mv`/`cp -a`, which copy
   * attributes, carry on quietly.
   */
  async setxattr(path: string, name: string): Promise<void> {
    await this.getattr(path);
    throw new FsError('ENOTSUP', `${name} is read-only`);
  }

  removexattr(path: string, name: string): Promise<void> {
    return this.setxattr(path, name);
  }

  // ---- accepted and ignored, or refused ----

  async utimens(path: string): Promise<void> {
    await this.getattr(path);
  }

  async chmod(path: string): Promise<void> {
    await this.getattr(path);
  }

  async chown(path: string): Promise<void> {
    await this.getattr(path);
  }

  async link(): Promise<void> {
    throw new FsError('EPERM', 'no hard links');
  }

  async symlink(): Promise<void> {
    throw new FsError('EPERM', 'no symbolic links');
  }

  async mknod(): Promise<void> {
    throw new FsError('EPERM', 'keys are regular files');
  }

  async statfs(): Promise<FuseStatfs> {
    const s = await statfsAsync(this.opts.dataDir);
    const clamp = (n: number) => Math.min(Math.max(0, Math.floor(n)), 0xffffffff);
    const keys = this.engine.stats().keys;
    return {
      bsize: clamp(s.bsize),
      frsize: clamp(s.bsize),
      blocks: clamp(s.blocks),
      bfree: clamp(s.bfree),
      bavail: clamp(s.bavail),
      files: clamp(keys + s.ffree),
      ffree: clamp(s.ffree),
      favail: clamp(s.ffree),
      fsid: 0x676b7631, // 'gkv1'
      flag: 0,
      namemax: 255,
    };
  }

  /** Commits every handle with uncommitted bytes (shutdown); returns the failures. */
  async commitAll(): Promise<string[]> {
    const failures: string[] = [];
    for (const h of this.handles.values()) {
      try {
        await this.commit(h);
      } catch (err) {
        failures.push(`${h.ns}/${keyToName(h.key)}: ${(err as Error).message}`);
      }
    }
    return failures;
  }

  async closeAll(): Promise<void> {
    for (const h of [...this.handles.values()]) {
      this.dropHandle(h);
      await h.buffer?.close();
    }
  }

  // ---- internals ----

  /** Runs a write; on failure the handle keeps the error and will not commit. */
  private async guardWrite(h: Handle, fn: () => Promise<void>): Promise<void> {
    if (h.writeError) throw h.writeError;
    try {
      await fn();
    } catch (err) {
      h.writeError = asFsError(err);
      throw err;
    }
  }

  private async commit(h: Handle): Promise<void> {
    if (h.writeError && !h.detached) throw h.writeError;
    if (!h.dirty || h.detached || !h.buffer) return;
    await this.locks.run([this.lockKey(h.ns, h.key)], async () => {
      if (!h.dirty || h.detached) return;
      try {
        const value = await h.buffer!.contents();
        await this.engine.put(h.ns, h.key, value);
      } catch (err) {
        h.failed = true;
        this.opts.onError?.(`commit of ${h.ns}/${keyToName(h.key)} failed: ${(err as Error).message}`);
        throw err;
      }
      h.dirty = false;
      h.failed = false;
      h.cached = null;
    });
  }

  private bufferFor(h: Handle): Promise<WriteBuffer> {
    if (h.buffer) return Promise.resolve(h.buffer);
    // One load per handle, even when writes arrive concurrently.
    h.loading ??= (async () => {
      const pending = this.pendingHandle(h.ns, h.key);
      const initial = pending
        ? await pending.buffer!.contents()
        : ((await this.engine.get(h.ns, h.key))?.value ?? Buffer.alloc(0));
      // Written, not adopted: a large current value goes to the spill file, not the heap.
      const buf = this.newBuffer();
      if (initial.length > 0) await buf.write(0, initial);
      h.buffer = buf;
      return buf;
    })().finally(() => {
      h.loading = null;
    });
    return h.loading;
  }

  private newBuffer(initial?: Uint8Array): WriteBuffer {
    return new WriteBuffer({ spillDir: this.opts.spillDir, spillThreshold: this.opts.spillThreshold }, initial);
  }

  /** The most recent open handle on a key with uncommitted bytes. */
  private pendingHandle(ns: string, key: Buffer): Handle | undefined {
    let best: Handle | undefined;
    for (const h of this.byKey.get(this.lockKey(ns, key)) ?? []) {
      if (h.dirty && !h.detached && !h.failed && !h.writeError && h.buffer && (!best || h.mtime >= best.mtime)) best = h;
    }
    return best;
  }

  private handle(fd: number): Handle {
    const h = this.handles.get(fd);
    if (!h) throw new FsError('EBADF', `fd ${fd}`);
    return h;
  }

  private newHandle(ns: string, key: Buffer): Handle {
    while (this.handles.has(this.nextFd) || this.nextFd === 0) this.nextFd = (this.nextFd + 1) >>> 0;
    const h: Handle = { id: this.nextFd++, ns, key, buffer: null, cached: null, loading: null, dirty: false, written: false, failed: false, writeError: null, detached: false, mtime: Date.now() };
    this.handles.set(h.id, h);
    this.indexHandle(h);
    return h;
  }

  private indexHandle(h: Handle): void {
    const k = this.lockKey(h.ns, h.key);
    let set = this.byKey.get(k);
    if (!set) this.byKey.set(k, (set = new Set()));
    set.add(h);
  }

  private dropHandle(h: Handle): void {
    this.handles.delete(h.id);
    this.unindexHandle(h);
  }

  private unindexHandle(h: Handle): void {
    const k = this.lockKey(h.ns, h.key);
    const set = this.byKey.get(k);
    set?.delete(h);
    if (set && set.size === 0) this.byKey.delete(k);
  }

  private lockKey(ns: string, key: Buffer): string {
    return `${ns}/${key.toString('hex')}`;
  }

  private requireNamespace(ns: string): void {
    if (!this.engine.listNamespaces().includes(ns)) throw new FsError('ENOENT', `no namespace ${ns}`);
  }

  /** The key a name stands for. Unknown long names and non-canonical names: ENOENT, or EINVAL when creating. */
  private async resolveKey(ns: string, name: string, creating: boolean): Promise<Buffer> {
    const d = nameToKey(name);
    const bad = creating ? 'EINVAL' : 'ENOENT';
    if (!d) throw new FsError(bad, `'${name}' is not the name of a key (see the key-name mapping)`);
    if (d.kind === 'key') return d.key;
    const candidates = this.engine.list(ns, { prefix: d.prefix }).map((e) => e.key);
    for (const set of this.byKey.values()) for (const h of set) if (h.ns === ns) candidates.push(h.key);
    const key = resolveLongName(name, candidates);
    if (!key) throw new FsError(bad, `no key has the long name '${name}'`);
    return key;
  }

  private dirAttr(ino: number, nlink: number): Attr {
    const t = this.startedAt;
    return { mode: S_IFDIR | 0o755, size: 4096, nlink, ino, uid: this.uid, gid: this.gid, mtime: t, atime: t, ctime: t, blocks: 8, blksize: 4096 };
  }

  private fileAttr(ns: string, key: Buffer, size: number, mtimeMs: number): Attr {
    const t = new Date(mtimeMs);
    return {
      mode: S_IFREG | 0o644,
      size,
      nlink: 1,
      ino: keyInode(ns, key),
      uid: this.uid,
      gid: this.gid,
      mtime: t,
      atime: t,
      ctime: t,
      blocks: Math.ceil(size / 512),
      blksize: 131072,
    };
  }
}
