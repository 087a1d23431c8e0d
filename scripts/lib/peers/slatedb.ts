/**
 * SlateDB rows of the peers benchmark: the `slatedb` Python package (PyPI,
 * pinned below) in a virtual environment under the cache directory
 * ($GLIDEKV_CACHE_HOME/peers, default ~/.cache/glidekv/peers), made on the
 * first run that needs it (never by `npm test`). The workload runs in
 * slatedb_driver.py, one JSON line per command; this side sends the phases,
 * reads MinIO's counters around each and checks every key after it.
 *
 * Durable puts: each put and delete waits for its WAL object to be in the
 * store (`await_durable`), from 1 writer and from 16. Each round ends with a
 * memtable flush and one manual compaction of everything into one sorted
 * run. Defaults otherwise (flush_interval 100 ms, l0_sst_size 64 MiB).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { sumMetric, type MetricSample } from '../../../src/cli/bench/minio-metrics.js';
import type { MinioServer } from '../minio.js';
import { okRow, readMeter, runPhases, type Meter, type PhaseDriver } from './phases.js';
import type { ClientCount, SystemRow } from './results.js';
import { exec, onInterrupt, which } from './sh.js';
import type { Phase, Workload } from './workload.js';

/** The pinned package version (the one the hand measurement used). */
export const SLATEDB_VERSION = '0.17.0';

const here = dirname(fileURLToPath(import.meta.url));
const DRIVER = join(here, 'slatedb_driver.py');

export function peersCacheDir(): string {
  return join(process.env.GLIDEKV_CACHE_HOME ?? join(homedir(), '.cache', 'glidekv'), 'peers');
}

function venvDir(): string {
  return join(peersCacheDir(), `slatedb-${SLATEDB_VERSION}`);
}

/**
 * The venv's python with slatedb installed, making it on first use; or why
 * it cannot be had (one line).
 */
export async function slatedbAvailable(log: (l: string) => void): Promise<{ python: string; version: string } | { reason: string }> {
  const dir = venvDir();
  const python = join(dir, 'bin', 'python');
  const stamp = join(dir, '.installed');
  if (!existsSync(stamp)) {
    const sys = (await which('python3')) ?? (await which('python'));
    if (!sys) return { reason: 'SlateDB rows need Python 3.10+ (python3 not found)' };
    const pyv = (await exec(sys, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])']).catch(() => '')).trim();
    const [maj, min] = pyv.split('.').map(Number);
    if (!(maj === 3 && min >= 10)) return { reason: `SlateDB rows need Python 3.10+ (${sys} is ${pyv || 'unknown'})` };
    log(`installing slatedb ${SLATEDB_VERSION} from PyPI into ${dir} (first run only)`);
    // The stamp is written last: a half-made venv is made again from scratch.
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dirname(dir), { recursive: true });
    try {
      await exec(sys, ['-m', 'venv', dir]);
      await exec(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', `slatedb==${SLATEDB_VERSION}`], {
        timeoutMs: 900_000,
      });
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      return { reason: `could not install slatedb ${SLATEDB_VERSION} with pip: ${(e as Error).message}` };
    }
    writeFileSync(stamp, `slatedb==${SLATEDB_VERSION}\n`);
  }
  try {
    const v = (await exec(python, ['-c', 'import importlib.metadata as m, sys; print(m.version("slatedb"), "%d.%d.%d" % sys.version_info[:3])'])).trim().split(' ');
    return { python, version: `slatedb ${v[0]} (Python ${v[1]})` };
  } catch (e) {
    return { reason: `the slatedb venv at ${dir} does not work (${(e as Error).message}); remove it to reinstall` };
  }
}

/** The Python side, one JSON line per request. */
class Driver {
  private readonly proc: ChildProcess;
  private readonly lines: AsyncIterator<string>;
  private stderr = '';

