/**
 * The block layer's model test: GlideFs against plain byte arrays.
 *
 * Model, per volume: `current` (what a read must return) and `committed` (the
 * flushed view: what must survive the loss of the machine; a list of
 * candidates while a flush's outcome is unknown — it failed or a crash cut
 * it — until the next successful flush). Volumes whose create/fork failed may
 * exist in the store only (`maybeVols`, restore may bring them back); volumes
 * whose delete failed may carry a tombstone in the store (`maybeGone`).
 *
 * Every process of the system under test is one "generation": its own
 * catalog path and cache dir, a severable view of the shared store. A crash
 * copies the catalog and the cache as they are at that instant (what kill -9
 * leaves: every write is in the page cache, SQLite's committed transactions
 * are in its files), marks the old owner pid dead in the copy, and cuts the
 * old generation off the store. Machine loss restores a new catalog from the
 * store alone.
 */
import Database from 'better-sqlite3';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  BLOCK_SIZE,
  DirStore,
  FaultyStore,
  GlideFs,
  GlideFsError,
  MemoryStore,
  RetryStore,
  parseBlockKey,
  restoreCatalog,
  type ObjectStore,
  type Volume,
} from '../../../glidefs/index.js';
import { mulberry32 } from '../../../lib/prng.js';
import { Crashed, severable, switchable, type Severable, type Switchable } from './stores.js';

const BS = BLOCK_SIZE;

// ---------------------------------------------------------------- commands

export type Range = { kind: 'any' | 'block' | 'sector' | 'cross' | 'tiny'; a: number; b: number };
export type Fill = { kind: 'zeros' | 'random' | 'byte' | 'copy'; seed: number };
export type InFlight = 'none' | 'write+flush' | 'flush' | 'checkpoint' | 'fork' | 'delete' | 'create';

export type Cmd =
  | { t: 'create'; blocks: number }
  | { t: 'write'; v: number; r: Range; fill: Fill }
  | { t: 'read'; v: number; r: Range }
  | { t: 'flush'; v: number }
  | { t: 'checkpoint'; v: number }
  | { t: 'fork'; v: number; snapshot: boolean }
  | { t: 'delete'; v: number }
  | { t: 'closeVol'; v: number }
  | { t: 'reopen' }
  | { t: 'gc' }
  | { t: 'crash'; op: InFlight; v: number; after: number; land: boolean; r: Range; fill: Fill }
  | { t: 'lose' }
  | { t: 'faults'; on: boolean }
  | { t: 'wave'; ops: WaveOp[] };

/** Operations of one wave: started together, in flight at once (Promise.all), as the kernel issues them. */
export type WaveOp =
  | { t: 'write'; v: number; r: Range; fill: Fill }
  | { t: 'read'; v: number; r: Range }
  | { t: 'flush'; v: number }
  | { t: 'checkpoint'; v: number }
  | { t: 'fork'; v: number; snapshot: boolean };

const rangeArb: fc.Arbitrary<Range> = fc.record({
  kind: fc.constantFrom<Range['kind']>('any', 'block', 'sector', 'cross', 'tiny'),
  a: fc.nat(1 << 24),
  b: fc.nat(1 << 24),
});
const fillArb: fc.Arbitrary<Fill> = fc.record({
  kind: fc.constantFrom<Fill['kind']>('zeros', 'random', 'random', 'byte', 'copy'),
  seed: fc.nat(),
});
const v = fc.nat(15);

const waveOpArb: fc.Arbitrary<WaveOp> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ t: fc.constant('write' as const), v, r: rangeArb, fill: fillArb }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant('read' as const), v, r: rangeArb }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant('flush' as const), v }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('checkpoint' as const), v }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('fork' as const), v, snapshot: fc.boolean() }) },
);

export const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant('wave' as const), ops: fc.array(waveOpArb, { minLength: 2, maxLength: 5 }) }) },
  // mostly small volumes; some larger than the smallest cache bound (16 blocks), so eviction happens
  { weight: 3, arbitrary: fc.record({ t: fc.constant('create' as const), blocks: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 5 }) }, { weight: 1, arbitrary: fc.integer({ min: 17, max: 24 }) }) }) },
  { weight: 12, arbitrary: fc.record({ t: fc.constant('write' as const), v, r: rangeArb, fill: fillArb }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant('read' as const), v, r: rangeArb }) },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('flush' as const), v }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('checkpoint' as const), v }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('fork' as const), v, snapshot: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('delete' as const), v }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('closeVol' as const), v }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('reopen' as const) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('gc' as const) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('crash' as const),
      op: fc.constantFrom<InFlight>('none', 'write+flush', 'flush', 'checkpoint', 'fork', 'delete', 'create'),
      v,
      after: fc.integer({ min: 1, max: 6 }),
      land: fc.boolean(),
      r: rangeArb,
      fill: fillArb,
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('lose' as const) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('faults' as const), on: fc.boolean() }) },
);

export interface RunOptions {
  /** Checkpoint after this many records (background), or the default. */
  maxLogRecords: number;
  faultSeed: number;
  faultProbability: number;
  /** Faults on from the start (the `faults` command switches them). */
  faultsOn: boolean;
  /** GlideFsOptions.cacheSize: the smallest bound (2 MiB = 16 blocks: larger volumes evict), or the default. */
  smallCache: boolean;
}

