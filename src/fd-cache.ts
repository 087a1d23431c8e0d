/**
 * A bounded LRU of read descriptors for segment files. A descriptor in use (refs > 0)
 * is never closed under its reader; evict() closes it once the last reader releases it.
 * When open(2) fails with EMFILE/ENFILE, idle cached descriptors are closed and the
 * open is retried instead of failing the operation.
 */
import type { FileIo } from './file-io.js';

interface Slot {
  fd: number;
  refs: number;
  doomed: boolean;
}

function isFdExhausted(err: unknown): boolean {
  const c = (err as NodeJS.ErrnoException | null)?.code;
  return c === 'EMFILE' || c === 'ENFILE';
}

export class FdCache {
  private readonly slots = new Map<string, Slot>();
  private readonly opening = new Map<string, Promise<number>>();
  /** How many EMFILE/ENFILE errors were absorbed (closed idle fds and retried). */
  emfileRetries = 0;

  constructor(private readonly io: FileIo, private readonly max: number) {}

  get size(): number {
    return this.slots.size;
  }

  /** Opens `path` with `flags`; on EMFILE/ENFILE closes idle cached descriptors and retries. */
  async openWithRetry(path: string, flags: string | number): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.io.open(path, flags);
      } catch (err) {
        if (!isFdExhausted(err) || attempt >= 20) throw err;
        this.emfileRetries++;
        const closed = await this.closeIdle(attempt === 0 ? Math.max(1, this.slots.size >> 1) : this.slots.size);
        if (closed === 0) await new Promise((r) => setTimeout(r, 5 * (attempt + 1)));
      }
    }
  }

  /** A read descriptor for `path` (cached); pair every acquire with release(path). */
  acquire(path: string): number | Promise<number> {
    const s = this.slots.get(path);
    if (s !== undefined && !s.doomed) {
      s.refs++;
      this.slots.delete(path);
      this.slots.set(path, s);
      return s.fd;
    }
    return this.acquireSlow(path);
  }

  private async acquireSlow(path: string): Promise<number> {
    let p = this.opening.get(path);
    if (p === undefined) {
      p = this.openWithRetry(path, 'r');
      this.opening.set(path, p);
      p.then(
        (fd) => {
          this.opening.delete(path);
          this.slots.set(path, { fd, refs: 0, doomed: false });
          void this.trim();
        },
        () => this.opening.delete(path),
      );
    }
    await p;
    const s = this.slots.get(path);
    if (s === undefined || s.doomed) return this.acquireSlow(path);
    s.refs++;
    return s.fd;
  }

  release(path: string): void {
    const s = this.slots.get(path);
    if (s === undefined) return;
    s.refs--;
    if (s.refs === 0 && s.doomed) {
      this.slots.delete(path);
      void this.io.close(s.fd).catch(() => {});
    }
  }

  /** Forgets `path` (the file is being deleted): closes its descriptor when idle. */
  evict(path: string): void {
    const s = this.slots.get(path);
    if (s === undefined) return;
    if (s.refs === 0) {
      this.slots.delete(path);
      void this.io.close(s.fd).catch(() => {});
    } else {
      s.doomed = true;
    }
  }

  /** Closes up to n idle descriptors, least recently used first. */
  async closeIdle(n: number): Promise<number> {
    const victims: Slot[] = [];
    for (const [path, s] of this.slots) {
      if (victims.length >= n) break;
      if (s.refs === 0) {
        this.slots.delete(path);
        victims.push(s);
      }
    }
    await Promise.all(victims.map((s) => this.io.close(s.fd).catch(() => {})));
    return victims.length;
  }

  private async trim(): Promise<void> {
    if (this.slots.size > this.max) await this.closeIdle(this.slots.size - this.max);
  }

  async closeAll(): Promise<void> {
    const all = [...this.slots.values()];
    this.slots.clear();
    await Promise.all(all.map((s) => this.io.close(s.fd).catch(() => {})));
  }
}
