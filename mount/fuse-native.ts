/**
 * A typed face of fuse-native 2.2.6 (libfuse2), with two things it does not
 * expose:
 *
 * - extra mount options: fuse-native builds its `-o` string from a fixed list
 *   of known options (`_fuseOptions()` in its index.js). `mountFuse` appends
 *   `extraOptions` (e.g. `big_writes`, `max_write=131072`) to that string, so
 *   the kernel can send one FUSE write per 128 KiB block.
 * - per-operation timeouts: fuse-native answers any operation that has not
 *   called back within 15 s with ETIMEDOUT. For a block device an fsync that
 *   is still uploading, or a read waiting on a slow GET, must not fail that
 *   way (ext4 would see an I/O error), so `noTimeout` lists the operations
 *   that may take as long as they need.
 *
 * fuse-native runs libfuse's multi-threaded loop on its own thread and calls
 * the handlers on the Node event loop, so handlers may be async. The buffer a
 * read/write handler receives belongs to libfuse and is detached after the
 * callback: copy what must outlive it.
 */
import { createRequire } from 'node:module';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const require = createRequire(import.meta.url);
const execFileP = promisify(execFile);

/** The subset of node's Stats fuse-native turns into a `struct stat`. */
export interface FuseStat {
  mode: number;
  size: number;
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

/** Callbacks take a negative errno (or 0) first, like fuse-native's. */
type Cb<T extends unknown[] = []> = (err: number, ...res: T) => void;

/** The handlers the mounts implement (fuse-native's names and argument order). */
export interface FuseOps {
  init?(cb: Cb): void;
  statfs?(path: string, cb: Cb<[FuseStatfs?]>): void;
  getattr?(path: string, cb: Cb<[FuseStat?]>): void;
  fgetattr?(path: string, fd: number, cb: Cb<[FuseStat?]>): void;
  access?(path: string, mode: number, cb: Cb): void;
  open?(path: string, flags: number, cb: Cb<[number?]>): void;
  create?(path: string, mode: number, cb: Cb<[number?]>): void;
  read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void): void;
  write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (n: number) => void): void;
  flush?(path: string, fd: number, cb: Cb): void;
  fsync?(path: string, datasync: boolean, fd: number, cb: Cb): void;
  fsyncdir?(path: string, datasync: boolean, fd: number, cb: Cb): void;
  release?(path: string, fd: number, cb: Cb): void;
  opendir?(path: string, flags: number, cb: Cb<[number?]>): void;
  releasedir?(path: string, fd: number, cb: Cb): void;
  readdir?(path: string, cb: Cb<[string[]?, FuseStat[]?]>): void;
  truncate?(path: string, size: number, cb: Cb): void;
  ftruncate?(path: string, fd: number, size: number, cb: Cb): void;
  utimens?(path: string, atime: number, mtime: number, cb: Cb): void;
  chmod?(path: string, mode: number, cb: Cb): void;
  chown?(path: string, uid: number, gid: number, cb: Cb): void;
  unlink?(path: string, cb: Cb): void;
  rename?(src: string, dest: string, cb: Cb): void;
  mkdir?(path: string, mode: number, cb: Cb): void;
  rmdir?(path: string, cb: Cb): void;
  getxattr?(path: string, name: string, position: number, cb: (err: number, value?: Buffer | null) => void): void;
  setxattr?(path: string, name: string, value: Buffer, position: number, flags: number, cb: Cb): void;
  listxattr?(path: string, cb: (err: number, list?: string[]) => void): void;
  removexattr?(path: string, name: string, cb: Cb): void;
}

export type FuseOpName = keyof FuseOps;

export interface MountOptions {
  /** Appended verbatim to fuse-native's `-o` list, e.g. ['big_writes', 'max_write=131072']. */
  extraOptions?: string[];
  /** Operations exempt from fuse-native's 15 s timeout; `'all'` disables it everywhere. */
  noTimeout?: FuseOpName[] | 'all';
  /** Shown in /proc/mounts as the source (fsname) and type suffix (subtype). */
  fsname?: string;
  subtype?: string;
  allowOther?: boolean;
  /** Kernel attribute/entry cache time in seconds (0 = ask every time). */
  attrTimeout?: number;
  entryTimeout?: number;
  debug?: boolean;
}

interface FuseInstance {
  mnt: string;
  _fuseOptions(): string;
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}

interface FuseClass {
  new (mnt: string, ops: FuseOps, opts: Record<string, unknown>): FuseInstance;
  unmount(mnt: string, cb: (err: Error | null) => void): void;
  [errno: string]: unknown;
}

const FuseCtor = require('fuse-native') as FuseClass;

/** Negative errno values as fuse-native expects them (`errno.EIO === -5`). */
export const errno = {
  EPERM: -1,
  ENOENT: -2,
  EIO: -5,
  EBADF: -9,
  EACCES: -13,
  EBUSY: -16,
  EEXIST: -17,
  ENOTDIR: -20,
  EISDIR: -21,
  EINVAL: -22,
  EFBIG: -27,
  ENOSPC: -28,
  EROFS: -30,
  ENOSYS: -38,
  ENOTEMPTY: -39,
  ENODATA: -61,
  EOPNOTSUPP: -95,
} as const;

/** A mounted FUSE filesystem. */
export interface FuseMount {
  readonly mountpoint: string;
  /** The `-o` string handed to libfuse (for logs and tests). */
  readonly optionString: string;
  /**
   * Unmounts: `fusermount -u` first; if the mount is busy and `lazy` is set,
   * `fusermount -u -z`. Resolves once the kernel no longer routes new
   * requests to this process.
   */
  unmount(opts?: { lazy?: boolean }): Promise<void>;
}

function timeoutOption(noTimeout: MountOptions['noTimeout']): unknown {
  if (noTimeout === 'all') return false;
  if (!noTimeout || noTimeout.length === 0) return undefined;
  const t: Record<string, unknown> = { default: 15_000 };
  for (const name of noTimeout) t[name] = false;
  return t;
}

/** Mounts `ops` on `mountpoint` (an existing, empty directory). */
export function mountFuse(mountpoint: string, ops: FuseOps, opts: MountOptions = {}): Promise<FuseMount> {
  const fuse = new FuseCtor(mountpoint, ops, {
    timeout: timeoutOption(opts.noTimeout),
    fsname: opts.fsname,
    subtype: opts.subtype,
    allowOther: opts.allowOther,
    attrTimeout: opts.attrTimeout,
    entryTimeout: opts.entryTimeout,
    debug: opts.debug,
  });
  // fuse-native forgets falsy timeouts (`0`) in its option list; pass them here.
  const extra = [...(opts.extraOptions ?? [])];
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

/**
 * `fusermount -u MNT` (or `-u -z` when busy and `lazy`). Used by the daemon on
 * itself and by the CLI on a mount whose daemon died (ENOTCONN).
 */
export async function unmountPath(mountpoint: string, opts: { lazy?: boolean } = {}): Promise<void> {
  try {
    await execFileP('fusermount', ['-u', mountpoint]);
  } catch (err) {
    if (!opts.lazy) throw new Error(`cannot unmount ${mountpoint}: ${firstLine(err)}`);
    try {
      await execFileP('fusermount', ['-u', '-z', mountpoint]);
    } catch (err2) {
      throw new Error(`cannot unmount ${mountpoint}: ${firstLine(err2)}`);
    }
  }
}

function firstLine(err: unknown): string {
  const e = err as { stderr?: string; message?: string };
  return String(e.stderr || e.message || err)
    .trim()
    .split('\n')[0];
}
