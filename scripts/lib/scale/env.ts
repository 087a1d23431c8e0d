/**
 * The bench:scale environment: one work directory holding a file store
 * (`objects/`), one catalog and several cache directories, helpers to open
 * the block layer on it (through the library) or to run the `glidekv`
 * command on it, and the block writer that fills volumes fast.
 *
 * Written against the public API (glidefs/index.ts, the CLI); the parts that
 * issue 11 adds (a cache bound, fork figures) are looked up at run time, so
 * the same bench gives "before" figures on a build without them.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { BLOCK_SIZE, DirStore, GlideFs, type GlideFsOptions, type ObjectStore, type Volume } from '../../../glidefs/index.js';
import { progress } from './util.js';

const execFileP = promisify(execFile);

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const GLIDEKV_BIN = join(REPO, 'bin', 'glidekv.mjs');

export interface ScaleEnv {
  root: string;
  storeDir: string;
  storeUrl: string;
  catalogPath: string;
  /** A fresh cache directory under the work dir (removed first if it exists). */
  freshCacheDir(name: string): string;
}

export function makeEnv(root: string): ScaleEnv {
  const storeDir = join(root, 'objects');
  mkdirSync(storeDir, { recursive: true });
  return {
    root,
    storeDir,
    storeUrl: pathToFileURL(storeDir).href,
    catalogPath: join(root, 'catalog.db'),
    freshCacheDir(name) {
      const dir = join(root, 'cache', name);
      rmSync(dir, { recursive: true, force: true });
      return dir;
    },
  };
}

export interface OpenedFs {
  fs: GlideFs;
  store: ObjectStore;
  cacheDir: string;
  close(): Promise<void>;
}

/**
 * The GlideFs open option that bounds the local cache (issue 11 item 1), by
 * the name the cache work gave it. `null` bytes: leave it out (the build's
 * default).
 */
export const CACHE_OPTION = 'cacheSize';

export function cacheOption(bytes: number | null): Partial<GlideFsOptions> {
  return bytes === null ? {} : ({ [CACHE_OPTION]: bytes } as Partial<GlideFsOptions>);
}

/**
 * Opens the block layer on the work dir's store and catalog with its own
 * cache dir. `fsync: false` only for bulk setup writes (throwaway data; the
 * measured phases use the store's default, fsync on).
 */
export async function openFs(env: ScaleEnv, cacheDir: string, opts: { cacheBytes?: number | null; fsync?: boolean; wrap?: (s: ObjectStore) => ObjectStore } = {}): Promise<OpenedFs> {
  const dir = new DirStore(env.storeDir, { fsync: opts.fsync ?? true });
  const store = opts.wrap ? opts.wrap(dir) : dir;
  const fs = await GlideFs.open({ store, catalogPath: env.catalogPath, cacheDir, ...cacheOption(opts.cacheBytes ?? null) });
  return {
    fs,
    store,
    cacheDir,
    async close() {
      try {
        await fs.close();
      } finally {
        await store.close();
      }
    },
  };
}

/** Whether this build's GlideFs took the cache bound (it keeps the option it was given, or reports it). */
export function cacheBoundApplied(fs: GlideFs, bytes: number): boolean {
  const f = fs as unknown as Record<string, unknown>;
  for (const k of [CACHE_OPTION, 'cacheBytes', 'cacheSizeBytes', 'cacheLimit']) {
    if (f[k] === bytes) return true;
  }
  return false;
}

/** argv of `glidekv` on this work dir: node bin/glidekv.mjs --store ... --catalog ... --cache DIR ARGS */
export function glidekvArgv(env: ScaleEnv, cacheDir: string, args: string[], cacheSize?: string): string[] {
  const g = [GLIDEKV_BIN, '--store', env.storeUrl, '--catalog', env.catalogPath, '--cache', cacheDir];
  if (cacheSize !== undefined) g.push('--cache-size', cacheSize);
  return [...g, ...args];
}

/** Runs `glidekv ...` to completion; stdout, wall time. A non-zero exit throws with its stderr. */
export async function runGlidekv(env: ScaleEnv, cacheDir: string, args: string[], cacheSize?: string): Promise<{ stdout: string; wallMs: number }> {
  const t0 = performance.now();
  try {
    const { stdout } = await execFileP(process.execPath, glidekvArgv(env, cacheDir, args, cacheSize), { cwd: REPO, maxBuffer: 64 << 20, env: childEnv() });
    return { stdout, wallMs: performance.now() - t0 };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`glidekv ${args.join(' ')}: ${(e.stderr ?? '').trim() || e.message}`);
  }
}

