/**
 * bench:scale, memory: the resident set of a process serving a volume with
 * many mapped blocks, right after it opened the volume and after a full
 * sequential read of it, beside the same process on an empty volume of the
 * same size (the difference is what the block map costs).
 *
 * Two ways to hold the volume open:
 * - `daemon`: a device daemon, `glidekv device mount VOLUME DIR` (needs root
 *   and /dev/fuse); its RSS from /proc/PID/status, the volume file read
 *   through the mount by this process (never by the daemon itself).
 * - `library`: a child process that opens the volume through glidefs and
 *   reads it (scripts/lib/scale/memory-child.ts); RSS from its own
 *   process.memoryUsage().
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BLOCK_SIZE } from '../../../glidefs/index.js';
import { cliHasCacheSize, openFs, REPO, spawnGlidekv, type BlockData, type ScaleEnv } from './env.js';
import { MiB, procRss, progress } from './util.js';

export type MemoryVia = 'daemon' | 'library';

export interface MemRun {
  volume: string;
  mappedBlocks: number;
  /** RSS (bytes) once the volume is open, and after reading all of it. */
  rssOpenBytes: number;
  rssAfterReadBytes: number | null;
  /** Peak RSS over the process's life (VmHWM), where known. */
  peakRssBytes: number | null;
  /** V8 heap in use at the same two points (library only). */
  heapOpenBytes: number | null;
  heapAfterReadBytes: number | null;
  readMBps: number | null;
  /** Every written block read back was the one written (null: not read). */
  readVerified: boolean | null;
}

export interface MemoryPhase {
  via: MemoryVia;
  /** What holds the volume: "device daemon (glidekv device mount)" or "library process (GlideFs.openVolume)". */
  process: string;
  /** The cache bound asked for that process, or null (the build's default). */
  cacheBytes: number | null;
  /** Whether it was given: the daemon takes it through `--cache-size` where the CLI has it, the library child through GlideFsOptions.cacheSize (a build without a bound ignores it). */
  cacheBoundPassed: boolean;
  reference: MemRun;
  volume: MemRun;
  /** (RSS open, volume - reference) / mapped blocks. */
  bytesPerBlockOpen: number;
}

export function daemonPossible(): boolean {
  return process.getuid?.() === 0 && existsSync('/dev/fuse');
}

const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'memory-child.ts');

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** Mounts `volume` with a device daemon, measures, stops it (SIGTERM; SIGKILL + fusermount -u if it hangs). */
async function daemonRun(env: ScaleEnv, volume: string, mapped: number, sizeBytes: number, data: BlockData | null, cacheBytes: number | null, readAll: boolean): Promise<MemRun> {
  const mnt = mkdtempSync(join(env.root, 'mnt-'));
  const cacheSize = cacheBytes !== null && (await cliHasCacheSize()) ? String(cacheBytes) : undefined;
  const child = spawnGlidekv(env, env.freshCacheDir(`mem-${volume}`), ['device', 'mount', volume, mnt, '--flush-interval', '0'], cacheSize);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const t = setTimeout(() => reject(new Error(`device daemon for ${volume}: no ready line in 180 s; stderr: ${stderr.trim()}`)), 180_000);
      child.stdout!.on('data', (d) => {
        out += d;
        if (/mounted at/.test(out)) {
          clearTimeout(t);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(t);
        reject(new Error(`device daemon for ${volume} exited (${code}) before it was ready: ${stderr.trim()}`));
      });
    });
    const pid = child.pid!;
    const atOpen = procRss(pid);
    if (!atOpen) throw new Error('/proc is not readable: cannot measure the daemon');
    let after: ReturnType<typeof procRss> = null;
    let readMBps: number | null = null;
    let readVerified: boolean | null = null;
    if (readAll) {
      const fh = await open(join(mnt, 'volume'), 'r');
      try {
        const buf = Buffer.alloc(MiB);
        const bar = progress(`memory: read ${volume} through the device daemon`, sizeBytes / MiB, 'MiB');
        readVerified = true;
        const t0 = performance.now();
        for (let pos = 0; pos < sizeBytes; pos += MiB) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(MiB, sizeBytes - pos), pos);
          if (data) {
            for (let off = 0; off + BLOCK_SIZE <= bytesRead; off += BLOCK_SIZE) {
              const i = (pos + off) / BLOCK_SIZE;
              if (i < mapped && !data.isBlock(buf.subarray(off, off + BLOCK_SIZE), i)) readVerified = false;
            }
          }
          if ((pos / MiB) % 64 === 0) bar.tick(pos / MiB);
        }
        readMBps = sizeBytes / 1e6 / ((performance.now() - t0) / 1000);
        bar.done();
      } finally {
        await fh.close();
      }
      after = procRss(pid);
    }
    return {
      volume,
      mappedBlocks: mapped,
      rssOpenBytes: atOpen.rss,
      rssAfterReadBytes: after?.rss ?? null,
      peakRssBytes: (after ?? atOpen).hwm,
      heapOpenBytes: null,
      heapAfterReadBytes: null,
      readMBps,
      readVerified,
    };
  } finally {
    child.kill('SIGTERM');
    if (!(await waitExit(child, 120_000))) {
      child.kill('SIGKILL');
      await waitExit(child, 10_000);
    }
    try {
      execFileSync('fusermount', ['-u', '-z', mnt], { stdio: 'ignore' });
    } catch {
      // not mounted any more: the daemon unmounted on SIGTERM
    }
    rmSync(mnt, { recursive: true, force: true });
  }
}

