// Goal: the device mount serves a volume as one file through the real kernel: 128 KiB writes, fsync returns only after upload+commit, ext4 on a loop device survives unmount/remount and a kill -9 of the daemon without losing anything fsynced.
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GlideFs, openStore } from '../../glidefs/index.js';
import { BIN, cleanupUnder, DeviceDaemon, glidekv, kernelUnavailable, killDaemons, leftovers, ok, q, sh } from './device-helpers.js';

const skipReason = kernelUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING DEVICE MOUNT KERNEL TESTS: ${skipReason}. They need root, /dev/fuse and loop devices. !!!\n`);

const SIZE = 128 * 1024 * 1024;

describe.skipIf(skipReason !== undefined)('device mount through the kernel', () => {
  const root = mkdtempSync(join(tmpdir(), 'glidekv-device-'));
  const env = {
    GLIDEKV_STORE: `file://${join(root, 'objects')}`,
    GLIDEKV_CATALOG: join(root, 'catalog.db'),
    GLIDEKV_CACHE: join(root, 'cache'),
  };
  const dev = join(root, 'dev');
  const ext4 = join(root, 'ext4');
  const files = join(root, 'files');

  const stats = async (vol: string) => JSON.parse(await ok(glidekv(['volume', 'stats', vol, '--json'], env))) as Record<string, number>;
  let fileA: Buffer;
  let fileC: Buffer;
  const openFs = async () => GlideFs.open({ store: await openStore(env.GLIDEKV_STORE), catalogPath: env.GLIDEKV_CATALOG, cacheDir: env.GLIDEKV_CACHE });
  const attach = async () => (await ok(sh(`losetup --find --show --direct-io=on ${q(join(dev, 'volume'))}`))).trim();

  beforeAll(async () => {
    mkdirSync(dev);
    mkdirSync(ext4);
    mkdirSync(files);
    await ok(glidekv(['volume', 'create', 'raw', '--size', '128M'], env));
    await ok(glidekv(['volume', 'create', 'fs', '--size', '128M'], env));
    await ok(sh(`head -c 3000000 /dev/urandom > ${q(join(files, 'a'))}; head -c 777 /dev/urandom > ${q(join(files, 'b'))}; head -c 9000000 /dev/urandom > ${q(join(files, 'c'))}`));
    fileA = readFileSync(join(files, 'a'));
    fileC = readFileSync(join(files, 'c'));
  });

  afterAll(async () => {
    await cleanupUnder(root);
    await killDaemons();
    await cleanupUnder(root);
    rmSync(root, { recursive: true, force: true });
  });

  it('exposes DIR/volume with the volume size; fsync returns only after every block is uploaded and committed', async () => {
    const d = await DeviceDaemon.start('raw', dev, env);
    try {
      expect(d.lines[0]).toBe(`glidekv: device raw mounted at ${dev}/volume (${SIZE} bytes, pid ${d.pid})`);
      expect(d.stderr).toContain('big_writes,max_write=131072');
      expect((await ok(sh(`stat -c %s ${q(dev + '/volume')}; ls ${q(dev)}`))).split('\n').slice(0, 2)).toEqual([String(SIZE), 'volume']);
      // 3,000,000 bytes at an unaligned offset through a descriptor kept open
      // (a close would flush): dirty, nothing uploaded; then fsync on it returns
      // after the volume's flush committed. No child process is spawned while it
      // is open: their close-on-exec would be a FUSE flush too.
      const g = await openFs();
      try {
        const fd = openSync(join(dev, 'volume'), 'r+');
        try {
          writeSync(fd, fileA, 0, fileA.length, 1_000_000);
          const before = g.stats('raw');
          expect(before.dirtyBlocks).toBeGreaterThanOrEqual(23); // 3,000,000 bytes over >= 23 blocks
          fsyncSync(fd);
          const after = g.stats('raw');
          expect(after.dirtyBlocks).toBe(0);
          // blocks written whole are uploaded as block objects; the two partial ends go in ONE log record
          expect(after.uploads - before.uploads).toBeGreaterThanOrEqual(22);
          expect(after.logPuts - before.logPuts).toBe(1);
          expect(after.loggedBlocks).toBeGreaterThanOrEqual(2);
        } finally {
          closeSync(fd);
        }
      } finally {
        await g.close();
      }
      // Reads come back identical, also at the unaligned offset.
      await ok(sh(`cmp <(head -c 3000000 ${q(files + '/a')}) <(tail -c +1000001 ${q(dev + '/volume')} | head -c 3000000)`));
      // Past the end: ENOSPC, not a silent short write.
      const past = await sh(`dd if=/dev/zero of=${q(dev + '/volume')} bs=4096 count=1 seek=${SIZE / 4096} conv=notrunc status=none`);
      expect(past.code).not.toBe(0);
      expect(past.stderr).toMatch(/No space left/);
    } finally {
      expect(await d.stop()).toBe(0);
    }
    expect(leftovers(dev).mounts).toEqual([]);
  });

  it('ext4 on a loop device: files written and fsynced read back identical after unmount, daemon restart and remount', async () => {
    let d = await DeviceDaemon.start('fs', dev, env);
    let loop = await attach();
    try {
      await ok(sh(`mkfs.ext4 -q -F -b 4096 -E stride=32,stripe_width=32 ${loop} && mount ${loop} ${q(ext4)}`));
      await ok(sh(`cp ${q(files)}/a ${q(files)}/b ${q(files)}/c ${q(ext4)}/ && mkdir ${q(ext4 + '/sub')} && cp ${q(files + '/c')} ${q(ext4 + '/sub/c2')} && sync -f ${q(ext4)}`));
      await ok(sh(`umount ${q(ext4)} && losetup -d ${loop}`));
      expect(await d.stop()).toBe(0);
      expect(d.stderr).toContain('SIGTERM received: flushing and unmounting');
      expect((await stats('fs')).dirtyBlocks).toBe(0);

      d = await DeviceDaemon.start('fs', dev, env);
      loop = await attach();
      await ok(sh(`mount ${loop} ${q(ext4)}`));
      await ok(sh(`cd ${q(ext4)} && cmp a ${q(files)}/a && cmp b ${q(files)}/b && cmp c ${q(files)}/c && cmp sub/c2 ${q(files)}/c`));
      await ok(sh(`umount ${q(ext4)} && losetup -d ${loop}`));
    } finally {
      await cleanupUnder(ext4);
      await sh(`losetup -d ${loop} 2>/dev/null; true`);
      await d.stop();
    }
  });

  it('kill -9 of the daemon under a mounted ext4 loses nothing fsynced, even with the local cache gone: fusermount -u, mount again, journal replays', async () => {
    let d = await DeviceDaemon.start('fs', dev, env);
    let loop = await attach();
    try {
      await ok(sh(`mount ${loop} ${q(ext4)}`));
      // fsynced: a new file and a rewrite of an existing one.
      await ok(sh(`dd if=${q(files + '/c')} of=${q(ext4 + '/after-kill')} bs=1M conv=fsync status=none && dd if=${q(files + '/a')} of=${q(ext4 + '/b')} bs=1M conv=fsync status=none`));
      await d.kill9();
      // The kernel now fails I/O on the dead mount; take the pieces down.
      await sh(`umount -l ${q(ext4)}; losetup -d ${loop}; true`);
      await ok(sh(`fusermount -u ${q(dev)}`));
      expect(leftovers(root).mounts).toEqual([]);

      // Mount again on an empty cache dir, as if the machine had died with
      // its disk: only what fsync committed to the store is there.
      d = await DeviceDaemon.start('fs', dev, { ...env, GLIDEKV_CACHE: join(root, 'cache-after-crash') });
      loop = await attach();
      await ok(sh(`mount ${loop} ${q(ext4)}`));
      await ok(sh(`cd ${q(ext4)} && cmp after-kill ${q(files)}/c && cmp b ${q(files)}/a && cmp a ${q(files)}/a && cmp sub/c2 ${q(files)}/c`));
      await ok(sh(`umount ${q(ext4)} && losetup -d ${loop}`));
    } finally {
      await cleanupUnder(ext4);
      await sh(`losetup -d ${loop} 2>/dev/null; true`);
      await d.stop();
    }
  });

  it('kill -9 loses no write the daemon acknowledged, fsynced or not (the dirty set persists)', async () => {
    let d = await DeviceDaemon.start('raw', dev, env);
    try {
      const fd = openSync(join(dev, 'volume'), 'r+');
      writeSync(fd, fileC, 0, fileC.length, 7 * 131072);
      await d.kill9();
      try {
        closeSync(fd); // its flush cannot reach the dead daemon
      } catch {
        /* ENOTCONN */
      }
      await ok(sh(`fusermount -u ${q(dev)}`));
      expect((await stats('raw')).dirtyBlocks).toBeGreaterThan(0);
      d = await DeviceDaemon.start('raw', dev, env);
      await ok(sh(`cmp ${q(files + '/c')} <(tail -c +${7 * 131072 + 1} ${q(dev + '/volume')} | head -c 9000000)`));
    } finally {
      expect(await d.stop()).toBe(0);
    }
    // The SIGTERM flush uploaded what the killed daemon left dirty.
    expect((await stats('raw')).dirtyBlocks).toBe(0);
  });

  it('refuses a DIR that is already a mount point, with one line', async () => {
    const d = await DeviceDaemon.start('raw', dev, env);
    try {
      const r = await glidekv(['device', 'mount', 'fs', dev], env);
      expect(r.code).toBe(1);
      expect(r.stderr.trim()).toBe(`glidekv: ${dev} is already a mount point (unmount it first: fusermount -u ${dev})`);
    } finally {
      expect(await d.stop()).toBe(0);
    }
  });
});

describe.skipIf(skipReason !== undefined)('device mount on a slow store', () => {
  const root = mkdtempSync(join(tmpdir(), 'glidekv-device-slow-'));
  const dir = join(root, 'dev');
  let child: ChildProcess | undefined;

  afterAll(async () => {
    child?.kill('SIGKILL');
    await cleanupUnder(root);
    rmSync(root, { recursive: true, force: true });
  });

  it('an fsync that uploads for longer than fuse-native\'s 15 s operation timeout succeeds', async () => {
    mkdirSync(dir);
    const script = join(import.meta.dirname, 'device-slow-daemon.ts');
    child = spawn(process.execPath, ['--import', 'tsx', script, root, dir, '16000'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      child!.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      child!.once('exit', (code) => reject(new Error(`slow daemon exited ${code}`)));
    });
    const t = Date.now();
    const r = await sh(`dd if=/dev/urandom of=${q(dir + '/volume')} bs=128K count=1 conv=notrunc,fsync status=none`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(Date.now() - t).toBeGreaterThanOrEqual(15_500);
    const exited = new Promise((resolve) => child!.once('exit', resolve));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 90_000);
});
