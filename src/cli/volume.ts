/**
 * `glidekv volume ...` and `glidekv gc`: the block layer without a mount.
 *
 * Every command opens the catalog/cache/store named by the global options
 * (--store/--catalog/--cache, GLIDEKV_* env, defaults under $HOME/.glidekv),
 * does its work and closes. Commands that touch the store check it first, so
 * an unreachable endpoint, a missing bucket or bad credentials is one line
 * and exit 1 before anything changes. Bad arguments are checked before any
 * change too.
 */
import { createReadStream, createWriteStream, existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { once } from 'node:events';
import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { BLOCK_SIZE } from '../../glidefs/block-key.js';
import type { Volume } from '../../glidefs/volume.js';
import { checkVolumeName } from '../../glidefs/catalog.js';
import { checkVolumeSize, DEFAULT_GC_GRACE_MS, type GcResult } from '../../glidefs/glidefs.js';
import { GlideFsError } from '../../glidefs/errors.js';
import {
  addGlideFsOptions,
  openGlideFsFromOptions,
  resolveGlideFsOptions,
  type GlideFsCliOptions,
  type OpenedGlideFs,
  type ResolvedGlideFsOptions,
} from './glidefs-options.js';
import { CliError, parseNonNegative, parseSize, printJson } from './util.js';

const CHUNK = 1024 * 1024;

function globals(cmd: Command): GlideFsCliOptions {
  const o = cmd.optsWithGlobals() as GlideFsCliOptions;
  return { store: o.store, catalog: o.catalog, cache: o.cache, cacheSize: o.cacheSize };
}

/**
 * Opens the block layer for one command. Everything a command can check
 * without it is checked before (names, sizes, the store URL inside
 * openGlideFsFromOptions); `needs` names volumes that must exist: in an
 * environment without a catalog they cannot, so the command fails before the
 * catalog, cache dir or store dir is created (a failed command changes nothing).
 */
async function withGlideFs<T>(cmd: Command, check: boolean, fn: (g: OpenedGlideFs) => Promise<T>, needs: string[] = []): Promise<T> {
  if (needs.length > 0 && !existsSync(resolveGlideFsOptions(globals(cmd)).catalogPath)) {
    throw GlideFsError.NO_VOLUME(needs[0]);
  }
  const resolved = resolveGlideFsOptions(globals(cmd));
  const storeDir = resolved.storeUrl.startsWith('file:') ? fileDir(resolved.storeUrl) : null;
  const before = { catalog: existsSync(resolved.catalogPath), cache: existsSync(resolved.cacheDir), store: storeDir !== null && existsSync(storeDir) };
  let g: OpenedGlideFs;
  try {
    g = await openGlideFsFromOptions(globals(cmd), { check });
  } catch (err) {
    undoFirstUse(resolved, storeDir, before);
    throw err;
  }
  let failed = true;
  try {
    const out = await fn(g);
    failed = false;
    return out;
  } finally {
    await g.close();
    if (failed) undoFirstUse(resolved, storeDir, before);
  }
}

function fileDir(url: string): string | null {
  try {
    return fileURLToPath(url);
  } catch {
    return null;
  }
}

/**
 * A command that failed in an environment it set up itself (no catalog, cache
 * or store dir before it) removes what it made, so that it changed nothing:
 * the catalog only if it holds no volume and owns no store (a store marker may
 * name it), directories only if empty of files.
 */
function undoFirstUse(r: ResolvedGlideFsOptions, storeDir: string | null, before: { catalog: boolean; cache: boolean; store: boolean }): void {
  try {
    if (!before.catalog && existsSync(r.catalogPath) && catalogIsEmpty(r.catalogPath)) {
      for (const suffix of ['', '-wal', '-shm', '-journal']) rmSync(r.catalogPath + suffix, { force: true });
    }
    if (!before.cache && holdsNoFiles(r.cacheDir)) rmSync(r.cacheDir, { recursive: true, force: true });
    if (!before.store && storeDir !== null && holdsNoFiles(storeDir)) rmSync(storeDir, { recursive: true, force: true });
  } catch {
    // best effort: the command's own error is what the user needs to see
  }
}

function catalogIsEmpty(path: string): boolean {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const table = (name: string) => db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
    if (table('volumes') && db.prepare('SELECT count(*) FROM volumes').pluck().get() !== 0) return false;
    // a catalog that owns (or claimed) a store must stay: the store's marker names it
    return !(table('meta') && db.prepare("SELECT 1 FROM meta WHERE key = 'store_id'").get() !== undefined);
  } finally {
    db.close();
  }
}

