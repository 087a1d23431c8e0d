/**
 * Workload pieces shared by the engine benchmark's jobs: keys, values, a
 * bounded-concurrency op runner with a time cap, progress messages to the
 * parent, and dropping the page cache.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Key i: 16 bytes, 'k' + 15 hex digits of a bijective 32-bit scramble of i (random order, unique). */
export function keyOf(i: number): Buffer {
  return Buffer.from('k' + (Math.imul(i, 0x9e3779b1) >>> 0).toString(16).padStart(15, '0'), 'latin1');
}

const BASE = randomBytes(8 * 1024 * 1024);

/** A value of `size` bytes, distinct per (i, salt): random bytes with i and salt stamped in front. */
export function valueOf(i: number, size: number, salt = 0): Buffer {
  const v = Buffer.allocUnsafe(size);
  for (let off = 0; off < size; off += BASE.length) BASE.copy(v, off, 0, Math.min(BASE.length, size - off));
  if (size >= 8) {
    v.writeUInt32LE(i >>> 0, 0);
    v.writeUInt32LE(salt >>> 0, 4);
  }
  return v;
}

/** Sends a progress update to the parent (it draws the bar); throttled. */
let lastSent = 0;
export function progress(label: string, done: number, total: number, force = false): void {
  const now = Date.now();
  if (!force && now - lastSent < 150 && done < total) return;
  lastSent = now;
  process.send?.({ progress: { label, done, total } });
}

/**
 * Runs op(0..total-1) with `concurrency` workers until all are done or
 * `capMs` has passed; returns how many completed and the elapsed time.
 */
export async function runOps(
  label: string,
  total: number,
  concurrency: number,
  capMs: number,
  op: (i: number) => Promise<unknown>,
): Promise<{ done: number; ms: number; opsPerSec: number }> {
  let next = 0;
  let done = 0;
  const t0 = performance.now();
  const deadline = t0 + capMs;
  progress(label, 0, total, true);
  const worker = async (): Promise<void> => {
    while (next < total && performance.now() < deadline) {
      const i = next++;
      await op(i);
      done++;
      progress(label, done, total);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, worker));
  const ms = performance.now() - t0;
  progress(label, total, total, true);
  return { done, ms, opsPerSec: done / (ms / 1000) };
}

/**
 * Makes `dir`'s files clean (fsync each: a global sync(1) can stall for
 * minutes behind other processes' writes) and drops the page cache (needs
 * root). Returns false if not permitted.
 */
export function dropCaches(dir: string): boolean {
  try {
    fsyncTree(dir);
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

function fsyncTree(dir: string): void {
  for (const ent of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) fsyncTree(p);
    else if (ent.isFile()) {
      const fd = openSync(p, 'r');
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
  }
}

/** A deterministic pseudo-random sequence (xorshift32), so every system reads the same keys. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}
