// Issue 9 item 1: long keys in the keydir's arena, and an index update failure is not an append failure.
import { afterEach, expect, it } from 'vitest';
import { open, KvError, type KvEngine } from '../../src/index.js';
import { Keydir } from '../../src/keydir.js';
import { rmDir, tmpDir } from './helpers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmDir(d);
});

it('keydir: a key of any accepted size fits after the arena compacts (put long, put short, delete long, put long)', () => {
  for (const len of [255, 256, 257, 1000, 1024]) {
    const k = new Keydir();
    const long = Buffer.alloc(len, 0x61);
    const short = Buffer.from('b');
    k.set(long, 1, 0, 1, 1, 1, 0);
    k.set(short, 1, 10, 1, 2, 2, 0);
    k.remove(k.find(long));
    k.set(long, 1, 20, 1, 4, 4, 0);
    expect(k.revOf(k.find(long)), `key of ${len} bytes`).toBe(4);
    expect(k.keyView(k.find(long)).equals(long)).toBe(true);
    expect(k.revOf(k.find(short))).toBe(2);
    expect(k.size).toBe(2);
  }
});

it('keydir: many long keys of mixed sizes, inserted and removed at random, stay findable', () => {
  const k = new Keydir();
  const model = new Map<string, number>();
  let seed = 11;
  const r = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let step = 0; step < 4000; step++) {
    const id = Math.floor(r() * 60);
    const key = `${id}:`.padEnd(1 + ((id * 97) % 1024), 'x');
    const kb = Buffer.from(key);
    if (r() < 0.55) {
      k.set(kb, 1, step, 1, step, step, 0);
      model.set(key, step);
    } else {
      const e = k.find(kb);
      expect(e >= 0).toBe(model.has(key));
      if (e >= 0) k.remove(e);
      model.delete(key);
    }
  }
  expect(k.size).toBe(model.size);
  for (const [key, rev] of model) expect(k.revOf(k.find(Buffer.from(key)))).toBe(rev);
});

it('engine: a 1024-byte key can be put, deleted and put again, and the engine keeps writing', async () => {
  const dir = tmpDir('longkey');
  dirs.push(dir);
  let e = await open(dir, { sync: 'always' });
  await e.createNamespace('n');
  const long = 'k'.repeat(1024);
  await e.put('n', long, 'one');
  await e.put('n', 'other', 'x');
  await e.delete('n', long);
  const r = await e.put('n', long, 'two');
  expect((await e.get('n', long))?.value.toString()).toBe('two');
  expect((await e.get('n', long))?.revision).toBe(r);
  await e.put('n', 'after', 'y'); // not poisoned
  expect(e.stats().poisoned).toBe(0);
  await e.close();
  e = await open(dir, { sync: 'always' });
  expect((await e.get('n', long))?.value.toString()).toBe('two');
  expect((await e.get('n', 'after'))?.value.toString()).toBe('y');
  await e.close();
});

it('engine: an in-memory index update that fails after a successful append is not reported as an I/O error', async () => {
  const dir = tmpDir('applyfail');
  dirs.push(dir);
  let e = await open(dir, { sync: 'always', onWarning: () => {} });
  await e.createNamespace('n');
  const st = (e as KvEngine).namespaces.get('n')!;
  const kd = st.keydir as unknown as { set: (...a: unknown[]) => number };
  const orig = kd.set;
  kd.set = () => {
    throw new RangeError('injected index failure');
  };
  const err = await e.put('n', 'k', 'v').then(() => null, (x: unknown) => x);
  kd.set = orig;
  expect(err).toBeInstanceOf(KvError);
  expect((err as KvError).code).not.toBe('E_IO');
  expect((err as KvError).message).not.toMatch(/append failed/);
  expect((err as KvError).message).toMatch(/index/);
  // writes are refused afterwards (the index no longer matches the log), with the same story
  const later = await e.put('n', 'k2', 'v').then(() => null, (x: unknown) => x);
  expect((later as KvError).code).toBe('E_POISONED');
  expect((later as KvError).message).toMatch(/index/);
  await e.close();
  // the append did happen: after a reopen the write is there
  e = await open(dir, { sync: 'always' });
  expect((await e.get('n', 'k'))?.value.toString()).toBe('v');
  await e.close();
});