export const runOptionsArb: fc.Arbitrary<RunOptions> = fc.record({
  maxLogRecords: fc.constantFrom(2, 5, 10_000),
  faultSeed: fc.nat(),
  faultProbability: fc.constantFrom(0.1, 0.25, 0.4),
  faultsOn: fc.boolean(),
  // half the runs: finding 7 of notes/s3/model.md (seed 1028522467) was the model's error, not a bug: the bound's
  // write-back flush (at half the dirty limit) legally made unflushed bytes durable; the model now allows it (MVol.bg)
  smallCache: fc.boolean(),
});

/** Resolves a range against a volume size: [offset, length], length >= 1. */
export function resolveRange(r: Range, size: number): [number, number] {
  const nb = size / BS;
  switch (r.kind) {
    case 'block': {
      const blk = r.a % nb;
      return [blk * BS, (1 + (r.b % Math.min(nb - blk, 2))) * BS];
    }
    case 'sector': {
      const off = (r.a % (size / 4096)) * 4096;
      return [off, Math.min(size - off, 4096 * (1 + (r.b % 8)))];
    }
    case 'cross': {
      if (nb < 2) return [r.a % size, Math.min(size - (r.a % size), 1 + (r.b % 9000))];
      const edge = (1 + (r.a % (nb - 1))) * BS;
      const before = 1 + (r.b % 9000);
      const after = 1 + (r.a % 9000);
      return [edge - before, Math.min(before + after, size - edge + before)];
    }
    case 'tiny': {
      const off = r.a % size;
      return [off, Math.min(size - off, 1 + (r.b % 16))];
    }
    default: {
      const off = r.a % size;
      return [off, 1 + (r.b % Math.min(size - off, 3 * BS))];
    }
  }
}

function fillBytes(f: Fill, len: number, cur: Buffer): Buffer {
  const b = Buffer.alloc(len);
  if (f.kind === 'zeros') return b;
  if (f.kind === 'byte') return b.fill(1 + (f.seed % 255));
  if (f.kind === 'copy') {
    // bytes the volume already holds elsewhere (same bytes at another offset: another object)
    const from = f.seed % Math.max(1, cur.length - len + 1);
    cur.copy(b, 0, from, from + len);
    return b;
  }
  const r = mulberry32(f.seed);
  for (let i = 0; i < len; i++) b[i] = (r() * 256) | 0;
  return b;
}

// ---------------------------------------------------------------- model state

interface MVol {
  size: number;
  snapshot: boolean;
  current: Buffer;
  /** Candidates for the flushed view (one unless a flush's outcome is unknown). */
  committed: Buffer[];
  /** A delete of it failed or was cut: its tombstone may be in the store. */
  maybeGone: boolean;
  /**
   * Block versions written since the last confirmed flush that a background flush may have made durable (the
   * cache bound's write-back starts a flush at half the dirty limit: bytes may become durable early, legally).
   * A restored block must then be its flushed bytes or one of these (per block: a flush takes each block whole).
   */
  bg: Map<number, Buffer[]>;
}

class Model {
  vols = new Map<string, MVol>();
  /** Volumes whose create/fork failed or was cut: restore may bring them back with these bytes. */
  maybeVols = new Map<string, Buffer[]>();
  names(): string[] {
    return [...this.vols.keys()].sort();
  }
  pick(v: number): string | null {
    const n = this.names();
    return n.length === 0 ? null : n[v % n.length];
  }
}

/** After an acknowledged write of [off, off+len): the touched blocks' new bytes, if a background flush can run. */
function noteWrite(mv: MVol, off: number, len: number, bgFlush: boolean): void {
  if (!bgFlush) return;
  for (let i = Math.floor(off / BS); i <= Math.floor((off + len - 1) / BS); i++) {
    const list = mv.bg.get(i) ?? [];
    addCandidate(list, mv.current.subarray(i * BS, (i + 1) * BS));
    mv.bg.set(i, list);
  }
}

function addCandidate(list: Buffer[], b: Buffer): void {
  if (!list.some((x) => x.equals(b))) list.push(Buffer.from(b));
}

// ---------------------------------------------------------------- the system under test

export type StoreKind = 'memory' | 'dir';

class Sut {
  gen = 0;
  fs!: GlideFs;
  proc!: Severable;
  vols = new Map<string, Volume>();
  readonly sw: Switchable;
  readonly base: ObjectStore;
  readonly deadPid: number;
  log: string[] = [];

  constructor(
    readonly root: string,
    kind: StoreKind,
    readonly opts: RunOptions,
  ) {
    mkdirSync(root, { recursive: true });
    if (kind === 'memory') this.base = new MemoryStore();
    else {
      mkdirSync(join(root, 'objects'));
      this.base = new DirStore(join(root, 'objects'), { fsync: false });
    }
    const faulty = new RetryStore(
      new FaultyStore(this.base, {
        seed: opts.faultSeed,
        putErrorProbability: opts.faultProbability,
        getErrorProbability: opts.faultProbability,
        deleteErrorProbability: opts.faultProbability,
        timeoutProbability: opts.faultProbability / 2,
        timeoutMs: 1,
      }),
      { retries: 2, baseDelayMs: 1, maxDelayMs: 2, seed: opts.faultSeed },
    );
    this.sw = switchable(faulty, this.base);
    const p = spawnSync('true');
    this.deadPid = p.pid ?? 999_999_999;
  }

  dir(gen = this.gen): string {
    return join(this.root, `gen-${gen}`);
  }

  async open(): Promise<void> {
    this.proc = severable(this.sw.store);
    this.fs = await GlideFs.open({
      store: this.proc.store,
      catalogPath: join(this.dir(), 'catalog.db'),
      cacheDir: join(this.dir(), 'cache'),
      checkpoint: { maxLogRecords: this.opts.maxLogRecords },
      gcGraceMs: 0,
      ...(this.opts.smallCache ? { cacheSize: 2 << 20 } : {}),
    });
  }

