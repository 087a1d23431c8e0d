// The block layer's model test with a real kill -9: a child process (test/glidefs/model/kill-child.ts) runs a
// seeded plan of operations (create, writes one at a time or several in flight at once, flush, checkpoint,
// fork, snapshot, delete, close) on a directory store and sends itself SIGKILL at a chosen store request
// (after the request reached the store, or before). The parent then checks what the dead process left:
//  A. restart on the same machine (same catalog, cache, store; the lease names a dead pid): every
//     acknowledged write reads back (the operation in flight: per block, before or after it); every
//     acknowledged create/fork/delete is there; gc then leaves refcounts = block rows, nothing named missing,
//     and every volume reads the same after it. C. then each is flushed and this machine is lost too: a catalog
//     restored from the store reads exactly what the restart read.
//  B. loss of the machine (a copy of the store as the kill left it, a catalog restored from it alone, an
//     empty cache): every volume holds exactly its flushed bytes (a flush in flight: before or after).
// Default 5 runs (~30-60 s). GLIDEFS_KILL_SEED=<seed> replays (printed), GLIDEFS_KILL_RUNS hunts; a failing
// plan is written to a file named in the failure (GLIDEFS_KILL_PLAN=<file> replays that plan alone).
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import fc from 'fast-check';
import { it } from 'vitest';
import { BLOCK_SIZE, DirStore, GlideFs, GlideFsError, parseBlockKey, restoreCatalog } from '../../glidefs/index.js';
import { writeBytes, type KillOp, type KillPlan } from './model/kill-plan.js';

const BS = BLOCK_SIZE;
const envSeed = process.env.GLIDEFS_KILL_SEED;
const seed = envSeed !== undefined ? Number(envSeed) : (Date.now() ^ (process.pid << 6)) >>> 0;
const runs = Number(process.env.GLIDEFS_KILL_RUNS ?? 5);
const stats = new Map<string, number>();

// ------------------------------------------------------------- plans

type AOp =
  | { t: 'create'; blocks: number }
  | { t: 'write'; v: number; a: number; b: number; seed: number }
  | { t: 'writes'; v: number; ws: Array<{ a: number; b: number; seed: number }> }
  | { t: 'flush'; v: number }
  | { t: 'checkpoint'; v: number }
  | { t: 'fork'; v: number; snapshot: boolean }
  | { t: 'delete'; v: number }
  | { t: 'close'; v: number };

const v = fc.nat(15);
const w = fc.record({ a: fc.nat(1 << 24), b: fc.nat(1 << 24), seed: fc.nat() });
const aopArb: fc.Arbitrary<AOp> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ t: fc.constant('create' as const), blocks: fc.integer({ min: 1, max: 5 }) }) },
  { weight: 8, arbitrary: fc.record({ t: fc.constant('write' as const), v, a: w.map((x) => x.a), b: w.map((x) => x.b), seed: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('writes' as const), v, ws: fc.array(w, { minLength: 2, maxLength: 4 }) }) },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('flush' as const), v }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('checkpoint' as const), v }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('fork' as const), v, snapshot: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('delete' as const), v }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('close' as const), v }) },
);

interface Sim {
  size: number;
  snapshot: boolean;
}

/** Resolves abstract operations against the volumes they would create (every operation succeeds without a kill). */
function concrete(aops: AOp[]): KillOp[] {
  const vols = new Map<string, Sim>([['v0', { size: 3 * BS, snapshot: false }]]);
  const ops: KillOp[] = [{ t: 'create', vol: 'v0', blocks: 3 }];
  const pick = (n: number) => {
    const names = [...vols.keys()].sort();
    return names.length === 0 ? null : names[n % names.length];
  };
  const range = (size: number, a: number, b: number) => {
    const off = a % size;
    return { off, len: 1 + (b % Math.min(size - off, 3 * BS)) };
  };
  aops.forEach((o, i) => {
    if (o.t === 'create') {
      if (vols.size >= 5) return;
      vols.set(`v${i + 1}`, { size: o.blocks * BS, snapshot: false });
      ops.push({ t: 'create', vol: `v${i + 1}`, blocks: o.blocks });
      return;
    }
    const name = pick(o.v);
    if (!name) return;
    const s = vols.get(name)!;
    switch (o.t) {
      case 'write':
        if (!s.snapshot) ops.push({ t: 'write', vol: name, ...range(s.size, o.a, o.b), seed: o.seed });
        break;
      case 'writes': {
        if (s.snapshot) break;
        const ws: Array<{ off: number; len: number; seed: number }> = [];
        for (const x of o.ws) {
          const r = range(s.size, x.a, x.b);
          if (!ws.some((y) => y.off < r.off + r.len && r.off < y.off + y.len)) ws.push({ ...r, seed: x.seed });
        }
        ops.push({ t: 'writes', vol: name, ws });
        break;
      }
      case 'flush':
        ops.push({ t: 'flush', vol: name });
        break;
      case 'checkpoint':
        if (!s.snapshot) ops.push({ t: 'checkpoint', vol: name });
        break;
      case 'fork':
        if (vols.size >= 5) break;
        vols.set(`v${i + 1}`, { size: s.size, snapshot: o.snapshot });
        ops.push({ t: 'fork', src: name, dst: `v${i + 1}`, snapshot: o.snapshot });
        break;
      case 'delete':
        vols.delete(name);
        ops.push({ t: 'delete', vol: name });
        break;
      case 'close':
        ops.push({ t: 'close', vol: name });
        break;
    }
  });
  return ops;
}

