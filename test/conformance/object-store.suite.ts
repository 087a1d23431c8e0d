// Goal: every ObjectStore implementation keeps the one contract of glidefs/object-store.ts.
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ObjectStore } from '../../glidefs/object-store.js';

export interface StoreFixture {
  store: ObjectStore;
  /** Removes whatever the fixture made (temp dirs); the store is already closed. */
  cleanup?: () => Promise<void>;
}

export interface SuiteOptions {
  /** Keys for the pagination case (S3 lists 1000 per page). 0 skips the case. */
  manyKeys?: number;
}

async function collect(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const k of it) out.push(k);
  return out.sort();
}

async function inParallel<T>(items: T[], limit: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]);
  });
  await Promise.all(workers);
}

export function objectStoreSuite(name: string, factory: () => Promise<StoreFixture>, opts: SuiteOptions = {}): void {
  describe(`ObjectStore conformance: ${name}`, () => {
    let fx: StoreFixture;
    let closed = false;
    beforeEach(async () => {
      fx = await factory();
      closed = false;
    });
    afterEach(async () => {
      if (!closed) await fx.store.close();
      await fx.cleanup?.();
    });

    it('put then get returns the same bytes', async () => {
      await fx.store.put('a/b/c', Buffer.from('hello'));
      const got = await fx.store.get('a/b/c');
      expect(got).toBeInstanceOf(Buffer);
      expect(got!.toString()).toBe('hello');
    });

    it('keeps binary data exactly: every byte value, a 128 KiB random block, an empty object', async () => {
      const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const block = randomBytes(131072);
      await fx.store.put('bin/all', all);
      await fx.store.put('bin/block', new Uint8Array(block.buffer, block.byteOffset, block.byteLength));
      await fx.store.put('bin/empty', new Uint8Array(0));
      expect((await fx.store.get('bin/all'))!.equals(all)).toBe(true);
      expect((await fx.store.get('bin/block'))!.equals(block)).toBe(true);
      const empty = await fx.store.get('bin/empty');
      expect(empty).not.toBeNull();
      expect(empty!.length).toBe(0);
    });

    it('stores a copy: changing the caller\'s buffer after put changes nothing', async () => {
      const data = Buffer.from('original');
      await fx.store.put('copy', data);
      data.fill(0x58);
      expect((await fx.store.get('copy'))!.toString()).toBe('original');
    });

    it('a missing key reads as null', async () => {
      expect(await fx.store.get('no/such/key')).toBeNull();
      await fx.store.put('present', Buffer.from('x'));
      expect(await fx.store.get('presen')).toBeNull();
      expect(await fx.store.get('present/below')).toBeNull();
    });

    it('put of an existing key replaces it', async () => {
      await fx.store.put('k', Buffer.from('one'));
      await fx.store.put('k', Buffer.from('two, longer'));
      expect((await fx.store.get('k'))!.toString()).toBe('two, longer');
    });

    it('delete removes the object; deleting a missing key is fine', async () => {
      await fx.store.put('d/x', Buffer.from('1'));
      await fx.store.put('d/y', Buffer.from('2'));
      await fx.store.delete('d/x');
      expect(await fx.store.get('d/x')).toBeNull();
      expect((await fx.store.get('d/y'))!.toString()).toBe('2');
      await fx.store.delete('d/x');
      await fx.store.delete('never/was/here');
      expect(await collect(fx.store.list('d/'))).toEqual(['d/y']);
    });

    it('list yields exactly the keys with the prefix, each once', async () => {
      const keys = ['blocks/0/aa', 'blocks/0/bb', 'blocks/1/cc', 'blocks/10/dd', 'blocksx', 'other/1', 'top'];
      for (const k of keys) await fx.store.put(k, Buffer.from(k));
      expect(await collect(fx.store.list(''))).toEqual([...keys].sort());
      expect(await collect(fx.store.list('blocks/'))).toEqual(['blocks/0/aa', 'blocks/0/bb', 'blocks/1/cc', 'blocks/10/dd']);
      expect(await collect(fx.store.list('blocks'))).toEqual(['blocks/0/aa', 'blocks/0/bb', 'blocks/1/cc', 'blocks/10/dd', 'blocksx']);
      expect(await collect(fx.store.list('blocks/1'))).toEqual(['blocks/1/cc', 'blocks/10/dd']);
      expect(await collect(fx.store.list('blocks/1/'))).toEqual(['blocks/1/cc']);
      expect(await collect(fx.store.list('blocks/0/a'))).toEqual(['blocks/0/aa']);
      expect(await collect(fx.store.list('nothing/'))).toEqual([]);
      await fx.store.delete('blocks/1/cc');
      expect(await collect(fx.store.list('blocks/1'))).toEqual(['blocks/10/dd']);
    });

    it('concurrent puts of different keys all land', async () => {
      const keys = Array.from({ length: 64 }, (_, i) => `par/${i % 8}/${i}`);
      await Promise.all(keys.map((k) => fx.store.put(k, Buffer.from(k))));
      expect(await collect(fx.store.list('par/'))).toEqual([...keys].sort());
      for (const k of keys) expect((await fx.store.get(k))!.toString()).toBe(k);
    });

    if (opts.manyKeys) {
      const n = opts.manyKeys;
      it(`lists all ${n} keys under a prefix (more than one page)`, async () => {
        const keys = Array.from({ length: n }, (_, i) => `many/${i.toString(16).padStart(4, '0')}`);
        await inParallel(keys, 32, (k) => fx.store.put(k, Buffer.from([1])));
        await fx.store.put('manyx', Buffer.from([1]));
        const listed = await collect(fx.store.list('many/'));
        expect(listed.length).toBe(n);
        expect(listed).toEqual(keys);
      });
    }

    it('every operation fails after close', async () => {
      await fx.store.put('c', Buffer.from('1'));
      await fx.store.close();
      closed = true;
      await expect(fx.store.put('c2', Buffer.from('1'))).rejects.toThrow(/E_CLOSED/);
      await expect(fx.store.get('c')).rejects.toThrow(/E_CLOSED/);
      await expect(fx.store.delete('c')).rejects.toThrow(/E_CLOSED/);
      await expect(collect(fx.store.list(''))).rejects.toThrow(/E_CLOSED/);
    });

    it('has a description without credentials', () => {
      expect(typeof fx.store.description).toBe('string');
      expect(fx.store.description.length).toBeGreaterThan(0);
      for (const name of ['AWS_SECRET_ACCESS_KEY', 'AWS_ACCESS_KEY_ID']) {
        const v = process.env[name];
        if (v) expect(fx.store.description).not.toContain(v);
      }
    });
  });
}
