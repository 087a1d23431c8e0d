/**
 * MemoryStore: objects in a Map. For unit tests only — nothing survives the
 * process, and there is no size limit.
 */
import { GlideFsError } from './errors.js';
import type { ObjectStore } from './object-store.js';

export class MemoryStore implements ObjectStore {
  readonly description = 'memory://';
  private readonly objects = new Map<string, Buffer>();
  private closed = false;

  async put(key: string, data: Uint8Array): Promise<void> {
    this.checkOpen();
    this.objects.set(key, Buffer.from(data));
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    this.checkOpen();
    if (this.objects.has(key)) return false;
    this.objects.set(key, Buffer.from(body));
    return true;
  }

  async get(key: string): Promise<Buffer | null> {
    this.checkOpen();
    const v = this.objects.get(key);
    return v ? Buffer.from(v) : null;
  }

  async delete(key: string): Promise<void> {
    this.checkOpen();
    this.objects.delete(key);
  }

  async *list(prefix: string): AsyncIterable<string> {
    this.checkOpen();
    for (const k of [...this.objects.keys()]) if (k.startsWith(prefix)) yield k;
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Number of objects held (tests). */
  get size(): number {
    return this.objects.size;
  }

  private checkOpen(): void {
    if (this.closed) throw GlideFsError.CLOSED('memory store');
  }
}
