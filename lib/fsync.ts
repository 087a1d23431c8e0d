/**
 * Durable-write helpers on node:fs/promises.
 *
 * - `writeAll(fh, data, position)`: pwrite until every byte is written (a
 *   write may be short); a write that makes no progress is an EIO error,
 *   never an endless loop.
 * - `fsyncDir(dir)`: open the directory and fsync it, which makes the creates,
 *   renames and unlinks in it durable (the file's own fsync does not).
 * - `writeAllSync` / `fsyncDirSync`: the same on file descriptors, for code
 *   that must not yield (the volume cache's slot table).
 */
import { closeSync, constants as C, fsyncSync, openSync, writeSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

export async function writeAll(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    if (bytesWritten <= 0) throw Object.assign(new Error(`short write at ${position + done}`), { code: 'EIO' });
    done += bytesWritten;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, C.O_RDONLY | C.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export function writeAllSync(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) {
    const n = writeSync(fd, data, done, data.length - done, position + done);
    if (n <= 0) throw Object.assign(new Error(`short write at ${position + done}`), { code: 'EIO' });
    done += n;
  }
}

export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, C.O_RDONLY | C.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
