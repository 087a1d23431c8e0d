/**
 * bench:scale, forks and snapshots: their time at growing numbers of written
 * blocks in the source, what they add to the catalog (rows, bytes), and what
 * the build reports about itself (durationMs, rowsCopied, the catalog
 * transaction's time) through the library and through `glidekv volume fork
 * --json`.
 *
 * The catalog is looked at through a second SQLite connection: before and
 * after each fork it checkpoints the WAL into the main file (TRUNCATE) and
 * counts rows over every table and the pages in use, so "rows added" and
 * "catalog growth" are measured, not taken from the product.
 */
import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { BLOCK_SIZE } from '../../../glidefs/index.js';
import { fillBlocks, openFs, runGlidekv, type BlockData, type ScaleEnv } from './env.js';
import { median } from './util.js';

export type ForkKind = 'fork' | 'snapshot';

/** What the build says about one fork (null where it says nothing). */
export interface ForkReport {
  durationMs: number | null;
  rowsCopied: number | null;
  catalogTxMs: number | null;
}

export interface ForkSample {
  ms: number;
  reported: ForkReport;
  rowsAdded: number;
  catalogFileGrowthBytes: number;
  catalogUsedGrowthBytes: number;
}

export interface ForkRow {
  blocks: number;
  kind: ForkKind;
  samples: number;
  /** Wall time of GlideFs.fork/snapshot in this process. */
  msMedian: number;
  msMin: number;
  msMax: number;
  /** The build's own figures (medians; rowsCopied: the largest seen). */
  durationMsMedian: number | null;
  catalogTxMsMedian: number | null;
  rowsCopied: number | null;
  /** Measured: rows added over every catalog table (median), file and used-page growth (bytes, median). */
  rowsAdded: number;
  catalogFileGrowthBytes: number;
  catalogUsedGrowthBytes: number;
  /** One `glidekv volume fork|snapshot --json` at this size: what it printed, and the command's wall time (process start included). */
  cli: (ForkReport & { wallMs: number }) | null;
  /** Every sample, in the order taken: wall ms and the build's catalog transaction ms. */
  msSamples: number[];
  catalogTxMsSamples: Array<number | null>;
}

export interface ForkPhase {
  sizes: number[];
  repeats: number;
  /** Time to write and flush the source up to the largest size (setup, not a result). */
  fillMs: number;
  rows: ForkRow[];
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** Reads the build's own fork figures from a fork result (library or CLI JSON), under the names they may carry. */
export function forkReport(r: unknown): ForkReport {
  const o = (r ?? {}) as Record<string, unknown>;
  const pick = (...names: string[]) => {
    for (const n of names) {
      const v = num(o[n]);
      if (v !== null) return v;
    }
    return null;
  };
  return {
    durationMs: pick('durationMs'),
    rowsCopied: pick('rowsCopied'),
    catalogTxMs: pick('catalogTxMs', 'catalogMs', 'txMs', 'transactionMs'),
  };
}

/** A second connection to the catalog: rows over all tables, and bytes, with the WAL checkpointed into the main file. */
export class CatalogProbe {
  private readonly db: Database.Database;
  constructor(private readonly path: string) {
    this.db = new Database(path);
    this.db.pragma('busy_timeout = 15000');
  }

  look(): { rows: number; fileBytes: number; usedBytes: number } {
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    const tables = this.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").pluck().all() as string[];
    let rows = 0;
    for (const t of tables) rows += this.db.prepare(`SELECT count(*) FROM "${t.replace(/"/g, '""')}"`).pluck().get() as number;
    const pageSize = this.db.pragma('page_size', { simple: true }) as number;
    const pages = this.db.pragma('page_count', { simple: true }) as number;
    const free = this.db.pragma('freelist_count', { simple: true }) as number;
    return { rows, fileBytes: statSync(this.path).size, usedBytes: (pages - free) * pageSize };
  }

