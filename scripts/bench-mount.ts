/**
 * `npm run bench:mount`: 256 MiB sequential write + fsync and a cold read,
 * against a MinIO started for the run, through
 *   (a) the device mount + loop (direct I/O on, then off) + ext4:
 *       dd to a file on the ext4, conv=fsync
 *   (b) the KV mount of the same stack: 64 keys of 4 MiB with cp
 *   (c) s3backer (128 KiB blocks) + loop + ext4, the same dd
 * Each on a bucket of its own, so MinIO's per-bucket PUT counter is the
 * configuration's. "Durable" is when the data is in the store: for glidekv
 * when fsync returns (it returns after the upload and the commit); for
 * s3backer, whose fsync returns earlier, when its `stats` file shows no dirty
 * block any more. A cold read starts with nothing local: the stack is taken
 * down, its local cache removed, brought up again and the page cache dropped.
 * JSON: bench-results/mount.json.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { minioBucketPutCount, stableCount, startMinio, type MinioServer } from './lib/minio.js';

const run = promisify(execFile);
const BIN = resolve(import.meta.dirname, '..', 'bin', 'glidekv.mjs');
const MiB = 1024 * 1024;
const TOTAL = Number(process.env.BENCH_MOUNT_MIB ?? 256) * MiB;
const KEY_SIZE = 4 * MiB;
const VOLUME_SIZE = '1G';

interface Result {
  config: string;
  writeSeconds: number;
  /** Until every byte is in the store. */
  durableSeconds: number;
  writeMBps: number;
  durableMBps: number;
  coldReadSeconds: number;
  coldReadMBps: number;
  puts: number;
  notes: string;
}

/** Runs FILE ARGS; resolves its stdout, or rejects with `LABEL: last line of stderr`. */
async function exec(label: string, file: string, args: string[], env: Record<string, string> = {}): Promise<string> {
  try {
    return (await run(file, args, { env: { ...process.env, ...env }, maxBuffer: 64 * MiB })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${label}: ${(e.stderr || e.message).trim().split('\n').pop()}`);
  }
}

const sh = (cmd: string, env: Record<string, string> = {}) => exec(cmd.slice(0, 120), 'bash', ['-c', cmd], env);

const now = () => performance.now() / 1000;
const mbps = (bytes: number, s: number) => Math.round((bytes / 1e6 / s) * 10) / 10;
const dropCaches = () => sh('sync && echo 3 > /proc/sys/vm/drop_caches');

/** A configuration's row, from its seconds for writing, until durable and for the cold read (TOTAL bytes each). */
function result(config: string, tw: number, td: number, tr: number, puts: number, notes: string): Result {
  return {
    config,
    writeSeconds: tw,
    durableSeconds: td,
    writeMBps: mbps(TOTAL, tw),
    durableMBps: mbps(TOTAL, td),
    coldReadSeconds: tr,
    coldReadMBps: mbps(TOTAL, tr),
    puts,
    notes,
  };
}

const s3Client = (m: MinioServer) =>
  new S3Client({ endpoint: m.endpoint, region: m.region, forcePathStyle: true, credentials: { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey } });

async function makeBucket(m: MinioServer, name: string): Promise<void> {
  const s3 = s3Client(m);
  await s3.send(new CreateBucketCommand({ Bucket: name }));
  s3.destroy();
}

/** MinIO's first few hundred PUTs are slower; keep that out of the first configuration. */
async function warmUp(m: MinioServer): Promise<void> {
  const s3 = s3Client(m);
  const body = Buffer.alloc(131072, 7);
  for (let round = 0; round < 20; round++) {
    await Promise.all(Array.from({ length: 16 }, (_, i) => s3.send(new PutObjectCommand({ Bucket: m.bucket, Key: `warm/${round}/${i}`, Body: body }))));
  }
  s3.destroy();
}

async function puts(m: MinioServer, bucket: string, want = 0): Promise<number> {
  return stableCount(() => minioBucketPutCount(m.endpoint, bucket), want, 40_000);
}

// ---- glidekv (a, b) ----

class GlideStack {
  readonly env: Record<string, string>;
  readonly mnt: string;
  constructor(
    readonly root: string,
    readonly m: MinioServer,
    readonly bucket: string,
    readonly directIo: boolean,
  ) {
    this.env = {
      ...m.env,
      GLIDEKV_STORE: `s3://${bucket}`,
      GLIDEKV_CATALOG: join(root, 'catalog.db'),
      GLIDEKV_CACHE: join(root, 'cache'),
      GLIDEKV_RUN: join(root, 'run'),
    };
    this.mnt = join(root, 'kv');
    mkdirSync(this.mnt, { recursive: true });
  }

  glidekv(...args: string[]): Promise<string> {
    return exec(`glidekv ${args[0]}`, process.execPath, [BIN, ...args], this.env);
  }

  async up(): Promise<Record<string, string>> {
    await this.glidekv('up', 'bench', this.mnt, '--size', VOLUME_SIZE, ...(this.directIo ? [] : ['--no-direct-io']));
    return (JSON.parse(await this.glidekv('status', '--json')) as Array<Record<string, string>>)[0];
  }

  async down(): Promise<void> {
    await this.glidekv('down', this.mnt);
  }

  /** Nothing left in the store's way: ext4 written back, volume flushed. */
  async settle(st: Record<string, string>): Promise<void> {
    await sh(`fsfreeze -f ${st.ext4Mountpoint}; fsfreeze -u ${st.ext4Mountpoint}`);
    const f = await openFile(st.deviceFile, 'r+');
    await f.sync();
    await f.close();
  }

  /** Down, remove the local block cache, up, drop the page cache. */
  async coldUp(): Promise<Record<string, string>> {
    await this.down();
    rmSync(join(this.root, 'cache'), { recursive: true, force: true });
    const st = await this.up();
    await dropCaches();
    return st;
  }
}

