/**
 * The device mount: a FUSE filesystem with one regular file, `volume`, whose
 * bytes are a glidefs volume. `losetup` turns the file into a block device,
 * ext4 goes on top (see ARCHITECTURE.md, mount/).
 *
 *   DIR/            directory, read-only listing
 *   DIR/volume      regular file, size = volume size, not resizable
 *
 * Operations:
 *   read   -> volume.read (a read past the end returns 0 bytes)
 *   write  -> volume.write (the kernel sends at most 128 KiB per request with
 *             `big_writes,max_write=131072`, so one write is one block)
 *   fsync, fsyncdir, flush of a handle opened for writing
 *          -> volume.flush(): returns only after the upload and the catalog
 *             commit. Concurrent requests are grouped: a flush that starts
 *             while another runs waits for it and then runs once for all the
 *             waiters, so each caller's writes are in a commit that started
 *             after its request.
 *          -> with `fsync: 'local'`: volume.sync() instead (cache data and
 *             dirty set fdatasynced on local disk, no upload); uploads then
 *             come only from flushNow() (a timer, an explicit request) and
 *             unmount().
 *
 * Durability (what the device gives; `fsync: 'upload'`, the default):
 * - data written and then fsynced (fsync/fdatasync of the file, or of the
 *   loop device, or a journal commit of the ext4 on top, which the loop driver
 *   turns into an fsync of this file) is uploaded and committed before the
 *   fsync returns: it is never lost, also not by kill -9 of this daemon or a
 *   crash of the machine (the catalog and the objects hold it).
 * - data written but not yet fsynced sits in glidefs' local cache, whose dirty
 *   set is persistent: it survives kill -9 of this daemon (the next opener of
 *   the volume on the same cache dir uploads it); it may be lost if the
 *   machine itself crashes before the next flush, like a disk's write cache.
 *
 * With `fsync: 'local'` an fsync only promises the local disk: fsynced data
 * survives kill -9 of this daemon and a crash/power loss of the OS (the next
 * opener on the same cache dir uploads it), but not the loss of this
 * machine's disk before the next upload.
 *
 * The daemon never does file I/O on its own mount (ARCHITECTURE.md: the
 * kernel would wait on the event loop that waits on the kernel).
 */
import { constants as fsc } from 'node:fs';
import { errno, type FuseMount, type FuseOps, type FuseStat, mountFuse } from './fuse-native.js';

/** The part of a glidefs Volume the device needs (glidefs/index.ts `Volume`). */
export interface DeviceVolume {
  readonly name: string;
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  read(offset: number, length: number): Promise<Buffer>;
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<unknown>;
  /** Writes so far on the local disk (cache data + dirty set), no upload. */
  sync(): Promise<unknown>;
}

/** What fsync/flush/fsyncdir of the device file do: upload + commit, or local sync. */
export type DeviceFsyncMode = 'upload' | 'local';
export const DEVICE_FSYNC_MODES: readonly DeviceFsyncMode[] = ['upload', 'local'];

export const DEVICE_FILE = 'volume';
/** One FUSE write per glidefs block (BLOCK_SIZE = 131072). */
export const DEVICE_MOUNT_OPTIONS = ['big_writes', 'max_write=131072', 'max_read=131072'];
/** Blocks fetched ahead of a sequential reader (volume.read warms glidefs' cache). */
const READ_AHEAD_BLOCKS = 16;
const BLOCK = 131072;
/** Operations that may wait on the object store: never time them out. */
const SLOW_OPS = ['read', 'write', 'flush', 'fsync', 'fsyncdir', 'release', 'open'] as const;

export interface DeviceMountOptions {
  /** Called with one line per failed operation (never with credentials). */
  log?: (line: string) => void;
  /** 'upload' (default): fsync returns after upload + commit; 'local': after volume.sync(). */
  fsync?: DeviceFsyncMode;
}

export interface DeviceMount {
  readonly mountpoint: string;
  /** Path of the device file (`DIR/volume`). */
  readonly file: string;
  readonly optionString: string;
  /** Number of volume flushes run (fsync/flush requests in 'upload' mode, flushNow, unmount). */
  readonly flushes: number;
  readonly fsyncMode: DeviceFsyncMode;
  /** An upload + commit as fsync runs it in 'upload' mode (grouped with concurrent ones); for timers and explicit requests. */
  flushNow(): Promise<void>;
  /**
   * Stops serving: unmounts (lazily if `lazy` and the file is still open,
   * e.g. by a loop device), then flushes the volume. Does not close it.
   */
  unmount(opts?: { lazy?: boolean }): Promise<void>;
}

