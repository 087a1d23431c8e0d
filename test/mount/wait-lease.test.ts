// Goal: `glidekv device mount --wait-lease D` (and `up --wait-lease D`, which passes it on) waits while the volume's
// lease is held elsewhere (E_LEASED) and mounts once it is free; without it the mount fails at once, one line.
// Method: daemon A holds volume v through catalog 1; the machine "is lost" for a second catalog (glidekv restore from
// the same store into catalog 2 with its own cache), whose opener then meets A's live lease. A is stopped (it
// releases the lease) a few seconds into B's wait.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupUnder, DeviceDaemon, glidekv, kernelUnavailable, killDaemons, ok, sh } from './device-helpers.js';

const skipReason = kernelUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING wait-lease KERNEL TEST: ${skipReason}. !!!\n`);

describe.skipIf(skipReason !== undefined)('device mount --wait-lease', () => {
  const root = mkdtempSync(join(tmpdir(), 'glidekv-waitlease-'));
  const store = `file://${join(root, 'objects')}`;
  const one = { GLIDEKV_STORE: store, GLIDEKV_CATALOG: join(root, 'catalog1.db'), GLIDEKV_CACHE: join(root, 'cache1') };
  const two = { GLIDEKV_STORE: store, GLIDEKV_CATALOG: join(root, 'catalog2.db'), GLIDEKV_CACHE: join(root, 'cache2') };

  afterAll(async () => {
    await killDaemons();
    await cleanupUnder(root);
    rmSync(root, { recursive: true, force: true });
  }, 120_000);

  it('E_LEASED at once without it; with it, waits and mounts once the holder lets go', async () => {
    await ok(glidekv(['volume', 'create', 'v', '--size', '8M'], one));
    const dirA = join(root, 'a');
    const dirB = join(root, 'b');
    mkdirSync(dirA);
    mkdirSync(dirB);
    const a = await DeviceDaemon.start('v', dirA, one);
    await ok(sh(`printf hello | dd of=${dirA}/volume conv=notrunc,fsync status=none`));
    await ok(glidekv(['restore'], two));

    const now = await glidekv(['device', 'mount', 'v', dirB], two, 60_000);
    expect(now.code).toBe(1);
    expect(now.stderr.trim().split('\n')).toHaveLength(1);
    expect(now.stderr).toMatch(/^glidekv: E_LEASED: /);

    const bad = await glidekv(['device', 'mount', 'v', dirB, '--wait-lease', 'soon'], two);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toBe("glidekv: --wait-lease: 'soon' is not a duration of at most 24 h (e.g. 45s, 2m)");

    const t0 = Date.now();
    const b = DeviceDaemon.start('v', dirB, two, ['--flush-interval', '0', '--wait-lease', '90s']);
    await new Promise((r) => setTimeout(r, 4000));
    expect(await a.stop()).toBe(0); // releases the lease
    const d = await b;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(4000);
    expect(d.stderr, d.stderr).toMatch(/device v: E_LEASED: .* is open for writing on host .*; waiting up to 90s for it$/m);
    expect((await ok(sh(`head -c 5 ${dirB}/volume`)))).toBe('hello');
    expect(await d.stop()).toBe(0);
  }, 240_000);
});
