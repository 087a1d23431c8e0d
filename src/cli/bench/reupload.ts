/**
 * The re-upload experiment (issue 6): how often is a large value uploaded to
 * the object store over its life, with value separation on and off?
 *
 * For each mode, on a fresh volume brought up for the run:
 *   write    the large values (distinct random bytes) and the small values
 *            (~100 bytes) as files through the KV mount; sync; flush.
 *   round i  overwrite or delete half of the small values; reclaim; sync;
 *            flush.
 * After each phase every key is read back through the mount and compared
 * with what was written (a lost or wrong value stops the run: nothing
 * acknowledged may be lost), the glidefs counters and the per-offset upload
 * counters are read, and the blocks that hold large-value bytes are located
 * (locate-values.ts: content search + FIEMAP). Uploads of those blocks in the
 * phase are the large values' cost:
 *
 *   largeValueUploadFactor = sum over phases of (uploads in the phase of blocks
 *       that hold large-value bytes after it) × BLOCK_SIZE
 *       / bytes of distinct large values
 *   amplification = all bytes PUT (block objects + log records) / bytes of
 *       values the user wrote; blockAmplification counts block objects only
 *
 * Since the volume log (glidefs FORMAT.md), an fsync PUTs one log record of
 * the dirty 4 KiB sectors; block objects are uploaded for blocks rewritten
 * whole and by checkpoints, which fold the log (in the background, and when
 * the stack goes down: that `teardown` is counted in the totals too).
 *
 * A block counts for the large values in a phase if it holds their bytes
 * after the phase: with separation, the blob files' blocks; inline, the
 * blocks of the segments the values sit in (which reclaim moves).
 *
 * Then the fork: the separated volume is forked live, the fork is brought up
 * on another mountpoint, one new 128 KiB value is written in it and flushed;
 * the fork's uploaded bytes are its cost, and the parent's keys are checked.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import pLimit from 'p-limit';
import { mulberry32 } from '../../../lib/prng.js';
import { locateValues } from './locate-values.js';
import type { Stack, StackDriver, UpOptions, VolumeCounters } from './stack.js';

export const BLOCK_SIZE = 131072;
export const NAMESPACE = 'bench';

export interface ReuploadParams {
  values: number;
  valueSize: number;
  small: number;
  smallSize: number;
  rounds: number;
  volumeSize: number;
  /** Device fsync mode of the stacks (`glidekv up --fsync`); undefined = 'upload'. */
  fsync?: 'upload' | 'local';
}

export interface PhaseResult {
  name: string;
  /** Block object uploads (and bytes, re-uploads at an offset uploaded before). */
  uploads: number;
  uploadedBytes: number;
  reuploads: number;
  /** Log records PUT and their bytes; block uploads of checkpoints (part of `uploads`). */
  logPuts: number;
  logBytes: number;
  checkpointUploads: number;
  /** All PUTs (uploads + logPuts) and all bytes PUT. */
  puts: number;
  bytesPut: number;
  /** uploadedBytes / userBytes (block objects only). */
  blockAmplification: number;
  /** Bytes of values the user wrote in the phase (puts; deletes count 0). */
  userBytes: number;
  amplification: number;
  /** Uploaded bytes of blocks that hold large-value bytes after the phase. */
  largeUploadedBytes: number;
  /** Number of blocks that hold large-value bytes after the phase. */
  largeBlocks: number;
  durationMs: number;
  /** Uploads per block in this phase (blocks with at least one). */
  perOffset: Array<{ blockIndex: number; uploads: number }>;
  /** The blocks holding large-value bytes after the phase. */
  largeBlockIndexes: number[];
}

