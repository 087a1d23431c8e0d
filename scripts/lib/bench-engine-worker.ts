/**
 * One job of the engine benchmark, run in its own child process (so heap,
 * page-cache state and native allocations of one system never colour
 * another's figures). The parent (scripts/bench-engine.ts) forks it with the
 * job as JSON in argv[2]; it reports progress and its result over IPC.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EngineOptions } from '../../src/index.js';
import { NS, dirBytes, openGlide, openKv, type Durability, type SystemName } from './bench-kv-adapters.js';
import { dropCaches, keyOf, progress, rng, runOps, valueOf } from './bench-workload.js';

export type Job =
  | { job: 'put'; system: SystemName; mode: Durability; count: number; concurrency: number; capMs: number }
  | { job: 'put-slices'; system: SystemName; mode: Durability }
  | { job: 'read-slices'; system: SystemName; keys: number; coldGets: number; scanLen: number; get: boolean; list: boolean }
  | { job: 'reclaim'; system: SystemName; keys: number }
  | { job: 'keydir-load'; dir: string; keys: number }
  | { job: 'keydir-measure'; dir: string; keys: number }
  | { job: 'large'; size: number; count: number; separated: boolean };

export type JobResult = Record<string, number | string>;

const VALUE = 100;

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'glidekv-bench-'));
}

async function loadKeys(kv: { load(e: Array<[Buffer, Buffer]>): Promise<void> }, n: number, label: string, size = VALUE): Promise<void> {
  const step = 10_000;
  for (let i = 0; i < n; i += step) {
    const entries: Array<[Buffer, Buffer]> = [];
    for (let j = i; j < Math.min(n, i + step); j++) entries.push([keyOf(j), valueOf(j, size)]);
    await kv.load(entries);
    progress(label, Math.min(n, i + step), n);
  }
}

async function putJob(j: Extract<Job, { job: 'put' }>): Promise<JobResult> {
  const dir = await tempDir();
  try {
    const kv = await openKv(j.system, dir, j.mode);
    const r = await runOps(`${j.system} put ${j.mode}`, j.count, j.concurrency, j.capMs, (i) => kv.put(keyOf(i), valueOf(i, VALUE)));
    await kv.close();
    return { opsPerSec: r.opsPerSec, ops: r.done, ms: r.ms };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A message from the parent to a sliced job (see bench-engine.ts, turns()). */
export interface SliceMsg {
  /** run this phase's ops for `slice` ms (at least one op), answer `{ slice: { ops, ms, keys?, left? } }` */
  slice?: number;
  phase?: 'put' | 'hot' | 'list' | 'cold';
  /** read-slices: close + reopen the store, fsync its files, drop the page cache; answer `{ prepared }` */
  prepare?: 'cold';
  end?: boolean;
}

/**
 * Serves a sliced job: announces `{ ready: true }`, then answers each message with what
 * `handle` returns, one at a time, until `{ end: true }`.
 */
async function serveSlices(handle: (m: SliceMsg) => Promise<object>): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    process.on('message', (m: SliceMsg) => {
      if (m.end) {
        process.removeAllListeners('message'); // lets the IPC channel go: the job can end
        resolve();
        return;
      }
      handle(m).then((a) => process.send?.(a), reject);
    });
    process.send?.({ ready: true });
  });
}

/**
 * Puts by time slices, one writer: the store is opened once; each IPC message `{ slice: ms }`
 * runs awaited puts for that long and answers `{ slice: { ops, ms } }`; `{ end: true }` closes
 * it and ends the job with the totals. The parent hands slices to the systems in turn, so each
 * sees the same spells of load (see bench-engine.ts, put sync always).
 */
