// Found by the fault model (test/engine/model/faults.ts, seed -1510429387): an open whose directory fsync
// failed right after LOCK was linked left LOCK naming this live process, so every later open in the
// process failed E_LOCKED.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { open, nodeFileIo, type FileIo } from '../../src/index.js';
import { codeOf, rmDir, tmpDir } from './helpers.js';

const dir = tmpDir('lock-faults');
afterAll(() => rmDir(dir));

it('an open that fails in the lock fsync leaves no lock behind: the next open takes it', async () => {
  let fail = true;
  const io: FileIo = {
    ...nodeFileIo,
    fsyncDir: async (d) => {
      if (fail) {
        fail = false;
        throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
      }
      return nodeFileIo.fsyncDir(d);
    },
  };
  expect(await codeOf(open(dir, { io }))).toBe('E_IO');
  const e = await open(dir);
  await e.createNamespace('n');
  await e.put('n', 'k', 'v');
  await e.close();
});

it('a close whose LOCK unlink fails (EIO) does not keep this process out: the next open takes the stale lock', async () => {
  const d = tmpDir('lock-faults-close');
  try {
    let failUnlink = false;
    const io: FileIo = {
      ...nodeFileIo,
      unlink: async (p) => {
        if (failUnlink && p.endsWith('LOCK')) throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
        return nodeFileIo.unlink(p);
      },
    };
    const e = await open(d, { io });
    await e.createNamespace('n');
    await e.put('n', 'k', 'v');
    failUnlink = true;
    await e.close();
    expect(fs.readFileSync(path.join(d, 'LOCK'), 'utf8').trim()).toBe(String(process.pid)); // left behind
    const e2 = await open(d);
    expect((await e2.get('n', 'k'))?.value.toString()).toBe('v');
    // while e2 holds it, this process is still refused
    expect(await codeOf(open(d))).toBe('E_LOCKED');
    await e2.close();
  } finally {
    rmDir(d);
  }
});
