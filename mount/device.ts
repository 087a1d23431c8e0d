/**
 * The device mount: serves a glidefs volume as the one file `DIR/volume`
 * (DeviceFs, device-fs.ts, says what each operation does and what the device
 * promises about durability) through the FUSE binding (fuse.ts).
 *
 * Mount options: `big_writes,max_write=131072,max_read=131072`, so one FUSE
 * write is one glidefs block. Operations that may wait on the object store
 * (read, write, flush, fsync, fsyncdir, release, open) are never timed out:
 * an fsync still uploading must not fail with ETIMEDOUT (ext4 would see an
 * I/O error).
 *
 * The daemon never does file I/O on its own mount (ARCHITECTURE.md: the
 * kernel would wait on the event loop that waits on the kernel).
 */
import { DeviceFs, DEVICE_FILE, type DeviceFsOptions, type DeviceFsyncMode, type DeviceVolume } from './device-fs.js';
import { mountFs, type FsOpName } from './fuse.js';

export { DeviceFs, DEVICE_FILE, DEVICE_FSYNC_MODES, type DeviceFsyncMode, type DeviceVolume } from './device-fs.js';

/** One FUSE write per glidefs block (BLOCK_SIZE = 131072). */
export const DEVICE_MOUNT_OPTIONS = ['big_writes', 'max_write=131072', 'max_read=131072'];
/** Operations that may wait on the object store: never time them out. */
const SLOW_OPS: FsOpName[] = ['read', 'write', 'flush', 'fsync', 'fsyncdir', 'release', 'open'];

export type DeviceMountOptions = DeviceFsOptions;

export interface DeviceMount {
  readonly mountpoint: string;
  /** Path of the device file (`DIR/volume`). */
  readonly file: string;
  readonly optionString: string;
  /** Number of volume flushes run (fsync/flush requests in 'upload' mode, flushNow, unmount). */
  readonly flushes: number;
  readonly fsyncMode: DeviceFsyncMode;
  /** An upload + commit as fsync runs it in 'upload' mode (grouped with concurrent ones); for timers and explicit requests. */
  flushNow(): Promise<void>;
  /**
   * Stops serving: unmounts (lazily if `lazy` and the file is still open,
   * e.g. by a loop device), then flushes the volume. Does not close it.
   */
  unmount(opts?: { lazy?: boolean }): Promise<void>;
}

/** Mounts `volume` as `mountpoint/volume` and serves it until `unmount()`. */
export async function mountDevice(volume: DeviceVolume, mountpoint: string, opts: DeviceMountOptions = {}): Promise<DeviceMount> {
  const fs = new DeviceFs(volume, opts);
  const fuse = await mountFs(mountpoint, fs, {
    options: DEVICE_MOUNT_OPTIONS,
    noTimeout: SLOW_OPS,
    fsname: `glidekv:${volume.name}`,
    subtype: 'glidekv-device',
  });
  return {
    mountpoint: fuse.mountpoint,
    file: `${fuse.mountpoint}/${DEVICE_FILE}`,
    optionString: fuse.optionString,
    get flushes() {
      return fs.flushCount;
    },
    fsyncMode: fs.fsyncMode,
    flushNow: () => fs.flushNow(),
    async unmount(u = {}) {
      await fuse.unmount(u);
      if (!volume.readOnly) await fs.flushNow();
    },
  };
}