async function putSlicesJob(j: Extract<Job, { job: 'put-slices' }>): Promise<JobResult> {
  const dir = await tempDir();
  try {
    const kv = await openKv(j.system, dir, j.mode);
    let i = 0;
    let ops = 0;
    let ms = 0;
    await serveSlices(async (m) => {
      const t0 = performance.now();
      const until = t0 + (m.slice ?? 0);
      let n = 0;
      while (performance.now() < until) {
        await kv.put(keyOf(i), valueOf(i, VALUE));
        i++;
        n++;
      }
      const dt = performance.now() - t0;
      ops += n;
      ms += dt;
      return { slice: { ops: n, ms: dt } };
    });
    await kv.close();
    return { opsPerSec: ops / (ms / 1000), ops, ms };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Gets and list by time slices. Before `{ ready }`: load `keys` keys (sync none), close, reopen,
 * and (for gets) read every key once, so the hot gets find it in the page cache. Then per slice:
 *   hot   random gets of loaded keys (seed 7), one at a time;
 *   list  scans of `scanLen` keys from random start keys (seed 11), whole scans (at least one);
 *   cold  random gets (seed 13) until `coldGets` of them are done over all cold slices, after
 *         `{ prepare: 'cold' }` closed and reopened the store and dropped the page cache
 *         (`left` in the answer: cold gets still to do; 0 = done).
 * The totals per phase come back with `{ end }`: ops/s (keys/s for list) = ops ÷ slice time.
 */
async function readSlicesJob(j: Extract<Job, { job: 'read-slices' }>): Promise<JobResult> {
  const dir = await tempDir();
  try {
    let kv = await openKv(j.system, dir, 'none');
    await loadKeys(kv, j.keys, `${j.system} load ${j.keys} keys`);
    await kv.close();
    kv = await openKv(j.system, dir, 'none');
    if (j.get) await runOps(`${j.system} warm`, j.keys, 1, 600_000, (i) => kv.get(keyOf(i)));
    const rnd = { hot: rng(7), list: rng(11), cold: rng(13) };
    const tot = { hot: { ops: 0, ms: 0 }, list: { ops: 0, ms: 0, keys: 0 }, cold: { ops: 0, ms: 0 } };
    let coldLeft = j.coldGets;
    let dropped = true;
    const get = async (r: () => number): Promise<void> => {
      const v = await kv.get(keyOf(Math.floor(r() * j.keys)));
      if (!v) throw new Error('bench: a loaded key is missing');
    };
    await serveSlices(async (m) => {
      if (m.prepare === 'cold') {
        await kv.close();
        kv = await openKv(j.system, dir, 'none');
        dropped = dropCaches(dir);
        return { prepared: dropped };
      }
      const phase = m.phase as 'hot' | 'list' | 'cold';
      const t0 = performance.now();
      const until = t0 + (m.slice ?? 0);
      let n = 0;
      let keys = 0;
      do {
        if (phase === 'list') keys += await kv.scan(keyOf(Math.floor(rnd.list() * j.keys)), j.scanLen);
        else if (phase === 'hot') await get(rnd.hot);
        else if (coldLeft > 0) {
          await get(rnd.cold);
          coldLeft--;
        } else break;
        n++;
      } while (performance.now() < until);
      const dt = performance.now() - t0;
      tot[phase].ops += n;
      tot[phase].ms += dt;
      if (phase === 'list') tot.list.keys += keys;
      return { slice: { ops: n, ms: dt, keys, left: coldLeft } };
    });
    await kv.close();
    const out: JobResult = {};
    if (j.get) {
      out.getHotOpsPerSec = tot.hot.ops / (tot.hot.ms / 1000);
      out.getHotOps = tot.hot.ops;
      out.getHotMs = tot.hot.ms;
      out.getColdOpsPerSec = dropped ? tot.cold.ops / (tot.cold.ms / 1000) : 'n/a (cannot drop caches: not root)';
      out.getColdOps = tot.cold.ops;
      out.getColdMs = tot.cold.ms;
    }
    if (j.list) {
      out.listKeysPerSec = tot.list.keys / (tot.list.ms / 1000);
      out.listScansPerSec = tot.list.ops / (tot.list.ms / 1000);
      out.listKeys = tot.list.keys;
      out.listMs = tot.list.ms;
    }
    return out;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Load keys, overwrite each once (half the bytes dead), then compact. */
async function reclaimJob(j: Extract<Job, { job: 'reclaim' }>): Promise<JobResult> {
  if (j.system === 'lmdb') return { mbPerSec: 'n/a (B-tree, no compaction)' };
  const dir = await tempDir();
  try {
    if (j.system === 'glidekv') {
      // Automatic reclaim off (ratio 1 is never passed), so the on-demand run sees all dead bytes.
      const kv = await openKv('glidekv', dir, 'none', { reclaimDeadRatio: 1 });
      await loadKeys(kv, j.keys, 'glidekv load');
      const over: Array<[Buffer, Buffer]> = [];
      for (let i = 0; i < j.keys; i++) over.push([keyOf(i), valueOf(i, VALUE, 1)]);
      await kv.load(over);
      await kv.close();
      const e = await openGlide(dir, { sync: 'none', reclaimDeadRatio: 1 });
      const before = e.stats();
      progress('glidekv reclaim', 0, 1, true);
      const t0 = performance.now();
      const res = await e.reclaim();
      const wall = performance.now() - t0;
      progress('glidekv reclaim', 1, 1, true);
      await e.close();
      return {
        mbPerSec: res.relocatedBytes / 1e6 / (wall / 1000),
        relocatedBytes: res.relocatedBytes,
        durationMs: wall,
        engineDurationMs: res.durationMs,
        deadBytesBefore: before.deadBytes ?? 'n/a',
      };
    }
    const { ClassicLevel } = await import('classic-level');
    const kv = await openKv('level', dir, 'none');
    await loadKeys(kv, j.keys, 'level load');
    const over: Array<[Buffer, Buffer]> = [];
    for (let i = 0; i < j.keys; i++) over.push([keyOf(i), valueOf(i, VALUE, 1)]);
    await kv.load(over);
    await kv.close();
    const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    progress('level compactRange', 0, 1, true);
    const t0 = performance.now();
    await db.compactRange(Buffer.from([0]), Buffer.from([0xff]));
    const wall = performance.now() - t0;
    progress('level compactRange', 1, 1, true);
    await db.close();
    // LevelDB reports no relocated byte count: the table files left after a
    // full compaction are the live data it rewrote.
    const live = await dirBytes(dir);
    return { mbPerSec: live / 1e6 / (wall / 1000), relocatedBytes: live, durationMs: wall };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function keydirLoad(j: Extract<Job, { job: 'keydir-load' }>): Promise<JobResult> {
  const e = await openGlide(j.dir, { sync: 'none' });
  const step = 1000;
  for (let i = 0; i < j.keys; i += step) {
    const ops = [];
    for (let k = i; k < Math.min(j.keys, i + step); k++) ops.push({ type: 'put' as const, key: keyOf(k), value: valueOf(k, 16) });
    await e.batch(NS, ops);
    progress(`glidekv load ${j.keys} keys`, Math.min(j.keys, i + step), j.keys);
  }
  await e.close();
  return {};
}

/** Memory after V8 settled: it frees array buffers of collected objects lazily, on a background sweeper. */
async function jsBytes(): Promise<{ js: number; rss: number }> {
  const gc = (globalThis as { gc?: () => void }).gc ?? ((): void => {});
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 100));
  }
  gc();
  const m = process.memoryUsage();
  return { js: m.heapUsed + m.external, rss: m.rss };
}

/** In a fresh process: memory before and after open() rebuilds the keydir of `keys` keys. */
async function keydirMeasure(j: Extract<Job, { job: 'keydir-measure' }>): Promise<JobResult> {
  // Load the engine's modules first so their code is not counted.
  const warm = await tempDir();
  await (await openGlide(warm, { sync: 'none' })).close();
  await rm(warm, { recursive: true, force: true });
  const m0 = await jsBytes();
  progress('glidekv reopen (keydir rebuild)', 0, 1, true);
  const e = await openGlide(j.dir, { sync: 'none' });
  const m1 = await jsBytes();
  progress('glidekv reopen (keydir rebuild)', 1, 1, true);
  const s = e.stats();
  const out: JobResult = {
    keys: s.keys ?? j.keys,
    jsBytesPerKey: (m1.js - m0.js) / j.keys,
    rssBytesPerKey: (m1.rss - m0.rss) / j.keys,
  };
  out.reportedBytesPerKey = s.keydirBytes / j.keys;
  await e.close();
  return out;
}

/** Large values: put (sync batch, one writer), get, then overwrite half and reclaim. */
async function largeJob(j: Extract<Job, { job: 'large' }>): Promise<JobResult> {
  const dir = await tempDir();
  const label = `glidekv ${j.size >= 1 << 20 ? j.size / (1 << 20) + ' MiB' : j.size / 1024 + ' KiB'} ${j.separated ? 'separated' : 'inline'}`;
  try {
    const opts: EngineOptions = { sync: 'batch', reclaimDeadRatio: 1, ...(j.separated ? {} : { valueThreshold: 0 }) };
    let e = await openGlide(dir, opts);
    if (j.separated && typeof e.stats().blobs !== 'number') {
      await e.close();
      return { separation: 'n/a (separation not built)' };
    }
    const put = await runOps(`${label} put`, j.count, 1, 120_000, (i) => e.put(NS, keyOf(i), valueOf(i, j.size)));
    const blobs = e.stats().blobs;
    // the two runs must differ in what the comparison is about: one blob per value, or none
    if (blobs !== (j.separated ? j.count : 0)) throw new Error(`bench: expected ${j.separated ? j.count : 0} blobs, stats() says ${blobs}`);
    await e.close();
    e = await openGlide(dir, opts);
    const get = await runOps(`${label} get`, j.count, 1, 120_000, async (i) => {
      const g = await e.get(NS, keyOf(i));
      if (!g || g.value.length !== j.size) throw new Error('bench: a large value came back wrong');
    });
    const half = Math.floor(j.count / 2);
    await runOps(`${label} overwrite half`, half, 1, 120_000, (i) => e.put(NS, keyOf(i), valueOf(i, j.size, 1)));
    const before = e.stats().compactionBytes ?? 0;
    const t0 = performance.now();
    const res = await e.reclaim();
    const reclaimMs = performance.now() - t0;
    const after = e.stats().compactionBytes ?? 0;
    await e.sync();
    const blobsAfter = e.stats().blobs; // the overwritten half is collected
    await e.close();
    const mb = j.size / 1e6;
    return {
      putOpsPerSec: put.opsPerSec,
      putMBps: put.opsPerSec * mb,
      getOpsPerSec: get.opsPerSec,
      getMBps: get.opsPerSec * mb,
      reclaimRelocatedBytes: res.relocatedBytes,
      compactionBytesDelta: after - before,
      reclaimMs,
      blobs: typeof blobs === 'number' ? blobs : 'n/a',
      blobsAfterOverwrite: typeof blobsAfter === 'number' ? blobsAfter : 'n/a',
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function run(j: Job): Promise<JobResult> {
  switch (j.job) {
    case 'put':
      return putJob(j);
    case 'put-slices':
      return putSlicesJob(j);
    case 'read-slices':
      return readSlicesJob(j);
    case 'reclaim':
      return reclaimJob(j);
    case 'keydir-load':
      return keydirLoad(j);
    case 'keydir-measure':
      return keydirMeasure(j);
    case 'large':
      return largeJob(j);
  }
}

const job = JSON.parse(process.argv[2]) as Job;
try {
  const result = await run(job);
  process.send?.({ result });
} catch (err) {
  process.send?.({ error: err instanceof Error ? `${err.message}` : String(err) });
  process.exitCode = 1;
}