function holdsNoFiles(dir: string): boolean {
  if (!existsSync(dir)) return false;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (!e.isDirectory() || !holdsNoFiles(join(dir, e.name))) return false;
  }
  return true;
}

/** A progress bar on stderr, only when stderr is a terminal. */
function progressBar(label: string, total: number): { update(n: number, total?: number): void; stop(): void } {
  if (!process.stderr.isTTY || total <= 0) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    { stream: process.stderr, format: `${label} [{bar}] {percentage}% {value}/{total}`, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0);
  return {
    update(n, t) {
      if (t !== undefined) bar.setTotal(t);
      bar.update(n);
    },
    stop() {
      bar.stop();
    },
  };
}

function fmtBytes(n: number): string {
  const units = ['B', 'K', 'M', 'G', 'T'];
  let u = 0;
  let v = n;
  while (v >= 1024 && u < units.length - 1 && v % 1024 === 0) {
    v /= 1024;
    u++;
  }
  return `${v}${units[u]}`;
}

async function flushWithProgress(vol: Volume) {
  const bar = progressBar('flush', vol.dirtyBlocks);
  try {
    return await vol.flush({ onProgress: (p) => p.phase === 'upload' && bar.update(p.done, p.total) });
  } finally {
    bar.stop();
  }
}

export function register(program: Command): void {
  addGlideFsOptions(program);

  const volume = program
    .command('volume')
    .description('create, fork, inspect and access block-layer volumes (128 KiB blocks in an object store)')
    .addHelpText(
      'after',
      `
A volume is a fixed-size block device image whose 128 KiB blocks are objects
in the store (s3://... or file://...), with a local write-back cache and a
SQLite catalog. Writes stay in the cache until a flush uploads them.

Examples:
  $ glidekv volume create data --size 4G
  $ glidekv volume write data --offset 0 --from disk.img --flush
  $ glidekv volume fork data data-test
  $ glidekv volume stats data --json
  $ GLIDEKV_STORE=s3://my-bucket/glidekv glidekv volume list`,
    );

  volume
    .command('create')
    .description('create an empty volume (all zeros; nothing is uploaded)')
    .argument('<name>', 'volume name: 1-128 of A-Z a-z 0-9 . _ -')
    .requiredOption('--size <size>', 'size, a multiple of 128K (e.g. 64M, 4G)', parseSize)
    .option('--json', 'print the new volume as JSON')
    .addHelpText('after', '\nExamples:\n  $ glidekv volume create data --size 4G\n  $ glidekv volume create small --size 128K --json')
    .action(async (name: string, opts: { size: number; json?: boolean }, cmd: Command) => {
      checkVolumeName(name);
      if (opts.size === 0 || opts.size % BLOCK_SIZE !== 0) {
        throw new CliError(`volume size ${opts.size} must be a positive multiple of 128K (131072 bytes)`);
      }
      checkVolumeSize(opts.size);
      await withGlideFs(cmd, true, async ({ fs }) => {
        const info = await fs.createVolume(name, opts.size);
        if (opts.json) printJson(info);
        else process.stdout.write(`created volume ${info.name} (${fmtBytes(info.sizeBytes)})\n`);
      });
    });

  volume
    .command('list')
    .description('list volumes')
    .option('--json', 'print JSON: [{ name, sizeBytes, parent, snapshot, createdAt }]')
    .addHelpText('after', '\nExamples:\n  $ glidekv volume list\n  $ glidekv volume list --json | jq -r ".[].name"')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      await withGlideFs(cmd, false, async ({ fs }) => {
        const vols = fs.listVolumes();
        if (opts.json) return printJson(vols);
        if (vols.length === 0) return void process.stdout.write('no volumes\n');
        const rows = vols.map((v) => [v.name, fmtBytes(v.sizeBytes), v.snapshot ? 'snapshot' : v.parent ? 'fork' : 'volume', v.parent ?? '-', new Date(v.createdAt).toISOString()]);
        const head = ['NAME', 'SIZE', 'KIND', 'PARENT', 'CREATED'];
        const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
        for (const r of [head, ...rows]) process.stdout.write(r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd() + '\n');
      });
    });

  for (const kind of ['fork', 'snapshot'] as const) {
    volume
      .command(kind)
      .description(
        kind === 'fork'
          ? 'make a writable copy of a volume in constant time: no block-map row, no object is copied'
          : 'make a read-only copy of a volume in constant time; writes to it are refused',
      )
      .argument('<src>', 'existing volume')
      .argument('<dst>', 'new volume name (must not exist)')
      .option('--json', 'print JSON: { name, sizeBytes, parent, snapshot, createdAt, durationMs, catalogMs, rowsCopied, parentSeq }')
      .addHelpText(
        'after',
        `\nUnflushed writes of <src> in this cache dir are flushed and its log is checkpointed\nfirst (a fork lies on a checkpoint of its source). A volume held open by a device\nmount must be checkpointed by its daemon: use 'glidekv fork' (it asks the daemon).\n\nExamples:\n  $ glidekv volume ${kind} data data-${kind === 'fork' ? 'test' : 'monday'}\n  $ glidekv volume ${kind} data data-x --json`,
      )
      .action(async (src: string, dst: string, opts: { json?: boolean }, cmd: Command) => {
        checkVolumeName(dst);
        await withGlideFs(
          cmd,
          true,
          async ({ fs }) => {
            const info = kind === 'fork' ? await fs.fork(src, dst) : await fs.snapshot(src, dst);
            if (opts.json) printJson(info);
            else
              process.stdout.write(
                `${kind === 'fork' ? 'forked' : 'snapshotted'} ${src} -> ${info.name} in ${info.durationMs.toFixed(1)} ms (catalog ${info.catalogMs.toFixed(2)} ms, ${info.rowsCopied} rows copied)\n`,
              );
          },
          [src],
        );
      });
  }

  volume
    .command('delete')
    .description('delete a volume; objects no other volume references are deleted from the store')
    .argument('<name>', 'volume name')
    .addHelpText('after', '\nUnflushed writes of the volume are discarded.\n\nExamples:\n  $ glidekv volume delete data-test')
    .action(async (name: string, _opts: unknown, cmd: Command) => {
      await withGlideFs(
        cmd,
        true,
        async ({ fs }) => {
          await fs.deleteVolume(name);
          process.stdout.write(`deleted volume ${name}\n`);
        },
        [name],
      );
    });

  volume
    .command('write')
    .description('write a file into a volume at an offset (dd-like, no mount needed)')
    .argument('<name>', 'volume name')
    .requiredOption('--from <file>', "file to read ('-' for stdin)")
    .option('--offset <bytes>', 'byte offset in the volume (any alignment; 128K suffixes allowed)', parseNonNegative, 0)
    .option('--flush', 'upload the written blocks before exiting')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      `
The bytes land in the local cache and are marked dirty; they are uploaded by
'glidekv volume flush' (or --flush). The whole range must fit in the volume;
nothing is written otherwise.

Examples:
  $ glidekv volume write data --offset 0 --from disk.img
  $ head -c 1M /dev/urandom | glidekv volume write data --offset 4M --from - --flush`,
    )
    .action(async (name: string, opts: { from: string; offset: number; flush?: boolean; json?: boolean }, cmd: Command) => {
      let length: number | undefined;
      let stdinData: Buffer | undefined;
      if (opts.from === '-') {
        const parts: Buffer[] = [];
        for await (const c of process.stdin) parts.push(c as Buffer);
        stdinData = Buffer.concat(parts);
        length = stdinData.length;
      } else {
        try {
          const st = statSync(opts.from);
          if (!st.isFile()) throw new CliError(`--from ${opts.from} is not a regular file`);
          length = st.size;
        } catch (err) {
          if (err instanceof CliError) throw err;
          throw new CliError(`cannot read --from ${opts.from}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
        }
      }
      await withGlideFs(cmd, true, async ({ fs }) => {
        const info = fs.getVolume(name);
        if (info.snapshot) throw new CliError(`E_READ_ONLY: volume '${name}' is a read-only snapshot`);
        if (opts.offset + length! > info.sizeBytes) {
          throw new CliError(
            `E_OUT_OF_RANGE: writing ${length} bytes at offset ${opts.offset} ends past the end of volume '${name}' (${info.sizeBytes} bytes)`,
          );
        }
        const vol = await fs.openVolume(name);
        const bar = progressBar('write', length!);
        let pos = 0;
        try {
          if (stdinData) {
            for (; pos < stdinData.length; pos += CHUNK) {
              await vol.write(opts.offset + pos, stdinData.subarray(pos, pos + CHUNK));
              bar.update(Math.min(pos + CHUNK, stdinData.length));
            }
          } else {
            for await (const chunk of createReadStream(opts.from, { highWaterMark: CHUNK })) {
              await vol.write(opts.offset + pos, chunk as Buffer);
              pos += (chunk as Buffer).length;
              bar.update(pos);
            }
          }
        } finally {
          bar.stop();
        }
        const flushed = opts.flush ? await flushWithProgress(vol) : undefined;
        const result = { volume: name, offset: opts.offset, bytes: pos, dirtyBlocks: vol.dirtyBlocks, flush: flushed };
        await vol.close();
        if (opts.json) printJson(result);
        else
          process.stdout.write(
            `wrote ${pos} bytes to ${name} at offset ${opts.offset}` +
              (flushed ? `; flushed: ${flushed.uploads} uploads, ${flushed.skippedUnchanged} unchanged\n` : `; ${result.dirtyBlocks} dirty blocks (run 'glidekv volume flush ${name}')\n`),
          );
      }, [name]);
    });

  volume
    .command('read')
    .description('read bytes of a volume into a file (dd-like, no mount needed)')
    .argument('<name>', 'volume name')
    .option('--offset <bytes>', 'byte offset in the volume', parseNonNegative, 0)
    .option('--length <bytes>', 'bytes to read (default: to the end of the volume)', parseNonNegative)
    .option('--to <file>', "output file ('-' for stdout)", '-')
    .addHelpText('after', '\nExamples:\n  $ glidekv volume read data --offset 0 --length 1M --to head.bin\n  $ glidekv volume read data --offset 128K --length 512 | xxd | head')
    .action(async (name: string, opts: { offset: number; length?: number; to: string }, cmd: Command) => {
      await withGlideFs(cmd, true, async ({ fs }) => {
        const info = fs.getVolume(name);
        const length = opts.length ?? Math.max(0, info.sizeBytes - opts.offset);
        if (opts.offset > info.sizeBytes || opts.offset + length > info.sizeBytes) {
          throw new CliError(
            `E_OUT_OF_RANGE: range ${opts.offset}+${length} ends past the end of volume '${name}' (${info.sizeBytes} bytes)`,
          );
        }
        const vol = await fs.openVolume(name);
        const out = opts.to === '-' ? process.stdout : createWriteStream(opts.to, { mode: 0o644 });
        const bar = progressBar('read', opts.to === '-' ? 0 : length);
        try {
          for (let pos = 0; pos < length; pos += CHUNK) {
            const buf = await vol.read(opts.offset + pos, Math.min(CHUNK, length - pos));
            if (!out.write(buf)) await once(out, 'drain');
            bar.update(Math.min(pos + CHUNK, length));
          }
        } finally {
          bar.stop();
          if (out !== process.stdout) {
            (out as NodeJS.WritableStream).end();
            await once(out, 'finish');
          }
          await vol.close();
        }
      }, [name]);
    });

  volume
    .command('flush')
    .description('upload the dirty blocks of a volume and commit them to the catalog')
    .argument('<name>', 'volume name')
    .option('--json', 'print the flush result as JSON')
    .addHelpText('after', '\nExamples:\n  $ glidekv volume flush data\n  $ glidekv volume flush data --json')
    .action(async (name: string, opts: { json?: boolean }, cmd: Command) => {
      await withGlideFs(cmd, true, async ({ fs }) => {
        const vol = await fs.openVolume(name);
        try {
          const r = await flushWithProgress(vol);
          if (opts.json) printJson({ volume: name, ...r });
          else
            process.stdout.write(
              `flushed ${name}: ${r.uploads} uploads (${r.reuploads} re-uploads), ${r.skippedUnchanged} unchanged, ${r.committedBlocks} blocks committed, ${r.deletes} objects deleted in ${r.durationMs.toFixed(0)} ms\n`,
            );
        } finally {
          await vol.close();
        }
      }, [name]);
    });

  volume
    .command('checkpoint')
    .description('fold the volume\'s log into whole block objects, write a checkpoint to the store, drop the log it covers')
    .argument('<name>', 'volume name')
    .option('--json', 'print the checkpoint result as JSON')
    .addHelpText('after', '\nExamples:\n  $ glidekv volume checkpoint data\n  $ glidekv volume checkpoint data --json')
    .action(async (name: string, opts: { json?: boolean }, cmd: Command) => {
      await withGlideFs(cmd, true, async ({ fs }) => {
        const r = await fs.checkpoint(name);
        if (opts.json) printJson({ volume: name, ...r });
        else
          process.stdout.write(
            r.seq === 0
              ? `checkpoint ${name}: the log is empty, nothing to do\n`
              : `checkpoint ${name}: record ${r.seq}, ${r.foldedBlocks} blocks folded, ${r.uploads} uploads (${r.reuploads} re-uploads), ${r.deletedRecords} log records deleted in ${r.durationMs.toFixed(0)} ms\n`,
          );
      }, [name]);
    });

  volume
    .command('stats')
    .description('show a volume’s counters: uploads, re-uploads, unchanged, shared blocks, GETs, deletes')
    .argument('<name>', 'volume name')
    .option('--json', 'print JSON (numeric fields)')
    .addOption(new Option('--offsets', 'also list uploads per block offset'))
    .addHelpText(
      'after',
      `
Fields: uploads, uploadedBytes, reuploads (uploads at an offset uploaded
before), skippedUnchanged, sharedBlocks (blocks whose object another volume
also uses), gets, deletes, blocks (non-zero blocks), objects (objects in the
catalog, all volumes), dirtyBlocks (written here, not flushed).

Examples:
  $ glidekv volume stats data
  $ glidekv volume stats data --json --offsets | jq .reuploads`,
    )
    .action(async (name: string, opts: { json?: boolean; offsets?: boolean }, cmd: Command) => {
      await withGlideFs(cmd, false, async ({ fs }) => {
        const s = fs.stats(name);
        const perOffset = opts.offsets ? fs.uploadsPerOffset(name) : undefined;
        if (opts.json) return printJson(perOffset ? { ...s, uploadsPerOffset: perOffset } : s);
        for (const [k, v] of Object.entries(s)) process.stdout.write(`${k.padEnd(17)} ${v}\n`);
        if (perOffset) {
          process.stdout.write('block  uploads\n');
          for (const p of perOffset) process.stdout.write(`${String(p.blockIndex).padEnd(6)} ${p.uploads}\n`);
        }
      }, [name]);
    });

  program
    .command('gc')
    .description('delete objects no volume references, and orphans (objects in the store the catalog does not name)')
    .option('--dry-run', 'list what gc would delete, with sizes; delete nothing')
    .option('--grace <duration>', `objects written less than this long ago are never orphans (e.g. 15m, 2h, 0s; default ${DEFAULT_GC_GRACE_MS / 60_000}m)`, parseGrace)
    .option('--json', 'print JSON: { deletedObjects, orphansDeleted, logRecordsDeleted, deletedBytes, youngSkipped, failed, dryRun, items: [{ key, size, modifiedAt, kind }] }')
    .addHelpText(
      'after',
      `
Only the store's own catalog runs gc (the one whose id is in the store's
glidekv-store.json marker; another catalog is refused with E_STORE_OWNED).
gc deletes only block objects (<prefix>/blocks/<index>/<hash>) that no
volume, no flush in a live process and no unfinished delete names, and that
were written at least --grace ago, plus deletes a crashed process left
unfinished. Counts are objects that existed when gc deleted them.

Examples:
  $ glidekv gc --dry-run
  $ glidekv gc
  $ glidekv --store s3://bucket/glidekv gc --json`,
    )
    .action(async (opts: { json?: boolean; dryRun?: boolean; grace?: number }, cmd: Command) => {
      await withGlideFs(cmd, true, async ({ fs }) => {
        const r = await fs.gc({ dryRun: opts.dryRun === true, graceMs: opts.grace });
        if (opts.json) return printJson(r);
        process.stdout.write(gcReport(r, opts.grace ?? fs.gcGraceMs));
      });
    });
}

/** Parses --grace: `15m`, `90s`, `2h`, `500ms`, `1d`, or seconds. */
function parseGrace(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/i.exec(text);
  if (!m) throw new CliError(`--grace '${text}' is not a duration (e.g. 15m, 2h, 0s)`, 2);
  return Math.round(Number(m[1]) * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as Record<string, number>)[(m[2] ?? 's').toLowerCase()]);
}

function gcReport(r: GcResult, graceMs: number): string {
  const lines: string[] = [];
  const verb = r.dryRun ? 'would delete' : 'deleted';
  for (const i of r.items) lines.push(`${verb} ${i.key}  ${i.size} bytes  (${i.kind}, written ${new Date(i.modifiedAt).toISOString()})`);
  const young = r.youngSkipped > 0 ? `; ${r.youngSkipped} unnamed object(s) younger than ${graceMs / 1000}s left alone` : '';
  const failed = r.failed > 0 ? `; ${r.failed} delete(s) failed (tried again by the next gc)` : '';
  const unattributed = r.unattributedLogs > 0 ? `; ${r.unattributedLogs} deleted volume log(s) not written by this catalog left alone` : '';
  const logs = `, ${r.logRecordsDeleted} log records${unattributed}`;
  lines.push(
    `gc${r.dryRun ? ' (dry run)' : ''}: ${verb} ${r.deletedObjects} unreferenced objects and ${r.orphansDeleted} orphans (${r.deletedBytes} bytes)${logs}${young}${failed}`,
  );
  return lines.join('\n') + '\n';
}
