// meta.json: one writer at a time, each write whole (own temp file, fsync, rename, dir fsync),
// every failure a KvError; a kill -9 at any moment leaves a meta.json the next open reads.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { KvError, nodeFileIo, open, type FileIo } from '../../src/index.js';
import { mulberry32 } from '../../lib/prng.js';
import { rmDir, tmpDir } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));

const isMetaTmp = (p: string): boolean => path.basename(p).startsWith('meta.json') && p.endsWith('.tmp');

/** node:fs, with meta temp-file writes slowed down and the number of meta writes in flight tracked. */
function metaWatchIo(): FileIo & { maxInFlight: number; metaWrites: number; nextMetaOpen(): Promise<void> } {
  const fdPath = new Map<number, string>();
  let inFlight = 0;
  let waiters: Array<() => void> = [];
  const io = {
    ...nodeFileIo,
    maxInFlight: 0,
    metaWrites: 0,
    /** Resolves when the next meta temp file is opened (a meta write is under way). */
    nextMetaOpen: () => new Promise<void>((r) => waiters.push(r)),
    async open(p: string, flags: string | number, mode?: number) {
      const fd = await nodeFileIo.open(p, flags, mode);
      fdPath.set(fd, p);
      if (isMetaTmp(p)) {
        inFlight++;
        io.maxInFlight = Math.max(io.maxInFlight, inFlight);
        const w = waiters;
        waiters = [];
        w.forEach((r) => r());
      }
      return fd;
    },
    async write(fd: number, buf: Uint8Array, off: number, len: number, pos: number) {
      if (isMetaTmp(fdPath.get(fd) ?? '')) await new Promise((r) => setTimeout(r, 15)); // widen the window
      return nodeFileIo.write(fd, buf, off, len, pos);
    },
    async close(fd: number) {
      fdPath.delete(fd);
      return nodeFileIo.close(fd);
    },
    async rename(from: string, to: string) {
      await nodeFileIo.rename(from, to);
      if (isMetaTmp(from)) {
        inFlight--;
        io.metaWrites++;
      }
    },
  };
  return io;
}

it('concurrent reclaims, drops, creates and puts: meta writes never overlap, nothing fails, meta.json stays whole', async () => {
  const dir = tmpDir('meta-race');
  dirs.push(dir);
  const io = metaWatchIo();
  const e = await open(dir, { io, sync: 'batch', segmentMaxBytes: 2048, reclaimMinBytes: 1e12 });
  for (const ns of ['n1', 'n2', 'd1', 'd2', 'd3']) await e.createNamespace(ns);
  for (let i = 0; i < 60; i++) await e.put(i % 2 ? 'n1' : 'n2', `k${i % 9}`, `v${i}-${'y'.repeat(i * 3)}`);
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < 20; i++) await e.put(i % 2 ? 'n1' : 'n2', `k${i % 9}`, `r${round}-${i}-${'y'.repeat(i * 3)}`);
    // the race forced: the drops start while reclaim's meta write (outside the writer) is under way
    const opened = io.nextMetaOpen();
    const first = e.reclaim({ full: true });
    await opened;
    const results = await Promise.allSettled([
      first,
      e.dropNamespace('d1', { force: true }),
      e.reclaim({ full: true }),
      e.dropNamespace('d2', { force: true }),
      e.put('n1', 'p', `round ${round}`),
      e.dropNamespace('d3', { force: true }),
      e.reclaim({ full: true }),
    ]);
    for (const r of results) {
      if (r.status === 'rejected') expect.fail(`failed: ${(r.reason as Error)?.stack ?? r.reason}`);
    }
    // read from disk before any close could rewrite it: whole JSON, version 1, the drops recorded
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8'));
    expect(m.version).toBe(1);
    for (const ns of ['d1', 'd2', 'd3']) expect(m.compacted[ns]).toBeGreaterThan(0);
    for (const ns of ['d1', 'd2', 'd3']) await e.createNamespace(ns);
  }
  expect(io.metaWrites).toBeGreaterThanOrEqual(4 * 6); // 3 drops + reclaims that replaced segments, per round
  expect(io.maxInFlight).toBe(1); // one writer at a time
  expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  await e.close();
  const e2 = await open(dir);
  expect((await e2.get('n1', 'p'))!.value.toString()).toBe('round 3');
  await e2.close();
});

it('a failing meta write is a KvError E_IO (cause: the errno error) from reclaim and from dropNamespace', async () => {
  const dir = tmpDir('meta-eio');
  dirs.push(dir);
  let failRename = false;
  const io: FileIo = {
    ...nodeFileIo,
    rename: async (from, to) => {
      if (failRename && isMetaTmp(from)) throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
      return nodeFileIo.rename(from, to);
    },
  };
  const e = await open(dir, { io, segmentMaxBytes: 1024 });
  await e.createNamespace('n');
  await e.createNamespace('d');
  for (let i = 0; i < 50; i++) await e.put('n', `k${i % 5}`, `value ${i} ${'z'.repeat(40)}`);
  failRename = true;
  for (const r of await Promise.allSettled([e.reclaim(), e.dropNamespace('d')])) {
    const err = r.status === 'rejected' ? r.reason : null;
    expect(err).toBeInstanceOf(KvError);
    expect((err as KvError).code).toBe('E_IO');
    expect((err as KvError).message).toMatch(/meta\.json.*EIO/);
    expect(((err as KvError).cause as NodeJS.ErrnoException).code).toBe('EIO');
  }
  expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]); // the temp file was removed
  failRename = false;
  expect(e.listNamespaces()).toContain('d'); // the drop failed before changing anything
  expect((await e.get('n', 'k4'))!.value.toString()).toMatch(/^value 49 /);
  await e.close();
});

