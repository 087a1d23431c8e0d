/**
 * Composes one re-upload bench run: the object store (a MinIO started for
 * the run, or the user's URL), the stack driver, the progress bars, and the
 * outputs (table, JSON, SVG). Everything it starts it stops, also on failure.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { renderHeatmap } from './heatmap-svg.js';
import { formatTable, heatmapInput } from './report.js';
import { runReupload, type ReuploadResult, type RunContext } from './reupload.js';
import { CliStackDriver } from './stack-cli.js';

export interface BenchCommandOptions {
  store?: string;
  values: number;
  valueSize: number;
  small: number;
  rounds: number;
  volumeSize: number;
  /** Device fsync mode of the stacks (`glidekv up --fsync`). */
  fsync?: 'upload' | 'local';
  stateDir?: string;
  progress: boolean;
  log?: (line: string) => void;
}

export interface BenchCommandResult {
  result: ReuploadResult;
  json: unknown;
  table: string;
  svg: string;
  /** Failed checks (PUT mismatch, parent changed): printed, exit 1. */
  problems: string[];
}

/** Appends `/<mode>` to a store URL's path so each mode has its own prefix. */
export function storeForMode(url: string, mode: string): string {
  return url.replace(/\/+$/, '') + '/' + mode;
}

function progressBars(enabled: boolean): RunContext['progress'] {
  if (!enabled) return undefined;
  let bar: cliProgress.SingleBar | undefined;
  return {
    start(label, total) {
      bar = new cliProgress.SingleBar(
        { format: `${label.padEnd(20)} [{bar}] {value}/{total} ops`, stream: process.stderr, hideCursor: true, clearOnComplete: true },
        cliProgress.Presets.shades_classic,
      );
      bar.start(total, 0);
    },
    tick() {
      bar?.increment();
    },
    stop() {
      bar?.stop();
      bar = undefined;
    },
  };
}

export async function runBenchCommand(opts: BenchCommandOptions): Promise<BenchCommandResult> {
  const ownState = opts.stateDir === undefined;
  const stateDir = resolve(opts.stateDir ?? mkdtempSync(join(tmpdir(), 'glidekv-bench-')));
  mkdirSync(stateDir, { recursive: true });
  let minio: { stop(): Promise<void>; serverPutCount(): Promise<number> } | undefined;
  const driver = new CliStackDriver({ log: opts.log });
  // Ctrl-C (or SIGTERM) mid-run: take down what the run brought up, then leave.
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\nglidekv: ${sig}: taking down the bench's stacks\n`);
    void (async () => {
      await driver.downAll();
      await minio?.stop().catch(() => {});
      if (ownState) rmSync(stateDir, { recursive: true, force: true });
      process.exit(130);
    })();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    let store = opts.store;
    let env: Record<string, string> = {};
    if (!store) {
      // The pinned MinIO build (scripts/setup.sh); scripts/lib is part of the repository.
      const { startMinio } = await import('../../../scripts/lib/minio.js');
      const m = await startMinio({ bucket: 'glidekv-bench' });
      minio = m;
      env = m.env;
      store = `s3://${m.bucket}/reupload-${Date.now().toString(36)}`;
      opts.log?.(`MinIO on ${m.endpoint}, store ${store}`);
    }
    const storeUrl = store;
    const ctx: RunContext = {
      driver,
      storeFor: (mode) => (mode === '*' ? storeUrl : storeForMode(storeUrl, mode)),
      env,
      stateDir,
      serverPuts: minio ? () => minio!.serverPutCount() : undefined,
      progress: progressBars(opts.progress),
      log: opts.log,
    };
    const result = await runReupload(ctx, {
      values: opts.values,
      valueSize: opts.valueSize,
      small: opts.small,
      smallSize: 100,
      rounds: opts.rounds,
      volumeSize: opts.volumeSize,
      fsync: opts.fsync,
    });
    const problems: string[] = [];
    if (result.puts.agree === false) problems.push(`PUT counts disagree: ${result.puts.note}`);
    if (!result.fork.parentUnchanged) problems.push('the fork changed the parent volume\'s keys');
    return { result, json: toJson(result), table: formatTable(result), svg: renderHeatmap(heatmapInput(result)), problems };
  } finally {
    // Interrupted: the signal handler cleans up and exits; the run's own error is noise.
    if (interrupted) await new Promise(() => {});
    await driver.downAll(); // normally none left; after a failure, whatever is still up
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await minio?.stop();
    if (ownState) rmSync(stateDir, { recursive: true, force: true });
  }
}

/** The JSON file: the shape, with the per-phase details (per-offset counts kept for the heatmap). */
export function toJson(r: ReuploadResult): unknown {
  const mode = (m: ReuploadResult['separated']) => ({
    uploads: m.uploads,
    uploadedBytes: m.uploadedBytes,
    reuploads: m.reuploads,
    amplification: round(m.amplification),
    largeValueUploadFactor: round(m.largeValueUploadFactor),
    userBytes: m.userBytes,
    valueThreshold: m.valueThreshold,
    setup: m.setup,
    write: m.write,
    rounds: m.rounds,
  });
  return {
    params: r.params,
    store: r.store,
    separated: mode(r.separated),
    inline: mode(r.inline),
    fork: r.fork,
    puts: r.puts,
  };
}

function round(x: number): number {
  return Math.round(x * 1000) / 1000;
}
