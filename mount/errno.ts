/**
 * The one table from errors to errno for both FUSE mounts (KV and device).
 *
 * FUSE handlers answer with a negative errno. Engine errors (KvError codes),
 * block-layer errors (GlideFsError codes), Node's own system errors
 * (`err.code` such as 'ENOSPC' from a spill file) and the mount's own
 * `FsError` all go through `toErrno` (mount/fuse.ts calls it for every
 * failed operation); anything else is EIO, so an unexpected failure never
 * looks like success.
 */
import { constants } from 'node:os';

export type ErrnoName = keyof typeof constants.errno;

/** The negative errno for a name, as FUSE handlers return it (`errno('ENOENT') === -2`). */
export function errno(name: ErrnoName): number {
  return -constants.errno[name];
}

/** An error the mount raises itself, carrying its errno. */
export class FsError extends Error {
  readonly code: ErrnoName;
  constructor(code: ErrnoName, msg?: string) {
    super(msg ? `${code}: ${msg}` : code);
    this.name = 'FsError';
    this.code = code;
  }
}

/** KvError / GlideFsError code -> errno name. Codes not listed map to EIO. */
export const CODE_ERRNO: Readonly<Record<string, ErrnoName>> = {
  // The block layer (glidefs): a write to a snapshot, an access past the volume's end.
  E_READ_ONLY: 'EROFS',
  E_OUT_OF_RANGE: 'ENOSPC',
  // The engine (src/errors.ts); E_LOCKED, E_CORRUPT, E_IO and E_CLOSED are codes of both layers.

  E_NO_NAMESPACE: 'ENOENT',
  E_NAMESPACE_EXISTS: 'EEXIST',
  E_NAMESPACE_NOT_EMPTY: 'ENOTEMPTY',
  E_TOO_MANY_NAMESPACES: 'ENOSPC',
  E_INVALID_NAME: 'EINVAL',
  E_INVALID_KEY: 'EINVAL',
  E_INVALID_ARGUMENT: 'EINVAL',
  E_VALUE_TOO_LARGE: 'EFBIG',
  E_CAS_MISMATCH: 'EAGAIN',
  E_LOCKED: 'EBUSY',
  // The engine refuses writes after a failed fsync: the mount is as good as read-only.
  E_POISONED: 'EROFS',
  E_CORRUPT: 'EIO',
  E_IO: 'EIO',
  E_CLOSED: 'ENOTCONN',
  E_COMPACTED: 'EIO',
  E_LAGGED: 'EIO',
  E_TOO_MANY_WATCHERS: 'EMFILE',
};

/** The negative errno for any thrown value. */
export function toErrno(err: unknown): number {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    if (err instanceof FsError) return errno(err.code);
    // An engine I/O error carries the system error that caused it (ENOSPC, EDQUOT, EIO...).
    if (code === 'E_IO') {
      const cause = (err as { cause?: { code?: unknown } }).cause?.code;
      if (typeof cause === 'string' && cause in constants.errno) return errno(cause as ErrnoName);
    }
    const mapped = CODE_ERRNO[code];
    if (mapped) return errno(mapped);
    if (code in constants.errno) return errno(code as ErrnoName);
  }
  return errno('EIO');
}

/** Any thrown value as an FsError with the same errno (to keep and throw again later). */
export function asFsError(err: unknown): FsError {
  if (err instanceof FsError) return err;
  const n = -toErrno(err);
  const name = (Object.keys(constants.errno) as ErrnoName[]).find((k) => constants.errno[k] === n) ?? 'EIO';
  return new FsError(name, err instanceof Error ? err.message : String(err));
}
