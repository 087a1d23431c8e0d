// Goal: a write buffer keeps what was written (any offsets, truncates, holes) and spills past its threshold to a file it removes.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { clearSpillDir, WriteBuffer } from '../../mount/write-buffer.js';

const root = mkdtempSync(join(tmpdir(), 'glidekv-wb-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Applies the same ops to a WriteBuffer and to a plain model buffer. */
async function check(threshold: number, seed: number) {
  const spillDir = join(root, `spill-${seed}`);
  const wb = new WriteBuffer({ spillDir, spillThreshold: threshold });
  let model = Buffer.alloc(0);
  let x = seed;
  const r = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
  for (let i = 0; i < 60; i++) {
    const op = r();
    if (op < 0.75) {
      const off = Math.floor(r() * (model.length + 5000));
      const data = randomBytes(1 + Math.floor(r() * 9000));
      await wb.write(off, data);
      const next = Buffer.alloc(Math.max(model.length, off + data.length));
      model.copy(next);
      data.copy(next, off);
      model = next;
    } else {
      const size = Math.floor(r() * (model.length + 3000));
      await wb.truncate(size);
      const next = Buffer.alloc(size);
      model.copy(next, 0, 0, Math.min(size, model.length));
      model = next;
    }
    expect(wb.size).toBe(model.length);
  }
  expect((await wb.contents()).equals(model)).toBe(true);
  const part = Buffer.alloc(777);
  const n = await wb.readInto(part, 100, 777);
  expect(part.subarray(0, n).equals(model.subarray(100, 877))).toBe(true);
  return { wb, spillDir, model };
}

describe('WriteBuffer', () => {
  it('matches a model in memory (below the threshold)', async () => {
    const { wb } = await check(1 << 30, 7);
    expect(wb.spillPath).toBeNull();
    await wb.close();
  });

  it('spills past the threshold to a file in spillDir, keeps the bytes, removes the file on close', async () => {
    const { wb, spillDir, model } = await check(16 * 1024, 11);
    expect(wb.spillPath).not.toBeNull();
    expect(wb.spillPath!.startsWith(spillDir)).toBe(true);
    expect(statSync(wb.spillPath!).size).toBe(model.length);
    const p = wb.spillPath!;
    await wb.close();
    expect(existsSync(p)).toBe(false);
    expect(readdirSync(spillDir)).toEqual([]);
  });

  it('zero-fills what a truncate shrinks away and then grows back (memory and spilled)', async () => {
    for (const threshold of [1 << 20, 16]) {
      const wb = new WriteBuffer({ spillDir: join(root, `shrink-${threshold}`), spillThreshold: threshold });
      await wb.write(0, Buffer.alloc(100, 0xff));
      await wb.truncate(10);
      await wb.truncate(50);
      await wb.write(60, Buffer.of(1));
      const want = Buffer.alloc(61);
      want.fill(0xff, 0, 10);
      want[60] = 1;
      expect((await wb.contents()).equals(want), `threshold ${threshold}`).toBe(true);
      await wb.close();
    }
  });

  it('serializes concurrent writes (one spill file, all bytes kept)', async () => {
    const spillDir = join(root, 'concurrent');
    const wb = new WriteBuffer({ spillDir, spillThreshold: 64 * 1024 });
    const chunks = Array.from({ length: 32 }, () => randomBytes(8192));
    await Promise.all(chunks.map((c, i) => wb.write(i * 8192, c)));
    expect((await wb.contents()).equals(Buffer.concat(chunks))).toBe(true);
    expect(readdirSync(spillDir)).toHaveLength(1);
    await wb.close();
  });

  it('clearSpillDir removes leftovers of a crashed daemon only', async () => {
    const spillDir = join(root, 'leftovers');
    await clearSpillDir(spillDir);
    writeFileSync(join(spillDir, 'write-123-abc'), 'x');
    writeFileSync(join(spillDir, 'keep-me'), 'y');
    expect(await clearSpillDir(spillDir)).toBe(1);
    expect(readdirSync(spillDir)).toEqual(['keep-me']);
  });
});
