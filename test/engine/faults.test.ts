// Write errors poison the writer (ENOSPC/EIO injected and on a real full tmpfs); EMFILE is absorbed.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { open, KvError } from '../../src/index.js';
import { codeOf, rmDir, tmpDir } from './helpers.js';
import { FaultyIo } from './fixtures/faulty-io.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));

describe('poisoned writer', () => {
  for (const [what, setup] of [
    ['ENOSPC on append', (io: FaultyIo) => (io.writeError = 'ENOSPC')],
    ['EIO on append', (io: FaultyIo) => (io.writeError = 'EIO')],
    ['EIO on fsync', (io: FaultyIo) => (io.fsyncError = 'EIO')],
  ] as const) {
    it(`${what}: that put fails, later writes fail fast, reads work, nothing partial after reopen`, async () => {
      const dir = tmpDir('poison');
      dirs.push(dir);
      const io = new FaultyIo();
      const e = await open(dir, { io, sync: 'batch' });
      await e.createNamespace('n');
      for (let i = 0; i < 10; i++) await e.put('n', `k${i}`, `v${i}`);
      await e.batch('n', [{ type: 'put', key: 'b1', value: 'x' }, { type: 'put', key: 'b2', value: 'y' }]);
      setup(io);
      const err = (await e.put('n', 'bad', Buffer.alloc(5000, 7)).then(() => null, (x) => x)) as KvError | null;
      expect(err).toBeInstanceOf(KvError);
      expect(err!.code).toBe('E_IO');
      expect(((err as KvError).cause as NodeJS.ErrnoException).code).toBe(io.writeError ?? io.fsyncError);
      io.writeError = null;
      io.fsyncError = null;
      expect(await codeOf(e.put('n', 'later', 'x'))).toBe('E_POISONED');
      expect(await codeOf(e.batch('n', [{ type: 'delete', key: 'k1' }]))).toBe('E_POISONED');
      expect(await codeOf(e.delete('n', 'k1'))).toBe('E_POISONED');
      expect((await e.get('n', 'k3'))!.value.toString()).toBe('v3');
      expect(e.list('n').length).toBeGreaterThanOrEqual(12);
      expect(e.stats().poisoned).toBe(1);
      await e.close();
      const r = await open(dir);
      for (let i = 0; i < 10; i++) expect((await r.get('n', `k${i}`))!.value.toString()).toBe(`v${i}`);
      expect((await r.get('n', 'b2'))!.value.toString()).toBe('y');
      const bad = await r.get('n', 'bad');
      // a write whose fsync failed may have reached the file whole; a torn one never appears
      if (what.includes('append')) expect(bad).toBeUndefined();
      else if (bad !== undefined) expect(bad.value.equals(Buffer.alloc(5000, 7))).toBe(true);
      expect(r.stat('n', 'later')).toBeUndefined();
      await r.put('n', 'again', 'ok');
      await r.close();
    });
  }

  it('a failed fsync in sync() (sync none) poisons too', async () => {
    const dir = tmpDir('poison-sync');
    dirs.push(dir);
    const io = new FaultyIo();
    const e = await open(dir, { io, sync: 'none' });
    await e.createNamespace('n');
    await e.put('n', 'a', '1');
    io.fsyncError = 'EIO';
    expect(await codeOf(e.sync())).toBe('E_IO');
    io.fsyncError = null;
    expect(await codeOf(e.put('n', 'b', '2'))).toBe('E_POISONED');
    expect((await e.get('n', 'a'))!.value.toString()).toBe('1');
    await e.close();
  });

  it('a failed roll (footer write) poisons the writer', async () => {
    const dir = tmpDir('poison-roll');
    dirs.push(dir);
    const io = new FaultyIo();
    const e = await open(dir, { io, sync: 'batch', segmentMaxBytes: 1024 });
    await e.createNamespace('n');
    for (let i = 0; i < 5; i++) await e.put('n', `k${i}`, 'x'.repeat(150));
    io.writeError = 'ENOSPC';
    // this put's record does not fit: the segment is sealed first, and the footer write fails
    expect(await codeOf(e.put('n', 'big', 'y'.repeat(400)))).toBe('E_IO');
    io.writeError = null;
    expect(await codeOf(e.put('n', 'after', 'z'))).toBe('E_POISONED');
    await e.close();
    const r = await open(dir);
    for (let i = 0; i < 5; i++) expect((await r.get('n', `k${i}`))!.value.toString()).toBe('x'.repeat(150));
    expect(r.stat('n', 'big')).toBeUndefined();
    await r.close();
  });

  it('ENOSPC on a real full file system (tmpfs)', async () => {
    const mnt = tmpDir('tmpfs');
    dirs.push(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt]);
    try {
      const dir = path.join(mnt, 'db');
      fs.writeFileSync(path.join(mnt, 'ballast'), Buffer.alloc(128 * 1024));
      const e = await open(dir, { sync: 'batch' });
      await e.createNamespace('n');
      const acked: string[] = [];
      let err: KvError | null = null;
      for (let i = 0; i < 100 && err === null; i++) {
        try {
          await e.put('n', `k${i}`, Buffer.alloc(60_000, i));
          acked.push(`k${i}`);
        } catch (x) {
          err = x as KvError;
        }
      }
      expect(err?.code).toBe('E_IO');
      expect((err!.cause as NodeJS.ErrnoException).code).toBe('ENOSPC');
      expect(acked.length).toBeGreaterThan(10);
      expect(await codeOf(e.put('n', 'more', 'x'))).toBe('E_POISONED');
      expect((await e.get('n', acked[3]))!.value[0]).toBe(3);
      await e.close();
      fs.rmSync(path.join(mnt, 'ballast')); // the admin frees space, then reopens
      const r = await open(dir);
      for (const k of acked) expect((await r.get('n', k))!.value.length, k).toBe(60_000);
      expect(r.stats().keys).toBe(acked.length);
      await r.close();
    } finally {
      // A failed assertion can leave the engine's files open: detach lazily then, never leak the mount.
      try {
        execFileSync('umount', [mnt]);
      } catch {
        execFileSync('umount', ['-l', mnt]);
      }
    }
  });
});

