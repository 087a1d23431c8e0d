// Goal: HashLock runs holders of one key one at a time in FIFO order, never blocks other keys, and frees on throw.
import { describe, it, expect } from 'vitest';
import { HashLock } from '../../src/hash-lock.js';

const tick = () => new Promise((r) => setTimeout(r, 5));

describe('HashLock', () => {
  it('serializes one key in call order and lets other keys through', async () => {
    const lock = new HashLock();
    const log: string[] = [];
    const job = (key: string, name: string) => lock.run(key, async () => {
      log.push(`${name}+`);
      await tick();
      log.push(`${name}-`);
      return name;
    });
    const results = await Promise.all([job('a', 'a1'), job('a', 'a2'), job('b', 'b1'), job('a', 'a3')]);
    expect(results).toEqual(['a1', 'a2', 'b1', 'a3']);
    const a = log.filter((e) => e.startsWith('a'));
    expect(a).toEqual(['a1+', 'a1-', 'a2+', 'a2-', 'a3+', 'a3-']);
    expect(log.indexOf('b1+')).toBeLessThan(log.indexOf('a1-'));   // b did not wait for a
    expect(lock.size).toBe(0);
  });

  it('a throwing holder releases the key and its error reaches the caller', async () => {
    const lock = new HashLock();
    await expect(lock.run('k', async () => { throw new Error('boom'); })).rejects.toThrow('boom');
    expect(lock.isHeld('k')).toBe(false);
    expect(await lock.run('k', async () => 7)).toBe(7);
  });
});
