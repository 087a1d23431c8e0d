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

    it('head tells size and last write time of an object, null for a missing key', async () => {
      const before = Date.now();
      await fx.store.put('h/a', Buffer.alloc(1234, 7));
      await fx.store.putIfAbsent('h/b', new Uint8Array(0));
      const a = await fx.store.head('h/a');
      expect(a?.size).toBe(1234);
      // the store's clock (S3 LastModified has 1 s resolution): within a minute of ours
      expect(Math.abs(a!.modifiedAt - before)).toBeLessThan(60_000);
      expect((await fx.store.head('h/b'))?.size).toBe(0);
      expect(await fx.store.head('h/none')).toBeNull();
      expect(await fx.store.head('h')).toBeNull(); // a "directory" of keys is no object
      await fx.store.delete('h/a');
      expect(await fx.store.head('h/a')).toBeNull();
    });

    it('putIfAbsent creates a missing key (true) and never replaces an existing one (false)', async () => {
      const body = randomBytes(4096);
      expect(await fx.store.putIfAbsent('cond/a', body)).toBe(true);
      expect((await fx.store.get('cond/a'))!.equals(body)).toBe(true);
      expect(await fx.store.putIfAbsent('cond/a', Buffer.from('other bytes'))).toBe(false);
      expect(await fx.store.putIfAbsent('cond/a', body)).toBe(false); // the same bytes too
      expect((await fx.store.get('cond/a'))!.equals(body)).toBe(true);
      // a key written by a plain put counts as existing
      await fx.store.put('cond/b', Buffer.from('plain'));
      expect(await fx.store.putIfAbsent('cond/b', Buffer.from('cond'))).toBe(false);
      expect((await fx.store.get('cond/b'))!.toString()).toBe('plain');
      // an empty body is an object; after a delete the key can be created again
      expect(await fx.store.putIfAbsent('cond/empty', new Uint8Array(0))).toBe(true);
      expect((await fx.store.get('cond/empty'))!.length).toBe(0);
      await fx.store.delete('cond/a');
      expect(await fx.store.putIfAbsent('cond/a', Buffer.from('again'))).toBe(true);
      expect((await fx.store.get('cond/a'))!.toString()).toBe('again');
      expect(await collect(fx.store.list('cond/'))).toEqual(['cond/a', 'cond/b', 'cond/empty']);
    });

    it('putIfAbsent stores a copy of the caller\'s buffer', async () => {
      const data = Buffer.from('original');
      expect(await fx.store.putIfAbsent('cond/copy', data)).toBe(true);
      data.fill(0x58);
      expect((await fx.store.get('cond/copy'))!.toString()).toBe('original');
    });

    it('concurrent putIfAbsent of one key: exactly one creates it, and its bytes are the ones stored', async () => {
      for (let round = 0; round < 3; round++) {
        const key = `race/${round}`;
        const bodies = Array.from({ length: 12 }, (_, i) => Buffer.from(`writer ${i} of round ${round} `.repeat(50 + i)));
        // E_CONFLICT (S3 409: a concurrent conditional write the store could not order) is retryable
        const results = await Promise.all(
          bodies.map(async (b) => {
            for (;;) {
              try {
                return await fx.store.putIfAbsent(key, b);
              } catch (err) {
                if ((err as { code?: string }).code !== 'E_CONFLICT') throw err;
                await new Promise((r) => setTimeout(r, 10));
              }
            }
          }),
        );
        expect(results.filter((x) => x).length, `round ${round}`).toBe(1);
        const winner = bodies[results.indexOf(true)];
        expect((await fx.store.get(key))!.equals(winner)).toBe(true);
      }
      expect(await collect(fx.store.list('race/'))).toEqual(['race/0', 'race/1', 'race/2']);
    });

    it('getTagged returns the bytes and a tag; putIfMatch replaces only under the current tag', async () => {
      expect(await fx.store.getTagged('cas/none')).toBeNull();
      expect(await fx.store.putIfMatch('cas/none', Buffer.from('x'), '"abc"')).toBeNull(); // no object: nothing to match
      expect(await fx.store.get('cas/none')).toBeNull();
      await fx.store.put('cas/a', Buffer.from('one'));
      const t1 = (await fx.store.getTagged('cas/a'))!;
      expect(t1.data.toString()).toBe('one');
      expect(typeof t1.etag).toBe('string');
      const t2 = await fx.store.putIfMatch('cas/a', Buffer.from('two'), t1.etag);
      expect(t2).not.toBeNull();
      expect(t2).not.toBe(t1.etag);
      const now = (await fx.store.getTagged('cas/a'))!;
      expect(now.data.toString()).toBe('two');
      expect(now.etag).toBe(t2);
      // the old tag is refused, the object unchanged
      expect(await fx.store.putIfMatch('cas/a', Buffer.from('three'), t1.etag)).toBeNull();
      expect(await fx.store.putIfMatch('cas/a', Buffer.from('three'), 'not-a-tag')).toBeNull();
      expect((await fx.store.get('cas/a'))!.toString()).toBe('two');
      // a plain put with other bytes changes the tag too
      await fx.store.put('cas/a', Buffer.from('plain'));
      expect(await fx.store.putIfMatch('cas/a', Buffer.from('four'), t2!)).toBeNull();
      expect((await fx.store.get('cas/a'))!.toString()).toBe('plain');
      // a created object has a tag putIfMatch accepts; a deleted one none
      expect(await fx.store.putIfAbsent('cas/b', Buffer.from('created'))).toBe(true);
      const tb = (await fx.store.getTagged('cas/b'))!;
      expect(await fx.store.putIfMatch('cas/b', Buffer.from('replaced'), tb.etag)).not.toBeNull();
      const tb2 = (await fx.store.getTagged('cas/b'))!;
      await fx.store.delete('cas/b');
      expect(await fx.store.putIfMatch('cas/b', Buffer.from('ghost'), tb2.etag)).toBeNull();
      expect(await fx.store.get('cas/b')).toBeNull();
      expect(await collect(fx.store.list('cas/'))).toEqual(['cas/a']);
    });

    it('concurrent putIfMatch with one tag: exactly one replaces, and its bytes are the ones stored', async () => {
      for (let round = 0; round < 3; round++) {
        const key = `casrace/${round}`;
        await fx.store.put(key, Buffer.from(`base ${round}`));
        const { etag } = (await fx.store.getTagged(key))!;
        const bodies = Array.from({ length: 12 }, (_, i) => Buffer.from(`replacer ${i} of round ${round} `.repeat(20 + i)));
        const results = await Promise.all(
          bodies.map(async (b) => {
            for (;;) {
              try {
                return await fx.store.putIfMatch(key, b, etag);
              } catch (err) {
                if ((err as { code?: string }).code !== 'E_CONFLICT') throw err;
                await new Promise((r) => setTimeout(r, 10));
              }
            }
          }),
        );
        const winners = results.filter((x) => x !== null);
        expect(winners.length, `round ${round}`).toBe(1);
        const got = (await fx.store.getTagged(key))!;
        expect(got.data.equals(bodies[results.findIndex((x) => x !== null)])).toBe(true);
        expect(got.etag).toBe(winners[0]);
      }
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
      await expect(fx.store.putIfAbsent('c3', Buffer.from('1'))).rejects.toThrow(/E_CLOSED/);
      await expect(fx.store.get('c')).rejects.toThrow(/E_CLOSED/);
      await expect(fx.store.head('c')).rejects.toThrow(/E_CLOSED/);
      await expect(fx.store.getTagged('c')).rejects.toThrow(/E_CLOSED/);
      await expect(fx.store.putIfMatch('c', Buffer.from('2'), 'x')).rejects.toThrow(/E_CLOSED/);
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