async function benchDevice(m: MinioServer, root: string, directIo: boolean): Promise<Result> {
  const bucket = `mount-dev-${directIo ? 'dio' : 'buf'}`;
  await makeBucket(m, bucket);
  const g = new GlideStack(join(root, bucket), m, bucket, directIo);
  let st = await g.up();
  try {
    await g.settle(st);
    const p0 = await puts(m, bucket);
    const t0 = now();
    await sh(`dd if=/dev/urandom of=${st.ext4Mountpoint}/big.bin bs=1M count=${TOTAL / MiB} conv=fsync status=none`);
    const tw = now() - t0;
    await g.settle(st);
    const p1 = await puts(m, bucket, p0 + TOTAL / 131072);
    const sum = (await sh(`sha256sum ${st.ext4Mountpoint}/big.bin`)).split(' ')[0];
    st = await g.coldUp();
    const t1 = now();
    const sum2 = (await sh(`dd if=${st.ext4Mountpoint}/big.bin bs=1M status=none | sha256sum`)).split(' ')[0];
    const tr = now() - t1;
    if (sum !== sum2) throw new Error('cold read returned other bytes');
    return result(`glidekv device + ext4 (loop direct I/O ${directIo ? 'on' : 'off'})`, tw, tw, tr, p1 - p0, 'dd conv=fsync returns after upload+commit');
  } finally {
    await g.down().catch((e) => console.error(`down: ${(e as Error).message}`));
  }
}

