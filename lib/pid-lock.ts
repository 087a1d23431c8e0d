/**
 * The pid lock: a file that holds the pid of the process that has something
 * open (the engine's data directory, a volume's cache). A second taker — in
 * this process or another — is refused with the holder's pid; a lock left by a
 * dead process (kill -9) is taken over. One algorithm, used by both layers.
 *
 * Files, for a lock file `F`:
 * - `F`                     the lock: `<pid>\n`, fsynced before it appears.
 * - `F.<pid>.<rand>.tmp`    a taker's lock-to-be; removed before acquire returns.
 * - `F.break.<k>`           held (same content) while a taker removes a stale `F`.
 *
 * Taking the lock:
 * 1. Write `<pid>\n` to the tmp file and fsync it, then link(2) it to `F`.
 *    link fails with EEXIST when `F` exists, so the lock appears atomically and
 *    with its content: nobody ever sees an empty or half-written lock of ours.
 * 2. On EEXIST read `F`. Our own pid: this process holds it (refused). A live
 *    pid: refused. Gone meanwhile: try again.
 * 3. A dead pid (or content that is no pid, e.g. from an older algorithm that
 *    created the file before writing it): the lock is stale. Take the break
 *    lock; holding it, read `F` again and unlink it only if it still holds
 *    exactly the stale bytes; drop the break lock; go to 1.
 * 4. Having linked `F`, remove what dead takers left: break locks and tmp
 *    files whose pid is dead.
 *
 * Why the break lock: reading `F` and then removing it is not atomic. Without
 * mutual exclusion, taker A could remove the stale lock and link its own, and
 * taker B — which read the stale pid before — would then remove A's live lock
 * (or move it aside and fail to put it back before C links), and two takers
 * would both believe they hold it. Under the break lock only one taker at a
 * time may remove `F`, and `F` cannot change while it exists (link never
 * replaces), so "read, compare, unlink" is safe.
 *
 * The break lock is `F.break.<k>` for the lowest k whose file is absent or
 * held by a live pid: a taker links `F.break.0`; on EEXIST, a live holder is
 * waited for (up to `waitMs`), a dead one (killed inside the few syscalls of
 * step 3) is stepped over to `k + 1`. A break file is never removed by a
 * taker racing for it — removing a dead one is the same read-then-unlink race
 * one level up — only by its owner, or in step 4 by the holder of a live `F`:
 * while `F` names a live process no breaker removes it (their stale bytes
 * differ), so two breakers overlapping after that cleanup do no harm.
 *
 * Limits: a pid names a process on this machine only (a lock on a shared
 * filesystem is not safe across hosts), and a recycled pid makes a stale lock
 * look live until that process exits.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { pidAlive } from './pid-alive.js';

/** The few file operations the lock needs (the engine passes its fault-injecting FileIo). */
export interface PidLockIo {
  open(file: string, flags: string, mode?: number): Promise<number>;
  write(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  fsync(fd: number): Promise<void>;
  close(fd: number): Promise<void>;
  /** link(2): fails with EEXIST when `to` exists. */
  link(from: string, to: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(file: string): Promise<void>;
  readFile(file: string): Promise<Buffer>;
  readdir(dir: string): Promise<string[]>;
  fsyncDir(dir: string): Promise<void>;
}

const fsp = fs.promises;

/** node:fs with numeric descriptors. */
export const nodePidLockIo: PidLockIo = {
  open: (file, flags, mode = 0o600) => new Promise((resolve, reject) => fs.open(file, flags, mode, (e, fd) => (e ? reject(e) : resolve(fd)))),
  write: (fd, buf, offset, length, position) => new Promise((resolve, reject) => fs.write(fd, buf, offset, length, position, (e, n) => (e ? reject(e) : resolve(n)))),
  fsync: (fd) => new Promise((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(e) : resolve()))),
  close: (fd) => new Promise((resolve, reject) => fs.close(fd, (e) => (e ? reject(e) : resolve()))),
  link: (from, to) => fsp.link(from, to),
  rename: (from, to) => fsp.rename(from, to),
  unlink: (file) => fsp.unlink(file),
  readFile: (file) => fsp.readFile(file),
  readdir: (dir) => fsp.readdir(dir),
  async fsyncDir(dir) {
    const fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      await new Promise<void>((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(e) : resolve())));
    } finally {
      fs.closeSync(fd);
    }
  },
};

/** The lock is held: by `pid`, or (pid null) it could not be taken within the wait. */
export class LockHeldError extends Error {
  readonly code = 'LOCK_HELD';
  constructor(readonly file: string, readonly pid: number | null) {
    super(pid === null ? `${file}: could not take the lock` : `${file} is held by pid ${pid}`);
    this.name = 'LockHeldError';
  }
}

export interface PidLockOptions {
  io?: PidLockIo;
  /** The error to throw when the lock is held (default: LockHeldError). */
  heldError?: (holder: number | null) => Error;
  /** How long to wait for another taker that is removing a stale lock (default 30 s). */
  waitMs?: number;
}

function isCode(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === code;
}

async function readOrNull(io: PidLockIo, file: string): Promise<string | null> {
  try {
    return (await io.readFile(file)).toString('utf8');
  } catch (err) {
    if (isCode(err, 'ENOENT')) return null;
    throw err;
  }
}

