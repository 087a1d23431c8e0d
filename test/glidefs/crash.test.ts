// Goal: kill -9 during writes and flushes loses no acknowledged block, never leaves the catalog naming a missing object, and gc leaves no orphans.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { DirStore, GlideFs } from '../../glidefs/index.js';
import { blockOf } from './block-data.js';
import { catalogSql } from './helpers.js';

const BLOCKS = 16;
const BS = 131072;
const KILLS = 15;
const root = mkdtempSync(join(tmpdir(), 'glidefs-crash-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const contentOf = (seed: number) => (seed === 0 ? Buffer.alloc(BS) : blockOf(seed));

/** Runs the child until it is ready, lets it work `delayMs` (and two flushes at least), kills it with SIGKILL, returns its stdout lines. */
async function runAndKill(run: number, delayMs: number): Promise<string[]> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'fixtures', 'crash-writer.ts'), root, String(run)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    const deadline = Date.now() + 30_000;
    while (!out.includes('READY\n')) {
      if (child.exitCode !== null) throw new Error(`child exited early: ${err}`);
      if (Date.now() > deadline) throw new Error(`child not ready: ${err}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    // work `delayMs`, and at least two flush rounds whatever the machine's load (the kill
    // point still varies with delayMs; a starved child cannot make a run a no-op)
    const t0 = Date.now();
    while (Date.now() - t0 < delayMs || (out.match(/^F$/gm)?.length ?? 0) < 2) {
      if (child.exitCode !== null) throw new Error(`child exited early: ${err}`);
      if (Date.now() > deadline + 60_000) throw new Error(`child made no progress: ${err}`);
      await new Promise((r) => setTimeout(r, Math.min(5, delayMs)));
    }
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  expect(err).not.toMatch(/Error/);
  return out.split('\n').filter((l) => l.length > 0);
}

/** Every object the catalog names is in the store, and every block-map key is a catalog object. */
async function checkCatalog(g: GlideFs, when: string): Promise<string[]> {
  const keys = new Set<string>();
  for await (const k of g.store.list('blocks/')) keys.add(k);
  const named = g.catalog.objectKeys();
  for (const k of named) expect(keys.has(k), `${when}: catalog names missing ${k}`).toBe(true);
  const set = new Set(named);
  const mapKeys = catalogSql(g).prepare('SELECT key FROM blocks').pluck().all() as string[];
  for (const k of mapKeys) expect(set.has(k), `${when}: block map names unknown ${k}`).toBe(true);
  return named;
}

it('survives 15 kill -9 at varied points of writes and flushes', async () => {
  mkdirSync(join(root, 'objects'));
  const open = () =>
    GlideFs.open({ store: new DirStore(join(root, 'objects'), { fsync: false }), catalogPath: join(root, 'catalog.db'), cacheDir: join(root, 'cache') });
  const g0 = await open();
  await g0.createVolume('v', BLOCKS * BS);
  await g0.close();

  // expected[i]: seeds the block may hold (the last acknowledged one, plus one in flight at the kill)
  const expected: number[][] = Array.from({ length: BLOCKS }, () => [0]);
  let acked = 0;
  let flushes = 0;
  for (let run = 1; run <= KILLS; run++) {
    const delay = 10 + ((run * 137) % 700);
    const lines = await runAndKill(run, delay);
    const inflight = new Map<number, number>();
    for (const line of lines) {
      const [t, a, b] = line.split(' ');
      if (t === 'B') inflight.set(Number(a), Number(b));
      if (t === 'A') {
        expected[Number(a)] = [Number(b)];
        inflight.delete(Number(a));
        acked++;
      }
      if (t === 'F') flushes++;
    }
    for (const [i, seed] of inflight) expected[i] = [...expected[i], seed];

    // right after the kill: the catalog names no missing object
    const g = await open();
    await checkCatalog(g, `run ${run}, before recovery`);
    // reopen (stale lock, recovered dirty set), flush, check every block
    const v = await g.openVolume('v');
    await v.flush();
    expect(v.dirtyBlocks).toBe(0);
    await v.close();
    const g2 = await GlideFs.open({ store: g.store, catalogPath: join(root, 'catalog.db'), cacheDir: join(root, `cold-${run}`) });
    const cold = await g2.openVolume('v'); // cold cache: bytes come from the store
    for (let i = 0; i < BLOCKS; i++) {
      const got = await cold.read(i * BS, BS);
      const match = expected[i].find((s) => contentOf(s).equals(got));
      expect(match, `run ${run} block ${i}: none of seeds ${expected[i].join(',')}`).toBeDefined();
      expected[i] = [match!];
    }
    await g2.close();
    const named = await checkCatalog(g, `run ${run}, after recovery`);
    // gc leaves exactly the named objects
    await g.gc({ graceMs: 0 });
    const after: string[] = [];
    for await (const k of g.store.list('blocks/')) after.push(k);
    expect(after.sort()).toEqual([...named].sort());
    await g.close();
    rmSync(join(root, `cold-${run}`), { recursive: true, force: true });
  }
  expect(acked).toBeGreaterThan(KILLS * 3);
  expect(flushes).toBeGreaterThan(KILLS);
}, 600_000); // 15 child processes and 30 reopens: minutes on a shared, loaded machine
