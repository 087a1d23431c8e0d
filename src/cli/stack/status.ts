/**
 * `glidekv status`: what is up, checked against the system (pids alive,
 * mounts present, loop device attached to our device file), not only read
 * from the state files.
 */
import { readFileSync } from 'node:fs';
import type { RetryOutage } from '../../../glidefs/retry-store.js';
import { DEFAULT_STORE_RETRY_TIMEOUT } from '../glidefs-options.js';
import type { DeviceStatusFile } from './device-daemon.js';
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
  /** How long the device daemon retries a failing store request before an fsync/read fails (ms; 0 = no time bound). */
  storeRetryTimeoutMs: number;
  /** Set while the store is failing and the device daemon is retrying (from its status file); null otherwise. */
  storeOutage: RetryOutage | null;
  ext4Mountpoint: string;
  dataDir: string;
  kvPid: number | null;
  store: string;
  catalog: string;
  cache: string;
  /** The cache size per open volume `up` was given (bytes); null = the default (min(8G, 1/4 of the cache filesystem's free space)). */
  cacheSize: number | null;
  createdAt: number;
}

/** The device daemon's status file, if it is the running daemon's. */
export function deviceStatus(s: StackState): DeviceStatusFile | undefined {
  if (!s.deviceStatusFile || !s.devicePid) return undefined;
  try {
    const d = JSON.parse(readFileSync(s.deviceStatusFile, 'utf8')) as DeviceStatusFile;
    return d.version === 1 && d.pid === s.devicePid ? d : undefined;
  } catch {
    return undefined;
  }
}

export function statusOf(s: StackState): StackStatus {
  const problems: string[] = [];
  const device = alive(s.devicePid) ? deviceStatus(s) : undefined;
  const outage = device?.store === 'waiting' && device.outage ? device.outage : null;
  if (outage) problems.push(`store failing since ${new Date(outage.sinceMs).toISOString()}: retrying (${outage.lastError})`);
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
    storeRetryTimeoutMs: s.storeRetryTimeoutMs ?? DEFAULT_STORE_RETRY_TIMEOUT,
    storeOutage: outage,
    ext4Mountpoint: s.ext4Mountpoint,
    dataDir: s.dataDir,
    kvPid: s.kvPid ?? null,
    store: s.glidefs.store,
    catalog: s.glidefs.catalog,
    cache: s.glidefs.cache,
    cacheSize: s.glidefs.cacheSize ?? null,
    createdAt: s.createdAt,
  };
}

export function statusAll(stateDir?: string): StackStatus[] {
  const states = stateDir ? [loadState(stateDir)].filter((s): s is StackState => !!s) : listStates();
  return states.map(statusOf).sort((a, b) => a.mountpoint.localeCompare(b.mountpoint));
}
