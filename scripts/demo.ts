/**
 * `npm run demo`: the whole stack on the embedded file store, in a temp dir.
 *
 *   up -> write keys with cp (small ones and several of a few MiB)
 *   -> overwrite some (dead bytes for reclaim) -> reclaim (SIGUSR1 to the KV
 *   daemon) -> live fork -> up the fork elsewhere, read back and compare
 *   -> down everything
 *
 * Run twice: values separated (the default, values >= 128 KiB in the blob
 * store) and inline (--value-threshold 0), to show what reclaim costs in
 * re-uploads each way. At the end of each phase the stack is settled
 * (engine sync, ext4 freeze/thaw, fsync of the device file) so the phase's
 * uploads are counted in that phase. Counters: `glidekv volume stats --json`.
 */
import { execFile } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const BIN = resolve(import.meta.dirname, '..', 'bin', 'glidekv.mjs');

const SMALL = 300;
const BIG = 6;
const BIG_SIZE = 3 * 1024 * 1024 + 12345;

interface Counters {
  uploads: number;
  reuploads: number;
  uploadedBytes: number;
}

interface Row extends Counters {
  run: string;
  phase: string;
  note: string;
}

async function sh(cmd: string): Promise<string> {
  return (await run('bash', ['-c', cmd], { maxBuffer: 64 << 20 })).stdout;
}