export interface ModeResult {
  mode: 'separated' | 'inline';
  valueThreshold: number | null;
  volume: string;
  /** Totals over the phases and the teardown. */
  uploads: number;
  uploadedBytes: number;
  reuploads: number;
  logPuts: number;
  logBytes: number;
  checkpointUploads: number;
  puts: number;
  bytesPut: number;
  blockAmplification: number;
  /** What `glidekv down` PUT after the last phase (the checkpoint on close): in the totals. */
  teardown: VolumeCounters;
  userBytes: number;
  amplification: number;
  largeValueUploadFactor: number;
  /** Uploads of `glidekv up` itself (mkfs, mount), not in the totals. */
  setup: VolumeCounters;
  write: PhaseResult;
  rounds: PhaseResult[];
}

export interface ForkResult {
  uploads: number;
  uploadedBytes: number;
  durationMs: number;
  forkCommandMs: number;
  parentUnchanged: boolean;
  parentKeysChecked: number;
}

export interface ReuploadResult {
  params: ReuploadParams;
  store: string;
  separated: ModeResult;
  inline: ModeResult;
  fork: ForkResult;
  puts: { client: number; server: number | null; agree: boolean | null; note: string };
}

export interface RunContext {
  driver: StackDriver;
  /** Object store URL per mode (distinct prefixes). */
  storeFor(mode: string): string;
  env: Record<string, string>;
  stateDir: string;
  /** The PUT counter of the MinIO behind the store (--minio-metrics), else undefined. */
  serverPuts?: () => Promise<number>;
  /** Progress: a phase starts (total steps), a step is done, the phase ends. */
  progress?: { start(label: string, total: number): void; tick(): void; stop(): void };
  log?: (line: string) => void;
}

/** The bytes a key holds in the model (undefined = deleted). */
type Model = Map<string, Buffer | undefined>;

export function largeKey(i: number): string {
  return `large-${String(i).padStart(4, '0')}`;
}
export function smallKey(i: number): string {
  return `small-${String(i).padStart(5, '0')}`;
}

function diffPerOffset(
  before: Array<{ blockIndex: number; uploads: number }>,
  after: Array<{ blockIndex: number; uploads: number }>,
): Array<{ blockIndex: number; uploads: number }> {
  const b = new Map(before.map((r) => [r.blockIndex, r.uploads]));
  const out: Array<{ blockIndex: number; uploads: number }> = [];
  for (const r of after) {
    const d = r.uploads - (b.get(r.blockIndex) ?? 0);
    if (d > 0) out.push({ blockIndex: r.blockIndex, uploads: d });
  }
  return out;
}

const limit = pLimit(8);

async function applyOps(ctx: RunContext, stack: Stack, label: string, ops: Array<[string, Buffer | undefined]>): Promise<number> {
  const dir = join(stack.mountpoint, NAMESPACE);
  let bytes = 0;
  ctx.progress?.start(label, ops.length);
  try {
    await Promise.all(
      ops.map(([key, value]) =>
        limit(async () => {
          if (value) {
            await writeFile(join(dir, key), value);
            bytes += value.length;
          } else {
            await unlink(join(dir, key));
          }
          ctx.progress?.tick();
        }),
      ),
    );
  } finally {
    ctx.progress?.stop();
  }
  return bytes;
}

