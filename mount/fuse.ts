/**
 * The one FUSE binding of glidekv: both mounts (KV, device) go through it.
 *
 *   FsOps       a file system as async operations, FUSE's names and argument
 *               order; a failure is thrown (FsError, KvError, GlideFsError, a
 *               Node system error) and becomes an errno through errno.ts's
 *               one table (`toErrno`). KvFs and DeviceFs implement it.
 *   fuseHandlers(fs)   FsOps -> the callback handlers the addon calls
 *               (pure: loads nothing, unit-tested without /dev/fuse)
 *   mountFs(dir, fs, opts)   mounts; the only place that loads the native
 *               addon (fuse-native 2.2.6, libfuse 2.9, loaded on first use)
 *
 * Two things fuse-native does not expose, done here:
 *
 * - extra mount options: fuse-native builds its `-o` string from a fixed list
 *   of known options (`_fuseOptions()` in its index.js); `options` are
 *   appended to it (e.g. `big_writes`, `max_write=131072`, `use_ino`).
 * - per-operation timeouts: fuse-native answers any operation that has not
 *   called back within 15 s with ETIMEDOUT. An fsync that is still uploading,
 *   or a commit of a large value, must not fail that way, so `noTimeout`
 *   lists the operations that may take as long as they need ('all' = none
 *   times out).
 *
 * fuse-native runs libfuse's multi-threaded loop on its own thread and calls
 * the handlers on the Node event loop, so operations may be async and run
 * concurrently. The buffer a read/write receives belongs to libfuse and is
 * detached after the callback: copy what must outlive it. A process must
 * never do file I/O on a mount it serves (the kernel waits on the event loop
 * that waits on the kernel).
 *
 * Unmounting is `fusermount` (mountinfo.ts); fuse-native keeps a libuv handle
 * that holds the event loop open after it, so a daemon exits explicitly
 * (fuse-daemon.ts).
 */
import { createRequire } from 'node:module';
import { toErrno } from './errno.js';
import { unmountPath } from './mountinfo.js';

/** The subset of node's Stats fuse-native turns into a `struct stat`. */
export interface FuseStat {
  mode: number;
  size?: number;
  uid?: number;
  gid?: number;
  nlink?: number;
  ino?: number;
  blksize?: number;
  blocks?: number;
  mtime?: Date | number;
  atime?: Date | number;
  ctime?: Date | number;
}

export interface FuseStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

/**
 * A file system as FUSE sees it, as async operations. Paths are absolute
 * within the mount ('/', '/a/b'); `fd` is the number `open`/`create` returned.
 * An operation left out answers ENOSYS (getattr of '/' excepted: fuse-native
 * then reports an empty directory).
 */
export interface FsOps {
  init?(): Promise<void>;
  statfs?(path: string): Promise<FuseStatfs>;
  getattr?(path: string): Promise<FuseStat>;
  fgetattr?(path: string, fd: number): Promise<FuseStat>;
  access?(path: string, mode: number): Promise<void>;
  readdir?(path: string): Promise<{ names: string[]; stats?: FuseStat[] }>;
  open?(path: string, flags: number): Promise<number>;
  create?(path: string, mode: number): Promise<number>;
  /** Fills buf[0, n) and resolves n (0 at the end of the file). */
  read?(path: string, fd: number, buf: Buffer, len: number, pos: number): Promise<number>;
  /** Takes buf[0, len) (libfuse's memory: copy what must outlive the call); resolves the count written. */
  write?(path: string, fd: number, buf: Buffer, len: number, pos: number): Promise<number>;
  flush?(path: string, fd: number): Promise<void>;
  fsync?(path: string, datasync: boolean, fd: number): Promise<void>;
  fsyncdir?(path: string, datasync: boolean, fd: number): Promise<void>;
  release?(path: string, fd: number): Promise<void>;
  truncate?(path: string, size: number): Promise<void>;
  ftruncate?(path: string, fd: number, size: number): Promise<void>;
  utimens?(path: string, atime: number, mtime: number): Promise<void>;
  chmod?(path: string, mode: number): Promise<void>;
  chown?(path: string, uid: number, gid: number): Promise<void>;
  unlink?(path: string): Promise<void>;
  rename?(src: string, dest: string): Promise<void>;
  mkdir?(path: string, mode: number): Promise<void>;
  rmdir?(path: string): Promise<void>;
  link?(src: string, dest: string): Promise<void>;
  symlink?(target: string, path: string): Promise<void>;
  mknod?(path: string, mode: number, dev: number): Promise<void>;
  /** The value, or null for "no such attribute" (ENODATA). */
  getxattr?(path: string, name: string, position: number): Promise<Buffer | null>;
  setxattr?(path: string, name: string, value: Buffer, position: number, flags: number): Promise<void>;
  listxattr?(path: string): Promise<string[]>;
  removexattr?(path: string, name: string): Promise<void>;
}

