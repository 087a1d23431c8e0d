/**
 * The block layer's global CLI options (`--store`, `--catalog`, `--cache`,
 * `--cache-size`), their environment fallbacks and defaults, and one helper
 * that opens a GlideFs from them. Shared by `volume`, `gc`, the device mount
 * and bench.
 *
 *   --store URL         GLIDEKV_STORE       file://$HOME/.glidekv/objects
 *   --catalog PATH      GLIDEKV_CATALOG     $HOME/.glidekv/catalog.db
 *   --cache DIR         GLIDEKV_CACHE       $HOME/.glidekv/cache
 *   --cache-size SIZE   GLIDEKV_CACHE_SIZE  min(8G, 1/4 of the cache filesystem's free space), per open volume
 */
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { GlideFs } from '../../glidefs/glidefs.js';
import { checkStore, openStore } from '../../glidefs/store-url.js';
import type { ObjectStore } from '../../glidefs/object-store.js';
import { DEFAULT_STORE_RETRY_TIMEOUT_MS, type RetryOptions } from '../../glidefs/retry-store.js';
import { InvalidArgumentError } from 'commander';
import { MIN_CACHE_BYTES } from '../../glidefs/cache.js';
import { CliError, parseSize } from './util.js';

export interface GlideFsCliOptions {
  store?: string;
  catalog?: string;
  cache?: string;
  /** `--cache-size` (parsed by parseCacheSize), bytes. */
  cacheSize?: number;
}

export interface ResolvedGlideFsOptions {
  storeUrl: string;
  catalogPath: string;
  cacheDir: string;
  /** Bytes of local cache per open volume; undefined = the GlideFs default (min(8G, 1/4 of free space)). */
  cacheSize: number | undefined;
}

/** Parses a cache size (`64M`, `10G`, bytes): the project's size parser, at least 2M. */
export function parseCacheSize(text: string): number {
  const n = parseSize(text);
  if (n < MIN_CACHE_BYTES) throw new InvalidArgumentError(`cache size '${text}' is below the minimum of 2M (16 blocks of 128K)`);
  return n;
}

function home(): string {
  return process.env.HOME || homedir();
}

/**
 * Flag, else environment variable, else the default under $HOME/.glidekv.
 * A flag given as an empty string is refused (it would silently mean the
 * default); an empty environment variable counts as unset.
 */
export function resolveGlideFsOptions(opts: GlideFsCliOptions = {}): ResolvedGlideFsOptions {
  for (const name of ['store', 'catalog', 'cache'] as const) {
    if (opts[name] !== undefined && opts[name]!.trim() === '') {
      throw new CliError(`--${name} is empty: give a ${name === 'store' ? 'store URL' : 'path'}, or leave the option out for the default`, 2);
    }
  }
  const base = join(home(), '.glidekv');
  const storeUrl = opts.store || process.env.GLIDEKV_STORE || pathToFileURL(join(base, 'objects')).href;
  const catalog = opts.catalog || process.env.GLIDEKV_CATALOG || join(base, 'catalog.db');
  const cache = opts.cache || process.env.GLIDEKV_CACHE || join(base, 'cache');
  let cacheSize = opts.cacheSize;
  if (cacheSize === undefined && process.env.GLIDEKV_CACHE_SIZE) {
    try {
      cacheSize = parseCacheSize(process.env.GLIDEKV_CACHE_SIZE);
    } catch (err) {
      throw new CliError(`GLIDEKV_CACHE_SIZE: ${(err as Error).message}`, 2);
    }
  }
  return {
    storeUrl,
    catalogPath: isAbsolute(catalog) ? catalog : resolve(catalog),
    cacheDir: isAbsolute(cache) ? cache : resolve(cache),
    cacheSize,
  };
}

/** Adds --store/--catalog/--cache to a command (the root program); a second call is a no-op. */
export function addGlideFsOptions(cmd: Command): Command {
  if (cmd.options.some((o) => o.long === '--store')) return cmd;
  return cmd
    .option('--store <url>', 'object store: s3://BUCKET[/PREFIX] or file:///ABS/DIR (env GLIDEKV_STORE; default file://$HOME/.glidekv/objects)')
    .option('--catalog <path>', 'catalog database (env GLIDEKV_CATALOG; default $HOME/.glidekv/catalog.db)')
    .option('--cache <dir>', 'local block cache directory (env GLIDEKV_CACHE; default $HOME/.glidekv/cache)')
    .option('--cache-size <size>', 'local cache per open volume, at least 2M (env GLIDEKV_CACHE_SIZE; default min(8G, 1/4 of the free space of the cache\'s filesystem))', parseCacheSize);
}

export interface OpenedGlideFs {
  fs: GlideFs;
  store: ObjectStore;
  resolved: ResolvedGlideFsOptions;
  /** Closes the GlideFs (and its open volumes), then the store. */
  close(): Promise<void>;
}

/**
 * Opens the store, checks it when `check` is set (unreachable endpoint,
 * missing bucket, bad credentials become one-line E_* errors before anything
 * changes), and opens a GlideFs on it.
 */
export async function openGlideFsFromOptions(
  opts: GlideFsCliOptions = {},
  extra: { check?: boolean; uploadConcurrency?: number; retry?: RetryOptions } = {},
): Promise<OpenedGlideFs> {
  const resolved = resolveGlideFsOptions(opts);
  const store = await openStore(resolved.storeUrl, extra.retry ? { retry: extra.retry } : {});
  let fs: GlideFs;
  try {
    if (extra.check) await checkStore(store);
    fs = await GlideFs.open({ store, catalogPath: resolved.catalogPath, cacheDir: resolved.cacheDir, cacheSize: resolved.cacheSize, uploadConcurrency: extra.uploadConcurrency });
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
  return {
    fs,
    store,
    resolved,
    async close() {
      try {
        await fs.close();
      } finally {
        await store.close();
      }
    },
  };
}

/**
 * Parses `--store-retry-timeout`: a duration such as `60s`, `90s`, `2m`,
 * `500ms` or a plain number of seconds; 0 turns the retries' time bound off
 * (requests are then retried 5 times, about a second). At most 24 h.
 */
export function parseRetryTimeout(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(text);
  if (!m) throw new CliError(`'${text}' is not a duration (e.g. 60s, 2m, 500ms)`, 2);
  const unit = (m[2] ?? 's').toLowerCase();
  const ms = Math.round(Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as Record<string, number>)[unit]);
  if (ms > 86_400_000) throw new CliError(`store retry timeout '${text}' is longer than 24 h`, 2);
  return ms;
}

/** The store retry time bound of the device daemon and `up` (ms): 60 s unless told otherwise. */
export const DEFAULT_STORE_RETRY_TIMEOUT = DEFAULT_STORE_RETRY_TIMEOUT_MS;

/** Retry options for a store retry time bound in ms (0: no time bound, RetryStore's 5 quick retries, about a second). */
export function retryOptionsFor(timeoutMs: number): RetryOptions {
  return timeoutMs > 0 ? { timeoutMs } : { retries: 5, timeoutMs: undefined };
}

/** A cache size as the CLI prints it: `64M`, `8G`, `1.5G`; null = the default. */
export function fmtCacheSize(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return 'default (min(8G, 1/4 of free space))';
  for (const [unit, n] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (bytes >= n) return `${Number((bytes / n).toFixed(2))}${unit}`;
  }
  return `${bytes}`;
}

/** A duration in ms as the CLI prints it: `60s`, `1.5s`, `500ms`. */
export function fmtDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  return `${Number((ms / 1000).toFixed(1))}s`;
}
