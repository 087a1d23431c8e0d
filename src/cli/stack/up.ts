/**
 * `glidekv up VOLUME MOUNTPOINT`: the whole stack, bottom up.
 *
 *   volume (created if missing) -> device daemon (STATE/dev/volume)
 *   -> losetup -> mkfs.ext4 on first use -> mount STATE/ext4
 *   -> KV daemon on STATE/ext4/kv at MOUNTPOINT
 *
 * Each piece is recorded in STATE/stack.json as soon as it exists; any
 * failing step tears down what was made (teardown.ts) before the error is
 * reported. For tests, GLIDEKV_UP_FAIL_AT=device|loop|mkfs|ext4|kv makes
 * that step fail on purpose, and GLIDEKV_MKFS names another mkfs program.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_STORE_RETRY_TIMEOUT, fmtDuration, openGlideFsFromOptions, resolveGlideFsOptions, type GlideFsCliOptions } from '../glidefs-options.js';
import { CliError } from '../util.js';
import { defaultStateDir, findByMountpoint, findByVolume, loadState, saveState, type StackState } from './state.js';
import { alive, fsType, isEmptyDir, loopAttach, mountAt, readText, run, StepError, waitFor } from './system.js';
import { teardown } from './teardown.js';

const here = dirname(fileURLToPath(import.meta.url));
export const GLIDEKV_BIN = resolve(here, '..', '..', '..', 'bin', 'glidekv.mjs');

export const DEFAULT_SIZE = 1024 ** 3;
/**
 * Loop direct I/O: one copy of each page in the page cache (ext4's) instead
 * of two. Measured with bench:mount (256 MiB, MinIO): writes as fast or
 * faster than buffered; cold reads sometimes slower, because libfuse 2.9 has
 * no async_dio, so the kernel sends the loop's O_DIRECT reads one at a time
 * (the device's read-ahead makes up for part of it). `up --no-direct-io`
 * turns it off.
 */
export const DEFAULT_DIRECT_IO = true;
/** Read-ahead of the loop device (the kernel's default is 128 KiB: one block). */
export const LOOP_READ_AHEAD_KB = 2048;
/**
 * ext4 mount options. Not `journal_async_commit`: with it jbd2 writes the
 * commit block first and sends the device's cache flush last, ignoring that
 * flush's result, so a failed device fsync (the store down past
 * --store-retry-timeout) never reached ext4: every fsync kept returning 0
 * for bytes that were not in the store (found by the stack soak, longoutage
 * step; test/mount/store-outage.test.ts). Without it the commit block is
 * written with PREFLUSH+FUA and waited for: a failed flush aborts the journal
 * and the fsync fails with EIO. It costs a second device flush (one more log
 * PUT) per journal commit. `data=writeback`: the engine's durability rests on
 * its own fsyncs (a file's fsync writes its data before the commit in either
 * mode) and its checksummed records, not on data=ordered.
 */
export const EXT4_MOUNT_OPTIONS = 'noatime,data=writeback';

export interface UpFlags {
  size?: number;
  state?: string;
  valueThreshold?: number;
  sync?: string;
  directIo?: boolean;
  /** Device fsync mode (device.ts): 'upload' (default) or 'local'. */
  fsync?: 'upload' | 'local';
  /** The device daemon's --store-retry-timeout, ms (default 60 s; 0 = no time bound). */
  storeRetryTimeoutMs?: number;
  /** The device daemon's --wait-lease, ms: how long to wait while the volume's lease is held elsewhere (default 0). */
  waitLeaseMs?: number;
}

export function preflight(mountpoint: string): void {
  if (process.getuid?.() !== 0) throw new CliError('up must run as root (it uses losetup, mkfs.ext4 and mount)');
  if (!existsSync('/dev/fuse')) throw new CliError('/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available');
  const st = statSync(mountpoint, { throwIfNoEntry: false });
  if (!st) throw new CliError(`${mountpoint}: no such directory (create the mount point first)`);
  if (!st.isDirectory()) throw new CliError(`${mountpoint} is not a directory`);
  if (mountAt(mountpoint)) throw new CliError(`${mountpoint} is busy: something is mounted there already`);
}

function fail(step: string): void {
  if (process.env.GLIDEKV_UP_FAIL_AT === step) throw new StepError(`${step}: failing on purpose (GLIDEKV_UP_FAIL_AT=${step})`);
}

