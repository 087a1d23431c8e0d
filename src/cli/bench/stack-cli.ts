/**
 * The bench's Stack over the real stack commands: `glidekv up`, `down` and
 * `fork` run as child processes (exactly what a user runs), and the stack's
 * own pieces (src/cli/stack/) for what has no command:
 *
 *   sync     SIGUSR2 to the KV daemon, wait for `kv sync done` in its log
 *   reclaim  SIGUSR1, wait for `kv reclaim done`
 *   flush    `fsfreeze -f` + `-u` of the ext4 (writes back every dirty page
 *            and checkpoints the journal), then fsync of the device file:
 *            the device daemon uploads everything and commits before the
 *            fsync returns (the same steps as a live fork)
 *   snapshot glidefs counters and uploads per offset, read from the stack's
 *            catalog (shared by processes; the counters live in it)
 *
 * Each stack gets `--store`, `--catalog STATE/catalog.db`, `--cache
 * STATE/cache` and `--state STATE/stack`, and the children get GLIDEKV_RUN so
 * the stack registry stays inside the bench's directory.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { openGlideFsFromOptions, type GlideFsCliOptions } from '../glidefs-options.js';
import { deviceUpload, kvMaintenance } from '../stack/fork.js';
import { loadState, type StackState } from '../stack/state.js';
import { fsyncFile, run } from '../stack/system.js';
import { GLIDEKV_BIN } from '../stack/up.js';
import type { Stack, StackDriver, UpOptions, VolumeSnapshot } from './stack.js';

const execFileP = promisify(execFile);

/** Runs `glidekv ARGS` and returns stdout; a failure is its last `glidekv:` line. */
export async function glidekv(args: string[], env: Record<string, string>, timeoutMs = 600_000): Promise<string> {
  try {
    const { stdout } = await execFileP(process.execPath, [GLIDEKV_BIN, ...args], {
      env: { ...process.env, ...env },
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    const lines = `${e.stderr ?? ''}\n${e.stdout ?? ''}`.split('\n').filter((l) => l.trim());
    const line = lines.filter((l) => l.startsWith('glidekv: ')).pop() ?? lines.pop() ?? e.message;
    throw new Error(`glidekv ${args.find((a) => !a.startsWith('-') && !a.includes('/')) ?? ''} failed: ${line.replace(/^glidekv: /, '')}`);
  }
}

function globalsOf(o: UpOptions): GlideFsCliOptions {
  return { store: o.store, catalog: join(o.stateDir, 'catalog.db'), cache: join(o.stateDir, 'cache') };
}

function globalArgs(o: UpOptions): string[] {
  const g = globalsOf(o);
  return ['--store', g.store!, '--catalog', g.catalog!, '--cache', g.cache!];
}

/** The stack's own directory (`up --state`): one per volume. */
function stackDir(o: UpOptions): string {
  return join(o.stateDir, 'stacks', o.volume);
}

function childEnv(o: UpOptions): Record<string, string> {
  return { ...o.env, GLIDEKV_RUN: join(o.stateDir, 'run') };
}

async function snapshotOf(o: UpOptions): Promise<VolumeSnapshot> {
  const saved: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(o.env)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  try {
    const g = await openGlideFsFromOptions(globalsOf(o));
    try {
      const s = g.fs.stats(o.volume);
      return {
        uploads: s.uploads,
        uploadedBytes: s.uploadedBytes,
        reuploads: s.reuploads,
        logPuts: s.logPuts,
        logBytes: s.logBytes,
        checkpointUploads: s.checkpointUploads,
        leasePuts: s.leasePuts,
        perOffset: g.fs.uploadsPerOffset(o.volume),
      };
    } finally {
      await g.close();
    }
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

export class CliStackDriver implements StackDriver {
  /** Stacks that are up now (taken down by downAll on an interrupt). */
  readonly live = new Set<Stack>();

  constructor(private readonly opts: { log?: (l: string) => void } = {}) {}

  /** Takes down every stack still up, newest first (the fork before its parent). */
  async downAll(): Promise<void> {
    for (const s of [...this.live].reverse()) await s.down().catch(() => {});
  }

  async up(o: UpOptions): Promise<Stack> {
    const args = [...globalArgs(o), 'up', o.volume, o.mountpoint, '--state', stackDir(o)];
    if (o.sizeBytes > 0) args.push('--size', String(o.sizeBytes));
    if (o.valueThreshold !== undefined) args.push('--value-threshold', String(o.valueThreshold));
    if (o.fsync !== undefined) args.push('--fsync', o.fsync);
    this.opts.log?.(`up ${o.volume} at ${o.mountpoint}${o.valueThreshold !== undefined ? ` (value threshold ${o.valueThreshold})` : ''}`);
    await glidekv(args, childEnv(o));
    const state = loadState(stackDir(o));
    if (!state) throw new Error(`glidekv up left no stack state in ${stackDir(o)}`);
    const stack: CliStack = new CliStack(o, state, this.opts.log, () => this.live.delete(stack));
    this.live.add(stack);
    return stack;
  }

  snapshot(o: UpOptions): Promise<VolumeSnapshot> {
    return snapshotOf(o);
  }
}

class CliStack implements Stack {
  readonly volume: string;
  readonly mountpoint: string;
  readonly dataDir: string;

  constructor(
    private readonly o: UpOptions,
    private readonly state: StackState,
    private readonly log?: (l: string) => void,
    private readonly onDown: () => void = () => {},
  ) {
    this.volume = state.volume;
    this.mountpoint = state.mountpoint;
    this.dataDir = state.dataDir;
  }

  async sync(): Promise<void> {
    await kvMaintenance(this.state, 'SIGUSR2', 'sync');
  }

  async reclaim(): Promise<void> {
    const line = await kvMaintenance(this.state, 'SIGUSR1', 'reclaim');
    this.log?.(`${this.volume}: ${line}`);
  }

  async flush(): Promise<void> {
    await run('fsfreeze', ['-f', this.state.ext4Mountpoint]);
    await run('fsfreeze', ['-u', this.state.ext4Mountpoint]);
    await fsyncFile(this.state.deviceFile);
    // In fsync mode 'local' that fsync only synced the local cache: ask the device daemon to upload.
    if (this.state.fsync === 'local') await deviceUpload(this.state);
  }

  snapshot(): Promise<VolumeSnapshot> {
    return snapshotOf(this.o);
  }

  async fork(name: string): Promise<void> {
    this.log?.(`fork ${this.volume} -> ${name} (live)`);
    await glidekv([...globalArgs(this.o), 'fork', this.volume, name, '--state', stackDir(this.o)], childEnv(this.o));
  }

  async down(): Promise<void> {
    this.log?.(`down ${this.mountpoint}`);
    await glidekv(['down', this.mountpoint, '--state', stackDir(this.o)], childEnv(this.o));
    this.onDown();
  }
}
