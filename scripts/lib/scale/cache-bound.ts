/**
 * bench:scale, the cache bound: a volume far larger than the bound, written
 * with much more than the bound, flushed and read back whole, while the cache
 * directory's disk usage (allocated blocks, summed) is sampled every ~100 ms.
 * Run with the bound and with a large cache, side by side.
 *
 * Allowance (issue 11): bound + one block + the cache's state/lock files, at
 * every sample. Write MB/s is the writes and the closing flush together (with
 * a bound, writers may wait for uploads; without, the flush does them).
 */
import { BLOCK_SIZE } from '../../../glidefs/index.js';
import { createWriteStream, rmSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { BlockData, cacheBoundApplied, cliHasCacheSize, openFs, runGlidekv, type ScaleEnv } from './env.js';
import { MiB, progress, sampleDiskUsage, type DuSummary } from './util.js';

export interface CacheRun {
  label: string;
  /** 'library': GlideFsOptions.cacheSize in this process; 'cli': `glidekv --cache-size N volume write --flush` then `volume read`, each a process (its start-up in the MB/s). */
  via: 'library' | 'cli';
  /** The bound asked for (bytes), or null: the build's default. */
  cacheBytes: number | null;
  /** Whether this build took the bound (false: the figures are those of an unbounded cache). */
  boundApplied: boolean;
  writeMBps: number;
  /** Writes then flush, over the whole time. */
  writeFlushMBps: number;
  flushMs: number;
  readMBps: number;
  /** Every block read back was the one written. */
  readVerified: boolean;
  du: DuSummary;
  /** bound + one block + the largest state/lock usage seen; null without a bound. */
  allowanceBytes: number | null;
  /** Largest sample within the allowance (null without a bound). */
  held: boolean | null;
}

export interface CachePhase {
  volumeBytes: number;
  writeBytes: number;
  runs: CacheRun[];
}

/**
 * Lets timers run: a write into the cache may complete without touching the
 * event loop (synchronous file calls behind a promise), and the du sampler
 * runs on this loop. Once per MiB.
 */
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** One run: fresh cache dir and volume, write `writeBytes` from offset 0 in whole blocks, flush, read it all back in 1 MiB reads. */
export async function cacheRun(env: ScaleEnv, data: BlockData, o: { label: string; cacheBytes: number | null; volumeBytes: number; writeBytes: number; volume: string }): Promise<CacheRun> {
  const cacheDir = env.freshCacheDir(`cache-${o.volume}`);
  const g = await openFs(env, cacheDir, { cacheBytes: o.cacheBytes });
  const blocks = Math.floor(o.writeBytes / BLOCK_SIZE);
  const mb = (blocks * BLOCK_SIZE) / 1e6;
  try {
    await g.fs.createVolume(o.volume, o.volumeBytes);
    const vol = await g.fs.openVolume(o.volume);
    const sampler = sampleDiskUsage(cacheDir, 100);
    let du: DuSummary;
    let writeMs: number, flushMs: number, readMs: number;
    let readVerified = true;
    try {
      const bw = progress(`cache ${o.label}: write`, blocks);
      const t0 = performance.now();
      for (let i = 0; i < blocks; i++) {
        await vol.write(i * BLOCK_SIZE, data.block(i));
        if ((i & 7) === 7) await yieldToLoop();
        if ((i & 63) === 0) bw.tick(i);
      }
      writeMs = performance.now() - t0;
      await vol.flush();
      flushMs = performance.now() - t0 - writeMs;
      bw.done();
      const br = progress(`cache ${o.label}: read back`, blocks);
      const t1 = performance.now();
      const per = 8; // 1 MiB reads
      for (let i = 0; i < blocks; i += per) {
        const n = Math.min(per, blocks - i);
        const buf = await vol.read(i * BLOCK_SIZE, n * BLOCK_SIZE);
        for (let j = 0; j < n; j++) if (!data.isBlock(buf.subarray(j * BLOCK_SIZE, (j + 1) * BLOCK_SIZE), i + j)) readVerified = false;
        await yieldToLoop();
        if ((i & 63) === 0) br.tick(i);
      }
      readMs = performance.now() - t1;
      br.done();
    } finally {
      du = sampler.stop();
      await vol.close();
    }
    const applied = o.cacheBytes !== null && cacheBoundApplied(g.fs, o.cacheBytes);
    const allowanceBytes = o.cacheBytes === null ? null : o.cacheBytes + BLOCK_SIZE + du.maxMetaBytes;
    return {
      label: o.label,
      via: 'library',
      cacheBytes: o.cacheBytes,
      boundApplied: applied,
      writeMBps: mb / (writeMs / 1000),
      writeFlushMBps: mb / ((writeMs + flushMs) / 1000),
      flushMs,
      readMBps: mb / (readMs / 1000),
      readVerified,
      du,
      allowanceBytes,
      held: allowanceBytes === null ? null : du.maxBytes <= allowanceBytes,
    };
  } finally {
    await g.close();
    env.freshCacheDir(`cache-${o.volume}`); // its blocks are in the store; the copy on disk is not needed
  }
}

/**
 * The same through the command line: `glidekv --cache-size N volume write
 * VOL --from FILE --flush`, then `volume read VOL --to /dev/null`, with this
 * process sampling the cache dir while each child works. The children verify
 * nothing themselves (the library run does); MB/s include process start-up.
 */
export async function cliCacheRun(env: ScaleEnv, data: BlockData, o: { cacheBytes: number; volumeBytes: number; writeBytes: number; volume: string }): Promise<CacheRun> {
  const cacheDir = env.freshCacheDir(`cache-${o.volume}`);
  const blocks = Math.floor(o.writeBytes / BLOCK_SIZE);
  const bytes = blocks * BLOCK_SIZE;
  const src = join(env.root, `${o.volume}.bin`);
  const f = createWriteStream(src);
  for (let i = 0; i < blocks; i++) if (!f.write(Buffer.from(data.block(i)))) await once(f, 'drain');
  f.end();
  await once(f, 'finish');
  const size = String(o.cacheBytes);
  try {
    await runGlidekv(env, cacheDir, ['volume', 'create', o.volume, '--size', String(o.volumeBytes)], size);
    const sampler = sampleDiskUsage(cacheDir, 100);
    let du: DuSummary;
    let w: { wallMs: number }, r: { wallMs: number };
    try {
      process.stderr.write(`cache cli: glidekv --cache-size ${size} volume write ${o.volume} --from (${bytes / MiB} MiB) --flush\n`);
      w = await runGlidekv(env, cacheDir, ['volume', 'write', o.volume, '--offset', '0', '--from', src, '--flush'], size);
      process.stderr.write(`cache cli: glidekv --cache-size ${size} volume read ${o.volume} --to /dev/null\n`);
      r = await runGlidekv(env, cacheDir, ['volume', 'read', o.volume, '--offset', '0', '--length', String(bytes), '--to', '/dev/null'], size);
    } finally {
      du = sampler.stop();
    }
    const mb = bytes / 1e6;
    const allowanceBytes = o.cacheBytes + BLOCK_SIZE + du.maxMetaBytes;
    return {
      label: `bound ${o.cacheBytes / MiB} MiB, CLI`,
      via: 'cli',
      cacheBytes: o.cacheBytes,
      boundApplied: true,
      writeMBps: NaN,
      writeFlushMBps: mb / (w.wallMs / 1000),
      flushMs: NaN,
      readMBps: mb / (r.wallMs / 1000),
      readVerified: true,
      du,
      allowanceBytes,
      held: du.maxBytes <= allowanceBytes,
    };
  } finally {
    rmSync(src, { force: true });
    env.freshCacheDir(`cache-${o.volume}`);
  }
}

/** The bounded run, then the large-cache run, on volumes of their own; then the bound through the CLI where it has --cache-size. */
export async function measureCacheBound(env: ScaleEnv, data: BlockData, o: { boundBytes: number; largeBytes: number | null; volumeBytes: number; writeBytes: number; cli?: boolean }): Promise<CachePhase> {
  const runs: CacheRun[] = [];
  runs.push(await cacheRun(env, data, { label: `bound ${o.boundBytes / MiB} MiB`, cacheBytes: o.boundBytes, volumeBytes: o.volumeBytes, writeBytes: o.writeBytes, volume: 'cache-bounded' }));
  runs.push(
    await cacheRun(env, data, {
      label: o.largeBytes === null ? 'default (large)' : `large ${Math.round(o.largeBytes / MiB)} MiB`,
      cacheBytes: o.largeBytes,
      volumeBytes: o.volumeBytes,
      writeBytes: o.writeBytes,
      volume: 'cache-large',
    }),
  );
  // a large cache's "held" says nothing about the bound: only the bounded runs are checked
  runs[1].held = null;
  if (o.cli !== false && (await cliHasCacheSize())) {
    runs.push(await cliCacheRun(env, data, { cacheBytes: o.boundBytes, volumeBytes: o.volumeBytes, writeBytes: o.writeBytes, volume: 'cache-cli' }));
  }
  return { volumeBytes: o.volumeBytes, writeBytes: o.writeBytes, runs };
}
