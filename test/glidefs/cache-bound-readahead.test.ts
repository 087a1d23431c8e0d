// Issue 11 item 1: the device's read-ahead respects the bounded cache: it fetches at most an eighth
// of the volume's cache slots ahead of a sequential reader (16 blocks when the cache is large).
import { constants as fsc } from 'node:fs';
import { expect, it } from 'vitest';
import { DeviceFs, type DeviceVolume } from '../../mount/device-fs.js';

const BS = 131072;

async function blocksReadAhead(cacheBlocks: number | undefined): Promise<number> {
  const reads = new Set<number>();
  const vol: DeviceVolume = {
    name: 'v',
    sizeBytes: 1024 * BS,
    readOnly: true,
    read: async (o: number, l: number) => {
      reads.add(Math.floor(o / BS));
      return Buffer.alloc(l);
    },
    write: async () => undefined,
    flush: async () => undefined,
    sync: async () => undefined,
    ...(cacheBlocks === undefined ? {} : { cacheBlocks }),
  };
  const d = new DeviceFs(vol, { log: () => undefined });
  const fd = await d.open('/volume', fsc.O_RDONLY);
  const buf = Buffer.alloc(BS);
  for (let b = 0; b < 4; b++) await d.read('/volume', fd, buf, BS, b * BS); // sequential
  await new Promise((r) => setTimeout(r, 20));
  return Math.max(...reads) - 3; // blocks past the last one read
}

it('read-ahead takes at most an eighth of the cache, 16 blocks at most', async () => {
  expect(await blocksReadAhead(undefined)).toBe(16);
  expect(await blocksReadAhead(65536)).toBe(16);
  expect(await blocksReadAhead(512)).toBe(16);
  expect(await blocksReadAhead(64)).toBe(8);
  expect(await blocksReadAhead(16)).toBe(2);
});
