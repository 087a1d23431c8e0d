/**
 * bench:scale memory, library mode: a process that holds one volume open
 * through glidefs. Opens it, takes its own RSS, reads the whole volume in
 * 1 MiB reads (checking written blocks when given the data's tag), takes
 * its RSS again, prints one JSON line (a MemRun) and exits.
 *
 *   node --import tsx scripts/lib/scale/memory-child.ts '{"storeDir":...}'
 */
import { randomBytes } from 'node:crypto';
import { BLOCK_SIZE } from '../../../glidefs/index.js';
import { BlockData, openFs, type ScaleEnv } from './env.js';
import { MiB, procRss } from './util.js';

interface Args {
  storeDir: string;
  catalogPath: string;
  cacheDir: string;
  volume: string;
  cacheBytes: number | null;
  readAll: boolean;
  mapped: number;
  tag: number | null;
}

const a = JSON.parse(process.argv[2]) as Args;
const env: ScaleEnv = { root: '', storeDir: a.storeDir, storeUrl: '', catalogPath: a.catalogPath, freshCacheDir: () => a.cacheDir };
const g = await openFs(env, a.cacheDir, { cacheBytes: a.cacheBytes });
try {
  const vol = await g.fs.openVolume(a.volume);
  const m1 = process.memoryUsage();
  let m2: NodeJS.MemoryUsage | null = null;
  let readMBps: number | null = null;
  let readVerified: boolean | null = null;
  if (a.readAll) {
    // the pattern is not needed to check a block: only its 16-byte header (tag, index)
    const data = a.tag === null ? null : new BlockData(a.tag, randomBytes(BLOCK_SIZE));
    readVerified = true;
    const t0 = performance.now();
    for (let pos = 0; pos < vol.sizeBytes; pos += MiB) {
      const buf = await vol.read(pos, Math.min(MiB, vol.sizeBytes - pos));
      if (data) {
        for (let off = 0; off + BLOCK_SIZE <= buf.length; off += BLOCK_SIZE) {
          const i = (pos + off) / BLOCK_SIZE;
          if (i < a.mapped && !data.isBlock(buf.subarray(off, off + BLOCK_SIZE), i)) readVerified = false;
        }
      }
    }
    readMBps = vol.sizeBytes / 1e6 / ((performance.now() - t0) / 1000);
    m2 = process.memoryUsage();
  }
  await vol.close();
  process.stdout.write(
    JSON.stringify({
      volume: a.volume,
      mappedBlocks: a.mapped,
      rssOpenBytes: m1.rss,
      rssAfterReadBytes: m2?.rss ?? null,
      peakRssBytes: procRss(process.pid)?.hwm ?? null,
      heapOpenBytes: m1.heapUsed,
      heapAfterReadBytes: m2?.heapUsed ?? null,
      readMBps,
      readVerified,
    }) + '\n',
  );
} finally {
  await g.close();
}
