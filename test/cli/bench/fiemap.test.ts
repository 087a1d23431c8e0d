// Goal: fiemap maps a file's bytes to the device offsets where ext4 put them —
// checked on a real ext4 image on a loop device by reading the device there.
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blocksOf, deviceRanges, mapFiles, parseFilefrag, type FileMap } from '../../../src/cli/bench/fiemap.js';
import { locateValues } from '../../../src/cli/bench/locate-values.js';

describe('parseFilefrag', () => {
  it('reads block extents, the expected column, flags, and byte-unit inline extents', () => {
    const out = [
      'Filesystem type is: ef53',
      'File size of /m/a is 300000 (74 blocks of 4096 bytes)',
      ' ext:     logical_offset:        physical_offset: length:   expected: flags:',
      '   0:        0..      73:       2336..      2409:     74:             last,eof',
      '/m/a: 1 extent found',
      'File size of /m/frag file: x is 77824 (19 blocks of 4096 bytes)',
      ' ext:     logical_offset:        physical_offset: length:   expected: flags:',
      '   0:        0..       0:       2113..      2113:      1:            ',
      '   1:       12..      13:       2626..      2627:      2:       2125:',
      '   2:       18..      18:       3139..      3139:      1:             last,unwritten,eof',
      'File size of /m/tiny is 5 (1 block of 4096 bytes)',
      '   0:        0..       4:     170792..    170796:      5:             last,not_aligned,inline,eof',
      'File size of /m/old is 8192 (2 blocks of 4096 bytes)',
      '   0:        0..       1:        100..       101:      2:             merged,eof',
    ].join('\n');
    const maps = parseFilefrag(out);
    expect(maps.map((m) => m.path)).toEqual(['/m/a', '/m/frag file: x', '/m/tiny', '/m/old']);
    expect(maps[0]).toEqual({
      path: '/m/a',
      size: 300000,
      extents: [{ logical: 0, physical: 2336 * 4096, length: 74 * 4096, flags: ['last', 'eof'] }],
    });
    expect(maps[1].extents[1]).toEqual({ logical: 12 * 4096, physical: 2626 * 4096, length: 8192, flags: [] });
    expect(maps[1].extents[2].flags).toContain('unwritten');
    expect(maps[2].extents[0]).toMatchObject({ logical: 0, physical: 170792, length: 5 });
    expect(maps[3].extents[0]).toMatchObject({ physical: 100 * 4096, length: 8192, flags: ['merged', 'eof'] });
  });

  it('refuses extents without a place and extent lines without a file', () => {
    expect(() =>
      parseFilefrag('File size of x is 9 (1 block of 4096 bytes)\n   0:        0..      48:          0..         0:      0:             last,unknown_loc,delalloc,eof'),
    ).toThrow(/E_UNMAPPED/);
    expect(() => parseFilefrag('   0:        0..       0:       2113..      2113:      1:   ')).toThrow(/E_FILEFRAG_PARSE/);
  });
});

describe('deviceRanges / blocksOf', () => {
  const map: FileMap = {
    path: 'f',
    size: 5 * 4096,
    extents: [
      { logical: 0, physical: 131072 - 4096, length: 8192, flags: [] },
      { logical: 3 * 4096, physical: 10 * 131072, length: 8192, flags: ['unwritten'] },
    ],
  };
  it('clips a byte range to the extents and skips holes', () => {
    expect(deviceRanges(map, 100, 5 * 4096)).toEqual([
      { offset: 131072 - 4096 + 100, length: 8192 - 100, unwritten: false },
      { offset: 10 * 131072, length: 8192, unwritten: true },
    ]);
    expect(deviceRanges(map, 8192, 4096)).toEqual([]); // the hole
  });
  it('lists every 128 KiB block a range touches, once', () => {
    expect(blocksOf(deviceRanges(map, 0, map.size), 131072)).toEqual([0, 1, 10]);
    expect(blocksOf([{ offset: 131072, length: 131072, unwritten: false }], 131072)).toEqual([1]);
    expect(blocksOf([{ offset: 0, length: 4096, unwritten: false }], 131072, 131072)).toEqual([1]);
  });
});

const root = process.getuid?.() === 0;
if (!root) console.warn('SKIPPING fiemap loop-device test: needs root (losetup, mount)');