function runChild(dir: string, killAfterMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'fixtures/meta-child.ts'), dir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    let rounds = 0;
    let raw = '';
    let timer: NodeJS.Timeout | null = null;
    const hard = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.on('data', (d: Buffer) => {
      const s = d.toString();
      rounds += (s.match(/^R /gm) ?? []).length;
      raw += (s.match(/^RAW .*$/gm) ?? []).join('\n');
      if (timer === null && s.includes('GO')) timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code, signal) => {
      clearTimeout(hard);
      if (timer !== null) clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`child ended with ${code}/${signal}: ${err}`));
      else if (raw !== '') reject(new Error(`the API threw errors that are not KvErrors: ${raw}`));
      else resolve(rounds);
    });
  });
}

it('kill -9 during concurrent meta writers, many times: the next open never fails (no E_CORRUPT)', async () => {
  const dir = tmpDir('meta-kill');
  dirs.push(dir);
  let rounds = 0;
  for (let i = 0; i < 12; i++) {
    rounds += await runChild(dir, 150 + ((i * 97) % 500));
    // a kill that lands before the first meta write (a slow child on a loaded machine) leaves no
    // meta.json, which is a valid fresh directory; one that exists must be whole
    const metaFile = path.join(dir, 'meta.json');
    if (fs.existsSync(metaFile)) {
      const raw = fs.readFileSync(metaFile, 'utf8');
      expect(() => JSON.parse(raw), `meta.json after kill ${i}: ${raw}`).not.toThrow();
    }
    const e = await open(dir);
    expect(e.listNamespaces()).toContain('keep');
    // all 13 keys once any child finished a round (before that, a kill may land mid first round)
    if (rounds > 0) expect(e.list('keep').length).toBe(13);
    else expect(e.list('keep').length).toBeLessThanOrEqual(13);
    await e.close();
  }
  expect(rounds).toBeGreaterThan(0); // the children got through whole rounds, so the kills landed mid-work
}, 300_000);

/** node:fs where, once armed, each call fails with a seeded chance (EIO, ENOSPC or ENOENT). */
function chaosIo(seed: number, chance: number): FileIo & { armed: boolean; injected: number } {
  const rnd = mulberry32(seed);
  const codes = ['EIO', 'ENOSPC', 'ENOENT'];
  const io = { ...nodeFileIo, armed: false, injected: 0 } as FileIo & { armed: boolean; injected: number };
  for (const name of ['open', 'read', 'write', 'fsync', 'ftruncate', 'fstatSize', 'readdir', 'mkdir', 'unlink', 'rename',
    'link', 'rm', 'readFile', 'fsyncDir'] as const) {
    const real = nodeFileIo[name] as (...a: unknown[]) => Promise<unknown>;
    (io as unknown as Record<string, unknown>)[name] = async (...a: unknown[]) => {
      if (io.armed && rnd() < chance) {
        io.injected++;
        const code = codes[Math.floor(rnd() * codes.length)];
        throw Object.assign(new Error(`${code}: injected in ${name}`), { code });
      }
      return real(...a);
    };
  }
  delete io.readSync; // every read and write through the (faulty) asynchronous calls
  delete io.writeSync;
  return io;
}

it('every error the API throws under random I/O faults is a KvError with a code (seeded)', async () => {
  const nonKv: string[] = [];
  let failures = 0;
  for (let seed = 1; seed <= 12; seed++) {
    const dir = tmpDir(`meta-chaos-${seed}`);
    dirs.push(dir);
    const io = chaosIo(seed, 0.04);
    const rnd = mulberry32(seed * 7919);
    const e = await open(dir, { io, sync: seed % 2 ? 'always' : 'batch', segmentMaxBytes: 1024, valueThreshold: 300, reclaimMinBytes: 1e12 });
    for (const ns of ['a', 'b']) await e.createNamespace(ns);
    io.armed = true;
    const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)];
    for (let step = 0; step < 60; step++) {
      const ns = pick(['a', 'b', 'c']);
      const key = `k${Math.floor(rnd() * 6)}`;
      const value = rnd() < 0.2 ? 'B'.repeat(400) + step : `v${step}`;
      const calls: Array<() => Promise<unknown>> = [
        () => e.put(ns, key, value),
        () => e.get(ns, key),
        () => e.delete(ns, key),
        () => e.batch(ns, [{ type: 'put', key, value }, { type: 'delete', key: `k${step % 6}` }]),
        () => e.reclaim(),
        () => e.sync(),
        () => e.gc(),
        () => e.createNamespace(ns),
        () => e.dropNamespace(ns, { force: true }),
        async () => {
          const w = e.watch(ns, { prefix: '' }, { fromRevision: 1 });
          try {
            const it = w[Symbol.asyncIterator]();
            await Promise.race([it.next(), new Promise((r) => setTimeout(r, 5))]);
          } finally {
            w.close();
          }
        },
      ];
      const group = Array.from({ length: 1 + Math.floor(rnd() * 3) }, () => pick(calls));
      for (const r of await Promise.allSettled(group.map(async (c) => c()))) {
        if (r.status === 'fulfilled') continue;
        failures++;
        const err = r.reason as { code?: unknown };
        if (!(err instanceof KvError) || typeof err.code !== 'string') nonKv.push(`seed ${seed}: ${String(r.reason?.stack ?? r.reason)}`);
      }
    }
    io.armed = false;
    await e.close();
    // whatever failed, the directory opens again (meta.json whole, torn tails cut)
    const e2 = await open(dir);
    await e2.close();
  }
  expect(nonKv).toEqual([]);
  expect(failures).toBeGreaterThan(20); // the faults did land
}, 300_000);
