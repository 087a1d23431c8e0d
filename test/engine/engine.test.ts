// The engine API: namespaces, limits, put/get/delete/list/batch, CAS, stat, stats, close.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { open, KvError, type Engine } from '../../src/index.js';
import { codeOf, rmDir, tmpDir } from './helpers.js';

let dir: string;
let e: Engine;
beforeEach(async () => {
  dir = tmpDir('engine');
  e = await open(dir, { sync: 'none' });
});
afterEach(async () => {
  await e.close();
  rmDir(dir);
});

describe('namespaces', () => {
  it('create, list, drop only when empty unless forced', async () => {
    await e.createNamespace('b');
    await e.createNamespace('a');
    expect(e.listNamespaces()).toEqual(['a', 'b']);
    expect(await codeOf(e.createNamespace('a'))).toBe('E_NAMESPACE_EXISTS');
    await e.put('a', 'k', 'v');
    expect(await codeOf(e.dropNamespace('a'))).toBe('E_NAMESPACE_NOT_EMPTY');
    await e.dropNamespace('a', { force: true });
    await e.dropNamespace('b');
    expect(e.listNamespaces()).toEqual([]);
    expect(await codeOf(e.put('a', 'k', 'v'))).toBe('E_NO_NAMESPACE');
    await e.createNamespace('a');
    expect(await e.get('a', 'k')).toBeUndefined();
  });

  it('validates names', async () => {
    for (const bad of ['', 'a/b', 'a\0b', '.', '..', 'x'.repeat(256), '\ud800']) {
      expect(await codeOf(e.createNamespace(bad))).toBe('E_INVALID_NAME');
    }
    await e.createNamespace('é'.repeat(127)); // 254 bytes
    await e.createNamespace('.hidden');
  });

  it('holds the cap under concurrent creates', async () => {
    const e2 = await open(dir + '-cap', { maxNamespaces: 5 });
    try {
      const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => e2.createNamespace(`ns${i}`)));
      const ok = results.filter((r) => r.status === 'fulfilled').length;
      expect(ok).toBe(5);
      for (const r of results) {
        if (r.status === 'rejected') expect((r.reason as KvError).code).toBe('E_TOO_MANY_NAMESPACES');
      }
      expect(e2.listNamespaces().length).toBe(5);
    } finally {
      await e2.close();
      rmDir(dir + '-cap');
    }
  });
});