describe.skipIf(!root)('mapFiles on a real ext4 image on a loop device', () => {
  let dir = '';
  let loop = '';
  let mnt = '';
  const files = new Map<string, Buffer>();
  const values: Buffer[] = [];

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'glidekv-fiemap-'));
    const img = join(dir, 'img');
    mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    execFileSync('truncate', ['-s', '64M', img]);
    execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-O', 'inline_data', '-E', 'stride=32,stripe_width=32', img]);
    loop = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
    execFileSync('mount', [loop, mnt]);
    const put = (name: string, data: Buffer) => {
      writeFileSync(join(mnt, name), data);
      files.set(name, data);
    };
    put('big', randomBytes(300_000));
    put('small', randomBytes(5000));
    put('tiny', Buffer.from('inline!\n')); // fits in the inode: inline_data
    // A file in many extents: write every other 4 KiB block, syncing between
    // rounds while other files take the gaps.
    const frag = join(mnt, 'frag');
    const fd = openSync(frag, 'w');
    try {
      for (let i = 0; i < 10; i++) {
        writeSync(fd, randomBytes(4096), 0, 4096, i * 2 * 4096);
        fsyncSync(fd);
        put(`filler${i}`, randomBytes(4096));
        execFileSync('sync', ['-f', mnt]);
      }
    } finally {
      closeSync(fd);
    }
    files.set('frag', readFileSync(frag)); // holes read as zeros
    // Values to locate: one as a whole file (a blob), two inside a "segment"
    // at unaligned offsets between other bytes.
    mkdirSync(join(mnt, 'data', 'values'), { recursive: true });
    for (let i = 0; i < 3; i++) values.push(randomBytes(200_000 + i));
    writeFileSync(join(mnt, 'data', 'values', 'blob-x'), values[0]);
    writeFileSync(join(mnt, 'data', 'seg-1'), Buffer.concat([randomBytes(777), values[1], randomBytes(33), values[2], randomBytes(5)]));
    // Preallocated (unwritten) tail after 8 KiB of data.
    put('prealloc', randomBytes(8192));
    execFileSync('fallocate', ['-o', '8192', '-l', '1M', '-n', join(mnt, 'prealloc')]);
  });

  afterAll(() => {
    try {
      if (mnt) execFileSync('umount', [mnt], { stdio: 'ignore' });
    } catch {
      // not mounted, or busy after a failed test: detach lazily
      try {
        if (mnt) execFileSync('umount', ['-l', mnt], { stdio: 'ignore' });
      } catch {
        // not mounted
      }
    }
    try {
      if (loop) execFileSync('losetup', ['-d', loop], { stdio: 'ignore' });
    } catch {
      // already detached
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the device bytes at the mapped offsets are the file bytes', async () => {
    const names = [...files.keys()];
    const maps = await mapFiles(names.map((n) => join(mnt, n)));
    expect(maps.get(join(mnt, 'frag'))!.extents.length).toBeGreaterThan(1);
    expect(maps.get(join(mnt, 'tiny'))!.extents[0].flags).toContain('inline');
    expect(maps.get(join(mnt, 'prealloc'))!.extents.some((e) => e.flags.includes('unwritten'))).toBe(true);
    execFileSync('sync', ['-f', mnt]);
    execFileSync('blockdev', ['--flushbufs', loop]);
    const dev = openSync(loop, 'r');
    try {
      for (const name of names) {
        const want = files.get(name)!;
        const map = maps.get(join(mnt, name))!;
        expect(map.size, name).toBe(want.length);
        const got = Buffer.alloc(want.length);
        let covered = 0;
        for (const e of map.extents) {
          for (const r of deviceRanges(map, e.logical, Math.min(e.length, want.length - e.logical))) {
            if (r.unwritten) continue;
            readSync(dev, got, e.logical, r.length, r.offset);
            covered += r.length;
          }
        }
        // Holes and unwritten extents read as zeros; everything else came from the device.
        expect(covered, name).toBeGreaterThan(0);
        expect(got.equals(want), `${name}: device bytes differ from the file`).toBe(true);
      }
    } finally {
      closeSync(dev);
    }
  });

  it('locateValues finds values in whole files and inside files, and the device blocks hold them', async () => {
    const absent = randomBytes(150_000);
    const got = await locateValues(join(mnt, 'data'), [...values, absent], 131072);
    expect(got.missing).toEqual([3]);
    expect(got.locations.map((l) => [l.value, l.file.slice(mnt.length), l.offset])).toEqual([
      [1, '/data/seg-1', 777],
      [2, '/data/seg-1', 777 + values[1].length + 33],
      [0, '/data/values/blob-x', 0],
    ]);
    execFileSync('sync', ['-f', mnt]);
    execFileSync('blockdev', ['--flushbufs', loop]);
    const dev = openSync(loop, 'r');
    try {
      const maps = await mapFiles(got.files);
      for (const l of got.locations) {
        const v = values[l.value];
        const parts: Buffer[] = [];
        for (const r of deviceRanges(maps.get(l.file)!, l.offset, v.length)) {
          const b = Buffer.alloc(r.length);
          readSync(dev, b, 0, r.length, r.offset);
          parts.push(b);
          const first = Math.floor(r.offset / 131072);
          const last = Math.floor((r.offset + r.length - 1) / 131072);
          for (let k = first; k <= last; k++) expect(got.blocks).toContain(k);
        }
        expect(Buffer.concat(parts).equals(v), `value ${l.value} on the device`).toBe(true);
      }
    } finally {
      closeSync(dev);
    }
  });
});
