/**
 * glidekv rows of the peers benchmark: the re-upload bench's own runner
 * (src/cli/bench/reupload.ts `runMode`: a fresh `glidekv up` stack, the
 * phases through the KV mount from 8 writers, reclaim + engine sync + volume
 * flush at the end of each round) on one bucket per row.
 *
 * The stack driver is wrapped so that every counter snapshot the runner takes
 * at a phase boundary also reads MinIO's counters of the row's bucket, just
 * before and just after the glidefs counters are read: a phase's MinIO traffic
 * is the interval between the two, the same interval glidefs counts, and the
 * snapshots' own requests stay outside it.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { runMode, type ModeResult, type PhaseResult, type RunContext } from '../../../src/cli/bench/reupload.js';
import type { Stack, StackDriver, UpOptions, VolumeSnapshot } from '../../../src/cli/bench/stack.js';
import { CliStackDriver } from '../../../src/cli/bench/stack-cli.js';
import { diff, type BucketCounters, type MinioCounters } from './minio-counters.js';
import { okRow } from './phases.js';
import { phaseRow, type ClientCount, type PhaseRow, type SystemRow } from './results.js';
import { onInterrupt } from './sh.js';
import type { Workload } from './workload.js';

export type GlidekvFsync = 'upload' | 'local';
export type GlidekvMode = 'separated' | 'inline';

export interface GlidekvRowOptions {
  workload: Workload;
  fsync: GlidekvFsync;
  mode: GlidekvMode;
  /** Object store URL for the row: s3://BUCKET/PREFIX or file:///DIR. */
  store: string;
  /** MinIO counters and the row's bucket, when the store is the run's MinIO. */
  meter?: { counters: MinioCounters; bucket: string };
  /** Environment of the stacks (S3 endpoint and credentials). */
  env: Record<string, string>;
  workDir: string;
  volumeSize: number;
  version: string;
  log: (line: string) => void;
}

/** A stack whose snapshot() also reads MinIO around the glidefs read. */
class MeteredStack implements Stack {
  constructor(
    private readonly inner: Stack,
    private readonly onSnapshot: (read: () => Promise<VolumeSnapshot>) => Promise<VolumeSnapshot>,
    private readonly onDown: (down: () => Promise<void>) => Promise<void>,
  ) {}
  get volume() {
    return this.inner.volume;
  }
  get mountpoint() {
    return this.inner.mountpoint;
  }
  get dataDir() {
    return this.inner.dataDir;
  }
  sync() {
    return this.inner.sync();
  }
  reclaim() {
    return this.inner.reclaim();
  }
  flush() {
    return this.inner.flush();
  }
  snapshot() {
    return this.onSnapshot(() => this.inner.snapshot());
  }
  fork(name: string) {
    return this.inner.fork(name);
  }
  down() {
    return this.onDown(() => this.inner.down());
  }
}

export function glidekvLabel(fsync: GlidekvFsync, mode: GlidekvMode): string {
  return `glidekv --fsync ${fsync}, ${mode}`;
}

export function glidekvConfig(fsync: GlidekvFsync, mode: GlidekvMode): string {
  return (
    `glidekv up (1 GiB volume, 128 KiB blocks, ext4 on loop on the device mount), KV mount, ` +
    (mode === 'separated' ? 'value separation (threshold 128 KiB)' : 'values inline (--value-threshold 0)') +
    `; --fsync ${fsync}: ` +
    (fsync === 'upload'
      ? 'an acknowledged put is in the store (fsync uploads)'
      : 'an acknowledged put is on the local disk; uploads on timer/flush') +
    '; each round: reclaim, engine sync, volume flush'
  );
}

/** A counter of a phase or volume snapshot, 0 when this glidekv does not keep it (the fields follow glidefs). */
function num(o: object, key: string): number {
  const v = (o as Record<string, unknown>)[key];
  return typeof v === 'number' ? v : 0;
}

/** What glidefs counts as PUT: block objects, and volume log records where glidefs writes a log. */
function clientOf(c: object): { puts: number; uploadedBytes: number } {
  return { puts: num(c, 'uploads') + num(c, 'logPuts'), uploadedBytes: num(c, 'uploadedBytes') + num(c, 'logBytes') };
}

function clientDiff(a: object, b: object): ClientCount {
  const x = clientOf(a);
  const y = clientOf(b);
  return { puts: y.puts - x.puts, uploadedBytes: y.uploadedBytes - x.uploadedBytes };
}

