/**
 * The mount commands: `device mount` (the device daemon) and the whole stack,
 * `up`, `down`, `status`, `fork`. The pieces live in ./stack/.
 */
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { fmtCacheSize, fmtDuration, parseRetryTimeout, type GlideFsCliOptions } from './glidefs-options.js';
import { CliError, parseSize, printJson } from './util.js';
import { runDeviceDaemon } from './stack/device-daemon.js';
import { up } from './stack/up.js';
import { teardown } from './stack/teardown.js';
import { findByMountpoint, loadState } from './stack/state.js';
import { fork } from './stack/fork.js';
import { statusAll } from './stack/status.js';

function globals(cmd: Command): GlideFsCliOptions {
  const o = cmd.optsWithGlobals() as GlideFsCliOptions;
  return { store: o.store, catalog: o.catalog, cache: o.cache, cacheSize: o.cacheSize };
}

/** `--store-retry-timeout`, the same on `device mount` and `up`. */
function storeRetryOption(): Option {
  return new Option(
    '--store-retry-timeout <duration>',
    'how long a failing store request (behind a read or an fsync) is retried with backoff before the operation fails with EIO; e.g. 60s, 2m; 0 = no time bound (5 quick retries)',
  )
    .argParser(parseRetryTimeout)
    .default(60_000, '60s');
}

/** `--wait-lease`, the same on `device mount` and `up`. */
function waitLeaseOption(): Option {
  return new Option(
    '--wait-lease <duration>',
    "while the volume's lease is held elsewhere (E_LEASED: another machine, or a stack that was not taken down), keep trying this long; e.g. 45s, 2m (default 0: fail at once)",
  )
    .argParser((v) => {
      try {
        return parseRetryTimeout(v);
      } catch {
        throw new CliError(`--wait-lease: '${v}' is not a duration of at most 24 h (e.g. 45s, 2m)`, 2);
      }
    })
    .default(0, '0');
}

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const u = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${u[i]}`;
}

const out = (line: string) => process.stdout.write(line + '\n');

export function register(program: Command): void {
  let device = program.commands.find((c) => c.name() === 'device');
  if (!device) device = program.command('device').description('The device mount: a volume as one file, for losetup.');
  device
    .command('mount')
    .summary('serve a volume as DIR/volume (FUSE, foreground daemon)')
    .description(
      'Serve VOLUME as the file DIR/volume (FUSE), in the foreground. Reads and writes go to the\n' +
        'volume; fsync of the file uploads and commits before it returns. SIGINT/SIGTERM: unmount,\n' +
        'flush, exit 0. After a kill -9 nothing written is lost: fusermount -u DIR and mount again.',
    )
    .argument('<VOLUME>', 'volume name (glidekv volume create)')
    .argument('<DIR>', 'an existing directory to mount on')
    .addOption(new Option('--flush-interval <seconds>', 'flush dirty blocks this often (0 = only on fsync, SIGUSR1 and unmount)').argParser((v) => {
      if (!/^\d+$/.test(v)) throw new CliError(`'${v}' is not a number of seconds`, 2);
      return Number(v);
    }).default(30))
    .addOption(
      new Option('--fsync <mode>', "what fsync of DIR/volume does: 'upload' (upload + commit before it returns) or 'local' (sync the local cache only; uploads on the timer, SIGUSR1 and stop)")
        .choices(['upload', 'local'])
        .default('upload'),
    )
    .addOption(storeRetryOption())
    .addOption(waitLeaseOption())
    .option('--status-file <file>', "keep FILE (JSON, outside DIR) current with the store's state: 'ok', or 'waiting' while failing requests are retried (glidekv status reads it)")
    .addHelpText(
      'after',
      `
The store is checked (one authenticated request) before anything is mounted:
an unreachable endpoint, a missing bucket or bad credentials end the command
with one line and nothing mounted.

SIGUSR1: upload + commit now; prints 'glidekv: device VOLUME upload done (...)' on stderr.

Once mounted it prints: glidekv: device VOLUME mounted at DIR/volume (SIZE bytes, pid N)

