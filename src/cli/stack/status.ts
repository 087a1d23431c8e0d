/**
 * `glidekv status`: what is up, checked against the system (pids alive,
 * mounts present, loop device attached to our device file), not only read
 * from the state files.
 */
import { listStates, loadState, type StackState } from './state.js';
import { alive, loopBackingFile, mountAt } from './system.js';

export interface StackStatus {
  volume: string;
  mountpoint: string;
  stateDir: string;
  /** 'up': every piece is there; 'degraded': some are missing (run down, then up). */
  state: 'up' | 'degraded';
  problems: string[];
  devicePid: number | null;
  deviceMountpoint: string;
  deviceFile: string;
  loopDevice: string | null;
  directIo: boolean;
  /** Device fsync mode: 'upload' (fsync uploads + commits) or 'local' (local disk only). */
  fsync: 'upload' | 'local';
  ext4Mountpoint: string;
  dataDir: string;
  kvPid: number | null;
  store: string;
  catalog: string;
  cache: string;
  createdAt: number;
}

export function statusOf(s: StackState): StackStatus {
  const problems: string[] = [];
  if (!alive(s.devicePid)) problems.push('device daemon not running');
  if (!mountAt(s.deviceMountpoint)) problems.push('device not mounted');
  if (!s.loopDevice || loopBackingFile(s.loopDevice) !== s.deviceFile) problems.push('loop device not attached');
  if (mountAt(s.ext4Mountpoint)?.fstype !== 'ext4') problems.push('ext4 not mounted');
  if (!alive(s.kvPid)) problems.push('kv daemon not running');
  if (!mountAt(s.mountpoint)) problems.push('kv not mounted');
  return {
    volume: s.volume,
    mountpoint: s.mountpoint,
    stateDir: s.stateDir,
    state: problems.length ? 'degraded' : 'up',
    problems,
    devicePid: s.devicePid ?? null,
    deviceMountpoint: s.deviceMountpoint,
    deviceFile: s.deviceFile,
    loopDevice: s.loopDevice ?? null,
    directIo: s.directIo,
    fsync: s.fsync ?? 'upload',
    ext4Mountpoint: s.ext4Mountpoint,
    dataDir: s.dataDir,
    kvPid: s.kvPid ?? null,
    store: s.glidefs.store,
    catalog: s.glidefs.catalog,
    cache: s.glidefs.cache,
    createdAt: s.createdAt,
  };
}

export function statusAll(stateDir?: string): StackStatus[] {
  const states = stateDir ? [loadState(stateDir)].filter((s): s is StackState => !!s) : listStates();
  return states.map(statusOf).sort((a, b) => a.mountpoint.localeCompare(b.mountpoint));
}
