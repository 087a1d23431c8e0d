/**
 * MemoryStore: objects in a Map. For unit tests only — nothing survives the
 * process, and there is no size limit.
 */
import { GlideFsError } from './errors.js';
import type { ObjectHead, ObjectStore, TaggedObject } from './object-store.js';

export class MemoryStore implements ObjectStore {
  readonly description = 'memory://';
  private readonly objects = new Map<string, Buffer>();
  private readonly mtimes = new Map<string, number>();
  /** Entity tags: a counter bumped by every write. */
  private readonly tags = new Map<string, string>();
  private writes = 0;
  private closed = false;

  async put(key: string, data: Uint8Array): Promise<void> {
    this.checkOpen();
    this.set(key, data);
  }

  private set(key: string, data: Uint8Array): string {
    const tag = `m${++this.writes}`;
    this.objects.set(key, Buffer.from(data));
    this.mtimes.set(key, Date.now());
    this.tags.set(key, tag);
    return tag;
  }

  async getTagged(key: string): Promise<TaggedObject | null> {
    this.checkOpen();
    const v = this.objects.get(key);
    return v ? { data: Buffer.from(v), etag: this.tags.get(key)! } : null;
  }

  async putIfMatch(key: string, body: Uint8Array, etag: string): Promise<string | null> {
    this.checkOpen();
    if (!this.objects.has(key) || this.tags.get(key) !== etag) return null;
    return this.set(key, body);
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    this.checkOpen();
    if (this.objects.has(key)) return false;
    this.set(key, body);
    return true;
  }

  async head(key: string): Promise<ObjectHead | null> {
    this.checkOpen();
    const v = this.objects.get(key);
    return v ? { size: v.length, modifiedAt: this.mtimes.get(key)! } : null;
  }

  /** Sets an object's modification time (tests: make an object look old). */
  setModifiedAt(key: string, ms: number): void {
    if (this.objects.has(key)) this.mtimes.set(key, ms);
  }

  async get(key: string): Promise<Buffer | null> {
    this.checkOpen();
    const v = this.objects.get(key);
    return v ? Buffer.from(v) : null;
  }

  async delete(key: string): Promise<void> {
    this.checkOpen();
    this.objects.delete(key);
    this.mtimes.delete(key);
    this.tags.delete(key);
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
