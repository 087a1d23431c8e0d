/**
 * The directory lock: `<dir>/LOCK` holds the pid of the process that has the engine open.
 * A second open (this process or another) fails with E_LOCKED naming that pid; a lock
 * left by a dead process is taken over. The algorithm (link(2) of a fsynced temp file,
 * stale locks removed under a break lock) is lib/pid-lock.ts, shared with the block layer;
 * every file operation goes through the engine's FileIo, so fault tests reach it.
 */
import path from 'node:path';
import { PidLock } from '../lib/pid-lock.js';
import type { FileIo } from './file-io.js';
import { KvError } from './errors.js';

export class DirLock {
  private constructor(private readonly lock: PidLock) {}

  get file(): string {
    return this.lock.file;
  }

  static async acquire(io: FileIo, dir: string): Promise<DirLock> {
    const lock = await PidLock.acquire(path.join(dir, 'LOCK'), {
      io,
      heldError: (pid) => (pid === null ? new KvError('E_LOCKED', `${dir}: could not take the lock`) : KvError.locked(dir, pid)),
    });
    return new DirLock(lock);
  }

  async release(): Promise<void> {
    await this.lock.release();
  }
}
