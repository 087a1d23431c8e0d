/**
 * `npm run bench:fsync`: what a durable fsync costs, and what a restore costs,
 * against a MinIO started for the run.
 *
 *   fsync    `glidekv up` (device mount + loop + ext4, --fsync upload), then
 *            N times: pwrite 4 KiB at a random 4 KiB offset of a 64 MiB file on
 *            the ext4 and fsync it; each sample is write + fsync (fsync returns
 *            after the volume's log record is in MinIO). p50/p90/p99/max, and
 *            PUTs and bytes per fsync: MinIO's live v3 bucket counters (the v2
 *            ones lag ~10 s and read 0 here), beside glidefs's own counters
 *            (the catalog's log PUTs + block uploads; MinIO also sees the
 *            lease renewals, one per 10 s).
 *   restore  three volumes (two written, 8 MiB each, partly in 4 KiB writes so
 *            the log holds sectors), a fork and a snapshot; then the catalog
 *            and the cache are deleted and `glidekv restore` rebuilds the
 *            catalog from the store alone: its time, the log records and bytes
 *            it read; every volume is read back and compared.
 * The 1-minute load average before and after the samples is printed and kept
 * (a shared machine: compare runs made at like load).
 * Env: BENCH_FSYNC_N (default 500). JSON: bench-results/fsync.json.
 */
