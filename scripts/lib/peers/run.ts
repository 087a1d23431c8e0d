/**
 * One peers run: the workload, one MinIO for all rows (each row on a bucket
 * of its own), the rows in a fixed order, a result document after each row.
 * A row whose toolchain is missing is skipped with one line; a row that
 * fails is recorded as failed; the others still run. Everything it starts
 * (MinIO, stacks, mounts, the Python driver) it stops, also on failure.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeBucket, startMinio, type MinioServer } from '../minio.js';
import { glidekvConfig, glidekvLabel, runGlidekvRow, type GlidekvFsync, type GlidekvMode } from './glidekv.js';
import { MinioCounters } from './minio-counters.js';
import { JUICEFS_HAND_ROW, type PeersDoc } from './report.js';
import { notRun, type SystemId, type SystemRow } from './results.js';
import { runS3backerRow, s3backerAvailable, s3backerConfig, s3backerLabel, type S3backerMode } from './s3backer.js';
import { runSlatedbRow, slatedbAvailable, slatedbConfig, slatedbLabel } from './slatedb.js';
import { buildWorkload, FULL, QUICK, type WorkloadParams } from './workload.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '..', '..', '..');

/** Every row, in the order they run (the slowest, SlateDB from 1 writer, last). */
export const SYSTEMS: SystemId[] = [
  'glidekv-upload-separated',
  'glidekv-upload-inline',
  'glidekv-local-separated',
  'glidekv-local-inline',
  's3backer-defaults',
  's3backer-writethrough',
  'slatedb-16',
  'slatedb-1',
];

/**
 * `--only` names: row ids, a product (glidekv, s3backer, slatedb) or any
 * prefix of row ids (glidekv-upload). Throws on a name that matches nothing.
 */
export function selectSystems(spec: string | undefined): SystemId[] {
  if (!spec) return [...SYSTEMS];
  const want = new Set<SystemId>();
  for (const raw of spec.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean)) {
    const hits = SYSTEMS.filter((id) => id === raw || id.startsWith(raw + '-'));
    if (!hits.length) throw new Error(`--only: unknown system '${raw}' (one of: glidekv, s3backer, slatedb, ${SYSTEMS.join(', ')})`);
    for (const h of hits) want.add(h);
  }
  return SYSTEMS.filter((id) => want.has(id));
}

export interface PeersOptions {
  systems: SystemId[];
  quick: boolean;
  /** Workload sizes other than FULL/QUICK (the self-check's tiny run). */
  params?: WorkloadParams;
  /** A file:// store instead of a MinIO: glidekv rows only, counted by glidekv. */
  fileStore?: string;
  /** Called with the document after each row (to write partial results). */
  onRow?: (doc: PeersDoc) => void;
  log: (line: string) => void;
}

function describeRow(id: SystemId): Pick<SystemRow, 'id' | 'label' | 'config' | 'writers'> {
  if (id.startsWith('glidekv-')) {
    const [, fsync, mode] = id.split('-') as [string, GlidekvFsync, GlidekvMode];
    return { id, label: glidekvLabel(fsync, mode), config: glidekvConfig(fsync, mode), writers: 8 };
  }
  if (id.startsWith('s3backer-')) {
    const mode = id.slice('s3backer-'.length) as S3backerMode;
    return { id, label: s3backerLabel(mode), config: s3backerConfig(mode), writers: 8 };
  }
  const writers = Number(id.slice('slatedb-'.length));
  return { id, label: slatedbLabel(writers), config: slatedbConfig(writers), writers };
}