/** The library child: opens, reports, reads, reports. */
async function libraryRun(env: ScaleEnv, volume: string, mapped: number, data: BlockData | null, cacheBytes: number | null, readAll: boolean): Promise<MemRun> {
  const args = {
    storeDir: env.storeDir,
    catalogPath: env.catalogPath,
    cacheDir: env.freshCacheDir(`mem-${volume}`),
    volume,
    cacheBytes,
    readAll,
    mapped,
    tag: data?.tag ?? null,
  };
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(args)], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  if (code !== 0) throw new Error(`memory child for ${volume} exited ${code}: ${out.trim()}`);
  const r = JSON.parse(out.trim().split('\n').pop()!) as MemRun;
  return r;
}

/**
 * RSS of the process holding `volume` (with `mapped` written blocks) open,
 * and of the same on a fresh empty volume of the same size (the reference).
 */
export async function measureMemory(
  env: ScaleEnv,
  data: BlockData,
  o: { via: MemoryVia; volume: string; mapped: number; sizeBytes: number; cacheBytes: number | null },
): Promise<MemoryPhase> {
  const ref = `${o.volume}-empty`;
  {
    const g = await openFs(env, env.freshCacheDir('mem-setup'));
    try {
      await g.fs.createVolume(ref, o.sizeBytes);
    } finally {
      await g.close();
    }
  }
  const run = (volume: string, mapped: number, readAll: boolean, d: BlockData | null) =>
    o.via === 'daemon' ? daemonRun(env, volume, mapped, o.sizeBytes, d, o.cacheBytes, readAll) : libraryRun(env, volume, mapped, d, o.cacheBytes, readAll);
  const cacheBoundPassed = o.cacheBytes !== null && (o.via === 'library' || (await cliHasCacheSize()));
  const reference = await run(ref, 0, false, null);
  const volume = await run(o.volume, o.mapped, true, data);
  for (const v of [ref, o.volume]) env.freshCacheDir(`mem-${v}`);
  return {
    via: o.via,
    process: o.via === 'daemon' ? 'device daemon (glidekv device mount)' : 'library process (GlideFs.openVolume in a child)',
    cacheBytes: o.cacheBytes,
    cacheBoundPassed,
    reference,
    volume,
    bytesPerBlockOpen: o.mapped > 0 ? (volume.rssOpenBytes - reference.rssOpenBytes) / o.mapped : NaN,
  };
}
