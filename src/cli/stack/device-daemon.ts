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
 *   Startup failures: one line `glidekv: ...` on stderr, exit 1.
 */
import { existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { mountDevice, type DeviceFsyncMode } from '../../../mount/device.js';
import { runDaemon } from '../../../mount/fuse-daemon.js';
import { openGlideFsFromOptions, type GlideFsCliOptions } from '../glidefs-options.js';
import { CliError, redact } from '../util.js';
import { mountAt } from './system.js';

export interface DeviceDaemonFlags {
  flushInterval: number;
  fsync?: DeviceFsyncMode;
}

export async function runDeviceDaemon(volumeName: string, dirArg: string, globals: GlideFsCliOptions, flags: DeviceDaemonFlags): Promise<never> {
  const dir = resolve(dirArg);
  if (!existsSync('/dev/fuse')) throw new CliError('/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available');
  const st = await stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new CliError(`${dir}: no such directory (create the mount point first)`);
  if (mountAt(dir)) throw new CliError(`${dir} is already a mount point (unmount it first: fusermount -u ${dir})`);

  return runDaemon(
    async () => {
      const g = await openGlideFsFromOptions(globals);
      let volume;
      try {
        volume = await g.fs.openVolume(volumeName);
      } catch (err) {
        await g.close().catch(() => undefined);
        throw err;
      }
      const log = (line: string) => process.stderr.write(`glidekv: ${redact(line)}\n`);
      let mount;
      try {
        mount = await mountDevice(volume, dir, { log, fsync: flags.fsync ?? 'upload' });
      } catch (err) {
        await g.close().catch(() => undefined);
        throw err;
      }
      log(`device ${volumeName}: mount options ${mount.optionString}, fsync ${mount.fsyncMode}`);
      const m = mount;
      const onUsr1 = () =>
        m.flushNow().then(
          () => log(`device ${volumeName} upload done (${m.flushes} flushes)`),
          (err) => log(`device ${volumeName} upload failed: ${(err as Error)?.message ?? String(err)}`.split('\n')[0]),
        );
      const timer =
        flags.flushInterval > 0
          ? setInterval(() => {
              if (volume.dirtyBlocks > 0) mount.flushNow().catch((err) => log(`device ${volumeName}: timed flush failed: ${(err as Error).message}`));
            }, flags.flushInterval * 1000)
          : setInterval(() => {}, 1 << 30);
      return {
        readyLine: `glidekv: device ${volumeName} mounted at ${mount.file} (${volume.sizeBytes} bytes, pid ${process.pid})`,
        signals: { SIGUSR1: onUsr1 },
        async stop() {
          clearInterval(timer);
          try {
            await mount.unmount({ lazy: true });
          } finally {
            await g.close();
          }
          process.stdout.write(`glidekv: device ${volumeName} unmounted\n`);
        },
      };
    },
    { name: 'glidekv', redact, stopping: 'flushing and unmounting' },
  );
}
