/**
 * Shared by the bounded-cache tests and their child process: a deterministic
 * stream of random writes (whole blocks and unaligned ranges up to two
 * blocks), the model they build, and du of a directory.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { mulberry32 } from '../../lib/prng.js';

export const BS = 131072;

export interface Op {
  offset: number;
  data: Buffer;
}

/** Write number k of stream `seed` on a volume of `volBytes`. */
export function opOf(seed: number, k: number, volBytes: number): Op {
  const r = mulberry32(seed * 7919 + k * 104729 + 1);
  const blocks = volBytes / BS;
  let offset: number;
  let len: number;
  if (r() < 0.4) {
    offset = Math.floor(r() * blocks) * BS;
    len = Math.min((r() < 0.3 ? 2 : 1) * BS, volBytes - offset);
  } else {
    offset = Math.floor(r() * (volBytes - 1));
    len = Math.min(1 + Math.floor(r() * 2 * BS), volBytes - offset);
  }
  const data = Buffer.allocUnsafe(len);
  let i = 0;
  for (; i + 4 <= len; i += 4) data.writeUInt32LE(Math.floor(r() * 0x100000000), i);
  for (; i < len; i++) data[i] = Math.floor(r() * 256);
  return { offset, data };
}

export function apply(model: Buffer, op: Op): void {
  op.data.copy(model, op.offset);
}

/** Bytes allocated on disk by everything under `dir` (st_blocks * 512, like du). */
export function duBytes(dir: string): number {
  let n = 0;
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of entries) {
    const p = join(dir, name);
    let st;
    try {
      st = statSync(p);
    } catch {
      continue; // a temp file renamed meanwhile
    }
    n += st.isDirectory() ? duBytes(p) : st.blocks * 512;
  }
  return n;
}

/** The bound the cache directory must stay within: the cache size, one block, and the slot table (rounded to 4 KiB). */
export function allowedBytes(cacheSize: number): number {
  const slots = Math.floor(cacheSize / BS);
  const table = Math.ceil((64 + 8 * slots) / 4096) * 4096;
  return cacheSize + BS + table;
}