// ------------------------------------------------------------- the model of what must survive

interface MV {
  size: number;
  snapshot: boolean;
  cur: Buffer;
  /** Writes in flight at the kill: per block, any subset of them may be applied. */
  inflight: Array<{ off: number; len: number; data: Buffer }>;
  /** Whole-volume candidates for the flushed view. */
  committed: Buffer[];
  /** The volume may or may not exist (its create/fork/delete was in flight). */
  maybe: boolean;
  /** Its delete was in flight: opening it may be refused E_FENCED (a tombstone); deleting again finishes it. */
  deleting: boolean;
}

function simulate(ops: KillOp[], acked: number, killed: boolean): Map<string, MV> {
  const vols = new Map<string, MV>();
  const fresh = (size: number, snapshot: boolean, bytes: Buffer, maybe: boolean): MV => ({
    size,
    snapshot,
    cur: Buffer.from(bytes),
    inflight: [],
    committed: [Buffer.from(bytes)],
    maybe,
    deleting: false,
  });
  const add = (list: Buffer[], b: Buffer) => {
    if (!list.some((x) => x.equals(b))) list.push(Buffer.from(b));
  };
  for (let i = 0; i < Math.min(ops.length, acked + (killed ? 1 : 0)); i++) {
    const o = ops[i];
    const done = i < acked;
    switch (o.t) {
      case 'create':
        vols.set(o.vol, fresh(o.blocks * BS, false, Buffer.alloc(o.blocks * BS), !done));
        break;
      case 'write':
      case 'writes': {
        const mv = vols.get(o.vol)!;
        for (const x of o.t === 'write' ? [o] : o.ws) {
          const data = writeBytes(x.len, x.seed);
          if (done) data.copy(mv.cur, x.off);
          else mv.inflight.push({ off: x.off, len: x.len, data });
        }
        break;
      }
      case 'flush': {
        const mv = vols.get(o.vol)!;
        if (done) mv.committed = [Buffer.from(mv.cur)];
        else add(mv.committed, mv.cur);
        break;
      }
      case 'fork': {
        const mv = vols.get(o.src)!;
        if (done) mv.committed = [Buffer.from(mv.cur)];
        else add(mv.committed, mv.cur);
        vols.set(o.dst, fresh(mv.size, o.snapshot, mv.cur, !done));
        break;
      }
      case 'delete':
        if (done) vols.delete(o.vol);
        else {
          vols.get(o.vol)!.maybe = true;
          vols.get(o.vol)!.deleting = true;
        }
        break;
      default:
        break;
    }
  }
  return vols;
}

/** Per block: the bytes before the writes in flight with any subset of them applied. */
function blockOk(mv: MV, got: Buffer, i: number): boolean {
  const ws = mv.inflight.filter((x) => x.off < (i + 1) * BS && i * BS < x.off + x.len);
  const blk = got.subarray(i * BS, (i + 1) * BS);
  for (let mask = 0; mask < 1 << ws.length; mask++) {
    const b = Buffer.from(mv.cur.subarray(i * BS, (i + 1) * BS));
    ws.forEach((x, j) => {
      if (!(mask & (1 << j))) return;
      const from = Math.max(x.off, i * BS);
      const to = Math.min(x.off + x.len, (i + 1) * BS);
      x.data.copy(b, from - i * BS, from - x.off, to - x.off);
    });
    if (b.equals(blk)) return true;
  }
  return false;
}

// ------------------------------------------------------------- one run

function runChild(planFile: string): Promise<{ out: string; code: number | null; signal: string | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'model', 'kill-child.ts'), planFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += `stderr: ${d}`));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ out, code, signal });
    });
  });
}

