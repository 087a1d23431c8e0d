/**
 * The bench's Stack over the real `glidekv` command line: `up`, `down`,
 * `status --json`, `fork`, run as child processes (the daemons they start
 * are other processes, so this one may read and write their mounts).
 *
 *   sync     SIGUSR2 to the KV daemon; it prints a line on stdout when done
 *            (we wait for the engine's data to be fsynced by watching the
 *            line in its log file, see waitLine)
 *   reclaim  SIGUSR1 to the KV daemon, same
 *   flush    fsfreeze -f / -u of the ext4 (a freeze checkpoints the journal
 *            and writes back every dirty page), then fsync of the device
 *            file: glidefs uploads everything and commits before it returns
 *   counters / uploadsPerOffset
 *            read from the stack's catalog through GlideFs (the catalog is
 *            shared by processes; the counters live in it)
 */
import { execFile } from 'node:child_process';
import { open as openFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { Stack, StackDriver, UpOptions, VolumeCounters } from './stack.js';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
export const GLIDEKV_BIN = join(here, '..', '..', '..', 'bin', 'glidekv.mjs');

/** Runs `glidekv ARGS` (through tsx, as bin/glidekv.mjs does) and returns stdout. */
export async function glidekv(args: string[], env: Record<string, string>, timeoutMs = 300_000): Promise<string> {
  try {
    const { stdout } = await run(process.execPath, [GLIDEKV_BIN, ...args], {
      env: { ...process.env, ...env },
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    const line = (e.stderr || e.message).trim().split('\n').filter(Boolean).pop() ?? e.message;
    throw new Error(`glidekv ${args[0]} failed: ${line}`);
  }
}

export interface StatusEntry {
  [k: string]: unknown;
}

export class CliStackDriver implements StackDriver {
  constructor(private readonly opts: { log?: (l: string) => void } = {}) {}

  async up(o: UpOptions): Promise<Stack> {
    const args = ['up', o.volume, o.mountpoint, '--state', o.stateDir, '--store', o.store];
    if (o.sizeBytes > 0) args.push('--size', String(o.sizeBytes));
    if (o.valueThreshold !== undefined) args.push('--value-threshold', String(o.valueThreshold));
    this.opts.log?.(`glidekv ${args.join(' ')}`);
    await glidekv(args, o.env);
    return CliStack.attach(o, this.opts.log);
  }
}

class CliStack implements Stack {
  private constructor(
    readonly volume: string,
    readonly mountpoint: string,
    readonly dataDir: string,
    private readonly o: UpOptions,
    private readonly status: StatusEntry,
    private readonly log?: (l: string) => void,
  ) {}

  static async attach(o: UpOptions, log?: (l: string) => void): Promise<CliStack> {
    const status = await CliStack.statusOf(o);
    const dataDir = String(status.dataDir);
    return new CliStack(o.volume, o.mountpoint, dataDir, o, status, log);
  }

  static async statusOf(o: UpOptions): Promise<StatusEntry> {
    const out = JSON.parse(await glidekv(['status', '--json', '--state', o.stateDir], o.env)) as unknown;
    const list = (Array.isArray(out) ? out : ((out as { stacks?: unknown[] }).stacks ?? [])) as StatusEntry[];
    const mine = list.find((s) => s.mountpoint === o.mountpoint || s.volume === o.volume);
    if (!mine) throw new Error(`glidekv status does not list ${o.mountpoint}`);
    return mine;
  }

  private signal(sig: 'SIGUSR1' | 'SIGUSR2'): Promise<void> {
    throw new Error(`not wired yet: ${sig} ${JSON.stringify(this.status)}`);
  }

  sync(): Promise<void> {
    return this.signal('SIGUSR2');
  }

  reclaim(): Promise<void> {
    return this.signal('SIGUSR1');
  }

  async flush(): Promise<void> {
    const ext4 = String(this.status.ext4Mountpoint);
    await run('fsfreeze', ['-f', ext4]);
    await run('fsfreeze', ['-u', ext4]);
    const f = await openFile(String(this.status.deviceFile), 'r+');
    try {
      await f.sync();
    } finally {
      await f.close();
    }
  }

  async counters(): Promise<VolumeCounters> {
    const s = JSON.parse(await glidekv(['volume', 'stats', this.volume, '--json', '--state', this.o.stateDir], this.o.env));
    return { uploads: s.uploads, uploadedBytes: s.uploadedBytes, reuploads: s.reuploads };
  }

  async uploadsPerOffset(): Promise<Array<{ blockIndex: number; uploads: number }>> {
    throw new Error('not wired yet');
  }

  async fork(name: string): Promise<void> {
    await glidekv(['fork', this.volume, name, '--state', this.o.stateDir], this.o.env);
  }

  async down(): Promise<void> {
    this.log?.(`glidekv down ${this.mountpoint}`);
    await glidekv(['down', this.mountpoint], this.o.env);
  }
}
