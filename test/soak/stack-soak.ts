/**
 * Reliability soak of the whole stack as a user drives it, on the real kernel (FUSE, loop, ext4) and a MinIO
 * server of its own: `glidekv up`, puts/gets/deletes through the KV mount (keys as files), writes + fsync through
 * the device (files on the stack's ext4), `down` + `up`, kill -9 of the device daemon or the KV daemon at a random
 * moment (then `down`), MinIO killed and restarted mid-run, machine loss (`glidekv restore` onto a new catalog and
 * cache, after a clean down or after kill -9 of both daemons), a live `fork` (mounted and checked), a `volume
 * snapshot` of the live volume, `gc --grace 0s` while up.
 *
 * Checked after every step: every put acknowledged by close(2) and every delete acknowledged by unlink(2) is there
 * (an operation in flight at a kill may be old or new, nothing else), every byte acknowledged by fsync(2) is there;
 * `glidekv status` tells the truth (up with no problems, or the missing piece named after a kill, the store wait
 * during an outage); after `down` no mount, loop device or process is left; every failing command says one line
 * `glidekv: ...` and never a credential.
 *
 * Replay: the seed fixes every choice (the kill moments are times, so a replay is close, not exact).
 *   npx tsx test/soak/stack-soak.ts --seed 123 --steps 40      (root, /dev/fuse, loop devices, MinIO binary)
 * test/soak/stack-soak.test.ts runs a short fixed variant.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mulberry32 } from '../../lib/prng.js';
import { spawn } from 'node:child_process';
import { BIN, cleanupUnder, glidekv, leftovers } from '../mount/device-helpers.js';
import type { ShResult } from '../mount/child-process.js';
import { RestartableMinio } from '../mount/restartable-minio.js';

export type StepKind =
  | 'kv'
  | 'dev'
  | 'downup'
  | 'killkv'
  | 'killdev'
  | 'outage'
  | 'longoutage'
  | 'outagedown'
  | 'outageup'
  | 'killup'
  | 'killdown'
  | 'loss'
  | 'crashloss'
  | 'fork'
  | 'snapshot'
  | 'gc';

const WEIGHTS: Array<[StepKind, number]> = [
  ['kv', 5],
  ['dev', 3],
  ['downup', 1],
  ['killkv', 2],
  ['killdev', 2],
  ['outage', 1],
  ['longoutage', 1],
  ['outagedown', 1],
  ['outageup', 1],
  ['killup', 1],
  ['killdown', 1],
  ['loss', 1],
  ['crashloss', 1],
  ['fork', 1],
  ['snapshot', 1],
  ['gc', 1],
];

export interface SoakOptions {
  seed: number;
  /** Number of random steps (ignored when `plan` is given). */
  steps?: number;
  /** A fixed sequence of steps (the short variant). */
  plan?: StepKind[];
  log?: (line: string) => void;
  /** Keep the root directory (logs) when the run fails. */
  keepOnFailure?: boolean;
}

export interface SoakResult {
  seed: number;
  steps: Array<{ kind: StepKind; ms: number; note: string }>;
  root: string;
}

const KEYS = 24;
const DEV_FILES = 3;
const DEV_FILE_SIZE = 256 * 1024;
const OP_TIMEOUT_MS = 150_000;
/** The stack's --store-retry-timeout: outages shorter than this are ridden through, longer ones fail with EIO. */
const RETRY_S = 20;

class SoakFailure extends Error {}

/** A file operation on a mount, bounded in time (a hang is a finding, not a stuck soak). */
async function bounded<T>(what: string, p: Promise<T>, ms = OP_TIMEOUT_MS): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new SoakFailure(`${what}: no answer in ${ms / 1000} s`)), ms)))]);
  } finally {
    clearTimeout(t);
  }
}

