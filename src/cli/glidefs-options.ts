/**
 * The block layer's global CLI options (`--store`, `--catalog`, `--cache`),
 * their environment fallbacks and defaults, and one helper that opens a
 * GlideFs from them. Shared by `volume`, `gc`, the device mount and bench.
 *
 *   --store URL    GLIDEKV_STORE    file://$HOME/.glidekv/objects
 *   --catalog PATH GLIDEKV_CATALOG  $HOME/.glidekv/catalog.db
 *   --cache DIR    GLIDEKV_CACHE    $HOME/.glidekv/cache
 */
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { GlideFs } from '../../glidefs/glidefs.js';
import { checkStore, openStore } from '../../glidefs/store-url.js';
import type { ObjectStore } from '../../glidefs/object-store.js';

export interface GlideFsCliOptions {
  store?: string;
  catalog?: string;
  cache?: string;
}

export interface ResolvedGlideFsOptions {
  storeUrl: string;
  catalogPath: string;
  cacheDir: string;
}

function home(): string {
  return process.env.HOME || homedir();
}

/** Flag, else environment variable, else the default under $HOME/.glidekv. */
export function resolveGlideFsOptions(opts: GlideFsCliOptions = {}): ResolvedGlideFsOptions {
  const base = join(home(), '.glidekv');
  const storeUrl = opts.store || process.env.GLIDEKV_STORE || pathToFileURL(join(base, 'objects')).href;
  const catalog = opts.catalog || process.env.GLIDEKV_CATALOG || join(base, 'catalog.db');
  const cache = opts.cache || process.env.GLIDEKV_CACHE || join(base, 'cache');
  return {
    storeUrl,
    catalogPath: isAbsolute(catalog) ? catalog : resolve(catalog),
    cacheDir: isAbsolute(cache) ? cache : resolve(cache),
  };
}

/** Adds --store/--catalog/--cache to a command (the root program); a second call is a no-op. */
export function addGlideFsOptions(cmd: Command): Command {
  if (cmd.options.some((o) => o.long === '--store')) return cmd;
  return cmd
    .option('--store <url>', 'object store: s3://BUCKET[/PREFIX] or file:///ABS/DIR (env GLIDEKV_STORE; default file://$HOME/.glidekv/objects)')
    .option('--catalog <path>', 'catalog database (env GLIDEKV_CATALOG; default $HOME/.glidekv/catalog.db)')
    .option('--cache <dir>', 'local block cache directory (env GLIDEKV_CACHE; default $HOME/.glidekv/cache)');
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
  extra: { check?: boolean; uploadConcurrency?: number } = {},
): Promise<OpenedGlideFs> {
  const resolved = resolveGlideFsOptions(opts);
  const store = await openStore(resolved.storeUrl);
  let fs: GlideFs;
  try {
    if (extra.check) await checkStore(store);
    fs = await GlideFs.open({ store, catalogPath: resolved.catalogPath, cacheDir: resolved.cacheDir, uploadConcurrency: extra.uploadConcurrency });
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
