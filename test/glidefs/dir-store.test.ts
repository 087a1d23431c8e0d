// Goal: DirStore keeps keys inside its directory, writes atomically (a kill -9 never leaves a torn object) and with private modes.
import { spawn } from 'node:child_process';
import * as fsModule from 'node:fs';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DirStore } from '../../glidefs/dir-store.js';

let root: string;
let dir: string;
let store: DirStore;

beforeEach(() => {
  // `root` holds the store's directory and a sibling file that must never be touched
  root = mkdtempSync(join(tmpdir(), 'glidefs-dir-'));
  dir = join(root, 'objects');
  mkdirSync(dir, { mode: 0o700 });
  writeFileSync(join(root, 'outside'), 'precious');
  store = new DirStore(dir);
});

afterEach(async () => {
  await store.close();
  rmSync(root, { recursive: true, force: true });
});

describe('DirStore keys', () => {
  it('maps a key to the file under the directory', async () => {
    await store.put('vol/blocks/1f/abcd', Buffer.from('x'));
    expect(existsSync(join(dir, 'vol', 'blocks', '1f', 'abcd'))).toBe(true);
  });

  it.each([
    ['../outside', /E_BAD_KEY/],
    ['a/../../outside', /E_BAD_KEY/],
    ['/etc/passwd', /E_BAD_KEY/],
    ['a//b', /E_BAD_KEY/],
    ['a/./b', /E_BAD_KEY/],
    ['', /E_BAD_KEY/],
    ['a\\..\\b', /E_BAD_KEY/],
    ['nul\0byte', /E_BAD_KEY/],
    ['x/.tmp-123', /E_BAD_KEY/],
  ])('rejects the key %j for every operation', async (key, re) => {
    await expect(store.put(key, Buffer.from('evil'))).rejects.toThrow(re);
    await expect(store.get(key)).rejects.toThrow(re);
    await expect(store.delete(key)).rejects.toThrow(re);
    await expect(store.put(key, Buffer.from('evil'))).rejects.toMatchObject({ code: 'E_BAD_KEY' });
    expect(fsModule.readFileSync(join(root, 'outside'), 'utf8')).toBe('precious');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses a key that collides with a "directory" of other keys, cleanly', async () => {
    await store.put('a/b', Buffer.from('1'));
    await expect(store.put('a', Buffer.from('2'))).rejects.toMatchObject({ code: 'E_BAD_KEY' });
    await expect(store.put('a/b/c', Buffer.from('3'))).rejects.toMatchObject({ code: 'E_BAD_KEY' });
    expect((await store.get('a/b'))!.toString()).toBe('1');
    expect(await store.get('a')).toBeNull();
  });
});

describe('DirStore files', () => {
  it('creates files 0600 and directories 0700, and leaves no temp files', async () => {
    await store.put('p/q/r', Buffer.from('data'));
    expect(statSync(join(dir, 'p/q/r')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'p/q')).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'p')).mode & 0o777).toBe(0o700);
    expect(readdirSync(join(dir, 'p/q'))).toEqual(['r']);
  });

  it('delete removes directories it leaves empty, but not the root or non-empty ones', async () => {
    await store.put('x/y/z', Buffer.from('1'));
    await store.put('x/w', Buffer.from('2'));
    await store.delete('x/y/z');
    expect(existsSync(join(dir, 'x/y'))).toBe(false);
    expect(existsSync(join(dir, 'x/w'))).toBe(true);
    await store.delete('x/w');
    expect(readdirSync(dir)).toEqual([]);
    expect(existsSync(dir)).toBe(true);
  });

  it('puts racing with deletes in the same directory all land', async () => {
    const ops: Promise<void>[] = [];
    for (let i = 0; i < 200; i++) {
      ops.push(store.put(`race/${i}`, Buffer.from(String(i))));
      if (i > 0) ops.push(store.delete(`race/${i - 1}`));
    }
    await Promise.all(ops);
    expect((await store.get('race/199'))!.toString()).toBe('199');
  });

  it('list never shows temp files left by a crash', async () => {
    await store.put('t/real', Buffer.from('1'));
    writeFileSync(join(dir, 't', '.tmp-deadbeef'), 'torn');
    const keys: string[] = [];
    for await (const k of store.list('')) keys.push(k);
    expect(keys).toEqual(['t/real']);
  });

  it('probe reports a missing directory and succeeds on a writable one', async () => {
    await expect(store.probe()).resolves.toBeUndefined();
    const gone = new DirStore(join(root, 'missing'));
    await expect(gone.probe()).rejects.toMatchObject({ code: 'E_STORE' });
  });
});