  async vol(name: string): Promise<Volume> {
    let v = this.vols.get(name);
    if (!v) {
      v = await this.fs.openVolume(name);
      this.vols.set(name, v);
    }
    return v;
  }

  async closeVol(name: string): Promise<void> {
    const v = this.vols.get(name);
    if (!v) return;
    this.vols.delete(name);
    await v.close();
  }

  async reopen(): Promise<void> {
    for (const n of [...this.vols.keys()]) await this.closeVol(n).catch(() => undefined);
    await this.fs.close();
    await this.open();
  }

  /** Copies the catalog and cache of this generation into the next, as kill -9 would leave them. */
  snapshotForCrash(): void {
    const from = this.dir();
    const to = this.dir(this.gen + 1);
    mkdirSync(to, { recursive: true });
    for (const f of ['catalog.db', 'catalog.db-wal']) {
      if (existsSync(join(from, f))) cpSync(join(from, f), join(to, f));
    }
    if (existsSync(join(from, 'cache'))) cpSync(join(from, 'cache'), join(to, 'cache'), { recursive: true });
  }

  /** In the copied generation: the dead process's rows and locks name a dead pid. */
  private buryOwner(dir: string): void {
    const cat = join(dir, 'catalog.db');
    if (existsSync(cat)) {
      const db = new Database(cat);
      for (const t of ['writers', 'pending', 'deleting']) {
        const has = db.prepare(`SELECT 1 FROM sqlite_master WHERE type='table' AND name=?`).get(t);
        if (has) db.prepare(`UPDATE ${t} SET owner_pid = ?`).run(this.deadPid);
      }
      db.close();
    }
    const walk = (d: string) => {
      if (!existsSync(d)) return;
      for (const e of readdirSync(d)) {
        const p = join(d, e);
        if (statSync(p).isDirectory()) walk(p);
        else if (e === 'lock') writeFileSync(p, `${this.deadPid}\n`);
        else if (e.startsWith('lock.')) rmSync(p, { force: true });
      }
    };
    walk(join(dir, 'cache'));
  }

  /**
   * Volume leases in the store (FORMAT.md, "Volume lease") of the dead generation name a dead pid,
   * as a kill -9 leaves them (in this process the holder's pid is ours, alive).
   */
  private async buryLeases(): Promise<void> {
    for await (const key of this.base.list('volumes/')) {
      if (!key.endsWith('/lease')) continue;
      const b = await this.base.get(key);
      if (b === null) continue;
      const lease = JSON.parse(b.toString('utf8')) as { holder?: { pid?: number } };
      if (lease.holder?.pid !== process.pid) continue;
      lease.holder.pid = this.deadPid;
      await this.base.put(key, Buffer.from(JSON.stringify(lease)));
    }
  }

  /** Drops the old generation (its store view is already cut) and opens the copy. */
  async afterCrash(): Promise<void> {
    const old = this.fs;
    this.vols.clear();
    void old.close().catch(() => undefined);
    this.gen++;
    this.buryOwner(this.dir());
    await new Promise((r) => setTimeout(r, 50)); // requests the dead process had in flight land first
    await this.buryLeases();
    await this.open();
  }

  /** Loses the machine: a new catalog restored from the store alone, an empty cache. */
  async loseMachine(): Promise<void> {
    this.proc.crashNow(() => undefined);
    const old = this.fs;
    this.vols.clear();
    void old.close().catch(() => undefined);
    this.gen++;
    mkdirSync(this.dir(), { recursive: true });
    await new Promise((r) => setTimeout(r, 50)); // requests the dead process had in flight land first
    await this.buryLeases();
    await restoreCatalog(this.sw.store, '', join(this.dir(), 'catalog.db'));
    await this.open();
  }

