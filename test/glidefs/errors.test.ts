// Goal: GlideFsError carries a stable code, a `CODE: msg` message, the wrapped cause, and serializes without the cause.
import { describe, expect, it } from 'vitest';
import { GlideFsError, isGlideFsError } from '../../glidefs/errors.js';

describe('GlideFsError', () => {
  it('factories set code, message prefix and flags', () => {
    const cases: Array<[GlideFsError, string, RegExp]> = [
      [GlideFsError.NO_VOLUME('v1'), 'E_NO_VOLUME', /no volume named 'v1'/],
      [GlideFsError.VOLUME_EXISTS('v1'), 'E_VOLUME_EXISTS', /already exists/],
      [GlideFsError.BAD_SIZE('size 0'), 'E_BAD_SIZE', /size 0/],
      [GlideFsError.OUT_OF_RANGE('offset 9'), 'E_OUT_OF_RANGE', /offset 9/],
      [GlideFsError.READ_ONLY('snap'), 'E_READ_ONLY', /read-only snapshot/],
      [GlideFsError.LOCKED('pid 7'), 'E_LOCKED', /pid 7/],
      [GlideFsError.CORRUPT('hash mismatch'), 'E_CORRUPT', /hash mismatch/],
      [GlideFsError.STORE_UNREACHABLE('http://127.0.0.1:1'), 'E_STORE_UNREACHABLE', /store unreachable at http:\/\/127.0.0.1:1/],
      [GlideFsError.NO_BUCKET('bk'), 'E_NO_BUCKET', /bucket 'bk' does not exist/],
      [GlideFsError.ACCESS_DENIED('denied'), 'E_ACCESS_DENIED', /denied/],
      [GlideFsError.STORE('boom'), 'E_STORE', /boom/],
      [GlideFsError.CLOSED('store x'), 'E_CLOSED', /store x is closed/],
      [GlideFsError.BAD_URL('x:y'), 'E_BAD_URL', /invalid store URL 'x:y'/],
      [GlideFsError.BAD_KEY('..', 'dots'), 'E_BAD_KEY', /dots/],
    ];
    for (const [e, code, re] of cases) {
      expect(e).toBeInstanceOf(Error);
      expect(e.name).toBe('GlideFsError');
      expect(e.code).toBe(code);
      expect(e.message.startsWith(`${code}: `)).toBe(true);
      expect(e.message).toMatch(re);
      expect(isGlideFsError(e, code)).toBe(true);
      expect(isGlideFsError(e, 'E_OTHER')).toBe(false);
    }
    expect(GlideFsError.STORE_UNREACHABLE('x').retryable).toBe(true);
    expect(GlideFsError.NO_BUCKET('x').retryable).toBe(false);
    expect(isGlideFsError(new Error('E_STORE: x'))).toBe(false);
  });

  it('keeps the cause for debugging but leaves it out of JSON', () => {
    const inner = new Error('low-level detail');
    const e = GlideFsError.CORRUPT('bad object', inner);
    expect(e.cause).toBe(inner);
    const json = JSON.parse(JSON.stringify(e));
    expect(json).toEqual({ name: 'GlideFsError', code: 'E_CORRUPT', message: 'E_CORRUPT: bad object', retryable: false, injected: false });
    expect(JSON.stringify(e)).not.toContain('low-level detail');
  });
});
