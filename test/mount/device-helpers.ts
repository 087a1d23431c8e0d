/**
 * Test helpers for the device mount and the whole stack: run `glidekv`
 * commands and the device daemon as child processes, shell commands as
 * children (the test process never serves a mount, so it may also read the
 * mounts), and list what a stack could leave behind (loop devices, mounts,
 * processes).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChildLines, execCode, type ShResult } from './child-process.js';

export const BIN = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'bin', 'glidekv.mjs');

/** Why kernel tests cannot run here, or undefined when they can. */
/** Environment for a whole stack (store, catalog, cache and run registry) kept under `root`. */
export function stackEnv(root: string): Record<string, string> {
  return {
    GLIDEKV_STORE: `file://${join(root, 'objects')}`,
    GLIDEKV_CATALOG: join(root, 'catalog.db'),
    GLIDEKV_CACHE: join(root, 'cache'),
    GLIDEKV_RUN: join(root, 'run'),
  };
}

export function kernelUnavailable(): string | undefined {
  if (!existsSync('/dev/fuse')) return '/dev/fuse is missing';
  if (process.getuid?.() !== 0) return 'not running as root (losetup, mount)';
  if (!existsSync('/dev/loop-control')) return '/dev/loop-control is missing';
  return undefined;
}

export const q = (p: string) => `'${p.replace(/'/g, `'\\''`)}'`;

/** Runs a bash command in a child process; never throws on a non-zero exit. */
export function sh(cmd: string, opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<ShResult> {
  return execCode('bash', ['-c', cmd], { env: { ...process.env, ...opts.env }, timeoutMs: opts.timeoutMs ?? 120_000 });
}

/** Runs `glidekv ARGS` with `env`; never throws on a non-zero exit. */
export function glidekv(args: string[], env: Record<string, string>, timeoutMs = 120_000): Promise<ShResult> {
  return execCode(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, timeoutMs });
}

/** Throws with the command's stderr when it failed. */
export async function ok(p: Promise<ShResult>): Promise<string> {
  const r = await p;
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

/** `glidekv device mount VOLUME DIR` as a child; resolves once it printed its ready line. */
export class DeviceDaemon extends ChildLines {
  private constructor(proc: ChildProcess) {
    super(proc);
  }

  static async start(volume: string, dir: string, env: Record<string, string>, extra: string[] = ['--flush-interval', '0']): Promise<DeviceDaemon> {
    const proc = spawn(process.execPath, [BIN, 'device', 'mount', volume, dir, ...extra], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const d = new DeviceDaemon(proc);
    live.add(d);
    const end = Date.now() + 60_000;
    while (!d.lines.some((l) => l.includes(' mounted at '))) {
      if (d.exitCode !== null) throw new Error(`device daemon exited ${d.exitCode}: ${d.stderr.trim()}`);
      if (Date.now() > end) throw new Error(`device daemon not ready: ${d.stderr.trim()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return d;
  }

  /** SIGTERM and wait for the exit code. */
  async stop(): Promise<number | null> {
    this.proc.kill('SIGTERM');
    const code = await this.exited;
    live.delete(this);
    if (code !== 0) console.warn(`device daemon exit ${code} (${this.proc.signalCode}): ${this.stderr}`);
    return code;
  }

  async kill9(): Promise<void> {
    this.proc.kill('SIGKILL');
    await this.exited;
    live.delete(this);
  }
}

const live = new Set<DeviceDaemon>();

/** Kills every device daemon a test started and still running. */
export async function killDaemons(): Promise<void> {
  for (const d of live) {
    if (d.exitCode === null) d.proc.kill('SIGKILL');
  }
  live.clear();
}

/** Lazily unmounts everything mounted under `root` (deepest first) and detaches loops backed by files under it. */
export async function cleanupUnder(root: string): Promise<void> {
  for (const m of mountsUnder(root).reverse()) {
    await sh(`umount -l ${q(m)} 2>/dev/null || fusermount -u -z ${q(m)} 2>/dev/null; true`);
  }
  for (const dev of loopsUnder(root)) await sh(`losetup -d ${dev}; true`);
}

export function mountsUnder(root: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p)
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === root || p.startsWith(root + '/'));
}

export function loopsUnder(root: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync('/sys/block')) {
    if (!name.startsWith('loop')) continue;
    try {
      const f = readFileSync(`/sys/block/${name}/loop/backing_file`, 'utf8').trim();
      if (f === root || f.startsWith(root + '/')) out.push(`/dev/${name}`);
    } catch {
      /* not attached */
    }
  }
  return out;
}

/** Pids of glidekv processes whose command line mentions `root`. */
export function processesUnder(root: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (/^\d+ \(.*\) Z /.test(stat)) continue;
      if (argv.some((a) => a.endsWith('glidekv.mjs')) && argv.some((a) => a.startsWith(root))) out.push(Number(name));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Everything of a stack under `root` that could be left behind. */
export function leftovers(root: string): { mounts: string[]; loops: string[]; pids: number[] } {
  return { mounts: mountsUnder(root), loops: loopsUnder(root), pids: processesUnder(root) };
}
