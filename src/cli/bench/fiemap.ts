/**
 * Where a file's bytes sit on the block device under its ext4 filesystem.
 *
 * Runs `filefrag -s -e -b4096` (e2fsprogs; the FIEMAP ioctl, with a sync
 * first so delayed allocations get real places) and parses its extent table.
 * The bench uses it to learn which 128 KiB blocks of a glidefs volume hold the
 * bytes of a value: ext4 sits on a loop device over the volume file, so a
 * physical byte offset on the filesystem is a byte offset in the volume.
 *
 * filefrag's extent lines look like
 *
 *    ext:     logical_offset:        physical_offset: length:   expected: flags:
 *      0:        0..      73:       2336..      2409:     74:             last,eof
 *      6:       12..      12:       2626..      2626:      1:       2125:
 *      0:        0..       4:     170792..    170796:      5:             last,not_aligned,inline,eof
 *
 * Offsets are in units of the `-b` block size, except for extents flagged
 * `not_aligned` or `inline`, which filefrag prints in bytes (data stored in
 * the inode: its physical offset is the inode's byte address). `unwritten`
 * extents (fallocated, reading as zeros) are kept with their flag; the bytes
 * of such a range are zeros, not data. `unknown_loc`/`delalloc` extents have
 * no place yet and are an error here (the -s sync should prevent them).
 * `merged` marks extents filefrag merged from FIBMAP's block-by-block answers
 * (filesystems without FIEMAP): their offsets are still blocks.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The unit filefrag is asked to print in (`-b4096`). */
export const FILEFRAG_UNIT = 4096;

export class FiemapError extends Error {
  constructor(
    readonly code: 'E_FILEFRAG' | 'E_FILEFRAG_PARSE' | 'E_UNMAPPED',
    message: string,
  ) {
    super(`${code}: ${message}`);
    this.name = 'FiemapError';
  }
}

/** One extent, in bytes. */
export interface Extent {
  /** Offset in the file. */
  logical: number;
  /** Offset on the device under the filesystem. */
  physical: number;
  length: number;
  flags: string[];
}

export interface FileMap {
  path: string;
  size: number;
  extents: Extent[];
}

const HEADER = /^File size of (.*) is (\d+) \(\d+ blocks? of (\d+) bytes\)$/;
const EXTENT =
  /^\s*(\d+):\s+(\d+)\.\.\s*(\d+):\s+(\d+)\.\.\s*(\d+):\s+(\d+):\s+(?:(\d+):)?\s*([a-z_,]*)\s*$/;

/**
 * Parses the output of `filefrag -e -b4096 FILE...` into one FileMap per
 * file, in output order. Lines it does not know (the filesystem type, the
 * column header, the "N extents found" summary) are skipped; an extent line
 * outside a file section, or a file whose extents cannot be read, throws.
 */
export function parseFilefrag(output: string, unit = FILEFRAG_UNIT): FileMap[] {
  const files: FileMap[] = [];
  let cur: FileMap | undefined;
  for (const line of output.split('\n')) {
    const h = HEADER.exec(line);
    if (h) {
      cur = { path: h[1], size: Number(h[2]), extents: [] };
      files.push(cur);
      continue;
    }
    const m = EXTENT.exec(line);
    if (!m) continue;
    if (!cur) throw new FiemapError('E_FILEFRAG_PARSE', `extent line before any file header: '${line.trim()}'`);
    const flags = m[8] ? m[8].split(',').filter(Boolean) : [];
    const inBytes = flags.includes('not_aligned') || flags.includes('inline');
    const u = inBytes ? 1 : unit;
    const lStart = Number(m[2]);
    const pStart = Number(m[4]);
    const count = Number(m[6]);
    if (flags.includes('unknown_loc') || flags.includes('delalloc')) {
      throw new FiemapError('E_UNMAPPED', `${cur.path}: extent at ${lStart * u} has no place on the device yet (${flags.join(',')})`);
    }
    if (Number(m[3]) - lStart + 1 !== count && count !== 0) {
      throw new FiemapError('E_FILEFRAG_PARSE', `${cur.path}: extent length ${count} does not match its range: '${line.trim()}'`);
    }
    cur.extents.push({ logical: lStart * u, physical: pStart * u, length: count * u, flags });
  }
  return files;
}

/** Maps files (on a mounted ext4 or any FIEMAP filesystem) to their extents. */
export async function mapFiles(paths: string[]): Promise<Map<string, FileMap>> {
  const out = new Map<string, FileMap>();
  // filefrag takes many files at once; keep the command line short anyway.
  for (let i = 0; i < paths.length; i += 200) {
    const batch = paths.slice(i, i + 200);
    let stdout: string;
    try {
      ({ stdout } = await run('filefrag', ['-s', '-e', `-b${FILEFRAG_UNIT}`, ...batch], {
        maxBuffer: 64 * 1024 * 1024,
      }));
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new FiemapError('E_FILEFRAG', `filefrag failed: ${(e.stderr || e.message).trim().split('\n')[0]}`);
    }
    const maps = parseFilefrag(stdout);
    if (maps.length !== batch.length) {
      throw new FiemapError('E_FILEFRAG_PARSE', `filefrag reported ${maps.length} files for ${batch.length} asked`);
    }
    maps.forEach((m, j) => out.set(batch[j], { ...m, path: batch[j] }));
  }
  return out;
}

/** A byte range on the device. */
export interface DeviceRange {
  offset: number;
  length: number;
  /** True if the file range is an unwritten (preallocated, zero) extent. */
  unwritten: boolean;
}

/**
 * The device ranges that hold the file's bytes [start, start+length).
 * Holes (parts of the range no extent covers) are left out: they hold no
 * bytes on the device.
 */
export function deviceRanges(map: FileMap, start: number, length: number): DeviceRange[] {
  const end = start + length;
  const out: DeviceRange[] = [];
  for (const e of map.extents) {
    const s = Math.max(start, e.logical);
    const t = Math.min(end, e.logical + e.length);
    if (s >= t) continue;
    out.push({ offset: e.physical + (s - e.logical), length: t - s, unwritten: e.flags.includes('unwritten') });
  }
  return out;
}

/**
 * The indexes of the `blockSize` blocks of the device (starting at
 * `deviceOffset` bytes into the volume, 0 for a loop device over the whole
 * volume file) that the ranges touch, sorted and distinct.
 */
export function blocksOf(ranges: DeviceRange[], blockSize: number, deviceOffset = 0): number[] {
  const set = new Set<number>();
  for (const r of ranges) {
    if (r.length <= 0) continue;
    const first = Math.floor((deviceOffset + r.offset) / blockSize);
    const last = Math.floor((deviceOffset + r.offset + r.length - 1) / blockSize);
    for (let b = first; b <= last; b++) set.add(b);
  }
  return [...set].sort((a, b) => a - b);
}
