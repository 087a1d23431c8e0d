// Issue 9 item 15: volumes the cache can never hold are refused at create (E_BAD_SIZE naming the
// limit), and a cache whose filesystem refuses the data file's size fails with a typed error and
// leaves no state file behind (it used to leave a 160 MiB one and throw a raw EFBIG).
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { BLOCK_SIZE } from '../../glidefs/block-key.js';
import { MAX_VOLUME_BYTES, VolumeCache } from '../../glidefs/cache.js';
import { GlideFs } from '../../glidefs/glidefs.js';
import { MemoryStore } from '../../glidefs/memory-store.js';

const root = mkdtempSync(join(tmpdir(), 'glidefs-size-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const T = 1024 ** 4;

it('createVolume refuses sizes above 8 TiB, naming the limit; 8 TiB itself is accepted', async () => {
  const store = new MemoryStore();
  const g = await GlideFs.open({ store, catalogPath: join(root, 'c.db'), cacheDir: join(root, 'cache') });
  try {
    for (const size of [20 * T, 500 * T, MAX_VOLUME_BYTES + BLOCK_SIZE]) {
      await expect(g.createVolume('big', size)).rejects.toMatchObject({ code: 'E_BAD_SIZE', message: expect.stringContaining(`limit of ${MAX_VOLUME_BYTES} bytes (8T)`) });
    }
    expect(g.listVolumes()).toEqual([]);
    expect(store.size).toBe(0); // refused before the store was touched
    const info = await g.createVolume('max', MAX_VOLUME_BYTES);
    expect(info.sizeBytes).toBe(8 * T);
  } finally {
    await g.close();
  }
});

it('a cache the filesystem cannot size fails with E_BAD_SIZE and leaves no state or data file', () => {
  // ext4 (this machine's /tmp) ends files at 16 TiB: a 20 TiB data file is EFBIG
  const dir = join(root, 'vol');
  let err: unknown;
  try {
    VolumeCache.open(dir, (20 * T) / BLOCK_SIZE, BLOCK_SIZE).close();
  } catch (e) {
    err = e;
  }
  if (err === undefined) return expect.unreachable(`the filesystem of ${tmpdir()} held a 20 TiB file: this check needs ext4 (16 TiB files)`);
  expect(err).toMatchObject({ code: 'E_BAD_SIZE', message: expect.stringMatching(/cannot hold a 21990232555520-byte file .*EFBIG/) });
  expect(existsSync(dir) ? readdirSync(dir) : []).toEqual([]);
});
