/**
 * s3backer rows of the peers benchmark: s3backer (the Debian package) serves
 * one file backed by the row's bucket through FUSE; the file is looped, made
 * ext4 (`-b 4096 -E stride=32,stripe_width=32`, like glidekv's) and mounted;
 * each key is one file under `bench/`.
 *
 *   put     open (truncate), write, fsync, close
 *   delete  unlink
 *   end of each phase: fsync of the directory (the deletes), fsfreeze -f/-u
 *           (ext4 writes back everything and checkpoints its journal), fsync
 *           of s3backer's file (the loop device's writes reach s3backer),
 *           then wait until s3backer's stats show no dirty block: the same
 *           "everything is in the store" as glidekv's volume flush.
 *   compaction: none (a file system has none).
 *
 * Two configurations, both with 128 KiB blocks (glidekv's block size) on a
 * 1 GiB file and --listBlocks:
 *   defaults       a dirty block is written back after
 *                  --blockCacheWriteDelay=250 ms; fsync returns before it is.
 *   write-through  the durable analogue: `--blockCacheWriteDelay=0
 *                  --blockCacheSync --minWriteDelay=0`: every write to
 *                  s3backer's file returns only after its block's PUT, so an
 *                  ext4 fsync (whose journal commit waits for the loop
 *                  device's writes) returns after the upload.
 * s3backer 1.5.4's FUSE fsync and flush are no-ops (`return 0`; fsync/sync
 * flush the block cache only from s3backer 2.1.0, issue #197), so without
 * --blockCacheSync, `--blockCacheWriteDelay=0` only starts the upload after
 * the write has returned ("write-through" in its man page, but an fsync does
 * not wait for it), and writes landing on a block while its upload is in
 * flight are merged into the next one. With --blockCacheSync every FUSE
 * write waits for a whole-block PUT; libfuse 2 (which the Debian s3backer
 * links) without `-o big_writes` hands s3backer 4 KiB writes, so each 4 KiB
 * that ext4 writes (data, journal, inode, bitmap, directory) uploads one
 * whole 128 KiB block. Each row checks which it got before its workload:
 * the blocks still dirty in s3backer's cache when a put's fsync returns (the
 * write-through row fails unless there are none).
 *
 * The bench process does file I/O on the ext4 over the loop device over
 * s3backer's FUSE mount; s3backer is another process, so that is allowed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { open, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { MinioServer } from '../minio.js';
import { runOps } from '../bench-workload.js';
import { okRow, readMeter, runPhases, type Meter, type PhaseDriver } from './phases.js';
import type { ClientCount, SystemRow } from './results.js';
import { exec, onInterrupt, sleep, which } from './sh.js';
import type { Phase, Workload } from './workload.js';

export type S3backerMode = 'defaults' | 'writethrough';

export const S3BACKER_FLAGS: Record<S3backerMode, string[]> = {
  defaults: [],
  writethrough: ['--blockCacheWriteDelay=0', '--blockCacheSync', '--minWriteDelay=0'],
};

/** s3backer's version, or why it cannot run here (one line). */
export async function s3backerAvailable(): Promise<{ version: string } | { reason: string }> {
  if (process.getuid?.() !== 0) return { reason: 's3backer rows need root (FUSE, losetup, mount)' };
  if (!existsSync('/dev/fuse')) return { reason: 's3backer rows need /dev/fuse' };
  for (const cmd of ['s3backer', 'losetup', 'mkfs.ext4', 'fsfreeze', 'fusermount']) {
    if (!(await which(cmd))) return { reason: `${cmd} not found: install the Debian packages with \`npm run setup\` (s3backer, fuse3, e2fsprogs, util-linux)` };
  }
  // `s3backer --version` prints to stderr and exits 1.
  const r = spawnSync('s3backer', ['--version'], { encoding: 'utf8' });
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  const m = /s3backer version (\S+)/.exec(out);
  return m ? { version: `s3backer ${m[1]}` } : { reason: `s3backer --version said: ${out.split('\n')[0]}` };
}

export function s3backerLabel(mode: S3backerMode): string {
  return mode === 'defaults' ? 's3backer + ext4, defaults' : 's3backer + ext4, write-through, sync';
}

