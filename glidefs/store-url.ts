/**
 * Store URLs: which object store a URL names, and a fast reachability check.
 *
 *   s3://BUCKET[/PREFIX]    RetryStore(S3Store): endpoint, region and
 *                           credentials from the AWS SDK's environment
 *                           variables (or opts.s3); failing requests are
 *                           retried for DEFAULT_STORE_RETRY_TIMEOUT_MS (60 s)
 *                           unless opts.retry says otherwise
 *   file:///ABSOLUTE/PATH   DirStore; the directory is created (mode 0700);
 *                           also file://localhost/ABSOLUTE/PATH
 *   memory://               MemoryStore (unit tests only)
 *
 * Anything else is E_BAD_URL, refused before anything is created: an empty
 * URL, no scheme, an unknown scheme, `file:relative` or `file:/x` (no `//`:
 * the URL parser would make them absolute paths at /), a file URL with a
 * host, an encoded '/' or a NUL, '.', '..' or empty path segments (the parser
 * would resolve them silently), an s3 URL without a valid bucket (S3's rules:
 * 3-63 of a-z 0-9 . -, not an IP address), with a port, query or fragment.
 * An S3 endpoint (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / opts.s3.endpoint)
 * must be an http(s) URL of a host; any host is allowed (tests only ever use
 * 127.0.0.1). Credentials never go in a URL: a URL with user info is refused,
 * and no message repeats user info, a query or a fragment (safeUrlText).
 */
