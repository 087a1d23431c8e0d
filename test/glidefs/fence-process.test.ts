// Goal: two processes writing one volume (the second through a catalog restored from the store while
// the first is paused with SIGSTOP): the second is refused (E_LEASED) while the first's lease is live,
// takes over after it expires, the first gets E_FENCED when resumed, and every write either
// acknowledged is in the store. A holder killed with -9 is taken over at once on its own host.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { DirStore, GlideFs } from '../../glidefs/index.js';
import { restoreCatalog } from '../../glidefs/restore.js';

const LEASE_MS = 3000;
const root = mkdtempSync(join(tmpdir(), 'glidefs-fence-'));
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

interface Writer {
  child: ChildProcess;
  acks: number[];
  lines: string[];
  exited: Promise<number | null>;
}

function start(catalog: string, cache: string, tag: number, first: number): Writer {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(__dirname, 'fixtures', 'fence-writer.ts'), join(root, 'objects'), catalog, cache, String(tag), String(first)],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GLIDEFS_LEASE_MS: String(LEASE_MS) } },
  );
  children.push(child);
  const w: Writer = { child, acks: [], lines: [], exited: new Promise((r) => child.once('exit', (code) => r(code))) };
  let buf = '';
  child.stdout!.on('data', (d) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop()!;
    for (const l of parts) {
      w.lines.push(l);
      if (l.startsWith('ACK ')) w.acks.push(Number(l.slice(4)));
    }
  });
  child.stderr!.on('data', (d) => w.lines.push(`stderr: ${d}`));
  return w;
}

const until = async (what: string, cond: () => boolean, ms = 60_000) => {
  for (const end = Date.now() + ms; !cond(); ) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

it('a paused writer is fenced by a second writer and stops; nothing acknowledged by either is lost', async () => {
  mkdirSync(join(root, 'objects'));
  const store = new DirStore(join(root, 'objects'), { fsync: false });
  const g = await GlideFs.open({ store, catalogPath: join(root, 'one.db'), cacheDir: join(root, 'setup') });
  await g.createVolume('v', 16 * 131072);
  await g.close();

  const a = start(join(root, 'one.db'), join(root, 'cache-a'), 1, 0);
  await until('writer A', () => a.acks.length >= 5 || a.child.exitCode !== null);
  expect(a.child.exitCode, a.lines.join('\n')).toBeNull();
  a.child.kill('SIGSTOP');
  await new Promise((r) => setTimeout(r, 100));
  const aBefore = a.acks.length;
  // another machine: a catalog from the store alone, a writer on it
  await restoreCatalog(store, '', join(root, 'two.db'));
  // refused while A's lease is live (A is paused, not dead), naming A
  const probe = await GlideFs.open({ store, catalogPath: join(root, 'two.db'), cacheDir: join(root, 'probe'), leaseMs: LEASE_MS });
  await expect(probe.openVolume('v')).rejects.toThrow(new RegExp(`E_LEASED: volume 'v' .* by pid ${a.child.pid} `));
  await probe.close();
  const pausedAt = Date.now();
  const b = start(join(root, 'two.db'), join(root, 'cache-b'), 2, 8);
  await until('writer B', () => b.acks.length >= 5 || b.child.exitCode !== null);
  expect(b.child.exitCode, b.lines.join('\n')).toBeNull();
  expect(Date.now() - pausedAt).toBeGreaterThanOrEqual(LEASE_MS - 1500); // B wrote only after A's lease ran out
  a.child.kill('SIGCONT');
  expect(await a.exited, a.lines.join('\n')).toBe(0);
  expect(a.lines).toContain('FENCED');
  expect(a.acks.length - aBefore).toBeLessThanOrEqual(1); // at most the flush in flight when it was paused (its record was in the store first)
  const bAtFence = b.acks.length;
  await until('writer B to keep writing', () => b.acks.length >= bAtFence + 5);
  expect(b.child.exitCode).toBeNull();
  b.child.kill('SIGKILL');
  await b.exited;

  // the store alone holds every acknowledged write of both
  await restoreCatalog(store, '', join(root, 'three.db'));
  const g3 = await GlideFs.open({ store, catalogPath: join(root, 'three.db'), cacheDir: join(root, 'check') });
  const v = await g3.openVolume('v');
  for (const [tag, first, acks] of [
    [1, 0, a.acks],
    [2, 8, b.acks],
  ] as const) {
    for (const k of acks) {
      const got = await v.read(first * 131072 + k * 4096, 4096);
      expect(got.equals(Buffer.alloc(4096, (tag * 31 + k) % 251)), `writer ${tag} ack ${k}`).toBe(true);
    }
  }
  await g3.close();
});

it('a holder killed with -9 is taken over at once on its own host (its pid is dead); every acknowledged write is there', async () => {
  const dir = join(root, 'kill');
  mkdirSync(join(dir, 'objects'), { recursive: true });
  const store = new DirStore(join(dir, 'objects'), { fsync: false });
  const g = await GlideFs.open({ store, catalogPath: join(dir, 'one.db'), cacheDir: join(dir, 'setup') });
  await g.createVolume('v', 16 * 131072);
  await g.close();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(__dirname, 'fixtures', 'fence-writer.ts'), join(dir, 'objects'), join(dir, 'one.db'), join(dir, 'cache-a'), '1', '0'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, GLIDEFS_LEASE_MS: '600000' } },
  );
  children.push(child);
  const acks: number[] = [];
  child.stdout!.on('data', (d) => {
    for (const l of String(d).split('\n')) if (l.startsWith('ACK ')) acks.push(Number(l.slice(4)));
  });
  const exited = new Promise((r) => child.once('exit', r));
  await until('the holder', () => acks.length >= 3 || child.exitCode !== null);
  await restoreCatalog(store, '', join(dir, 'two.db'));
  const b = await GlideFs.open({ store, catalogPath: join(dir, 'two.db'), cacheDir: join(dir, 'cache-b') });
  await expect(b.openVolume('v')).rejects.toThrow(new RegExp(`E_LEASED: .* by pid ${child.pid} `)); // alive: refused (lease 10 min)
  child.kill('SIGKILL');
  await exited;
  const v = await b.openVolume('v'); // dead on this host: no wait for the expiry
  for (const k of acks) expect((await v.read(k * 4096, 4096)).equals(Buffer.alloc(4096, (31 + k) % 251)), `ack ${k}`).toBe(true);
  await b.close();
});