export type FsOpName = keyof FsOps;

/** A callback handler as the addon calls it: the arguments, then `cb(errOrResult, ...values)`. */
export type FuseHandler = (...args: any[]) => void;

/**
 * Wraps an async operation: `cb(0, ...ok(result))` on success, `cb(-errno)` on
 * a throw or a rejection (through errno.ts).
 */
function bind<A extends unknown[], R>(run: (...args: A) => Promise<R>, ok: (r: R) => unknown[]): (...args: [...A, (...r: unknown[]) => void]) => void {
  return (...args) => {
    const cb = args.pop() as (...r: unknown[]) => void;
    let p: Promise<R>;
    try {
      p = run(...(args as unknown as A));
    } catch (err) {
      cb(toErrno(err));
      return;
    }
    p.then(
      (r) => cb(...ok(r)),
      (err) => cb(toErrno(err)),
    );
  };
}

const none = (): unknown[] => [0];
const value = <T>(r: T): unknown[] => [0, r];
/** read/write answer with the byte count itself as the first argument. */
const count = (n: number): unknown[] => [n];

/** The callback handlers for `fs`: one per operation it implements, nothing for the others. */
export function fuseHandlers(fs: FsOps): Record<string, FuseHandler> {
  const h: Record<string, FuseHandler> = {};
  const on = <K extends FsOpName>(name: K, make: (op: NonNullable<FsOps[K]>) => FuseHandler) => {
    const op = fs[name];
    if (typeof op === 'function') h[name] = make(op.bind(fs) as NonNullable<FsOps[K]>);
  };
  on('init', (op) => bind(op, none));
  on('statfs', (op) => bind(op, value));
  on('getattr', (op) => bind(op, value));
  on('fgetattr', (op) => bind(op, value));
  on('access', (op) => bind(op, none));
  on('readdir', (op) => bind(op, (r) => [0, r.names, r.stats ?? []]));
  on('open', (op) => bind(op, value));
  on('create', (op) => bind(op, value));
  on('read', (op) => bind(op, count));
  on('write', (op) => bind(op, count));
  on('flush', (op) => bind(op, none));
  on('fsync', (op) => bind((path: string, datasync: unknown, fd: number) => op(path, !!datasync, fd), none));
  on('fsyncdir', (op) => bind((path: string, datasync: unknown, fd: number) => op(path, !!datasync, fd), none));
  on('release', (op) => bind(op, none));
  on('truncate', (op) => bind(op, none));
  on('ftruncate', (op) => bind(op, none));
  on('utimens', (op) => bind(op, none));
  on('chmod', (op) => bind(op, none));
  on('chown', (op) => bind(op, none));
  on('unlink', (op) => bind(op, none));
  on('rename', (op) => bind(op, none));
  on('mkdir', (op) => bind(op, none));
  on('rmdir', (op) => bind(op, none));
  on('link', (op) => bind(op, none));
  on('symlink', (op) => bind(op, none));
  on('mknod', (op) => bind(op, none));
  on('getxattr', (op) => bind(op, value));
  on('setxattr', (op) => bind(op, none));
  on('listxattr', (op) => bind(op, value));
  on('removexattr', (op) => bind(op, none));
  return h;
}

