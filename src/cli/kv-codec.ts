/**
 * How `glidekv kv` turns command-line text into key bytes and key/value bytes
 * into printable JSON.
 *
 * Input: a KEY, `--prefix`, `--after` or `--key` argument is UTF-8 text by
 * default; `--key-encoding hex|base64` reads it as hex or base64 instead, so
 * any byte string can be named.
 *
 * Output (ls --json, watch, get --json): a key or value that is valid UTF-8 is
 * printed as that string; otherwise it is printed in base64 and the record
 * carries `keyEncoding: "base64"` (resp. `valueEncoding: "base64"`). A missing
 * encoding field therefore always means UTF-8.
 *
 * Names and keys are checked here against the engine's documented rules
 * before the directory is opened, so bad input is a usage error (exit 2) that
 * touches nothing; the engine checks again on its own.
 */
import { isUtf8 } from 'node:buffer';
import { validateNamespaceName } from '../index.js';
import { CliError } from './util.js';

export type KeyEncoding = 'utf8' | 'hex' | 'base64';
export const KEY_ENCODINGS: readonly KeyEncoding[] = ['utf8', 'hex', 'base64'];

/** Exit status for a command line that is wrong (same as commander's usage errors). */
export const EXIT_USAGE = 2;

export const MAX_KEY_BYTES = 1024;

/** Decodes a key-like argument; `what` names it in the error (`key`, `--prefix`). */
export function decodeKeyArg(text: string, enc: KeyEncoding, what: string): Buffer {
  if (enc === 'hex') {
    if (!/^(?:[0-9a-fA-F]{2})*$/.test(text)) throw new CliError(`${what} '${text}' is not hex (an even number of 0-9a-f digits)`, EXIT_USAGE);
    return Buffer.from(text, 'hex');
  }
  if (enc === 'base64') {
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(text) || text.replace(/=+$/, '').length % 4 === 1) {
      throw new CliError(`${what} '${text}' is not base64`, EXIT_USAGE);
    }
    return Buffer.from(text, 'base64');
  }
  return Buffer.from(text, 'utf8');
}

/** A key: 1..1024 bytes. */
export function checkKey(key: Buffer, what = 'key'): Buffer {
  if (key.length === 0) throw new CliError(`${what} is empty (a key is 1-${MAX_KEY_BYTES} bytes)`, EXIT_USAGE);
  if (key.length > MAX_KEY_BYTES) {
    throw new CliError(`${what} is ${key.length} bytes (a key is 1-${MAX_KEY_BYTES} bytes)`, EXIT_USAGE);
  }
  return key;
}

/** A namespace name, checked by the engine's own rule (1-255 bytes of UTF-8, no '/', NUL, '.', '..'). */
export function checkNamespace(name: string): string {
  try {
    return validateNamespaceName(name);
  } catch (err) {
    throw new CliError(`${(err as Error).message}: '${printable(name)}'`, EXIT_USAGE);
  }
}

/** Bytes as JSON text: the UTF-8 string when valid, else base64 and a flag. */
export function toJsonText(buf: Buffer): { text: string; base64: boolean } {
  return isUtf8(buf) ? { text: buf.toString('utf8'), base64: false } : { text: buf.toString('base64'), base64: true };
}

/** Adds `<field>` (and `<field>Encoding: 'base64'` when needed) to a JSON record. */
export function putBytes(rec: Record<string, unknown>, field: string, buf: Buffer): void {
  const { text, base64 } = toJsonText(buf);
  rec[field] = text;
  if (base64) rec[`${field}Encoding`] = 'base64';
}

/** A key for a one-line text listing: UTF-8 when valid and free of control characters, else `base64:...`. */
export function keyForText(buf: Buffer): string {
  const { text, base64 } = toJsonText(buf);
  // eslint-disable-next-line no-control-regex
  if (base64 || /[\x00-\x1f\x7f]/.test(text)) return `base64:${buf.toString('base64')}`;
  return text;
}

function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  const t = s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return t.length > 60 ? `${t.slice(0, 57)}...` : t;
}
