// Goal: kill -9 at every step of a flush and of a checkpoint (before/after the log PUT, between block
// uploads, after the commit, before/after the log deletes) loses nothing fsynced, never leaves the catalog
// naming a missing object, the store alone restores the acknowledged state (all of a flush or none of
// it), and after gc no orphan block object or covered log record is left.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { DirStore, GlideFs, type ObjectStore } from '../../glidefs/index.js';
import { restoreCatalog } from '../../glidefs/restore.js';
import { apply, BLOCKS, BS, phase1, phase2 } from './fixtures/log-crash-plan.js';

const POINTS = [
  'flush-before-log-put',
  'flush-between-block-uploads',
  'flush-after-log-put',
  'flush-after-commit',
  'checkpoint-between-block-uploads',
  'checkpoint-before-record-put',
  'checkpoint-after-record-put',
  'checkpoint-before-log-deletes',
  'checkpoint-after-log-deletes',
];

const top = mkdtempSync(join(tmpdir(), 'glidefs-logcrash-'));
afterAll(() => rmSync(top, { recursive: true, force: true }));

function runChild(root: string, point: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'fixtures', 'log-crash-child.ts'), root, point], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') return reject(new Error(`child ended with ${code ?? signal}, not killed: ${out} ${err}`));
      resolve(out.split('\n').filter(Boolean));
    });
  });
}

async function list(store: ObjectStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list(prefix)) out.push(k);
  return out.sort();
}

async function readAll(g: GlideFs): Promise<Buffer> {
  const v = await g.openVolume('v');
  try {
    return Buffer.from(await v.read(0, BLOCKS * BS));
  } finally {
    await v.close();
  }
}

const S0 = Buffer.alloc(BLOCKS * BS);
const S1 = apply(S0, phase1());
const S2 = apply(S1, phase2());
const which = (b: Buffer) => (b.equals(S2) ? 'S2' : b.equals(S1) ? 'S1' : 'neither');

it.each(POINTS)('kill -9 at %s', async (point) => {
  const root = join(top, point);
  mkdirSync(join(root, 'objects'), { recursive: true });
  const store = new DirStore(join(root, 'objects'), { fsync: false });
  const g0 = await GlideFs.open({ store, catalogPath: join(root, 'catalog.db'), cacheDir: join(root, 'cache') });
  await g0.createVolume('v', BLOCKS * BS);
  await g0.close();

  const lines = await runChild(root, point);
  expect(lines, 'the child reached the crash point').toContain(`CRASH ${point}`);
  const acked2 = lines.includes('ACK 2');
  expect(lines).toContain('ACK 1');

  // right after the kill: the catalog names no missing object
  const g = await GlideFs.open({ store, catalogPath: join(root, 'catalog.db'), cacheDir: join(root, 'cache') });
  const inStore = new Set(await list(store, 'blocks/'));
  for (const k of g.catalog.objectKeys()) expect(inStore.has(k), `catalog names missing ${k}`).toBe(true);

  // the store alone: everything acknowledged, and a flush is all or nothing
  await restoreCatalog(store, '', join(root, 'r1.db'));
  const r1 = await GlideFs.open({ store, catalogPath: join(root, 'r1.db'), cacheDir: join(root, 'r1'), checkpoint: { onClose: false } }); // reads only: writes nothing to the store
  const fromStore = which(await readAll(r1));
  await r1.close();
  rmSync(join(root, 'r1.db'));
  expect(fromStore).toBe(acked2 ? 'S2' : fromStore === 'S1' ? 'S1' : 'S2');

  // reopen on the same cache: catch-up, flush, everything written is there
  const v = await g.openVolume('v');
  await v.flush();
  expect(which(Buffer.from(await v.read(0, BLOCKS * BS)))).toBe('S2');
  await v.close(); // checkpoints
  // gc: no orphan block object, no log record below the checkpoint
  await g.gc({ graceMs: 0 });
  expect(await list(store, 'blocks/')).toEqual(g.catalog.objectKeys().sort());
  const row = g.catalog.volume('v');
  const logs = await list(store, `volumes/${row.uuid}/log/`);
  expect(logs.map((k) => parseInt(k.slice(-16), 16))).toEqual([row.checkpoint_seq]);
  await g.close();
  // and the store alone again, with a cold cache
  await restoreCatalog(store, '', join(root, 'r2.db'));
  const r2 = await GlideFs.open({ store, catalogPath: join(root, 'r2.db'), cacheDir: join(root, 'r2') });
  expect(which(await readAll(r2))).toBe('S2');
  await r2.close();
});
