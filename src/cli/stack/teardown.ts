/**
 * Takes a stack down in the reverse order of `up`, undoing only what exists,
 * and carrying on past a failing step so nothing is left behind:
 *
 *   0. thaw the ext4 if a killed fork left it frozen
 *   1. KV daemon: SIGTERM (it unmounts, commits open files, closes the
 *      engine); if it is gone or stuck, `umount -l MOUNTPOINT`
 *   2. ext4: `umount` (writes back and checkpoints); retried while busy,
 *      lazy once `busyTimeoutMs` has passed
 *   3. loop device: `losetup -d` (only if it still backs onto our device
 *      file), then wait for the kernel to release it
 *   4. device daemon: SIGTERM (it unmounts, flushes the volume, exits 0);
 *      if it is gone or stuck, `umount -l` of the device mount
 *
 * Each step re-reads the system (pids, /proc/self/mountinfo, /sys/block) so a
 * second `down` after a partial one finishes the job.
 *
 * On a loaded machine every step may take longer than usual, so each waits
 * for a real condition with a deadline, never for a fixed time: a process to
 * be gone (KV_GRACE_MS, then SIGKILL and KILL_WAIT_MS), a busy unmount
 * (EBUSY: a process is still leaving the filesystem) retried with backoff for
 * `busyTimeoutMs` before a lazy detach, a loop device to be released
 * (LOOP_RELEASE_MS after the unmount; after a lazy one, busyTimeoutMs
 * again), the mounts to be gone. The device daemon is not stopped while a
 * loop device still writes to its file. A step that
 * still fails is reported as `STEP: what, and what holds it`, and the steps
 * after it are still tried.
 */
import { alive, holdersOf, isOurs, loopBackingFile, loopDetach, loopsFor, mountAt, run, stopProcess, StepError, unmountRetrying, waitFor } from './system.js';
import { dropState, saveState, type StackState } from './state.js';
import { deviceStatus } from './status.js';
import { DEFAULT_STORE_RETRY_TIMEOUT, openGlideFsFromOptions, retryOptionsFor } from '../glidefs-options.js';

export interface TeardownReport {
  steps: string[];
  problems: string[];
}

export interface TeardownOptions {
  /** How long a busy unmount (EBUSY) is retried before a lazy detach, ms (default 60 s). */
  busyTimeoutMs?: number;
}

/** How long the device daemon may take to flush on SIGTERM (it is uploading). */
const DEVICE_FLUSH_GRACE_MS = 30 * 60_000;
const KV_GRACE_MS = 60_000;
export const DEFAULT_BUSY_TIMEOUT_MS = 60_000;
/** How long a loop device may take to go after `losetup -d` (its last user closing it). */
const LOOP_RELEASE_MS = 60_000;
/** How long the mounts may take to leave the mount table at the end. */
const MOUNTS_GONE_MS = 60_000;

/**
 * How long a stopping device daemon may show no sign of life (its status
 * file's heartbeat, device-daemon.ts STOP_HEARTBEAT_MS) before `down`
 * treats its event loop as blocked. GLIDEKV_DEVICE_STALE_MS overrides it
 * (tests).
 */
const DEVICE_STALE_MS = 90_000;

/**
 * Stops the device daemon: SIGTERM, then it unmounts, flushes and exits;
 * that may take long (uploads), up to DEVICE_FLUSH_GRACE_MS. A daemon that
 * shows no sign of life for DEVICE_STALE_MS while stopping (its event loop
 * is blocked: it would never finish) is killed, and its flush is done here
 * instead: its dirty blocks are in the local cache (the dirty set survives
 * kill -9), so opening the volume on the same catalog and cache and flushing
 * it uploads exactly what the daemon would have. Returns the step's line.
 */
