/**
 * The operating-system steps of the stack, each one command with a one-line
 * error: losetup, mkfs.ext4, mount/umount, fsfreeze, fusermount, and the
 * checks `up`/`down`/`status` need (mount table, loop devices, processes).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { open as openFile, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';

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

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export interface MountEntry {
  source: string;
  mountpoint: string;
  fstype: string;
}

export function mounts(): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (f.length < 5 || sep < 0) continue;
    out.push({ mountpoint: unescapeMount(f[4]), fstype: f[sep + 1], source: unescapeMount(f[sep + 2] ?? '') });
  }
  return out;
}

export function mountAt(dir: string): MountEntry | undefined {
  return mounts()
    .filter((m) => m.mountpoint === dir)
    .pop();
}

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

export function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie (our own exited child not reaped yet) is not alive.
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z /.test(st);
  } catch {
    return false;
  }
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

/** SIGTERM, wait up to `graceMs`, then SIGKILL; resolves true if it stopped by itself. */
export async function stopProcess(pid: number, graceMs: number): Promise<boolean> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return true;
  }
  const end = Date.now() + graceMs;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
  await waitFor(`pid ${pid} to exit`, () => !alive(pid), 10_000).catch(() => undefined);
  return false;
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

export async function loopAttach(file: string, directIo: boolean): Promise<string> {
  if (!existsSync('/dev/loop-control') && !existsSync('/dev/loop0')) throw new StepError('no loop device support (/dev/loop-control is missing; modprobe loop)');
  try {
    const dev = (await run('losetup', ['--find', '--show', `--direct-io=${directIo ? 'on' : 'off'}`, file])).trim();
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

export async function loopDetach(dev: string): Promise<void> {
  await run('losetup', ['-d', dev]);
  await waitFor(`${dev} to detach`, () => loopBackingFile(dev) === undefined, 30_000);
}

/** The filesystem type blkid finds on a device ('' when none). */
export async function fsType(dev: string): Promise<string> {
  try {
    return (await run('blkid', ['-p', '-o', 'value', '-s', 'TYPE', dev])).trim();
  } catch {
    return ''; // blkid exits 2 when it finds nothing
  }
}

export async function isEmptyDir(dir: string): Promise<boolean> {
  const { readdir } = await import('node:fs/promises');
  return (await readdir(dir)).length === 0;
}

export async function readText(path: string): Promise<string> {
  return readFile(path, 'utf8').catch(() => '');
}
