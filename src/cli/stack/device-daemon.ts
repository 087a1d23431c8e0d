/**
 * `glidekv device mount VOLUME DIR`: the device daemon (foreground).
 *
 * Contract with whoever starts it (`glidekv up` runs it as a detached child):
 *   stdout, once the kernel has the mount:
 *     glidekv: device VOLUME mounted at DIR/volume (SIZE bytes, pid N)
 *   SIGINT / SIGTERM: unmount (`fusermount -u`; lazily if a loop device still
 *     holds the file), flush the volume (upload + commit), close it, print
 *     `glidekv: device VOLUME unmounted`, exit 0.
 *   Every `--flush-interval` seconds with dirty blocks: a flush (upload + commit).
 *   `--fsync upload` (default): fsync of DIR/volume uploads and commits.
 *   `--fsync local`: fsync only syncs the local cache (data + dirty set);
 *     uploads come from the timer, SIGUSR1 and the stop.
 *   SIGUSR1: flush now (upload + commit), then on stderr one line
 *     `glidekv: device VOLUME upload done (N flushes)` or
 *     `glidekv: device VOLUME upload failed: MSG` (what `glidekv fork` waits for).
 *   SIGUSR2: flush, then checkpoint the volume (FORMAT.md, "Layers"), then one line
 *     `glidekv: device VOLUME checkpoint done (record N)` or `... checkpoint failed: MSG`
 *     (a live `glidekv fork` asks for it: a fork lies on a checkpoint).
 *   Startup failures: one line `glidekv: ...` on stderr, exit 1. The store is
 *     checked before anything is mounted (endpoint, bucket, credentials: one
 *     cheap authenticated request), so bad credentials never get as far as a
 *     mount whose first fsync fails.
 *   `--store-retry-timeout D` (default 60s): a failing store request behind a
 *     read or an fsync is retried with backoff for up to D before the
 *     operation fails (EIO); a store that is down for a few seconds is ridden
 *     through. 0: no time bound (5 quick retries, about a second).
 *   `--status-file F`: the daemon keeps F (JSON, DeviceStatusFile below)
 *     current: written at start, whenever the store starts or stops failing,
 *     and every STATUS_POLL_MS while it waits (what `glidekv status` shows).
 *     Written atomically (temp file + rename); F must not be inside DIR.
 */
import { existsSync } from 'node:fs';
import { rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, relative, resolve, isAbsolute } from 'node:path';
import { isGlideFsError } from '../../../glidefs/errors.js';
import { RetryStore, type RetryOutage } from '../../../glidefs/retry-store.js';
import { mountDevice, type DeviceFsyncMode } from '../../../mount/device.js';
import { runDaemon } from '../../../mount/fuse-daemon.js';
import { DEFAULT_STORE_RETRY_TIMEOUT, fmtDuration, openGlideFsFromOptions, retryOptionsFor, type GlideFsCliOptions } from '../glidefs-options.js';
import { CliError, redact } from '../util.js';
import { mountAt } from './system.js';

export interface DeviceDaemonFlags {
  flushInterval: number;
  fsync?: DeviceFsyncMode;
  /** Time bound of a failing store request's retries, ms (0: no time bound). Default 60 s. */
  storeRetryTimeoutMs?: number;
  /** Where to publish DeviceStatusFile (outside DIR). */
  statusFile?: string;
  /** While another holder has the volume's lease (E_LEASED), keep trying for this long, ms (default 0: fail at once). */
  waitLeaseMs?: number;
}

/** How often a start waiting for the volume's lease (--wait-lease) tries again. */
const LEASE_POLL_MS = 2000;

/** STATUS_FILE (JSON): the device daemon's view of its store, for `glidekv status`. */
export interface DeviceStatusFile {
  version: 1;
  pid: number;
  volume: string;
  storeRetryTimeoutMs: number;
  /**
   * 'serving', or 'stopping' after SIGTERM/SIGINT: then the file is rewritten
   * every STOP_HEARTBEAT_MS (updatedMs moves) until the daemon exits, so that
   * `glidekv down` can tell a long final flush from a daemon whose event loop
   * is blocked (teardown.ts).
   */
  phase: 'serving' | 'stopping';
  /** 'ok', or 'waiting': requests are failing and being retried (see outage). */
  store: 'ok' | 'waiting';
  outage?: RetryOutage;
  /** The last outage that ended, if any: how long it lasted. */
  lastOutage?: { sinceMs: number; endedMs: number; retries: number; lastError: string };
  updatedMs: number;
}

