/**
 * Block object keys: `<prefix>/blocks/<blockIndex hex>/<blake3-128 hex>`
 * (no leading `<prefix>/` when the prefix is empty). Keyed by offset, verified
 * by content: the last segment is the BLAKE3 hash (16-byte digest) of the
 * object's bytes.
 */
import { hash } from 'blake3';
import { GlideFsError } from './errors.js';

export const BLOCK_SIZE = 131072;

/** 32 hex digits of the 16-byte BLAKE3 digest of `data`. */
export function blockHash(data: Uint8Array): string {
  return (hash(data, { length: 16 }) as Buffer).toString('hex');
}

export function blocksPrefix(prefix: string): string {
  return prefix ? `${prefix}/blocks/` : 'blocks/';
}

export function blockKey(prefix: string, blockIndex: number, hashHex: string): string {
  return `${blocksPrefix(prefix)}${blockIndex.toString(16)}/${hashHex}`;
}

/** The hash part of a key (its last segment). */
export function keyHash(key: string): string {
  return key.slice(key.lastIndexOf('/') + 1);
}

/** Parses a block key under `prefix`; null if it is not one. */
export function parseBlockKey(prefix: string, key: string): { blockIndex: number; hash: string } | null {
  const bp = blocksPrefix(prefix);
  if (!key.startsWith(bp)) return null;
  const m = /^([0-9a-f]+)\/([0-9a-f]{32})$/.exec(key.slice(bp.length));
  if (!m) return null;
  return { blockIndex: parseInt(m[1], 16), hash: m[2] };
}

/** Normalizes a user prefix: no leading/trailing '/', no empty or dot segments. */
export function normalizePrefix(prefix: string | undefined): string {
  const p = (prefix ?? '').replace(/^\/+|\/+$/g, '');
  if (p === '') return '';
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.' || seg === '..') throw GlideFsError.INVALID(`invalid key prefix '${prefix}'`);
  }
  return p;
}
