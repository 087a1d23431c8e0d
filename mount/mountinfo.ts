/**
 * What is mounted where, and taking a FUSE mount away: the helpers the CLI
 * needs without serving a mount. This module never loads the FUSE addon
 * (mount/fuse.ts does), so `glidekv down` and `status` stay light.
 *
 *   mounts()              every entry of /proc/self/mountinfo (mount point,
 *                         fs type, source; octal escapes decoded)
 *   mountAt(dir)          the top entry mounted exactly at `dir`, if any
 *   isMounted(dir)        whether something is mounted exactly at `dir`
 *   unmountPath(dir, o)   `fusermount -u` (then `-u -z` if `lazy`); a mount
 *                         that is already gone counts as unmounted
 *
 * Why fusermount runs from a worker thread: starting any child (uv_spawn)
 * blocks the calling thread in a read of an internal pipe until the child has
 * exec'd. A FUSE daemon unmounting itself must not block its event loop even
 * that long: if the child touches the mount before its exec is done (shown:
 * the exec's PATH search looking up a name on the mount; possible too: the
 * close-on-exec flush of an inherited file on it), the kernel waits for an
 * answer from the event loop that waits for the child: a deadlock, the main
 * thread in anon_pipe_read as seen twice in a stopping device daemon, the
 * child in request_wait_answer (test/mount/stop-hang.test.ts). The worker's
 * own loop does the spawn; the main loop keeps answering the kernel.
 * Each fusermount step is also bounded (FUSERMOUNT_TIMEOUT_MS): a step that
 * hangs is killed and counts as failed (then `-u -z` if `lazy`). A step also
 * counts as done once the mount is gone from mountinfo, without waiting for
 * the child's exit to be reported (a stop was also seen idle in epoll beside
 * an unreaped, defunct fusermount).
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

/** How long one fusermount step may take before it is killed (and counts as failed). */
export const FUSERMOUNT_TIMEOUT_MS = 30_000;

/** How often execFileOffThread looks at `doneWhen`, and how long past the child's timeout it waits for the worker. */
const DONE_POLL_MS = 200;
const DONE_GRACE_MS = 5_000;

/**
 * The worker: runs one command on its own event loop, posts the outcome.
 * libfuse 2.9 opens /dev/fuse without O_CLOEXEC, and Node has no fcntl(), so
 * a plain spawn hands the FUSE connection to the child: a child stuck on the
 * mount then keeps the connection alive after the daemon is killed, and only
 * a fusectl abort frees it. Each fd of this process on /dev/fuse that is open
 * without close-on-exec (its flags in /proc/self/fdinfo) is therefore named
 * in the child's stdio as /dev/null: libuv dup2()s /dev/null over that number
 * in the child before the exec, so the child never holds the connection.
 * Should that spawn fail (libuv moves fds above the stdio count, EINVAL at the
 * open-file limit), the command is spawned the plain way.
 */
