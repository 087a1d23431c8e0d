// Goal: writeAll writes every byte even when the OS writes short, and refuses a write
// that makes no progress; fsyncDir syncs a directory and fails on a missing one.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fsyncDir, writeAll } from '../../lib/fsync.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'glidekv-lib-fsync-'));
  dirs.push(d);
  return d;
};

/** A FileHandle whose writes write at most `max` bytes (0 = no progress). */
function shortWrites(fh: FileHandle, max: number): FileHandle {
  return new Proxy(fh, {
    get(t, p) {
      if (p === 'write') {
        return (buf: Uint8Array, off: number, len: number, pos: number) => t.write(buf, off, Math.min(len, max), pos);
      }
      const v = Reflect.get(t, p);
      return typeof v === 'function' ? v.bind(t) : v;
    },
  });
}

describe('lib/fsync', () => {
  it('writeAll loops over short writes until every byte is at its position', async () => {
    const f = join(tmp(), 'f');
    const fh = await open(f, 'w+');
    const data = Buffer.from('0123456789abcdefghij');
    await writeAll(shortWrites(fh, 3), data, 5);
    await fh.close();
    expect(readFileSync(f)).toEqual(Buffer.concat([Buffer.alloc(5), data]));
  });

  it('writeAll fails with EIO when a write makes no progress', async () => {
    const fh = await open(join(tmp(), 'g'), 'w+');
    await expect(writeAll(shortWrites(fh, 0), Buffer.from('x'), 0)).rejects.toMatchObject({ code: 'EIO' });
    await fh.close();
  });

  it('fsyncDir syncs a directory and fails on a missing one', async () => {
    const d = tmp();
    await fsyncDir(d);
    await expect(fsyncDir(join(d, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
