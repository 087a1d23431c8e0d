/**
 * bench:scale: options, the run (each measurement in its own module), the
 * checks against issue 11's targets, the table and the JSON document.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { BLOCK_SIZE } from '../../../glidefs/index.js';
import { measureCacheBound, type CachePhase } from './cache-bound.js';
import { measureChain, type ChainPhase } from './chain.js';
import { BlockData, fillBlocks, makeEnv, openFs, REPO, settleDisk } from './env.js';
import { measureForks, type ForkPhase } from './forks.js';
import { daemonPossible, measureMemory, type MemoryPhase, type MemoryVia } from './memory.js';
import { fmtMiB, GiB, MiB } from './util.js';

export const PHASES = ['forks', 'cache', 'memory', 'chain'] as const;
export type Phase = (typeof PHASES)[number];

export interface ScaleOptions {
  /** Written blocks at which forks and snapshots are timed; the largest is also the memory phase's volume. */
  blocks: number[];
  repeats: number;
  only: Phase[];
  cli: boolean;
  cacheBytes: number;
  cacheVolumeBytes: number;
  cacheWriteBytes: number;
  /** The "unbounded" run's cache size (null: the build's default). */
  cacheLargeBytes: number | null;
  memoryVia: MemoryVia;
  /** Cache bound of the process in the memory phase (a full read of a large volume must not fill the disk). */
  memoryCacheBytes: number | null;
  chainDepth: number;
  chainBlocks: number;
  chainRounds: number;
  /** Work directory (null: a temp dir, removed at the end unless keep). */
  dir: string | null;
  keep: boolean;
  quick: boolean;
}

export const FULL: ScaleOptions = {
  blocks: [1000, 10_000, 100_000],
  repeats: 9,
  only: [...PHASES],
  cli: true,
  cacheBytes: 64 * MiB,
  cacheVolumeBytes: 4 * GiB,
  cacheWriteBytes: 512 * MiB,
  cacheLargeBytes: 8 * GiB,
  memoryVia: daemonPossible() ? 'daemon' : 'library',
  memoryCacheBytes: 256 * MiB,
  chainDepth: 8,
  chainBlocks: 2048,
  chainRounds: 3,
  dir: null,
  keep: false,
  quick: false,
};

export const QUICK: Partial<ScaleOptions> = {
  blocks: [100, 1000, 5000],
  repeats: 3,
  cacheBytes: 8 * MiB,
  cacheVolumeBytes: 512 * MiB,
  cacheWriteBytes: 64 * MiB,
  cacheLargeBytes: 1 * GiB,
  chainBlocks: 256,
  chainRounds: 2,
  quick: true,
};

export interface Check {
  name: string;
  value: string;
  target: string;
  /** null: could not be judged (the build does not report it, or the phase did not run). */
  pass: boolean | null;
}

export interface ScaleDoc {
  bench: 'scale';
  date: string;
  commit: string | null;
  /** Tracked files differed from the commit when the bench ran (a shared working tree). */
  dirty: boolean | null;
  machine: { cpus: number; loadavg: number[] };
  store: string;
  options: ScaleOptions;
  forks: ForkPhase | null;
  cache: CachePhase | null;
  memory: MemoryPhase | null;
  chain: ChainPhase | null;
  checks: Check[];
  wallSeconds: number;
}