import { execFile } from 'node:child_process';
import { closeSync, fsyncSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { startMinio, type MinioServer } from './lib/minio.js';
import { diff, MinioCounters } from './lib/peers/minio-counters.js';

const run = promisify(execFile);
const BIN = resolve(import.meta.dirname, '..', 'bin', 'glidekv.mjs');
const MiB = 1024 * 1024;
const N = Number(process.env.BENCH_FSYNC_N ?? 500);

async function exec(label: string, file: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  try {
    return (await run(file, args, { env: { ...process.env, ...env }, maxBuffer: 256 * MiB })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${label}: ${(e.stderr || e.message).trim().split('\n').pop()}`);
  }
}

async function makeBucket(m: MinioServer, name: string): Promise<void> {
  const s3 = new S3Client({ endpoint: m.endpoint, region: m.region, forcePathStyle: true, credentials: { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey } });
  await s3.send(new CreateBucketCommand({ Bucket: name }));
  s3.destroy();
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const r2 = (x: number) => Math.round(x * 100) / 100;

async function benchFsync(m: MinioServer, root: string) {
  const bucket = 'fsync-lat';
  await makeBucket(m, bucket);
  const env = { ...m.env, GLIDEKV_STORE: `s3://${bucket}`, GLIDEKV_CATALOG: join(root, 'f.db'), GLIDEKV_CACHE: join(root, 'fcache'), GLIDEKV_RUN: join(root, 'frun') };
  const g = (...a: string[]) => exec(`glidekv ${a[0]}`, process.execPath, [BIN, ...a], env);
  const mnt = join(root, 'kv');
  mkdirSync(mnt, { recursive: true });
  await g('up', 'lat', mnt, '--size', '1G', '--fsync', 'upload');
  try {
    const st = (JSON.parse(await g('status', '--json')) as Array<Record<string, string>>)[0];
    const file = join(st.ext4Mountpoint, 'lat.bin');
    const fd = openSync(file, 'w+');
    try {
      const size = 64 * MiB;
      const chunk = randomBytes(MiB);
      for (let o = 0; o < size; o += MiB) writeSync(fd, chunk, 0, MiB, o);
      fsyncSync(fd);
      const mc = new MinioCounters(m.endpoint);
      await mc.calibrate(m, 'fsync-calibrate'); // which v3 traffic counter holds uploaded bytes
      const stats = async () => JSON.parse(await g('volume', 'stats', 'lat', '--json')) as { logPuts: number; logBytes: number; uploads: number; uploadedBytes: number };
      const c0 = await mc.read(bucket);
      const s0 = await stats();
      const load0 = loadavg()[0];
      const t0 = performance.now();
      const buf = randomBytes(4096);
      const samples: number[] = [];
      for (let i = 0; i < N; i++) {
        buf.writeUInt32LE(i, 0);
        const off = Math.floor(Math.random() * (size / 4096)) * 4096;
        const t = performance.now();
        writeSync(fd, buf, 0, 4096, off);
        fsyncSync(fd);
        samples.push(performance.now() - t);
      }
      const wallS = (performance.now() - t0) / 1000;
      const traffic = diff(c0, await mc.read(bucket));
      const s1 = await stats();
      const ownPuts = s1.logPuts - s0.logPuts + (s1.uploads - s0.uploads);
      const ownBytes = s1.logBytes - s0.logBytes + (s1.uploadedBytes - s0.uploadedBytes);
      const sorted = [...samples].sort((a, b) => a - b);
      return {
        n: N,
        p50Ms: r2(pct(sorted, 50)),
        p90Ms: r2(pct(sorted, 90)),
        p99Ms: r2(pct(sorted, 99)),
        maxMs: r2(sorted[sorted.length - 1]),
        meanMs: r2(samples.reduce((a, b) => a + b, 0) / N),
        putsPerFsync: r2(traffic.puts / N),
        bytesPerFsync: Math.round(traffic.uploadedBytes / N),
        glidefsPutsPerFsync: r2(ownPuts / N),
        glidefsBytesPerFsync: Math.round(ownBytes / N),
        minioPuts: traffic.puts,
        glidefsPuts: ownPuts,
        seconds: r2(wallS),
        /** 1-minute load average before and after the samples (the machine is shared: compare runs at like load) */
        load: [r2(load0), r2(loadavg()[0])],
      };
    } finally {
      closeSync(fd);
    }
  } finally {
    await g('down', mnt).catch((e) => console.error(`down: ${(e as Error).message}`));
  }
}

async function benchRestore(m: MinioServer, root: string) {
  const bucket = 'restore';
  await makeBucket(m, bucket);
  const env = { ...m.env, GLIDEKV_STORE: `s3://${bucket}`, GLIDEKV_CATALOG: join(root, 'r.db'), GLIDEKV_CACHE: join(root, 'rcache') };
  const g = (...a: string[]) => exec(`glidekv ${a[0]}`, process.execPath, [BIN, ...a], env);
  const data = join(root, 'data.bin');
  for (const v of ['a', 'b', 'c']) await g('volume', 'create', v, '--size', '64M');
  for (const v of ['a', 'b']) {
    writeFileSync(data, randomBytes(8 * MiB));
    await g('volume', 'write', v, '--offset', '0', '--from', data, '--flush');
  }
  // small writes: sectors in the log (each `volume write --flush` is one record; its close checkpoints)
  writeFileSync(data, randomBytes(4096));
  for (let i = 0; i < 8; i++) await g('volume', 'write', 'c', '--offset', String(i * 131072 + 4096), '--from', data, '--flush');
  await g('volume', 'fork', 'a', 'a-fork');
  await g('volume', 'snapshot', 'b', 'b-snap');
  writeFileSync(data, randomBytes(4096));
  await g('volume', 'write', 'a-fork', '--offset', '12288', '--from', data, '--flush');
  const names = ['a', 'a-fork', 'b', 'b-snap', 'c'];
  const sums = new Map<string, string>();
  for (const v of names) sums.set(v, createHash('sha256').update(await exec('read', process.execPath, [BIN, 'volume', 'read', v, '--offset', '0', '--length', String(16 * MiB)], env)).digest('hex'));
  rmSync(join(root, 'r.db'), { force: true });
  rmSync(join(root, 'r.db-wal'), { force: true });
  rmSync(join(root, 'r.db-shm'), { force: true });
  rmSync(join(root, 'rcache'), { recursive: true, force: true });
  const t = performance.now();
  const out = JSON.parse(await g('restore', '--json')) as { recordsRead: number; bytesRead: number; listed: number; volumes: unknown[] };
  const ms = performance.now() - t;
  let identical = true;
  for (const v of names) {
    const s = createHash('sha256').update(await exec('read', process.execPath, [BIN, 'volume', 'read', v, '--offset', '0', '--length', String(16 * MiB)], env)).digest('hex');
    if (s !== sums.get(v)) identical = false;
  }
  return { volumes: out.volumes.length, commandMs: Math.round(ms), recordsRead: out.recordsRead, bytesRead: out.bytesRead, keysListed: out.listed, identical };
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('bench:fsync needs root (glidekv up mounts)');
  const root = mkdtempSync(join(tmpdir(), 'glidekv-bench-fsync-'));
  const m = await startMinio({ bucket: 'fsync-unused' });
  try {
    console.log(`bench:fsync: ${N} x (4 KiB write + fsync) through device + ext4, MinIO ${m.endpoint}`);
    const fsync = await benchFsync(m, root);
    console.log(
      `  fsync latency: p50 ${fsync.p50Ms} ms, p90 ${fsync.p90Ms} ms, p99 ${fsync.p99Ms} ms, max ${fsync.maxMs} ms, mean ${fsync.meanMs} ms (load average ${fsync.load[0]} -> ${fsync.load[1]})`,
    );
    console.log(
      `  per fsync: ${fsync.putsPerFsync} MinIO PUTs / ${fsync.bytesPerFsync} bytes (v3 bucket counters), glidefs ${fsync.glidefsPutsPerFsync} PUTs / ${fsync.glidefsBytesPerFsync} bytes (catalog: log + block uploads); totals MinIO ${fsync.minioPuts}, glidefs ${fsync.glidefsPuts} over ${fsync.seconds} s (MinIO also counts the lease renewals, 1 per 10 s)`,
    );
    const restore = await benchRestore(m, root);
    console.log(
      `  restore: ${restore.volumes} volumes (2 forks/snapshots among them) in ${restore.commandMs} ms (the whole command), ${restore.recordsRead} log records / ${restore.bytesRead} bytes read, ${restore.keysListed} keys listed; every volume identical: ${restore.identical ? 'yes' : 'NO'}`,
    );
    mkdirSync('bench-results', { recursive: true });
    writeFileSync('bench-results/fsync.json', JSON.stringify({ date: new Date().toISOString(), fsync, restore }, null, 2) + '\n');
    console.log('JSON: bench-results/fsync.json');
    if (!restore.identical) process.exitCode = 1;
  } finally {
    await m.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench:fsync failed: ${(err as Error).message}`);
  process.exit(1);
});
