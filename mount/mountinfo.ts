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
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

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
    await execFileP('fusermount', ['-u', dir]);
    return;
  } catch (err) {
    if (!mountAt(dir)) return;
    if (!opts.lazy) throw new Error(`cannot unmount ${dir}: ${firstLine(err)}`);
  }
  try {
    await execFileP('fusermount', ['-u', '-z', dir]);
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