async function runKill(plan: KillPlan, root: string): Promise<void> {
  const planFile = join(root, 'plan.json');
  writeFileSync(planFile, JSON.stringify(plan));
  const r = await runChild(planFile);
  const acks = r.out.split('\n').filter((l) => l.startsWith('ACK ')).length;
  const killed = r.signal === 'SIGKILL';
  const why = (msg: string) => {
    const keep = join(tmpdir(), `glidefs-kill-plan-${Date.now()}.json`);
    writeFileSync(keep, JSON.stringify(plan, null, 1));
    return new Error(`${msg}\nplan (replay: GLIDEFS_KILL_PLAN=${keep}): killAt ${plan.killAt} land ${plan.land}, ${acks} of ${plan.ops.length} ops acknowledged${killed ? `, op ${acks} in flight: ${JSON.stringify(plan.ops[acks] ?? 'final close')}` : ''}\nchild: ${r.out.slice(-1500)}`);
  };
  if (!killed && !r.out.includes('DONE')) throw why(`child ended without the kill: code ${r.code} signal ${r.signal}`);
  stats.set(killed ? `killed in op ${acks < plan.ops.length ? plan.ops[acks].t : 'final close'}` : 'not killed (plan done)', (stats.get(killed ? `killed in op ${acks < plan.ops.length ? plan.ops[acks].t : 'final close'}` : 'not killed (plan done)') ?? 0) + 1);
  const model = simulate(plan.ops, acks, killed);
  // B's store: the objects as the kill left them
  cpSync(plan.objects, join(root, 'objects-lost'), { recursive: true });

  // volumes whose create/fork was in flight and that the restart does not hold: the store may hold them (restore
  // brings them back, as the in-process model's maybeVols)
  const storeOnly = new Map<string, MV>();
  // A. restart on the same machine
  const store = new DirStore(plan.objects, { fsync: false });
  const g = await GlideFs.open({ store, catalogPath: plan.catalog, cacheDir: plan.cache, gcGraceMs: 0 });
  try {
    const check = async (when: string) => {
      const names = new Set(g.listVolumes().map((x) => x.name));
      for (const [name, mv] of [...model]) {
        if (!names.has(name)) {
          if (!mv.maybe) throw why(`${when}: volume '${name}' is gone`);
          if (!mv.deleting) storeOnly.set(name, mv);
          model.delete(name);
          continue;
        }
        let got: Buffer;
        try {
          const vol = await g.openVolume(name);
          got = await vol.read(0, mv.size);
          await vol.close();
        } catch (err) {
          if (mv.deleting && err instanceof GlideFsError && err.code === 'E_FENCED') {
            await g.deleteVolume(name); // the tombstone is in the store: deleting again finishes it
            model.delete(name);
            continue;
          }
          throw why(`${when}: volume '${name}': ${String(err)}`);
        }
        for (let i = 0; i < mv.size / BS; i++) {
          if (!blockOk(mv, got, i)) throw why(`${when}: volume '${name}' block ${i} holds neither its acknowledged bytes nor those of the write in flight`);
        }
        mv.cur = got;
        mv.inflight = [];
        mv.maybe = false;
        mv.deleting = false;
      }
      for (const n of names) if (!model.has(n)) throw why(`${when}: volume '${n}' exists but was never created (or was deleted)`);
    };
    await check('A (restart)');
    const gc = await g.gc({ graceMs: 0 });
    if (gc.failed !== 0) throw why(`A: gc failed ${gc.failed} deletes`);
    const named = new Set(g.catalog.objectKeys());
    const present = new Set<string>();
    for await (const k of store.list('blocks/')) present.add(k);
    for (const k of named) if (!present.has(k)) throw why(`A: after gc the catalog names ${k}, missing from the store`);
    for (const k of present) if (parseBlockKey('', k) && !named.has(k)) throw why(`A: after gc orphan ${k} is left`);
    const db = new Database(plan.catalog, { readonly: true });
    try {
      const refs = JSON.stringify(db.prepare('SELECT key, refcount FROM objects ORDER BY key').raw().all());
      const rows = JSON.stringify(db.prepare("SELECT key, count(*) FROM blocks WHERE key != '' GROUP BY key ORDER BY key").raw().all());
      if (refs !== rows) throw why(`A: after gc refcounts differ from the block rows naming them:\n${refs}\n${rows}`);
    } finally {
      db.close();
    }
    await check('A (after gc)');
    // what the restart holds reaches the store: flush every volume, then lose this machine too (C)
    for (const [name, mv] of model) {
      if (mv.snapshot) continue;
      const vol = await g.openVolume(name);
      await vol.flush();
      await vol.close();
    }
  } finally {
    await g.close();
  }
  await restoreCatalog(store, '', join(root, 'restored-c.db'));
  const c = await GlideFs.open({ store, catalogPath: join(root, 'restored-c.db'), cacheDir: join(root, 'cache-c'), gcGraceMs: 0 });
  try {
    const names = new Set(c.listVolumes().map((x) => x.name));
    for (const [name, mv] of model) {
      if (!names.has(name)) throw why(`C (restart, flush, machine loss): volume '${name}' is not restored`);
      const vol = await c.openVolume(name);
      const got = await vol.read(0, mv.size);
      await vol.close();
      if (!got.equals(mv.cur)) throw why(`C (restart, flush, machine loss): volume '${name}' differs from what the restart read`);
    }
    for (const n of names) {
      if (model.has(n)) continue;
      const mv = storeOnly.get(n);
      if (!mv) throw why(`C: volume '${n}' is restored but was deleted`);
      const vol = await c.openVolume(n);
      const got = await vol.read(0, mv.size);
      await vol.close();
      if (!mv.committed.some((b) => b.equals(got))) throw why(`C: volume '${n}' (its create/fork was cut) is restored with other bytes`);
    }
  } finally {
    await c.close();
  }

  // B. the machine is lost: a catalog from the store as the kill left it, an empty cache
  const lost = new DirStore(join(root, 'objects-lost'), { fsync: false });
  await restoreCatalog(lost, '', join(root, 'restored.db'));
  const h = await GlideFs.open({ store: lost, catalogPath: join(root, 'restored.db'), cacheDir: join(root, 'cache-new'), gcGraceMs: 0 });
  try {
    const want = simulate(plan.ops, acks, killed);
    const names = new Set(h.listVolumes().map((x) => x.name));
    for (const [name, mv] of want) {
      if (!names.has(name)) {
        if (!mv.maybe) throw why(`B (machine loss): volume '${name}' is not restored`);
        continue;
      }
      let got: Buffer;
      try {
        const vol = await h.openVolume(name);
        got = await vol.read(0, mv.size);
        await vol.close();
      } catch (err) {
        throw why(`B (machine loss): volume '${name}': ${String(err)}`);
      }
      if (!mv.committed.some((c) => c.equals(got))) throw why(`B (machine loss): volume '${name}' does not hold its flushed bytes (${mv.committed.length} allowed)`);
    }
    for (const n of names) if (!want.has(n)) throw why(`B (machine loss): volume '${n}' is restored but was never created (or was deleted)`);
  } finally {
    await h.close();
    await lost.close().catch(() => undefined);
  }
}

