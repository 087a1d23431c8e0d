// KvError: the engine's one error class. `code` is a stable string, the message is `CODE: msg`.

export type KvErrorCode =
  | 'E_CAS_MISMATCH'
  | 'E_NO_NAMESPACE'
  | 'E_NAMESPACE_EXISTS'
  | 'E_NAMESPACE_NOT_EMPTY'
  | 'E_TOO_MANY_NAMESPACES'
  | 'E_INVALID_NAME'
  | 'E_INVALID_KEY'
  | 'E_INVALID_ARGUMENT'
  | 'E_VALUE_TOO_LARGE'
  | 'E_LOCKED'
  | 'E_POISONED'
  | 'E_CORRUPT'
  /** A file of another format version (meta.json, a segment footer): refused before anything is changed. */
  | 'E_VERSION'
  | 'E_COMPACTED'
  /** The revision counter reached MAX_REVISION (2^48 - 1): no further write is taken (see FORMAT.md). */
  | 'E_REVISION_LIMIT'
  | 'E_LAGGED'
  | 'E_TOO_MANY_WATCHERS'
  | 'E_CLOSED'
  | 'E_IO';

export class KvError extends Error {
  readonly code: KvErrorCode;
  /** E_CAS_MISMATCH: the key's current revision (0 = absent). */
  currentRevision?: number;
  /** E_LOCKED: the pid holding the lock. */
  pid?: number;
  /** E_COMPACTED: the oldest revision still replayable. */
  compactRevision?: number;

  constructor(code: KvErrorCode, msg: string, opts?: { cause?: unknown }) {
    super(`${code}: ${msg}`, opts?.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'KvError';
    this.code = code;
  }

  static casMismatch(expected: number, current: number): KvError {
    const e = new KvError('E_CAS_MISMATCH', `expected revision ${expected}, current revision is ${current}`);
    e.currentRevision = current;
    return e;
  }

  static locked(dir: string, pid: number): KvError {
    const e = new KvError('E_LOCKED', `${dir} is locked by pid ${pid}`);
    e.pid = pid;
    return e;
  }

  static compacted(from: number, oldest: number): KvError {
    const e = new KvError('E_COMPACTED', `revision ${from} has been reclaimed; oldest replayable revision is ${oldest}`);
    e.compactRevision = oldest;
    return e;
  }
}

export function isKvError(e: unknown, code?: KvErrorCode): e is KvError {
  return e instanceof KvError && (code === undefined || e.code === code);
}
