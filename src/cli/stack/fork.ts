/**
 * `glidekv fork VOLUME NEW`: a fork of a volume, live when it is up.
 *
 * Live (VOLUME is up, see state.ts), in this order:
 *   1. engine sync: SIGUSR2 to the KV daemon, wait for its
 *      `kv sync done` line (every acknowledged put is fsynced on the ext4)
 *   2. `fsfreeze -f` of the ext4: writes back every dirty page and
 *      checkpoints the journal; new writes wait
 *   3. fsync of the device file (from this process, which serves no mount):
 *      with the device in fsync mode 'upload' (default) the daemon flushes
 *      the volume, returning after the commit; in mode 'local' (stack state
 *      `fsync`) that only syncs the local cache, so then also SIGUSR1 to the
 *      device daemon and wait for its `device VOLUME upload done` line
 *   4. SIGUSR2 to the device daemon, wait for its `device VOLUME checkpoint
 *      done` line: it folds the volume's log with the bytes in its cache and
 *      writes a checkpoint (a fork lies on a checkpoint; FORMAT.md, "Layers").
 *      Reading the log back from the store instead took 18-34 s.
 *   5. GlideFs.fork on the shared catalog: one transaction, nothing copied
 *   6. `fsfreeze -u` (always, also when 3, 4 or 5 fail)
 * The fork holds exactly what was acknowledged before step 1 finished and
 * is a clean ext4 (frozen = consistent on disk).
 *
 * Not up: a plain metadata fork (GlideFs settles the volume's dirty blocks
 * in this cache dir first).
 */
import { statSync } from 'node:fs';
import { openGlideFsFromOptions, resolveGlideFsOptions, type GlideFsCliOptions } from '../glidefs-options.js';
import { CliError } from '../util.js';
import { findByVolume, loadState, type StackState } from './state.js';
import { alive, fsyncFile, readText, run, waitFor } from './system.js';

export interface ForkResult {
  source: string;
  fork: string;
  live: boolean;
  durationMs: number;
  /** Of the whole live sequence, how long the ext4 was frozen. */
  frozenMs: number;
  engineSyncMs: number;
  uploads: number;
  uploadedBytes: number;
  /** Block-map rows the fork copied: 0 (FORMAT.md, "Layers"). */
  rowsCopied: number;
  /** The fork's catalog transaction (ms). */
  catalogMs: number;
  /** Of the frozen time, the device daemon's checkpoint (ms). */
  checkpointMs: number;
}

/** Sends `signal` to the KV daemon and waits for its `kv NAME done|failed` line in its log. */
export async function kvMaintenance(s: StackState, signal: 'SIGUSR1' | 'SIGUSR2', name: string, timeoutMs = 600_000): Promise<string> {
  if (!s.kvPid || !alive(s.kvPid)) throw new CliError(`the KV daemon of '${s.volume}' is not running (pid ${s.kvPid ?? '-'})`);
  const log = `${s.stateDir}/kv.log`;
  const from = statSync(log, { throwIfNoEntry: false })?.size ?? 0;
  process.kill(s.kvPid, signal);
  const re = new RegExp(`kv ${name} (done|failed)[^\\n]*`);
  let line = '';
  await waitFor(
    `the KV daemon's ${name}`,
    async () => {
      const m = re.exec((await readText(log)).slice(from));
      if (m) line = m[0];
      return m !== null;
    },
    timeoutMs,
    () => (alive(s.kvPid) ? undefined : `the KV daemon exited during ${name}`),
  );
  if (line.includes(`${name} failed`)) throw new CliError(`engine ${name} failed: ${line.replace(/^.*failed: /, '')}`);
  return line;
}

/** Asks the device daemon for an upload + commit now (SIGUSR1) and waits for its `upload done|failed` line. */
export async function deviceUpload(s: StackState, timeoutMs = 600_000): Promise<string> {
  if (!s.devicePid || !alive(s.devicePid)) throw new CliError(`the device daemon of '${s.volume}' is not running (pid ${s.devicePid ?? '-'})`);
  const log = `${s.stateDir}/device.log`;
  const from = statSync(log, { throwIfNoEntry: false })?.size ?? 0;
  process.kill(s.devicePid, 'SIGUSR1');
  const re = /device \S+ upload (done|failed)[^\n]*/;
  let line = '';
  await waitFor(
    "the device daemon's upload",
    async () => {
      const m = re.exec((await readText(log)).slice(from));
      if (m) line = m[0];
      return m !== null;
    },
    timeoutMs,
    () => (alive(s.devicePid) ? undefined : 'the device daemon exited during the upload'),
  );
  if (line.includes('upload failed')) throw new CliError(`device upload failed: ${line.replace(/^.*failed: /, '')}`);
  return line;
}