async function benchKv(m: MinioServer, root: string): Promise<Result> {
  const bucket = 'mount-kv';
  await makeBucket(m, bucket);
  const g = new GlideStack(join(root, bucket), m, bucket, true);
  const src = join(root, 'kv-src');
  mkdirSync(src, { recursive: true });
  const n = TOTAL / KEY_SIZE;
  await sh(`for i in $(seq 1 ${n}); do head -c ${KEY_SIZE} /dev/urandom > ${src}/k$i; done`);
  let st = await g.up();
  try {
    await sh(`mkdir ${g.mnt}/bench`);
    await g.settle(st);
    const p0 = await puts(m, bucket);
    const t0 = now();
    // Each put is fsynced by the engine (sync batch) before cp's close returns.
    await sh(`for i in $(seq 1 ${n}); do cp ${src}/k$i ${g.mnt}/bench/k$i; done`);
    const tw = now() - t0;
    await g.settle(st);
    const td = now() - t0;
    const p1 = await puts(m, bucket, p0 + TOTAL / 131072);
    st = await g.coldUp();
    const t1 = now();
    await sh(`for i in $(seq 1 ${n}); do cmp ${src}/k$i ${g.mnt}/bench/k$i; done`);
    const tr = now() - t1;
    return result(`glidekv KV mount (${n} keys x ${KEY_SIZE / MiB} MiB, cp)`, tw, td, tr, p1 - p0, 'each cp acknowledged after the engine fsync (-> volume flush)');
  } finally {
    await g.down().catch((e) => console.error(`down: ${(e as Error).message}`));
  }
}

// ---- s3backer (c) ----

class S3backer {
  proc?: ChildProcess;
  readonly mnt: string;
  readonly ext4: string;
  loop = '';
  constructor(
    readonly root: string,
    readonly m: MinioServer,
    readonly bucket: string,
    readonly accessFile: string,
  ) {
    this.mnt = join(root, 's3b');
    this.ext4 = join(root, 'ext4');
    mkdirSync(this.mnt, { recursive: true });
    mkdirSync(this.ext4, { recursive: true });
  }