Examples:
  $ glidekv volume create data --size 4G
  $ glidekv device mount data /run/data-dev &
  $ losetup --find --show --direct-io=on /run/data-dev/volume
  $ kill %1       # flush, unmount, exit`,
    )
    .action(async (volume: string, dir: string, flags: { flushInterval: number; fsync: 'upload' | 'local'; storeRetryTimeout: number; statusFile?: string; waitLease: number }, cmd: Command) => {
      await runDeviceDaemon(volume, dir, globals(cmd), {
        flushInterval: flags.flushInterval,
        fsync: flags.fsync,
        storeRetryTimeoutMs: flags.storeRetryTimeout,
        statusFile: flags.statusFile,
        waitLeaseMs: flags.waitLease,
      });
    });

  program
    .command('up')
    .summary('bring up the whole stack: device daemon, loop device, ext4, KV mount (root)')
    .description(
      'Bring up the whole stack for VOLUME (as root): the device daemon, a loop device, ext4 (made on\n' +
        'first use), and the KV mount at MOUNTPOINT. Creates the volume if it is missing.',
    )
    .argument('<VOLUME>', 'volume name')
    .argument('<MOUNTPOINT>', 'an existing, empty directory for the KV mount')
    .option('--size <size>', 'size of a new volume (default 1G; a multiple of 128K)', parseSize)
    .option('--state <dir>', 'where the stack keeps its mounts, logs and state (default $HOME/.glidekv/run/VOLUME)')
    .option('--value-threshold <size>', 'engine: values of this size or more go to the blob store (0 = never)', parseSize)
    .addOption(new Option('--sync <mode>', 'engine durability').choices(['always', 'batch', 'none']))
    .option('--no-direct-io', 'attach the loop device without direct I/O (two page-cache copies)')
    .addOption(
      new Option('--fsync <mode>', "device fsync: 'upload' (each fsync/journal commit uploads + commits) or 'local' (local disk only; uploads every 30 s, on fork and down)")
        .choices(['upload', 'local'])
        .default('upload'),
    )
    .addOption(storeRetryOption())
    .addOption(waitLeaseOption())
    .addHelpText(
      'after',
      `
The pieces (printed once up; glidekv status lists them):
  STATE/dev/volume   the device mount (glidekv device mount)
  /dev/loopN         loop device on it (direct I/O)
  STATE/ext4         ext4 on the loop device; STATE/ext4/kv is the engine's data directory
  MOUNTPOINT         the KV mount (glidekv kv mount)
If a step fails, what was started is taken down again.

Examples:
  $ sudo glidekv up data /mnt/kv --size 4G
  $ cp photo.jpg /mnt/kv/photos/cat       # after: mkdir /mnt/kv/photos
  $ sudo glidekv down /mnt/kv`,
    )
    .action(async (volume: string, mountpoint: string, flags: { size?: number; state?: string; valueThreshold?: number; sync?: string; directIo: boolean; fsync: 'upload' | 'local'; storeRetryTimeout: number; waitLease: number }, cmd: Command) => {
      const t = performance.now();
      const { storeRetryTimeout, waitLease, ...rest } = flags;
      const s = await up(volume, mountpoint, globals(cmd), { ...rest, directIo: flags.directIo, storeRetryTimeoutMs: storeRetryTimeout, waitLeaseMs: waitLease }, out);
      out(`up       '${s.volume}' at ${s.mountpoint} in ${Math.round(performance.now() - t)} ms (state ${s.stateDir})`);
    });

  program
    .command('down')
    .summary('take down the stack at MOUNTPOINT, leaving nothing behind (root)')
    .description('Take down the stack mounted at MOUNTPOINT, in reverse: KV mount, ext4, loop device, device daemon (which flushes).')
    .argument('<MOUNTPOINT>', 'the KV mount point given to glidekv up')
    .option('--state <dir>', 'the stack\'s state directory (found from MOUNTPOINT when omitted)')
    .addOption(
      new Option('--busy-timeout <duration>', 'how long a busy unmount (a process still using the filesystem) is retried before it is detached lazily; e.g. 60s, 2m')
        .argParser(parseRetryTimeout)
        .default(60_000, '60s'),
    )
    .addHelpText(
      'after',
      '\nNothing is left behind: no process, mount or loop device. Also cleans up after a failed up.\n' +
        'Each step waits for what it undoes to be gone (with a deadline); a step that fails is named\n' +
        'in the one-line error, the later steps are still done, and running down again finishes the job.\n\nExamples:\n  $ sudo glidekv down /mnt/kv',
    )
    .action(async (mountpoint: string, flags: { state?: string; busyTimeout: number }) => {
      const mp = resolve(mountpoint);
      const s = flags.state ? loadState(resolve(flags.state)) : findByMountpoint(mp);
      if (!s) throw new CliError(`nothing is up at ${mp} (no stack state found; glidekv status lists what is up)`);
      if (process.getuid?.() !== 0) throw new CliError('down must run as root (it uses umount and losetup)');
      const t = performance.now();
      const r = await teardown(s, (l) => out(l), { busyTimeoutMs: flags.busyTimeout });
      if (r.problems.length) throw new CliError(`down of ${mp} incomplete: ${r.problems.join('; ')}`);
      out(`down     '${s.volume}' at ${mp} in ${Math.round(performance.now() - t)} ms`);
    });

  program
    .command('status')
    .description('List the stacks that are up (checked against the system: processes, mounts, loop devices).')
    .option('--json', 'print JSON: [{ volume, mountpoint, state, problems, devicePid, loopDevice, ... }]')
    .option('--state <dir>', 'only the stack with this state directory')
    .addHelpText('after', '\nExamples:\n  $ glidekv status\n  $ glidekv status --json | jq -r ".[].mountpoint"')
    .action((flags: { json?: boolean; state?: string }) => {
      const list = statusAll(flags.state ? resolve(flags.state) : undefined);
      if (flags.json) {
        printJson(list);
        return;
      }
      if (list.length === 0) {
        out('nothing is up');
        return;
      }
      for (const s of list) {
        out(`${s.volume}  ${s.state}  ${s.mountpoint}`);
        out(`  device ${s.deviceFile} (pid ${s.devicePid ?? '-'}, fsync ${s.fsync}, store retry timeout ${s.storeRetryTimeoutMs > 0 ? fmtDuration(s.storeRetryTimeoutMs) : 'off'})  loop ${s.loopDevice ?? '-'}${s.directIo ? ' dio' : ''}`);
        if (s.storeOutage) {
          const o = s.storeOutage;
          out(
            `  store WAITING: requests failing for ${fmtDuration(Date.now() - o.sinceMs)}, ${o.operations} waiting, ${o.retries} retries` +
              (o.giveUpAtMs !== undefined ? `; gives up (EIO) in ${fmtDuration(Math.max(0, o.giveUpAtMs - Date.now()))}` : '') +
              `; last error: ${o.lastError}`,
          );
        }
        out(`  ext4 ${s.ext4Mountpoint}  kv pid ${s.kvPid ?? '-'}`);
        out(`  cache ${s.cache} (size ${fmtCacheSize(s.cacheSize)} per volume)`);
        if (s.problems.length) out(`  problems: ${s.problems.join(', ')}`);
      }
    });

  program
    .command('fork')
    .summary('fork a volume; live (sync, freeze, flush, fork, thaw) when it is up')
    .description(
      'Fork VOLUME to NEW. If VOLUME is up this is a live fork: the engine syncs, the ext4 is frozen,\n' +
        'the volume flushed and forked, the ext4 thawed. NEW then holds exactly the keys acknowledged\n' +
        'before the fork; mount it with glidekv up NEW OTHER_MOUNTPOINT.',
    )
    .argument('<VOLUME>', 'source volume')
    .argument('<NEW>', 'name of the fork')
    .option('--state <dir>', 'state directory of VOLUME\'s stack (found from the volume name when omitted)')
    .option('--json', 'print { source, fork, live, durationMs, frozenMs, engineSyncMs, uploads, uploadedBytes, rowsCopied, catalogMs, checkpointMs }')
    .addHelpText('after', '\nExamples:\n  $ sudo glidekv fork data data-test\n  $ sudo glidekv up data-test /mnt/kv-test')
    .action(async (volume: string, name: string, flags: { state?: string; json?: boolean }, cmd: Command) => {
      const r = await fork(volume, name, globals(cmd), flags.state ? resolve(flags.state) : undefined);
      if (flags.json) return printJson(r);
      out(
        `forked '${r.source}' -> '${r.fork}'${r.live ? ' live' : ''} in ${r.durationMs} ms` +
          (r.live ? ` (engine sync ${r.engineSyncMs} ms, frozen ${r.frozenMs} ms)` : '') +
          `; uploaded ${fmtBytes(r.uploadedBytes)} in ${r.uploads} objects`,
      );
    });
}
