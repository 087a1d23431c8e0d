/**
 * `<dir>/meta.json`: the revision high-water mark and, per namespace, the revision through
 * which history was reclaimed (watch replay from at or below it is E_COMPACTED), and the
 * segments a reclaim in progress is deleting (`obsolete`).
 * Written to `meta.json.tmp`, fsynced, renamed over, then the directory is fsynced, so it
 * is never torn. It is written before anything that removes revision evidence from the
 * log (reclaim deleting segments, a namespace drop) and on close.
 */
import path from 'node:path';
import type { FileIo } from './file-io.js';
import { writeFully } from './file-io.js';
import { KvError } from './errors.js';

export interface Meta {
  version: 1;
  revision: number;
  compacted: Record<string, number>;
  /**
   * Per namespace, segment ids a reclaim has replaced and is deleting. Written (with the
   * copies durable) before the first old segment is unlinked; on open they are deleted
   * before recovery reads anything. Without it a crash between two unlinks could leave an
   * old record whose tombstone was already deleted (a resurrected key, whose blob may be gone).
   */
  obsolete?: Record<string, number[]>;
}

export async function readMeta(io: FileIo, dir: string): Promise<Meta> {
  let raw: Buffer;
  try {
    raw = await io.readFile(path.join(dir, 'meta.json'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, revision: 0, compacted: {} };
    throw err;
  }
  try {
    const m = JSON.parse(raw.toString('utf8')) as Meta;
    if (typeof m.revision !== 'number' || typeof m.compacted !== 'object' || m.compacted === null) throw new Error('bad shape');
    const out: Meta = { version: 1, revision: m.revision, compacted: { ...m.compacted } };
    if (m.obsolete !== undefined && typeof m.obsolete === 'object' && m.obsolete !== null) {
      const ob: Record<string, number[]> = {};
      for (const [ns, ids] of Object.entries(m.obsolete)) {
        if (!Array.isArray(ids) || !ids.every((x) => Number.isInteger(x))) throw new Error('bad obsolete list');
        ob[ns] = ids;
      }
      out.obsolete = ob;
    }
    return out;
  } catch (err) {
    throw new KvError('E_CORRUPT', `${path.join(dir, 'meta.json')}: unreadable (${(err as Error).message})`);
  }
}

export async function writeMeta(io: FileIo, dir: string, meta: Meta): Promise<void> {
  const tmp = path.join(dir, 'meta.json.tmp');
  const b = Buffer.from(JSON.stringify(meta));
  const fd = await io.open(tmp, 'w');
  try {
    await writeFully(io, fd, b, 0, b.length, 0);
    await io.fsync(fd);
  } finally {
    await io.close(fd);
  }
  await io.rename(tmp, path.join(dir, 'meta.json'));
  await io.fsyncDir(dir);
}