describe('EMFILE', () => {
  async function manySegments(dir: string, n: number): Promise<void> {
    const e = await open(dir, { sync: 'none', segmentMaxBytes: 512 });
    await e.createNamespace('n');
    for (let i = 0; i < n; i++) await e.put('n', `key${i}`, `v-key${i}`);
    await e.close();
  }

  it('injected: cached descriptors are closed and the open retried', async () => {
    const dir = tmpDir('emfile');
    dirs.push(dir);
    await manySegments(dir, 300);
    const io = new FaultyIo();
    const e = await open(dir, { io, maxOpenFiles: 100000 });
    expect(e.stats().segments).toBeGreaterThan(20);
    io.fdLimit = io.openFds.size + 8;
    const keys = e.list('n').map((x) => x.key.toString());
    await Promise.all(keys.map(async (k) => expect((await e.get('n', k))!.value.toString()).toBe(`v-${k}`)));
    expect(io.emfiles).toBeGreaterThan(0);
    expect(e.stats().emfileRetries).toBeGreaterThan(0);
    // and writes that need a new segment file get through too
    for (let i = 0; i < 50; i++) await e.put('n', `new${i}`, 'x'.repeat(100));
    await e.close();
  });

  it('with a lowered RLIMIT_NOFILE (prlimit) in a child process', async () => {
    const dir = tmpDir('emfile-real');
    dirs.push(dir);
    await manySegments(dir, 600);
    const r = spawnSync('prlimit', ['--nofile=48:48', process.execPath, '--import', 'tsx', path.join(here, 'fixtures/emfile-child.ts'), dir],
      { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(out.keys).toBe(600);
    expect(out.bad).toBe(0);
    expect(out.segments).toBeGreaterThan(48);
    expect(out.emfileRetries).toBeGreaterThan(0);
  });
});
