/** Running commands for the peers benchmark: one-line errors, never a shell for arguments. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Runs FILE ARGS; resolves stdout, or rejects with `FILE: last line of stderr`. */
export async function exec(file: string, args: string[], opts: { env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {}): Promise<string> {
  try {
    const { stdout } = await execFileP(file, args, {
      env: { ...process.env, ...opts.env },
      timeout: opts.timeoutMs ?? 600_000,
      maxBuffer: 64 * 1024 * 1024,
      cwd: opts.cwd,
    });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const line = (e.stderr || e.message).trim().split('\n').filter(Boolean).pop() ?? e.message;
    throw new Error(`${file} ${args.slice(0, 2).join(' ')}: ${line}`);
  }
}

/** The command's path, or null when it is not on PATH. */
export async function which(cmd: string): Promise<string | null> {
  try {
    return (await exec('sh', ['-c', `command -v ${cmd}`])).trim() || null;
  } catch {
    return null;
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Cleanups to run if the run is interrupted (Ctrl-C, SIGTERM): mounts, stacks, children. */
const cleanups = new Set<() => Promise<void>>();

/** Registers `fn` until the returned function is called. */
export function onInterrupt(fn: () => Promise<void>): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Runs the registered cleanups, newest first. */
export async function runCleanups(): Promise<void> {
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn);
    await fn().catch(() => {});
  }
}
