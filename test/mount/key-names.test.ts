// Goal: the key <-> file-name mapping of the KV mount is a bijection onto valid, canonical file names.
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { keyToName, LONG_PREFIX_MAX, NAME_MAX, nameToKey, resolveLongName } from '../../mount/key-names.js';

/** A seeded PRNG so a failure replays. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0;
    s ^= s >>> 12;
    return (s >>> 0) / 2 ** 32;
  };
}

const SPECIAL = [0x00, 0x2f, 0x25, 0x2e, 0x7e, 0x41, 0x80, 0xbf, 0xc0, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xed, 0xa0, 0xf0, 0x9f, 0x98, 0x80, 0xf4, 0x90, 0xff];

function randomKey(r: () => number): Buffer {
  const kind = r();
  const len = kind < 0.1 ? 300 + Math.floor(r() * 725) : 1 + Math.floor(r() * 40);
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) {
    const c = r();
    if (c < 0.4) b[i] = SPECIAL[Math.floor(r() * SPECIAL.length)];
    else if (c < 0.8) b[i] = 0x20 + Math.floor(r() * 95);
    else b[i] = Math.floor(r() * 256);
  }
  return b;
}

function assertValidName(name: string): void {
  expect(name.length).toBeGreaterThan(0);
  expect(Buffer.byteLength(name)).toBeLessThanOrEqual(NAME_MAX);
  expect(name).not.toContain('/');
  expect(name).not.toContain('\0');
  expect(name === '.' || name === '..').toBe(false);
  // The name survives the kernel -> napi UTF-8 trip unchanged.
  expect(Buffer.from(name, 'utf8').toString('utf8')).toBe(name);
}

function roundTrip(key: Buffer): Buffer | undefined {
  const name = keyToName(key);
  const d = nameToKey(name);
  if (!d) return undefined;
  if (d.kind === 'key') return d.key;
  expect(key.subarray(0, d.prefix.length).equals(d.prefix)).toBe(true);
  return resolveLongName(name, [randomBytes(8), key, Buffer.concat([key, Buffer.of(1)])]);
}

describe('key names', () => {
  it('encodes exactly the bytes that cannot be in a file name', () => {
    expect(keyToName(Buffer.from('photos/cat.jpg'))).toBe('photos%2Fcat.jpg');
    expect(keyToName(Buffer.from('100%'))).toBe('100%25');
    expect(keyToName(Buffer.from('a\0b'))).toBe('a%00b');
    expect(keyToName(Buffer.from('.'))).toBe('%2E');
    expect(keyToName(Buffer.from('..'))).toBe('%2E%2E');
    expect(keyToName(Buffer.from('...'))).toBe('...');
    expect(keyToName(Buffer.from('.hidden'))).toBe('.hidden');
    expect(keyToName(Buffer.from('café €😀'))).toBe('café €😀');
    expect(keyToName(Buffer.of(0x61, 0xff, 0xc3))).toBe('a%FF%C3'); // not UTF-8
    expect(keyToName(Buffer.of(0xed, 0xa0, 0x80))).toBe('%ED%A0%80'); // a surrogate
    expect(keyToName(Buffer.of(0xc0, 0xaf))).toBe('%C0%AF'); // overlong '/'
    expect(keyToName(Buffer.from('line\nbreak'))).toBe('line\nbreak');
  });

  it('decodes only canonical names', () => {
    expect(nameToKey('photos%2Fcat.jpg')).toEqual({ kind: 'key', key: Buffer.from('photos/cat.jpg') });
    expect(nameToKey('%2E')).toEqual({ kind: 'key', key: Buffer.from('.') });
    for (const bad of ['%2f', '%41', 'a%2E', '%', '%4', '%zz', '100%', '%C3%A9', 'x%~abc', '']) {
      expect(nameToKey(bad), bad).toBeUndefined();
    }
  });

  it('gives keys longer than a file name a cut name with a hash, resolved among candidates', () => {
    const long = Buffer.from('k'.repeat(600));
    const name = keyToName(long);
    assertValidName(name);
    expect(name).toMatch(/^k+%~[0-9a-f]{32}$/);
    expect(name.indexOf('%~')).toBe(LONG_PREFIX_MAX);
    const sibling = Buffer.from('k'.repeat(599) + 'j');
    expect(keyToName(sibling)).not.toBe(name);
    expect(resolveLongName(name, [sibling, long])?.equals(long)).toBe(true);
    expect(resolveLongName(name, [sibling])).toBeUndefined();
    // A cut never splits an escape or a character.
    const esc = keyToName(Buffer.from('/'.repeat(200) + 'é'.repeat(100)));
    assertValidName(esc);
    expect(esc.split('%~')[0]).toMatch(/^(%2F)*é*$/);
    // 255 bytes exactly still fits; 256 does not.
    expect(keyToName(Buffer.from('a'.repeat(255)))).toBe('a'.repeat(255));
    expect(keyToName(Buffer.from('a'.repeat(256)))).toContain('%~');
  });

  it('round-trips 20,000 random keys, each to its own valid name (property)', () => {
    const r = rng(0x5eed);
    const names = new Map<string, string>();
    for (let i = 0; i < 20_000; i++) {
      const key = randomKey(r);
      const name = keyToName(key);
      assertValidName(name);
      const back = roundTrip(key);
      expect(back?.equals(key), `key ${key.toString('hex')}`).toBe(true);
      const prev = names.get(name);
      if (prev !== undefined) expect(prev, `two keys named ${name}`).toBe(key.toString('hex'));
      names.set(name, key.toString('hex'));
    }
  });

  it('accepts a random name only if it is the name of its key (property)', () => {
    const r = rng(42);
    const alphabet = ['%', '2', 'F', 'f', 'E', '0', '~', 'a', '.', 'é', 'C', '3', 'A', '9'];
    let accepted = 0;
    for (let i = 0; i < 20_000; i++) {
      let name = '';
      const len = 1 + Math.floor(r() * 12);
      for (let j = 0; j < len; j++) name += alphabet[Math.floor(r() * alphabet.length)];
      const d = nameToKey(name);
      if (d?.kind === 'key') {
        accepted++;
        expect(keyToName(d.key)).toBe(name);
      }
    }
    expect(accepted).toBeGreaterThan(100);
  });
});
