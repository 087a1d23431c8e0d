// Found by the fault model (test/engine/model/faults.ts, seed -1510429387): an open whose directory fsync
// failed right after LOCK was linked left LOCK naming this live process, so every later open in the
// process failed E_LOCKED.
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
