/**
 * Child-process plumbing shared by the mount test helpers (device-helpers.ts,
 * kv-daemon.ts): run a command to its exit code, and follow a daemon's stdout
 * line by line.
 */
import { execFile, type ChildProcess } from 'node:child_process';

export interface ShResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs FILE ARGS in a child process; never throws on a non-zero exit. */
export function execCode(file: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs: number }): Promise<ShResult> {
  return new Promise((resolve) => {
    execFile(file, args, { env: opts.env, cwd: opts.cwd, timeout: opts.timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** A spawned daemon (stdout and stderr piped): its stdout lines, its stderr, its exit code. */
export class ChildLines {
  readonly lines: string[] = [];
  stderr = '';
  exitCode: number | null = null;
  protected readonly exited: Promise<number | null>;

  protected constructor(readonly proc: ChildProcess) {
    let buf = '';
    proc.stdout!.setEncoding('utf8').on('data', (s: string) => {
      buf += s;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
      this.changed();
    });
    proc.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    this.exited = new Promise((resolve) =>
      proc.on('exit', (code) => {
        this.exitCode = code;
        this.changed();
        resolve(code);
      }),
    );
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** Called after new stdout data and on exit. */
  protected changed(): void {}
}