/** Asks the device daemon for a flush + checkpoint now (SIGUSR2) and waits for its `checkpoint done|failed` line. */
export async function deviceCheckpoint(s: StackState, timeoutMs = 600_000): Promise<string> {
  if (!s.devicePid || !alive(s.devicePid)) throw new CliError(`the device daemon of '${s.volume}' is not running (pid ${s.devicePid ?? '-'})`);
  const log = `${s.stateDir}/device.log`;
  const from = statSync(log, { throwIfNoEntry: false })?.size ?? 0;
  process.kill(s.devicePid, 'SIGUSR2');
  const re = /device \S+ checkpoint (done|failed)[^\n]*/;
  let line = '';
  await waitFor(
    "the device daemon's checkpoint",
    async () => {
      const m = re.exec((await readText(log)).slice(from));
      if (m) line = m[0];
      return m !== null;
    },
    timeoutMs,
    () => (alive(s.devicePid) ? undefined : 'the device daemon exited during the checkpoint'),
  );
  if (line.includes('checkpoint failed')) throw new CliError(`device checkpoint failed: ${line.replace(/^.*failed: /, '')}`);
  return line;
}

/** Finds the running stack of `volume` (on the catalog the globals name). */
export function stackOf(volume: string, globals: GlideFsCliOptions, stateDir?: string): StackState | undefined {
  if (stateDir) {
    const s = loadState(stateDir);
    if (!s) throw new CliError(`no stack state in ${stateDir}`);
    if (s.volume !== volume) throw new CliError(`${stateDir} holds the stack of '${s.volume}', not '${volume}'`);
    return s;
  }
  const s = findByVolume(volume);
  if (!s) return undefined;
  const explicit = globals.catalog || process.env.GLIDEKV_CATALOG;
  if (explicit && resolveGlideFsOptions(globals).catalogPath !== s.glidefs.catalog) return undefined;
  return s;
}

export async function fork(volume: string, name: string, globals: GlideFsCliOptions, stateDir?: string): Promise<ForkResult> {
  const t0 = performance.now();
  const s = stackOf(volume, globals, stateDir);
  const live = !!s && alive(s.devicePid);
  const opts = s ? { store: s.glidefs.store, catalog: s.glidefs.catalog, cache: s.glidefs.cache } : globals;
  const g = await openGlideFsFromOptions(opts);
  try {
    if (g.fs.listVolumes().some((v) => v.name === name)) throw new CliError(`volume '${name}' already exists`);
    g.fs.getVolume(volume);
    // the volume's counters only (stats() would also compute sharedBlocks, a scan of every volume's map)
    const before = g.fs.catalog.volume(volume);
    let engineSyncMs = 0;
    let frozenMs = 0;
    let checkpointMs = 0;
    let info;
    if (live && s) {
      const ts = performance.now();
      if (alive(s.kvPid)) await kvMaintenance(s, 'SIGUSR2', 'sync');
      engineSyncMs = performance.now() - ts;
      const tf = performance.now();
      await run('fsfreeze', ['-f', s.ext4Mountpoint]);
      try {
        await fsyncFile(s.deviceFile);
        if (s.fsync === 'local') await deviceUpload(s);
        const tc = performance.now();
        await deviceCheckpoint(s);
        checkpointMs = performance.now() - tc;
        info = await g.fs.fork(volume, name);
      } finally {
        await run('fsfreeze', ['-u', s.ext4Mountpoint]);
        frozenMs = performance.now() - tf;
      }
    } else {
      info = await g.fs.fork(volume, name);
    }
    const after = g.fs.catalog.volume(volume);
    return {
      source: volume,
      fork: name,
      live,
      durationMs: Math.round(performance.now() - t0),
      frozenMs: Math.round(frozenMs),
      engineSyncMs: Math.round(engineSyncMs),
      uploads: after.uploads - before.uploads,
      uploadedBytes: after.uploaded_bytes - before.uploaded_bytes,
      rowsCopied: info.rowsCopied,
      catalogMs: Math.round(info.catalogMs * 100) / 100,
      checkpointMs: Math.round(checkpointMs),
    };
  } finally {
    await g.close();
  }
}
