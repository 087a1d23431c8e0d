/**
 * npm run bench:engine [-- --quick] [--json FILE] [--only SECTION[,SECTION]] [--systems glidekv,lmdb,level]
 *
 * The engine against lmdb (lmdb-js) and classic-level (LevelDB), same
 * workload, equivalent durability, each job in its own child process.
 *
 * Sections (--only):
 *   put      100-byte values, 16-byte keys in scrambled order:
 *              none    1 writer;   glidekv sync 'none'   | lmdb noSync: true | level {sync: false}
 *              batch   64 writers; glidekv group commit  | lmdb default (puts of one event turn share
 *                      a txn; each promise resolves after commit + fsync) | level {sync: true}, whose
 *                      writer queue groups concurrent writes under one log fsync
 *              always  1 writer;   glidekv sync 'always' | lmdb default, each put awaited (one txn +
 *                      fsync each) | level {sync: true}, each put awaited. The three stores are
 *                      open at once, each in its own process, and take turns: 32 slices of 250 ms
 *                      each (--quick: 6 of 500 ms), the order rotated every turn, so that the
 *                      spells of load on a shared machine fall on all of them alike; ops/s = its
 *                      slices' puts ÷ its slices' time
 *   get      random gets of loaded keys (200k), one at a time, awaited: hot (every key read once
 *            before; in the page cache) and cold (after close + reopen, then `echo 3 >
 *            /proc/sys/vm/drop_caches`; needs root; the first 20,000 random gets, capped at 15 s)
 *   list     range scans of 10,000 keys from random start keys, keys only (glidekv list() reads no
 *            values; lmdb getKeys; level keys() iterator); keys/s
 *            get and list by turns too: each system loads its keys once, in its own process, all
 *            three side by side; then hot gets take 24 turns of 250 ms per system, list 16, and
 *            after every store is closed, reopened and the cache dropped (once all reopened), cold
 *            gets take turns of 25 ms (20,000 of them last ~0.3 s at low load) until each system
 *            did its 20,000 (--quick: 4 turns of 200 ms, 500 cold gets, 5k keys); order rotated every turn; ops/s (keys/s) = its
 *            slices' gets (keys) ÷ its slices' time. Run one system after another, each met a
 *            different spell of load minutes apart
 *   reclaim  load N keys, overwrite each once (half the bytes dead), compact: glidekv reclaim()
 *            relocatedBytes / wall time; level compactRange over everything, live table bytes
 *            after / wall time (LevelDB reports no byte count); lmdb: n/a (B-tree, no compaction)
 *   keydir   1M keys of 16 bytes loaded, then a fresh process measures heapUsed+external and RSS
 *            before and after open() rebuilds the keydir (V8 settled: gc + waits); per key, the 16
 *            key bytes included. Plus the engine's own figure if
 *            stats() reports one (keydirBytes), and heap+external less the 16 key bytes (the
 *            budget of issue 13: at most 40 at 1M keys). lmdb/level keep no in-memory index: n/a
 *   large    glidekv only: 256 KiB and 4 MiB values, separation on (default valueThreshold) against
 *            off (valueThreshold 0): put and get throughput (sync batch, one writer; gets after a
 *            reopen), then half the keys overwritten and reclaim: bytes relocated and time. Each
 *            run checks stats().blobs (one blob per value separated, none inline) or fails
 *
 * Ratios are glidekv ÷ other (above 1 = glidekv faster, for keydir = glidekv bigger). Results go
 * to bench-results/engine.json (or --json FILE). Phases are capped in time so a full run stays
 * within about 5 minutes on 2 cores; ops/s is completed ops ÷ elapsed time.
 */
import { fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import type { Job, JobResult, SliceMsg } from './lib/bench-engine-worker.js';
import type { SystemName } from './lib/bench-kv-adapters.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const WORKER = join(ROOT, 'scripts/lib/bench-engine-worker.ts');
const SECTIONS = ['put', 'get', 'list', 'reclaim', 'keydir', 'large'] as const;
type Section = (typeof SECTIONS)[number];
const ALL_SYSTEMS: SystemName[] = ['glidekv', 'lmdb', 'level'];

interface Args {
  quick: boolean;
  json: string;
  only: Set<Section>;
  systems: SystemName[];
}

function usage(msg: string): never {
  process.stderr.write(`bench-engine: ${msg}\nusage: bench-engine [--quick] [--json FILE] [--only ${SECTIONS.join(',')}] [--systems glidekv,lmdb,level]\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  const a: Args = { quick: false, json: join(ROOT, 'bench-results/engine.json'), only: new Set(SECTIONS), systems: ALL_SYSTEMS };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    const val = (): string => argv[++i] ?? usage(`${f} needs a value`);
    if (f === '--quick') a.quick = true;
    else if (f === '--json') a.json = resolve(val());
    else if (f === '--only') {
      const list = val().split(',');
      for (const s of list) if (!(SECTIONS as readonly string[]).includes(s)) usage(`unknown section '${s}'`);
      a.only = new Set(list as Section[]);
    } else if (f === '--systems') {
      const list = val().split(',');
      for (const s of list) if (!(ALL_SYSTEMS as string[]).includes(s)) usage(`unknown system '${s}'`);
      a.systems = list as SystemName[];
    } else if (f === '--help' || f === '-h') usage('help');
    else usage(`unknown argument '${f}'`);
  }
  return a;
}

const FULL = {
  put: { none: 200_000, batch: 200_000, always: 20_000, capMs: 15_000, alwaysCapMs: 8_000, alwaysRounds: 32 },
  reads: { keys: 200_000, coldGets: 20_000, scanLen: 10_000, capMs: 15_000, hotTurns: 24, listTurns: 16, sliceMs: 250, coldSliceMs: 25 },
  reclaimKeys: 200_000,
  keydirKeys: 1_000_000,
  large: [
    { size: 256 * 1024, count: 200 },
    { size: 4 * 1024 * 1024, count: 24 },
  ],
};
const QUICK: typeof FULL = {
  put: { none: 3000, batch: 3000, always: 300, capMs: 3000, alwaysCapMs: 3000, alwaysRounds: 6 },
  reads: { keys: 5000, coldGets: 500, scanLen: 1000, capMs: 3000, hotTurns: 4, listTurns: 4, sliceMs: 200, coldSliceMs: 25 },
  reclaimKeys: 5000,
  keydirKeys: 20_000,
  large: [
    { size: 256 * 1024, count: 8 },
    { size: 4 * 1024 * 1024, count: 4 },
  ],
};

// ---- running jobs in child processes, with one progress bar on stderr ----

const bar = new cliProgress.SingleBar(
  { format: '{label} [{bar}] {value}/{total} {duration_formatted}', stream: process.stderr, hideCursor: true, clearOnComplete: true },
  cliProgress.Presets.shades_classic,
);
let barLabel: string | undefined;

function showProgress(p: { label: string; done: number; total: number }): void {
  if (p.label !== barLabel) {
    if (barLabel !== undefined) bar.stop();
    barLabel = p.label;
    bar.start(p.total, p.done, { label: p.label.padEnd(40) });
  } else {
    bar.update(p.done);
  }
}

function runJob(job: Job): Promise<JobResult> {
  return new Promise((resolveJob, reject) => {
    const child = fork(WORKER, [JSON.stringify(job)], {
      cwd: ROOT,
      execArgv: ['--import', 'tsx', '--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let result: JobResult | undefined;
    let error: string | undefined;
    child.on('message', (m: { progress?: { label: string; done: number; total: number }; result?: JobResult; error?: string }) => {
      if (m.progress) showProgress(m.progress);
      if (m.result) result = m.result;
      if (m.error) error = m.error;
    });
    child.on('exit', (code, signal) => {
      if (barLabel !== undefined) {
        bar.stop();
        barLabel = undefined;
      }
      if (result) resolveJob(result);
      else reject(new Error(`${job.job}${'system' in job ? ` (${job.system})` : ''}: ${error ?? `worker exited with ${signal ?? code}`}`));
    });
  });
}

type SliceAnswer = { slice?: { ops: number; ms: number; keys?: number; left?: number }; prepared?: boolean };
interface SlicedWorker { s: SystemName; send: (m: SliceMsg) => Promise<SliceAnswer>; done: Promise<JobResult> }

/**
 * Starts one worker process per system for a sliced job ('put-slices', 'read-slices') and waits
 * until every one is ready (store open and loaded); they get ready side by side. A worker that
 * fails answers `{}` to every later message, and its error becomes its result.
 */
async function startSliced(systems: SystemName[], mk: (s: SystemName) => Job): Promise<SlicedWorker[]> {
  const workers = systems.map((s, idx): { w: SlicedWorker; ready: Promise<unknown> } => {
    const child = fork(WORKER, [JSON.stringify(mk(s))], {
      cwd: ROOT,
      execArgv: ['--import', 'tsx', '--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let waiting: ((m: SliceAnswer) => void) | null = null;
    let failed: string | undefined;
    let result: JobResult | undefined;
    const ready = new Promise<void>((res) => (waiting = () => res()));
    child.on('message', (m: SliceAnswer & { ready?: boolean; result?: JobResult; error?: string; progress?: { label: string; done: number; total: number } }) => {
      if (m.progress) {
        if (idx === 0) showProgress(m.progress); // one bar: the first system's loading stands for all
      } else if (m.result) result = m.result;
      else if (m.error) failed = m.error;
      else if (waiting !== null) {
        const w = waiting;
        waiting = null;
        w(m);
      }
    });
    const done = new Promise<JobResult>((res) => child.on('exit', (code, signal) => {
      if (waiting !== null) waiting({});
      res(result ?? { error: failed ?? `worker exited with ${signal ?? code}` });
    }));
    const send = (m: SliceMsg): Promise<SliceAnswer> => new Promise((res) => {
      if (child.exitCode !== null || child.signalCode !== null) return res({});
      waiting = res;
      child.send(m);
    });
    return { w: { s, done, send }, ready: Promise.race([ready, done]) };
  });
  await Promise.all(workers.map((x) => x.ready));
  stopBar();
  return workers.map((x) => x.w);
}

function stopBar(): void {
  if (barLabel !== undefined) {
    bar.stop();
    barLabel = undefined;
  }
}

/**
 * Turns: each turn hands every worker one slice of `sliceMs` of `phase`, one worker at a time
 * (the others wait), the order rotated per turn. A worker is skipped once `stop` says so for it.
 */
async function turns(workers: SlicedWorker[], phase: NonNullable<SliceMsg['phase']>, n: number, sliceMs: number,
  stop: (s: SystemName, a: SliceAnswer) => boolean = () => false): Promise<void> {
  const out = new Set<SystemName>();
  for (let t = 0; t < n && out.size < workers.length; t++) {
    for (let i = 0; i < workers.length; i++) {
      const w = workers[(i + t) % workers.length];
      if (out.has(w.s)) continue;
      showProgress({ label: `${phase}: turns (${workers.map((x) => x.s).join(', ')})`, done: t, total: n });
      const a = await w.send({ phase, slice: sliceMs });
      if (!a.slice || stop(w.s, a)) out.add(w.s);
    }
  }
  stopBar();
}

/** Ends the sliced workers; a system whose worker failed gets its error as the cell. */
async function endSliced(workers: SlicedWorker[], what: string): Promise<Partial<Record<SystemName, JobResult>>> {
  const out: Partial<Record<SystemName, JobResult>> = {};
  for (const w of workers) {
    w.send({ end: true }).catch(() => {});
    out[w.s] = await w.done;
    if (out[w.s]!.error) process.stderr.write(`bench-engine: ${what} (${w.s}): ${out[w.s]!.error}\n`);
  }
  return out;
}

/**
 * Puts from one writer per system, by turns: every system's store is opened in its own worker
 * process (job 'put-slices'), then each turn gives each system one slice of `sliceMs` (order
 * rotated per turn).
 */
async function putSlices(systems: SystemName[], mode: 'always', n: number, sliceMs: number):
  Promise<Partial<Record<SystemName, JobResult>>> {
  const workers = await startSliced(systems, (s) => ({ job: 'put-slices', system: s, mode }));
  await turns(workers, 'put', n, sliceMs);
  return endSliced(workers, `put ${mode}`);
}

/**
 * Gets and list by turns (job 'read-slices'): each system loads its keys once in its own worker,
 * side by side; then hot gets, list and (after every store was closed, reopened and the page
 * cache dropped) cold gets, each phase by turns like put always. Cold turns go on until every
 * system did its `coldGets` gets or spent `capMs` in cold slices.
 */
async function readSlices(systems: SystemName[], r: (typeof FULL)['reads'], get: boolean, list: boolean):
  Promise<Partial<Record<SystemName, JobResult>>> {
  const workers = await startSliced(systems, (s) => ({ job: 'read-slices', system: s, keys: r.keys, coldGets: r.coldGets, scanLen: r.scanLen, get, list }));
  if (get) await turns(workers, 'hot', r.hotTurns, r.sliceMs);
  if (list) await turns(workers, 'list', r.listTurns, r.sliceMs);
  if (get) {
    // cold as before: closed, reopened, then the page cache dropped (a drop is global: the last
    // one, after every store reopened, leaves all of them cold)
    for (const w of workers) await w.send({ prepare: 'cold' });
    const spent = new Map<SystemName, number>();
    // 20,000 cold gets take ~0.3 s at low load: short slices, so they too are interleaved.
    // Each cold slice but a system's last lasts >= coldSliceMs: capMs / coldSliceMs turns suffice
    await turns(workers, 'cold', Math.ceil(r.capMs / r.coldSliceMs), r.coldSliceMs, (s, a) => {
      spent.set(s, (spent.get(s) ?? 0) + (a.slice?.ms ?? 0));
      return (a.slice?.left ?? 0) <= 0 || spent.get(s)! >= r.capMs;
    });
  }
  return endSliced(workers, 'reads');
}

/** Runs a job; a failure becomes the cell text instead of ending the whole run. */
async function tryJob(job: Job): Promise<JobResult> {
  try {
    return await runJob(job);
  } catch (err) {
    const msg = (err as Error).message;
    process.stderr.write(`bench-engine: ${msg}\n`);
    return { error: msg.split('\n')[0] };
  }
}

// ---- the table ----

type Cell = number | string | undefined;
interface Row {
  metric: string;
  unit: string;
  glidekv: Cell;
  lmdb: Cell;
  level: Cell;
}

function fmt(c: Cell): string {
  if (c === undefined) return '-';
  if (typeof c === 'string') return c;
  if (Math.abs(c) >= 100) return Math.round(c).toLocaleString('en-US');
  return c.toFixed(c >= 10 ? 1 : 2);
}

function ratio(a: Cell, b: Cell): string {
  if (typeof a !== 'number' || typeof b !== 'number' || b <= 0) return '-';
  const r = a / b;
  return r > 0 && r < 0.01 ? `1/${Math.round(1 / r).toLocaleString('en-US')}x` : `${r.toFixed(2)}x`;
}

function printTable(title: string, head: string[], rows: string[][]): void {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]): string => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  process.stdout.write(`\n${title}\n${line(head)}\n${w.map((n) => '-'.repeat(n)).join('  ')}\n${rows.map(line).join('\n')}\n`);
}

function cell(r: JobResult | undefined, field: string): Cell {
  if (!r) return undefined;
  return r[field] ?? r.error ?? r.separation;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const cfg = args.quick ? QUICK : FULL;
  const engineBuilt = existsSync(join(ROOT, 'src/index.ts'));
  const systems = args.systems.filter((s) => s !== 'glidekv' || engineBuilt);
  if (!engineBuilt && args.systems.includes('glidekv')) process.stderr.write('bench-engine: src/index.ts not found: glidekv n/a (engine not built)\n');
  const na = (s: SystemName): string | undefined => (s === 'glidekv' && !engineBuilt ? 'n/a (engine not built)' : undefined);
  const started = Date.now();
  // the machine may be shared: the 1-minute load average at the start and the end goes with the figures
  const loadStart = loadavg()[0];
  const raw: Record<string, JobResult> = {};
  const rows: Row[] = [];
  const perSystem = async (metric: string, unit: string, mk: (s: SystemName) => Promise<Cell>): Promise<void> => {
    const row: Row = { metric, unit, glidekv: undefined, lmdb: undefined, level: undefined };
    for (const s of ALL_SYSTEMS) row[s] = systems.includes(s) ? await mk(s) : na(s);
    rows.push(row);
  };

  if (args.only.has('put')) {
    const p = cfg.put;
    for (const [mode, count, conc, cap] of [
      ['none', p.none, 1, p.capMs],
      ['batch', p.batch, 64, p.capMs],
    ] as const) {
      await perSystem(`put 100 B, sync ${mode} (${conc} writer${conc > 1 ? 's' : ''})`, 'ops/s', async (s) => {
        const r = await tryJob({ job: 'put', system: s, mode, count, concurrency: conc, capMs: cap });
        raw[`put-${mode}-${s}`] = r;
        return cell(r, 'opsPerSec');
      });
    }
    // sync always: one fsync per put, so the figure is the disk's latency at that moment. On a shared
    // machine that moves 2-6x within seconds; the systems' stores stay open in their own processes
    // and take turns in slices (alwaysCapMs / alwaysRounds each, the order rotated per round), so
    // each sees the same spells of load
    const always = await putSlices(systems, 'always', p.alwaysRounds, p.alwaysCapMs / p.alwaysRounds);
    for (const s of systems) raw[`put-always-${s}`] = always[s] ?? { error: 'no result' };
    await perSystem(`put 100 B, sync always (1 writer, ${p.alwaysRounds} turns)`, 'ops/s', async (s) => cell(always[s], 'opsPerSec'));
  }

  if (args.only.has('get') || args.only.has('list')) {
    const reads = await readSlices(systems, cfg.reads, args.only.has('get'), args.only.has('list'));
    for (const s of systems) raw[`reads-${s}`] = reads[s] ?? { error: 'no result' };
    const from = async (s: SystemName, f: string): Promise<Cell> => cell(reads[s], f);
    if (args.only.has('get')) {
      await perSystem(`get 100 B, hot (page cache, ${cfg.reads.hotTurns} turns)`, 'ops/s', (s) => from(s, 'getHotOpsPerSec'));
      await perSystem('get 100 B, cold (caches dropped, by turns)', 'ops/s', (s) => from(s, 'getColdOpsPerSec'));
    }
    if (args.only.has('list')) await perSystem(`list (scans of ${cfg.reads.scanLen.toLocaleString('en-US')} keys, ${cfg.reads.listTurns} turns)`, 'keys/s', (s) => from(s, 'listKeysPerSec'));
  }

  if (args.only.has('reclaim')) {
    await perSystem(`reclaim (${cfg.reclaimKeys.toLocaleString('en-US')} keys, 50% dead)`, 'MB/s', async (s) => {
      if (s === 'lmdb') return 'n/a (no compaction)';
      const r = await tryJob({ job: 'reclaim', system: s, keys: cfg.reclaimKeys });
      raw[`reclaim-${s}`] = r;
      return cell(r, 'mbPerSec');
    });
  }

  if (args.only.has('keydir')) {
    let kd: JobResult | undefined;
    if (systems.includes('glidekv')) {
      const dir = await mkdtemp(join(tmpdir(), 'glidekv-bench-keydir-'));
      try {
        const load = await tryJob({ job: 'keydir-load', dir, keys: cfg.keydirKeys });
        kd = load.error ? load : await tryJob({ job: 'keydir-measure', dir, keys: cfg.keydirKeys });
        raw.keydir = kd;
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
    const n = cfg.keydirKeys.toLocaleString('en-US');
    const only = (f: string) => async (s: SystemName): Promise<Cell> => (s === 'glidekv' ? cell(kd, f) : 'n/a (no in-memory index)');
    await perSystem(`keydir, ${n} keys of 16 B: heap+external`, 'B/key', only('jsBytesPerKey')); // all per-key figures include the 16 key bytes
    await perSystem(`keydir, ${n} keys of 16 B: RSS`, 'B/key', only('rssBytesPerKey'));
    await perSystem(`keydir, ${n} keys of 16 B: engine's count`, 'B/key', only('reportedBytesPerKey'));
    // the issue's budget (at most 40 at 1M keys) is per key beyond the key's own bytes
    const beyond = (c: Cell): Cell => (typeof c === 'number' ? c - 16 : c);
    await perSystem(`keydir, ${n} keys: heap+external beyond the 16 key bytes`, 'B/key', async (s) => (s === 'glidekv' ? beyond(cell(kd, 'jsBytesPerKey')) : 'n/a (no in-memory index)'));
  }

  const largeRows: string[][] = [];
  if (args.only.has('large') && systems.includes('glidekv')) {
    for (const { size, count } of cfg.large) {
      const name = size >= 1 << 20 ? `${size / (1 << 20)} MiB` : `${size / 1024} KiB`;
      const sep = await tryJob({ job: 'large', size, count, separated: true });
      const inl = await tryJob({ job: 'large', size, count, separated: false });
      raw[`large-${name}-separated`] = sep;
      raw[`large-${name}-inline`] = inl;
      for (const [metric, f] of [
        ['put MB/s', 'putMBps'],
        ['put ops/s', 'putOpsPerSec'],
        ['get MB/s', 'getMBps'],
        ['reclaim: bytes relocated', 'reclaimRelocatedBytes'],
        ['reclaim: ms', 'reclaimMs'],
      ] as const) {
        const a = cell(sep, f);
        const b = cell(inl, f);
        largeRows.push([`${name} x ${count}: ${metric}`, fmt(a), fmt(b), ratio(a, b)]);
      }
    }
  }

  const head = ['metric', 'unit', 'glidekv', 'lmdb', 'level', 'glidekv/lmdb', 'glidekv/level'];
  const tableRows = rows.map((r) => [r.metric, r.unit, fmt(r.glidekv), fmt(r.lmdb), fmt(r.level), ratio(r.glidekv, r.lmdb), ratio(r.glidekv, r.level)]);
  const loadEnd = loadavg()[0];
  const host = `${cpus().length} cores, node ${process.version}, load ${loadStart.toFixed(1)} -> ${loadEnd.toFixed(1)}${args.quick ? ', --quick' : ''}`;
  if (tableRows.length) printTable(`glidekv engine vs lmdb and classic-level (${host})`, head, tableRows);
  if (largeRows.length) {
    printTable('glidekv large values: separated (default valueThreshold) vs inline (valueThreshold 0)', ['metric', 'separated', 'inline', 'sep/inline'], largeRows);
  }
  const secs = (Date.now() - started) / 1000;
  process.stdout.write(`\n(${secs.toFixed(0)} s)\n`);

  await mkdir(dirname(args.json), { recursive: true });
  await writeFile(
    args.json,
    JSON.stringify(
      { date: new Date(started).toISOString(), quick: args.quick, host: { cpus: cpus().length, node: process.version, loadavg1: { start: loadStart, end: loadEnd } }, config: cfg, seconds: secs, rows, large: largeRows, raw },
      null,
      2,
    ) + '\n',
  );
  process.stderr.write(`results: ${args.json}\n`);
}

await main();
