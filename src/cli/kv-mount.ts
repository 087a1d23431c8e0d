/**
 * `glidekv kv mount DATA_DIR MOUNTPOINT`: the KV mount daemon (foreground).
 *
 * Contract with whoever starts it (`glidekv up` runs it as a child):
 *   stdout, once the kernel has the mount:
 *     glidekv: kv mounted <DATA_DIR> at <MOUNTPOINT> (pid <N>)
 *   SIGINT / SIGTERM: unmount (lazily), commit what open files still hold,
 *     close the engine, print `glidekv: kv unmounted <MOUNTPOINT>`, exit 0.
 *   SIGUSR2: engine.sync() (everything acknowledged is on disk; a live fork
 *     sends it before freezing), then prints
 *     `glidekv: kv sync done in <ms> ms` or `glidekv: kv sync failed: <msg>`.
 *   SIGUSR1: engine.reclaim(), then prints `glidekv: kv reclaim done:
 *     relocated <bytes> bytes, removed <n> segments in <ms> ms` or
 *     `glidekv: kv reclaim failed: <msg>`.
 *   If the mount disappears under it (`fusermount -u MOUNTPOINT`), it closes
 *     the engine the same way and exits 0.
 *   Startup failures: one line `glidekv: ...` on stderr, exit 1 (2 for usage).
 *
 * The daemon never does file I/O under MOUNTPOINT itself (its event loop
 * serves that I/O), and refuses a DATA_DIR inside MOUNTPOINT.
 */
import { existsSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { join, relative, resolve, isAbsolute } from 'node:path';
import { Command, Option } from 'commander';
import { open, type Engine, type EngineOptions } from '../index.js';
import { runDaemon } from '../../mount/fuse-daemon.js';
import { mountKv } from '../../mount/kv.js';
import { mountAt } from '../../mount/mountinfo.js';
import { clearSpillDir, DEFAULT_SPILL_THRESHOLD } from '../../mount/write-buffer.js';
import { CliError, parseSize, printError, redact } from './util.js';

/** Where write buffers spill, inside DATA_DIR. */
export const SPILL_DIR_NAME = '.glidekv-mount-spill';

interface MountFlags {
  sync?: 'always' | 'batch' | 'none';
  valueThreshold?: number;
  maxValueSize?: number;
  spillThreshold: number;
}

const DEFAULT_MAX_VALUE = 64 * 1024 * 1024;

function out(line: string): void {
  process.stdout.write(`glidekv: ${line}\n`);
}

function inside(child: string, parent: string): boolean {
  const r = relative(parent, child);
  return r === '' || (!r.startsWith('..') && !isAbsolute(r));
}

/** Runs one maintenance step on a signal and announces its outcome on stdout. */
async function maintenance(name: string, fn: () => Promise<string>): Promise<void> {
  try {
    out(`kv ${name} done${await fn()}`);
  } catch (err) {
    out(`kv ${name} failed: ${(err as Error).message.split('\n')[0]}`);
  }
}

async function runMount(dataDirArg: string, mountpointArg: string, flags: MountFlags): Promise<never> {
  const dataDir = resolve(dataDirArg);
  const mountpoint = resolve(mountpointArg);
  if (!existsSync('/dev/fuse')) throw new CliError('/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available');
  const mst = await stat(mountpoint).catch(() => undefined);
  if (!mst?.isDirectory()) throw new CliError(`${mountpoint}: no such directory (create the mount point first)`);
  if (inside(dataDir, mountpoint)) throw new CliError(`DATA_DIR ${dataDir} is inside MOUNTPOINT ${mountpoint}: the daemon would deadlock on its own mount`);
  if (mountAt(mountpoint)) throw new CliError(`${mountpoint} is already a mount point (unmount it first: fusermount -u ${mountpoint})`);
  await mkdir(dataDir, { recursive: true });

  const maxValueBytes = flags.maxValueSize ?? DEFAULT_MAX_VALUE;
  const engineOpts: EngineOptions = { maxValueBytes };
  if (flags.sync !== undefined) engineOpts.sync = flags.sync;
  if (flags.valueThreshold !== undefined) engineOpts.valueThreshold = flags.valueThreshold;

  // The lifecycle (signals, ready line, the mount going away, exit codes) is
  // the one of mount/fuse-daemon.ts, shared with the device daemon.
  return runDaemon(
    async (ctx) => {
      const engine: Engine = await open(dataDir, engineOpts);
      if (ctx.stopRequested) {
        await engine.close();
        out(`kv stopped before mounting ${mountpoint}`);
        return undefined;
      }
      const spillDir = join(dataDir, SPILL_DIR_NAME);
      let mount;
      try {
        await clearSpillDir(spillDir);
        mount = await mountKv(engine, mountpoint, {
          dataDir,
          spillDir,
          spillThreshold: flags.spillThreshold,
          maxValueBytes,
          onError: (msg) => process.stderr.write(`glidekv: kv mount: ${msg}\n`),
        });
      } catch (err) {
        await engine.close().catch(() => {});
        throw new CliError(`cannot mount ${mountpoint}: ${(err as Error).message}`);
      }
      const m = mount;
      return {
        readyLine: `glidekv: kv mounted ${dataDir} at ${mountpoint} (pid ${process.pid})`,
        mountpoint,
        signals: {
          SIGUSR2: () =>
            maintenance('sync', async () => {
              const t = Date.now();
              await engine.sync();
              return ` in ${Date.now() - t} ms`;
            }),
          SIGUSR1: () =>
            maintenance('reclaim', async () => {
              const r = await engine.reclaim();
              return `: relocated ${r.relocatedBytes} bytes, removed ${r.segmentsRemoved} segments in ${Math.round(r.durationMs)} ms`;
            }),
        },
        onSignalRefused: (sig) => out(`kv ${sig === 'SIGUSR2' ? 'sync' : 'reclaim'} failed: the daemon is stopping`),
        async stop(why, running) {
          let ok = true;
          try {
            for (const f of await m.unmount()) {
              ok = false;
              process.stderr.write(`glidekv: kv mount: uncommitted at shutdown, lost: ${f}\n`);
            }
          } catch (err) {
            ok = false;
            printError(err);
          }
          await running;
          try {
            await engine.close();
          } catch (err) {
            ok = false;
            printError(err);
          }
          out(`kv unmounted ${mountpoint}${why ? ` (${why})` : ''}`);
          return ok;
        },
      };
    },
    { name: 'glidekv', redact, stopping: 'unmounting' },
  );
}

export function register(program: Command): void {
  let kv = program.commands.find((c) => c.name() === 'kv');
  if (!kv) kv = program.command('kv').description('The key-value engine on a data directory.');
  kv.command('mount')
    .summary('Serve DATA_DIR as files under MOUNTPOINT (FUSE daemon): namespaces are dirs, keys are files.')
    .description(
      'Serve the engine on DATA_DIR as files under MOUNTPOINT (FUSE), in the foreground:\n' +
        '/ lists namespaces (mkdir creates one, rmdir drops an empty one), /NS/KEY is a value.\n' +
        'A file written through the mount is committed as one put when it is closed.',
    )
    .argument('<DATA_DIR>', 'engine data directory (created if missing; must not be under MOUNTPOINT)')
    .argument('<MOUNTPOINT>', 'an existing, empty directory')
    .addOption(
      new Option('--sync <mode>', 'durability: always (fsync per write), batch (group commit, the default), none (leave it to the OS)')
        .choices(['always', 'batch', 'none'])
        .default(undefined, 'batch'),
    )
    .addOption(
      new Option('--value-threshold <size>', 'values of this size or more go to the blob store (default 128K); 0 = keep every value inline')
        .argParser(parseSize)
        .default(undefined, '128K'),
    )
    .addOption(
      new Option('--max-value-size <size>', 'largest value (default 64M); writing a bigger file fails with EFBIG')
        .argParser(parseSize)
        .default(undefined, '64M'),
    )
    .addOption(
      new Option('--spill-threshold <size>', 'bytes an open file keeps in memory before it spills to DATA_DIR/' + SPILL_DIR_NAME)
        .argParser(parseSize)
        .default(DEFAULT_SPILL_THRESHOLD, '1M'),
    )
    .addHelpText(
      'after',
      `
Signals:
  SIGINT, SIGTERM  unmount, commit open files, close the engine, exit 0
  SIGUSR2          sync: make every acknowledged write durable (before a live fork);
                   prints "glidekv: kv sync done in N ms"
  SIGUSR1          reclaim (compaction) while mounted;
                   prints "glidekv: kv reclaim done: relocated N bytes, removed M segments in D ms"

Once mounted it prints: glidekv: kv mounted DATA_DIR at MOUNTPOINT (pid N)

Key names: bytes that cannot be in a file name are percent-encoded: '/' -> %2F,
NUL -> %00, '%' -> %25, bytes that are not UTF-8 -> %XX, the keys '.' and '..' ->
%2E and %2E%2E; a name longer than 255 bytes is cut and ends in %~ and 32 hex
digits of the key's SHA-256.

Errors: no namespace/key ENOENT, mkdir of an existing namespace EEXIST, rmdir of a
non-empty one ENOTEMPTY, a value over --max-value-size EFBIG, mv across namespaces
EXDEV (mv then copies), DATA_DIR full ENOSPC, engine poisoned (writes refused after a
failed append or fsync, until it is reopened) EROFS, corruption EIO. A commit happens
when a file is closed, so close() (and fsync) return its error: cp fails loudly.

Examples:
  $ glidekv kv mount /srv/kv /mnt/kv &
  $ mkdir /mnt/kv/photos && cp cat.jpg /mnt/kv/photos/cat
  $ getfattr -n user.glidekv.revision /mnt/kv/photos/cat
  $ kill -USR2 <pid>     # sync
  $ kill <pid>           # unmount and exit`,
    )
    .action(async (dataDir: string, mountpoint: string, flags: MountFlags) => {
      await runMount(dataDir, mountpoint, flags);
    });
}