export function s3backerConfig(mode: S3backerMode): string {
  return (
    's3backer 128 KiB blocks, 1 GiB, --listBlocks, loop + ext4; one file per key, written and fsynced; ' +
    (mode === 'defaults'
      ? 'defaults: fsync returns before the blocks are uploaded (write-back after 250 ms)'
      : 'write-through: --blockCacheWriteDelay=0 --blockCacheSync --minWriteDelay=0: each write returns after its block is uploaded, so fsync does') +
    "; each phase ends when s3backer's stats show no dirty block"
  );
}

/** Parses s3backer's `stats` file: `name value` lines (numbers only). */
export function parseS3backerStats(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(\w+)\s+([\d.]+)/.exec(line.trim());
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

class S3backerMount {
  proc?: ChildProcess;
  loop = '';
  stderr = '';
  readonly s3b: string;
  readonly ext4: string;
  constructor(
    readonly root: string,
    readonly m: MinioServer,
    readonly bucket: string,
    readonly flags: string[],
  ) {
    this.s3b = join(root, 's3b');
    this.ext4 = join(root, 'ext4');
    mkdirSync(this.s3b, { recursive: true });
    mkdirSync(this.ext4, { recursive: true });
  }

  async up(blockSize: string, size: string): Promise<void> {
    const accessFile = join(this.root, 'access');
    writeFileSync(accessFile, `${this.m.accessKeyId}:${this.m.secretAccessKey}\n`, { mode: 0o600 });
    const args = [
      '-f',
      `--blockSize=${blockSize}`,
      `--size=${size}`,
      `--baseURL=${this.m.endpoint}/`,
      `--accessFile=${accessFile}`,
      '--authVersion=aws4',
      '--listBlocks',
      ...this.flags,
      this.bucket,
      this.s3b,
    ];
    this.proc = spawn('s3backer', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc.stderr!.on('data', (d) => {
      if (this.stderr.length < 16384) this.stderr += String(d);
    });
    for (let i = 0; ; i++) {
      if (readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${this.s3b} `)) break;
      if (this.proc.exitCode !== null) throw new Error(`s3backer exited: ${this.stderr.trim().split('\n').pop()}`);
      if (i > 600) throw new Error('s3backer did not mount within 60 s');
      await sleep(100);
    }
    this.loop = (await exec('losetup', ['--find', '--show', join(this.s3b, 'file')])).trim();
    await exec('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'stride=32,stripe_width=32', this.loop]);
    await exec('mount', ['-o', 'noatime', this.loop, this.ext4]);
  }

  stats(): Record<string, number> {
    return parseS3backerStats(readFileSync(join(this.s3b, 'stats'), 'utf8'));
  }

  /** Dirty blocks in s3backer's cache (its stats: dirty ratio × current size). */
  dirty(): number {
    const s = this.stats();
    if (s.block_cache_dirty_ratio === undefined || s.block_cache_current_size === undefined) {
      throw new Error('no dirty count in s3backer stats');
    }
    return Math.ceil(s.block_cache_dirty_ratio * s.block_cache_current_size);
  }

  /** Everything written so far is in the store. */
  async settle(): Promise<Record<string, number>> {
    const t0 = performance.now();
    await exec('fsfreeze', ['-f', this.ext4]);
    await exec('fsfreeze', ['-u', this.ext4]);
    const fh = await open(join(this.s3b, 'file'), 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    const t1 = performance.now();
    while (this.dirty() > 0) await sleep(10);
    return { freezeFsyncMs: t1 - t0, waitCleanMs: performance.now() - t1 };
  }

  async down(): Promise<void> {
    if (readFileSync('/proc/self/mountinfo', 'utf8').includes(` ${this.ext4} `)) await exec('umount', [this.ext4]);
    if (this.loop) await exec('losetup', ['-d', this.loop]).catch(() => {});
    this.loop = '';
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc!.once('exit', r));
      await exec('fusermount', ['-u', this.s3b]).catch(() => this.proc!.kill('SIGTERM'));
      const t = setTimeout(() => this.proc!.kill('SIGKILL'), 60_000);
      await exited;
      clearTimeout(t);
    }
  }
}

function digest(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function putFile(path: string, value: Buffer): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.writeFile(value);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Blocks still dirty in s3backer's cache the moment a put's fsync returns
 * (one writer, nothing else running): 0 when fsync waits for the uploads. The
 * least of three tries, so a background write of ext4's in flight at that
 * moment does not count.
 */
async function dirtyAfterFsync(dir: string, mnt: S3backerMount): Promise<number> {
  let least = Infinity;
  for (let i = 0; i < 3; i++) {
    const path = join(dir, `.fsync-probe-${i}`);
    await putFile(path, Buffer.alloc(100, i + 1));
    least = Math.min(least, mnt.dirty());
    await unlink(path);
    await mnt.settle();
  }
  return least;
}

export interface S3backerRowOptions {
  workload: Workload;
  mode: S3backerMode;
  minio: MinioServer;
  meter: Meter;
  workDir: string;
  version: string;
  log: (line: string) => void;
}

export async function runS3backerRow(o: S3backerRowOptions): Promise<SystemRow> {
  const mnt = new S3backerMount(join(o.workDir, `s3backer-${o.mode}`), o.minio, o.meter.bucket, S3BACKER_FLAGS[o.mode]);
  const label = s3backerLabel(o.mode);
  const start = await readMeter(o.meter);
  let phases;
  const unregister = onInterrupt(() => mnt.down());
  try {
    await mnt.up('128k', '1G');
    const dir = join(mnt.ext4, 'bench');
    mkdirSync(dir);
    await mnt.settle();
    // Does an fsync wait for the upload here? (Outside the counted phases.)
    const dirty = await dirtyAfterFsync(dir, mnt);
    o.log(`${label}: ${dirty} dirty blocks in s3backer's cache right after a put's fsync returned (least of 3)`);
    if (o.mode === 'writethrough' && dirty > 0) {
      throw new Error(`${dirty} blocks still dirty in s3backer's cache after fsync returned: the write-through row would not be durable`);
    }
    await mnt.settle();
    const client = async (): Promise<ClientCount> => {
      const s = mnt.stats();
      // http_puts counts completed PUTs; a write that a newer write of the same block cancels mid-flight is http_canceled_writes.
      const puts = (s.http_puts ?? 0) + (s.http_canceled_writes ?? 0);
      // Bytes: whole blocks written (a canceled write sent part of a block: MinIO has the exact figure).
      return { puts, uploadedBytes: (s.http_normal_blocks_written ?? 0) * 131072, gets: s.http_gets };
    };
    const driver: PhaseDriver = {
      async run(phase: Phase) {
        const t0 = performance.now();
        await runOps(`${label} ${phase.name}`, phase.ops.length, o.workload.params.writers, Infinity, async (i) => {
          const [key, value] = phase.ops[i];
          if (value) await putFile(join(dir, key), value);
          else await unlink(join(dir, key));
        });
        const t1 = performance.now();
        const dh = await open(dir, 'r');
        try {
          await dh.sync();
        } finally {
          await dh.close();
        }
        const settle = await mnt.settle();
        return { wallMs: performance.now() - t0, detail: { opsMs: t1 - t0, dirFsyncMs: performance.now() - t1 - settle.freezeFsyncMs - settle.waitCleanMs, ...settle } };
      },
      async verify(phase: Phase) {
        const names = new Set(await readdir(dir));
        const problems: string[] = [];
        for (const [key, value] of phase.expect) {
          if (value === undefined) {
            if (names.has(key)) problems.push(`${key} should be deleted`);
          } else if (!names.has(key)) problems.push(`${key} missing`);
          else if (digest(await readFile(join(dir, key))) !== digest(value)) problems.push(`${key} differs`);
        }
        return problems;
      },
      client,
      close: () => mnt.down(),
    };
    phases = await runPhases(label, o.workload, driver, o.meter, o.log);
  } finally {
    await mnt.down().catch((e: Error) => o.log(`${label}: teardown: ${e.message}`));
    unregister();
  }
  const base = { id: `s3backer-${o.mode}`, label, version: o.version, config: s3backerConfig(o.mode), writers: o.workload.params.writers, store: `s3://${o.meter.bucket}` } as const;
  return okRow(base, phases, 's3backer', start, await readMeter(o.meter));
}