import { mkdir } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DirStore, type DirStoreOptions } from './dir-store.js';
import { GlideFsError } from './errors.js';
import { MemoryStore } from './memory-store.js';
import type { ObjectStore } from './object-store.js';
import { DEFAULT_STORE_RETRY_TIMEOUT_MS, RetryStore, type RetryOptions } from './retry-store.js';
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
  const text = typeof url === 'string' ? url.trim() : '';
  // Every message names the URL as `shown`: without user info, query or fragment.
  const shown = safeUrlText(text);
  if (text === '') throw GlideFsError.BAD_URL('', 'empty; leave the option out to use the default store');
  if (/[\u0000-\u001f\u007f\s]/.test(text)) throw GlideFsError.BAD_URL(shown, 'contains spaces or control characters (percent-encode them)');
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(text)?.[1]?.toLowerCase();
  if (scheme === undefined) throw GlideFsError.BAD_URL(shown, 'not a URL (no scheme)');
  if (/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*@/.test(text) || /^[a-zA-Z][a-zA-Z0-9+.-]*:[^/]*@/.test(text)) {
    throw GlideFsError.BAD_URL(shown, 'credentials do not belong in the URL; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY');
  }
  if (/[?#]/.test(text)) throw GlideFsError.BAD_URL(shown, 'no query or fragment allowed');
  if (scheme === 'memory') {
    if (!/^memory:(\/\/)?$/i.test(text)) throw GlideFsError.BAD_URL(shown, 'memory:// takes no path');
    return new MemoryStore();
  }
  if (scheme !== 'file' && scheme !== 's3') throw GlideFsError.BAD_URL(shown, `unknown scheme '${scheme}:'`);
  // Both schemes are written with '//': 'file:relative/x' would otherwise
  // name /relative/x at the filesystem root, and 's3:bucket' no bucket at all.
  if (!/^[a-zA-Z0-9+.-]+:\/\//.test(text)) {
    throw GlideFsError.BAD_URL(shown, scheme === 'file' ? 'a file URL is file:///absolute/path (three slashes)' : 'an s3 URL is s3://BUCKET[/PREFIX]');
  }
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw GlideFsError.BAD_URL(shown, 'not a URL');
  }
  // The URL parser silently resolves '.' and '..' segments and drops empty
  // ones' meaning: refuse them as written (also percent-encoded).
  const pathText = text.replace(/^[a-zA-Z0-9+.-]+:\/\/[^/]*/, '');
  if (pathText.split('/').slice(1).some((seg, i, all) => /^(\.|%2e){1,2}$/i.test(seg) || (seg === '' && i < all.length - 1))) {
    throw GlideFsError.BAD_URL(shown, 'path has an empty, . or .. segment');
  }
  if (scheme === 'file') {
    if (u.host !== '' && u.host !== 'localhost') {
      throw GlideFsError.BAD_URL(shown, `host '${u.host}' in a file URL; write file:///absolute/path`);
    }
    let path: string;
    try {
      path = fileURLToPath(u);
    } catch {
      throw GlideFsError.BAD_URL(shown, 'the path holds an encoded / or bad percent-encoding');
    }
    if (path.includes('\0')) throw GlideFsError.BAD_URL(shown, 'the path holds a NUL byte');
    if (!isAbsolute(path) || path === '/') throw GlideFsError.BAD_URL(shown, 'need an absolute directory path other than /');
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
  // s3://BUCKET[/PREFIX]
  const bucket = /^s3:\/\/([^/]*)/i.exec(text)![1];
  if (bucket === '') throw GlideFsError.BAD_URL(shown, 'no bucket: write s3://BUCKET[/PREFIX]');
  if (bucket.includes(':')) throw GlideFsError.BAD_URL(shown, 'no port in s3:// URLs; set the endpoint with AWS_ENDPOINT_URL_S3');
  if (!BUCKET_RE.test(bucket) || bucket.includes('..') || /^\d+\.\d+\.\d+\.\d+$/.test(bucket)) {
    throw GlideFsError.BAD_URL(shown, `'${bucket}' is not a valid bucket name (3-63 of a-z 0-9 . -, not an IP address)`);
  }
  let prefix: string;
  try {
    prefix = decodeURIComponent(u.pathname).replace(/^\/+|\/+$/g, '');
  } catch {
    throw GlideFsError.BAD_URL(shown, 'bad percent-encoding in the prefix');
  }
  if (prefix.split('/').some((s) => s === '.' || s === '..' || (s === '' && prefix !== ''))) {
    throw GlideFsError.BAD_URL(shown, 'prefix has an empty, . or .. segment');
  }
  const endpoint = opts.s3?.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
  if (endpoint !== undefined) checkEndpoint(endpoint, opts.s3?.endpoint !== undefined ? 'the endpoint' : process.env.AWS_ENDPOINT_URL_S3 !== undefined ? 'AWS_ENDPOINT_URL_S3' : 'AWS_ENDPOINT_URL');
  const s3 = new S3Store({ ...opts.s3, bucket, prefix });
  return opts.retry === false ? s3 : new RetryStore(s3, { timeoutMs: DEFAULT_STORE_RETRY_TIMEOUT_MS, ...opts.retry });
}

/**
 * An S3 endpoint must be an http(s) URL of a host (any host: a user may
 * point at a remote S3; the tests only ever use 127.0.0.1), without user
 * info, query or fragment. Throws E_BAD_URL naming `where`, never the text
 * of user info.
 */
function checkEndpoint(endpoint: string, where: string): void {
  let u: URL | undefined;
  try {
    u = new URL(endpoint);
  } catch {
    u = undefined;
  }
  const bad = (why: string) =>
    new GlideFsError('E_BAD_URL', `invalid S3 endpoint '${safeUrlText(endpoint)}' in ${where} (${why}): use http(s)://HOST[:PORT]`);
  if (!u) throw bad('not a URL');
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw bad(`scheme '${u.protocol}'`);
  if (u.username || u.password) throw bad('credentials do not belong in the URL');
  if (u.hostname === '') throw bad('no host');
  if (u.search || u.hash) throw bad('no query or fragment allowed');
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

/**
 * The URL as messages show it: user info replaced by `***`, query and
 * fragment dropped (`?...`), so that nothing secret a user put into a URL is
 * ever repeated.
 */
export function safeUrlText(text: string): string {
  return text
    .replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)[^/?#]*@/, '$1***@')
    .replace(/^[^/?#]*@/, '***@')
    .replace(/[?#].*$/s, '?...')
    .replace(/[\u0000-\u001f\u007f]/g, '?');
}