function git(args: string[]): string | null {
  try {
    return execFileSync('git', args, { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

/** Runs the phases in `opts.only` on a fresh file store; returns the document (not yet written). */
export async function runScale(opts: ScaleOptions): Promise<ScaleDoc> {
  const t0 = performance.now();
  const root = opts.dir ?? mkdtempSync(join(tmpdir(), 'glidekv-bench-scale-'));
  mkdirSync(root, { recursive: true });
  const env = makeEnv(root);
  const data = new BlockData(randomBytes(4).readUInt32LE(0), randomBytes(BLOCK_SIZE));
  const has = (p: Phase) => opts.only.includes(p);
  const doc: ScaleDoc = {
    bench: 'scale',
    date: new Date().toISOString(),
    commit: process.env.BENCH_COMMIT || git(['rev-parse', 'HEAD']),
    dirty: (() => {
      if (process.env.BENCH_COMMIT) return false; // a clean export of that commit (git archive)
      const s = git(['status', '--porcelain', '--untracked-files=no']);
      return s === null ? null : s.length > 0;
    })(),
    machine: { cpus: cpus().length, loadavg: loadavg().map((x) => Math.round(x * 100) / 100) },
    store: `file store (DirStore, ${root}/objects): fsync on in measured phases, off for bulk setup writes`,
    options: opts,
    forks: null,
    cache: null,
    memory: null,
    chain: null,
    checks: [],
    wallSeconds: 0,
  };
  try {
    const maxBlocks = Math.max(...opts.blocks);
    if (has('forks')) doc.forks = await measureForks(env, data, { sizes: opts.blocks, repeats: opts.repeats, cli: opts.cli, volume: 'src' });
    if (has('cache')) {
      settleDisk();
      doc.cache = await measureCacheBound(env, data, { boundBytes: opts.cacheBytes, largeBytes: opts.cacheLargeBytes, volumeBytes: opts.cacheVolumeBytes, writeBytes: opts.cacheWriteBytes, cli: opts.cli });
    }
    if (has('memory')) {
      if (!doc.forks) {
        const g = await openFs(env, env.freshCacheDir('setup'));
        try {
          await g.fs.createVolume('src', maxBlocks * BLOCK_SIZE);
        } finally {
          await g.close();
        }
        await fillBlocks(env, 'src', 0, maxBlocks, data, { label: `memory: write src (${maxBlocks} blocks)` });
      }
      settleDisk();
      doc.memory = await measureMemory(env, data, { via: opts.memoryVia, volume: 'src', mapped: maxBlocks, sizeBytes: maxBlocks * BLOCK_SIZE, cacheBytes: opts.memoryCacheBytes });
    }
    if (has('chain')) settleDisk();
    if (has('chain')) doc.chain = await measureChain(env, data, { depth: opts.chainDepth, blocks: opts.chainBlocks, rounds: opts.chainRounds });
  } finally {
    if (opts.dir === null && !opts.keep) rmSync(root, { recursive: true, force: true });
  }
  doc.checks = checks(doc);
  doc.wallSeconds = Math.round((performance.now() - t0) / 100) / 10;
  return doc;
}

/** issue 11's targets, judged from the document. */
export function checks(doc: ScaleDoc): Check[] {
  const out: Check[] = [];
  const f = doc.forks;
  if (f && f.rows.length > 0) {
    const lo = Math.min(...f.sizes);
    const hi = Math.max(...f.sizes);
    for (const kind of ['fork', 'snapshot'] as const) {
      const a = f.rows.find((r) => r.kind === kind && r.blocks === lo)!;
      const b = f.rows.find((r) => r.kind === kind && r.blocks === hi)!;
      const ratio = b.msMedian / a.msMedian;
      out.push({
        name: `${kind} time at ${hi} vs ${lo} blocks (medians; fastest in brackets)`,
        value: `${ratio.toFixed(2)}× (${b.msMedian.toFixed(1)} / ${a.msMedian.toFixed(1)} ms; ${b.msMin.toFixed(1)} / ${a.msMin.toFixed(1)})`,
        target: '≤ 2×',
        pass: ratio <= 2,
      });
      const tx = b.catalogTxMsMedian;
      out.push({ name: `${kind} catalog transaction at ${hi} blocks`, value: tx === null ? 'not reported' : `${tx.toFixed(2)} ms`, target: '< 10 ms', pass: tx === null ? null : tx < 10 });
      const rows = f.rows.filter((r) => r.kind === kind);
      const copied = rows.map((r) => r.rowsCopied);
      out.push({
        name: `${kind} rowsCopied (reported), every size`,
        value: copied.some((c) => c === null) ? 'not reported' : copied.join(', '),
        target: '0',
        pass: copied.some((c) => c === null) ? null : copied.every((c) => c === 0),
      });
      out.push({
        name: `${kind} catalog rows added (measured), ${rows.map((r) => r.blocks).join('/')} blocks`,
        value: rows.map((r) => r.rowsAdded).join(', '),
        target: 'same at every size',
        pass: rows.every((r) => r.rowsAdded === rows[0].rowsAdded),
      });
      const cli = rows.map((r) => r.cli);
      if (cli.every((c) => c !== null)) {
        const ok = cli.every((c) => c!.durationMs !== null && c!.rowsCopied !== null);
        out.push({ name: `glidekv volume ${kind} --json reports durationMs and rowsCopied`, value: ok ? 'yes' : 'no', target: 'yes', pass: ok });
      }
    }
  }
  const c = doc.cache;
  if (c) {
    // runs[1] is the large cache: its du is not judged
    for (const b of c.runs.filter((_, i) => i !== 1)) {
      out.push({
        name: `cache dir on disk, bound ${fmtMiB(b.cacheBytes, 0)} MiB, ${b.via === 'cli' ? 'glidekv --cache-size' : 'library'} (max of ${b.du.samples} samples)`,
        value: `${fmtMiB(b.du.maxBytes)} MiB${b.boundApplied ? '' : ' (bound not taken by this build)'}`,
        target: `≤ ${fmtMiB(b.allowanceBytes, 2)} MiB`,
        pass: b.held,
      });
    }
    const lib = c.runs.filter((r) => r.via === 'library');
    out.push({ name: 'cache runs read back what was written (library runs)', value: lib.map((r) => (r.readVerified ? 'yes' : 'NO')).join(', '), target: 'yes', pass: lib.every((r) => r.readVerified) });
  }
  const ch = doc.chain;
  if (ch && ch.rows.length === 2) {
    out.push({ name: `cold block read through ${ch.depth} forks vs 1 (median per block)`, value: `${ch.ratio.toFixed(2)}×`, target: '≤ 1.20×', pass: ch.ratio <= 1.2 });
    out.push({ name: 'chain reads return what was written', value: ch.rows.map((r) => (r.readVerified ? 'yes' : 'NO')).join(', '), target: 'yes', pass: ch.rows.every((r) => r.readVerified) });
  }
  const m = doc.memory;
  if (m) {
    out.push({ name: `memory: full read through the ${m.via} returns what was written`, value: m.volume.readVerified ? 'yes' : 'NO', target: 'yes', pass: m.volume.readVerified });
  }
  return out;
}

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' | ') + ' |';
  return [line(head), '|' + w.map((n, i) => (i === 0 ? '-'.repeat(n + 2) : '-'.repeat(n + 1) + ':')).join('|') + '|', ...rows.map(line)].join('\n');
}

const n1 = (v: number | null | undefined, d = 1) => (v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(d));
const int = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? '-' : Math.round(v).toLocaleString('en-US'));

/** The terminal report (markdown tables). */
export function formatReport(doc: ScaleDoc): string {
  const parts: string[] = [];
  parts.push(`bench:scale — ${doc.date}, commit ${doc.commit?.slice(0, 7) ?? '?'}${doc.dirty ? ' (+ uncommitted changes in the tree)' : ''}, ${doc.machine.cpus} cpus, load ${doc.machine.loadavg.join(' ')}; ${doc.store}`);
  if (doc.forks) {
    parts.push(`\nForks and snapshots (median of ${doc.forks.repeats} through the library; CLI: one \`glidekv volume fork|snapshot --json\`)`);
    parts.push(
      table(
        ['blocks', 'kind', 'ms median', 'min', 'max', 'reported ms', 'catalog tx ms', 'rowsCopied', 'rows added', 'catalog used +B', 'catalog file +B', 'CLI durationMs', 'CLI rowsCopied', 'CLI wall ms'],
        doc.forks.rows.map((r) => [
          int(r.blocks),
          r.kind,
          n1(r.msMedian),
          n1(r.msMin),
          n1(r.msMax),
          n1(r.durationMsMedian),
          n1(r.catalogTxMsMedian, 2),
          int(r.rowsCopied),
          int(r.rowsAdded),
          int(r.catalogUsedGrowthBytes),
          int(r.catalogFileGrowthBytes),
          n1(r.cli?.durationMs),
          int(r.cli?.rowsCopied),
          int(r.cli?.wallMs),
        ]),
      ),
    );
    parts.push('reported: the build\'s durationMs and catalog transaction ms; rows added: over every catalog table, measured; catalog used/file +B: bytes in use (pages - free pages) and file size after a WAL checkpoint, added per fork (medians)');
  }
  if (doc.cache) {
    const c = doc.cache;
    parts.push(`\nCache bound (${fmtMiB(c.volumeBytes, 0)} MiB volume, ${fmtMiB(c.writeBytes, 0)} MiB written, flushed, read back; du of the cache dir every ~100 ms)`);
    parts.push(
      table(
        ['cache', 'bound taken', 'write MB/s', 'write+flush MB/s', 'read MB/s', 'max du MiB', 'allowance MiB', 'samples', 'held'],
        c.runs.map((r) => [r.label, r.cacheBytes === null ? '-' : r.boundApplied ? 'yes' : 'no', n1(r.writeMBps), n1(r.writeFlushMBps), n1(r.readMBps), fmtMiB(r.du.maxBytes), fmtMiB(r.allowanceBytes, 2), String(r.du.samples), r.held === null ? '-' : r.held ? 'yes' : 'NO']),
      ),
    );
  }
  if (doc.memory) {
    const m = doc.memory;
    const bound = m.cacheBytes === null ? 'the default' : `${fmtMiB(m.cacheBytes, 0)} MiB${m.cacheBoundPassed ? '' : ' asked, not passed (this CLI has no --cache-size)'}`;
    parts.push(`\nMemory: ${m.process}, cache bound ${bound}`);
    parts.push(
      table(
        ['volume', 'mapped blocks', 'RSS open MiB', 'RSS after full read MiB', 'peak RSS MiB', 'read MB/s'],
        [m.reference, m.volume].map((r) => [r.volume, int(r.mappedBlocks), fmtMiB(r.rssOpenBytes), fmtMiB(r.rssAfterReadBytes), fmtMiB(r.peakRssBytes), n1(r.readMBps)]),
      ),
    );
    parts.push(`RSS at open beyond the empty volume: ${n1(m.bytesPerBlockOpen)} bytes per mapped block`);
  }
  if (doc.chain) {
    const ch = doc.chain;
    parts.push(`\nCold reads through a chain of forks (${ch.blocks} blocks of the base, one 128 KiB read each, ${ch.rounds} rounds, fresh cache dir per pass)`);
    parts.push(
      table(
        ['depth', 'per-block ms median', 'p90', 'mean', 'open ms', 'GETs per block'],
        ch.rows.map((r) => [String(r.depth), n1(r.perBlockMsMedian, 3), n1(r.perBlockMsP90, 3), n1(r.perBlockMsMean, 3), n1(r.openMsMedian), n1(r.getsPerBlock, 2)]),
      ),
    );
  }
  if (doc.checks.length > 0) {
    parts.push('\nChecks (issue 11)');
    parts.push(table(['check', 'value', 'target', 'pass'], doc.checks.map((c) => [c.name, c.value, c.target, c.pass === null ? '-' : c.pass ? 'yes' : 'NO'])));
  }
  parts.push(`\nwall ${doc.wallSeconds} s`);
  return parts.join('\n');
}

/** bench-results/scale-<date>.json (or `out`); returns the path. */
export function writeDoc(doc: ScaleDoc, out?: string): string {
  const path = out ?? join(REPO, 'bench-results', `scale-${doc.date.slice(0, 16).replace(/:/g, '')}Z.json`);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(doc, null, 2) + '\n');
  return path;
}
