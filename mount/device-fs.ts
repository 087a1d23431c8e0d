/**
 * The device mount's file system, as async operations on a volume (no FUSE
 * here; mount/device.ts mounts it through mount/fuse.ts). One regular file,
 * `volume`, whose bytes are a glidefs volume; `losetup` turns the file into a
 * block device, ext4 goes on top (see ARCHITECTURE.md, mount/).
 *
 *   /               directory, read-only listing
 *   /volume         regular file, size = volume size, not resizable
 *
 * Operations:
 *   read   -> volume.read (a read past the end returns 0 bytes); a read that
 *             continues the previous one fetches the next 16 blocks ahead
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
 *             the unmount.
 *   everything else (create, unlink, rename, mkdir, chmod, a truncate to
 *   another size...) -> EPERM; a write to a read-only volume -> EROFS.
 *   A failed operation is logged (one line, never credentials) and answered
 *   with the errno of errno.ts's table (E_READ_ONLY EROFS, E_OUT_OF_RANGE
 *   ENOSPC, anything unexpected EIO).
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
 */
import { constants as fsc } from 'node:fs';
import { FsError } from './errno.js';
import type { FsOps, FuseStat, FuseStatfs } from './fuse.js';

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
  /** Blocks the volume's local cache holds at most (read-ahead takes at most an eighth of it). */
  readonly cacheBlocks?: number;
}

/** What fsync/flush/fsyncdir of the device file do: upload + commit, or local sync. */
export type DeviceFsyncMode = 'upload' | 'local';
export const DEVICE_FSYNC_MODES: readonly DeviceFsyncMode[] = ['upload', 'local'];

export const DEVICE_FILE = 'volume';
const FILE_PATH = '/' + DEVICE_FILE;
/** Blocks fetched ahead of a sequential reader (volume.read warms glidefs' cache). */
const READ_AHEAD_BLOCKS = 16;
const BLOCK = 131072;

export interface DeviceFsOptions {
  /** Called with one line per failed operation (never with credentials). */
  log?: (line: string) => void;
  /** 'upload' (default): fsync returns after upload + commit; 'local': after volume.sync(). */
  fsync?: DeviceFsyncMode;
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

export class DeviceFs implements FsOps {
  readonly fsyncMode: DeviceFsyncMode;
  private readonly log: (line: string) => void;
  private readonly size: number;
  private readonly flushes: FlushGroup;
  private readonly started = new Date();
  private mtime = this.started;
  private readonly handles = new Map<number, { writable: boolean }>();
  private nextFd = 1;
  private readonly uid = process.getuid?.() ?? 0;
  private readonly gid = process.getgid?.() ?? 0;
  private lastEnd = -1;
  private aheadUntil = 0;

  constructor(
    private readonly volume: DeviceVolume,
    opts: DeviceFsOptions = {},
  ) {
    this.log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
    this.size = volume.sizeBytes;
    this.flushes = new FlushGroup(volume);
    this.fsyncMode = opts.fsync ?? 'upload';
    if (!DEVICE_FSYNC_MODES.includes(this.fsyncMode)) {
      throw Object.assign(new Error(`E_BAD_FSYNC_MODE: fsync mode '${String(this.fsyncMode)}' is not upload or local`), { code: 'E_BAD_FSYNC_MODE' });
    }
  }

  /** Volume flushes run so far (fsync/flush requests in 'upload' mode, flushNow, unmount). */
  get flushCount(): number {
    return this.flushes.count;
  }

  /** Open handles (for tests). */
  get openHandles(): number {
    return this.handles.size;
  }

  /** An upload + commit as fsync runs it in 'upload' mode, grouped with concurrent ones. */
  flushNow(): Promise<void> {
    return this.flushes.flush();
  }

  async statfs(): Promise<FuseStatfs> {
    return {
      bsize: BLOCK,
      frsize: BLOCK,
      blocks: Math.ceil(this.size / BLOCK),
      bfree: 0,
      bavail: 0,
      files: 1,
      ffree: 0,
      favail: 0,
      fsid: 0x676b7664,
      flag: 0,
      namemax: 255,
    };
  }

  async getattr(path: string): Promise<FuseStat> {
    if (path === '/') return this.dirStat();
    if (path === FILE_PATH) return this.fileStat();
    throw new FsError('ENOENT', path);
  }

  fgetattr(path: string): Promise<FuseStat> {
    return this.getattr(path);
  }

  async readdir(path: string): Promise<{ names: string[]; stats: FuseStat[] }> {
    if (path !== '/') throw new FsError('ENOTDIR', path);
    return { names: [DEVICE_FILE], stats: [this.fileStat()] };
  }

  async open(path: string, flags: number): Promise<number> {
    if (path === '/') throw new FsError('EISDIR', path);
    if (path !== FILE_PATH) throw new FsError('ENOENT', path);
    const writable = (flags & 3) !== fsc.O_RDONLY; // O_ACCMODE
    if (writable && this.volume.readOnly) throw new FsError('EROFS', `${this.volume.name} is read-only`);
    const fd = this.nextFd++;
    this.handles.set(fd, { writable });
    return fd;
  }

  async create(): Promise<number> {
    throw new FsError('EPERM', 'the device has one file');
  }

