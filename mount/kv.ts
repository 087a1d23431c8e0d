/**
 * The KV mount: binds KvFs (kv-fs.ts) to the kernel through fuse-native.
 *
 * Mount options, passed through fuse-native's option string (it has no
 * field for them): `use_ino` (stable inode numbers), `big_writes,
 * max_write=131072` (128 KiB writes), `atomic_o_trunc` (open(O_TRUNC) reaches
 * us as a flag instead of a separate truncate, so saving over a file is one
 * put), `hard_remove` (unlink of an open file is an unlink, not a rename to
 * .fuse_hidden*). fuse-native's op timeout is off: a commit of a large value
 * may take longer than its 15 s default, and a timed-out flush would report
 * failure for a put that still lands.
 *
 * The daemon that owns this must not do file I/O under its own mount point
 * (its event loop serves that I/O: deadlock).
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { errno, toErrno } from './errno.js';
import { KvFs, type KvFsOptions, type MountEngine } from './kv-fs.js';

const require = createRequire(import.meta.url);

// fuse-native is CommonJS without types; only what is used here is declared.
interface FuseInstance {
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}
type FuseCtor = new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>) => FuseInstance;

export const KV_MOUNT_OPTIONS = 'use_ino,big_writes,max_write=131072,atomic_o_trunc,hard_remove';

export interface KvMountHandle {
  readonly fs: KvFs;
  readonly mountpoint: string;
  /** Unmounts (lazily, so a busy mount point does not block shutdown), then commits what is left. */
  unmount(): Promise<string[]>;
}

type Cb = (...args: unknown[]) => void;

/** Runs an async op and answers FUSE: `ok(result)` on success, the errno on failure. */
function answer<T>(cb: Cb, run: () => Promise<T>, ok: (r: T) => unknown[] = () => [0]): void {
  let p: Promise<T>;
  try {
    p = run();
  } catch (err) {
    cb(toErrno(err));
    return;
  }
  p.then(
    (r) => cb(...ok(r)),
    (err) => cb(toErrno(err)),
  );
}

function fuseOps(fs: KvFs): Record<string, unknown> {
  return {
    getattr: (path: string, cb: Cb) => answer(cb, () => fs.getattr(path), (a) => [0, a]),
    readdir: (path: string, cb: Cb) => answer(cb, () => fs.readdir(path), (r) => [0, r.names, r.stats]),
    mkdir: (path: string, _mode: number, cb: Cb) => answer(cb, () => fs.mkdir(path)),
    rmdir: (path: string, cb: Cb) => answer(cb, () => fs.rmdir(path)),
    create: (path: string, _mode: number, cb: Cb) => answer(cb, () => fs.create(path), (fd) => [0, fd]),
    open: (path: string, flags: number, cb: Cb) => answer(cb, () => fs.open(path, flags), (fd) => [0, fd]),
    // read and write answer with the byte count (or a negative errno) as the first argument.
    read: (_path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) =>
      answer(cb, () => fs.read(fd, buf, len, pos), (n) => [n]),
    write: (_path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) =>
      answer(cb, () => fs.write(fd, buf.subarray(0, len), pos), (n) => [n]),
    truncate: (path: string, size: number, cb: Cb) => answer(cb, () => fs.truncate(path, size)),
    ftruncate: (_path: string, fd: number, size: number, cb: Cb) => answer(cb, () => fs.ftruncate(fd, size)),
    flush: (_path: string, fd: number, cb: Cb) => answer(cb, () => fs.flush(fd)),
    fsync: (_path: string, _datasync: number, fd: number, cb: Cb) => answer(cb, () => fs.fsync(fd)),
    release: (_path: string, fd: number, cb: Cb) => answer(cb, () => fs.release(fd)),
    unlink: (path: string, cb: Cb) => answer(cb, () => fs.unlink(path)),
    rename: (from: string, to: string, cb: Cb) => answer(cb, () => fs.rename(from, to)),
    getxattr: (path: string, name: string, _pos: number, cb: Cb) =>
      answer(cb, () => fs.getxattr(path, name), (v) => [0, v]),
    listxattr: (path: string, cb: Cb) => answer(cb, () => fs.listxattr(path), (l) => [0, l]),
    setxattr: (path: string, name: string, _v: Buffer, _pos: number, _flags: number, cb: Cb) =>
      answer(cb, () => fs.setxattr(path, name)),
    removexattr: (path: string, name: string, cb: Cb) => answer(cb, () => fs.setxattr(path, name)),
    statfs: (_path: string, cb: Cb) => answer(cb, () => fs.statfs(), (s) => [0, s]),
    // Times, modes and owners are not stored: accept them so cp/touch work.
    utimens: (path: string, _a: number, _m: number, cb: Cb) => answer(cb, () => fs.getattr(path)),
    chmod: (path: string, _mode: number, cb: Cb) => answer(cb, () => fs.getattr(path)),
    chown: (path: string, _u: number, _g: number, cb: Cb) => answer(cb, () => fs.getattr(path)),
    link: (_a: string, _b: string, cb: Cb) => cb(errno('EPERM')),
    symlink: (_a: string, _b: string, cb: Cb) => cb(errno('EPERM')),
    mknod: (_p: string, _m: number, _d: number, cb: Cb) => cb(errno('EPERM')),
  };
}

/** Is `mnt` (an absolute path) a mount point right now? (/proc/self/mountinfo, field 5, octal escapes) */
export async function isMounted(mnt: string): Promise<boolean> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 5) continue;
    const p = f[4].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (p === mnt) return true;
  }
  return false;
}

/** Mounts the engine at `mountpoint`; resolves once the kernel has the mount (FUSE init done). */
export async function mountKv(engine: MountEngine, mountpoint: string, opts: KvFsOptions): Promise<KvMountHandle> {
  const Fuse = require('fuse-native') as FuseCtor;
  const fs = new KvFs(engine, opts);
  const fuse = new Fuse(mountpoint, fuseOps(fs), {
    timeout: false,
    // fuse-native has no field for these options: they ride on fsname (options are comma-joined).
    fsname: `glidekv,subtype=glidekv-kv,${KV_MOUNT_OPTIONS}`,
    // GLIDEKV_FUSE_DEBUG=1: libfuse traces every request on stderr.
    debug: process.env.GLIDEKV_FUSE_DEBUG === '1',
  });
  await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
  let unmounted: Promise<string[]> | undefined;
  return {
    fs,
    mountpoint,
    unmount() {
      unmounted ??= (async () => {
        try {
          await new Promise<void>((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve())));
        } catch (err) {
          // Already unmounted from outside (fusermount -u): nothing to undo.
          if (await isMounted(mountpoint)) throw err;
        }
        const failures = await fs.commitAll();
        await fs.closeAll();
        return failures;
      })();
      return unmounted;
    },
  };
}