describe('keys and values', () => {
  beforeEach(async () => {
    await e.createNamespace('n');
  });

  it('put/get/delete/stat round-trip with monotonic revisions', async () => {
    const r1 = await e.put('n', 'k', 'one');
    const r2 = await e.put('n', Buffer.from('k'), Buffer.from('two'));
    expect(r2).toBeGreaterThan(r1);
    const g = await e.get('n', 'k');
    expect(g!.value.toString()).toBe('two');
    expect(g!.revision).toBe(r2);
    expect(e.stat('n', 'k')).toEqual({ size: 3, revision: r2, mtime: g!.mtime });
    const r3 = await e.delete('n', 'k');
    expect(r3).toBeGreaterThan(r2);
    expect(await e.get('n', 'k')).toBeUndefined();
    expect(e.stat('n', 'k')).toBeUndefined();
    expect(await e.delete('n', 'k')).toBeUndefined();
    await e.put('n', 'empty', Buffer.alloc(0));
    expect((await e.get('n', 'empty'))!.value.length).toBe(0);
    await e.put('n', 'u8', new Uint8Array([1, 2, 3]));
    expect([...(await e.get('n', 'u8'))!.value]).toEqual([1, 2, 3]);
  });

  it('enforces key and value limits', async () => {
    const small = await open(dir + '-lim', { maxValueBytes: 1000 });
    try {
      await small.createNamespace('n');
      expect(await codeOf(small.put('n', '', 'v'))).toBe('E_INVALID_KEY');
      expect(await codeOf(small.put('n', Buffer.alloc(1025, 1), 'v'))).toBe('E_INVALID_KEY');
      await small.put('n', Buffer.alloc(1024, 1), Buffer.alloc(1000));
      expect(await codeOf(small.put('n', 'k', Buffer.alloc(1001)))).toBe('E_VALUE_TOO_LARGE');
      expect(await codeOf(small.batch('n', [{ type: 'put', key: 'a', value: 'x' }, { type: 'put', key: 'b', value: Buffer.alloc(1001) }])))
        .toBe('E_VALUE_TOO_LARGE');
      expect(small.stat('n', 'a')).toBeUndefined();
    } finally {
      await small.close();
      rmDir(dir + '-lim');
    }
  });

  it('lists in key order with prefix, after and limit, without values', async () => {
    const keys = ['b', 'a', 'ab', 'abc', 'b1', 'c', 'aa'];
    for (const k of keys) await e.put('n', k, `v-${k}`);
    expect(e.list('n').map((x) => x.key.toString())).toEqual([...keys].sort());
    expect(e.list('n', { prefix: 'a' }).map((x) => x.key.toString())).toEqual(['a', 'aa', 'ab', 'abc']);
    expect(e.list('n', { prefix: 'a', after: 'aa' }).map((x) => x.key.toString())).toEqual(['ab', 'abc']);
    expect(e.list('n', { after: 'b', limit: 2 }).map((x) => x.key.toString())).toEqual(['b1', 'c']);
    await e.delete('n', 'ab');
    await e.put('n', 'a0', 'x');
    expect(e.list('n', { prefix: 'a' }).map((x) => x.key.toString())).toEqual(['a', 'a0', 'aa', 'abc']);
    const one = e.list('n', { prefix: 'c' })[0];
    expect(one.size).toBe(3);
    expect(Object.keys(one).sort()).toEqual(['key', 'mtime', 'revision', 'size']);
  });

  it('batch applies all ops under one revision', async () => {
    await e.put('n', 'gone', 'x');
    const rev = await e.batch('n', [
      { type: 'put', key: 'a', value: '1' },
      { type: 'put', key: 'b', value: '2' },
      { type: 'delete', key: 'gone' },
    ]);
    expect((await e.get('n', 'a'))!.revision).toBe(rev);
    expect((await e.get('n', 'b'))!.value.toString()).toBe('2');
    expect(await e.get('n', 'gone')).toBeUndefined();
  });

  it('batch with the same key twice: the later op wins, also after reopen', async () => {
    await e.batch('n', [{ type: 'put', key: 'd', value: '1' }, { type: 'put', key: 'd', value: '2' }]);
    await e.batch('n', [{ type: 'put', key: 'x', value: '1' }, { type: 'delete', key: 'x' }]);
    await e.put('n', 'y', '0');
    await e.batch('n', [{ type: 'delete', key: 'y' }, { type: 'put', key: 'y', value: 'back' }]);
    const check = async () => {
      expect((await e.get('n', 'd'))!.value.toString()).toBe('2');
      expect(await e.get('n', 'x')).toBeUndefined();
      expect((await e.get('n', 'y'))!.value.toString()).toBe('back');
    };
    await check();
    await e.close();
    e = await open(dir, { sync: 'none' });
    await check();
    await e.reclaim(); // seals the segment: the footer path must agree too
    await e.close();
    e = await open(dir, { sync: 'none' });
    await check();
  });

  it('CAS: ifRevision 0 means absent; mismatch names the current revision', async () => {
    const r1 = await e.put('n', 'k', 'a', { ifRevision: 0 });
    const err = await e.put('n', 'k', 'b', { ifRevision: 0 }).catch((x) => x);
    expect(err).toBeInstanceOf(KvError);
    expect(err.code).toBe('E_CAS_MISMATCH');
    expect(err.currentRevision).toBe(r1);
    expect(err.message).toContain(`current revision is ${r1}`);
    const r2 = await e.put('n', 'k', 'b', { ifRevision: r1 });
    expect(await codeOf(e.delete('n', 'k', { ifRevision: r1 }))).toBe('E_CAS_MISMATCH');
    expect(await e.delete('n', 'k', { ifRevision: r2 })).toBeGreaterThan(r2);
  });

  it('CAS race: of N concurrent writers exactly one wins per revision', async () => {
    let cur = await e.put('n', 'ctr', '0');
    for (let round = 0; round < 20; round++) {
      const results = await Promise.allSettled(
        Array.from({ length: 16 }, (_, i) => e.put('n', 'ctr', `w${i}`, { ifRevision: cur })),
      );
      const wins = results.filter((r) => r.status === 'fulfilled') as PromiseFulfilledResult<number>[];
      expect(wins.length).toBe(1);
      for (const r of results) if (r.status === 'rejected') expect((r.reason as KvError).code).toBe('E_CAS_MISMATCH');
      cur = wins[0].value;
      expect((await e.get('n', 'ctr'))!.revision).toBe(cur);
    }
    // plain writers racing CAS writers: CAS still never succeeds against a stale revision
    const base = await e.put('n', 'mix', 'x');
    const res = await Promise.allSettled([
      e.put('n', 'mix', 'plain'),
      e.put('n', 'mix', 'cas', { ifRevision: base }),
    ]);
    const casWon = res[1].status === 'fulfilled';
    const final = await e.get('n', 'mix');
    if (casWon) expect(final!.value.toString()).toBe('cas');
    else expect((res[1] as PromiseRejectedResult).reason.code).toBe('E_CAS_MISMATCH');
  });

  it('stats and closed engine', async () => {
    await e.put('n', 'a', 'xx');
    await e.put('n', 'a', 'yy');
    const s = e.stats();
    expect(s.keys).toBe(1);
    expect(s.liveBytes).toBeGreaterThan(0);
    expect(s.deadBytes).toBeGreaterThan(0);
    expect(s.segments).toBe(1);
    expect(s.revision).toBe(2);
    expect(s.compactionBytes).toBe(0);
    await e.close();
    expect(await codeOf(e.put('n', 'a', 'z'))).toBe('E_CLOSED');
    expect(await codeOf(() => e.list('n'))).toBe('E_CLOSED');
    e = await open(dir);
    expect((await e.get('n', 'a'))!.value.toString()).toBe('yy');
  });

  it('segments roll at segmentMaxBytes and reads span them', async () => {
    const d2 = dir + '-roll';
    const e2 = await open(d2, { segmentMaxBytes: 2048, sync: 'batch' });
    try {
      await e2.createNamespace('n');
      await Promise.all(Array.from({ length: 200 }, (_, i) => e2.put('n', `k${i}`, Buffer.alloc(100, i))));
      expect(e2.stats().segments).toBeGreaterThan(8);
      for (let i = 0; i < 200; i += 7) expect((await e2.get('n', `k${i}`))!.value[0]).toBe(i & 255);
    } finally {
      await e2.close();
      rmDir(d2);
    }
  });
});