/** The pid a lock file's content names, or NaN when it names none. */
function parsePid(text: string): number {
  const t = text.trim();
  return /^[1-9][0-9]{0,9}$/.test(t) ? Number(t) : NaN;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The lock files this process holds now (resolved paths). A lock file naming this process's
 * pid that is not in here is stale: a release whose unlink failed (EIO) left it. Without this
 * set such a file could never be taken again while the process lives.
 */
const heldHere = new Set<string>();
/** The break locks this process is holding now (same idea). */
const breakingHere = new Set<string>();

export class PidLock {
  private released = false;

  private constructor(private readonly io: PidLockIo, readonly file: string, private readonly content: string) {}

  /** Takes the lock at `file` (its directory must exist) or throws the held error. */
  static async acquire(file: string, opts: PidLockOptions = {}): Promise<PidLock> {
    const io = opts.io ?? nodePidLockIo;
    const held = opts.heldError ?? ((pid: number | null) => new LockHeldError(file, pid));
    const dir = path.dirname(file);
    const content = `${process.pid}\n`;
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const fd = await io.open(tmp, 'wx', 0o600);
    try {
      const b = Buffer.from(content);
      for (let done = 0; done < b.length; ) {
        const n = await io.write(fd, b, done, b.length - done, done);
        if (n <= 0) throw Object.assign(new Error(`short write to ${tmp}`), { code: 'EIO' });
        done += n;
      }
      await io.fsync(fd);
    } finally {
      await io.close(fd);
    }
    const deadline = Date.now() + (opts.waitMs ?? 30_000);
    try {
      for (;;) {
        try {
          await io.link(tmp, file);
          // the lock is ours from here: a failure before we hand it out must not leave it held
          // by this (live) process, or no open in this process could ever take it again
          heldHere.add(path.resolve(file));
          await io.fsyncDir(dir).catch(async (err) => {
            heldHere.delete(path.resolve(file));
            await io.unlink(file).catch(() => {});
            throw err;
          });
          await removeLeftovers(io, file).catch(() => {});
          return new PidLock(io, file, content);
        } catch (err) {
          if (!isCode(err, 'EEXIST')) throw err;
        }
        const text = await readOrNull(io, file);
        if (text !== null) {
          const pid = parsePid(text);
          if (pid === process.pid ? heldHere.has(path.resolve(file)) : pidAlive(pid)) throw held(pid);
          const outcome = await breakStale(io, file, tmp, text);
          if (outcome === 'wait') {
            if (Date.now() > deadline) throw held(null);
            await sleep(5 + Math.random() * 20);
          }
        }
        if (Date.now() > deadline) throw held(null);
      }
    } finally {
      await io.unlink(tmp).catch(() => {});
    }
  }

  /** Removes the lock if it is still ours. Safe to call twice. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    heldHere.delete(path.resolve(this.file));
    const text = await readOrNull(this.io, this.file).catch(() => null);
    if (text === this.content) await this.io.unlink(this.file).catch(() => {});
  }

  /** release() for callers that cannot wait (node:fs directly, whatever io the lock was taken with). */
  releaseSync(): void {
    if (this.released) return;
    this.released = true;
    heldHere.delete(path.resolve(this.file));
    try {
      if (fs.readFileSync(this.file, 'utf8') === this.content) fs.unlinkSync(this.file);
    } catch {
      // already gone
    }
  }
}

const MAX_BREAK_LEVELS = 64;

/**
 * Removes the stale lock `file` (still holding exactly `stale`) under the break
 * lock. 'retry': try the link again now; 'wait': another live taker is breaking.
 */
async function breakStale(io: PidLockIo, file: string, tmp: string, stale: string): Promise<'retry' | 'wait'> {
  let brk: string | null = null;
  for (let k = 0; k < MAX_BREAK_LEVELS && brk === null; k++) {
    const candidate = `${file}.break.${k}`;
    try {
      await io.link(tmp, candidate);
      brk = candidate;
      breakingHere.add(path.resolve(candidate));
    } catch (err) {
      if (!isCode(err, 'EEXIST')) throw err;
      const text = await readOrNull(io, candidate);
      if (text === null) return 'retry';
      const pid = parsePid(text);
      if (pid === process.pid ? breakingHere.has(path.resolve(candidate)) : pidAlive(pid)) return 'wait';
      // dead breaker (or one of ours whose unlink failed): step over it
    }
  }
  if (brk === null) throw Object.assign(new Error(`${file}: ${MAX_BREAK_LEVELS} dead break locks`), { code: 'EDEADLK' });
  try {
    const now = await readOrNull(io, file);
    if (now === stale) {
      await io.unlink(file).catch((e) => {
        if (!isCode(e, 'ENOENT')) throw e;
      });
      await io.fsyncDir(path.dirname(file));
    }
  } finally {
    breakingHere.delete(path.resolve(brk));
    await io.unlink(brk).catch(() => {});
  }
  return 'retry';
}

/** Step 4: break locks and tmp files of dead takers. Only the holder of a live lock calls this. */
async function removeLeftovers(io: PidLockIo, file: string): Promise<void> {
  const base = path.basename(file);
  const dir = path.dirname(file);
  for (const name of await io.readdir(dir)) {
    if (!name.startsWith(`${base}.`)) continue;
    const rest = name.slice(base.length + 1);
    let dead: boolean;
    if (/^break\.\d+$/.test(rest)) {
      const text = await readOrNull(io, path.join(dir, name));
      if (text === null) continue;
      const pid = parsePid(text);
      dead = pid !== process.pid && !pidAlive(pid);
    } else {
      const m = /^(\d+)\.[0-9a-f]+\.tmp$/.exec(rest);
      if (!m) continue;
      dead = !pidAlive(Number(m[1]));
    }
    if (dead) await io.unlink(path.join(dir, name)).catch(() => {});
  }
}

/** The live pid holding the lock at `file`, or null (no lock, or its holder is dead). */
export function lockHolder(file: string): number | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const pid = parsePid(text);
  return pidAlive(pid) ? pid : null;
}