  async close(): Promise<void> {
    for (const n of [...this.vols.keys()]) await this.closeVol(n).catch(() => undefined);
    await this.fs?.close().catch(() => undefined);
    await this.base.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------- the run

/** An error the model accepts from an operation while the store injects faults. */
function storeFault(err: unknown): boolean {
  return err instanceof GlideFsError && err.retryable === true;
}

class Fail extends Error {}

/** What the runs exercised (printed by the test): `<op> ok|fault`, crashes that cut an operation, restores. */
export const coverage = new Map<string, number>();
const count = (k: string) => coverage.set(k, (coverage.get(k) ?? 0) + 1);

export async function runModel(opts: RunOptions, cmds: Cmd[], root: string, kind: StoreKind = 'memory'): Promise<void> {
  const sut = new Sut(root, kind, opts);
  const m = new Model();
  await sut.open();
  await sut.fs.checkStoreOwner();
  sut.sw.faults = opts.faultsOn;
  let step = 0;
  const where = () => `step ${step} (${JSON.stringify(cmds[step])})`;
  const fail = (msg: string): never => {
    throw new Fail(`${where()}: ${msg}\nhistory:\n${sut.log.slice(-25).join('\n')}`);
  };
  /** Runs `fn`; returns 'ok', or 'fault' for an accepted store fault / crash; anything else fails the run. */
  const attempt = async <T>(what: string, fn: () => Promise<T>, allowCrash = false, vol?: string): Promise<{ ok: true; value: T } | { ok: false; err: unknown }> => {
    try {
      const value = await fn();
      count(`${what} ok`);
      sut.log.push(`   ${what}${vol !== undefined ? ` '${vol}'` : ''}: ok`);
      return { ok: true, value };
    } catch (err) {
      sut.log.push(`   ${what}${vol !== undefined ? ` '${vol}'` : ''}: ${(err as { code?: string }).code ?? (err as Error).name} ${String((err as Error).message).slice(0, 160)}`);
      if (vol !== undefined && m.vols.get(vol)?.maybeGone && err instanceof GlideFsError && err.code === 'E_FENCED') {
        // its delete was cut after the tombstone: the volume is deleted in the store; deleting it again finishes it
        count(`${what}: interrupted delete found`);
        await finishDelete(vol);
        return { ok: false, err };
      }
      if (vol !== undefined && m.vols.get(vol)?.maybeGone && err instanceof GlideFsError && err.code === 'E_NO_VOLUME') {
        // a delete that failed after its commit point (tombstone written, catalog row dropped; only the cleanup of
        // its log/objects failed, which gc finishes) is done
        count(`${what}: delete found finished`);
        m.vols.delete(vol);
        return { ok: false, err };
      }
      if (allowCrash && sut.proc.dead) {
        count(`${what} cut by a crash`);
        return { ok: false, err };
      }
      if (sut.sw.faults && storeFault(err)) {
        count(`${what} store fault`);
        return { ok: false, err };
      }
      const e = err as Error & { code?: string };
      return fail(`${what}: unexpected ${e?.constructor?.name} ${e?.code ?? ''}: ${e?.message}\n${e?.stack}`);
    }
  };

  const finishDelete = async (name: string) => {
    await sut.closeVol(name).catch(() => undefined);
    const r = await attempt('finish an interrupted delete', () => sut.fs.deleteVolume(name));
    if (r.ok) m.vols.delete(name);
  };

  /** Aligns the model's set of volumes with the catalog after an operation whose outcome is unknown. */
  const reconcile = (restored: boolean) => {
    const inCat = new Map(sut.fs.listVolumes().map((x) => [x.name, x]));
    for (const [name, mv] of [...m.vols]) {
      if (inCat.has(name)) continue;
      if (mv.maybeGone) m.vols.delete(name);
      else if (restored && m.maybeVols.has(name)) m.vols.delete(name);
      else fail(`volume '${name}' is gone from the catalog${restored ? ' (restored)' : ''} but was never deleted`);
    }
    for (const [name, info] of inCat) {
      if (m.vols.has(name)) continue;
      const maybe = m.maybeVols.get(name);
      if (!maybe) fail(`catalog${restored ? ' (restored)' : ''} holds volume '${name}' that was never created`);
      m.vols.set(name, { size: info.sizeBytes, snapshot: info.snapshot, current: Buffer.from(maybe![0]), committed: maybe!.map((b) => Buffer.from(b)), maybeGone: false, bg: new Map() });
    }
  };

  /** Reads a whole volume and resolves its candidates: the bytes must be one of them. */
  const resolveWhole = async (name: string, mv: MVol, candidates: Buffer[], why: string, bg?: Map<number, Buffer[]>) => {
    const r = await attempt('open', async () => (await sut.vol(name)).read(0, mv.size), false, name);
    if (!r.ok) return;
    const got = r.value;
    let match = candidates.find((c) => c.equals(got));
    if (!match && bg && bg.size > 0) {
      // a background flush may have made some written blocks durable: per block, flushed bytes or a written version
      let ok = true;
      for (let i = 0; ok && i < mv.size / BS; i++) {
        const blk = got.subarray(i * BS, (i + 1) * BS);
        ok = candidates.some((c) => c.subarray(i * BS, (i + 1) * BS).equals(blk)) || (bg.get(i) ?? []).some((x) => x.equals(blk));
      }
      if (ok) {
        match = got;
        count(`${why.split(' ')[0]} resolved with background-flushed blocks`);
      }
    }
    count(`${why.split(' ')[0]} resolved ${candidates.length > 1 ? `1 of ${candidates.length}` : 'exact'}`);
    if (!match) {
      const c0 = candidates[0];
      let i = 0;
      while (i < got.length && got[i] === c0[i]) i++;
      fail(`${why}: volume '${name}' does not hold any of its ${candidates.length} allowed states (first difference with #0 at byte ${i}, block ${Math.floor(i / BS)})`);
    }
    mv.current = Buffer.from(match!);
    mv.committed = [Buffer.from(match!)];
    if (bg) mv.bg.clear(); // restored from the store: what it holds is the flushed view now
  };

  /**
   * The catalog's own invariants, with every volume closed after a gc: each object's refcount is the number of
   * block-map rows naming it, every layer lies on some volume's chain, no pending upload or delete row is left.
   */
  const checkCatalogInvariants = (when: string) => {
    const db = new Database(sut.fs.catalogPath, { readonly: true });
    try {
      const refs = db.prepare('SELECT key, refcount FROM objects ORDER BY key').raw().all() as Array<[string, number]>;
      const rows = db.prepare("SELECT key, count(*) FROM blocks WHERE key != '' GROUP BY key ORDER BY key").raw().all() as Array<[string, number]>;
      const want = new Map(rows);
      const have = new Map(refs);
      for (const [k, n] of want) if (have.get(k) !== n) fail(`${when}: object ${k} is named by ${n} block rows but its refcount is ${have.get(k) ?? 'missing'}`);
      for (const [k, n] of have) if (!want.has(k)) fail(`${when}: object ${k} has refcount ${n} but no block row names it`);
      const onChains = new Set<number>();
      for (const x of sut.fs.catalog.listVolumes()) for (const l of sut.fs.catalog.layerChain(x.id)) onChains.add(l);
      for (const id of db.prepare('SELECT id FROM layers').pluck().all() as number[]) {
        if (!onChains.has(id)) fail(`${when}: layer ${id} lies on no volume's chain`);
      }
      for (const t of ['pending', 'deleting']) {
        const n = db.prepare(`SELECT count(*) FROM ${t}`).pluck().get() as number;
        if (n !== 0) fail(`${when}: ${n} rows left in '${t}' with no flush or delete running`);
      }
    } finally {
      db.close();
    }
  };

  /** Block i of `buf` with the part of write `w` that falls in it applied. */
  const applyTo = (b: Buffer, i: number, w: { off: number; len: number; data: Buffer }) => {
    const from = Math.max(w.off, i * BS);
    const to = Math.min(w.off + w.len, (i + 1) * BS);
    if (from < to) w.data.copy(b, from - i * BS, from - w.off, to - w.off);
  };

  /**
   * A wave: its operations are started together and are in flight at once. Writes of one wave to one volume are
   * disjoint (overlapping concurrent writes have no defined order). Expected: a read returns, per block, the bytes
   * before the wave with any subset of the wave's acknowledged writes on that block; a fork's child is the source
   * before the wave with a subset of them (one instant); a flush makes the bytes before the wave durable, and the
   * wave's writes maybe (MVol.bg).
   */
  const runWave = async (ops: WaveOp[]) => {
    type W = { name: string; off: number; len: number; data: Buffer };
    const pre = new Map<string, Buffer>();
    for (const [n, mv] of m.vols) pre.set(n, Buffer.from(mv.current));
    const writes: W[] = [];
    const acked: W[] = [];
    const syncs = new Map<string, boolean[]>(); // per volume: outcomes of its flushes and of forks of it
    const forks: Array<{ src: string; dst: string; snapshot: boolean; ok: boolean }> = [];
    const reads: Array<{ name: string; off: number; len: number; got: Buffer | null }> = [];
    const jobs: Array<() => Promise<void>> = [];
    let nvols = m.vols.size;
    const synced = (name: string, ok: boolean) => syncs.set(name, [...(syncs.get(name) ?? []), ok]);
    for (let k = 0; k < ops.length; k++) {
      const o = ops[k];
      const name = m.pick(o.v);
      if (!name || !m.vols.has(name)) continue;
      const mv = m.vols.get(name)!;
      if (o.t === 'fork') {
        if (nvols >= 6) continue;
        nvols++;
        const f = { src: name, dst: `v${step}w${k}`, snapshot: o.snapshot, ok: false };
        forks.push(f);
        jobs.push(async () => {
          const r = await attempt('wave fork', () => (f.snapshot ? sut.fs.snapshot(f.src, f.dst) : sut.fs.fork(f.src, f.dst)));
          f.ok = r.ok;
          synced(f.src, r.ok);
        });
        continue;
      }
      const vol = await attempt('open', () => sut.vol(name), false, name);
      if (!vol.ok || !m.vols.has(name)) continue;
      if (o.t === 'write') {
        if (mv.snapshot) continue;
        const [off, len] = resolveRange(o.r, mv.size);
        if (writes.some((w) => w.name === name && w.off < off + len && off < w.off + w.len)) continue;
        const w = { name, off, len, data: fillBytes(o.fill, len, pre.get(name)!) };
        writes.push(w);
        jobs.push(async () => {
          if ((await attempt('wave write', () => vol.value.write(w.off, w.data), false, name)).ok) acked.push(w);
        });
      } else if (o.t === 'read') {
        const [off, len] = resolveRange(o.r, mv.size);
        const rd = { name, off, len, got: null as Buffer | null };
        reads.push(rd);
        jobs.push(async () => {
          const r = await attempt('wave read', () => vol.value.read(off, len));
          if (r.ok) rd.got = r.value;
        });
      } else if (o.t === 'flush') {
        jobs.push(async () => void synced(name, (await attempt('wave flush', () => vol.value.flush(), false, name)).ok));
      } else {
        jobs.push(async () => void (await attempt('wave checkpoint', () => vol.value.checkpoint(), false, name)));
      }
    }
    count(`wave of ${jobs.length}`);
    await Promise.all(jobs.map((j) => j()));

    /** The bytes block i of `name` may hold: before the wave, with any subset of the acknowledged writes on it. */
    const versions = (name: string, i: number): Buffer[] => {
      const ws = acked.filter((w) => w.name === name && w.off < (i + 1) * BS && i * BS < w.off + w.len);
      const out: Buffer[] = [];
      for (let mask = 0; mask < 1 << ws.length; mask++) {
        const b = Buffer.from(pre.get(name)!.subarray(i * BS, (i + 1) * BS));
        ws.forEach((w, j) => mask & (1 << j) && applyTo(b, i, w));
        addCandidate(out, b);
      }
      return out;
    };
    /** The whole volume `name` at one instant of the wave: before it, with any subset of its acknowledged writes. */
    const instants = (name: string): Buffer[] => {
      const ws = acked.filter((w) => w.name === name);
      const out: Buffer[] = [];
      for (let mask = 0; mask < 1 << ws.length; mask++) {
        const b = Buffer.from(pre.get(name)!);
        ws.forEach((w, j) => mask & (1 << j) && w.data.copy(b, w.off));
        addCandidate(out, b);
      }
      return out;
    };
    for (const rd of reads) {
      if (!rd.got) continue;
      for (let i = Math.floor(rd.off / BS); i <= Math.floor((rd.off + rd.len - 1) / BS); i++) {
        const from = Math.max(rd.off, i * BS);
        const to = Math.min(rd.off + rd.len, (i + 1) * BS);
        const seg = rd.got.subarray(from - rd.off, to - rd.off);
        if (!versions(rd.name, i).some((b) => b.subarray(from - i * BS, to - i * BS).equals(seg))) {
          fail(`wave: read '${rd.name}' ${rd.off}+${rd.len} returned bytes in block ${i} that are neither the bytes before the wave nor any of its acknowledged writes`);
        }
      }
    }
    for (const w of acked) {
      const mv = m.vols.get(w.name);
      if (mv) w.data.copy(mv.current, w.off);
    }
    for (const [name, mv] of m.vols) {
      const before = pre.get(name);
      if (!before) continue;
      const outcomes = syncs.get(name) ?? [];
      if (outcomes.some((ok) => ok)) {
        mv.committed = [Buffer.from(before)];
        mv.bg.clear();
        if (!mv.snapshot) mv.maybeGone = false;
      } else if (outcomes.length > 0) addCandidate(mv.committed, before);
      if (outcomes.length > 0 || opts.smallCache) {
        const touched = new Set<number>();
        for (const w of acked) if (w.name === name) for (let i = Math.floor(w.off / BS); i <= Math.floor((w.off + w.len - 1) / BS); i++) touched.add(i);
        for (const i of touched) {
          const list = mv.bg.get(i) ?? [];
          for (const b of versions(name, i)) addCandidate(list, b);
          mv.bg.set(i, list);
        }
      }
    }
    for (const f of forks) if (!f.ok) m.maybeVols.set(f.dst, instants(f.src));
    if (forks.some((f) => !f.ok)) reconcile(false);
    for (const f of forks) {
      if (!f.ok && !m.vols.has(f.dst)) continue;
      const src = m.vols.get(f.src);
      const size = src?.size ?? pre.get(f.src)!.length;
      // the child's bytes are one of several instants: read them without faults to know which
      const faults = sut.sw.faults;
      sut.sw.faults = false;
      const r = await attempt('wave fork read', async () => (await sut.vol(f.dst)).read(0, size), false, f.dst).finally(() => (sut.sw.faults = faults));
      if (!r.ok) continue;
      if (!instants(f.src).some((b) => b.equals(r.value))) {
        fail(`wave: ${f.snapshot ? 'snapshot' : 'fork'} '${f.dst}' of '${f.src}' holds no instant of its source during the wave (bytes before it with a subset of its ${acked.filter((w) => w.name === f.src).length} acknowledged writes)`);
      }
      m.vols.set(f.dst, { size, snapshot: f.snapshot, current: Buffer.from(r.value), committed: [Buffer.from(r.value)], maybeGone: false, bg: new Map() });
    }
  };

  const checkStoreAgainstCatalog = async (when: string) => {
    const keys = new Set<string>();
    for await (const k of sut.base.list('blocks/')) keys.add(k);
    const named = new Set(sut.fs.catalog.objectKeys());
    for (const k of named) if (!keys.has(k)) fail(`${when}: the catalog names ${k}, missing from the store`);
    return { keys, named };
  };

  try {
    for (step = 0; step < cmds.length; step++) {
      const c = cmds[step];
      sut.log.push(`${step}: ${JSON.stringify(c)}`);
      switch (c.t) {
        case 'faults':
          sut.sw.faults = c.on;
          break;

        case 'create': {
          if (m.vols.size >= 6) break;
          const name = `v${step}`;
          const size = c.blocks * BS;
          const r = await attempt('create', () => sut.fs.createVolume(name, size));
          if (r.ok) m.vols.set(name, { size, snapshot: false, current: Buffer.alloc(size), committed: [Buffer.alloc(size)], maybeGone: false, bg: new Map() });
          else {
            m.maybeVols.set(name, [Buffer.alloc(size)]);
            reconcile(false);
          }
          break;
        }

        case 'write': {
          const name = m.pick(c.v);
          if (!name) break;
          const mv = m.vols.get(name)!;
          const [off, len] = resolveRange(c.r, mv.size);
          const data = fillBytes(c.fill, len, mv.current);
          const vol = await attempt('open', () => sut.vol(name), false, name);
          if (!vol.ok) break;
          if (mv.snapshot) {
            const e = await vol.value.write(off, data).then(() => null, (err: unknown) => err);
            if (!(e instanceof GlideFsError && e.code === 'E_READ_ONLY')) fail(`write to snapshot '${name}': expected E_READ_ONLY, got ${String(e)}`);
            break;
          }
          const r = await attempt('write', () => vol.value.write(off, data), false, name);
          if (r.ok) {
            data.copy(mv.current, off);
            noteWrite(mv, off, len, opts.smallCache);
          }
          break;
        }

        case 'read': {
          const name = m.pick(c.v);
          if (!name) break;
          const mv = m.vols.get(name)!;
          const [off, len] = resolveRange(c.r, mv.size);
          const vol = await attempt('open', () => sut.vol(name), false, name);
          if (!vol.ok) break;
          const r = await attempt('read', () => vol.value.read(off, len));
          if (r.ok) {
            const want = mv.current.subarray(off, off + len);
            if (!r.value.equals(want)) {
              let i = 0;
              while (i < len && r.value[i] === want[i]) i++;
              fail(`read '${name}' ${off}+${len}: wrong bytes from byte ${off + i} (block ${Math.floor((off + i) / BS)}): got ${r.value[i]} want ${want[i]}`);
            }
          }
          break;
        }

        case 'flush': {
          const name = m.pick(c.v);
          if (!name) break;
          const mv = m.vols.get(name)!;
          const vol = await attempt('open', () => sut.vol(name), false, name);
          if (!vol.ok) break;
          const r = await attempt('flush', () => vol.value.flush(), false, name);
          if (r.ok) {
            mv.committed = [Buffer.from(mv.current)];
            mv.bg.clear();
            if (!mv.snapshot) mv.maybeGone = false; // a writable open caught up: no tombstone past the catalog
          } else addCandidate(mv.committed, mv.current);
          break;
        }

        case 'checkpoint': {
          const name = m.pick(c.v);
          if (!name) break;
          const vol = await attempt('open', () => sut.vol(name), false, name);
          if (!vol.ok) break;
          await attempt('checkpoint', () => vol.value.checkpoint(), false, name);
          break;
        }

        case 'closeVol': {
          const name = m.pick(c.v);
          if (!name) break;
          await attempt('close volume', () => sut.closeVol(name));
          break;
        }

        case 'fork': {
          const src = m.pick(c.v);
          if (!src || m.vols.size >= 6) break;
          const mv = m.vols.get(src)!;
          const dst = `v${step}`;
          const r = await attempt('fork', () => (c.snapshot ? sut.fs.snapshot(src, dst) : sut.fs.fork(src, dst)));
          if (r.ok) {
            mv.committed = [Buffer.from(mv.current)]; // fork flushed its source
            mv.bg.clear();
            m.vols.set(dst, { size: mv.size, snapshot: c.snapshot, current: Buffer.from(mv.current), committed: [Buffer.from(mv.current)], maybeGone: false, bg: new Map() });
          } else {
            addCandidate(mv.committed, mv.current);
            m.maybeVols.set(dst, [Buffer.from(mv.current)]);
            reconcile(false);
          }
          break;
        }

        case 'delete': {
          const name = m.pick(c.v);
          if (!name) break;
          const closed = await attempt('close volume', () => sut.closeVol(name));
          if (!closed.ok) break;
          const mvd = m.vols.get(name)!;
          const r = await attempt('delete', async () => {
            try {
              return await sut.fs.deleteVolume(name);
            } catch (err) {
              // KNOWN BUG (reported in /work/notes/model.md, seed 1023212078): a record of a crashed process past
              // the catalog's seq (a flush or claim cut before its catalog commit) whose catch-up has not run yet
              // (the open after the crash could not reach the store): deleteVolume writes its tombstone at that seq
              // and is refused E_FENCED until the volume is opened (catch-up) once. Nothing is lost or changed.
              // Also reached without a crash: a flush whose log PUT landed but whose answer was a fault (gmodel, s4 bugs.md).
              if (err instanceof GlideFsError && err.code === 'E_FENCED' && !mvd.snapshot && sut.fs.listVolumes().some((x) => x.name === name)) {
                count('delete: E_FENCED after a cut flush (known bug)');
                return 'known-bug' as const;
              }
              throw err;
            }
          });
          if (r.ok && r.value === 'known-bug') break;
          if (r.ok) m.vols.delete(name);
          else {
            m.vols.get(name)!.maybeGone = true;
            reconcile(false);
          }
          break;
        }

        case 'reopen': {
          await attempt('reopen', () => sut.reopen());
          break;
        }

        case 'wave': {
          await runWave(c.ops);
          break;
        }

        case 'gc': {
          // quiesce (close: no background checkpoint runs), then gc without faults and check the store
          const faults = sut.sw.faults;
          sut.sw.faults = false;
          try {
            await sut.reopen();
            await checkStoreAgainstCatalog('before gc');
            const r = await sut.fs.gc({ graceMs: 0 });
            if (r.failed !== 0) fail(`gc failed ${r.failed} deletes without faults`);
            const { keys, named } = await checkStoreAgainstCatalog('after gc');
            for (const k of keys) {
              if (parseBlockKey('', k) && !named.has(k)) fail(`after gc: orphan ${k} is still in the store`);
            }
            // log records: none below a known volume's checkpoint unless a layer lies on it (FORMAT.md, "Layers"),
            // and every record a layer lies on is there
            const known = new Map(sut.fs.catalog.listVolumes().map((x) => [x.uuid, x]));
            const catalog = sut.fs.catalog as unknown as { keptRecords?: () => Set<string> };
            const kept = catalog.keptRecords ? catalog.keptRecords() : new Set<string>();
            const present = new Set<string>();
            for await (const k of sut.base.list('volumes/')) {
              const mm = /^volumes\/([0-9a-f]+)\/log\/([0-9a-f]{16})$/.exec(k);
              if (!mm) continue;
              const seq = parseInt(mm[2], 16);
              present.add(`${mm[1]}:${seq}`);
              const row = known.get(mm[1]);
              if (row && seq < row.checkpoint_seq && !kept.has(`${mm[1]}:${seq}`)) fail(`after gc: log record ${k} below the checkpoint ${row.checkpoint_seq}, needed by no layer`);
            }
            for (const k of kept) if (!present.has(k)) fail(`after gc: log record ${k} that a layer lies on is missing from the store`);
            checkCatalogInvariants('after gc');
          } finally {
            sut.sw.faults = faults;
          }
          break;
        }

        case 'crash': {
          const name = m.pick(c.v);
          const landAt = (n: number) => sut.proc.crashAfter(n, c.land, () => sut.snapshotForCrash());
          let newName: string | null = null;
          let cut = false;
          const crashWhile = async (what: string, fn: () => Promise<unknown>, vol?: string) => {
            landAt(c.after);
            const r = await attempt(what, fn, true, vol);
            cut = sut.proc.dead;
            if (!cut) sut.proc.crashNow(() => sut.snapshotForCrash());
            return r;
          };
          if (c.op === 'none' || !name) {
            sut.proc.crashNow(() => sut.snapshotForCrash());
          } else {
            const mv = m.vols.get(name)!;
            if (c.op === 'write+flush' || c.op === 'flush') {
              if (c.op === 'write+flush' && !mv.snapshot) {
                const [off, len] = resolveRange(c.r, mv.size);
                const data = fillBytes(c.fill, len, mv.current);
                const vol = await attempt('open', () => sut.vol(name), false, name);
                if (vol.ok && (await attempt('write', () => vol.value.write(off, data))).ok) {
                  data.copy(mv.current, off);
                  noteWrite(mv, off, len, opts.smallCache);
                }
              }
              const r = await crashWhile('flush', async () => (await sut.vol(name)).flush(), name);
              if (r.ok && !cut) {
                mv.committed = [Buffer.from(mv.current)];
                mv.bg.clear();
              } else addCandidate(mv.committed, mv.current);
            } else if (c.op === 'checkpoint') {
              await crashWhile('checkpoint', async () => (await sut.vol(name)).checkpoint(), name);
            } else if (c.op === 'fork' && m.vols.size < 6) {
              newName = `v${step}`;
              const dst = newName;
              const r = await crashWhile('fork', () => sut.fs.fork(name, dst));
              addCandidate(mv.committed, mv.current);
              if (r.ok && !cut) m.vols.set(dst, { size: mv.size, snapshot: false, current: Buffer.from(mv.current), committed: [Buffer.from(mv.current)], maybeGone: false, bg: new Map() });
              else m.maybeVols.set(dst, [Buffer.from(mv.current)]);
            } else if (c.op === 'delete') {
              const closed = await attempt('close volume', () => sut.closeVol(name));
              if (!closed.ok) {
                sut.proc.crashNow(() => sut.snapshotForCrash());
              } else {
                const r = await crashWhile('delete', () => sut.fs.deleteVolume(name));
                if (r.ok && !cut) m.vols.delete(name);
                else mv.maybeGone = true;
              }
            } else if (c.op === 'create' && m.vols.size < 6) {
              newName = `v${step}`;
              const dst = newName;
              const size = (1 + (c.after % 3)) * BS;
              const r = await crashWhile('create', () => sut.fs.createVolume(dst, size));
              if (r.ok && !cut) m.vols.set(dst, { size, snapshot: false, current: Buffer.alloc(size), committed: [Buffer.alloc(size)], maybeGone: false, bg: new Map() });
              else m.maybeVols.set(dst, [Buffer.alloc(size)]);
            } else {
              sut.proc.crashNow(() => sut.snapshotForCrash());
            }
          }
          sut.log.push(`   crash ${cut ? `cut the operation at request ${c.after}` : 'after the operation'} (gen ${sut.gen} -> ${sut.gen + 1})`);
          await sut.afterCrash();
          reconcile(false);
          // every volume: acknowledged writes are still there (the cache survived); flushes cut by the crash are caught up
          for (const [vn, mv] of [...m.vols]) {
            const r = await attempt('read after crash', async () => (await sut.vol(vn)).read(0, mv.size), false, vn);
            if (r.ok && !r.value.equals(mv.current)) {
              const candidates = mv.snapshot ? mv.committed : [mv.current];
              await resolveWhole(vn, mv, candidates, 'after crash');
            }
          }
          break;
        }

        case 'lose': {
          sut.log.push(`   machine loss (gen ${sut.gen} -> ${sut.gen + 1})`);
          const faults = sut.sw.faults;
          sut.sw.faults = false;
          try {
            await sut.loseMachine();
            reconcile(true);
            for (const [vn, mv] of m.vols) await resolveWhole(vn, mv, mv.committed, 'after machine loss (restore from the store)', mv.bg);
            for (const mv of m.vols.values()) mv.maybeGone = false;
            m.maybeVols.clear();
          } finally {
            sut.sw.faults = faults;
          }
          break;
        }
      }
    }
    // the end: without faults every volume reads as the model, flushes, and survives the loss of the machine
    sut.sw.faults = false;
    step = cmds.length;
    sut.log.push('end: flush all, machine loss, compare');
    for (const [vn, mv] of [...m.vols]) {
      const r = await attempt('end read', async () => (await sut.vol(vn)).read(0, mv.size), false, vn);
      if (!r.ok) continue; // an interrupted delete, finished
      if (!r.value.equals(mv.current)) fail(`end: volume '${vn}' differs from the model`);
      mv.committed = [Buffer.from(mv.current)];
      if (mv.snapshot) continue; // a snapshot writes no record: a tombstone of a cut delete stays the newest (maybeGone stays)
      await (await sut.vol(vn)).flush();
      mv.maybeGone = false;
    }
    await sut.loseMachine();
    reconcile(true);
    for (const [vn, mv] of m.vols) await resolveWhole(vn, mv, mv.committed, 'end: after machine loss');
  } catch (err) {
    if (err instanceof Fail) throw err;
    const e = err as Error & { code?: string };
    throw new Error(`${where()}: ${e?.constructor?.name} ${e?.code ?? ''}: ${e?.message}\nhistory:\n${sut.log.slice(-25).join('\n')}\n${e?.stack}`);
  } finally {
    await sut.close();
    rmSync(root, { recursive: true, force: true });
  }
}

export { Crashed };