export async function runGlidekvRow(o: GlidekvRowOptions): Promise<SystemRow> {
  const inner = new CliStackDriver({ log: (l) => o.log(l) });
  // [before, after] MinIO readings around each glidefs snapshot, in order.
  const marks: Array<[BucketCounters, BucketCounters]> = [];
  const read = () => o.meter!.counters.read(o.meter!.bucket);
  // The close phase: `glidekv down` (whatever it uploads then: the final flush, a checkpoint).
  let close: { server: BucketCounters[]; ms: number; ups?: UpOptions } = { server: [], ms: 0 };
  let lastUp: UpOptions | undefined;
  const driver: StackDriver = {
    async up(u: UpOptions) {
      lastUp = u;
      const stack = await inner.up(u);
      return new MeteredStack(
        stack,
        async (snap) => {
          if (!o.meter) return snap();
          const before = await read();
          const s = await snap();
          marks.push([before, await read()]);
          return s;
        },
        async (down) => {
          const before = o.meter ? await read() : undefined;
          const t0 = performance.now();
          await down();
          const ms = performance.now() - t0;
          close = { server: before ? [before, await read()] : [], ms, ups: u };
        },
      );
    },
    snapshot: (u) => inner.snapshot(u),
  };
  const stateDir = join(o.workDir, `${o.fsync}-${o.mode}`);
  mkdirSync(stateDir, { recursive: true });
  const ctx: RunContext = { driver, storeFor: () => o.store, env: o.env, stateDir, log: o.log };
  const p = o.workload.params;
  const start = o.meter ? await read() : undefined;
  let result: ModeResult;
  const unregister = onInterrupt(() => inner.downAll());
  try {
    ({ result } = await runMode(
      ctx,
      o.mode,
      { values: p.values, valueSize: p.valueSize, small: p.small, smallSize: p.smallSize, rounds: p.rounds, volumeSize: o.volumeSize, fsync: o.fsync },
      o.workload.large,
    ));
  } finally {
    await inner.downAll();
    unregister();
  }
  const end = o.meter ? await read() : undefined;
  // Snapshot 0 is taken after setup (mkfs, mount); then two per phase.
  const all: PhaseResult[] = [result.write, ...result.rounds];
  // (A runner that counts its own teardown takes one more, right before `down`.)
  if (o.meter && marks.length !== 1 + 2 * all.length && marks.length !== 2 + 2 * all.length) {
    throw new Error(`the re-upload runner took ${marks.length} counter snapshots, expected ${1 + 2 * all.length}: scripts/lib/peers/glidekv.ts needs updating`);
  }
  const phases: PhaseRow[] = all.map((ph, i) => {
    const server = o.meter ? diff(marks[2 * i + 1][1], marks[2 * i + 2][0]) : null;
    return phaseRow(ph.name, ph.userBytes, ph.durationMs, server, clientOf(ph), {
      blockUploads: num(ph, 'uploads'),
      logRecords: num(ph, 'logPuts'),
      reuploads: num(ph, 'reuploads'),
    });
  });
  // What glidefs PUT during `down`: the runner's own teardown count where it keeps one, else
  // the volume's counters after `down` against those at the last phase's end.
  const teardown = (result as { teardown?: object }).teardown;
  const lastSnap = !teardown && close.ups ? await lastCounters(inner, lastUp) : undefined;
  const closeClient = teardown ? clientOf(teardown) : lastSnap ? clientDiff(endOfPhases(result), lastSnap) : null;
  phases.push(phaseRow('close', 0, close.ms, close.server.length === 2 ? diff(close.server[0], close.server[1]) : null, closeClient));
  const base = { id: `glidekv-${o.fsync}-${o.mode}`, label: glidekvLabel(o.fsync, o.mode), version: o.version, config: glidekvConfig(o.fsync, o.mode), writers: 8, store: o.store } as const;
  return okRow(base, phases, 'glidefs', start, end);
}

/** The volume's glidefs counters now (its stack is down: read from its catalog). */
async function lastCounters(driver: StackDriver, up: UpOptions | undefined): Promise<object | undefined> {
  return up ? driver.snapshot(up) : undefined;
}

/** glidefs' cumulative counters at the end of the last phase: setup + every phase. */
function endOfPhases(r: ModeResult): object {
  const keys = ['uploads', 'uploadedBytes', 'logPuts', 'logBytes'];
  const out: Record<string, number> = {};
  for (const k of keys) out[k] = num(r.setup, k) + [r.write, ...r.rounds].reduce((a, ph) => a + num(ph, k), 0);
  return out;
}