/** Starts `glidekv ARGS` detached, output to `logFile`; resolves its pid. */
function spawnDaemon(args: string[], logFile: string): number {
  const fd = openSync(logFile, 'a', 0o600);
  try {
    const child = spawn(process.execPath, [GLIDEKV_BIN, ...args], {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: process.env,
    });
    child.unref();
    if (!child.pid) throw new StepError(`cannot start ${args.slice(0, 2).join(' ')}`);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

/** Waits for a daemon's mount; a dead daemon is an error with its last log line. */
async function waitForDaemon(what: string, pid: number, logFile: string, logOffset: number, ready: RegExp, mounted: () => boolean, timeoutMs = 120_000): Promise<void> {
  let lastLine = '';
  await waitFor(
    `${what} to mount`,
    async () => {
      const text = (await readText(logFile)).slice(logOffset);
      lastLine = lastErrorLine(text);
      return ready.test(text) && mounted();
    },
    timeoutMs,
    () => (alive(pid) ? undefined : `${what} exited: ${lastLine || 'no output'} (log: ${logFile})`),
  );
}

function lastErrorLine(text: string): string {
  const lines = text.split('\n').filter((l) => l.trim());
  return (lines.filter((l) => /glidekv: /.test(l)).pop() ?? lines.pop() ?? '').replace(/^glidekv: /, '').trim();
}

function logSize(file: string): number {
  return statSync(file, { throwIfNoEntry: false })?.size ?? 0;
}

export async function up(volume: string, mountpointArg: string, globals: GlideFsCliOptions, flags: UpFlags, out: (line: string) => void): Promise<StackState> {
  const mountpoint = resolve(mountpointArg);
  preflight(mountpoint);
  if (!(await isEmptyDir(mountpoint))) throw new CliError(`${mountpoint} is not empty (the KV mount needs an empty directory)`);
  const resolved = resolveGlideFsOptions(globals);
  const stateDir = resolve(flags.state ?? defaultStateDir(volume));

  const other = findByMountpoint(mountpoint) ?? loadState(stateDir);
  if (other && (alive(other.devicePid) || alive(other.kvPid) || other.loopDevice || other.ext4Mounted)) {
    throw new CliError(`a stack is already up (or half up) at ${other.mountpoint} for volume '${other.volume}': run glidekv down ${other.mountpoint}`);
  }
  const same = findByVolume(volume);
  if (same && same.glidefs.catalog === resolved.catalogPath && alive(same.devicePid)) {
    throw new CliError(`volume '${volume}' is already up at ${same.mountpoint}`);
  }

  // 1. The volume.
  const g = await openGlideFsFromOptions(globals, { check: true });
  let createdVolume = false;
  let sizeBytes: number;
  try {
    const existing = g.fs.listVolumes().find((v) => v.name === volume);
    if (existing) {
      if (existing.snapshot) throw new CliError(`volume '${volume}' is a snapshot (read-only): fork it to mount it`);
      if (flags.size !== undefined && flags.size !== existing.sizeBytes) {
        throw new CliError(`volume '${volume}' exists with size ${existing.sizeBytes}; --size ${flags.size} does not match`);
      }
      sizeBytes = existing.sizeBytes;
    } else {
      sizeBytes = (await g.fs.createVolume(volume, flags.size ?? DEFAULT_SIZE)).sizeBytes;
      createdVolume = true;
    }
  } finally {
    await g.close();
  }

  const s: StackState = {
    version: 1,
    volume,
    mountpoint,
    stateDir,
    createdAt: Date.now(),
    glidefs: { store: resolved.storeUrl, catalog: resolved.catalogPath, cache: resolved.cacheDir, ...(resolved.cacheSize !== undefined ? { cacheSize: resolved.cacheSize } : {}) },
    engine: { valueThreshold: flags.valueThreshold, sync: flags.sync },
    deviceMountpoint: join(stateDir, 'dev'),
    deviceFile: join(stateDir, 'dev', 'volume'),
    directIo: flags.directIo ?? DEFAULT_DIRECT_IO,
    fsync: flags.fsync ?? 'upload',
    storeRetryTimeoutMs: flags.storeRetryTimeoutMs ?? DEFAULT_STORE_RETRY_TIMEOUT,
    deviceStatusFile: join(stateDir, 'device-status.json'),
    ext4Mountpoint: join(stateDir, 'ext4'),
    dataDir: join(stateDir, 'ext4', 'kv'),
    createdVolume,
  };
  mkdirSync(s.deviceMountpoint, { recursive: true, mode: 0o700 });
  mkdirSync(s.ext4Mountpoint, { recursive: true, mode: 0o700 });
  saveState(s);

  // The step now running, named in the error when it fails.
  let current = 'device';
  try {
    // 2. Device daemon.
    fail('device');
    const deviceLog = join(stateDir, 'device.log');
    const off = logSize(deviceLog);
    s.devicePid = spawnDaemon(
      [
        ...['--store', resolved.storeUrl, '--catalog', resolved.catalogPath, '--cache', resolved.cacheDir],
        ...(resolved.cacheSize !== undefined ? ['--cache-size', String(resolved.cacheSize)] : []),
        ...['device', 'mount', volume, s.deviceMountpoint, '--fsync', s.fsync ?? 'upload'],
        ...['--store-retry-timeout', `${s.storeRetryTimeoutMs}ms`, '--status-file', s.deviceStatusFile!],
        ...(flags.waitLeaseMs ? ['--wait-lease', `${flags.waitLeaseMs}ms`] : []),
      ],
      deviceLog,
    );
    saveState(s);
    if (flags.waitLeaseMs) out(`device   waiting up to ${fmtDuration(flags.waitLeaseMs)} for the volume's lease if another holder has it`);
    await waitForDaemon('device daemon', s.devicePid, deviceLog, off, /device .* mounted at /, () => mountAt(s.deviceMountpoint)?.fstype === 'fuse.glidekv-device', 120_000 + (flags.waitLeaseMs ?? 0));
    const retryText = s.storeRetryTimeoutMs! > 0 ? fmtDuration(s.storeRetryTimeoutMs!) : 'off';
    out(`device   ${s.deviceFile} (volume '${volume}', ${sizeBytes} bytes, pid ${s.devicePid}, fsync ${s.fsync ?? 'upload'}, store retry timeout ${retryText}, log ${deviceLog})`);

    // 3. Loop device.
    current = 'loop';
    fail('loop');
    s.loopDevice = await loopAttach(s.deviceFile, s.directIo);
    saveState(s);
    // Larger read-ahead on the loop device: a sequential reader asks for
    // several 128 KiB blocks at once, so the device daemon GETs them together.
    try {
      writeFileSync(`/sys/block/${s.loopDevice.slice(5)}/queue/read_ahead_kb`, String(LOOP_READ_AHEAD_KB));
    } catch {
      /* best effort */
    }
    out(`loop     ${s.loopDevice} (direct I/O ${s.directIo ? 'on' : 'off'}, read-ahead ${LOOP_READ_AHEAD_KB} KiB)`);

    // 4. ext4 on first use.
    current = 'mkfs';
    const type = await fsType(s.loopDevice);
    if (type === '') {
      fail('mkfs');
      // -J size=4 from 128 MiB up: a 4 MiB journal (mke2fs's smallest: 1024 blocks = 32 glidefs blocks;
      // mke2fs picks 32 MiB at 1 GiB). Journal writes go to glidefs' log as sectors and every journal block
      // written since the last checkpoint is folded (uploaded whole) by the next one: a smaller journal bounds
      // that fold (glidefs/FORMAT.md). 8 MiB -> 4 MiB took 32 block uploads (4 MiB) off bench reupload's
      // down per mode (10 values, 500 small, 3 rounds: separated fold 83 -> 51 blocks, inline 75 -> 43).
      const journal = sizeBytes >= 128 * 1024 * 1024 ? ['-J', 'size=4'] : [];
      await run(process.env.GLIDEKV_MKFS || 'mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'stride=32,stripe_width=32', ...journal, '-L', volume.slice(0, 16), s.loopDevice]);
      s.formatted = true;
      out(`mkfs     ext4 on ${s.loopDevice} (first use)`);
    } else if (type !== 'ext4') {
      throw new StepError(`volume '${volume}' holds a ${type} filesystem, not ext4`);
    }

    // 5. Mount the ext4.
    current = 'ext4';
    fail('ext4');
    await run('mount', ['-t', 'ext4', '-o', EXT4_MOUNT_OPTIONS, s.loopDevice, s.ext4Mountpoint]);
    s.ext4Mounted = true;
    saveState(s);
    mkdirSync(s.dataDir, { recursive: true });
    out(`ext4     ${s.ext4Mountpoint} (engine data ${s.dataDir})`);
    // This ext4 was mounted a moment ago by this process: no engine can hold
    // it open. A LOCK there is stale: left by a crash, or copied by a live
    // fork while the source's KV daemon (still alive, same pid) held it.
    const lock = join(s.dataDir, 'LOCK');
    if (existsSync(lock)) {
      rmSync(lock, { force: true });
      out(`         removed a stale engine lock (${lock})`);
    }

    // 6. KV daemon.
    current = 'kv';
    fail('kv');
    const kvLog = join(stateDir, 'kv.log');
    const koff = logSize(kvLog);
    const kvArgs = ['kv', 'mount', s.dataDir, mountpoint];
    if (flags.valueThreshold !== undefined) kvArgs.push('--value-threshold', String(flags.valueThreshold));
    if (flags.sync !== undefined) kvArgs.push('--sync', flags.sync);
    s.kvPid = spawnDaemon(kvArgs, kvLog);
    saveState(s);
    await waitForDaemon('kv daemon', s.kvPid, kvLog, koff, /kv mounted /, () => mountAt(mountpoint)?.fstype.startsWith('fuse') === true);
    out(`kv       ${mountpoint} (pid ${s.kvPid}, log ${kvLog})`);
    return s;
  } catch (err) {
    const first = (err as Error).message.split('\n')[0];
    const msg = first.startsWith(`${current}: `) ? first : `${current}: ${first}`;
    out(`up failed: ${msg}; taking down what was started`);
    const r = await teardown(s, (l) => out(`  ${l}`));
    for (const p of r.problems) out(`  cleanup problem: ${p}`);
    throw new CliError(r.problems.length ? `${msg} (and the cleanup was incomplete: ${r.problems.join('; ')}; run glidekv down ${mountpoint})` : msg);
  }
}
