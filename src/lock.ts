/**
 * The directory lock: `<dir>/LOCK` holds the pid of the process that has the engine open.
 * A second open (this process or another) fails with E_LOCKED naming that pid; a lock
 * left by a dead process is taken over.
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

export class DirLock {
  private constructor(private readonly io: FileIo, readonly file: string) {}

  static async acquire(io: FileIo, dir: string): Promise<DirLock> {
    const file = path.join(dir, 'LOCK');
    for (let attempt = 0; attempt < 5; attempt++) {
      let fd: number;
      try {
        fd = await io.open(file, 'wx');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        let pid = NaN;
        try {
          pid = parseInt((await io.readFile(file)).toString('utf8').trim(), 10);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile
          throw e;
        }
        if (pid === process.pid || pidAlive(pid)) throw KvError.locked(dir, pid);
        if (Number.isNaN(pid)) {
          // a lock being written right now by another opener: give it a moment
          await new Promise((r) => setTimeout(r, 20));
          const again = parseInt((await io.readFile(file).catch(() => Buffer.alloc(0))).toString('utf8').trim(), 10);
          if (pidAlive(again)) throw KvError.locked(dir, again);
        }
        await io.unlink(file).catch(() => {}); // stale: its process is gone
        continue;
      }
      try {
        const b = Buffer.from(`${process.pid}\n`);
        await writeFully(io, fd, b, 0, b.length, 0);
        await io.fsync(fd);
      } finally {
        await io.close(fd);
      }
      return new DirLock(io, file);
    }
    throw new KvError('E_LOCKED', `${dir}: could not take the lock`);
  }

  async release(): Promise<void> {
    await this.io.unlink(this.file).catch(() => {});
  }
}