export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const rand = mulberry32(opts.seed);
  const int = (n: number) => Math.floor(rand() * n);
  const root = mkdtempSync(join(tmpdir(), 'glidekv-soak-'));
  const mnt = join(root, 'mnt');
  const mnt2 = join(root, 'mnt2');
  mkdirSync(mnt);
  mkdirSync(mnt2);
  const minio = await RestartableMinio.create();
  const secrets = [minio.password, minio.user];
  const env: Record<string, string> = {
    GLIDEKV_STORE: 's3://soak/stack',
    GLIDEKV_CATALOG: join(root, 'catalog.db'),
    GLIDEKV_CACHE: join(root, 'cache'),
    GLIDEKV_RUN: join(root, 'run'),
    ...minio.awsEnv(),
  };
  const stateDir = join(root, 'run', 'v');
  const devDir = join(stateDir, 'ext4', 'soak');
  const result: SoakResult = { seed: opts.seed, steps: [], root };
  const where = () => `(seed ${opts.seed}, step ${result.steps.length})`;
  const fail = (msg: string): never => {
    throw new SoakFailure(`${msg} ${where()}`);
  };

  // The acknowledged state.
  const kv = new Map<string, Buffer>();
  /** Per key: values it may also hold (an operation in flight at a kill); null = deleted. */
  const maybe = new Map<string, Array<Buffer | null>>();
  const dev: Buffer[] = Array.from({ length: DEV_FILES }, () => Buffer.alloc(DEV_FILE_SIZE));
  /** Ranges of device files written but not acknowledged at a kill: any bytes allowed there. */
  const devLoose: Array<{ file: number; off: number; len: number }> = [];
  let isUp = false;
  let version = 0;

  /** Runs glidekv; checks the one-line, credential-free error rule on failure. */
  const run = async (args: string[], timeoutMs = 300_000): Promise<ShResult> => {
    const r = await glidekv(args, env, timeoutMs);
    const all = r.stdout + r.stderr;
    for (const s of secrets) if (all.includes(s)) fail(`glidekv ${args.join(' ')} printed a credential`);
    if (r.code !== 0) {
      const err = r.stderr.trim();
      if (!/^glidekv: \S/.test(err) || err.includes('\n')) fail(`glidekv ${args.join(' ')} failed (exit ${r.code}) without a one-line message: ${JSON.stringify(err.slice(0, 600))}`);
    }
    return r;
  };
  const must = async (args: string[], timeoutMs?: number): Promise<string> => {
    const r = await run(args, timeoutMs);
    if (r.code !== 0) fail(`glidekv ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  const statusJson = async (): Promise<Array<{ state: string; problems: string[]; kvPid: number | null; devicePid: number | null; mountpoint: string; storeOutage: unknown }>> =>
    JSON.parse(await must(['status', '--json']));

  const nothingLeft = async (what: string) => {
    const left = leftovers(root);
    if (left.mounts.length || left.loops.length || left.pids.length) fail(`after ${what}: left behind ${JSON.stringify(left)}`);
    const st = await statusJson();
    if (st.length) fail(`after ${what}: status still lists ${st.map((s) => s.mountpoint).join(', ')}`);
  };

  const upArgs = ['up', 'v', mnt, '--size', '64M', '--store-retry-timeout', `${RETRY_S}s`];
  const up = async () => {
    await must(upArgs);
    isUp = true;
    const st = await statusJson();
    if (st.length !== 1 || st[0].state !== 'up' || st[0].problems.length) fail(`status after up: ${JSON.stringify(st)}`);
    if (!existsSync(join(mnt, 'n'))) await bounded('mkdir n', fsp.mkdir(join(mnt, 'n')));
    if (!existsSync(devDir)) {
      // The device files: made once, fsynced with their directory.
      mkdirSync(devDir);
      for (let f = 0; f < DEV_FILES; f++) {
        const fh = await fsp.open(join(devDir, `d${f}`), 'w');
        await fh.write(dev[f], 0, DEV_FILE_SIZE, 0);
        await fh.sync();
        await fh.close();
      }
      const d = await fsp.open(devDir, 'r');
      await d.sync();
      await d.close();
    }
  };
  const down = async (what = 'down') => {
    await must(['down', mnt]);
    isUp = false;
    await nothingLeft(what);
  };

  const value = (key: string) => {
    const len = rand() < 0.25 ? 131072 + int(300_000) : 1 + int(3000);
    const v = Buffer.alloc(len, 1 + int(255));
    v.write(`${key}#${++version}#`, 0, Math.min(len, 24));
    return v;
  };

  /** One KV operation through the mount; `inflight` is set while it is not acknowledged. */
  let inflight: { key: string; value: Buffer | null } | null = null;
  let acks = 0;
  let lastAck = 0;
  const kvOp = async () => {
    const key = `k${int(KEYS)}`;
    const file = join(mnt, 'n', key);
    const r = rand();
    if (r < 0.2) {
      inflight = { key, value: null };
      try {
        await bounded(`unlink ${key}`, fsp.unlink(file));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        if (kv.has(key) && !maybe.has(key)) fail(`unlink ${key}: ENOENT but it was acknowledged (${kv.get(key)!.length} bytes)`);
      }
      kv.delete(key);
      maybe.delete(key);
    } else if (r < 0.4) {
      if (maybe.has(key)) return;
      const got = await bounded(`read ${key}`, fsp.readFile(file)).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      });
      const want = kv.get(key);
      if (!(got === undefined ? want === undefined : want !== undefined && got.equals(want))) {
        fail(`read ${key} through the mount: ${got ? got.length : 'no'} bytes, acknowledged ${want ? want.length : 'no'} bytes`);
      }
      return;
    } else {
      const v = value(key);
      inflight = { key, value: v };
      await bounded(`write ${key}`, fsp.writeFile(file, v));
      kv.set(key, v);
      maybe.delete(key);
    }
    inflight = null;
    acks++;
    lastAck = Date.now();
  };

  /** One write + fsync of a device file (through ext4, the loop device and the device daemon). */
  let devInflight: { file: number; off: number; len: number } | null = null;
  const devOp = async () => {
    const f = int(DEV_FILES);
    const len = 1 + int(64 * 1024);
    const off = int(DEV_FILE_SIZE - len);
    const bytes = Buffer.alloc(len);
    for (let i = 0; i < len; i++) bytes[i] = int(256);
    devInflight = { file: f, off, len };
    const fh = await bounded(`open d${f}`, fsp.open(join(devDir, `d${f}`), 'r+'));
    try {
      await bounded(`write d${f}`, fh.write(bytes, 0, len, off));
      await bounded(`fsync d${f}`, fh.sync());
    } finally {
      await fh.close().catch(() => undefined);
    }
    bytes.copy(dev[f], off);
    devInflight = null;
    acks++;
    lastAck = Date.now();
  };

  /** Everything acknowledged is there (and the in-flight leftovers are resolved to what the disk holds). */
  const verify = async (at: string, dir = mnt, model = kv, loose = maybe) => {
    const names = new Set(await bounded('readdir', fsp.readdir(join(dir, 'n'))));
    for (let k = 0; k < KEYS; k++) {
      const key = `k${k}`;
      const got = names.has(key) ? await bounded(`read ${key}`, fsp.readFile(join(dir, 'n', key))) : null;
      const want = model.get(key) ?? null;
      const same = (a: Buffer | null, b: Buffer | null) => (a === null || b === null ? a === b : a.equals(b));
      if (same(got, want)) {
        loose.delete(key);
        continue;
      }
      const alt = loose.get(key);
      if (alt && alt.some((a) => same(got, a))) {
        if (got) model.set(key, got);
        else model.delete(key);
        loose.delete(key);
        continue;
      }
      fail(`${at}: key ${key} holds ${got ? `${got.length} bytes (${JSON.stringify(got.subarray(0, 24).toString('latin1'))})` : 'nothing'}, acknowledged ${want ? `${want.length} bytes (${JSON.stringify(want.subarray(0, 24).toString('latin1'))})` : 'nothing'}`);
    }
    if (dir !== mnt) return;
    for (let f = 0; f < DEV_FILES; f++) {
      const got = await bounded(`read d${f}`, fsp.readFile(join(devDir, `d${f}`)));
      for (const l of devLoose.filter((x) => x.file === f)) got.copy(dev[f], l.off, l.off, l.off + l.len);
      if (!got.equals(dev[f])) {
        let i = 0;
        while (got[i] === dev[f][i]) i++;
        fail(`${at}: device file d${f} differs from its fsynced bytes at offset ${i} (length ${got.length})`);
      }
    }
    devLoose.length = 0;
  };

  /** Runs kv (and device) operations until `stop()` says so; returns the number of acknowledged operations. */
  const loadUntil = async (stopped: () => boolean, withDev: boolean): Promise<{ ops: number; error?: string }> => {
    let ops = 0;
    try {
      while (!stopped()) {
        if (withDev && rand() < 0.3) await devOp();
        else await kvOp();
        ops++;
      }
      return { ops };
    } catch (err) {
      if (err instanceof SoakFailure && !stopped()) throw err;
      return { ops, error: (err as Error).message };
    }
  };

  const markInflight = () => {
    const i = inflight as { key: string; value: Buffer | null } | null;
    if (i) {
      const alts = maybe.get(i.key) ?? [];
      alts.push(i.value);
      maybe.set(i.key, alts);
    }
    const d = devInflight as { file: number; off: number; len: number } | null;
    if (d) devLoose.push(d);
    inflight = null;
    devInflight = null;
  };

  const killAndDown = async (which: 'kv' | 'device', note: string[]) => {
    const [st] = await statusJson();
    const pid = which === 'kv' ? st.kvPid : st.devicePid;
    if (!pid) fail(`status names no ${which} pid`);
    let killed = false;
    const delay = 30 + int(1200);
    const load = loadUntil(() => killed, which === 'device');
    await new Promise((r) => setTimeout(r, delay));
    process.kill(pid!, 'SIGKILL');
    killed = true;
    const l = await load;
    markInflight();
    note.push(`kill -9 ${which} after ${delay} ms, ${l.ops} ops acked${l.error ? `, then: ${l.error.split('\n')[0].slice(0, 80)}` : ''}`);
    // status tells the truth: the killed daemon is named
    for (const end = Date.now() + 10_000; ; await new Promise((r) => setTimeout(r, 100))) {
      const [s] = await statusJson();
      const want = which === 'kv' ? 'kv daemon not running' : 'device daemon not running';
      if (s && s.state === 'degraded' && s.problems.includes(want)) break;
      if (Date.now() > end) fail(`status after kill -9 of the ${which} daemon: ${JSON.stringify(s)}`);
    }
    await down(`down after kill -9 of the ${which} daemon`);
  };

  /** Runs glidekv ARGS and kill -9s it after `ms` (unless it ended before): 'killed' or 'exit N'. */
  const killedAfter = (args: string[], ms: number): Promise<string> =>
    new Promise((resolve) => {
      const c = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: 'ignore' });
      const t = setTimeout(() => c.kill('SIGKILL'), ms);
      c.on('exit', (code, sig) => {
        clearTimeout(t);
        resolve(sig ? 'killed' : `exit ${code}`);
      });
    });

  const wipeAndRestore = async (note: string[]) => {
    rmSync(env.GLIDEKV_CATALOG, { force: true });
    rmSync(env.GLIDEKV_CATALOG + '-wal', { force: true });
    rmSync(env.GLIDEKV_CATALOG + '-shm', { force: true });
    rmSync(env.GLIDEKV_CACHE, { recursive: true, force: true });
    const out = await must(['restore', '--json']);
    note.push(`restore: ${out.trim().replace(/\s+/g, ' ').slice(0, 120)}`);
  };

  let forks = 0;
  const steps: StepKind[] = opts.plan ?? [];
  if (!opts.plan) {
    const total = WEIGHTS.reduce((a, [, w]) => a + w, 0);
    for (let i = 0; i < (opts.steps ?? 20); i++) {
      let x = rand() * total;
      steps.push(WEIGHTS.find(([, w]) => (x -= w) < 0)![0]);
    }
  }

  let ok = false;
  try {
    await minio.start();
    await minio.makeBucket('soak');
    log(`soak: seed ${opts.seed}, root ${root}, MinIO ${minio.endpoint}, plan ${steps.join(' ')}`);
    await up();
    for (const kind of steps) {
      const t0 = Date.now();
      const note: string[] = [];
      if (!isUp) await up();
      switch (kind) {
        case 'kv': {
          const n = 5 + int(20);
          for (let i = 0; i < n; i++) await kvOp();
          note.push(`${n} ops`);
          break;
        }
        case 'dev': {
          const n = 1 + int(4);
          for (let i = 0; i < n; i++) await devOp();
          note.push(`${n} writes+fsync`);
          break;
        }
        case 'downup':
          await down();
          await up();
          break;
        case 'killkv':
          await killAndDown('kv', note);
          await up();
          break;
        case 'killdev':
          await killAndDown('device', note);
          await up();
          break;
        case 'outage': {
          // MinIO killed; puts wait on their fsync; status names the wait; MinIO back on the same port and data.
          await minio.stop();
          const ms = 2000 + int(5000);
          const t = Date.now();
          let over = false;
          const load = loadUntil(() => over, rand() < 0.5);
          let sawWait = false;
          while (Date.now() - t < ms) {
            const [s] = await statusJson();
            if (s?.storeOutage) sawWait = true;
            await new Promise((r) => setTimeout(r, 300));
          }
          await minio.start();
          const outageMs = Date.now() - t; // MinIO's own start counts: the store answers again only now
          over = true;
          const l = await load;
          if (l.error && outageMs < (RETRY_S - 3) * 1000) fail(`an operation failed during a ${outageMs} ms store outage (retry bound ${RETRY_S} s): ${l.error}`);
          if (l.error) {
            // the outage (with MinIO's start on a loaded machine) came near the bound: a failure is allowed, then down + up
            markInflight();
            await down(`down after a ${outageMs} ms outage`);
          }
          note.push(`store down ${outageMs} ms, ${l.ops} ops${l.error ? `, then: ${l.error.slice(0, 60)}` : ''}, status showed the wait: ${sawWait}`);
          break;
        }
        case 'longoutage': {
          // Longer than the retry bound: operations fail (EIO/EROFS, not a hang past the bound); once MinIO is back,
          // down + up bring every acknowledged put back.
          await minio.stop();
          const t = Date.now();
          const acks0 = acks;
          let over = false;
          const load = loadUntil(() => over, true);
          const first = await Promise.race([load, new Promise<'running'>((r) => setTimeout(() => r('running'), (RETRY_S + 50) * 1000))]);
          if (first === 'running') {
            const i = inflight as { key: string; value: Buffer | null } | null;
            fail(
              `no operation failed ${RETRY_S + 50} s into an outage (retry bound ${RETRY_S} s): ${acks - acks0} acknowledged meanwhile, ` +
                `the last ${Date.now() - lastAck} ms ago; in flight: ${i ? `${i.value ? 'put' : 'delete'} ${i.key}` : devInflight ? 'device write' : 'none'}`,
            );
          }
          over = true;
          const l = await load;
          markInflight();
          note.push(`${l.ops} ops, then after ${Date.now() - t} ms: ${(l.error ?? 'no error').split('\n')[0].slice(0, 80)}`);
          await minio.start();
          await down('down after an outage past the retry bound');
          break;
        }
        case 'outagedown': {
          // The store goes away and `down` runs: it ends (the device daemon's last flush waits, then fails or
          // completes) with a clear outcome; after MinIO is back a second down finishes, up has everything.
          await kvOp();
          await minio.stop();
          const restart = new Promise((r) => setTimeout(r, 1000 + int(RETRY_S * 1000))).then(() => minio.start());
          const d = await run(['down', mnt]);
          await restart;
          note.push(d.code === 0 ? 'down went through' : `down: ${d.stderr.trim().slice(0, 100)}`);
          if (d.code !== 0) await must(['down', mnt]);
          isUp = false;
          await nothingLeft('down during an outage');
          break;
        }
        case 'outageup': {
          // up while the store is away: one line, nothing left behind.
          await down();
          await minio.stop();
          const r = await run(upArgs);
          await minio.start();
          if (r.code === 0) fail('up succeeded with the store down');
          note.push(r.stderr.trim().slice(0, 100));
          await nothingLeft('a failed up');
          break;
        }
        case 'killup': {
          // kill -9 of `glidekv up` at a random moment: down (if anything is recorded) leaves nothing behind.
          await down();
          const ms = 100 + int(8000);
          const r = await killedAfter(['up', ...upArgs.slice(1)], ms);
          note.push(`up killed after ${ms} ms (${r})`);
          const d = await run(['down', mnt]);
          if (d.code !== 0 && !/nothing is up at/.test(d.stderr)) fail(`down after a killed up: ${d.stderr.trim()}`);
          await nothingLeft('down after a killed up');
          break;
        }
        case 'killdown': {
          // kill -9 of `glidekv down` at a random moment: a second down finishes the job.
          const ms = 100 + int(4000);
          const r = await killedAfter(['down', mnt], ms);
          note.push(`down killed after ${ms} ms (${r})`);
          const d = await run(['down', mnt]);
          if (d.code !== 0 && !/nothing is up at/.test(d.stderr)) fail(`down after a killed down: ${d.stderr.trim()}`);
          isUp = false;
          await nothingLeft('down after a killed down');
          break;
        }
        case 'loss':
          await down();
          await wipeAndRestore(note);
          await up();
          break;
        case 'crashloss': {
          // kill -9 of both daemons (the machine dies), down cleans the kernel side, then a new catalog and cache.
          const [st] = await statusJson();
          let killed = false;
          const load = loadUntil(() => killed, true);
          await new Promise((r) => setTimeout(r, 30 + int(800)));
          process.kill(st.kvPid!, 'SIGKILL');
          process.kill(st.devicePid!, 'SIGKILL');
          killed = true;
          const l = await load;
          markInflight();
          note.push(`both killed after ${l.ops} ops`);
          await down('down after the machine died');
          await wipeAndRestore(note);
          await up();
          break;
        }
        case 'fork': {
          const name = `f${++forks}`;
          const at = new Map(kv);
          const atLoose = new Map([...maybe].map(([k, v]) => [k, [...v]]));
          await must(['fork', 'v', name]);
          await must(['up', name, mnt2]);
          await verify(`fork ${name}`, mnt2, at, atLoose);
          await must(['down', mnt2]);
          await must(['volume', 'delete', name]);
          note.push(name);
          break;
        }
        case 'snapshot': {
          const name = `s${++forks}`;
          const r = await run(['volume', 'snapshot', 'v', name]);
          note.push(r.code === 0 ? `snapshot ${name} taken` : `refused: ${r.stderr.trim()}`);
          if (r.code === 0) await must(['volume', 'delete', name]);
          break;
        }
        case 'gc': {
          const out = await must(['gc', '--grace', '0s', '--json']);
          const j = JSON.parse(out) as { deletedObjects: number; orphansDeleted: number; logRecordsDeleted: number };
          note.push(`gc deleted ${j.deletedObjects} objects, ${j.orphansDeleted} orphans, ${j.logRecordsDeleted} log records`);
          break;
        }
      }
      if (!isUp) await up();
      await verify(`after ${kind}`);
      const [st] = await statusJson();
      if (!st || st.state !== 'up' || st.problems.length) fail(`status after ${kind}: ${JSON.stringify(st)}`);
      // Now and then the store alone: down, cache gone, up, verify (reads come from the store).
      result.steps.push({ kind, ms: Date.now() - t0, note: note.join('; ') });
      log(`soak step ${result.steps.length}/${steps.length} ${kind} ${Date.now() - t0} ms ${note.join('; ')}`);
    }
    await down('the last down');
    await wipeAndRestore([]);
    await up();
    await verify('after the final restore');
    await down('the final down');
    ok = true;
    return result;
  } finally {
    if (!ok) {
      log(`soak FAILED (seed ${opts.seed}); logs under ${root}/run`);
      for (const f of ['device.log', 'kv.log']) {
        try {
          const t = readFileSync(join(stateDir, f), 'utf8').trim().split('\n').slice(-6).join('\n  ');
          log(`${f}:\n  ${t}`);
        } catch {
          /* none */
        }
      }
    }
    // Clean up whatever happened: stacks, mounts, loops, processes, MinIO.
    for (const m of [mnt2, mnt]) await glidekv(['down', m], env, 300_000).catch(() => undefined);
    for (const p of leftovers(root).pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await cleanupUnder(root);
    await minio.destroy();
    if (ok || !opts.keepOnFailure) {
      try {
        rmSync(root, { recursive: true, force: true });
      } catch {
        /* a lazy unmount still in use */
      }
    }
  }
}

if (process.argv[1] && process.argv[1].endsWith('stack-soak.ts')) {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? process.argv[i + 1] : undefined;
  };
  const seed = arg('--seed') !== undefined ? Number(arg('--seed')) : Date.now() >>> 0;
  const steps = Number(arg('--steps') ?? 30);
  const plan = arg('--plan')?.split(',') as StepKind[] | undefined;
  runSoak({ seed, steps, plan, keepOnFailure: process.argv.includes('--keep') }).then(
    (r) => {
      console.log(`soak passed: seed ${r.seed}, ${r.steps.length} steps`);
    },
    (err) => {
      console.error(`soak failed: ${(err as Error).message}`);
      process.exitCode = 1;
    },
  );
}
