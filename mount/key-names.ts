/**
 * Key bytes <-> file names in the KV mount: a bijective, percent-encoding map.
 *
 * A key is any byte string; a file name is a UTF-8 string of 1..255 bytes
 * without `/` or NUL, and not `.` or `..`. The mapping:
 *
 *   - bytes of well-formed UTF-8 characters are kept as they are, except
 *   - `/` (0x2F), NUL (0x00) and `%` (0x25) become `%2F`, `%00`, `%25`;
 *   - a byte that is not part of a well-formed UTF-8 character (stray
 *     continuation byte, truncated sequence, overlong form, surrogate,
 *     > U+10FFFF) becomes `%XX` (two upper-case hex digits);
 *   - the keys `.` and `..` become `%2E` and `%2E%2E`;
 *   - when the result is longer than 255 bytes, it is cut (on a character or
 *     escape boundary) to at most 221 bytes and `%~` plus 32 lower-case hex
 *     digits (the first 16 bytes of SHA-256 of the whole key) is appended:
 *
 *       +---------------------------+----+----------------------------------+
 *       | encoded prefix (<= 221 B) | %~ | sha256(key)[0..16] hex (32 chars)|
 *       +---------------------------+----+----------------------------------+
 *
 *     Such a "long name" is resolved by listing the keys that start with the
 *     decoded prefix and picking the one whose name it is.
 *
 * Only the canonical form of a name decodes: `%41`, `%2f`, `%` followed by
 * anything but two upper-case hex digits (or `~` at the long-name position),
 * or `%2E` inside a longer name are not names of any key (lookups say
 * ENOENT, creates say EINVAL). So every key has exactly one name and every
 * valid name exactly one key.
 */
import { createHash } from 'node:crypto';

/** The longest file name the kernel accepts (bytes). */
export const NAME_MAX = 255;
/** Bytes of encoded prefix kept in a long name. */
export const LONG_PREFIX_MAX = NAME_MAX - 2 - 32;

const HEX = '0123456789ABCDEF';

/** Length of the well-formed UTF-8 character starting at key[i], or 0 when the byte there starts none. */
function utf8CharLength(key: Uint8Array, i: number): number {
  const b0 = key[i];
  if (b0 < 0x80) return 1;
  const cont = (j: number, lo = 0x80, hi = 0xbf) => j < key.length && key[j] >= lo && key[j] <= hi;
  if (b0 >= 0xc2 && b0 <= 0xdf) return cont(i + 1) ? 2 : 0;
  if (b0 >= 0xe0 && b0 <= 0xef) {
    const lo = b0 === 0xe0 ? 0xa0 : 0x80; // no overlongs
    const hi = b0 === 0xed ? 0x9f : 0xbf; // no surrogates
    return cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
  }
  if (b0 >= 0xf0 && b0 <= 0xf4) {
    const lo = b0 === 0xf0 ? 0x90 : 0x80;
    const hi = b0 === 0xf4 ? 0x8f : 0xbf; // <= U+10FFFF
    return cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

/** Encodes a key into tokens: each token is the name text for a run of key bytes. */
function encodeTokens(key: Uint8Array): string[] {
  const tokens: string[] = [];
  let i = 0;
  while (i < key.length) {
    const b = key[i];
    if (b === 0x00 || b === 0x2f || b === 0x25) {
      tokens.push('%' + HEX[b >> 4] + HEX[b & 15]);
      i++;
      continue;
    }
    const n = utf8CharLength(key, i);
    if (n === 0) {
      tokens.push('%' + HEX[b >> 4] + HEX[b & 15]);
      i++;
    } else {
      tokens.push(Buffer.from(key.subarray(i, i + n)).toString('utf8'));
      i += n;
    }
  }
  return tokens;
}

/** Only bytes 0x01..0x7F other than '/' and '%': the name is the key itself. */
function plainAscii(key: Uint8Array): boolean {
  for (let i = 0; i < key.length; i++) {
    const b = key[i];
    if (b === 0 || b >= 0x80 || b === 0x2f || b === 0x25) return false;
  }
  return true;
}

function keyHashHex(key: Uint8Array): string {
  return createHash('sha256').update(key).digest().subarray(0, 16).toString('hex');
}

/**
 * The file name of a key. Throws RangeError for the empty key, which has no
 * name (the engine does not accept it either).
 */
export function keyToName(key: Uint8Array): string {
  if (key.length === 0) throw new RangeError('the empty key has no file name');
  if (key.length === 1 && key[0] === 0x2e) return '%2E';
  if (key.length === 2 && key[0] === 0x2e && key[1] === 0x2e) return '%2E%2E';
  if (key.length <= NAME_MAX && plainAscii(key)) return Buffer.from(key).toString('latin1'); // the common case, fast
  const tokens = encodeTokens(key);
  const full = tokens.join('');
  if (Buffer.byteLength(full) <= NAME_MAX) return full;
  let prefix = '';
  let bytes = 0;
  for (const t of tokens) {
    const n = Buffer.byteLength(t);
    if (bytes + n > LONG_PREFIX_MAX) break;
    prefix += t;
    bytes += n;
  }
  return `${prefix}%~${keyHashHex(key)}`;
}

/** What a file name stands for. */
export type DecodedName =
  | { kind: 'key'; key: Buffer }
  /** A long name: the key starts with `prefix` and `keyToName(key) === name`. */
  | { kind: 'long'; prefix: Buffer; name: string };

/** Decodes %XX escapes and raw text; undefined when an escape is malformed. */
function decodeEscapes(text: string): Buffer | undefined {
  const raw = Buffer.from(text, 'utf8');
  const out = Buffer.allocUnsafe(raw.length);
  let o = 0;
  for (let i = 0; i < raw.length; i++) {
    const b = raw[i];
    if (b !== 0x25) {
      out[o++] = b;
      continue;
    }
    const h = HEX.indexOf(String.fromCharCode(raw[i + 1] ?? 0));
    const l = HEX.indexOf(String.fromCharCode(raw[i + 2] ?? 0));
    if (i + 2 >= raw.length || h < 0 || l < 0) return undefined;
    out[o++] = (h << 4) | l;
    i += 2;
  }
  return Buffer.from(out.subarray(0, o));
}

/**
 * The key a file name stands for, or undefined when the name is not the
 * canonical name of any key. A long name decodes to its prefix; resolve it
 * with `resolveLongName`.
 */
export function nameToKey(name: string): DecodedName | undefined {
  if (name.length === 0 || Buffer.byteLength(name) > NAME_MAX) return undefined;
  const at = name.indexOf('%~');
  if (at >= 0) {
    const hash = name.slice(at + 2);
    if (!/^[0-9a-f]{32}$/.test(hash)) return undefined;
    const prefix = decodeEscapes(name.slice(0, at));
    if (prefix === undefined) return undefined;
    return { kind: 'long', prefix, name };
  }
  const key = decodeEscapes(name);
  if (key === undefined || key.length === 0 || keyToName(key) !== name) return undefined;
  return { kind: 'key', key };
}

/**
 * Finds the key of a long name among candidate keys (those starting with the
 * decoded prefix), or undefined.
 */
export function resolveLongName(name: string, candidates: Iterable<Uint8Array>): Buffer | undefined {
  for (const k of candidates) {
    if (keyToName(k) === name) return Buffer.from(k);
  }
  return undefined;
}
