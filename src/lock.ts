/**
 * The directory lock: `<dir>/LOCK` holds the pid of the process that has the engine open.
 * A second open (this process or another) fails with E_LOCKED naming that pid; a lock
 * left by a dead process is taken over.
 *
 * The lock appears atomically with its content: the pid is written and fsynced to
 * `LOCK.<pid>.tmp`, which is then link(2)ed to `LOCK` (EEXIST = somebody holds it). A stale
 * lock is moved aside with rename(2) before it is removed, so of two processes taking over
 * the same stale lock only one removes it; if the one moved aside turns out to be a live
 * lock (taken over meanwhile), it is linked back.
 */
import path from 'node:path';
import type { FileIo } from './file-io.js';
import { writeFully } from './file-io.js';
import { KvError } from './errors.js';

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readPid(io: FileIo, file: string): Promise<number | null> {
  try {
    return parseInt((await io.readFile(file)).toString('utf8').trim(), 10);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

export class DirLock {
  private constructor(private readonly io: FileIo, readonly file: string) {}

  static async acquire(io: FileIo, dir: string): Promise<DirLock> {
    const file = path.join(dir, 'LOCK');
    const tmp = path.join(dir, `LOCK.${process.pid}.tmp`);
    const fd = await io.open(tmp, 'w');
    try {
      const b = Buffer.from(`${process.pid}\n`);
      await writeFully(io, fd, b, 0, b.length, 0);
      await io.fsync(fd);
    } finally {
      await io.close(fd);
    }
    try {
      for (let attempt = 0; attempt < 10; attempt++) {
        try {
          await io.link(tmp, file);
          await io.fsyncDir(dir);
          return new DirLock(io, file);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        }
        const pid = await readPid(io, file);
        if (pid === null) continue; // released meanwhile
        if (pid === process.pid || pidAlive(pid)) throw KvError.locked(dir, pid);
        // stale: move it aside, and make sure what we moved is the stale one
        const aside = path.join(dir, `LOCK.stale.${process.pid}`);
        try {
          await io.rename(file, aside);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
          throw err;
        }
        const moved = await readPid(io, aside);
        if (moved !== null && moved !== pid && pidAlive(moved)) {
          await io.link(aside, file).catch(() => {});
          await io.unlink(aside).catch(() => {});
          throw KvError.locked(dir, moved);
        }
        await io.unlink(aside).catch(() => {});
      }
      throw new KvError('E_LOCKED', `${dir}: could not take the lock`);
    } finally {
      await io.unlink(tmp).catch(() => {});
    }
  }

  async release(): Promise<void> {
    await this.io.unlink(this.file).catch(() => {});
  }
}
