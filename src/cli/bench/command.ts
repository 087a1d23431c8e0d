/**
 * Composes one re-upload bench run: the object store (the user's URL; the
 * product never starts a MinIO: `npm run bench:reupload`,
 * scripts/bench-reupload.ts, starts one and passes it here), the stack
 * driver, the progress bars, and the outputs (table, JSON, SVG). Everything
 * it starts it stops, also on failure.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { renderHeatmap } from './heatmap-svg.js';
import { minioPutCount } from './minio-metrics.js';
import { formatTable, heatmapInput } from './report.js';
import { runReupload, type ReuploadResult, type RunContext } from './reupload.js';
import { CliStackDriver } from './stack-cli.js';

export interface BenchCommandOptions {
  /** The object store: s3://BUCKET/PREFIX or file:///ABS/DIR; each mode gets PREFIX/<mode>. */
  store: string;
  /**
   * A MinIO endpoint (http://HOST:PORT) whose Prometheus metrics count the
   * PUTs on the server side too; without it only glidefs counts.
   */
  minioMetrics?: string;
  /** Extra environment for the stacks (the S3 endpoint and credentials; default: this process's). */
  env?: Record<string, string>;
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
  const driver = new CliStackDriver({ log: opts.log });
  // Ctrl-C (or SIGTERM) mid-run: take down what the run brought up, then leave.
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\nglidekv: ${sig}: taking down the bench's stacks\n`);
    void (async () => {
      await driver.downAll();
      if (ownState) rmSync(stateDir, { recursive: true, force: true });
      process.exit(130);
    })();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const storeUrl = opts.store;
    const metrics = opts.minioMetrics;
    opts.log?.(`store ${storeUrl}${metrics ? `, PUTs also counted by the MinIO at ${metrics}` : ''}`);
    const ctx: RunContext = {
      driver,
      storeFor: (mode) => (mode === '*' ? storeUrl : storeForMode(storeUrl, mode)),
      env: opts.env ?? {},
      stateDir,
      serverPuts: metrics ? () => minioPutCount(metrics) : undefined,
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
    if (ownState) rmSync(stateDir, { recursive: true, force: true });
  }
}

/** The JSON file: the issue's shape, with the per-phase details (per-offset counts kept for the heatmap). */
export function toJson(r: ReuploadResult): unknown {
  const mode = (m: ReuploadResult['separated']) => ({
    uploads: m.uploads,
    uploadedBytes: m.uploadedBytes,
    reuploads: m.reuploads,
    logPuts: m.logPuts,
    logBytes: m.logBytes,
    checkpointUploads: m.checkpointUploads,
    puts: m.puts,
    bytesPut: m.bytesPut,
    amplification: round(m.amplification),
    blockAmplification: round(m.blockAmplification),
    teardown: m.teardown,
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
