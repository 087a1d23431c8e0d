/**
 * GateStore: a test layer that holds every PUT, putIfAbsent and putIfMatch (after storing it in the inner
 * store) until `open()`, so a test can stop a flush in the middle of its
 * uploads and act while it waits. `arrived` counts the PUTs that reached it.
 * Volume leases (`volumes/<uuid>/lease`) pass through: they are not a flush's.
 */
import type { ObjectStore } from '../../glidefs/object-store.js';

export class GateStore implements ObjectStore {
  readonly description = 'gate';
  private waiters: Array<() => void> = [];
  closed = true;
  arrived = 0;
  constructor(readonly inner: ObjectStore) {}
  open(): void {
    this.closed = false;
    for (const w of this.waiters.splice(0)) w();
  }
  async put(key: string, data: Uint8Array): Promise<void> {
    if (key.endsWith('/lease')) return this.inner.put(key, data);
    await this.inner.put(key, data);
    this.arrived++;
    if (this.closed) await new Promise<void>((r) => this.waiters.push(r));
  }
  async putIfAbsent(key: string, data: Uint8Array): Promise<boolean> {
    if (key.endsWith('/lease')) return this.inner.putIfAbsent(key, data);
    const created = await this.inner.putIfAbsent(key, data);
    this.arrived++;
    if (this.closed) await new Promise<void>((r) => this.waiters.push(r));
    return created;
  }
  async putIfMatch(key: string, data: Uint8Array, etag: string): Promise<string | null> {
    if (key.endsWith('/lease')) return this.inner.putIfMatch(key, data, etag);
    const tag = await this.inner.putIfMatch(key, data, etag);
    this.arrived++;
    if (this.closed) await new Promise<void>((r) => this.waiters.push(r));
    return tag;
  }
  getTagged(key: string) {
    return this.inner.getTagged(key);
  }
  head(key: string) {
    return this.inner.head(key);
  }
  get(key: string) {
    return this.inner.get(key);
  }
  delete(key: string) {
    return this.inner.delete(key);
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
  async close() {}
}