function git(args: string[]): string {
  try {
    return execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

export function glidekvVersion(): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const sha = git(['rev-parse', '--short=10', 'HEAD']);
  if (!sha) {
    // A tree without .git (e.g. `git archive` of main, to measure exactly a commit): the exporter names it.
    const c = process.env.GLIDEKV_COMMIT;
    return `glidekv ${pkg.version}${c ? ` (main ${c.slice(0, 10)}, exported)` : ''}`;
  }
  const dirty = git(['status', '--porcelain', '--untracked-files=no']) ? ' + uncommitted changes' : '';
  return `glidekv ${pkg.version} (main ${sha}${dirty})`;
}

function sameWorkload(a: WorkloadParams, b: WorkloadParams): boolean {
  return (Object.keys(b) as Array<keyof WorkloadParams>).every((k) => a[k] === b[k]);
}

export async function runPeers(o: PeersOptions): Promise<PeersDoc> {
  const t0 = performance.now();
  const params = o.params ?? (o.quick ? QUICK : FULL);
  const workload = buildWorkload(params);
  const workDir = mkdtempSync(join(tmpdir(), 'glidekv-peers-'));
  const minioVersion = readFileSync(join(ROOT, 'scripts', 'minio.version'), 'utf8').trim();
  const doc: PeersDoc = {
    date: new Date().toISOString(),
    quick: o.quick,
    workload: params,
    userBytes: workload.userBytes,
    store: o.fileStore ? `file store ${o.fileStore}` : `MinIO ${minioVersion} on 127.0.0.1, one bucket per row`,
    versions: { glidekv: glidekvVersion(), node: process.version, ...(o.fileStore ? {} : { minio: minioVersion }) },
    kernel: release(),
    machine: `${cpus().length} cores (${cpus()[0]?.model ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, shared`,
    counting: o.fileStore
      ? "glidefs's own counters (uploads, uploaded bytes); no GET counter"
      : 'MinIO v3 bucket metrics (/minio/metrics/v3/bucket/api/BUCKET): PUTs = PutObject + PutObjectPart + CopyObject, GETs = GetObject, bytes = request bodies received',
    rows: [],
    // The hand measurement is of the full workload: beside other sizes it would compare nothing.
    handMeasured: sameWorkload(params, FULL) ? [JUICEFS_HAND_ROW] : [],
    durationMs: 0,
    partial: true,
  };
  let minio: MinioServer | undefined;
  try {
    let counters: MinioCounters | undefined;
    if (!o.fileStore) {
      minio = await startMinio({ bucket: 'peers-unused' });
      counters = new MinioCounters(minio.endpoint);
      doc.counting += `; ${await counters.calibrate(minio, 'peers-calibrate')}`;
      o.log(`MinIO ${minioVersion} on ${minio.endpoint}; work dir ${workDir}`);
    }
    const s3b = o.systems.some((s) => s.startsWith('s3backer')) && !o.fileStore ? await s3backerAvailable() : undefined;
    if (s3b && 'version' in s3b) doc.versions.s3backer = s3b.version;
    const sdb = o.systems.some((s) => s.startsWith('slatedb')) && !o.fileStore ? await slatedbAvailable(o.log) : undefined;
    if (sdb && 'version' in sdb) doc.versions.slatedb = sdb.version;
    for (const id of o.systems) {
      const base = { ...describeRow(id), version: '', store: '' };
      const bucket = `peers-${id}`;
      const meter = counters ? { counters, bucket } : undefined;
      let row: SystemRow;
      try {
        if (id.startsWith('glidekv-')) {
          const [, fsync, mode] = id.split('-') as [string, GlidekvFsync, GlidekvMode];
          base.version = doc.versions.glidekv;
          if (process.getuid?.() !== 0) throw new Skip('glidekv rows need root (FUSE, loop devices, ext4)');
          if (minio) await makeBucket(minio, bucket);
          row = await runGlidekvRow({
            workload,
            fsync,
            mode,
            store: o.fileStore ? `${o.fileStore.replace(/\/+$/, '')}/${id}` : `s3://${bucket}/${id}`,
            meter,
            env: minio?.env ?? {},
            workDir,
            volumeSize: 1024 ** 3,
            version: base.version,
            log: (l) => o.log(`${id}: ${l}`),
          });
        } else if (!minio || !meter) {
          throw new Skip('needs the MinIO of the run (not a file store)');
        } else if (id.startsWith('s3backer-')) {
          if (!s3b || 'reason' in s3b) throw new Skip(s3b && 'reason' in s3b ? s3b.reason : 's3backer unavailable');
          base.version = s3b.version;
          await makeBucket(minio, bucket);
          row = await runS3backerRow({ workload, mode: id.slice('s3backer-'.length) as S3backerMode, minio, meter, workDir, version: s3b.version, log: o.log });
        } else {
          if (!sdb || 'reason' in sdb) throw new Skip(sdb && 'reason' in sdb ? sdb.reason : 'SlateDB unavailable');
          base.version = sdb.version;
          await makeBucket(minio, bucket);
          row = await runSlatedbRow({ workload, writers: Number(id.slice('slatedb-'.length)), python: sdb.python, minio, meter, version: sdb.version, log: o.log });
        }
      } catch (e) {
        const skip = e instanceof Skip;
        row = notRun({ ...base, store: o.fileStore ?? `s3://${bucket}` }, skip ? 'skipped' : 'failed', (e as Error).message.split('\n')[0]);
        o.log(`${id}: ${row.status}: ${row.reason}`);
      }
      doc.rows.push(row);
      doc.durationMs = Math.round(performance.now() - t0);
      o.onRow?.(doc);
    }
  } finally {
    await minio?.stop().catch(() => {});
    rmSync(workDir, { recursive: true, force: true });
  }
  doc.partial = false;
  doc.durationMs = Math.round(performance.now() - t0);
  return doc;
}

/** A row that cannot run here (missing toolchain): one line, the others still run. */
export class Skip extends Error {}
