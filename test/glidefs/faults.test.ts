// Goal: flush survives a flaky store through retries; a dead store fails flush clearly, loses nothing, and a later flush succeeds.
import { afterEach, expect, it } from 'vitest';
import { BLOCK_SIZE, FaultyStore, GlideFsError, MemoryStore, RetryStore } from '../../glidefs/index.js';
import { blockOf, listKeys, makeEnv, type Env } from './helpers.js';

let env: Env;
afterEach(async () => {
  await env?.cleanup();
});

it('flush succeeds through retries when 30% of requests fail or time out', async () => {
  let faulty!: FaultyStore;
  env = await makeEnv('memory', {
    wrap: (s) => {
      faulty = new FaultyStore(s, { seed: 1234, putErrorProbability: 0.3, getErrorProbability: 0.3, deleteErrorProbability: 0.3, timeoutProbability: 0.05, timeoutMs: 5 });
      return new RetryStore(faulty, { retries: 12, baseDelayMs: 1, maxDelayMs: 5, seed: 1 });
    },
  });
  await env.fs.createVolume('v', 64 * BLOCK_SIZE);
  const v = await env.fs.openVolume('v');
  for (let i = 0; i < 32; i++) await v.write(i * BLOCK_SIZE, blockOf(i + 1));
  const r = await v.flush();
  expect(r.uploads).toBe(32);
  expect(faulty.stats().injectedErrors).toBeGreaterThan(5);
  // overwrite half: the old objects' deletes also go through the faulty store
  for (let i = 0; i < 16; i++) await v.write(i * BLOCK_SIZE, blockOf(i + 100));
  expect((await v.flush()).uploads).toBe(16);
  await v.close();
  const g2 = await env.reopen({ fresh: true });
  const v2 = await g2.openVolume('v');
  for (let i = 0; i < 32; i++) {
    expect((await v2.read(i * BLOCK_SIZE, BLOCK_SIZE)).equals(blockOf(i < 16 ? i + 100 : i + 1))).toBe(true);
  }
  await g2.gc({ graceMs: 0 });
  expect((await listKeys((env.raw as MemoryStore))).length).toBe(32);
});

it('a store that fails every request fails flush with a clear error; nothing is lost; a later flush succeeds', async () => {
  let faulty!: FaultyStore;
  env = await makeEnv('memory', {
    wrap: (s) => {
      faulty = new FaultyStore(s, { seed: 9, failAll: false });
      return new RetryStore(faulty, { retries: 2, baseDelayMs: 1, maxDelayMs: 2, seed: 1 });
    },
  });
  await env.fs.createVolume('v', 16 * BLOCK_SIZE);
  const v = await env.fs.openVolume('v');
  await v.write(0, blockOf(1));
  await v.flush();
  faulty.failAll = true;
  for (let i = 0; i < 8; i++) await v.write(i * BLOCK_SIZE, blockOf(50 + i));
  const err = await v.flush().catch((e) => e);
  expect(err).toBeInstanceOf(GlideFsError);
  expect(err.code).toBe('E_STORE');
  expect(err.message).toMatch(/^E_STORE: flush of volume 'v' failed .*dirty blocks are kept/);
  expect(v.dirtyBlocks).toBe(8);
  expect(env.fs.stats('v')).toMatchObject({ blocks: 1, uploads: 1 });
  for (let i = 0; i < 8; i++) expect((await v.read(i * BLOCK_SIZE, BLOCK_SIZE)).equals(blockOf(50 + i))).toBe(true);
  // nothing lost across a close/reopen either
  await v.close();
  const v2 = await env.fs.openVolume('v');
  expect(v2.dirtyBlocks).toBe(8);
  faulty.failAll = false;
  const r = await v2.flush();
  expect(r.uploads).toBe(8);
  expect(r.deletes).toBe(1);
  expect(v2.dirtyBlocks).toBe(0);
  await v2.close();
  const g2 = await env.reopen({ fresh: true });
  const v3 = await g2.openVolume('v');
  for (let i = 0; i < 8; i++) expect((await v3.read(i * BLOCK_SIZE, BLOCK_SIZE)).equals(blockOf(50 + i))).toBe(true);
  expect(await g2.gc({ graceMs: 0 })).toMatchObject({ deletedObjects: 0, orphansDeleted: 0, logRecordsDeleted: 0 });
});
