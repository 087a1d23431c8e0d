// Goal: a cold read of a hot block needs at most HOT_BLOCK_RECORDS log records (flush.ts): a block
// with that many records holding its sectors is sent whole at its next flush.
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { BLOCK_SIZE, GlideFs } from '../../glidefs/index.js';
import { HOT_BLOCK_RECORDS } from '../../glidefs/flush.js';
import { makeEnv, type Env } from './helpers.js';

let env: Env | undefined;
afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

it(`a block with ${HOT_BLOCK_RECORDS} records since its base is folded at its next flush; a cold read GETs at most that many`, async () => {
  env = await makeEnv('memory');
  const g = await GlideFs.open({ store: env.store, catalogPath: env.catalogPath, cacheDir: join(env.root, 'c1'), checkpoint: { onClose: false, maxLogRecords: 1_000_000 } });
  await g.createVolume('v', 4 * BLOCK_SIZE);
  const v = await g.openVolume('v');
  const sector = (k: number) => Buffer.alloc(4096, (k % 250) + 1);
  const total = HOT_BLOCK_RECORDS * 2 + 10;
  let folds = 0;
  for (let k = 0; k < total; k++) {
    await v.write((k % 32) * 4096, sector(k)); // one sector of block 0 per fsync (a journal block)
    await v.write(BLOCK_SIZE + 4096, sector(k)); // and of block 1
    const r = await v.flush();
    if (r.uploads > 0) {
      folds++;
      expect(r.uploads).toBe(2); // both blocks went whole, no sectors logged
      expect(r.loggedBlocks).toBe(0);
    } else expect(r.loggedBlocks).toBe(2);
  }
  expect(folds).toBe(2);
  const expected = Buffer.from(await v.read(0, 2 * BLOCK_SIZE));
  await g.close();
  // a cold reader: base object + the records since the fold (fewer than HOT_BLOCK_RECORDS)
  const g2 = await GlideFs.open({ store: env.store, catalogPath: env.catalogPath, cacheDir: join(env.root, 'c2'), checkpoint: { onClose: false } });
  const v2 = await g2.openVolume('v');
  const gets0 = env.store.stats().gets;
  expect((await v2.read(0, BLOCK_SIZE)).equals(expected.subarray(0, BLOCK_SIZE))).toBe(true);
  const gets = env.store.stats().gets - gets0;
  expect(gets).toBeLessThanOrEqual(1 + HOT_BLOCK_RECORDS);
  expect(gets).toBe(1 + (total - 2 * HOT_BLOCK_RECORDS - 2)); // the base, then each record after the second fold
  expect((await v2.read(BLOCK_SIZE, BLOCK_SIZE)).equals(expected.subarray(BLOCK_SIZE))).toBe(true);
  await g2.close();
});