async function phase(
  ctx: RunContext,
  stack: Stack,
  name: string,
  large: Buffer[],
  work: () => Promise<number>,
  reclaim: boolean,
  model: Model,
): Promise<PhaseResult> {
  const c0 = await stack.snapshot();
  const t0 = performance.now();
  const userBytes = await work();
  if (reclaim) await stack.reclaim();
  await stack.sync();
  await stack.flush();
  const durationMs = performance.now() - t0;
  const c1 = await stack.snapshot();
  // Nothing acknowledged may be lost: every key reads back as written.
  const check = await checkKeys(stack.mountpoint, model);
  if (!check.ok) {
    throw new Error(`after ${name}: the KV mount does not return what was written: ${check.problems.slice(0, 6).join('; ')}${check.problems.length > 6 ? ` (${check.problems.length} problems)` : ''}`);
  }
  const perOffset = diffPerOffset(c0.perOffset, c1.perOffset);
  const located = await locateValues(stack.dataDir, large, BLOCK_SIZE);
  if (located.missing.length) {
    // Tell a lost value (the stack's bug) from a value the search cannot see.
    const how = await Promise.all(
      located.missing.slice(0, 5).map(async (i) => {
        const got = await readFile(join(stack.mountpoint, NAMESPACE, largeKey(i))).catch((e: Error) => e);
        if (got instanceof Error) return `${largeKey(i)}: ${got.message}`;
        return `${largeKey(i)}: ${got.equals(large[i]) ? 'reads back intact through the mount' : `reads back WRONG (${got.length} bytes)`}`;
      }),
    );
    throw new Error(
      `after ${name}: ${located.missing.length} large values are in no file under ${stack.dataDir} (${how.join('; ')})`,
    );
  }
  const largeSet = new Set(located.blocks);
  const largeUploads = perOffset.filter((r) => largeSet.has(r.blockIndex)).reduce((a, r) => a + r.uploads, 0);
  const d = diffCounters(c0, c1);
  ctx.log?.(`${stack.volume} ${name}: ${d.uploads} uploads, ${largeUploads} of large-value blocks, ${d.logPuts} log records`);
  return {
    name,
    ...d,
    puts: d.uploads + d.logPuts,
    bytesPut: d.uploadedBytes + d.logBytes,
    userBytes,
    amplification: userBytes > 0 ? (d.uploadedBytes + d.logBytes) / userBytes : 0,
    blockAmplification: userBytes > 0 ? d.uploadedBytes / userBytes : 0,
    largeUploadedBytes: largeUploads * BLOCK_SIZE,
    largeBlocks: located.blocks.length,
    durationMs: Math.round(durationMs),
    perOffset,
    largeBlockIndexes: located.blocks,
  };
}

export function diffCounters(a: VolumeCounters, b: VolumeCounters): VolumeCounters {
  return {
    uploads: b.uploads - a.uploads,
    uploadedBytes: b.uploadedBytes - a.uploadedBytes,
    reuploads: b.reuploads - a.reuploads,
    logPuts: b.logPuts - a.logPuts,
    logBytes: b.logBytes - a.logBytes,
    checkpointUploads: b.checkpointUploads - a.checkpointUploads,
  };
}

const counterKeys = ['uploads', 'uploadedBytes', 'reuploads', 'logPuts', 'logBytes', 'checkpointUploads'] as const;

/** Adds the teardown (what `down` PUT) into a mode's totals. */
export function withTeardown(m: ModeResult, teardown: VolumeCounters): ModeResult {
  const out = { ...m, teardown };
  for (const k of counterKeys) out[k] = m[k] - m.teardown[k] + teardown[k];
  out.puts = out.uploads + out.logPuts;
  out.bytesPut = out.uploadedBytes + out.logBytes;
  out.amplification = out.userBytes > 0 ? out.bytesPut / out.userBytes : 0;
  out.blockAmplification = out.userBytes > 0 ? out.uploadedBytes / out.userBytes : 0;
  return out;
}

