// Goal: gc of the log (restore.ts gcLogs) has a dry run that lists what it would delete and deletes
// nothing, and never deletes log records it cannot attribute to this catalog: a deleted volume's log
// goes only when its delete record carries one of this catalog's writer tokens.
import { randomBytes } from 'node:crypto';
import { afterEach, expect, it } from 'vitest';
import { encodeRecord, KIND_CHECKPOINT, KIND_DELETE, logKey } from '../../glidefs/log-record.js';
import { leaseKey } from '../../glidefs/lease.js';
import { listLog } from '../../glidefs/volume-log.js';
import { makeEnv, type Env } from './helpers.js';

let env: Env | undefined;
afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

/** A deleted volume's leftover log (checkpoint 1, delete 2) written by `writer`, as a crash in the middle of a delete leaves it. */
async function plantDeletedLog(e: Env, writer: string): Promise<string> {
  const uuid = randomBytes(16).toString('hex');
  const meta = { name: `gone-${uuid.slice(0, 6)}`, sizeBytes: 131072, parent: null, parentUuid: null, parentSeq: null, family: uuid, snapshot: false, createdAt: Date.now() };
  await e.store.put(logKey('', uuid, 1), await encodeRecord({ kind: KIND_CHECKPOINT, volume: uuid, seq: 1, time: Date.now(), writer, meta, blocks: [] }));
  await e.store.put(logKey('', uuid, 2), await encodeRecord({ kind: KIND_DELETE, volume: uuid, seq: 2, time: Date.now(), writer }));
  return uuid;
}

it('dry run lists covered log records (and deletes nothing); the real run deletes exactly those', async () => {
  env = await makeEnv('dir');
  await env.fs.createVolume('v', 4 * 131072);
  const v = await env.fs.openVolume('v');
  for (let k = 0; k < 4; k++) {
    await v.write(k * 4096, Buffer.alloc(4096, k + 1));
    await v.flush();
  }
  const uuid = env.fs.catalog.volume('v').uuid;
  // a checkpoint whose record deletes were lost (a crash after its commit): records 1..5 stay below it
  const store = env.store;
  const realDelete = store.delete.bind(store);
  store.delete = async () => undefined;
  await v.checkpoint();
  store.delete = realDelete;
  const below = (await listLog(store, '', uuid)).filter((s) => s < env!.fs.catalog.volume('v').checkpoint_seq);
  expect(below.length).toBe(5);
  const dry = await env.fs.gc({ dryRun: true, graceMs: 0 });
  expect(dry.dryRun).toBe(true);
  expect(dry.logRecordsDeleted).toBe(5);
  expect(dry.items.filter((i) => i.kind === 'log-record').map((i) => i.key)).toEqual(below.map((s) => logKey('', uuid, s)));
  expect(dry.items.every((i) => i.size > 0)).toBe(true);
  expect((await listLog(store, '', uuid)).length).toBe(below.length + 1); // nothing deleted
  const real = await env.fs.gc({ graceMs: 0 });
  expect(real.logRecordsDeleted).toBe(5);
  expect(await listLog(store, '', uuid)).toEqual([env.fs.catalog.volume('v').checkpoint_seq]);
  // reads are unchanged
  for (let k = 0; k < 4; k++) expect((await v.read(k * 4096, 4096)).equals(Buffer.alloc(4096, k + 1))).toBe(true);
  await v.close();
});

it("a deleted volume's log is deleted only when this catalog wrote its delete record; others are left alone and counted", async () => {
  env = await makeEnv('dir');
  await env.fs.createVolume('v', 131072); // claims the store
  env.fs.catalog.noteWriter('mine:1:aaaa');
  const mine = await plantDeletedLog(env, 'mine:1:aaaa');
  const theirs = await plantDeletedLog(env, 'another-machine:77:bbbb');
  const dry = await env.fs.gc({ dryRun: true, graceMs: 0 });
  expect(dry.unattributedLogs).toBe(1);
  expect(dry.items.filter((i) => i.kind === 'log-record').map((i) => i.key)).toEqual([logKey('', mine, 1), logKey('', mine, 2)]);
  expect((await listLog(env.store, '', mine)).length).toBe(2);
  const r = await env.fs.gc({ graceMs: 0 });
  expect(r.logRecordsDeleted).toBe(2);
  expect(r.unattributedLogs).toBe(1);
  expect(await listLog(env.store, '', mine)).toEqual([]);
  expect(await listLog(env.store, '', theirs)).toEqual([1, 2]); // not attributable: kept
});

it('a lease left by a deleted volume goes when it is released or expired, never while live', async () => {
  env = await makeEnv('dir');
  await env.fs.createVolume('v', 131072);
  const body = (uuid: string, expiresAt: number, released: boolean) =>
    Buffer.from(JSON.stringify({ format: 'glidekv-lease', version: 1, volume: uuid, name: 'x', holder: { token: 'h:1:a', host: 'h', pid: 1, catalog: '/c' }, acquiredAt: 0, renewedAt: 0, expiresAt, durationMs: 30000, released, n: 0 }));
  const old = randomBytes(16).toString('hex');
  const live = randomBytes(16).toString('hex');
  await env.store.put(leaseKey('', old), body(old, Date.now() - 1000, false));
  await env.store.put(leaseKey('', live), body(live, Date.now() + 600_000, false));
  // the open volume's own lease (it has a log) is never a candidate
  const v = await env.fs.openVolume('v');
  const dry = await env.fs.gc({ dryRun: true, graceMs: 0 });
  expect(dry.items.filter((i) => i.kind === 'lease').map((i) => i.key)).toEqual([leaseKey('', old)]);
  expect(await env.store.get(leaseKey('', old))).not.toBeNull();
  await env.fs.gc({ graceMs: 0 });
  expect(await env.store.get(leaseKey('', old))).toBeNull();
  expect(await env.store.get(leaseKey('', live))).not.toBeNull();
  expect(await env.store.get(leaseKey('', env.fs.catalog.volume('v').uuid))).not.toBeNull();
  await v.close();
});
