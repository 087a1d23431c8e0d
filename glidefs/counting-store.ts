/**
 * CountingStore: a wrapping layer that counts the requests that pass through
 * it and their bytes. Put it directly on the S3Store to count what reaches
 * the server (each retry is a request), or above a RetryStore to count
 * operations.
 *
 * A request is counted when it completes: `puts`/`gets`/`deletes`/`lists`
 * count successes (a get that finds nothing is a success and also a
 * `getMisses`), `errors` counts requests that threw. A `putIfAbsent` is a
 * PUT request either way: it counts in `puts`/`putBytes` whether it created the
 * object or found the key taken (S3 answers 412 to a PUT, and MinIO counts that
 * request too); `putsRefused` counts the ones that found it taken.
 */
import type { ObjectHead, ObjectStore, TaggedObject } from './object-store.js';

export interface CountingStats {
  puts: number;
  putBytes: number;
  /** putIfAbsent calls that found the key already there (also in `puts`). */
  putsRefused: number;
  gets: number;
  getBytes: number;
  getMisses: number;
  deletes: number;
  /** HEAD requests (gc's age and size checks). */
  heads: number;
  lists: number;
  errors: number;
}

const ZERO: CountingStats = { puts: 0, putBytes: 0, putsRefused: 0, gets: 0, getBytes: 0, getMisses: 0, deletes: 0, heads: 0, lists: 0, errors: 0 };

export class CountingStore implements ObjectStore {
  readonly description: string;
  readonly inner: ObjectStore;
  private counters: CountingStats = { ...ZERO };

  constructor(inner: ObjectStore) {
    this.inner = inner;
    this.description = inner.description;
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    try {
      await this.inner.put(key, data);
    } catch (err) {
      this.counters.errors++;
      throw err;
    }
    this.counters.puts++;
    this.counters.putBytes += data.byteLength;
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    let created: boolean;
    try {
      created = await this.inner.putIfAbsent(key, body);
    } catch (err) {
      this.counters.errors++;
      throw err;
    }
    this.counters.puts++;
    this.counters.putBytes += body.byteLength;
    if (!created) this.counters.putsRefused++;
    return created;
  }

  /** One PUT whether it replaced the object or not (`putsRefused` counts the refused ones). */
  async putIfMatch(key: string, body: Uint8Array, etag: string): Promise<string | null> {
    let tag: string | null;
    try {
      tag = await this.inner.putIfMatch(key, body, etag);
    } catch (err) {
      this.counters.errors++;
      throw err;
    }
    this.counters.puts++;
    this.counters.putBytes += body.byteLength;
    if (tag === null) this.counters.putsRefused++;
    return tag;
  }

  async getTagged(key: string): Promise<TaggedObject | null> {
    let v: TaggedObject | null;
    try {
      v = await this.inner.getTagged(key);
    } catch (err) {
      this.counters.errors++;
      throw err;
    }
    this.counters.gets++;
    if (v) this.counters.getBytes += v.data.byteLength;
    else this.counters.getMisses++;
    return v;
  }

  async head(key: string): Promise<ObjectHead | null> {
    let h: ObjectHead | null;
    try {
      h = await this.inner.head(key);
    } catch (err) {
      this.counters.errors++;
      throw err;
    }
    this.counters.heads++;
    return h;
  }

  async get(key: string): Promise<Buffer | null> {
    let v: Buffer | null;
    try {
      v = await this.inner.get(key);
    } catch (err) {
      this.counters.errors++;
      throw err;
    }
    this.counters.gets++;
    if (v) this.counters.getBytes += v.byteLength;
    else this.counters.getMisses++;
    return v;
  }

  async delete(key: string): Promise<void> {
    try {
      await this.inner.delete(key);
    } catch (err) {
      this.counters.errors++;
      throw err;
    }
    this.counters.deletes++;
  }

  async *list(prefix: string): AsyncIterable<string> {
    let failed = false;
    try {
      yield* this.inner.list(prefix);
    } catch (err) {
      failed = true;
      this.counters.errors++;
      throw err;
    } finally {
      // also when the caller stops early
      if (!failed) this.counters.lists++;
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  stats(): CountingStats {
    return { ...this.counters };
  }

  reset(): void {
    this.counters = { ...ZERO };
  }
}