// A child process writes 4 MiB objects (each filled with one byte value) as
// fast as it can; we kill -9 it at several moments. Every object that exists
// afterwards must be complete. fsync is off in the child: it only matters for
// power loss, and without it the time spent writing (the torn-file window of
// a non-atomic put) dominates.
const SIZE = 4 << 20;
const CHILD = `
import { DirStore } from ${JSON.stringify(resolve('glidefs/dir-store.ts'))};
const store = new DirStore(process.argv[2], { fsync: false });
for (let i = 0; ; i++) {
  await store.put('k/' + (i % 4), Buffer.alloc(${SIZE}, i & 0xff));
  if (i === 3) process.stdout.write('go\\n');
}
`;

const children = new Set<ReturnType<typeof spawn>>();

describe('DirStore atomic put', () => {
  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('a kill -9 during puts never leaves a torn or short object', async () => {
    const script = join(root, 'child.mts');
    writeFileSync(script, CHILD);
    for (const delayMs of [1, 7, 13, 29, 50, 90]) {
      const target = join(root, `kill-${delayMs}`);
      mkdirSync(target);
      // node itself (not the tsx wrapper), so SIGKILL hits the writer
      const child = spawn(process.execPath, ['--import', 'tsx', script, target], { stdio: ['ignore', 'pipe', 'inherit'] });
      children.add(child);
      await new Promise<void>((res, rej) => {
        child.stdout!.once('data', () => res());
        child.once('exit', (c) => rej(new Error(`child exited early: ${c}`)));
      });
      await new Promise((r) => setTimeout(r, delayMs));
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      children.delete(child);
      const s = new DirStore(target);
      let n = 0;
      for await (const key of s.list('k/')) {
        const buf = (await s.get(key))!;
        expect(buf.length, key).toBe(SIZE);
        expect(buf.equals(Buffer.alloc(SIZE, buf[0])), key).toBe(true);
        n++;
      }
      expect(n).toBeGreaterThan(0);
    }
  });
});

describe('DirStore.putIfAbsent across processes', () => {
  it('of six processes creating the same 20 keys at once, exactly one creates each, and its bytes stay', async () => {
    const fixture = resolve('test/glidefs/fixtures/cond-create-child.ts');
    const kids = Array.from({ length: 6 }, () => {
      const c = spawn(process.execPath, ['--import', 'tsx', fixture, dir, 'log', '20'], { stdio: ['pipe', 'pipe', 'inherit'] });
      const k = { c, out: '', done: new Promise<void>((r) => c.on('close', () => r())) };
      c.stdout.on('data', (d: Buffer) => (k.out += d.toString()));
      return k;
    });
    try {
      for (const end = Date.now() + 60_000; !kids.every((k) => k.out.startsWith('READY\n')); await new Promise((r) => setTimeout(r, 20))) {
        if (Date.now() > end) throw new Error('racers did not start');
      }
      for (const k of kids) k.c.stdin.end('go\n');
      await Promise.all(kids.map((k) => k.done));
      const winners = new Map<number, number[]>();
      for (const k of kids) {
        for (const line of k.out.replace(/^READY\n/, '').trim().split('\n')) {
          const [i, created] = line.split(' ');
          if (created === 'true') winners.set(Number(i), [...(winners.get(Number(i)) ?? []), k.c.pid!]);
        }
      }
      for (let i = 0; i < 20; i++) {
        expect(winners.get(i), `key ${i}`).toHaveLength(1);
        expect((await store.get(`log/${i}`))!.toString()).toBe(`pid ${winners.get(i)![0]}`);
      }
      expect(readdirSync(join(dir, 'log')).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
    } finally {
      for (const k of kids) k.c.kill('SIGKILL');
    }
  });
});

