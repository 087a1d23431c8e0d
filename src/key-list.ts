/**
 * list() over a keydir: the keys of a namespace in order, from its sorted view
 * (Keydir.sortedEntries), with their revision, value size and mtime. No value is read.
 *
 * Cost per key is what a list is made of, so the loop is plain: one allocation for all the
 * key bytes of the answer (each key a view into it), byte loops instead of Buffer.copy and
 * Buffer.compare (whose argument checks cost more than 16 bytes of copying). A prefix's
 * end is found by binary search (the keys with a prefix are contiguous in key order).
 */
import type { Keydir } from './keydir.js';

export interface ListItem {
  key: Buffer;
  revision: number;
  size: number;
  mtime: number;
}

function hasPrefix(k: Keydir, e: number, prefix: Uint8Array): boolean {
  const l = prefix.length;
  if (k.keyLen[e] < l) return false;
  const a = k.arena;
  const o = k.keyOff[e];
  for (let i = 0; i < l; i++) if (a[o + i] !== prefix[i]) return false;
  return true;
}

/** First index in [lo, hi) whose key does not start with `prefix` (those that do are contiguous from lo). */
function prefixEnd(k: Keydir, arr: Uint32Array, lo: number, hi: number, prefix: Uint8Array): number {
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (hasPrefix(k, arr[mid], prefix)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Keys after `after` (exclusive), with `prefix`, at most `limit`, in key order. */
export function listKeys(k: Keydir, prefix: Uint8Array | null, after: Uint8Array | null, limit: number): ListItem[] {
  const { arr, len } = k.sortedEntries();
  let i = 0;
  if (after !== null) i = k.lowerBound(arr, len, after, true);
  let end = len;
  if (prefix !== null && prefix.length > 0) {
    i = Math.max(i, k.lowerBound(arr, len, prefix, false));
    end = prefixEnd(k, arr, i, len, prefix);
  }
  const j = limit < end - i ? i + limit : end;
  if (j <= i) return [];
  const { arena, keyOff, keyLen, revLo, revHi, vsize, mtimeLo, mtimeHi } = k;
  // key bytes: one buffer for the answer, each key a view into it
  let bytes = 0;
  for (let x = i; x < j; x++) bytes += keyLen[arr[x]];
  const keys = Buffer.allocUnsafeSlow(bytes);
  const ab = keys.buffer;
  const out: ListItem[] = new Array(j - i);
  let p = 0;
  for (let x = i; x < j; x++) {
    const e = arr[x];
    const o = keyOff[e];
    const l = keyLen[e];
    if (l <= 64) for (let b = 0; b < l; b++) keys[p + b] = arena[o + b];
    else arena.copy(keys, p, o, o + l);
    out[x - i] = { key: Buffer.from(ab, p, l), revision: revLo[e] + revHi[e] * 0x1_0000_0000, size: vsize[e],
      mtime: mtimeLo[e] + mtimeHi[e] * 0x1_0000_0000 };
    p += l;
  }
  return out;
}
