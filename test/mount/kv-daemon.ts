/**
 * Test helpers for the KV mount: run `glidekv kv mount` as a child process,
 * run shell commands as children (the test never does I/O from the daemon's
 * process), and clean up mounts and processes whatever happens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll } from 'vitest';
import { ChildLines, execCode, type ShResult } from './child-process.js';

const BIN = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'bin', 'glidekv.mjs');

/** Why kernel tests cannot run here, or undefined when they can. */
export function fuseUnavailable(): string | undefined {
  if (!existsSync('/dev/fuse')) return '/dev/fuse is missing';
  if (process.getuid?.() !== 0) return 'not running as root';
  return undefined;
}

/** Runs a bash command in a child process; never throws on a non-zero exit. */
export function sh(cmd: string, opts: { cwd?: string; timeoutMs?: number } = {}): Promise<ShResult> {
  return execCode('bash', ['-c', cmd], { cwd: opts.cwd, timeoutMs: opts.timeoutMs ?? 60_000 });
}

export class KvDaemon extends ChildLines {
  private waiters: Array<() => void> = [];

  private constructor(
    proc: ChildProcess,
    readonly dataDir: string,
    readonly mountpoint: string,
  ) {
    super(proc);
  }

  protected override changed(): void {
    for (const w of this.waiters) w();
  }

  static async start(dataDir: string, mountpoint: string, args: string[] = []): Promise<KvDaemon> {
    const proc = spawn(process.execPath, [BIN, 'kv', 'mount', dataDir, mountpoint, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env },
    });
    const d = new KvDaemon(proc, dataDir, mountpoint);
    running.add(d);
    await d.waitLine(/^glidekv: kv mounted /, 60_000);
    return d;
  }

  /** Waits for a stdout line matching re (counting only lines after `from`). */
  async waitLine(re: RegExp, timeoutMs = 30_000, from = 0): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.slice(from).find((l) => re.test(l));
      if (hit) return hit;
      if (this.exitCode !== null) {
        throw new Error(`daemon exited (${this.exitCode}) before ${re}: stdout=${this.lines.join('|')} stderr=${this.stderr}`);
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}: stdout=${this.lines.join('|')} stderr=${this.stderr}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
      this.waiters = [];
    }
  }

  /** SIGTERM and wait for the exit; returns the exit code. */
  async stop(timeoutMs = 30_000): Promise<number | null> {
    if (this.exitCode === null) this.proc.kill('SIGTERM');
    const code = await Promise.race([this.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), timeoutMs))]);
    if (code === 'timeout') throw new Error(`daemon did not exit on SIGTERM: ${this.stderr}`);
    running.delete(this);
    return code;
  }

  /** kill -9, then lazy-unmount the dead mount. */
  async kill9(): Promise<void> {
    this.proc.kill('SIGKILL');
    await this.exited;
    await sh(`fusermount -u -z ${JSON.stringify(this.mountpoint)} 2>/dev/null || true`);
    running.delete(this);
  }

  waitExit(): Promise<number | null> {
    return this.exited;
  }
}

const running = new Set<KvDaemon>();

/** Kills every daemon still running and detaches its mount (afterAll). */
export async function cleanupDaemons(): Promise<void> {
  for (const d of [...running]) {
    if (d.exitCode === null) d.proc.kill('SIGKILL');
    await Promise.race([d.waitExit(), new Promise((r) => setTimeout(r, 5000))]);
    await sh(`fusermount -u -z ${JSON.stringify(d.mountpoint)} 2>/dev/null || true`);
    running.delete(d);
  }
}

/**
 * A KV-mount test's directories under a new temporary root: `data` (the engine) and `mnt` (the mount point,
 * not created). After the enclosing describe: every daemon killed, the mount detached, the root removed.
 */
export function kvMountDirs(prefix: string): { root: string; data: string; mnt: string } {
  const root = mkdtempSync(join(tmpdir(), prefix));
  const dirs = { root, data: join(root, 'data'), mnt: join(root, 'mnt') };
  afterAll(async () => {
    await cleanupDaemons();
    await sh(`fusermount -u -z ${JSON.stringify(dirs.mnt)} 2>/dev/null; true`);
    rmSync(root, { recursive: true, force: true });
  });
  return dirs;
}