export interface MountFsOptions {
  /** Appended verbatim to the `-o` list, e.g. ['big_writes', 'max_write=131072']. */
  options?: string[];
  /** Operations exempt from fuse-native's 15 s timeout; 'all' disables it everywhere. */
  noTimeout?: FsOpName[] | 'all';
  /** Shown in /proc/self/mountinfo as the source (fsname) and type suffix (fuse.<subtype>). */
  fsname?: string;
  subtype?: string;
  allowOther?: boolean;
  /** Kernel attribute/entry cache time in seconds (0 = ask every time). */
  attrTimeout?: number;
  entryTimeout?: number;
  /** libfuse traces every request on stderr. */
  debug?: boolean;
}

/** A mounted file system. */
export interface FuseMount {
  readonly mountpoint: string;
  /** The `-o` string handed to libfuse (for logs and tests). */
  readonly optionString: string;
  /**
   * `fusermount -u`; if the mount is busy and `lazy` is set, `-u -z`
   * (mountinfo.ts `unmountPath`). Resolves once the kernel routes no new
   * requests here; an unmount from outside before this counts as done.
   */
  unmount(opts?: { lazy?: boolean }): Promise<void>;
}

interface FuseInstance {
  mnt: string;
  _fuseOptions(): string;
  mount(cb: (err: Error | null) => void): void;
}
type FuseClass = new (mnt: string, ops: Record<string, FuseHandler>, opts: Record<string, unknown>) => FuseInstance;

let addon: FuseClass | undefined;
/** fuse-native, loaded on the first mount (the CLI's other commands never load it). */
function loadAddon(): FuseClass {
  addon ??= createRequire(import.meta.url)('fuse-native') as FuseClass;
  return addon;
}

function timeoutOption(noTimeout: MountFsOptions['noTimeout']): unknown {
  if (noTimeout === 'all') return false;
  if (!noTimeout || noTimeout.length === 0) return undefined;
  const t: Record<string, unknown> = { default: 15_000 };
  for (const name of noTimeout) t[name] = false;
  return t;
}

/** Mounts `fs` on `mountpoint` (an existing directory); resolves once the kernel has the mount. */
export function mountFs(mountpoint: string, fs: FsOps, opts: MountFsOptions = {}): Promise<FuseMount> {
  const Fuse = loadAddon();
  const fuse = new Fuse(mountpoint, fuseHandlers(fs), {
    timeout: timeoutOption(opts.noTimeout),
    fsname: opts.fsname,
    subtype: opts.subtype,
    allowOther: opts.allowOther,
    attrTimeout: opts.attrTimeout,
    entryTimeout: opts.entryTimeout,
    debug: opts.debug,
  });
  // fuse-native forgets falsy timeouts (`0`) in its option list; pass them here.
  const extra = [...(opts.options ?? [])];
  if (opts.attrTimeout === 0) extra.push('attr_timeout=0');
  if (opts.entryTimeout === 0) extra.push('entry_timeout=0');
  const base = fuse._fuseOptions.bind(fuse);
  let optionString = '';
  fuse._fuseOptions = () => {
    const s = base();
    const parts = [s.startsWith('-o') ? s.slice(2) : '', ...extra].filter((p) => p.length > 0);
    optionString = parts.length ? '-o' + parts.join(',') : '';
    if (optionString.length >= 1024) throw new Error('fuse option string too long');
    return optionString;
  };
  return new Promise((resolve, reject) => {
    fuse.mount((err) => {
      if (err) {
        // libfuse may have mounted before failing (e.g. an unknown option in
        // fuse_new): do not leave a dead mount behind.
        const fail = () => reject(new Error(`cannot mount FUSE on ${mountpoint}: ${err.message}`));
        unmountPath(fuse.mnt, { lazy: true }).then(fail, fail);
        return;
      }
      resolve({
        mountpoint: fuse.mnt,
        get optionString() {
          return optionString;
        },
        unmount: (u) => unmountPath(fuse.mnt, u),
      });
    });
  });
}
