// Goal: lib/hash.ts is 32-bit FNV-1a exactly: the published test vectors, and the
// inode numbers the KV mount has always given (remounts and old tooling depend on them).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { fnv1a, FNV1A_OFFSET } from '../../lib/hash.js';
import { keyInode, namespaceInode } from '../../mount/inode-number.js';

const b = (s: string) => Buffer.from(s, 'utf8');

describe('fnv1a', () => {
  it('matches the FNV-1a 32-bit test vectors', () => {
    expect(fnv1a(b(''))).toBe(0x811c9dc5);
    expect(fnv1a(b('a'))).toBe(0xe40c292c);
    expect(fnv1a(b('foobar'))).toBe(0xbf9cf968);
  });

  it('hashes the given range only, and a seed continues a hash', () => {
    fc.assert(
      fc.property(fc.uint8Array(), fc.uint8Array(), fc.uint8Array(), (pre, mid, post) => {
        const all = Buffer.concat([pre, mid, post]);
        expect(fnv1a(all, pre.length, mid.length)).toBe(fnv1a(mid));
        expect(fnv1a(mid, 0, mid.length, fnv1a(pre))).toBe(fnv1a(Buffer.concat([pre, mid])));
        const h = fnv1a(all);
        expect(Number.isInteger(h) && h >= 0 && h <= 0xffffffff).toBe(true);
      }),
    );
    expect(fnv1a(b(''), 0, 0, 123)).toBe(123);
    expect(FNV1A_OFFSET).toBe(0x811c9dc5);
  });

  it('keeps the KV mount inode numbers of before the move to lib/', () => {
    expect(namespaceInode('photos')).toBe(3880382401);
    expect(namespaceInode('')).toBe(1668076372);
    expect(keyInode('photos', b('cat'))).toBe(3524985380);
    expect(keyInode('ns', Buffer.from([0, 255, 1]))).toBe(3785738942);
  });
});