  close(): void {
    this.db.close();
  }
}

/**
 * Grows one source volume (`src`, as large as the largest size) to each size
 * of written blocks in turn; at each, `repeats` forks and `repeats` snapshots
 * (interleaved) through the library, then one of each through the CLI.
 * The source is flushed, checkpointed and closed before the forks.
 */
export async function measureForks(env: ScaleEnv, data: BlockData, opts: { sizes: number[]; repeats: number; cli: boolean; volume?: string }): Promise<ForkPhase> {
  const sizes = [...new Set(opts.sizes)].sort((a, b) => a - b);
  const src = opts.volume ?? 'src';
  const max = sizes[sizes.length - 1];
  {
    const o = await openFs(env, env.freshCacheDir('forks'));
    try {
      await o.fs.createVolume(src, max * BLOCK_SIZE);
      await o.fs.createVolume(`${src}-warm`, BLOCK_SIZE);
    } finally {
      await o.close();
    }
  }
  const rows: ForkRow[] = [];
  let written = 0;
  let fillMs = 0;
  for (const n of sizes) {
    fillMs += (await fillBlocks(env, src, written, n, data, { label: `forks: write ${src} up to ${n} blocks` })).ms;
    written = n;
    const samples: Record<ForkKind, ForkSample[]> = { fork: [], snapshot: [] };
    const o = await openFs(env, env.freshCacheDir('forks'));
    const probe = new CatalogProbe(env.catalogPath);
    try {
      // not part of a fork's time: the store owner check (once per GlideFs), and the first run of
      // the fork code and its SQL statements (3 untimed forks and snapshots of a tiny volume)
      await o.fs.checkStoreOwner();
      for (let w = 0; w < 3; w++) {
        await o.fs.fork(`${src}-warm`, `${src}-warm-fork-${n}-${w}`);
        await o.fs.snapshot(`${src}-warm`, `${src}-warm-snapshot-${n}-${w}`);
      }
      for (let k = 0; k < opts.repeats; k++) {
        for (const kind of ['fork', 'snapshot'] as const) {
          const before = probe.look();
          const t0 = performance.now();
          const r = kind === 'fork' ? await o.fs.fork(src, `${src}-${kind}-${n}-${k}`) : await o.fs.snapshot(src, `${src}-${kind}-${n}-${k}`);
          const ms = performance.now() - t0;
          const after = probe.look();
          samples[kind].push({
            ms,
            reported: forkReport(r),
            rowsAdded: after.rows - before.rows,
            catalogFileGrowthBytes: after.fileBytes - before.fileBytes,
            catalogUsedGrowthBytes: after.usedBytes - before.usedBytes,
          });
        }
      }
    } finally {
      probe.close();
      await o.close();
    }
    for (const kind of ['fork', 'snapshot'] as const) {
      let cli: ForkRow['cli'] = null;
      if (opts.cli) {
        const { stdout, wallMs } = await runGlidekv(env, env.freshCacheDir('forks-cli'), ['volume', kind, src, `${src}-${kind}-${n}-cli`, '--json']);
        cli = { ...forkReport(JSON.parse(stdout)), wallMs };
      }
      rows.push(forkRow(n, kind, samples[kind], cli));
    }
    process.stderr.write(`forks: ${n} blocks: fork ${rows[rows.length - 2].msMedian.toFixed(1)} ms, snapshot ${rows[rows.length - 1].msMedian.toFixed(1)} ms (median of ${opts.repeats})\n`);
  }
  return { sizes, repeats: opts.repeats, fillMs, rows };
}

export function forkRow(blocks: number, kind: ForkKind, s: ForkSample[], cli: ForkRow['cli']): ForkRow {
  const ms = s.map((x) => x.ms);
  const nn = (xs: Array<number | null>) => xs.filter((x): x is number => x !== null);
  const dur = nn(s.map((x) => x.reported.durationMs));
  const tx = nn(s.map((x) => x.reported.catalogTxMs));
  const copied = nn(s.map((x) => x.reported.rowsCopied));
  return {
    blocks,
    kind,
    samples: s.length,
    msMedian: median(ms),
    msMin: Math.min(...ms),
    msMax: Math.max(...ms),
    durationMsMedian: dur.length ? median(dur) : null,
    catalogTxMsMedian: tx.length ? median(tx) : null,
    rowsCopied: copied.length ? Math.max(...copied) : null,
    rowsAdded: median(s.map((x) => x.rowsAdded)),
    catalogFileGrowthBytes: median(s.map((x) => x.catalogFileGrowthBytes)),
    catalogUsedGrowthBytes: median(s.map((x) => x.catalogUsedGrowthBytes)),
    cli,
    msSamples: ms.map((x) => Math.round(x * 1000) / 1000),
    catalogTxMsSamples: s.map((x) => (x.reported.catalogTxMs === null ? null : Math.round(x.reported.catalogTxMs * 1000) / 1000)),
  };
}
