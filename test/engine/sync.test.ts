// Durability modes: 'batch' shares one fsync among concurrent writers and resolves each put only after
// an fsync that covers its record; 'always' fsyncs every operation; 'none' never (until sync()).
import { afterAll, expect, it } from 'vitest';
import { open, nodeFileIo, type FileIo } from '../../src/index.js';
import { rmDir, tmpDir } from './helpers.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));

/** node:fs, counting fsyncs and tracking how much of each file a completed fsync covers. */
function trackingIo() {
  const size = new Map<number, number>();
  const durable = new Map<number, number>();
  let fsyncs = 0;
  const io: FileIo = {
    ...nodeFileIo,
    writeSync: undefined,
    async write(fd, buf, off, len, pos) {
      const n = await nodeFileIo.write(fd, buf, off, len, pos);
      size.set(fd, Math.max(size.get(fd) ?? 0, pos + n));
      return n;
    },
    async fsync(fd) {
      const covered = size.get(fd) ?? 0;
      await new Promise((r) => setTimeout(r, 2)); // a slow disk: writers pile up behind it
      await nodeFileIo.fsync(fd);
      fsyncs++;
      durable.set(fd, Math.max(durable.get(fd) ?? 0, covered));
    },
  };
  return { io, durable, fsyncs: () => fsyncs };
}

for (const mode of ['batch', 'always', 'none'] as const) {
  it(`sync '${mode}'`, async () => {
    const dir = tmpDir(`sync-${mode}`);
    dirs.push(dir);
    const t = trackingIo();
    const e = await open(dir, { io: t.io, sync: mode });
    await e.createNamespace('n');
    const before = t.fsyncs();
    const N = 64;
    const st = () => e.namespaces.get('n')!;
    let uncovered = 0;
    await Promise.all(Array.from({ length: N }, async (_, i) => {
      await e.put('n', `k${i}`, Buffer.alloc(100, i));
      const k = st().keydir;
      const ent = k.find(Buffer.from(`k${i}`));
      const end = k.offset[ent] + st().entryRecordSize(ent);
      const fd = st().active!.fd;
      if ((t.durable.get(fd) ?? 0) < end) uncovered++;
    }));
    const used = t.fsyncs() - before;
    if (mode === 'batch') {
      expect(uncovered).toBe(0);
      expect(used).toBeGreaterThan(0);
      expect(used).toBeLessThan(N / 4); // shared: a handful of fsyncs for 64 writers
    } else if (mode === 'always') {
      expect(uncovered).toBe(0);
      expect(used).toBeGreaterThanOrEqual(N);
    } else {
      expect(used).toBe(0);
      expect(uncovered).toBe(N);
      await e.sync();
      expect(t.fsyncs() - before).toBeGreaterThan(0);
    }
    await e.close();
  });
}
