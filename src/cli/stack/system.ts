/**
 * The operating-system steps of the stack, each one command with a one-line
 * error: losetup, mkfs.ext4, mount/umount, fsfreeze, fusermount, and the
 * checks `up`/`down`/`status` need (mount table, loop devices, processes).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { open as openFile, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { pidAlive } from '../../../lib/pid-alive.js';

const execFileP = promisify(execFile);

export class StepError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StepError';
  }
}

/** Runs a command; resolves its stdout, or rejects with `CMD: last stderr line`. */
export async function run(cmd: string, args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { timeout: opts.timeoutMs ?? 600_000, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string; code?: string | number };
    if (e.code === 'ENOENT') throw new StepError(`${cmd}: command not found`);
    const line = (e.stderr || e.message).trim().split('\n').filter(Boolean).pop() ?? e.message;
    throw new StepError(`${cmd} ${args.join(' ')}: ${line}`);
  }
}

/**
 * fsync(2) of a file, opened read-write. On the device file of a stack this
 * is a flush: the device daemon uploads every dirty block and commits before
 * it returns.
 */
export async function fsyncFile(file: string): Promise<void> {
  const f = await openFile(file, 'r+');
  try {
    await f.sync();
  } finally {
    await f.close();
  }
}

// What is mounted where: one parser of /proc/self/mountinfo, in mount/ (it never loads the FUSE addon).
import { mountAt } from '../../../mount/mountinfo.js';
export { mounts, mountAt, type MountEntry } from '../../../mount/mountinfo.js';

export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number, fail?: () => string | undefined): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    const f = fail?.();
    if (f) throw new StepError(f);
    if (Date.now() > end) throw new StepError(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---- processes ----

/** A zombie (our own exited child not reaped yet) is not alive (lib/pid-alive.ts). */
export function alive(pid: number | undefined): boolean {
  return pid !== undefined && pidAlive(pid);
}

/** The process's argv (empty when it is gone). */
export function cmdline(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/** Is `pid` still the process we started (pids get reused)? */
export function isOurs(pid: number | undefined, mustContain: string[]): boolean {
  if (!pid || !alive(pid)) return false;
  const argv = cmdline(pid);
  return mustContain.every((s) => argv.includes(s));
}

/**
 * How long a process may take to go away after SIGKILL. A process in the
 * middle of I/O on a FUSE-backed filesystem only dies once that I/O returns,
 * which on a loaded machine can take a while.
 */
export const KILL_WAIT_MS = 60_000;

/**
 * SIGTERM, wait up to `graceMs`, then SIGKILL and wait up to KILL_WAIT_MS
 * for it to be gone; resolves true if it stopped by itself, false if it had
 * to be killed. Throws a StepError when even SIGKILL did not end it in time.
 */
export async function stopProcess(pid: number, graceMs: number): Promise<boolean> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return true;
  }
  const end = Date.now() + graceMs;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await sleep(100);
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
  await waitFor(`pid ${pid} to exit after SIGKILL`, () => !alive(pid), KILL_WAIT_MS);
  return false;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Exponential backoff with jitter for retries of busy steps: 100 ms doubling, at most 2 s. */
export function backoffMs(attempt: number): number {
  const d = Math.min(2000, 100 * 2 ** Math.min(attempt, 5));
  return Math.round(d / 2 + Math.random() * (d / 2));
}

/**
 * Retries `fn` while it fails with a "busy" error (EBUSY: `target is busy`,
 * `Device or resource busy`), with backoff, until `deadline` (ms since the
 * epoch); other errors and the last busy one are thrown.
 */
export async function retryWhileBusy<T>(fn: () => Promise<T>, deadline: number, onBusy?: (err: Error, attempt: number) => void): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isBusy(err) || Date.now() >= deadline) throw err;
      onBusy?.(err as Error, attempt);
      await sleep(Math.min(backoffMs(attempt), Math.max(0, deadline - Date.now())));
    }
  }
}

export function isBusy(err: unknown): boolean {
  return /\bbusy\b|EBUSY/i.test((err as Error)?.message ?? '');
}

/**
 * Processes that hold something under `dir` (their cwd or root, an open
 * file) or the device `dev`, as `pid N (name)`, for messages. Reads only
 * /proc links, never the file systems themselves.
 */
export function holdersOf(dir: string | undefined, dev?: string): string[] {
  const out: string[] = [];
  const under = (p: string) => (dir !== undefined && (p === dir || p.startsWith(dir + '/'))) || (dev !== undefined && p === dev);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    const links: string[] = [];
    for (const l of ['cwd', 'root']) {
      try {
        links.push(readlinkSync(`/proc/${name}/${l}`));
      } catch {
        /* gone or not ours to see */
      }
    }
    try {
      for (const fd of readdirSync(`/proc/${name}/fd`)) {
        try {
          links.push(readlinkSync(`/proc/${name}/fd/${fd}`));
        } catch {
          /* closed meanwhile */
        }
      }
    } catch {
      /* gone */
    }
    if (links.some(under)) {
      let comm = '?';
      try {
        comm = readFileSync(`/proc/${name}/comm`, 'utf8').trim();
      } catch {
        /* gone */
      }
      out.push(`pid ${name} (${comm})`);
    }
  }
  return out;
}

/**
 * Unmounts `dir` (`umount`, which also unmounts FUSE as root). While the
 * kernel says it is busy (a process still has a file open there, or is
 * exiting), it retries with backoff until `busyMs` passed, logging who holds
 * it, then detaches lazily (`umount -l`): the mount goes away as soon as the
 * last user leaves. Resolves 'unmounted', 'lazy', or 'gone' (someone else
 * unmounted it meanwhile).
 */