  async read(path: string, _fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    if (path !== FILE_PATH) throw new FsError('ENOENT', path);
    if (pos >= this.size || len === 0) return 0;
    const n = Math.min(len, this.size - pos);
    this.readAhead(pos, n);
    let data: Buffer;
    try {
      data = await this.volume.read(pos, n);
    } catch (err) {
      throw this.failed(`read ${n}@${pos}`, err);
    }
    data.copy(buf, 0, 0, n);
    return n;
  }

  async write(path: string, _fd: number, buf: Buffer, len: number, pos: number): Promise<number> {
    if (path !== FILE_PATH) throw new FsError('ENOENT', path);
    if (this.volume.readOnly) throw new FsError('EROFS', `${this.volume.name} is read-only`);
    if (len === 0) return 0;
    if (pos >= this.size) throw new FsError('ENOSPC', `write at ${pos} past the end (${this.size})`);
    const n = Math.min(len, this.size - pos);
    // The buffer is libfuse's and is detached after the callback: copy it.
    const data = Buffer.from(buf.subarray(0, n));
    try {
      await this.volume.write(pos, data);
    } catch (err) {
      throw this.failed(`write ${n}@${pos}`, err);
    }
    this.mtime = new Date();
    return n;
  }

  async flush(path: string, fd: number): Promise<void> {
    if (path !== FILE_PATH || !this.handles.get(fd)?.writable) return;
    await this.durable('flush');
  }

  async fsync(path: string, _datasync: boolean, _fd: number): Promise<void> {
    if (path !== FILE_PATH || this.volume.readOnly) return;
    await this.durable('fsync');
  }

  async fsyncdir(_path: string, _datasync: boolean, _fd: number): Promise<void> {
    if (this.volume.readOnly) return;
    await this.durable('fsyncdir');
  }

  async release(_path: string, fd: number): Promise<void> {
    this.handles.delete(fd);
  }

  async truncate(path: string, size: number): Promise<void> {
    if (path !== FILE_PATH || size !== this.size) throw new FsError('EPERM', 'the volume has a fixed size');
  }

  async ftruncate(path: string, _fd: number, size: number): Promise<void> {
    return this.truncate(path, size);
  }

  async utimens(): Promise<void> {}

  async chmod(): Promise<void> {
    throw new FsError('EPERM');
  }

  async chown(): Promise<void> {
    throw new FsError('EPERM');
  }

  async unlink(): Promise<void> {
    throw new FsError('EPERM');
  }

  async rename(): Promise<void> {
    throw new FsError('EPERM');
  }

  async mkdir(): Promise<void> {
    throw new FsError('EPERM');
  }

  async rmdir(): Promise<void> {
    throw new FsError('EPERM');
  }

  // ---- internals ----

  /** fsync/flush/fsyncdir: upload + commit (grouped), or the local sync in 'local' mode. */
  private async durable(op: string): Promise<void> {
    try {
      await (this.fsyncMode === 'local' ? this.volume.sync() : this.flushes.flush());
    } catch (err) {
      throw this.failed(op, err);
    }
  }

  /** Logs a failed volume operation; returns the error for the errno table. */
  private failed(op: string, err: unknown): unknown {
    this.log(`device ${this.volume.name}: ${op} failed: ${(err as Error)?.message ?? String(err)}`.split('\n')[0]);
    return err;
  }

  /**
   * Read-ahead: a read that starts near where the last one ended is
   * sequential; fetch the next blocks in the background so a cold
   * sequential read waits on one GET at a time only at its start.
   */
  private readAhead(pos: number, n: number): void {
    const end = pos + n;
    const sequential = this.lastEnd >= 0 && Math.abs(pos - this.lastEnd) <= 8 * BLOCK;
    this.lastEnd = end;
    if (!sequential) {
      this.aheadUntil = 0;
      return;
    }
    const from = Math.max(this.aheadUntil, Math.ceil(end / BLOCK) * BLOCK);
    // at most an eighth of the volume's bounded cache, so read-ahead never evicts what is about to be read
    const ahead = Math.max(1, Math.min(READ_AHEAD_BLOCKS, Math.floor((this.volume.cacheBlocks ?? Infinity) / 8)));
    const to = Math.min(this.size, Math.floor(end / BLOCK) * BLOCK + ahead * BLOCK);
    for (let o = from; o < to; o += BLOCK) this.volume.read(o, Math.min(BLOCK, this.size - o)).catch(() => undefined);
    if (to > this.aheadUntil) this.aheadUntil = to;
  }

  private dirStat(): FuseStat {
    const t = this.started;
    return { mode: fsc.S_IFDIR | 0o755, size: 4096, nlink: 2, uid: this.uid, gid: this.gid, mtime: t, atime: t, ctime: t };
  }

  private fileStat(): FuseStat {
    const t = this.mtime;
    return {
      mode: fsc.S_IFREG | (this.volume.readOnly ? 0o400 : 0o600),
      size: this.size,
      nlink: 1,
      uid: this.uid,
      gid: this.gid,
      blksize: BLOCK,
      blocks: Math.ceil(this.size / 512),
      mtime: t,
      atime: t,
      ctime: t,
    };
  }
}
