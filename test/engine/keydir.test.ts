// The packed keydir: agrees with a Map under random inserts/updates/deletes, lists in order, and stays small.
import v8 from 'node:v8';
import vm from 'node:vm';
import { expect, it } from 'vitest';
import { Keydir } from '../../src/keydir.js';

function rng(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
}

it('a key inserted when the table rehashes is in it once: removed, it is gone', () => {
  const k = new Keydir();
  const keys = Array.from({ length: 200 }, (_, i) => Buffer.from(`k${i}`));
  keys.forEach((kb, i) => k.set(kb, 1, i, 1, i, i, 0));
  for (const kb of keys) k.remove(k.find(kb));
  expect(k.size).toBe(0);
  for (const kb of keys) expect(k.find(kb), kb.toString()).toBe(-1);
});

it('matches a Map model through growth, rehash, deletes, arena compaction and sorted merges', () => {
  const k = new Keydir();
  const model = new Map<string, number>();
  const r = rng(7);
  for (let step = 0; step < 60000; step++) {
    const key = `key-${Math.floor(r() * 5000)}${'z'.repeat(Math.floor(r() * 40))}`;
    const kb = Buffer.from(key);
    const x = r();
    if (x < 0.6) {
      k.set(kb, step, step * 2, step % 1000, step, step, 0);
      model.set(key, step);
    } else {
      const e = k.find(kb);
      expect(e >= 0).toBe(model.has(key));
      if (e >= 0) {
        expect(k.revOf(e)).toBe(model.get(key));
        k.remove(e);
        model.delete(key);
      }
    }
    if (step % 5000 === 0) {
      const { arr, len } = k.sortedEntries();
      const listed = Array.from(arr.subarray(0, len), (e) => k.keyView(e).toString());
      expect(listed).toEqual([...model.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
    }
  }
  expect(k.size).toBe(model.size);
  for (const [key, rev] of model) {
    const e = k.find(Buffer.from(key));
    expect(k.revOf(e)).toBe(rev);
    expect(k.offset[e]).toBe(rev * 2);
  }
  const { arr, len } = k.sortedEntries();
  const lo = k.lowerBound(arr, len, Buffer.from('key-4'), false);
  expect(k.keyView(arr[lo]).toString() >= 'key-4').toBe(true);
  expect(lo === 0 || k.keyView(arr[lo - 1]).toString() < 'key-4').toBe(true);
});

it('holds 1M 16-byte keys in under 64 bytes per key beyond the key bytes', async () => {
  const N = 1_000_000;
  const key = Buffer.alloc(16);
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  gc();
  const before = process.memoryUsage();
  const k = new Keydir();
  for (let i = 0; i < N; i++) {
    key.writeUInt32BE(i * 2654435761 >>> 0, 0);
    key.writeUInt32BE(i, 4);
    key.writeDoubleBE(i, 8);
    k.set(key, 1 + (i & 7), i * 100, 100, i + 1, 1700000000000 + i, 0);
  }
  k.sortedEntries(); // list's sorted array counts too
  // V8 frees array buffers of collected objects lazily (on a background sweeper, slower on a
  // loaded machine): collect until the total stops falling (at least 3 rounds, at most 30)
  const used = () => process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
  for (let i = 0, prev = Infinity; i < 30; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 100));
    const now = used();
    if (i >= 2 && now > prev - 64 * 1024) break;
    prev = now;
  }
  gc();
  const after = process.memoryUsage();
  const own = (k.byteFootprint() - k.keyBytes()) / N;
  const measured = (after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers - 16 * N) / N;
  console.log(`keydir: ${own.toFixed(1)} B/key by its own count, ${measured.toFixed(1)} B/key by process.memoryUsage (beyond 16 key bytes)`);
  expect(k.size).toBe(N);
  expect(own).toBeLessThan(64);
  expect(measured).toBeLessThan(64);
  key.writeUInt32BE(12345 * 2654435761 >>> 0, 0);
  key.writeUInt32BE(12345, 4);
  key.writeDoubleBE(12345, 8);
  expect(k.offset[k.find(key)]).toBe(1234500);
});