/** How often the daemon looks at its store's outage state while running. */
const STATUS_POLL_MS = 250;
/** How often a stopping daemon rewrites its status file (a sign of life for `down`). */
export const STOP_HEARTBEAT_MS = 1000;

async function writeStatusFile(file: string, st: DeviceStatusFile): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(st) + '\n', { mode: 0o600 });
  await rename(tmp, file);
}

export async function runDeviceDaemon(volumeName: string, dirArg: string, globals: GlideFsCliOptions, flags: DeviceDaemonFlags): Promise<never> {
  const dir = resolve(dirArg);
  if (!existsSync('/dev/fuse')) throw new CliError('/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available');
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new CliError(`${dir}: no such directory (create the mount point first)`);
  if (mountAt(dir)) throw new CliError(`${dir} is already a mount point (unmount it first: fusermount -u ${dir})`);
  const statusFile = flags.statusFile ? resolve(flags.statusFile) : undefined;
  if (statusFile) {
    const r = relative(dir, statusFile);
    if (r === '' || (!r.startsWith('..') && !isAbsolute(r))) throw new CliError(`--status-file ${statusFile} is inside ${dir}: the daemon would write to its own mount`, 2);
    if (!(await stat(dirname(statusFile)).catch(() => undefined))?.isDirectory()) throw new CliError(`--status-file ${statusFile}: its directory does not exist`, 2);
  }
  const storeRetryTimeoutMs = flags.storeRetryTimeoutMs ?? DEFAULT_STORE_RETRY_TIMEOUT;

  return runDaemon(
    async (ctx) => {
      // check: a cheap authenticated request (list of at most one key) before
      // anything is mounted; bad credentials or a missing bucket end here.
      const g = await openGlideFsFromOptions(globals, { check: true, retry: retryOptionsFor(storeRetryTimeoutMs) });
      let volume;
      const leaseDeadline = Date.now() + (flags.waitLeaseMs ?? 0);
      let waitingSaid = false;
      for (;;) {
        try {
          volume = await g.fs.openVolume(volumeName);
          break;
        } catch (err) {
          // --wait-lease: another holder's lease (a machine that was lost, a stack not yet down) expires or is released
          if (isGlideFsError(err, 'E_LEASED') && Date.now() < leaseDeadline && !ctx.stopRequested) {
            if (!waitingSaid) {
              process.stderr.write(`glidekv: device ${volumeName}: ${redact(err.message.split('\n')[0])}; waiting up to ${fmtDuration(flags.waitLeaseMs ?? 0)} for it\n`);
              waitingSaid = true;
            }
            await new Promise((r) => setTimeout(r, Math.min(LEASE_POLL_MS, Math.max(0, leaseDeadline - Date.now()))));
            continue;
          }
          await g.close().catch(() => undefined);
          throw err;
        }
      }
      if (ctx.stopRequested) {
        await volume.close().catch(() => undefined);
        await g.close().catch(() => undefined);
        return undefined;
      }
      const log = (line: string) => process.stderr.write(`glidekv: ${redact(line)}\n`);
      let mount;
      try {
        mount = await mountDevice(volume, dir, { log, fsync: flags.fsync ?? 'upload' });
      } catch (err) {
        await g.close().catch(() => undefined);
        throw err;
      }
      log(`device ${volumeName}: mount options ${mount.optionString}, fsync ${mount.fsyncMode}, store retry timeout ${storeRetryTimeoutMs > 0 ? fmtDuration(storeRetryTimeoutMs) : 'off'}`);
      const m = mount;
      const onUsr1 = () =>
        m.flushNow().then(
          () => log(`device ${volumeName} upload done (${m.flushes} flushes)`),
          (err) => log(`device ${volumeName} upload failed: ${(err as Error)?.message ?? String(err)}`.split('\n')[0]),
        );
      // SIGUSR2: flush, then checkpoint (fold the log with the bytes in this cache): what a live fork needs first
      const onUsr2 = () =>
        m
          .flushNow()
          .then(() => volume.checkpoint())
          .then(
            (r) => log(`device ${volumeName} checkpoint done (record ${r.seq})`),
            (err) => log(`device ${volumeName} checkpoint failed: ${(err as Error)?.message ?? String(err)}`.split('\n')[0]),
          );
      const timer =
        flags.flushInterval > 0
          ? setInterval(() => {
              if (volume.dirtyBlocks > 0) mount.flushNow().catch((err) => log(`device ${volumeName}: timed flush failed: ${(err as Error).message}`));
            }, flags.flushInterval * 1000)
          : setInterval(() => {}, 1 << 30);
      // The store's outage state, published for `glidekv status` and logged
      // when it starts and ends.
      const retry = g.store instanceof RetryStore ? g.store : undefined;
      const status: DeviceStatusFile = { version: 1, pid: process.pid, volume: volumeName, storeRetryTimeoutMs, phase: 'serving', store: 'ok', updatedMs: Date.now() };
      let writing: Promise<void> = Promise.resolve();
      const publish = () => {
        if (!statusFile) return;
        status.updatedMs = Date.now();
        const copy = { ...status };
        writing = writing.then(() => writeStatusFile(statusFile, copy)).catch((err) => {
          log(`device ${volumeName}: cannot write ${statusFile}: ${(err as Error).message}`);
        });
      };
      publish();
      await writing;
      let failuresBefore = 0;
      const watcher = setInterval(() => {
        const o = retry?.outage();
        if (o) {
          o.lastError = redact(o.lastError);
          if (status.store === 'ok') {
            failuresBefore = retry!.stats().failures;
            const bound = storeRetryTimeoutMs > 0 ? `for up to ${fmtDuration(storeRetryTimeoutMs)}` : 'a few times';
            log(`device ${volumeName}: store failing, retrying ${bound}: ${o.lastError}`);
          }
          status.store = 'waiting';
          status.outage = o;
          publish();
        } else if (status.store === 'waiting') {
          const was = status.outage!;
          const gaveUp = retry!.stats().failures - failuresBefore;
          log(
            `device ${volumeName}: store outage over after ${fmtDuration(Date.now() - was.sinceMs)}` +
              (gaveUp > 0 ? `; ${gaveUp} request(s) gave up (the operations behind them failed with EIO)` : '; every request went through'),
          );
          status.lastOutage = { sinceMs: was.sinceMs, endedMs: Date.now(), retries: was.retries, lastError: was.lastError };
          status.store = 'ok';
          status.outage = undefined;
          publish();
        }
      }, STATUS_POLL_MS);
      return {
        readyLine: `glidekv: device ${volumeName} mounted at ${mount.file} (${volume.sizeBytes} bytes, pid ${process.pid})`,
        signals: { SIGUSR1: onUsr1, SIGUSR2: onUsr2 },
        async stop() {
          clearInterval(timer);
          status.phase = 'stopping';
          publish();
          const heartbeat = setInterval(publish, STOP_HEARTBEAT_MS);
          // Test hook (like up's GLIDEKV_UP_FAIL_AT): block the event loop as a
          // stuck stop would, to test how `down` deals with it.
          if (process.env.GLIDEKV_TEST_DEVICE_STOP_HANG === '1') {
            await writing;
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
          }
          try {
            await mount.unmount({ lazy: true });
          } finally {
            try {
              await g.close();
            } finally {
              clearInterval(heartbeat);
              clearInterval(watcher);
              await writing;
              if (statusFile) await rm(statusFile, { force: true }).catch(() => undefined);
            }
          }
          process.stdout.write(`glidekv: device ${volumeName} unmounted\n`);
        },
      };
    },
    { name: 'glidekv', redact, stopping: 'flushing and unmounting' },
  );
}