it('open of a path that cannot be a directory fails with a typed error', async () => {
  const file = `${dir}/a-file`;
  (await import('node:fs')).writeFileSync(file, 'x');
  expect(await codeOf(open(file))).toBe('E_IO');
});

it('file ids are u32: segments named above 2^31 work across rolls and reopen', async () => {
  const d = `${dir}-u32`;
  let e2 = await open(d, { sync: 'none', segmentMaxBytes: 512 });
  await e2.createNamespace('n');
  await e2.put('n', 'first', 'x');
  await e2.close();
  const nsDir = `${d}/ns/n`;
  const fsm = await import('node:fs');
  const [seg] = fsm.readdirSync(nsDir);
  fsm.renameSync(`${nsDir}/${seg}`, `${nsDir}/fffffff0.seg`);
  e2 = await open(d, { sync: 'none', segmentMaxBytes: 512 });
  for (let i = 0; i < 40; i++) await e2.put('n', `k${i}`, 'y'.repeat(60));
  const names = fsm.readdirSync(nsDir).sort();
  expect(names[0]).toBe('fffffff0.seg');
  expect(names[names.length - 1] > 'fffffff5.seg').toBe(true);
  await e2.close();
  e2 = await open(d);
  expect((await e2.get('n', 'first'))!.value.toString()).toBe('x');
  expect((await e2.get('n', 'k39'))!.value.toString()).toBe('y'.repeat(60));
  await e2.close();
  rmDir(d);
});
