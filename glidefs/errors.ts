/**
 * GlideFsError: the one error class of the block layer.
 *
 * Every error glidefs throws on purpose carries a stable string `code` (API:
 * codes never change, messages may) and a message of the form `CODE: msg`.
 * A wrapped lower-level error (an AWS SDK error, an fs error) is kept in
 * `cause`. Messages never contain credentials: callers build them from
 * bucket names, keys and endpoints only, and S3 errors are mapped by
 * s3-store.ts before they get here.
 *
 * `retryable` tells RetryStore whether trying again may help (5xx, timeouts,
 * connection resets, throttling); `injected` marks errors made up by
 * FaultyStore so tests can tell them from real ones.
 */

export interface GlideFsErrorOptions {
  cause?: unknown;
  retryable?: boolean;
  injected?: boolean;
  /** HTTP status of the failed request, when there was one. */
  status?: number;
}

export class GlideFsError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  readonly injected: boolean;
  readonly status: number | undefined;

  constructor(code: string, msg: string, opts: GlideFsErrorOptions = {}) {
    super(`${code}: ${msg}`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'GlideFsError';
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.injected = opts.injected ?? false;
    this.status = opts.status;
  }

  /** Plain fields only (no `cause`, which may hold SDK internals). */
  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, retryable: this.retryable, injected: this.injected, status: this.status };
  }

  // --- volumes and catalog -------------------------------------------------

  /** No volume of that name. */
  static NO_VOLUME(name: string): GlideFsError {
    return new GlideFsError('E_NO_VOLUME', `no volume named '${name}'`);
  }

  static VOLUME_EXISTS(name: string): GlideFsError {
    return new GlideFsError('E_VOLUME_EXISTS', `a volume named '${name}' already exists`);
  }

  static BAD_NAME(name: string, why: string): GlideFsError {
    return new GlideFsError('E_BAD_NAME', `invalid volume name '${name}': ${why}`);
  }

  /** Volume size zero, negative, or not a whole number of blocks. */
  static BAD_SIZE(msg: string): GlideFsError {
    return new GlideFsError('E_BAD_SIZE', msg);
  }

  /** Offset/length outside the volume. */
  static OUT_OF_RANGE(msg: string): GlideFsError {
    return new GlideFsError('E_OUT_OF_RANGE', msg);
  }

  /** Write to a snapshot (read-only volume). */
  static READ_ONLY(name: string): GlideFsError {
    return new GlideFsError('E_READ_ONLY', `volume '${name}' is a read-only snapshot`);
  }

  /** Held by another opener (lock file). */
  static LOCKED(msg: string): GlideFsError {
    return new GlideFsError('E_LOCKED', msg);
  }

  /** Content does not match its hash, or a file/catalog is damaged. */
  static CORRUPT(msg: string, cause?: unknown): GlideFsError {
    return new GlideFsError('E_CORRUPT', msg, { cause });
  }

  static CLOSED(what: string): GlideFsError {
    return new GlideFsError('E_CLOSED', `${what} is closed`);
  }

  /** Misuse or bad argument not covered by a more specific code. */
  static INVALID(msg: string): GlideFsError {
    return new GlideFsError('E_INVALID', msg);
  }

  /** The volume still has children or is in use. */
  static BUSY(msg: string): GlideFsError {
    return new GlideFsError('E_BUSY', msg);
  }

  // --- object stores --------------------------------------------------------

  /** A store URL that is not one of the accepted forms. */
  static BAD_URL(url: string, why?: string): GlideFsError {
    return new GlideFsError(
      'E_BAD_URL',
      `invalid store URL '${url}'${why ? ` (${why})` : ''}: use s3://BUCKET[/PREFIX], file:///ABSOLUTE/PATH or memory://`,
    );
  }

  /** An object key that a store cannot hold (empty, absolute, `..`, ...). */
  static BAD_KEY(key: string, why: string): GlideFsError {
    return new GlideFsError('E_BAD_KEY', `invalid object key '${key}': ${why}`);
  }

  static STORE_UNREACHABLE(where: string, cause?: unknown): GlideFsError {
    return new GlideFsError('E_STORE_UNREACHABLE', `store unreachable at ${where}`, { cause, retryable: true });
  }

  static NO_BUCKET(bucket: string, cause?: unknown): GlideFsError {
    return new GlideFsError('E_NO_BUCKET', `bucket '${bucket}' does not exist`, { cause, status: 404 });
  }

  static ACCESS_DENIED(msg: string, cause?: unknown, status?: number): GlideFsError {
    return new GlideFsError('E_ACCESS_DENIED', msg, { cause, status });
  }

  /** The store took longer than the request timeout. Retryable. */
  static STORE_TIMEOUT(msg: string, cause?: unknown): GlideFsError {
    return new GlideFsError('E_STORE_TIMEOUT', msg, { cause, retryable: true });
  }

  /** Any other store failure; `retryable` says if trying again may help. */
  static STORE(msg: string, opts: GlideFsErrorOptions = {}): GlideFsError {
    return new GlideFsError('E_STORE', msg, opts);
  }

  /** A conditional create raced another one the store could not order (S3 409). Retryable. */
  static CONFLICT(msg: string, status?: number): GlideFsError {
    return new GlideFsError('E_CONFLICT', msg, { retryable: true, status });
  }

  /** The store prefix belongs to another catalog (FORMAT.md, "Store marker"). */
  static STORE_OWNED(msg: string): GlideFsError {
    return new GlideFsError('E_STORE_OWNED', msg);
  }

  /** A format (store marker, catalog) newer than this glidekv understands. */
  static VERSION(msg: string): GlideFsError {
    return new GlideFsError('E_VERSION', msg);
  }

  /** Generic I/O failure of the local cache or catalog. */
  static IO(msg: string, cause?: unknown): GlideFsError {
    return new GlideFsError('E_IO', msg, { cause });
  }
}

/** True if `err` is a GlideFsError with the given code. */
export function isGlideFsError(err: unknown, code?: string): err is GlideFsError {
  return err instanceof GlideFsError && (code === undefined || err.code === code);
}