  async mount(): Promise<void> {
    const args = [
      '-f',
      '--blockSize=128k',
      `--size=${VOLUME_SIZE}`,
      `--baseURL=${this.m.endpoint}/`,
      `--accessFile=${this.accessFile}`,
      '--authVersion=aws4',
      '--listBlocks',
      this.bucket,
      this.mnt,
    ];
    this.proc = spawn('s3backer', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    this.proc.stderr!.on('data', (d) => (err += d));
    for (let i = 0; i < 300; i++) {
      if (readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${this.mnt} `)) break;
      if (this.proc.exitCode !== null) throw new Error(`s3backer exited: ${err.trim()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    this.loop = (await sh(`losetup --find --show ${this.mnt}/file`)).trim();
  }

  /** Dirty blocks in s3backer's block cache (its stats file: dirty ratio x current size). */
  dirty(): number {
    const stats = readFileSync(join(this.mnt, 'stats'), 'utf8');
    const ratio = /block_cache_dirty_ratio\s+([\d.]+)/.exec(stats);
    const size = /block_cache_current_size\s+(\d+)/.exec(stats);
    if (!ratio || !size) throw new Error(`no dirty count in s3backer stats:\n${stats}`);
    return Math.ceil(Number(ratio[1]) * Number(size[1]));
  }

  async waitClean(): Promise<void> {
    while (this.dirty() > 0) await new Promise((r) => setTimeout(r, 20));
  }

  async unmount(): Promise<void> {
    await sh(`umount ${this.ext4} 2>/dev/null; true`);
    if (this.loop) await sh(`losetup -d ${this.loop}; true`);
    this.loop = '';
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc!.once('exit', r));
      await sh(`fusermount -u ${this.mnt}`);
      await exited;
    }
  }
}

async function benchS3backer(m: MinioServer, root: string): Promise<Result> {
  const bucket = 'mount-s3backer';
  await makeBucket(m, bucket);
  const accessFile = join(root, 's3backer-access');
  writeFileSync(accessFile, `${m.accessKeyId}:${m.secretAccessKey}\n`, { mode: 0o600 });
  const b = new S3backer(join(root, 's3backer'), m, bucket, accessFile);
  try {
    await b.mount();
    await sh(`mkfs.ext4 -q -F -b 4096 -E stride=32,stripe_width=32 ${b.loop} && mount -o noatime ${b.loop} ${b.ext4}`);
    await sh(`fsfreeze -f ${b.ext4}; fsfreeze -u ${b.ext4}; sync`);
    await b.waitClean();
    const p0 = await puts(m, bucket);
    const t0 = now();
    await sh(`dd if=/dev/urandom of=${b.ext4}/big.bin bs=1M count=${TOTAL / MiB} conv=fsync status=none`);
    const tw = now() - t0;
    await b.waitClean();
    const td = now() - t0;
    await sh(`fsfreeze -f ${b.ext4}; fsfreeze -u ${b.ext4}`);
    await b.waitClean();
    const p1 = await puts(m, bucket, p0 + TOTAL / 131072);
    const sum = (await sh(`sha256sum ${b.ext4}/big.bin`)).split(' ')[0];
    await b.unmount();
    await b.mount();
    await sh(`mount -o noatime ${b.loop} ${b.ext4}`);
    await dropCaches();
    const t1 = now();
    const sum2 = (await sh(`dd if=${b.ext4}/big.bin bs=1M status=none | sha256sum`)).split(' ')[0];
    const tr = now() - t1;
    if (sum !== sum2) throw new Error('s3backer cold read returned other bytes');
    return result('s3backer 128K blocks + ext4 (loop)', tw, td, tr, p1 - p0, 'fsync returns before upload; durable = stats shows 0 dirty');
  } finally {
    await b.unmount().catch((e) => console.error(`s3backer unmount: ${(e as Error).message}`));
  }
}

function table(rows: Result[]): string {
  const base = rows.find((r) => r.config.startsWith('s3backer'));
  const head = ['configuration', 'write MB/s', 'durable MB/s', 'cold read MB/s', 'PUTs', 'vs s3backer (durable / read / PUTs)'];
  const ratio = (a: number, b: number | undefined) => (b ? (a / b).toFixed(2) + 'x' : '-');
  const body = rows.map((r) => [
    r.config,
    r.writeMBps.toFixed(1),
    r.durableMBps.toFixed(1),
    r.coldReadMBps.toFixed(1),
    String(r.puts),
    base && r !== base ? `${ratio(r.durableMBps, base.durableMBps)} / ${ratio(r.coldReadMBps, base.coldReadMBps)} / ${ratio(r.puts, base.puts)}` : '',
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (c: string[]) => c.map((x, i) => (i > 0 && i < 5 ? x.padStart(w[i]) : x.padEnd(w[i]))).join('  ').trimEnd();
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...body.map(line)].join('\n');
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('bench:mount needs root (losetup, mount, drop_caches)');
  const root = mkdtempSync(join(tmpdir(), 'glidekv-bench-mount-'));
  const m = await startMinio({ bucket: 'mount-unused' });
  const rows: Result[] = [];
  const only = (process.env.BENCH_MOUNT_ONLY ?? 'dio,buf,kv,s3backer').split(',');
  try {
    console.log(`bench:mount: ${TOTAL / MiB} MiB, MinIO ${m.endpoint}, work dir ${root}`);
    await warmUp(m);
    const steps: Record<string, () => Promise<Result>> = {
      dio: () => benchDevice(m, root, true),
      buf: () => benchDevice(m, root, false),
      kv: () => benchKv(m, root),
      s3backer: () => benchS3backer(m, root),
    };
    // In the order given (BENCH_MOUNT_ONLY=buf,dio swaps the first two).
    for (const name of only) {
      const fn = steps[name];
      if (!fn) throw new Error(`unknown BENCH_MOUNT_ONLY entry '${name}' (dio, buf, kv, s3backer)`);
      const r = await fn();
      console.log(`  ${r.config}: write ${r.writeMBps} MB/s, durable ${r.durableMBps} MB/s, cold read ${r.coldReadMBps} MB/s, ${r.puts} PUTs`);
      rows.push(r);
    }
  } finally {
    await m.stop();
    rmSync(root, { recursive: true, force: true });
  }
  console.log('\n' + table(rows));
  mkdirSync('bench-results', { recursive: true });
  writeFileSync('bench-results/mount.json', JSON.stringify({ date: new Date().toISOString(), totalBytes: TOTAL, results: rows }, null, 2) + '\n');
  console.log('\nJSON: bench-results/mount.json');
}

main().catch((err) => {
  console.error(`bench:mount failed: ${(err as Error).message}`);
  process.exit(1);
});