  constructor(python: string, env: Record<string, string>) {
    this.proc = spawn(python, ['-u', DRIVER], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdin!.on('error', () => {}); // a driver that died is reported by call()
    this.proc.stderr!.on('data', (d) => {
      this.stderr = (this.stderr + String(d)).slice(-8192);
    });
    this.lines = createInterface({ input: this.proc.stdout!, crlfDelay: Infinity })[Symbol.asyncIterator]();
  }

  async call<T = Record<string, unknown>>(req: Record<string, unknown>): Promise<T> {
    this.proc.stdin!.write(JSON.stringify(req) + '\n');
    const next = await this.lines.next();
    if (next.done) throw new Error(`the SlateDB driver exited: ${this.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    const res = JSON.parse(next.value) as { ok: boolean; error?: string } & T;
    if (!res.ok) throw new Error(`SlateDB ${String(req.cmd)}: ${res.error}`);
    return res;
  }

  async kill(): Promise<void> {
    this.proc.kill('SIGKILL');
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    await this.call({ cmd: 'close' }).catch(() => {});
    this.proc.stdin!.end();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 60_000);
    await exited;
    clearTimeout(t);
  }
}

export function slatedbLabel(writers: number): string {
  return `SlateDB, durable puts, ${writers} writer${writers === 1 ? '' : 's'}`;
}

export function slatedbConfig(writers: number): string {
  return (
    `SlateDB defaults (flush_interval 100 ms); put/delete then await_durable, ${writers} concurrent writer${writers === 1 ? '' : 's'}; ` +
    'each round: memtable flush + one manual compaction of all L0 SSTs and sorted runs into one'
  );
}

/** One metric of SlateDB's recorder, as the driver reports it (the shape of a Prometheus sample). */
export type SlatedbMetric = MetricSample;

/**
 * The client's counts, from SlateDB's metrics recorder:
 * `slatedb.object_store.request_count{api=...}` of every component (db,
 * compactor, gc), requests that failed included (MinIO counts those too),
 * plus one PUT per compaction submitted through the Admin handle (which
 * records no metrics). SlateDB counts no bytes per request: uploadedBytes null.
 */
export function clientFromMetrics(metrics: SlatedbMetric[], compactionSubmits: number): ClientCount | null {
  const name = 'slatedb.object_store.request_count';
  if (!metrics.some((m) => m.name === name)) return null;
  const sum = (apis: string[]) => apis.reduce((a, api) => a + sumMetric(metrics, name, { api }), 0);
  return { puts: sum(['put', 'multipart_part']) + compactionSubmits, uploadedBytes: null, gets: sum(['get', 'get_range', 'get_ranges']) };
}

export interface SlatedbRowOptions {
  workload: Workload;
  writers: number;
  python: string;
  minio: MinioServer;
  meter: Meter;
  version: string;
  log: (line: string) => void;
}

export async function runSlatedbRow(o: SlatedbRowOptions): Promise<SystemRow> {
  const label = slatedbLabel(o.writers);
  const env = {
    ...o.minio.env,
    AWS_ENDPOINT: o.minio.endpoint,
    AWS_ALLOW_HTTP: 'true',
    AWS_VIRTUAL_HOSTED_STYLE_REQUEST: 'false',
  };
  const start = await readMeter(o.meter);
  const driver = new Driver(o.python, env);
  let phases;
  let clientNote = '';
  const unregister = onInterrupt(() => driver.kill());
  try {
    await driver.call({ cmd: 'open', url: `s3://${o.meter.bucket}`, path: 'db' });
    const client = async () => {
      const r = await driver.call<{ metrics: SlatedbMetric[]; compactionSubmits: number }>({ cmd: 'metrics' });
      return clientFromMetrics(r.metrics, r.compactionSubmits);
    };
    const hasClient = (await client()) !== null;
    if (!hasClient) clientNote = "SlateDB's metrics name no object-store PUT counter";
    const pd: PhaseDriver = {
      async run(phase: Phase) {
        const ops = phase.ops.map(([k, v]) => [k, v ? v.toString('base64') : null]);
        const r = await driver.call<{ wallMs: number; opsMs: number; flushMs?: number; compactMs?: number; statusReads?: number }>({
          cmd: 'phase',
          writers: o.writers,
          compact: phase.compact,
          ops,
        });
        const detail: Record<string, number> = { opsMs: r.opsMs };
        if (r.flushMs !== undefined) detail.flushMs = r.flushMs;
        if (r.compactMs !== undefined) detail.compactMs = r.compactMs;
        // Admin reads of the compaction's status (each a request MinIO counts; the bench's, not SlateDB's own).
        if (r.statusReads !== undefined) detail.compactionStatusReads = r.statusReads;
        return { wallMs: r.wallMs, detail };
      },
      async verify(phase: Phase) {
        const expect = [...phase.expect].map(([k, v]) => [k, v ? createHash('sha256').update(v).digest('hex') : null]);
        return (await driver.call<{ problems: string[] }>({ cmd: 'verify', expect })).problems;
      },
      ...(hasClient ? { client: async () => (await client())! } : {}),
      close: async () => {
        await driver.call({ cmd: 'close' });
      },
    };
    phases = await runPhases(label, o.workload, pd, o.meter, o.log);
  } finally {
    await driver.stop().catch((e: Error) => o.log(`${label}: stop: ${e.message}`));
    unregister();
  }
  const base = { id: o.writers === 1 ? 'slatedb-1' : 'slatedb-16', label, version: o.version, config: slatedbConfig(o.writers), writers: o.writers, store: `s3://${o.meter.bucket}` } as const;
  const row = okRow(base, phases, 'SlateDB', start, await readMeter(o.meter));
  if (clientNote) row.check.note = `${clientNote}: MinIO only`;
  return row;
}
