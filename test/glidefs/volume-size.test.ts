// Issue 9 item 15: volumes above the limit are refused at create (E_BAD_SIZE naming the limit).
// Since the bounded cache (issue 11), the cache's files no longer grow with the volume: a 20 TiB
// volume's cache (EFBIG with the old sparse data file) is two small files.
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
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

it('the cache of a volume larger than any file the filesystem holds opens: its files are bounded by the cache size, not the volume', () => {
  // ext4 ends files at 16 TiB: the unbounded cache (format 1) failed here with EFBIG
  const dir = join(root, 'vol');
  const c = VolumeCache.open(dir, (20 * T) / BLOCK_SIZE, BLOCK_SIZE, 16);
  try {
    c.write(100_000_000, 0, Buffer.alloc(BLOCK_SIZE, 7));
    c.setState(100_000_000, 2);
  } finally {
    c.close();
  }
  expect(readdirSync(dir).sort()).toEqual(['blocks', 'slots']);
  expect(statSync(join(dir, 'blocks')).size).toBe(BLOCK_SIZE);
  expect(existsSync(join(dir, 'data'))).toBe(false);
});
