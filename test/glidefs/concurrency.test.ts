// Goal: flushes, deletes and gc in different GlideFs instances (separate catalog connections) never delete an object a commit names.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { BLOCK_SIZE, GlideFs, MemoryStore, blockHash, type ObjectStore } from '../../glidefs/index.js';
import { blockOf } from './block-data.js';
import { GateStore } from './gate-store.js';
import { catalogSql } from './helpers.js';


let root: string;
const instances: GlideFs[] = [];
const gates: GateStore[] = [];
afterEach(async () => {
  for (const g of gates.splice(0)) g.open(); // a failed test must not leave a flush waiting
  for (const g of instances.splice(0)) await g.close().catch(() => undefined);
  rmSync(root, { recursive: true, force: true });
});

async function open(store: ObjectStore, cache: string): Promise<GlideFs> {
  const g = await GlideFs.open({ store, catalogPath: join(root, 'catalog.db'), cacheDir: join(root, cache) });
  instances.push(g);
  return g;
}

const until = async (cond: () => boolean) => {
  for (const end = Date.now() + 30_000; Date.now() < end && !cond(); ) await new Promise((r) => setTimeout(r, 5));
  expect(cond()).toBe(true);
};

it('gc beside an in-flight flush leaves its uploaded, uncommitted objects alone', async () => {
  root = mkdtempSync(join(tmpdir(), 'glidefs-conc-'));
  const raw = new MemoryStore();
  const gate = new GateStore(raw);
  gates.push(gate);
  const a = await open(gate, 'cache-a');
  const b = await open(raw, 'cache-b');
  await b.createVolume('v', 8 * BLOCK_SIZE); // its create record: not through the gate
  const v = await a.openVolume('v');
  await v.write(0, blockOf(1, 4 * BLOCK_SIZE));
  const flushing = v.flush();
  await until(() => gate.arrived === 4); // all four objects are in the store, not committed
  expect(raw.size).toBe(4 + 1 + 1 + 1); // + the create record + the store marker + the volume's lease
  expect(await b.gc({ graceMs: 0 })).toMatchObject({ deletedObjects: 0, orphansDeleted: 0, logRecordsDeleted: 0 });
  expect(raw.size).toBe(4 + 1 + 1 + 1);
  gate.open();
  expect((await flushing).uploads).toBe(4);
  await v.close();
  const c = await open(raw, 'cache-c');
  const cv = await c.openVolume('v');
  expect((await cv.read(0, 4 * BLOCK_SIZE)).equals(blockOf(1, 4 * BLOCK_SIZE))).toBe(true);
});

it('a flush that needs a key being deleted waits for the delete to finish, then uploads it', async () => {
  root = mkdtempSync(join(tmpdir(), 'glidefs-conc-'));
  const raw = new MemoryStore();
  const a = await open(raw, 'cache-a');
  await a.createVolume('v', 8 * BLOCK_SIZE);
  const key = `blocks/0/${blockHash(blockOf(5))}`;
  // another live owner is deleting this very key
  catalogSql(a)
    .prepare('INSERT INTO deleting (key, owner, owner_host, owner_pid, started_at) VALUES (?, ?, ?, ?, ?)')
    .run(key, 'other', (await import('node:os')).hostname(), process.pid, Date.now());
  const v = await a.openVolume('v');
  await v.write(0, blockOf(5));
  let done = false;
  const flushing = v.flush().then((r) => ((done = true), r));
  await new Promise((r) => setTimeout(r, 150));
  expect(done).toBe(false);
  expect(await raw.get(key)).toBeNull();
  catalogSql(a).prepare('DELETE FROM deleting WHERE key = ?').run(key); // the delete finished
  expect((await flushing).uploads).toBe(1);
  expect(await raw.get(key)).not.toBeNull();
});

it('a key planned for reuse is protected by its pending row: a release to zero elsewhere does not delete it before the commit', async () => {
  root = mkdtempSync(join(tmpdir(), 'glidefs-conc-'));
  const raw = new MemoryStore();
  const gate = new GateStore(raw);
  gates.push(gate);
  const x = await open(raw, 'cache-x');
  const y = await open(gate, 'cache-y');
  await x.createVolume('x', 8 * BLOCK_SIZE);
  await x.createVolume('y', 8 * BLOCK_SIZE);
  const key = `blocks/0/${blockHash(blockOf(1))}`;
  const xv = await x.openVolume('x');
  await xv.write(0, blockOf(1));
  await xv.flush(); // object K = blocks/0/<hash of blockOf(1)>, refcount 1
  const yv = await y.openVolume('y');
  await yv.write(0, blockOf(1)); // same bytes, same offset: y plans to reuse K
  await yv.write(BLOCK_SIZE, blockOf(2)); // a PUT the gate holds, between plan and commit
  const flushing = yv.flush();
  await until(() => gate.arrived === 1);
  await xv.write(0, blockOf(3));
  expect((await xv.flush()).deletes).toBe(0); // K's refcount fell to zero, but y's plan holds it
  expect(await raw.get(key)).not.toBeNull();
  gate.open();
  const r = await flushing;
  expect(r.uploads).toBe(1); // block 1 only: K was reused
  expect(catalogSql(x).prepare('SELECT refcount FROM objects WHERE key = ?').pluck().get(key)).toBe(1);
  await yv.close();
  const c = await open(raw, 'cache-c');
  const cy = await c.openVolume('y');
  expect((await cy.read(0, 2 * BLOCK_SIZE)).equals(Buffer.concat([blockOf(1), blockOf(2)]))).toBe(true);
});
