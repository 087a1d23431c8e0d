/**
 * 32-bit FNV-1a, the one non-cryptographic hash of the project.
 *
 *   h = 0x811c9dc5; for each byte b: h ^= b; h *= 0x01000193 (mod 2^32)
 *
 * Used where a hash is stored or shown and must never change: the engine's
 * stripe locks and keydir slots (src/engine.ts, src/keydir.ts) and the KV
 * mount's inode numbers (mount/inode-number.ts). The values are a format:
 * test/lib/hash.test.ts pins them.
 *
 * `seed` continues a hash: fnv1a(b, 0, b.length, fnv1a(a)) equals the hash
 * of a followed by b.
 */
export const FNV1A_OFFSET = 0x811c9dc5;
export const FNV1A_PRIME = 0x01000193;

/** FNV-1a of bytes[off, off+len), starting from `seed`; an unsigned 32-bit integer. */
export function fnv1a(bytes: Uint8Array, off = 0, len = bytes.length - off, seed = FNV1A_OFFSET): number {
  let h = seed | 0;
  for (let i = off, end = off + len; i < end; i++) {
    h ^= bytes[i];
    h = Math.imul(h, FNV1A_PRIME);
  }
  return h >>> 0;
}