const RUN_IN_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const O_CLOEXEC = 0o2000000;
const stdio = ['ignore', 'pipe', 'pipe'];
let nul;
try {
  for (const name of fs.readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (!(fd >= 3)) continue;
    try {
      if (fs.readlinkSync('/proc/self/fd/' + fd) !== '/dev/fuse') continue;
      const flags = parseInt(/^flags:\\s*([0-7]+)/m.exec(fs.readFileSync('/proc/self/fdinfo/' + fd, 'utf8'))[1], 8);
      if (flags & O_CLOEXEC) continue;
    } catch {
      continue; // closed meanwhile
    }
    if (nul === undefined) nul = fs.openSync('/dev/null', 'r');
    while (stdio.length < fd) stdio.push('ignore');
    stdio[fd] = nul;
  }
} catch {
  // no /proc or no fd left: the plain way
}
let err = '';
let timedOut = false;
let child;
for (const io of stdio.length > 3 ? [stdio, 'pipe'] : ['pipe']) {
  try {
    child = spawn(workerData.cmd, workerData.args, { stdio: io });
    break;
  } catch (e) {
    if (io === 'pipe') parentPort.postMessage({ ok: false, message: String(e && e.message), stderr: '' });
  }
}
if (nul !== undefined) fs.closeSync(nul);
if (child) {
  const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, workerData.timeoutMs);
  child.stdout.resume();
  child.stderr.setEncoding('utf8').on('data', (s) => (err += s));
  child.on('error', (e) => {
    clearTimeout(timer);
    parentPort.postMessage({ ok: false, message: String(e.message), stderr: err });
  });
  child.on('close', (code, signal) => {
    clearTimeout(timer);
    if (code === 0) parentPort.postMessage({ ok: true });
    else parentPort.postMessage({ ok: false, message: workerData.cmd + ' ' + workerData.args.join(' ') + (timedOut ? ': killed after ' + workerData.timeoutMs + ' ms' : signal ? ': killed by ' + signal : ': exit ' + code), stderr: err });
  });
}
`;

/**
 * execFile(cmd, args) spawned from a worker thread (see the header): resolves
 * on exit 0, rejects with `{ message, stderr }` otherwise (also on timeout).
 */
export function execFileOffThread(cmd: string, args: string[], opts: { timeoutMs?: number; doneWhen?: () => boolean } = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? FUSERMOUNT_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const w = new Worker(RUN_IN_WORKER, { eval: true, workerData: { cmd, args, timeoutMs } });
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearInterval(poll);
      clearTimeout(deadline);
      if (err) reject(err);
      else resolve();
    };
    // Settled from here too, not only by the child's exit: once the work is
    // visibly done (doneWhen), or at a deadline of our own should the
    // child's exit never be reported.
    const poll = setInterval(() => {
      if (opts.doneWhen?.()) {
        finish();
        void w.terminate();
      }
    }, DONE_POLL_MS);
    const deadline = setTimeout(() => {
      finish(new Error(`${cmd} ${args.join(' ')}: no answer within ${timeoutMs + DONE_GRACE_MS} ms`));
      void w.terminate();
    }, timeoutMs + DONE_GRACE_MS);
    w.once('message', (m: { ok: boolean; message?: string; stderr?: string }) => {
      finish(m.ok ? undefined : Object.assign(new Error(m.message ?? `${cmd} failed`), { stderr: m.stderr ?? '' }));
    });
    w.once('error', (err) => finish(err));
    w.once('exit', (code) => finish(new Error(`${cmd}: worker exited (${code}) without an answer`)));
  });
}

export interface MountEntry {
  source: string;
  mountpoint: string;
  fstype: string;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses mountinfo text (fields: 5 = mount point; after the '-' separator: fs type, source). */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (f.length < 5 || sep < 0) continue;
    out.push({ mountpoint: unescapeMount(f[4]), fstype: f[sep + 1], source: unescapeMount(f[sep + 2] ?? '') });
  }
  return out;
}

export function mounts(): MountEntry[] {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** The last (topmost) mount exactly at `dir` (an absolute path), if any. */
export function mountAt(dir: string): MountEntry | undefined {
  return mounts()
    .filter((m) => m.mountpoint === dir)
    .pop();
}

/** Is `dir` (an absolute path) a mount point right now? */
export async function isMounted(dir: string): Promise<boolean> {
  return mountAt(dir) !== undefined;
}

/**
 * `fusermount -u DIR`; if that fails and `lazy` is set, `fusermount -u -z DIR`
 * (detach now, finish when the last user lets go: a loop device, a busy
 * shell). Used by a daemon on itself and by the CLI on a mount whose daemon
 * died (ENOTCONN). If DIR is no longer a mount point when a step fails, the
 * job is done (someone else unmounted it) and this resolves.
 */
export async function unmountPath(dir: string, opts: { lazy?: boolean } = {}): Promise<void> {
  try {
    await execFileOffThread('fusermount', ['-u', dir], { doneWhen: () => !mountAt(dir) });
    return;
  } catch (err) {
    if (!mountAt(dir)) return;
    if (!opts.lazy) throw new Error(`cannot unmount ${dir}: ${firstLine(err)}`);
  }
  try {
    await execFileOffThread('fusermount', ['-u', '-z', dir], { doneWhen: () => !mountAt(dir) });
  } catch (err) {
    if (!mountAt(dir)) return;
    throw new Error(`cannot unmount ${dir}: ${firstLine(err)}`);
  }
}

function firstLine(err: unknown): string {
  const e = err as { stderr?: string; message?: string };
  return String(e.stderr || e.message || err)
    .trim()
    .split('\n')[0];
}