async function stopDevice(s: StackState, log: (line: string) => void): Promise<string> {
  const pid = s.devicePid!;
  const staleMs = Number(process.env.GLIDEKV_DEVICE_STALE_MS) || DEVICE_STALE_MS;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return `device daemon (pid ${pid}) was gone`;
  }
  const t0 = Date.now();
  const end = t0 + DEVICE_FLUSH_GRACE_MS;
  let stuck = false;
  while (Date.now() < end) {
    if (!alive(pid)) return `device daemon (pid ${pid}) flushed and stopped`;
    if (s.deviceStatusFile) {
      const st = deviceStatus(s);
      const lastSign = Math.max(t0, st?.phase === 'stopping' ? st.updatedMs : 0);
      if (Date.now() - lastSign > staleMs) {
        stuck = true;
        break;
      }
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  if (!stuck) {
    await stopProcess(pid, 0);
    throw new StepError(`device daemon (pid ${pid}) did not stop in ${DEVICE_FLUSH_GRACE_MS / 60_000} min and was killed; its dirty blocks stay in the cache for the next mount`);
  }
  log(`device daemon (pid ${pid}) shows no sign of life for ${Math.round(staleMs / 1000)} s while stopping: killing it and flushing its cache here`);
  await stopProcess(pid, 0);
  if (mountAt(s.deviceMountpoint)) await run('umount', ['-l', s.deviceMountpoint]);
  const g = await openGlideFsFromOptions(
    { store: s.glidefs.store, catalog: s.glidefs.catalog, cache: s.glidefs.cache, cacheSize: s.glidefs.cacheSize },
    { check: true, retry: retryOptionsFor(s.storeRetryTimeoutMs ?? DEFAULT_STORE_RETRY_TIMEOUT) },
  );
  try {
    const v = await g.fs.openVolume(s.volume);
    const dirty = v.dirtyBlocks;
    await v.flush();
    return `device daemon (pid ${pid}) was stuck while stopping and was killed; its ${dirty} dirty block(s) flushed from the cache`;
  } finally {
    await g.close();
  }
}

export async function teardown(s: StackState, log: (line: string) => void = () => {}, opts: TeardownOptions = {}): Promise<TeardownReport> {
  const busyMs = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  const steps: string[] = [];
  const problems: string[] = [];
  let ext4Lazy = false;
  const step = async (name: string, fn: () => Promise<string | undefined>) => {
    try {
      const done = await fn();
      if (done) {
        steps.push(done);
        log(done);
      }
    } catch (err) {
      const msg = `${name}: ${(err as Error).message.split('\n')[0]}`;
      problems.push(msg);
      log(`problem: ${msg}`);
    }
    saveState(s);
  };

  // A fork killed between freeze and thaw leaves the ext4 frozen, and the KV
  // daemon blocked on it: thaw first (an error means it was not frozen).
  await step('thaw', async () => {
    if (mountAt(s.ext4Mountpoint)?.fstype !== 'ext4') return undefined;
    return run('fsfreeze', ['-u', s.ext4Mountpoint]).then(
      () => `thawed ${s.ext4Mountpoint} (a fork had left it frozen)`,
      () => undefined,
    );
  });

  await step('kv daemon', async () => {
    let what: string | undefined;
    if (s.kvPid && isOurs(s.kvPid, ['mount', s.mountpoint])) {
      const clean = await stopProcess(s.kvPid, KV_GRACE_MS);
      what = clean ? `kv daemon (pid ${s.kvPid}) stopped` : `kv daemon (pid ${s.kvPid}) killed after ${KV_GRACE_MS / 1000} s`;
    }
    s.kvPid = undefined;
    if (mountAt(s.mountpoint)?.fstype.startsWith('fuse')) {
      // Its daemon is gone: nothing is left to flush, detach it now.
      await run('umount', ['-l', s.mountpoint]).catch((err) => {
        if (mountAt(s.mountpoint)) throw err;
      });
      what = (what ? what + '; ' : '') + `unmounted ${s.mountpoint}`;
    }
    return what;
  });

  await step('ext4', async () => {
    if (mountAt(s.ext4Mountpoint)?.fstype !== 'ext4') {
      s.ext4Mounted = false;
      return undefined;
    }
    const how = await unmountRetrying(s.ext4Mountpoint, busyMs, log);
    ext4Lazy = how === 'lazy';
    s.ext4Mounted = false;
    return how === 'lazy' ? `unmounted ext4 ${s.ext4Mountpoint} lazily (it was busy)` : `unmounted ext4 ${s.ext4Mountpoint}`;
  });

  await step('loop device', async () => {
    const devs = new Set(loopsFor(s.deviceFile));
    if (s.loopDevice && loopBackingFile(s.loopDevice) === s.deviceFile) devs.add(s.loopDevice);
    // After a lazy unmount the filesystem's users had busyMs already: give
    // them as long again, not more (down would only hang).
    for (const dev of devs) await loopDetach(dev, s.deviceFile, ext4Lazy ? busyMs : LOOP_RELEASE_MS);
    s.loopDevice = undefined;
    return devs.size ? `detached ${[...devs].join(', ')}` : undefined;
  });

  await step('device daemon', async () => {
    // A loop device still attached (a lazily unmounted ext4 with users left)
    // still writes to the device file: stopping the daemon now would fail
    // those writes. Leave it; `down` again finishes once the loop is gone.
    const loops = loopsFor(s.deviceFile);
    if (loops.length && alive(s.devicePid)) {
      throw new StepError(`left running (pid ${s.devicePid}): ${loops.join(', ')} still uses ${s.deviceFile}; run glidekv down again once it is released`);
    }
    let what: string | undefined;
    if (s.devicePid && isOurs(s.devicePid, ['device', 'mount', s.volume])) {
      what = await stopDevice(s, log);
    }
    s.devicePid = undefined;
    if (mountAt(s.deviceMountpoint)) {
      await run('umount', ['-l', s.deviceMountpoint]).catch((err) => {
        if (mountAt(s.deviceMountpoint)) throw err;
      });
      what = (what ? what + '; ' : '') + `unmounted ${s.deviceMountpoint}`;
    }
    return what;
  });

  // Final check: nothing of ours left.
  await step('check', async () => {
    const left = () => [s.mountpoint, s.ext4Mountpoint, s.deviceMountpoint].filter((m) => mountAt(m));
    await waitFor('mounts to go away', () => left().length === 0, MOUNTS_GONE_MS).catch(() => {
      throw new StepError(`still mounted after ${MOUNTS_GONE_MS / 1000} s: ${left().join(', ')}`);
    });
    const loops = loopsFor(s.deviceFile);
    if (loops.length) {
      const who = loops.flatMap((d) => holdersOf(undefined, d));
      throw new StepError(`loop device ${loops.join(', ')} still attached to ${s.deviceFile}${who.length ? ` (used by ${who.join(', ')})` : ''}`);
    }
    if (alive(s.kvPid) || alive(s.devicePid)) throw new StepError('a daemon is still running');
    return undefined;
  });

  if (problems.length === 0) dropState(s);
  return { steps, problems };
}
