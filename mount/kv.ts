/**
 * The KV mount: serves KvFs (kv-fs.ts, which says what each operation does)
 * through the FUSE binding (fuse.ts).
 *
 * Mount options: `use_ino` (stable inode numbers), `big_writes,
 * max_write=131072` (128 KiB writes), `atomic_o_trunc` (open(O_TRUNC) reaches
 * us as a flag instead of a separate truncate, so saving over a file is one
 * put), `hard_remove` (unlink of an open file is an unlink, not a rename to
 * .fuse_hidden*). No operation times out: a commit of a large value may take
 * longer than fuse-native's 15 s default, and a timed-out flush would report
 * failure for a put that still lands.
 *
 * The daemon that owns this must not do file I/O under its own mount point
 * (its event loop serves that I/O: deadlock).
 */
import { mountFs } from './fuse.js';
import { KvFs, type KvFsOptions, type MountEngine } from './kv-fs.js';

export const KV_MOUNT_OPTIONS = 'use_ino,big_writes,max_write=131072,atomic_o_trunc,hard_remove';

export interface KvMountHandle {
  readonly fs: KvFs;
  readonly mountpoint: string;
  /** The `-o` string handed to libfuse. */
  readonly optionString: string;
  /**
   * Unmounts (lazily if busy, so a busy mount point does not block shutdown;
   * an unmount from outside counts as done), then commits what open files
   * still hold and drops their buffers. Resolves the commits that failed.
   */
  unmount(): Promise<string[]>;
}

/** Mounts the engine at `mountpoint`; resolves once the kernel has the mount (FUSE init done). */
export async function mountKv(engine: MountEngine, mountpoint: string, opts: KvFsOptions): Promise<KvMountHandle> {
  const fs = new KvFs(engine, opts);
  const fuse = await mountFs(mountpoint, fs, {
    fsname: 'glidekv',
    subtype: 'glidekv-kv',
    options: KV_MOUNT_OPTIONS.split(','),
    noTimeout: 'all',
    // GLIDEKV_FUSE_DEBUG=1: libfuse traces every request on stderr.
    debug: process.env.GLIDEKV_FUSE_DEBUG === '1',
  });
  let unmounted: Promise<string[]> | undefined;
  return {
    fs,
    mountpoint,
    get optionString() {
      return fuse.optionString;
    },
    unmount() {
      unmounted ??= (async () => {
        await fuse.unmount({ lazy: true });
        const failures = await fs.commitAll();
        await fs.closeAll();
        return failures;
      })();
      return unmounted;
    },
  };
}
