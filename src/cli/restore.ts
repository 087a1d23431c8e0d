/**
 * `glidekv restore`: rebuilds the SQLite catalog from the object store alone
 * (glidefs/restore.ts; FORMAT.md, "Restore"). Needs only --store (and the
 * store's credentials from the environment) and a catalog path that holds no
 * volume. Writes nothing to the store.
 */
import type { Command } from 'commander';
import { checkStore, openStore } from '../../glidefs/store-url.js';
import { restoreCatalog } from '../../glidefs/restore.js';
import { addGlideFsOptions, resolveGlideFsOptions, type GlideFsCliOptions } from './glidefs-options.js';
import { printJson } from './util.js';

export function register(program: Command): void {
  addGlideFsOptions(program);
  program
    .command('restore')
    .description('rebuild the catalog from the object store alone (after the machine or its catalog was lost)')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
Reads every volume's newest checkpoint and the log after it from --store and
writes a new catalog at --catalog (which must not exist or hold no volume).
Every volume then reads back as of its last fsync, forks and snapshots
included. Per-volume upload counters restart at zero. Nothing in the store is
written or deleted.

Examples:
  $ glidekv restore --store s3://bucket/glidekv --catalog ~/.glidekv/catalog.db
  $ glidekv restore --json`,
    )
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const o = cmd.optsWithGlobals() as GlideFsCliOptions;
      const resolved = resolveGlideFsOptions({ store: o.store, catalog: o.catalog, cache: o.cache });
      const store = await openStore(resolved.storeUrl);
      try {
        await checkStore(store);
        const r = await restoreCatalog(store, '', resolved.catalogPath);
        if (opts.json) printJson({ catalog: resolved.catalogPath, ...r });
        else {
          for (const v of r.volumes) process.stdout.write(`${v.name}\t${v.blocks} blocks\tlog ${v.checkpointSeq}..${v.logSeq}\n`);
          process.stdout.write(
            `restored ${r.volumes.length} volumes into ${resolved.catalogPath}: ${r.recordsRead} log records read (${r.bytesRead} bytes) in ${r.durationMs.toFixed(0)} ms\n`,
          );
        }
      } finally {
        await store.close();
      }
    });
}
