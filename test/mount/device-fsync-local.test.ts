// Goal: `device mount --fsync local`: fsync and close only sync the local cache (no upload), kill -9 after the fsync loses nothing on the same cache dir, and SIGUSR1 uploads + commits (dirtyBlocks 0).
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GlideFs, openStore } from '../../glidefs/index.js';
import { cleanupUnder, DeviceDaemon, glidekv, kernelUnavailable, killDaemons, ok, q, sh } from './device-helpers.js';

const skipReason = kernelUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING DEVICE FSYNC-LOCAL KERNEL TESTS: ${skipReason}. They need root and /dev/fuse. !!!\n`);

const LOCAL = ['--flush-interval', '0', '--fsync', 'local'];
const OFFSET = 5 * 131072 + 4096;

describe.skipIf(skipReason !== undefined)('device mount with --fsync local', () => {
  const root = mkdtempSync(join(tmpdir(), 'glidekv-device-local-'));
  const env = {
    GLIDEKV_STORE: `file://${join(root, 'objects')}`,
    GLIDEKV_CATALOG: join(root, 'catalog.db'),
    GLIDEKV_CACHE: join(root, 'cache'),
  };
  const dev = join(root, 'dev');
  const fileC = join(root, 'c');
  let data: Buffer;
  const openFs = async () => GlideFs.open({ store: await openStore(env.GLIDEKV_STORE), catalogPath: env.GLIDEKV_CATALOG, cacheDir: env.GLIDEKV_CACHE });
  const stats = async () => JSON.parse(await ok(glidekv(['volume', 'stats', 'loc', '--json'], env))) as Record<string, number>;

  beforeAll(async () => {
    mkdirSync(dev);
    await ok(glidekv(['volume', 'create', 'loc', '--size', '64M'], env));
    await ok(sh(`head -c 5000000 /dev/urandom > ${q(fileC)}`));
    data = readFileSync(fileC);
  });

  afterAll(async () => {
    await killDaemons();
    await cleanupUnder(root);
    rmSync(root, { recursive: true, force: true });
  });

  it('fsync and close leave the blocks dirty and upload nothing; kill -9 after the fsync loses nothing; SIGUSR1 uploads and commits', async () => {
    let d = await DeviceDaemon.start('loc', dev, env, LOCAL);
    try {
      expect(d.stderr).toContain('fsync local');
      const g = await openFs();
      let uploadsBefore: number;
      try {
        uploadsBefore = g.stats('loc').uploads;
        const fd = openSync(join(dev, 'volume'), 'r+');
        try {
          writeSync(fd, data, 0, data.length, OFFSET);
          fsyncSync(fd);
          const after = g.stats('loc');
          expect(after.dirtyBlocks).toBeGreaterThanOrEqual(39); // 5,000,000 bytes over >= 39 blocks
          expect(after.uploads).toBe(uploadsBefore);
        } finally {
          closeSync(fd); // a FUSE flush of a writable handle: local too
        }
        const closed = g.stats('loc');
        expect(closed.dirtyBlocks).toBeGreaterThanOrEqual(39);
        expect(closed.uploads).toBe(uploadsBefore);
      } finally {
        await g.close();
      }

      // kill -9 right after: nothing fsynced is lost on the same cache dir.
      await d.kill9();
      await ok(sh(`fusermount -u ${q(dev)}`));
      expect((await stats()).dirtyBlocks).toBeGreaterThanOrEqual(39);
      d = await DeviceDaemon.start('loc', dev, env, LOCAL);
      await ok(sh(`cmp ${q(fileC)} <(tail -c +${OFFSET + 1} ${q(dev + '/volume')} | head -c ${data.length})`));

      // SIGUSR1: upload + commit now, with a line when done.
      const s0 = await stats();
      expect(s0.dirtyBlocks).toBeGreaterThanOrEqual(39);
      d.proc.kill('SIGUSR1');
      const end = Date.now() + 60_000;
      while (!/device loc upload (done|failed)/.test(d.stderr)) {
        if (Date.now() > end) throw new Error(`no upload line: ${d.stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(d.stderr).toMatch(/glidekv: device loc upload done \(\d+ flushes\)/);
      const s1 = await stats();
      expect(s1.dirtyBlocks).toBe(0);
      expect(s1.uploads - s0.uploads).toBeGreaterThanOrEqual(39);
    } finally {
      expect(await d.stop()).toBe(0);
    }
    // Committed to the store: an empty cache dir reads it back identical.
    const fresh = { ...env, GLIDEKV_CACHE: join(root, 'cache-fresh') };
    const d2 = await DeviceDaemon.start('loc', dev, fresh, LOCAL);
    try {
      await ok(sh(`cmp ${q(fileC)} <(tail -c +${OFFSET + 1} ${q(dev + '/volume')} | head -c ${data.length})`));
    } finally {
      expect(await d2.stop()).toBe(0);
    }
  });

  it('rejects an unknown --fsync mode with one line', async () => {
    const r = await glidekv(['device', 'mount', 'loc', dev, '--fsync', 'maybe'], env);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/maybe/);
  });
});
