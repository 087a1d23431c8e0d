// ENOSPC while writing a blob, on a real small tmpfs (needs root): the put fails cleanly (E_IO, cause
// ENOSPC), no pointer is written, the partial blob is removed, and the engine keeps working.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { open, KvError } from '../../src/index.js';
import { bigValue } from './fixtures/sep-fault-io.js';
import { rmDir, tmpDir } from './helpers.js';

it('a blob that does not fit: typed failure, no pointer, no partial file, nothing else harmed', async () => {
  const mnt = tmpDir('enospc');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
  let e: Awaited<ReturnType<typeof open>> | undefined;
  try {
    const dir = path.join(mnt, 'data');
    const fits = bigValue(1024 * 1024, 1);
    const huge = bigValue(5 * 1024 * 1024, 2);
    const after = bigValue(1024 * 1024, 3);
    e = await open(dir);
    await e.createNamespace('n');
    await e.put('n', 'small', 'kept');
    await e.put('n', 'fits', fits);
    const err = await e.put('n', 'huge', huge).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(KvError);
    expect((err as KvError).code).toBe('E_IO');
    expect(((err as KvError).cause as NodeJS.ErrnoException).code).toBe('ENOSPC');
    expect(e.stat('n', 'huge')).toBeUndefined();
    expect(fs.readdirSync(path.join(dir, 'values')).filter((f) => f.startsWith('tmp-'))).toEqual([]);
    expect(e.stats().poisoned).toBe(0);
    expect(e.stats().blobs).toBe(1);
    await e.put('n', 'after', after); // the space the partial blob took is free again
    expect((await e.get('n', 'fits'))!.value.equals(fits)).toBe(true);
    await e.close();

    e = await open(dir);
    expect(e.stat('n', 'huge')).toBeUndefined();
    expect(e.stats().danglingPointers).toBe(0);
    expect(e.stats().orphansSwept).toBe(0);
    expect(e.stats().blobs).toBe(2);
    expect((await e.get('n', 'after'))!.value.equals(after)).toBe(true);
    expect((await e.get('n', 'small'))!.value.toString()).toBe('kept');
    await e.close();
  } finally {
    await e?.close().catch(() => {}); // an open engine would keep the mount busy
    try {
      execFileSync('umount', [mnt]);
    } catch {
      execFileSync('umount', ['-l', mnt]);
    }
    rmDir(mnt);
  }
});
