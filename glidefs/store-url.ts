/**
 * Store URLs: which object store a URL names, and a fast reachability check.
 *
 *   s3://BUCKET[/PREFIX]    RetryStore(S3Store): endpoint, region and
 *                           credentials from the AWS SDK's environment
 *                           variables (or opts.s3)
 *   file:///ABSOLUTE/PATH   DirStore; the directory is created (mode 0700)
 *   memory://               MemoryStore (unit tests only)
 *
 * Anything else is E_BAD_URL. Credentials never go in the URL: a URL with
 * user info is refused, and the message does not repeat it.
 */
import { mkdir } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DirStore, type DirStoreOptions } from './dir-store.js';
import { GlideFsError } from './errors.js';
import { MemoryStore } from './memory-store.js';
import type { ObjectStore } from './object-store.js';
import { RetryStore, type RetryOptions } from './retry-store.js';
import { S3Store, type S3StoreOptions } from './s3-store.js';

export interface OpenStoreOptions {
  /** Extra S3Store options (endpoint, region, credentials, timeouts). */
  s3?: Omit<S3StoreOptions, 'bucket' | 'prefix'>;
  /** Retry options for s3:// stores; `false` for a bare S3Store. */
  retry?: RetryOptions | false;
  /** DirStore options for file:// stores. */
  dir?: DirStoreOptions;
}

const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** Opens the store a URL names. Throws GlideFsError E_BAD_URL for anything else. */
export async function openStore(url: string, opts: OpenStoreOptions = {}): Promise<ObjectStore> {
  const text = String(url ?? '').trim();
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(text)?.[1]?.toLowerCase();
  if (scheme === 'memory') {
    if (!/^memory:(\/\/)?$/i.test(text)) throw GlideFsError.BAD_URL(text, 'memory:// takes no path');
    return new MemoryStore();
  }
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw GlideFsError.BAD_URL(safeUrlText(text), 'not a URL');
  }
  if (u.username || u.password) {
    throw GlideFsError.BAD_URL(safeUrlText(text), 'credentials do not belong in the URL; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY');
  }
  if (scheme === 'file') {
    if (u.host !== '' && u.host !== 'localhost') {
      throw GlideFsError.BAD_URL(text, `host '${u.host}' in a file URL; write file:///absolute/path`);
    }
    if (u.search || u.hash) throw GlideFsError.BAD_URL(text, 'no query or fragment allowed');
    const path = fileURLToPath(u);
    if (!isAbsolute(path) || path === '/') throw GlideFsError.BAD_URL(text, 'need an absolute directory path');
    try {
      await mkdir(path, { recursive: true, mode: 0o700 });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw GlideFsError.ACCESS_DENIED(`cannot create store directory ${path} (${code})`, err);
      }
      throw GlideFsError.STORE(`cannot create store directory ${path}: ${code ?? (err as Error).message}`, { cause: err });
    }
    return new DirStore(path, opts.dir);
  }
  if (scheme === 's3') {
    if (u.port) throw GlideFsError.BAD_URL(text, 'no port in s3:// URLs; set the endpoint with AWS_ENDPOINT_URL_S3');
    const bucket = u.hostname;
    if (!BUCKET_RE.test(bucket) || bucket.includes('..')) {
      throw GlideFsError.BAD_URL(text, `'${bucket}' is not a valid bucket name (3-63 of a-z 0-9 . -)`);
    }
    // The URL parser would silently resolve '.' and '..' segments: refuse them as written.
    if (/^s3:\/\/[^/]*\/(.*\/)?(\.|%2e){1,2}(\/|$)/i.test(text)) {
      throw GlideFsError.BAD_URL(text, 'prefix has an empty, . or .. segment');
    }
    if (u.search || u.hash) throw GlideFsError.BAD_URL(text, 'no query or fragment allowed');
    let prefix: string;
    try {
      prefix = decodeURIComponent(u.pathname).replace(/^\/+|\/+$/g, '');
    } catch {
      throw GlideFsError.BAD_URL(text, 'bad percent-encoding in the prefix');
    }
    if (prefix.split('/').some((s) => s === '.' || s === '..' || (s === '' && prefix !== ''))) {
      throw GlideFsError.BAD_URL(text, 'prefix has an empty, . or .. segment');
    }
    const s3 = new S3Store({ ...opts.s3, bucket, prefix });
    return opts.retry === false ? s3 : new RetryStore(s3, opts.retry ?? {});
  }
  throw GlideFsError.BAD_URL(safeUrlText(text));
}

/** A store (or wrapping layer) that can check itself; wrappers expose `inner`. */
interface Probeable {
  probe?: () => Promise<void>;
  inner?: ObjectStore;
}

/**
 * Checks fast, without retries, that the store is usable: S3 endpoint
 * reachable, bucket present, credentials accepted (ListObjectsV2 of one key);
 * a directory store's root writable. Throws GlideFsError E_STORE_UNREACHABLE,
 * E_STORE_TIMEOUT, E_NO_BUCKET, E_ACCESS_DENIED, E_STORE.
 */
export async function checkStore(store: ObjectStore): Promise<void> {
  for (let s: (ObjectStore & Probeable) | undefined = store; s; s = (s as Probeable).inner) {
    if (typeof s.probe === 'function') return s.probe();
  }
  // No probe anywhere in the stack (memory store): one list step will do.
  for await (const _ of store.list('')) break;
}

/** `probe` is an alias of checkStore. */
export const probe = checkStore;

/** The URL without user info, for messages. */
function safeUrlText(text: string): string {
  return text.replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)[^/@]*@/, '$1***@');
}
