/**
 * The file-system seam under the log: every disk operation of the engine
 * (segments, lock, meta) goes through one `FileIo`, so tests can wrap it to
 * inject ENOSPC, EIO or EMFILE at any step. Descriptors are plain numbers.
 * Errors are Node's own errno errors (`err.code`); the engine decides what
 * they mean.
 */
import fs from 'node:fs';
import { fsyncDir } from '../lib/fsync.js';

export interface FileIo {
  /** open(2); flags as for fs.open ('r', 'r+', 'wx', ...). */
  open(path: string, flags: string | number, mode?: number): Promise<number>;
  /** Reads up to `length` bytes at `position`; resolves the count read. */
  read(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** Writes `length` bytes at `position`; resolves the count written (may be short). */
  write(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /**
   * Optional blocking pread/pwrite. When present, the engine uses them for small records
   * (EngineOptions.syncIoMaxBytes): a page-cache hit then costs microseconds instead of a
   * thread-pool round trip. Leave them out to force the asynchronous path.
   */
  readSync?(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  writeSync?(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  /**
   * Makes the file's data and what reading it back needs (its size) durable: fdatasync(2) in
   * nodeFileIo. A timestamp alone is not made durable (nothing in the engine reads one), which
   * is what lets an append into a segment's preallocated tail cost one data write.
   */
  fsync(fd: number): Promise<void>;
  ftruncate(fd: number, length: number): Promise<void>;
  fstatSize(fd: number): Promise<number>;
  close(fd: number): Promise<void>;
  readdir(dir: string): Promise<string[]>;
  mkdir(dir: string): Promise<void>;
  unlink(path: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  /** link(2): fails with EEXIST when `to` exists (an atomic create-with-content). */
  link(from: string, to: string): Promise<void>;
  rm(path: string): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  /** Opens the directory and fsyncs it (makes creates, renames, unlinks in it durable). */
  fsyncDir(dir: string): Promise<void>;
}

function cb<T>(fn: (done: (err: NodeJS.ErrnoException | null, v?: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))));
}

/** The real thing: node:fs with numeric descriptors (cheaper than FileHandle objects). */
export const nodeFileIo: FileIo = {
  open: (path, flags, mode = 0o644) => cb<number>((d) => fs.open(path, flags, mode, d)),
  read: (fd, buf, offset, length, position) => cb<number>((d) => fs.read(fd, buf, offset, length, position, d)),
  write: (fd, buf, offset, length, position) => cb<number>((d) => fs.write(fd, buf, offset, length, position, d)),
  readSync: (fd, buf, offset, length, position) => fs.readSync(fd, buf, offset, length, position),
  writeSync: (fd, buf, offset, length, position) => fs.writeSync(fd, buf, offset, length, position),
  fsync: (fd) => cb<void>((d) => fs.fdatasync(fd, d)),
  ftruncate: (fd, length) => cb<void>((d) => fs.ftruncate(fd, length, d)),
  fstatSize: (fd) => cb<fs.Stats>((d) => fs.fstat(fd, d)).then((s) => s.size),
  close: (fd) => cb<void>((d) => fs.close(fd, d)),
  readdir: (dir) => fs.promises.readdir(dir),
  mkdir: (dir) => fs.promises.mkdir(dir, { recursive: true }).then(() => undefined),
  unlink: (path) => fs.promises.unlink(path),
  rename: (from, to) => fs.promises.rename(from, to),
  link: (from, to) => fs.promises.link(from, to),
  rm: (path) => fs.promises.rm(path, { recursive: true, force: true }),
  readFile: (path) => fs.promises.readFile(path),
  fsyncDir,
};

/** Writes all of buf[offset, offset+length) at position, looping over short writes. */
export async function writeFully(io: FileIo, fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<void> {
  let done = 0;
  while (done < length) {
    const n = await io.write(fd, buf, offset + done, length - done, position + done);
    if (n <= 0) throw Object.assign(new Error(`short write at ${position + done}`), { code: 'EIO' });
    done += n;
  }
}

/** Reads exactly `length` bytes at position (fewer only at end of file); resolves the count. */
export async function readFully(io: FileIo, fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = await io.read(fd, buf, offset + done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}