/** The small-value operations of round `r`: half the small keys, each overwritten or deleted. */
export function roundOps(model: Model, small: number, smallSize: number, r: number): Array<[string, Buffer | undefined]> {
  const rnd = mulberry32(0x9e3779b9 ^ (r * 7919)); // seeded: the rounds' choices repeat
  const idx = Array.from({ length: small }, (_, i) => i);
  for (let i = idx.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  const ops: Array<[string, Buffer | undefined]> = [];
  for (const i of idx.slice(0, Math.floor(small / 2))) {
    const key = smallKey(i);
    const live = model.get(key) !== undefined;
    const value = live && rnd() < 0.5 ? undefined : randomBytes(smallSize);
    ops.push([key, value]);
    model.set(key, value);
  }
  return ops;
}

export async function runMode(
  ctx: RunContext,
  mode: 'separated' | 'inline',
  params: ReuploadParams,
  large: Buffer[],
  keepUp = false,
): Promise<{ result: ModeResult; stack: Stack; model: Model; up: UpOptions }> {
  const volume = `reupload-${mode}`;
  const mountpoint = join(ctx.stateDir, mode, 'kv');
  await mkdir(mountpoint, { recursive: true });
  const valueThreshold = mode === 'inline' ? 0 : undefined;
  const up: UpOptions = {
    volume,
    mountpoint,
    stateDir: join(ctx.stateDir, mode, 'state'),
    store: ctx.storeFor(mode),
    sizeBytes: params.volumeSize,
    valueThreshold,
    fsync: params.fsync,
    env: ctx.env,
  };
  const stack = await ctx.driver.up(up);
  try {
    await mkdir(join(mountpoint, NAMESPACE));
    await stack.sync();
    await stack.flush();
    const setup = await stack.snapshot();
    const model: Model = new Map();
    const writeOps: Array<[string, Buffer | undefined]> = large.map((v, i) => [largeKey(i), v]);
    for (let i = 0; i < params.small; i++) writeOps.push([smallKey(i), randomBytes(params.smallSize)]);
    for (const [k, v] of writeOps) model.set(k, v);
    const write = await phase(ctx, stack, 'write', large, () => applyOps(ctx, stack, `${mode} write`, writeOps), false, model);
    const rounds: PhaseResult[] = [];
    for (let r = 1; r <= params.rounds; r++) {
      const ops = roundOps(model, params.small, params.smallSize, r);
      rounds.push(await phase(ctx, stack, `round ${r}`, large, () => applyOps(ctx, stack, `${mode} round ${r}`, ops), true, model));
    }
    const all = [write, ...rounds];
    const sum = (f: (p: PhaseResult) => number) => all.reduce((a, p) => a + f(p), 0);
    const userBytes = sum((p) => p.userBytes);
    const largeBytes = large.reduce((a, v) => a + v.length, 0);
    const zero: VolumeCounters = { uploads: 0, uploadedBytes: 0, reuploads: 0, logPuts: 0, logBytes: 0, checkpointUploads: 0 };
    let result: ModeResult = {
      mode,
      valueThreshold: valueThreshold ?? null,
      volume,
      uploads: sum((p) => p.uploads),
      uploadedBytes: sum((p) => p.uploadedBytes),
      reuploads: sum((p) => p.reuploads),
      logPuts: sum((p) => p.logPuts),
      logBytes: sum((p) => p.logBytes),
      checkpointUploads: sum((p) => p.checkpointUploads),
      puts: 0,
      bytesPut: 0,
      blockAmplification: 0,
      teardown: zero,
      userBytes,
      amplification: 0,
      largeValueUploadFactor: largeBytes > 0 ? sum((p) => p.largeUploadedBytes) / largeBytes : 0,
      setup: diffCounters(zero, setup),
      write,
      rounds,
    };
    result = withTeardown(result, zero);
    if (!keepUp) {
      const last = await stack.snapshot();
      await stack.down();
      result = withTeardown(result, diffCounters(last, await ctx.driver.snapshot(up)));
    }
    return { result, stack, model, up };
  } catch (err) {
    await stack.down().catch(() => {});
    throw err;
  }
}

function digest(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Reads every key under the namespace and compares with the model. */
export async function checkKeys(mountpoint: string, model: Model): Promise<{ ok: boolean; checked: number; problems: string[] }> {
  const dir = join(mountpoint, NAMESPACE);
  const names = new Set(await readdir(dir));
  const problems: string[] = [];
  let checked = 0;
  for (const [key, value] of model) {
    if (value === undefined) {
      if (names.has(key)) problems.push(`${key} should be deleted`);
      continue;
    }
    if (!names.has(key)) {
      problems.push(`${key} missing`);
      continue;
    }
    const got = await readFile(join(dir, key));
    checked++;
    if (digest(got) !== digest(value)) problems.push(`${key} differs`);
  }
  for (const n of names) if (!model.has(n)) problems.push(`unexpected key ${n}`);
  return { ok: problems.length === 0, checked, problems };
}

async function forkCost(ctx: RunContext, parent: Stack, parentUp: UpOptions, model: Model): Promise<{ fork: ForkResult; up: UpOptions }> {
  const name = `${parent.volume}-fork`;
  const t0 = performance.now();
  await parent.fork(name);
  const forkCommandMs = performance.now() - t0;
  const mountpoint = join(ctx.stateDir, 'fork', 'kv');
  await mkdir(mountpoint, { recursive: true });
  // The fork lives in the parent's catalog: same state, store and cache.
  const up: UpOptions = { ...parentUp, volume: name, mountpoint, sizeBytes: 0 };
  const fork = await ctx.driver.up(up);
  let uploads = 0;
  let uploadedBytes = 0;
  try {
    const c0 = await fork.snapshot();
    await writeFile(join(mountpoint, NAMESPACE, 'fork-new'), randomBytes(BLOCK_SIZE));
    await fork.sync();
    await fork.flush();
    const c1 = await fork.snapshot();
    uploads = c1.uploads - c0.uploads + c1.logPuts - c0.logPuts;
    uploadedBytes = c1.uploadedBytes - c0.uploadedBytes + c1.logBytes - c0.logBytes;
  } finally {
    await fork.down();
  }
  const durationMs = performance.now() - t0;
  const check = await checkKeys(parent.mountpoint, model);
  if (!check.ok) ctx.log?.(`fork: parent changed: ${check.problems.slice(0, 5).join('; ')}`);
  return {
    fork: {
      uploads,
      uploadedBytes,
      durationMs: Math.round(durationMs),
      forkCommandMs: Math.round(forkCommandMs),
      parentUnchanged: check.ok,
      parentKeysChecked: check.checked,
    },
    up,
  };
}

/** Polls MinIO's PUT counter until two readings a second apart agree. */
async function stablePuts(read: () => Promise<number>): Promise<number> {
  let last = await read();
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = await read();
    if (now === last) return now;
    last = now;
  }
  return last;
}

export async function runReupload(ctx: RunContext, params: ReuploadParams): Promise<ReuploadResult> {
  const large = Array.from({ length: params.values }, () => randomBytes(params.valueSize));
  const puts0 = ctx.serverPuts ? await ctx.serverPuts() : undefined;
  const sep = await runMode(ctx, 'separated', params, large, true);
  let fork: ForkResult;
  let forkUp: UpOptions;
  const sepLast = await sep.stack.snapshot();
  try {
    ({ fork, up: forkUp } = await forkCost(ctx, sep.stack, sep.up, sep.model));
  } finally {
    await sep.stack.down();
  }
  sep.result = withTeardown(sep.result, diffCounters(sepLast, await ctx.driver.snapshot(sep.up)));
  const inl = await runMode(ctx, 'inline', params, large);
  // Every PUT glidefs made for the three volumes, read after their stacks are
  // down (so the flushes of fork, down and unmount are in).
  // Block uploads + log records + lease PUTs of every volume, + one store marker per store prefix (glidefs' owner marker).
  let client = 0;
  for (const up of [sep.up, forkUp, inl.up]) {
    const s = await ctx.driver.snapshot(up);
    client += s.uploads + s.logPuts + (s.leasePuts ?? 0);
  }
  client += new Set([sep.up.store, inl.up.store]).size;
  let server: number | null = null;
  let note = 'no --minio-metrics: only the client counts';
  if (ctx.serverPuts && puts0 !== undefined) {
    server = (await stablePuts(ctx.serverPuts)) - puts0;
    note = server === client ? 'glidefs and MinIO agree' : `MISMATCH: glidefs counted ${client} PUTs, MinIO ${server}`;
  }
  return {
    params,
    store: ctx.storeFor('*'),
    separated: sep.result,
    inline: inl.result,
    fork,
    puts: { client, server, agree: server === null ? null : server === client, note },
  };
}
