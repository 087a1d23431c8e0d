/**
 * The bytes of one open file in the KV mount, between open and commit.
 *
 * Small contents live in memory. Once the contents grow past
 * `spillThreshold` bytes they move to a temporary file in `spillDir` (inside
 * the data directory, so a big `cp` costs disk, not memory); the file is
 * removed by `close()`, and a daemon removes leftovers of a crashed one on
 * start (`clearSpillDir`). Writes past the end fill the gap with zeros, like
 * a sparse file.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { writeAll } from '../lib/fsync.js';

export const DEFAULT_SPILL_THRESHOLD = 1024 * 1024;

export interface WriteBufferOptions {
  spillDir: string;
  spillThreshold?: number;
}

export class WriteBuffer {
  private mem: Buffer | null = Buffer.alloc(0);
  private file: FileHandle | null = null;
  private filePath: string | null = null;
  private len = 0;
  private readonly threshold: number;
  /** Operations run one at a time (a spill must not race a write). */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: WriteBufferOptions, initial?: Uint8Array) {
    this.threshold = opts.spillThreshold ?? DEFAULT_SPILL_THRESHOLD;
    if (initial && initial.length > 0) {
      // Kept in memory even when large: the caller already holds it there.
      this.mem = Buffer.from(initial);
      this.len = initial.length;
    }
  }

  /** Current length in bytes. */
  get size(): number {
    return this.len;
  }

  /** Path of the spill file, or null while the contents are in memory. */
  get spillPath(): string | null {
    return this.filePath;
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.serial(() => this.doWrite(offset, data));
  }

  readInto(target: Uint8Array, offset: number, length: number): Promise<number> {
    return this.serial(() => this.doReadInto(target, offset, length));
  }

  truncate(size: number): Promise<void> {
    return this.serial(() => this.doTruncate(size));
  }

  /** The whole contents, in one buffer (what gets committed as the value). */
  contents(): Promise<Buffer> {
    return this.serial(async () => {
      if (!this.file) return Buffer.from(this.mem!.subarray(0, this.len));
      const out = Buffer.alloc(this.len);
      await this.doReadInto(out, 0, this.len);
      return out;
    });
  }

  /** Releases memory and removes the spill file. Safe to call twice. */
  close(): Promise<void> {
    return this.serial(async () => {
      this.mem = Buffer.alloc(0);
      this.len = 0;
      const f = this.file;
      const p = this.filePath;
      this.file = null;
      this.filePath = null;
      if (f) await f.close().catch(() => {});
      if (p) await rm(p, { force: true });
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => {});
    return run;
  }

  private async doWrite(offset: number, data: Uint8Array): Promise<void> {
    const end = offset + data.length;
    if (this.file === null && end > this.threshold) await this.spill();
    if (this.file) {
      await writeAll(this.file, data, offset);
      if (end > this.len) this.len = end;
      return;
    }
    this.ensureCapacity(end);
    const mem = this.mem!;
    if (offset > this.len) mem.fill(0, this.len, offset);
    mem.set(data, offset);
    if (end > this.len) this.len = end;
  }

  /** Copies up to `length` bytes at `offset` into `target`; returns the count. */
  private async doReadInto(target: Uint8Array, offset: number, length: number): Promise<number> {
    const n = Math.max(0, Math.min(length, this.len - offset, target.length));
    if (n === 0) return 0;
    if (this.file) {
      let done = 0;
      while (done < n) {
        const { bytesRead } = await this.file.read(target, done, n - done, offset + done);
        if (bytesRead === 0) {
          target.fill(0, done, n); // a sparse tail
          break;
        }
        done += bytesRead;
      }
      return n;
    }
    target.set(this.mem!.subarray(offset, offset + n));
    return n;
  }

  private async doTruncate(size: number): Promise<void> {
    if (this.file) {
      await this.file.truncate(size);
      this.len = size;
      return;
    }
    if (size > this.threshold) {
      await this.spill();
      await this.file!.truncate(size);
      this.len = size;
      return;
    }
    if (size > this.len) {
      this.ensureCapacity(size);
      this.mem!.fill(0, this.len, size);
    }
    this.len = size;
  }

  private ensureCapacity(n: number): void {
    const mem = this.mem!;
    if (n <= mem.length) return;
    const next = Buffer.alloc(Math.max(n, Math.min(mem.length * 2, this.threshold), 4096));
    next.set(mem.subarray(0, this.len));
    this.mem = next;
  }

  private async spill(): Promise<void> {
    await mkdir(this.opts.spillDir, { recursive: true });
    const p = join(this.opts.spillDir, `write-${process.pid}-${randomBytes(8).toString('hex')}`);
    const f = await open(p, 'wx+', 0o600);
    try {
      if (this.len > 0) await writeAll(f, this.mem!.subarray(0, this.len), 0);
    } catch (err) {
      await f.close().catch(() => {});
      await rm(p, { force: true });
      throw err;
    }
    this.file = f;
    this.filePath = p;
    this.mem = null;
  }
}

/** Removes the spill files a crashed daemon left behind (creates the directory if missing). */
export async function clearSpillDir(spillDir: string): Promise<number> {
  await mkdir(spillDir, { recursive: true });
  let removed = 0;
  for (const name of await readdir(spillDir)) {
    if (!name.startsWith('write-')) continue;
    await rm(join(spillDir, name), { force: true });
    removed++;
  }
  return removed;
}
