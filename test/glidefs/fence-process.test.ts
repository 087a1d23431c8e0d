// Goal: two processes writing one volume (the second through a catalog restored from the store while
// the first is paused with SIGSTOP): exactly one keeps writing, the other gets E_FENCED when resumed,
// and every write either acknowledged is in the store.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { DirStore, GlideFs } from '../../glidefs/index.js';
import { restoreCatalog } from '../../glidefs/restore.js';

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
    { stdio: ['ignore', 'pipe', 'pipe'] },
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
  const b = start(join(root, 'two.db'), join(root, 'cache-b'), 2, 8);
  await until('writer B', () => b.acks.length >= 5 || b.child.exitCode !== null);
  expect(b.child.exitCode, b.lines.join('\n')).toBeNull();
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
