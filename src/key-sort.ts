/**
 * Sorting keydir entries by key bytes (for list), without a comparator call per comparison.
 *
 * The keydir keeps its keys in one arena; a sort with a JavaScript comparator costs a
 * callback per comparison (n log n of them: 3.5 million for 200,000 keys). Here each entry
 * gets the 8 key bytes at `depth` as two big-endian 32-bit words (zero-padded), the entries
 * are radix-sorted on them (LSD, 8-bit digits, passes over a digit all entries share skipped), and
 * each run of entries whose words tie is sorted the same way 8 bytes deeper while some key
 * of the run is longer than that; otherwise (or when small) by the full comparison.
 * The order is `compare`'s (bytewise, a prefix before its extensions), which decides every tie.
 */

export interface KeyArena {
  arena: Uint8Array;
  keyOff: Uint32Array;
  keyLen: Uint16Array;
}

/** Sorts arr[0, n) (entry numbers) by their keys; `compare` is the full key order (ties). */
export function sortEntriesByKey(arr: Uint32Array, n: number, k: KeyArena, compare: (a: number, b: number) => number): void {
  if (n < 2) return;
  // already in order (entries renumbered in key order, Keydir.renumberSorted): one pass, no sort
  let sorted = true;
  for (let i = 1; i < n && sorted; i++) if (compare(arr[i - 1], arr[i]) > 0) sorted = false;
  if (sorted) return;
  const tmp = new Uint32Array(n);
  const hi = new Uint32Array(n);
  const lo = new Uint32Array(n);
  const hi2 = new Uint32Array(n);
  const lo2 = new Uint32Array(n);
  sortRange(arr, 0, n, 0, k, compare, tmp, hi, lo, hi2, lo2);
}

const SMALL = 24;
const MAX_DEPTH = 1024; // keys are at most 1024 bytes in the engine; past that, the comparator decides

function sortRange(arr: Uint32Array, from: number, to: number, depth: number, k: KeyArena,
  compare: (a: number, b: number) => number, tmp: Uint32Array, hi: Uint32Array, lo: Uint32Array,
  hi2: Uint32Array, lo2: Uint32Array): void {
  const n = to - from;
  if (n <= SMALL || depth >= MAX_DEPTH) {
    insertionOrSort(arr, from, to, compare);
    return;
  }
  const { arena, keyOff, keyLen } = k;
  let longer = false;
  for (let i = from; i < to; i++) {
    const e = arr[i];
    const o = keyOff[e] + depth;
    const l = keyLen[e] - depth;
    let w0 = 0;
    let w1 = 0;
    if (l >= 8) {
      w0 = ((arena[o] << 24) | (arena[o + 1] << 16) | (arena[o + 2] << 8) | arena[o + 3]) >>> 0;
      w1 = ((arena[o + 4] << 24) | (arena[o + 5] << 16) | (arena[o + 6] << 8) | arena[o + 7]) >>> 0;
      if (l > 8) longer = true;
    } else {
      for (let j = 0; j < l; j++) {
        if (j < 4) w0 |= arena[o + j] << (24 - 8 * j);
        else w1 |= arena[o + j] << (24 - 8 * (j - 4));
      }
      w0 >>>= 0;
      w1 >>>= 0;
    }
    hi[i] = w0;
    lo[i] = w1;
  }
  // LSD radix on (hi, lo), 8-bit digits from the lowest byte of lo to the highest of hi
  const count = new Uint32Array(256);
  let src = arr, srcHi = hi, srcLo = lo, dst = tmp, dstHi = hi2, dstLo = lo2;
  for (let pass = 0; pass < 8; pass++) {
    const words = pass < 4 ? srcLo : srcHi;
    const sh = (pass & 3) * 8;
    count.fill(0);
    for (let i = from; i < to; i++) count[(words[i] >>> sh) & 0xff]++;
    if (count[(words[from] >>> sh) & 0xff] === n) continue; // every entry has this digit
    let sum = from;
    for (let d = 0; d < 256; d++) {
      const c = count[d];
      count[d] = sum;
      sum += c;
    }
    for (let i = from; i < to; i++) {
      const p = count[(words[i] >>> sh) & 0xff]++;
      dst[p] = src[i];
      dstHi[p] = srcHi[i];
      dstLo[p] = srcLo[i];
    }
    [src, dst] = [dst, src];
    [srcHi, dstHi] = [dstHi, srcHi];
    [srcLo, dstLo] = [dstLo, srcLo];
  }
  if (src !== arr) {
    arr.set(src.subarray(from, to), from);
    hi.set(srcHi.subarray(from, to), from);
    lo.set(srcLo.subarray(from, to), from);
  } else if (srcHi !== hi) {
    hi.set(srcHi.subarray(from, to), from);
    lo.set(srcLo.subarray(from, to), from);
  }
  // runs of equal words: deeper while some key goes on, else by the full comparison
  let i = from;
  while (i < to) {
    let j = i + 1;
    while (j < to && hi[j] === hi[i] && lo[j] === lo[i]) j++;
    if (j - i > 1) {
      if (longer) sortRange(arr, i, j, depth + 8, k, compare, tmp, hi, lo, hi2, lo2);
      else insertionOrSort(arr, i, j, compare);
    }
    i = j;
  }
}

function insertionOrSort(arr: Uint32Array, from: number, to: number, compare: (a: number, b: number) => number): void {
  if (to - from > SMALL) {
    arr.subarray(from, to).sort(compare);
    return;
  }
  for (let i = from + 1; i < to; i++) {
    const x = arr[i];
    let j = i - 1;
    while (j >= from && compare(arr[j], x) > 0) {
      arr[j + 1] = arr[j];
      j--;
    }
    arr[j + 1] = x;
  }
}