function makeGlidekv(env: Record<string, string>) {
  return async (...args: string[]): Promise<string> => {
    try {
      return (await run(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 })).stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`glidekv ${args.join(' ')}: ${(e.stderr || e.message).trim()}`);
    }
  };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function demo(label: string, root: string, valueThreshold?: number): Promise<Row[]> {
  const env = {
    GLIDEKV_STORE: `file://${join(root, 'objects')}`,
    GLIDEKV_CATALOG: join(root, 'catalog.db'),
    GLIDEKV_CACHE: join(root, 'cache'),
    GLIDEKV_RUN: join(root, 'run'),
  };
  const glidekv = makeGlidekv(env);
  const mnt = join(root, 'kv');
  const mnt2 = join(root, 'kv-fork');
  const src = join(root, 'src');
  for (const d of [mnt, mnt2, src]) mkdirSync(d, { recursive: true });
  const rows: Row[] = [];
  const counters = async (vol: string): Promise<Counters> => JSON.parse(await glidekv('volume', 'stats', vol, '--json')) as Counters;
  let last: Counters = { uploads: 0, reuploads: 0, uploadedBytes: 0 };
  const phase = async (name: string, note: string, vol = 'demo') => {
    const c = await counters(vol);
    rows.push({ run: label, phase: name, note, uploads: c.uploads - last.uploads, reuploads: c.reuploads - last.reuploads, uploadedBytes: c.uploadedBytes - last.uploadedBytes });
    last = c;
    console.log(`  ${name.padEnd(10)} ${note}`);
  };
  const statusOf = async () => (JSON.parse(await glidekv('status', '--json')) as Array<Record<string, unknown>>).find((s) => s.volume === 'demo')!;
  /** Everything written so far reaches the store: engine sync, freeze/thaw, fsync of the device file. */
  const settle = async () => {
    const st = await statusOf();
    await kvSignal(st, 'SIGUSR2', 'sync');
    await sh(`fsfreeze -f ${st.ext4Mountpoint} && fsfreeze -u ${st.ext4Mountpoint}`);
    const f = await openFile(String(st.deviceFile), 'r+');
    await f.sync();
    await f.close();
  };
  const kvSignal = async (st: Record<string, unknown>, sig: 'SIGUSR1' | 'SIGUSR2', name: string) => {
    const log = join(String(st.stateDir), 'kv.log');
    const from = statSync(log).size;
    process.kill(Number(st.kvPid), sig);
    const re = new RegExp(`kv ${name} (done|failed)[^\\n]*`);
    for (let i = 0; i < 6000; i++) {
      const m = re.exec(readFileSync(log, 'utf8').slice(from));
      if (m) {
        if (m[1] === 'failed') throw new Error(m[0]);
        return m[0];
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no answer to ${sig}`);
  };

  const expected = new Map<string, string>();
  try {
    console.log(`\n== ${label} ==`);
    const upArgs = ['up', 'demo', mnt, '--size', '512M'];
    if (valueThreshold !== undefined) upArgs.push('--value-threshold', String(valueThreshold));
    await glidekv(...upArgs);
    await phase('up', 'device daemon, loop device, mkfs.ext4, KV daemon');

    // Small keys and big ones, through the KV mount with cp.
    for (let i = 0; i < SMALL; i++) writeFileSync(join(src, `s${i}`), randomBytes(200 + ((i * 37) % 3000)));
    for (let i = 0; i < BIG; i++) writeFileSync(join(src, `b${i}`), randomBytes(BIG_SIZE));
    await sh(`mkdir ${mnt}/photos && cd ${src} && for f in *; do cp $f ${mnt}/photos/$f; done`);
    for (let i = 0; i < SMALL; i++) expected.set(`s${i}`, sha(readFileSync(join(src, `s${i}`))));
    for (let i = 0; i < BIG; i++) expected.set(`b${i}`, sha(readFileSync(join(src, `b${i}`))));
    await settle();
    await phase('write', `${SMALL} small keys, ${BIG} x ${(BIG_SIZE / 1048576).toFixed(1)} MiB keys with cp`);

    // Overwrite half the small keys and two big ones: dead bytes for reclaim.
    for (let i = 0; i < SMALL; i += 2) writeFileSync(join(src, `s${i}`), randomBytes(500));
    for (let i = 0; i < 2; i++) writeFileSync(join(src, `b${i}`), randomBytes(BIG_SIZE));
    await sh(`cd ${src} && for i in $(seq 0 2 ${SMALL - 1}); do cp s$i ${mnt}/photos/s$i; done; cp b0 b1 ${mnt}/photos/`);
    for (let i = 0; i < SMALL; i += 2) expected.set(`s${i}`, sha(readFileSync(join(src, `s${i}`))));
    for (let i = 0; i < 2; i++) expected.set(`b${i}`, sha(readFileSync(join(src, `b${i}`))));
    await settle();
    await phase('overwrite', `${SMALL / 2} small and 2 big keys rewritten`);

    const rec = await kvSignal(await statusOf(), 'SIGUSR1', 'reclaim');
    await settle();
    await phase('reclaim', rec.replace(/^kv reclaim done: /, ''));

    const forkOut = JSON.parse(await glidekv('fork', 'demo', 'demo-fork', '--json')) as { durationMs: number; frozenMs: number; uploadedBytes: number };
    await phase('fork', `live fork in ${forkOut.durationMs} ms (ext4 frozen ${forkOut.frozenMs} ms)`);

    // A write to the original after the fork must not show in the fork.
    await sh(`echo after-fork > ${mnt}/photos/late`);
    await glidekv('up', 'demo-fork', mnt2);
    const names = (await sh(`ls ${mnt2}/photos`)).split('\n').filter(Boolean).sort();
    let same = names.length === expected.size;
    for (const n of names) {
      const want = expected.get(n);
      if (!want || want !== sha(readFileSync(join(mnt2, 'photos', n)))) {
        same = false;
        console.log(`  MISMATCH ${n}`);
      }
    }
    if (!same) throw new Error(`the fork does not hold exactly the ${expected.size} keys written before it (it has ${names.length})`);
    const forkStats = await counters('demo-fork');
    rows.push({ run: label, phase: 'read fork', note: `${names.length} keys read back from the fork, all identical`, ...forkStats });
    console.log(`  read fork  ${names.length} keys read back, identical; 'late' absent from the fork`);

    await glidekv('down', mnt2);
    await glidekv('down', mnt);
    await phase('down', 'KV unmount, ext4 umount, losetup -d, device flush');
    return rows;
  } catch (err) {
    for (const m of [mnt2, mnt]) await glidekv('down', m).catch(() => undefined);
    throw err;
  }
}

function table(rows: Row[]): string {
  const head = ['run', 'phase', 'uploads', 're-uploads', 'uploaded MiB', 'what'];
  const body = rows.map((r) => [r.run, r.phase, String(r.uploads), String(r.reuploads), (r.uploadedBytes / 1048576).toFixed(2), r.note]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i >= 2 && i <= 4 ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...body.map(line)].join('\n');
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('the demo needs root (losetup, mount)');
  const root = mkdtempSync(join(tmpdir(), 'glidekv-demo-'));
  const rows: Row[] = [];
  try {
    rows.push(...(await demo('separated', join(root, 'a'), undefined)));
    rows.push(...(await demo('inline', join(root, 'b'), 0)));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  console.log('\nUploads per phase (glidekv volume stats; "read fork" = the fork volume\'s own counters):\n');
  console.log(table(rows));
  const rec = (run: string) => rows.find((r) => r.run === run && r.phase === 'reclaim')!;
  console.log(
    `\nreclaim uploaded ${(rec('separated').uploadedBytes / 1048576).toFixed(2)} MiB (${rec('separated').reuploads} re-uploads) with values separated ` +
      `vs ${(rec('inline').uploadedBytes / 1048576).toFixed(2)} MiB (${rec('inline').reuploads} re-uploads) with values inline.`,
  );
}

main().catch((err) => {
  console.error(`demo failed: ${(err as Error).message}`);
  process.exit(1);
});
