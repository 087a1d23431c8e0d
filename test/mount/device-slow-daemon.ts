/**
 * Test helper (run as a child process): the device mount over the real
 * glidefs on a directory store behind FaultyStore with a fixed latency on
 * every request, so a flush takes longer than fuse-native's default 15 s
 * operation timeout. Prints `ready` once mounted; SIGTERM unmounts and exits.
 *
 *   node --import tsx test/mount/device-slow-daemon.ts ROOT DIR LATENCY_MS
 */
import { join } from 'node:path';
import { DirStore, FaultyStore, GlideFs } from '../../glidefs/index.js';
import { mountDevice } from '../../mount/device.js';

const [root, dir, latency] = process.argv.slice(2);
const fast = new DirStore(join(root, 'objects'));
const slowStore = new FaultyStore(fast, { seed: 1, latencyMsMin: Number(latency) });
// Slow only while serving the test's fsync: create/open/unmount (log records, checkpoint) run at full speed.
let slow = false;
const store = new Proxy(fast, {
  get(_t, prop) {
    const target = slow ? slowStore : fast;
    const v = Reflect.get(target, prop, target);
    return typeof v === 'function' ? v.bind(target) : v;
  },
});
const fs = await GlideFs.open({ store, catalogPath: join(root, 'catalog.db'), cacheDir: join(root, 'cache') });
if (!fs.listVolumes().some((v) => v.name === 'slow')) await fs.createVolume('slow', 64 * 1024 * 1024);
const vol = await fs.openVolume('slow');
const m = await mountDevice(vol, dir);
slow = true;
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  slow = false;
  m.unmount({ lazy: true })
    .finally(() => fs.close())
    .then(
      () => process.exit(0),
      () => process.exit(1),
    );
});