/** Serializes volume flushes and lets concurrent callers share one. */
class FlushGroup {
  private running: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  count = 0;

  constructor(private readonly volume: DeviceVolume) {}

  flush(): Promise<void> {
    if (this.queued) return this.queued;
    if (!this.running) return this.start();
    const after = this.running;
    this.queued = after
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return this.start();
      });
    return this.queued;
  }

  private start(): Promise<void> {
    this.count++;
    const p = this.volume.flush().then(() => undefined);
    this.running = p;
    p.finally(() => {
      if (this.running === p) this.running = undefined;
    }).catch(() => undefined);
    return p;
  }
}

function errnoOf(err: unknown): number {
  const code = (err as { code?: string })?.code ?? '';
  if (code === 'E_READ_ONLY') return errno.EROFS;
  if (code === 'E_OUT_OF_RANGE') return errno.ENOSPC;
  return errno.EIO;
}

/** Mounts `volume` as `mountpoint/volume` and serves it until `unmount()`. */
export async function mountDevice(
  volume: DeviceVolume,
  mountpoint: string,
  opts: DeviceMountOptions = {},
): Promise<DeviceMount> {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const size = volume.sizeBytes;
  const started = new Date();
  let mtime = started;
  const flushes = new FlushGroup(volume);
  const fsyncMode: DeviceFsyncMode = opts.fsync ?? 'upload';
  if (!DEVICE_FSYNC_MODES.includes(fsyncMode)) {
    throw Object.assign(new Error(`E_BAD_FSYNC_MODE: fsync mode '${String(fsyncMode)}' is not upload or local`), { code: 'E_BAD_FSYNC_MODE' });
  }
  const handles = new Map<number, { writable: boolean }>();
  let nextFd = 1;
  const filePath = '/' + DEVICE_FILE;
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;

  const dirStat = (): FuseStat => ({ mode: fsc.S_IFDIR | 0o755, size: 4096, nlink: 2, uid, gid, mtime: started, atime: started, ctime: started });
  const fileStat = (): FuseStat => ({
    mode: fsc.S_IFREG | (volume.readOnly ? 0o400 : 0o600),
    size,
    nlink: 1,
    uid,
    gid,
    blksize: 131072,
    blocks: Math.ceil(size / 512),
    mtime,
    atime: mtime,
    ctime: mtime,
  });

  // Read-ahead: a read that starts near where the last one ended is
  // sequential; fetch the next blocks in the background so a cold
  // sequential read waits on one GET at a time only at its start.
  let lastEnd = -1;
  let aheadUntil = 0;
  const readAhead = (pos: number, n: number) => {
    const end = pos + n;
    const sequential = lastEnd >= 0 && Math.abs(pos - lastEnd) <= 8 * BLOCK;
    lastEnd = end;
    if (!sequential) {
      aheadUntil = 0;
      return;
    }
    const from = Math.max(aheadUntil, Math.ceil(end / BLOCK) * BLOCK);
    const to = Math.min(size, Math.floor(end / BLOCK) * BLOCK + READ_AHEAD_BLOCKS * BLOCK);
    for (let o = from; o < to; o += BLOCK) volume.read(o, Math.min(BLOCK, size - o)).catch(() => undefined);
    if (to > aheadUntil) aheadUntil = to;
  };

  const fail = (op: string, err: unknown): number => {
    const e = errnoOf(err);
    log(`device ${volume.name}: ${op} failed: ${(err as Error)?.message ?? String(err)}`.split('\n')[0]);
    return e;
  };

  const doFlush = (op: string, cb: (err: number) => void) => {
    (fsyncMode === 'local' ? volume.sync() : flushes.flush()).then(
      () => cb(0),
      (err) => cb(fail(op, err)),
    );
  };

  const ops: FuseOps = {
    init: (cb) => cb(0),
    statfs: (_path, cb) =>
      cb(0, {
        bsize: 131072,
        frsize: 131072,
        blocks: Math.ceil(size / 131072),
        bfree: 0,
        bavail: 0,
        files: 1,
        ffree: 0,
        favail: 0,
        fsid: 0x676b7664,
        flag: 0,
        namemax: 255,
      }),
    getattr: (path, cb) => {
      if (path === '/') return cb(0, dirStat());
      if (path === filePath) return cb(0, fileStat());
      cb(errno.ENOENT);
    },
    fgetattr: (path, _fd, cb) => ops.getattr!(path, cb),
    readdir: (path, cb) => {
      if (path !== '/') return cb(errno.ENOTDIR);
      cb(0, [DEVICE_FILE], [fileStat()]);
    },
    open: (path, flags, cb) => {
      if (path === '/') return cb(errno.EISDIR);
      if (path !== filePath) return cb(errno.ENOENT);
      const writable = (flags & 3) !== fsc.O_RDONLY; // O_ACCMODE
      if (writable && volume.readOnly) return cb(errno.EROFS);
      const fd = nextFd++;
      handles.set(fd, { writable });
      cb(0, fd);
    },
    create: (_path, _mode, cb) => cb(errno.EPERM),
    read: (path, _fd, buf, len, pos, cb) => {
      if (path !== filePath) return cb(errno.ENOENT);
      if (pos >= size || len === 0) return cb(0);
      const n = Math.min(len, size - pos);
      readAhead(pos, n);
      volume.read(pos, n).then(
        (data) => {
          data.copy(buf, 0, 0, n);
          cb(n);
        },
        (err) => cb(fail(`read ${n}@${pos}`, err)),
      );
    },
    write: (path, _fd, buf, len, pos, cb) => {
      if (path !== filePath) return cb(errno.ENOENT);
      if (volume.readOnly) return cb(errno.EROFS);
      if (len === 0) return cb(0);
      if (pos >= size) return cb(errno.ENOSPC);
      const n = Math.min(len, size - pos);
      // The buffer is libfuse's and is detached after the callback: copy it.
      const data = Buffer.from(buf.subarray(0, n));
      volume.write(pos, data).then(
        () => {
          mtime = new Date();
          cb(n);
        },
        (err) => cb(fail(`write ${n}@${pos}`, err)),
      );
    },
    flush: (path, fd, cb) => {
      if (path !== filePath || !handles.get(fd)?.writable) return cb(0);
      doFlush('flush', cb);
    },
    fsync: (path, _datasync, _fd, cb) => {
      if (path !== filePath || volume.readOnly) return cb(0);
      doFlush('fsync', cb);
    },
    fsyncdir: (_path, _datasync, _fd, cb) => {
      if (volume.readOnly) return cb(0);
      doFlush('fsyncdir', cb);
    },
    release: (_path, fd, cb) => {
      handles.delete(fd);
      cb(0);
    },
    truncate: (path, len, cb) => cb(path === filePath && len === size ? 0 : errno.EPERM),
    ftruncate: (path, _fd, len, cb) => cb(path === filePath && len === size ? 0 : errno.EPERM),
    utimens: (_path, _atime, _mtime, cb) => cb(0),
    chmod: (_path, _mode, cb) => cb(errno.EPERM),
    chown: (_path, _uid, _gid, cb) => cb(errno.EPERM),
    unlink: (_path, cb) => cb(errno.EPERM),
    rename: (_src, _dst, cb) => cb(errno.EPERM),
    mkdir: (_path, _mode, cb) => cb(errno.EPERM),
    rmdir: (_path, cb) => cb(errno.EPERM),
  };

  const fuse: FuseMount = await mountFuse(mountpoint, ops, {
    extraOptions: DEVICE_MOUNT_OPTIONS,
    noTimeout: [...SLOW_OPS],
    fsname: `glidekv:${volume.name}`,
    subtype: 'glidekv-device',
  });

  return {
    mountpoint: fuse.mountpoint,
    file: `${fuse.mountpoint}/${DEVICE_FILE}`,
    optionString: fuse.optionString,
    get flushes() {
      return flushes.count;
    },
    fsyncMode,
    flushNow: () => flushes.flush(),
    async unmount(u = {}) {
      await fuse.unmount(u);
      if (!volume.readOnly) await flushes.flush();
    },
  };
}
