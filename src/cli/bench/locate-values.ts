/**
 * Which device blocks hold the bytes of given values, found without knowing
 * the engine's file layout: every regular file under the data directory is
 * searched for each value (distinct random content, so a 64-byte prefix
 * finds it and a full compare confirms it), and the file range that holds it
 * is mapped to the device with FIEMAP (fiemap.ts).
 *
 * This works the same for a blob file (`values/blob-<hash>`, the value is the
 * whole file) and for a log segment (the value is inside a record), so the
 * separated and the inline runs are attributed by one rule.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { blocksOf, deviceRanges, mapFiles, type FileMap } from './fiemap.js';

export interface ValueLocation {
  /** Index of the value in the list given. */
  value: number;
  file: string;
  offset: number;
}

export interface LocatedValues {
  /** Every place a value was found (a value may sit in two files for a while). */
  locations: ValueLocation[];
  /** Values found nowhere (their indexes): a bug in the bench or the store. */
  missing: number[];
  /** Device blocks (of `blockSize`) that hold bytes of any of the values. */
  blocks: number[];
  /** Files that hold any of the values. */
  files: string[];
}

const PROBE = 64;

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(p)));
    else if (e.isFile()) out.push(p);
  }
  return out.sort();
}

/** Finds each value's byte ranges in the files under `dataDir`. */
export async function findValues(dataDir: string, values: Buffer[]): Promise<{ locations: ValueLocation[]; missing: number[] }> {
  const locations: ValueLocation[] = [];
  const found = new Set<number>();
  for (const file of await listFiles(dataDir)) {
    let buf: Buffer;
    try {
      buf = await readFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed meanwhile
      throw err;
    }
    values.forEach((v, i) => {
      const probe = v.subarray(0, Math.min(PROBE, v.length));
      let at = buf.indexOf(probe);
      while (at >= 0) {
        if (at + v.length <= buf.length && buf.compare(v, 0, v.length, at, at + v.length) === 0) {
          locations.push({ value: i, file, offset: at });
          found.add(i);
          at = buf.indexOf(probe, at + v.length);
        } else {
          at = buf.indexOf(probe, at + 1);
        }
      }
    });
  }
  const missing = values.map((_, i) => i).filter((i) => !found.has(i));
  return { locations, missing };
}

/** The device blocks that hold the values' bytes (see the file comment). */
export async function locateValues(dataDir: string, values: Buffer[], blockSize: number): Promise<LocatedValues> {
  const { locations, missing } = await findValues(dataDir, values);
  const files = [...new Set(locations.map((l) => l.file))];
  const maps: Map<string, FileMap> = files.length ? await mapFiles(files) : new Map();
  const blocks = new Set<number>();
  for (const l of locations) {
    const map = maps.get(l.file);
    if (!map) continue;
    for (const b of blocksOf(deviceRanges(map, l.offset, values[l.value].length), blockSize)) blocks.add(b);
  }
  return { locations, missing, blocks: [...blocks].sort((a, b) => a - b), files };
}