/** The environment of a glidekv child: ours without GLIDEKV_CACHE_SIZE (the bench sets the bound by flag). */
function childEnv(): NodeJS.ProcessEnv {
  const e = { ...process.env };
  delete e.GLIDEKV_CACHE_SIZE;
  return e;
}

let cliCacheSize: Promise<boolean> | null = null;

/** Whether this build's `glidekv` has the global option `--cache-size` (issue 11 item 1). */
export function cliHasCacheSize(): Promise<boolean> {
  cliCacheSize ??= execFileP(process.execPath, [GLIDEKV_BIN, '--help'], { cwd: REPO })
    .then(({ stdout }) => /--cache-size\b/.test(stdout))
    .catch(() => false);
  return cliCacheSize;
}

/**
 * Block contents: cheap and distinct. One random 128 KiB pattern per run; the
 * first 16 bytes of block i carry (tag, i), so every block hashes to its own
 * object and a read can be checked against what was written.
 */
export class BlockData {
  private readonly buf: Buffer;
  constructor(
    readonly tag: number,
    pattern: Buffer,
  ) {
    this.buf = Buffer.from(pattern.subarray(0, BLOCK_SIZE));
  }

  /** The bytes of block i (valid until the next call). */
  block(i: number): Buffer {
    this.buf.writeUInt32LE(0x5ca1eb10, 0);
    this.buf.writeUInt32LE(this.tag >>> 0, 4);
    this.buf.writeDoubleLE(i, 8);
    return this.buf;
  }

  /** Whether `bytes` (a block read back) is block i of this data. */
  isBlock(bytes: Buffer, i: number): boolean {
    return bytes.readUInt32LE(0) === 0x5ca1eb10 && bytes.readUInt32LE(4) === this.tag >>> 0 && bytes.readDoubleLE(8) === i;
  }
}

/**
 * Writes whole blocks [from, to) of `volume` with `data`, flushing every
 * `batch` blocks. The cache dir is wiped after each flushed batch (the volume
 * closed, the GlideFs reopened): a cache is a cache, and on a build without a
 * bound it would otherwise hold a second copy of everything written. Ends
 * with a checkpoint (close checkpoints a non-empty log; then an explicit one).
 */
export async function fillBlocks(
  env: ScaleEnv,
  volume: string,
  from: number,
  to: number,
  data: BlockData,
  opts: { batch?: number; label?: string } = {},
): Promise<{ ms: number }> {
  const batch = opts.batch ?? 2048;
  const bar = progress(opts.label ?? `write ${volume}`, to - from);
  const t0 = performance.now();
  for (let start = from; start < to; start += batch) {
    const end = Math.min(to, start + batch);
    const o = await openFs(env, env.freshCacheDir('fill'), { fsync: false });
    try {
      const vol = await o.fs.openVolume(volume);
      for (let i = start; i < end; i++) {
        await vol.write(i * BLOCK_SIZE, data.block(i));
        if ((i & 255) === 0) bar.tick(i - from);
      }
      await vol.flush();
      await vol.close();
      if (end === to) await o.fs.checkpoint(volume);
    } finally {
      await o.close();
    }
    bar.tick(end - from);
  }
  rmSync(join(env.root, 'cache', 'fill'), { recursive: true, force: true });
  settleDisk();
  bar.done();
  return { ms: performance.now() - t0 };
}

/**
 * Writes out the page cache (sync(1)) so that a measured phase does not pay
 * for the writeback of the setup's bulk writes (made without fsync): an
 * fsync in a fork's store PUT waited behind gigabytes of it.
 */
export function settleDisk(): void {
  try {
    execFileSync('sync', [], { stdio: 'ignore', timeout: 600_000 });
  } catch {
    // best effort: a measurement after it is only noisier
  }
}

/** Reads blocks [from, to) one block per read; returns each read's time (ms) and whether every block was the one written. */
export async function readBlocks(vol: Volume, from: number, to: number, data: BlockData | null, tick?: (done: number) => void): Promise<{ perBlockMs: number[]; ok: boolean }> {
  const perBlockMs: number[] = [];
  let ok = true;
  for (let i = from; i < to; i++) {
    const t = performance.now();
    const b = await vol.read(i * BLOCK_SIZE, BLOCK_SIZE);
    perBlockMs.push(performance.now() - t);
    if (data && !data.isBlock(b, i)) ok = false;
    if (tick && (i & 255) === 0) tick(i - from);
  }
  return { perBlockMs, ok };
}

/** Spawns `glidekv ARGS` in the background (stdout piped, stderr to a log string). */
export function spawnGlidekv(env: ScaleEnv, cacheDir: string, args: string[], cacheSize?: string) {
  return spawn(process.execPath, glidekvArgv(env, cacheDir, args, cacheSize), { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: childEnv() });
}
