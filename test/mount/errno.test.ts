// Goal: every engine error code, system error and mount error maps to the errno the issue names; unknown errors are EIO.
import { describe, expect, it } from 'vitest';
import { KvError } from '../../src/errors.js';
import { errno, FsError, toErrno } from '../../mount/errno.js';

describe('errno table', () => {
  it('maps engine codes', () => {
    const cases: Array<[ConstructorParameters<typeof KvError>[0], number]> = [
      ['E_NO_NAMESPACE', -2],
      ['E_NAMESPACE_EXISTS', -17],
      ['E_NAMESPACE_NOT_EMPTY', -39],
      ['E_VALUE_TOO_LARGE', -27],
      ['E_POISONED', -30],
      ['E_CORRUPT', -5],
      ['E_IO', -5],
      ['E_INVALID_KEY', -22],
      ['E_INVALID_NAME', -22],
      ['E_TOO_MANY_NAMESPACES', -28],
    ];
    for (const [code, n] of cases) expect(toErrno(new KvError(code, 'x')), code).toBe(n);
  });

  it('maps an engine I/O error to the system error that caused it', () => {
    const enospc = Object.assign(new Error('no space'), { code: 'ENOSPC' });
    expect(toErrno(new KvError('E_IO', 'append failed: ENOSPC', { cause: enospc }))).toBe(-28);
    expect(toErrno(new KvError('E_IO', 'x', { cause: new Error('no code') }))).toBe(-5);
    // Poisoned stays EROFS whatever poisoned it: the engine must be reopened.
    expect(toErrno(new KvError('E_POISONED', 'x', { cause: enospc }))).toBe(-30);
  });

  it('maps system errors, mount errors, and anything else to EIO', () => {
    expect(toErrno(Object.assign(new Error('disk full'), { code: 'ENOSPC' }))).toBe(-28);
    expect(toErrno(new FsError('EXDEV'))).toBe(-18);
    expect(toErrno(new FsError('ENAMETOOLONG'))).toBe(-36);
    expect(toErrno(new Error('boom'))).toBe(-5);
    expect(toErrno(undefined)).toBe(-5);
    expect(toErrno({ code: 'E_SOMETHING_NEW' })).toBe(-5);
    expect(errno('ENOTSUP')).toBe(-95);
  });
});
