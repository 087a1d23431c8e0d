/**
 * Takes a stack down in the reverse order of `up`, undoing only what exists,
 * and carrying on past a failing step so nothing is left behind:
 *
 *   0. thaw the ext4 if a killed fork left it frozen
 *   1. KV daemon: SIGTERM (it unmounts, commits open files, closes the
 *      engine); if it is gone or stuck, `fusermount -u -z MOUNTPOINT`
 *   2. ext4: `umount` (writes back and checkpoints; lazy if busy)
 *   3. loop device: `losetup -d` (only if it still backs onto our device file)
 *   4. device daemon: SIGTERM (it unmounts, flushes the volume, exits 0);
 *      if it is gone or stuck, `fusermount -u -z` of the device mount
 *
 * Each step re-reads the system (pids, /proc/self/mountinfo, /sys/block) so a
 * second `down` after a partial one finishes the job.
 */
import { unmountPath } from '../../../mount/mountinfo.js';
import { alive, isOurs, loopBackingFile, loopDetach, loopsFor, mountAt, run, stopProcess, waitFor } from './system.js';
import { dropState, saveState, type StackState } from './state.js';

export interface TeardownReport {
  steps: string[];
  problems: string[];
}

/** How long the device daemon may take to flush on SIGTERM (it is uploading). */
const DEVICE_FLUSH_GRACE_MS = 30 * 60_000;
const KV_GRACE_MS = 60_000;

export async function teardown(s: StackState, log: (line: string) => void = () => {}): Promise<TeardownReport> {
  const steps: string[] = [];
  const problems: string[] = [];
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
      await unmountPath(s.mountpoint, { lazy: true });
      what = (what ? what + '; ' : '') + `unmounted ${s.mountpoint}`;
    }
    return what;
  });

  await step('ext4', async () => {
    if (mountAt(s.ext4Mountpoint)?.fstype !== 'ext4') {
      s.ext4Mounted = false;
      return undefined;
    }
    try {
      await run('umount', [s.ext4Mountpoint]);
    } catch (err) {
      // Busy (a shell inside it?) or the device is gone: detach lazily so the
      // loop device is released as soon as the last user leaves.
      log(`umount ${s.ext4Mountpoint} failed (${(err as Error).message}); unmounting lazily`);
      await run('umount', ['-l', s.ext4Mountpoint]);
    }
    s.ext4Mounted = false;
    return `unmounted ext4 ${s.ext4Mountpoint}`;
  });

  await step('loop device', async () => {
    const devs = new Set(loopsFor(s.deviceFile));
    if (s.loopDevice && loopBackingFile(s.loopDevice) === s.deviceFile) devs.add(s.loopDevice);
    for (const dev of devs) await loopDetach(dev);
    s.loopDevice = undefined;
    return devs.size ? `detached ${[...devs].join(', ')}` : undefined;
  });

  await step('device daemon', async () => {
    let what: string | undefined;
    if (s.devicePid && isOurs(s.devicePid, ['device', 'mount', s.volume])) {
      const clean = await stopProcess(s.devicePid, DEVICE_FLUSH_GRACE_MS);
      if (!clean) throw new Error(`device daemon (pid ${s.devicePid}) did not stop in time and was killed; its dirty blocks stay in the cache for the next mount`);
      what = `device daemon (pid ${s.devicePid}) flushed and stopped`;
    }
    s.devicePid = undefined;
    if (mountAt(s.deviceMountpoint)) {
      await unmountPath(s.deviceMountpoint, { lazy: true });
      what = (what ? what + '; ' : '') + `unmounted ${s.deviceMountpoint}`;
    }
    return what;
  });

  // Final check: nothing of ours left.
  await step('check', async () => {
    await waitFor('mounts to go away', () => !mountAt(s.mountpoint) && !mountAt(s.ext4Mountpoint) && !mountAt(s.deviceMountpoint), 10_000);
    if (loopsFor(s.deviceFile).length) throw new Error(`loop device still attached to ${s.deviceFile}`);
    if (alive(s.kvPid) || alive(s.devicePid)) throw new Error('a daemon is still running');
    return undefined;
  });

  if (problems.length === 0) dropState(s);
  return { steps, problems };
}
