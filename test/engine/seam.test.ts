// The value-separation seam, driven by the default BlobSeparator over the real BlobStore: pointer records
// round-trip through write, footer, recovery and reclaim (which moves 16 bytes, never the value),
// and the engine's ref/unref/sync calls keep blob refcounts right.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { open } from '../../src/index.js';
import { BlobStore } from '../../src/blob-store.js';
import { BlobSeparator } from '../../src/value-separator.js';
import { rmDir, tmpDir } from './helpers.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));

async function openWithBlobs(dir: string) {
  // the default separator (src/value-separator.ts), no adapter given
  const e = await open(dir, { valueThreshold: 1000, reclaimMinBytes: 1e12 });
  const blobs = (e.separator as BlobSeparator).blobs;
  return { e, blobs };
}

it('pointer records survive writes, batches, deletes, reclaim and reopen; blobs are refcounted', async () => {
  const dir = tmpDir('seam');
  dirs.push(dir);
  let { e, blobs } = await openWithBlobs(dir);
  await e.createNamespace('n');
  const big = (i: number) => Buffer.alloc(5000 + i, i);
  await e.put('n', 'a', big(1));
  await e.put('n', 'b', big(2));
  await e.put('n', 'same', big(1)); // dedup: one blob, two pointers
  await e.put('n', 'small', 'inline');
  await e.batch('n', [{ type: 'put', key: 'c', value: big(3) }, { type: 'put', key: 'd', value: 'tiny' }]);
  expect(blobs.refCount(BlobStore.hashOf(big(1)))).toBe(2);
  expect(e.stat('n', 'a')!.size).toBe(5001);
  expect((await e.get('n', 'c'))!.value.equals(big(3))).toBe(true);
  await e.put('n', 'b', 'now inline'); // overwrite drops the pointer
  await e.delete('n', 'c');
  expect(blobs.refCount(BlobStore.hashOf(big(2)))).toBe(0);
  await e.sync();
  expect(blobs.stats().blobs).toBe(1); // only big(1) is left; the others were collected after the fsync
  const blobFile = path.join(dir, 'values', `blob-${BlobStore.hashOf(big(1)).toString('hex')}`);
  const ino = fs.statSync(blobFile).ino;
  const r = await e.reclaim();
  expect(r.relocatedBytes).toBeLessThan(1000); // pointers moved, not 5 KB values
  expect(fs.statSync(blobFile).ino).toBe(ino);
  expect((await e.get('n', 'same'))!.value.equals(big(1))).toBe(true);
  await e.close();
  ({ e, blobs } = await openWithBlobs(dir));
  expect(blobs.refCount(BlobStore.hashOf(big(1)))).toBe(2); // rebuilt from footers
  expect((await e.get('n', 'a'))!.value.equals(big(1))).toBe(true);
  expect((await e.get('n', 'b'))!.value.toString()).toBe('now inline');
  expect(await e.get('n', 'c')).toBeUndefined();
  expect((await e.get('n', 'd'))!.value.toString()).toBe('tiny');
  await e.dropNamespace('n', { force: true });
  expect(blobs.refCount(BlobStore.hashOf(big(1)))).toBe(0);
  await e.close();
});