export async function unmountRetrying(dir: string, busyMs: number, log: (line: string) => void = () => {}): Promise<'unmounted' | 'lazy' | 'gone'> {
  const deadline = Date.now() + busyMs;
  let told = false;
  if (!mountAt(dir)) return 'gone';
  try {
    await retryWhileBusy(
      async () => {
        if (!mountAt(dir)) return;
        await run('umount', [dir], { timeoutMs: 600_000 });
      },
      deadline,
      () => {
        if (told) return;
        told = true;
        const who = holdersOf(dir);
        log(`${dir} is busy${who.length ? ` (held by ${who.slice(0, 5).join(', ')})` : ''}; retrying for up to ${Math.round(busyMs / 1000)} s`);
      },
    );
    return 'unmounted';
  } catch (err) {
    if (!mountAt(dir)) return 'gone';
    if (!isBusy(err)) throw err;
    const who = holdersOf(dir);
    log(`${dir} still busy after ${Math.round(busyMs / 1000)} s${who.length ? ` (held by ${who.slice(0, 5).join(', ')})` : ''}; syncing it and unmounting lazily`);
    // A lazily detached filesystem is written back only when its last user
    // leaves: write back now, while what lies under it still works.
    await run('sync', ['-f', dir]).catch((e) => log(`sync -f ${dir} failed: ${(e as Error).message}`));
    await run('umount', ['-l', dir]);
    return 'lazy';
  }
}

// ---- loop devices ----

/** The backing file of /dev/loopN, or undefined when it is not attached. */
export function loopBackingFile(dev: string): string | undefined {
  const name = dev.replace(/^\/dev\//, '');
  try {
    return readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Loop devices whose backing file is `file`. */
export function loopsFor(file: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync('/sys/block')) {
    if (!name.startsWith('loop')) continue;
    if (loopBackingFile(name) === file) out.push(`/dev/${name}`);
  }
  return out;
}

/** How long `losetup` may keep answering "busy" (another attach took the free device first, udev probing it). */
export const LOOP_BUSY_MS = 30_000;

export async function loopAttach(file: string, directIo: boolean): Promise<string> {
  if (!existsSync('/dev/loop-control') && !existsSync('/dev/loop0')) throw new StepError('no loop device support (/dev/loop-control is missing; modprobe loop)');
  try {
    const attach = () => run('losetup', ['--find', '--show', `--direct-io=${directIo ? 'on' : 'off'}`, file]);
    const dev = (await retryWhileBusy(attach, Date.now() + LOOP_BUSY_MS)).trim();
    if (!dev.startsWith('/dev/loop')) throw new StepError(`losetup printed '${dev}'`);
    return dev;
  } catch (err) {
    const msg = (err as Error).message;
    if (/cannot find an unused loop device|could not find any free loop device|no free loop/i.test(msg)) {
      throw new StepError('no free loop device (losetup --find found none; detach one with losetup -d or raise max_loop)');
    }
    throw err;
  }
}

/**
 * Detaches `dev` if it still backs onto `file` (a loop device that was
 * detached meanwhile may already serve someone else: never touch it then).
 * `losetup -d` of a device still in use (a lazily unmounted ext4) only marks
 * it to go when its last user leaves: wait for that until `timeoutMs`, then
 * fail naming what holds it. A "busy" answer is retried with backoff.
 */
export async function loopDetach(dev: string, file: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const ours = () => loopBackingFile(dev) === file;
  if (!ours()) return;
  try {
    await retryWhileBusy(() => run('losetup', ['-d', dev]), deadline);
  } catch (err) {
    if (!ours()) return; // detached meanwhile (autoclear)
    throw err;
  }
  try {
    await waitFor(`${dev} to detach`, () => !ours(), Math.max(1000, deadline - Date.now()));
  } catch {
    const who = holdersOf(undefined, dev);
    throw new StepError(
      `${dev} still attached to ${file} after ${Math.round(timeoutMs / 1000)} s: still in use` +
        (who.length ? ` by ${who.slice(0, 5).join(', ')}` : ' (a lazily unmounted filesystem on it has users left)') +
        '; it is released when they leave, then run glidekv down again',
    );
  }
}

/**
 * The filesystem type blkid finds on a device ('' when there is none).
 * Only blkid's "nothing found" (exit 2) means none: any other failure is an
 * error, never a reason to run mkfs over what may be a filesystem.
 */
export async function fsType(dev: string): Promise<string> {
  try {
    const { stdout } = await execFileP('blkid', ['-p', '-o', 'value', '-s', 'TYPE', dev], { timeout: 120_000 });
    return stdout.trim();
  } catch (err) {
    const e = err as { code?: string | number; stderr?: string; message: string; killed?: boolean };
    if (e.code === 2) return '';
    if (e.code === 'ENOENT') throw new StepError('blkid: command not found');
    const line = (e.stderr || e.message).trim().split('\n').filter(Boolean).pop() ?? e.message;
    throw new StepError(`blkid -p ${dev} failed (${e.killed ? 'timed out' : `exit ${e.code}`}): ${line}; not making a filesystem on a device that could not be read`);
  }
}

export async function isEmptyDir(dir: string): Promise<boolean> {
  const { readdir } = await import('node:fs/promises');
  return (await readdir(dir)).length === 0;
}

export async function readText(path: string): Promise<string> {
  return readFile(path, 'utf8').catch(() => '');
}
