// Goal: KeyedLock runs holders of one key one at a time in FIFO order, never blocks
// other keys, frees on throw, and takes several keys in sorted order (no deadlock).
import { describe, it, expect } from 'vitest';
import { KeyedLock } from '../../lib/keyed-lock.js';

const tick = () => new Promise((r) => setTimeout(r, 5));

describe('KeyedLock', () => {
  it('serializes one key in call order and lets other keys through', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const job = (key: string, name: string) =>
      lock.run(key, async () => {
        log.push(`${name}+`);
        await tick();
        log.push(`${name}-`);
        return name;
      });
    const results = await Promise.all([job('a', 'a1'), job('a', 'a2'), job('b', 'b1'), job('a', 'a3')]);
    expect(results).toEqual(['a1', 'a2', 'b1', 'a3']);
    expect(log.filter((e) => e.startsWith('a'))).toEqual(['a1+', 'a1-', 'a2+', 'a2-', 'a3+', 'a3-']);
    expect(log.indexOf('b1+')).toBeLessThan(log.indexOf('a1-')); // b did not wait for a
    expect(lock.size).toBe(0);
  });

  it('a throwing holder releases the key and its error reaches the caller', async () => {
    const lock = new KeyedLock();
    await expect(
      lock.run('k', async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(lock.isHeld('k')).toBe(false);
    expect(await lock.run('k', async () => 7)).toBe(7);
  });

  it('holds several keys at once; opposite orders do not deadlock; duplicates are one key', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const job = (keys: string[], name: string) =>
      lock.run(keys, async () => {
        log.push(`${name}+`);
        await tick();
        log.push(`${name}-`);
      });
    await Promise.all([job(['x', 'y'], 'p'), job(['y', 'x'], 'q'), job(['x', 'x'], 'r'), job(['y'], 's')]);
    // Every holder ran alone (all share a key with the one before).
    for (let i = 0; i < log.length; i += 2) expect(log[i + 1]).toBe(log[i].replace('+', '-'));
    expect(log).toHaveLength(8);
    expect(lock.size).toBe(0);
  });

  it('a key is held while its holder runs and while others wait', async () => {
    const lock = new KeyedLock();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = lock.run(['a', 'b'], () => gate);
    await tick();
    expect(lock.isHeld('a') && lock.isHeld('b')).toBe(true);
    expect(lock.isHeld('c')).toBe(false);
    const second = lock.run('a', async () => 'second');
    release();
    expect(await second).toBe('second');
    await first;
    expect(lock.size).toBe(0);
  });
});