/** Rough store requests per operation, so the kill point (a fraction of the plan) falls inside the plan. */
const REQS: Record<KillOp['t'], number> = { create: 5, write: 0, writes: 0, flush: 3, checkpoint: 3, fork: 8, delete: 6, close: 1 };

function planFor(aops: AOp[], permille: number, land: boolean, maxLogRecords: number, root: string): KillPlan {
  mkdirSync(join(root, 'objects'), { recursive: true });
  const ops = concrete(aops);
  const est = ops.reduce((n, o) => n + REQS[o.t], 0) + 4;
  const killAt = 1 + Math.floor((permille / 1000) * est * 0.6); // the estimate is high: most plans end by then
  return { objects: join(root, 'objects'), catalog: join(root, 'catalog.db'), cache: join(root, 'cache'), maxLogRecords, killAt, land, ops };
}

it('kill -9 of a real process at a store request: restart keeps every acknowledged write, machine loss every flushed byte', async () => {
  const replay = process.env.GLIDEFS_KILL_PLAN;
  if (replay !== undefined) {
    const root = mkdtempSync(join(tmpdir(), 'glidefs-kill-'));
    const plan = JSON.parse(readFileSync(replay, 'utf8')) as KillPlan;
    mkdirSync(join(root, 'objects'));
    try {
      await runKill({ ...plan, objects: join(root, 'objects'), catalog: join(root, 'catalog.db'), cache: join(root, 'cache') }, root);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
    return;
  }
  console.log(`glidefs kill model: GLIDEFS_KILL_SEED=${seed} runs ${runs}`);
  await fc.assert(
    fc.asyncProperty(
      fc.array(aopArb, { minLength: 3, maxLength: 25 }),
      fc.nat(999), // the kill point: a fraction of the plan's estimated store requests
      fc.boolean(),
      fc.constantFrom(2, 5, 10_000),
      async (aops, permille, land, maxLogRecords) => {
        const root = mkdtempSync(join(tmpdir(), 'glidefs-kill-'));
        try {
          await runKill(planFor(aops, permille, land, maxLogRecords, root), root);
        } finally {
          rmSync(root, { recursive: true, force: true });
        }
      },
    ),
    // each run starts a process: shrinking is bounded in time (the failing plan's file is the reproducer)
    { numRuns: runs, seed, interruptAfterTimeLimit: 60_000 + 10_000 * runs, markInterruptAsFailure: false },
  ).finally(() => console.log(`kill model runs: ${[...stats].map(([k, n]) => `${k}: ${n}`).join(', ')}`));
}, 240_000 + 20_000 * runs);
