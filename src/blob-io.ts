/**
 * The file-system seam under the blob store: every operation the blob store
 * does on disk goes through one `BlobIo`, so a test can wrap it to fail, or to
 * kill the process, at any single step (s3backer's test_io idea, kept as a
 * separate layer: `test/engine/fixtures/faulty-blob-io.ts`).
 *
 * Paths are absolute. Errors are Node's own errno errors (`err.code` such as
 * 'ENOENT', 'ENOSPC', 'EIO'); the blob store decides what they mean.
 */
import { promises as fsp, constants as C } from 'node:fs';
import { writeFully, type FileIo } from './file-io.js';
import { fsyncDir, writeAll } from '../lib/fsync.js';

/** An open file being written. */
export interface BlobFile {
  /** Writes all of `data` at `position` (loops over short writes). */
  write(data: Uint8Array, position: number): Promise<void>;
  /** fsync(2): the file's bytes and size are durable when it resolves. */
  sync(): Promise<void>;
  /** Closes the descriptor. Called exactly once, also after a failure. */
  close(): Promise<void>;
}

export interface BlobIo {
  /** Creates `path` exclusively (O_CREAT|O_EXCL|O_WRONLY, mode 0644). */
  create(path: string): Promise<BlobFile>;
  /** rename(2), atomically replacing `to`. */
  rename(from: string, to: string): Promise<void>;
  /** Opens the directory and fsyncs it, making renames/creates in it durable. */
  syncDir(dir: string): Promise<void>;
  /** unlink(2). Rejects with ENOENT when absent. */
  unlink(path: string): Promise<void>;
  /** The file's size, or null when it does not exist. */
  size(path: string): Promise<number | null>;
  /** Names in `dir` (not paths), in no particular order. */
  list(dir: string): Promise<string[]>;
  /** The whole file. */
  readFile(path: string): Promise<Buffer>;
  /** mkdir -p. */
  mkdirp(dir: string): Promise<void>;
}

class NodeBlobFile implements BlobFile {
  constructor(private readonly fh: fsp.FileHandle) {}

  write(data: Uint8Array, position: number): Promise<void> {
    return writeAll(this.fh, data, position);
  }

  sync(): Promise<void> {
    return this.fh.sync();
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/** The real thing: node:fs/promises. */
export const nodeBlobIo: BlobIo = {
  async create(path) {
    return new NodeBlobFile(await fsp.open(path, C.O_CREAT | C.O_EXCL | C.O_WRONLY, 0o644));
  },
  rename: (from, to) => fsp.rename(from, to),
  syncDir: (dir) => fsyncDir(dir),
  unlink: (path) => fsp.unlink(path),
  async size(path) {
    try {
      return (await fsp.stat(path)).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  },
  list: (dir) => fsp.readdir(dir),
  readFile: (path) => fsp.readFile(path),
  async mkdirp(dir) {
    await fsp.mkdir(dir, { recursive: true });
  },
};

/**
 * Adapts the engine's `FileIo` seam, so that one fault-injecting FileIo covers
 * both the log and the blob store: `BlobStore.open(dir, { io: blobIoFromFileIo(io) })`.
 */
export function blobIoFromFileIo(io: FileIo): BlobIo {
  return {
    async create(path) {
      const fd = await io.open(path, 'wx', 0o644);
      return {
        write: (data, position) => writeFully(io, fd, data, 0, data.length, position),
        sync: () => io.fsync(fd),
        close: () => io.close(fd),
      };
    },
    rename: (from, to) => io.rename(from, to),
    syncDir: (dir) => io.fsyncDir(dir),
    unlink: (path) => io.unlink(path),
    async size(path) {
      let fd: number;
      try {
        fd = await io.open(path, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw err;
      }
      try {
        return await io.fstatSize(fd);
      } finally {
        await io.close(fd);
      }
    },
    list: (dir) => io.readdir(dir),
    readFile: (path) => io.readFile(path),
    mkdirp: (dir) => io.mkdir(dir),
  };
}
