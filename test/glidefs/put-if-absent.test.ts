// putIfAbsent through the wrapping layers: CountingStore counts each one as a PUT request
// (created or refused, as MinIO does) and the refused ones apart; FaultyStore injects faults
// into it like a put, and a timed-out one may have created the object, so a retry can
// answer false for the caller's own bytes (the contract in object-store.ts).
import { expect, it } from 'vitest';
import { CountingStore } from '../../glidefs/counting-store.js';
import { FaultyStore } from '../../glidefs/faulty-store.js';
import { MemoryStore } from '../../glidefs/memory-store.js';

it('CountingStore counts putIfAbsent as PUTs and the refused ones apart', async () => {
  const s = new CountingStore(new MemoryStore());
  expect(await s.putIfAbsent('k', Buffer.alloc(10))).toBe(true);
  expect(await s.putIfAbsent('k', Buffer.alloc(7))).toBe(false);
  await s.put('j', Buffer.alloc(3));
  expect(s.stats()).toMatchObject({ puts: 3, putBytes: 20, putsRefused: 1, errors: 0 });
  await s.close();
  await expect(s.putIfAbsent('x', Buffer.alloc(1))).rejects.toMatchObject({ code: 'E_CLOSED' });
  expect(s.stats().errors).toBe(1);
});

it('FaultyStore: injected errors change nothing; injected timeouts sometimes created the object', async () => {
  const inner = new MemoryStore();
  const s = new FaultyStore(inner, { seed: 7, timeoutProbability: 0.5, putErrorProbability: 0.3, timeoutMs: 1 });
  let createdByTimeout = 0;
  let failedClean = 0;
  for (let i = 0; i < 60; i++) {
    const key = `k${i}`;
    try {
      expect(await s.putIfAbsent(key, Buffer.from(key))).toBe(true);
    } catch (err) {
      expect((err as { injected?: boolean }).injected).toBe(true);
      const there = await inner.get(key);
      if ((err as { code?: string }).code === 'E_STORE_TIMEOUT' && there) {
        createdByTimeout++;
        expect(there.toString()).toBe(key);
        expect(await inner.putIfAbsent(key, Buffer.from('retry'))).toBe(false); // a retry says "exists"
      } else {
        expect(there).toBeNull();
        failedClean++;
      }
    }
  }
  expect(createdByTimeout).toBeGreaterThan(0);
  expect(failedClean).toBeGreaterThan(0);
});
