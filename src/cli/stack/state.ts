/**
 * The state of one running stack (`glidekv up`), written step by step as `up`
 * makes each piece, so `down` can undo exactly what exists, also after an
 * `up` that died half-way.
 *
 *   STATE_DIR/stack.json     this record (JSON, below)
 *   STATE_DIR/device.log     the device daemon's stdout+stderr
 *   STATE_DIR/kv.log         the KV daemon's stdout+stderr
 *   STATE_DIR/device-status.json  the device daemon's view of its store
 *                            (device-daemon.ts DeviceStatusFile), for status
 *   STATE_DIR/dev/           device mount (DIR/volume)
 *   STATE_DIR/ext4/          the ext4 on the loop device; ext4/kv = engine data dir
 *
 * A registry finds a stack from its MOUNTPOINT or VOLUME (for `down`,
 * `status`, `fork`): RUN_DIR/stacks/<hex of MOUNTPOINT>.json holds
 * { stateDir }. RUN_DIR is $GLIDEKV_RUN or $HOME/.glidekv/run.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';

export interface StackState {
  version: 1;
  volume: string;
  /** The KV mount (user-facing). */
  mountpoint: string;
  stateDir: string;
  createdAt: number;
  /** cacheSize: `--cache-size` / GLIDEKV_CACHE_SIZE in bytes given to `up` (absent: the default, min(8G, 1/4 of free space)). */
  glidefs: { store: string; catalog: string; cache: string; cacheSize?: number };
  engine: { valueThreshold?: number; sync?: string };
  deviceMountpoint: string;
  deviceFile: string;
  devicePid?: number;
  loopDevice?: string;
  directIo: boolean;
  /** Device fsync mode (mount/device.ts); absent in older records = 'upload'. */
  fsync?: 'upload' | 'local';
  /** How long the device daemon retries a failing store request (ms; 0 = no time bound); absent in older records = 60 s. */
  storeRetryTimeoutMs?: number;
  /** The device daemon's --status-file; absent in older records. */
  deviceStatusFile?: string;
  ext4Mountpoint: string;
  ext4Mounted?: boolean;
  dataDir: string;
  kvPid?: number;
  /** Whether `up` made the ext4 (first use). */
  formatted?: boolean;
  /** Whether `up` created the volume. */
  createdVolume?: boolean;
}

export function runDir(): string {
  return process.env.GLIDEKV_RUN || join(process.env.HOME || homedir(), '.glidekv', 'run');
}

export function defaultStateDir(volume: string): string {
  return join(runDir(), volume);
}

function registryDir(): string {
  return join(runDir(), 'stacks');
}

function registryFile(mountpoint: string): string {
  return join(registryDir(), Buffer.from(mountpoint).toString('hex').slice(0, 200) + '.json');
}

export function stateFile(stateDir: string): string {
  return join(stateDir, 'stack.json');
}

/** Writes the state atomically and registers it. */
export function saveState(s: StackState): void {
  mkdirSync(s.stateDir, { recursive: true, mode: 0o700 });
  const f = stateFile(s.stateDir);
  writeFileSync(f + '.tmp', JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
  renameSync(f + '.tmp', f);
  mkdirSync(registryDir(), { recursive: true, mode: 0o700 });
  writeFileSync(registryFile(s.mountpoint), JSON.stringify({ stateDir: s.stateDir }) + '\n', { mode: 0o600 });
}

export function loadState(stateDir: string): StackState | undefined {
  try {
    const s = JSON.parse(readFileSync(stateFile(stateDir), 'utf8')) as StackState;
    return s.version === 1 ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Removes the state file and the registry entry (the logs stay). */
export function dropState(s: StackState): void {
  rmSync(stateFile(s.stateDir), { force: true });
  rmSync(registryFile(s.mountpoint), { force: true });
}

/** Every registered stack (entries whose state file is gone are dropped). */
export function listStates(): StackState[] {
  let names: string[] = [];
  try {
    names = readdirSync(registryDir()).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  const out: StackState[] = [];
  for (const n of names) {
    try {
      const { stateDir } = JSON.parse(readFileSync(join(registryDir(), n), 'utf8')) as { stateDir: string };
      const s = loadState(stateDir);
      if (s) out.push(s);
      else rmSync(join(registryDir(), n), { force: true });
    } catch {
      /* unreadable entry: skip */
    }
  }
  return out;
}

export function findByMountpoint(mountpoint: string): StackState | undefined {
  try {
    const { stateDir } = JSON.parse(readFileSync(registryFile(mountpoint), 'utf8')) as { stateDir: string };
    const s = loadState(stateDir);
    if (s && s.mountpoint === mountpoint) return s;
  } catch {
    /* not registered */
  }
  return listStates().find((s) => s.mountpoint === mountpoint);
}

export function findByVolume(volume: string): StackState | undefined {
  return listStates().find((s) => s.volume === volume);
}
