/**
 * Benchmark of the block layer against MinIO on loopback (`npm run bench:glidefs`).
 *
 * Starts its own MinIO, makes a 256 MiB volume and measures:
 * - seq write+flush:  64 MiB of 128 KiB writes in order, a flush every 8 MiB
 * - rand write+flush: 64 MiB of 128 KiB writes at random block offsets, same flushes
 * - 4K cache writes:  16 MiB of 4 KiB writes into the cache (no flush): the device mount's path
 * - cold read:        64 MiB in 1 MiB reads with an empty cache (GETs, verified)
 * - warm read:        the same 64 MiB again (cache hits)
 * Prints MB/s, uploads/s and p50/p99 flush latency as a table; writes
 * bench-results/glidefs.json. Options: env BENCH_MIB (bytes written, default 64).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { CountingStore, GlideFs, RetryStore, S3Store, BLOCK_SIZE } from '../glidefs/index.js';
import { startMinio } from './lib/minio.js';

const MiB = 1024 * 1024;
const WRITE_MIB = Number(process.env.BENCH_MIB ?? 64);
const VOLUME = 256 * MiB;
const FLUSH_EVERY = 8 * MiB;

interface Row {
  phase: string;
  mbPerSec: number;
  uploadsPerSec: number | null;
  flushP50Ms: number | null;
  flushP99Ms: number | null;
  uploads: number;
  gets: number;
  seconds: number;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

async function main() {
  const minio = await startMinio({ bucket: 'bench' });
  const root = mkdtempSync(join(tmpdir(), 'glidekv-bench-glidefs-'));
  const rows: Row[] = [];
  try {
    const s3 = new S3Store({
      bucket: minio.bucket,
      prefix: 'bench',
      endpoint: minio.endpoint,
      region: minio.region,
      credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
    });
    const store = new CountingStore(new RetryStore(s3));
    const catalogPath = join(root, 'catalog.db');
    const fs = await GlideFs.open({ store, catalogPath, cacheDir: join(root, 'cache'), uploadConcurrency: 16 });
    await fs.createVolume('bench', VOLUME);
    const vol = await fs.openVolume('bench');
    const data = randomBytes(WRITE_MIB * MiB);

    const writePhase = async (phase: string, offsetOf: (n: number) => number) => {
      const flushMs: number[] = [];
      const up0 = store.stats().puts;
      let flushTotal = 0;
      const t0 = performance.now();
      const blocks = (WRITE_MIB * MiB) / BLOCK_SIZE;
      for (let n = 0; n < blocks; n++) {
        // fresh bytes each phase: a unique tag in the first 8 bytes of each block
        const buf = data.subarray(n * BLOCK_SIZE, (n + 1) * BLOCK_SIZE);
        buf.writeDoubleLE(Math.random(), 0);
        await vol.write(offsetOf(n), buf);
        if (((n + 1) * BLOCK_SIZE) % FLUSH_EVERY === 0) {
          const f0 = performance.now();
          await vol.flush();
          const ms = performance.now() - f0;
          flushMs.push(ms);
          flushTotal += ms;
        }
      }
      const secs = (performance.now() - t0) / 1000;
      const uploads = store.stats().puts - up0;
      rows.push({
        phase,
        mbPerSec: WRITE_MIB / secs,
        uploadsPerSec: uploads / (flushTotal / 1000),
        flushP50Ms: pct(flushMs, 50),
        flushP99Ms: pct(flushMs, 99),
        uploads,
        gets: 0,
        seconds: secs,
      });
    };

    await writePhase('seq write+flush 128K', (n) => n * BLOCK_SIZE);
    let x = 12345;
    const totalBlocks = VOLUME / BLOCK_SIZE;
    await writePhase('rand write+flush 128K', () => {
      x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff;
      return (x % totalBlocks) * BLOCK_SIZE;
    });

    // 4 KiB writes into the cache (the device mount's path), no flush
    {
      const small = randomBytes(4096);
      const bytes = 16 * MiB;
      const base = 128 * MiB;
      const t0 = performance.now();
      for (let off = 0; off < bytes; off += 4096) await vol.write(base + off, small);
      const secs = (performance.now() - t0) / 1000;
      rows.push({ phase: '4K writes to cache', mbPerSec: bytes / MiB / secs, uploadsPerSec: null, flushP50Ms: null, flushP99Ms: null, uploads: 0, gets: 0, seconds: secs });
      const f0 = performance.now();
      const r = await vol.flush();
      const fsecs = (performance.now() - f0) / 1000;
      rows.push({ phase: 'flush of the 4K writes', mbPerSec: bytes / MiB / fsecs, uploadsPerSec: r.uploads / fsecs, flushP50Ms: fsecs * 1000, flushP99Ms: fsecs * 1000, uploads: r.uploads, gets: 0, seconds: fsecs });
    }
    await vol.close();
    await fs.close();

    // cold and warm reads from a fresh cache dir
    const cold = await GlideFs.open({ store, catalogPath, cacheDir: join(root, 'cache-cold') });
    const cv = await cold.openVolume('bench');
    for (const phase of ['cold read 1M', 'warm read 1M']) {
      const g0 = store.stats().gets;
      const t0 = performance.now();
      for (let off = 0; off < WRITE_MIB * MiB; off += MiB) await cv.read(off, MiB);
      const secs = (performance.now() - t0) / 1000;
      rows.push({ phase, mbPerSec: WRITE_MIB / secs, uploadsPerSec: null, flushP50Ms: null, flushP99Ms: null, uploads: 0, gets: store.stats().gets - g0, seconds: secs });
    }
    await cold.close();
    await store.close();
  } finally {
    await minio.stop();
    rmSync(root, { recursive: true, force: true });
  }

  const f = (v: number | null, d = 1) => (v === null ? '-' : v.toFixed(d));
  const head = ['phase', 'MB/s', 'uploads/s', 'flush p50 ms', 'flush p99 ms', 'uploads', 'GETs', 'seconds'];
  const table = rows.map((r) => [r.phase, f(r.mbPerSec), f(r.uploadsPerSec, 0), f(r.flushP50Ms), f(r.flushP99Ms), String(r.uploads), String(r.gets), f(r.seconds, 2)]);
  const w = head.map((h, i) => Math.max(h.length, ...table.map((t) => t[i].length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join(' | ') + ' |';
  console.log(`glidefs on MinIO (loopback), ${WRITE_MIB} MiB per phase, 256 MiB volume, flush every 8 MiB, 16 parallel uploads`);
  console.log(line(head));
  console.log('|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|');
  for (const t of table) console.log(line(t));
  mkdirSync('bench-results', { recursive: true });
  writeFileSync(join('bench-results', 'glidefs.json'), JSON.stringify({ date: new Date().toISOString(), writeMiB: WRITE_MIB, volumeBytes: VOLUME, rows }, null, 2) + '\n');
  console.log('wrote bench-results/glidefs.json');
}

await main();
