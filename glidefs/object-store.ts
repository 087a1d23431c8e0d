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
/** What `head` tells about an object. */
export interface ObjectHead {
  size: number;
  /** Last write, ms since the epoch (the store's clock). */
  modifiedAt: number;
}

/** An object's bytes and its entity tag (`getTagged`). */
export interface TaggedObject {
  data: Buffer;
  /**
   * Opaque; changes whenever the object is written with other bytes. S3: the
   * ETag (quotes included); directory: BLAKE3-128 of the bytes; memory: a
   * per-key write counter. Only meaningful to `putIfMatch` of the same store.
   */
  etag: string;
}

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

  /**
   * Conditional create: stores `body` under `key` only if no object has that
   * key, atomically with respect to every other put/putIfAbsent of the store
   * (S3 `PutObject` with `If-None-Match: *`; a directory store links a
   * fsynced temp file to the name). Resolves true when this call created the
   * object (durably, as `put`), false when the key already existed — whatever
   * its bytes; the existing object is left unchanged. Of any number of
   * concurrent calls for one key, at most one resolves true.
   *
   * Throws on failure, like `put`. A failed call may or may not have created
   * the object, so a retry after an ambiguous failure (timeout, reset) can
   * resolve false for an object the first attempt created: a caller that must
   * tell "mine" from "someone else's" reads the key back and compares bytes.
   * A concurrent conditional write that the store could not order (S3 409
   * ConditionalRequestConflict) throws a retryable GlideFsError (E_CONFLICT);
   * trying again resolves it to true or false.
   */
  putIfAbsent(key: string, body: Uint8Array): Promise<boolean>;

  /**
   * The object's size in bytes and when it was last written (ms since the
   * epoch, by the store's clock: S3 LastModified, the file's mtime), or null
   * when no object has that key. gc uses it to leave young objects alone and
   * to report sizes; it never reads the bytes.
   */
  head(key: string): Promise<ObjectHead | null>;

  /** Returns the object's bytes, or null when no object has that key. */
  get(key: string): Promise<Buffer | null>;

  /** `get` with the object's entity tag, for a later `putIfMatch`; null when no object has that key. */
  getTagged(key: string): Promise<TaggedObject | null>;

  /**
   * Conditional replace: stores `body` under `key` only if an object has that
   * key and its entity tag is `etag`, atomically with respect to every other
   * putIfMatch and putIfAbsent of the store (S3 `PutObject` with `If-Match`;
   * a directory store compares and renames under a per-key lock file).
   * Resolves the new entity tag, or null when the key is missing or its tag
   * is another (the object is left unchanged). Of concurrent calls with one
   * tag, at most one succeeds. Throws on failure like `put`; as with
   * putIfAbsent, a retried call whose first attempt landed resolves null for
   * the caller's own bytes (read back and compare to tell). S3 409
   * ConditionalRequestConflict: a retryable E_CONFLICT.
   */
  putIfMatch(key: string, body: Uint8Array, etag: string): Promise<string | null>;

  /** Deletes the object. Deleting a missing key is not an error. */
  delete(key: string): Promise<void>;

  /** Yields every key that starts with `prefix`, in no particular order. */
  list(prefix: string): AsyncIterable<string>;

  /** Releases connections and handles. No other method may be called after. */
  close(): Promise<void>;
}
