/**
 * The object store interface: the one boundary under the block layer.
 *
 * Every store (S3, a local directory, memory) and every wrapping layer
 * (retries, fault injection, counting, latency) implements this interface, as
 * s3backer's layers all implement one store. Layers are built as
 * `new XStore(inner, config)` and may be stacked in any order.
 *
 * Keys are relative, '/'-separated strings without a leading '/'. A store that
 * has a prefix (an S3 prefix, a sub-directory) adds it itself; callers never
 * see it. Objects are immutable in practice: the block layer never overwrites
 * a key with different bytes, so `put` of an existing key may simply replace it.
 */
export interface ObjectStore {
  /**
   * A human-readable name of the store, e.g. `s3://bucket/prefix` or
   * `file:///var/lib/glidekv/objects`. Never contains credentials.
   */
  readonly description: string;

  /**
   * Stores `data` under `key`, durably: when the promise resolves the object
   * can be read back by any later process. Throws on failure; a failed put may
   * or may not have stored the object (callers treat it as absent).
   */
  put(key: string, data: Uint8Array): Promise<void>;

  /** Returns the object's bytes, or null when no object has that key. */
  get(key: string): Promise<Buffer | null>;

  /** Deletes the object. Deleting a missing key is not an error. */
  delete(key: string): Promise<void>;

  /** Yields every key that starts with `prefix`, in no particular order. */
  list(prefix: string): AsyncIterable<string>;

  /** Releases connections and handles. No other method may be called after. */
  close(): Promise<void>;
}
