/**
 * The engine's whole public API against a simple in-memory model (issue 9), as fast-check
 * commands: put / delete / batch (with CAS, revision 0 = must not exist), get, stat, list
 * (prefix, after, limit), watch (live, and replay from a revision: the events must equal the
 * model's history), reclaim, sync, gc, close + reopen, createNamespace / dropNamespace, bad
 * input. Values small and separated (>= valueThreshold), keys up to the 1024-byte maximum.
 *
 * The model knows every revision the engine hands out (one counter, +1 per written operation).
 * What it cannot know exactly is where a reclaim compacted history: a replay from at or below
 * the revision of the last reclaim may end with E_COMPACTED, and one of a separated value that
 * has since been overwritten may too (its blob was collected): both only with a compactRevision
 * above fromRevision, and only after every event before it was delivered.
 */
import fs from 'node:fs';
import fc from 'fast-check';
import {
  open, KvError, nodeFileIo, type BatchOp, type Engine, type EngineOptions, type FileIo, type KvEngine, type WatchEvent,
} from '../../../src/index.js';

// ------------------------------------------------------------------ inputs

export const NAMESPACES = ['n1', 'n2', 'ü3'];
export const KEYS: Buffer[] = [
  Buffer.from('a'), Buffer.from('ab'), Buffer.from('abc'), Buffer.from('b'), Buffer.from('b/1'), Buffer.from('b/2'),
  Buffer.from([0]), Buffer.from([0xff, 0x00]), Buffer.from('L'.repeat(300)),
  Buffer.from('L'.repeat(1024)), Buffer.from('L'.repeat(1023) + 'M'),
];
export const PREFIXES: Buffer[] = [Buffer.alloc(0), Buffer.from('a'), Buffer.from('ab'), Buffer.from('b/'), Buffer.from('L'),
  Buffer.from('LLLL'), Buffer.from('z'), Buffer.from([0xff])];
export const VALUE_THRESHOLD = 64;

const keyArb = fc.constantFrom(...KEYS);
/** Mostly the namespace every run starts with. */
const nsArb = fc.constantFrom(NAMESPACES[0], NAMESPACES[0], NAMESPACES[0], NAMESPACES[0], NAMESPACES[1], NAMESPACES[2]);
/** Sizes around the threshold; the fill byte makes values of one size differ. */
const valueArb = fc.tuple(fc.constantFrom(0, 1, 7, VALUE_THRESHOLD - 1, VALUE_THRESHOLD, 200), fc.integer({ min: 0, max: 255 }))
  .map(([n, f]) => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = (f + i * 7) & 0xff;
    return b;
  });
/** ifRevision: none, 0 (must not exist), the key's current revision, or a wrong one. */
type CasSpec = 'none' | 'zero' | 'current' | 'wrong';
const casArb = fc.constantFrom<CasSpec>('none', 'none', 'zero', 'current', 'wrong');

const hex = (b: Buffer) => b.toString('hex');
const short = (b: Buffer | undefined) => (b === undefined ? '-' : b.length > 12 ? `${b.subarray(0, 6).toString('hex')}..(${b.length})` : hex(b));

// ------------------------------------------------------------------ model

interface Entry { value: Buffer; rev: number }
export interface ModelEvent { type: 'put' | 'delete'; key: Buffer; revision: number; value?: Buffer }

interface NsModel {
  keys: Map<string, Entry>;
  /** Every event of this incarnation of the namespace, in revision (and batch) order. */
  history: ModelEvent[];
  /** A replay from at or below this is E_COMPACTED for sure (the revision at the drop of an earlier incarnation). */
  compactedFloor: number;
  /** ... and from at or below this it may be (the revision at the last reclaim). */
  compactedCeil: number;
}

interface WatcherModel {
  id: number;
  ns: string;
  nsModel: NsModel;
  sel: { key: Buffer } | { prefix: Buffer };
  /** Events from this revision on are expected. */
  minRev: number;
  fromRevision: number | undefined;
  dropped: boolean;
}

export interface Model {
  revision: number;
  ns: Map<string, NsModel>;
  /** compactedFloor of a namespace name for its next incarnation (meta.compacted). */
  droppedAt: Map<string, number>;
  watchers: WatcherModel[];
  nextWatcherId: number;
  maxNamespaces: number;
  autoReclaim: boolean;
}

export interface RealWatcher {
  sub: AsyncIterable<WatchEvent> & { close(): void };
  events: WatchEvent[];
  end: null | { error: unknown } | { done: true };
  loop: Promise<void>;
}

export interface Real {
  e: Engine & KvEngine;
  dir: string;
  opts: EngineOptions;
  watchers: Map<number, RealWatcher>;
  log: string[];
}

export interface RunOptions {
  /** Random small delays in the asynchronous file calls (more interleavings of reclaim, replay and writes). */
  jitter: boolean;
  sync: 'none' | 'batch' | 'always';
  segmentMaxBytes: number;
  maxNamespaces: number;
  autoReclaim: boolean;
}

export const runOptionsArb: fc.Arbitrary<RunOptions> = fc.record({
  jitter: fc.boolean(),
  sync: fc.constantFrom<'none' | 'batch' | 'always'>('none', 'none', 'batch', 'always'),
  segmentMaxBytes: fc.constantFrom(128, 2048, 1 << 20),
  maxNamespaces: fc.constantFrom(2, 1024),
  autoReclaim: fc.boolean(),
});

/** node:fs with a delay of 0-2 ms (setTimeout) or a macrotask (setImmediate) before some asynchronous calls. */
function jitterIo(): FileIo {
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const pause = (): Promise<void> => {
    const x = rnd();
    if (x < 0.5) return Promise.resolve();
    return new Promise((r) => (x < 0.8 ? setImmediate(r) : setTimeout(r, Math.floor(rnd() * 3))));
  };
  const io: FileIo = { ...nodeFileIo };
  for (const name of ['open', 'read', 'write', 'fsync', 'unlink', 'rename', 'fsyncDir', 'readdir', 'close'] as const) {
    const f = nodeFileIo[name] as (...a: unknown[]) => Promise<unknown>;
    (io as unknown as Record<string, unknown>)[name] = async (...a: unknown[]) => {
      await pause();
      return f(...a);
    };
  }
  return io;
}

export function engineOptions(o: RunOptions): EngineOptions {
  return {
    ...(o.jitter ? { io: jitterIo() } : {}),
    sync: o.sync, valueThreshold: VALUE_THRESHOLD, segmentMaxBytes: o.segmentMaxBytes, maxNamespaces: o.maxNamespaces,
    reclaimMinBytes: o.autoReclaim ? 256 : 1 << 30, reclaimDeadRatio: 0.5, onWarning: () => {},
  };
}

export function newModel(o: RunOptions): Model {
  return { revision: 0, ns: new Map(), droppedAt: new Map(), watchers: [], nextWatcherId: 1, maxNamespaces: o.maxNamespaces, autoReclaim: o.autoReclaim };
}

function sortedKeys(m: NsModel): Buffer[] {
  return [...m.keys.keys()].map((h) => Buffer.from(h, 'hex')).sort(Buffer.compare);
}

function matches(sel: { key: Buffer } | { prefix: Buffer }, key: Buffer): boolean {
  if ('key' in sel) return sel.key.equals(key);
  return key.length >= sel.prefix.length && key.subarray(0, sel.prefix.length).equals(sel.prefix);
}

/** Is this value held by a live key anywhere (so its blob cannot have been collected)? */
function valueLive(m: Model, v: Buffer): boolean {
  for (const ns of m.ns.values()) for (const en of ns.keys.values()) if (en.value.equals(v)) return true;
  return false;
}

// ------------------------------------------------------------------ helpers

class Fail extends Error {}

function fail(msg: string): never {
  throw new Fail(msg);
}

/** Runs fn; a thrown non-KvError is a failure of the engine (every error of the API is a KvError). */
async function attempt<T>(what: string, fn: () => Promise<T> | T): Promise<{ ok: true; v: T } | { ok: false; err: KvError }> {
  try {
    return { ok: true, v: await fn() };
  } catch (err) {
    if (err instanceof KvError) return { ok: false, err };
    fail(`${what}: threw a non-KvError: ${(err as Error)?.stack ?? String(err)}`);
  }
}

function expectCode(what: string, r: { ok: boolean; err?: KvError }, code: string): void {
  if (r.ok) fail(`${what}: expected ${code}, got success`);
  if (r.err!.code !== code) fail(`${what}: expected ${code}, got ${r.err!.message}`);
}

function expectOk<T>(what: string, r: { ok: true; v: T } | { ok: false; err: KvError }): T {
  if (!r.ok) fail(`${what}: expected success, got ${r.err.message}`);
  return r.v;
}

function eq(what: string, got: unknown, want: unknown): void {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) fail(`${what}:\n  got  ${g}\n  want ${w}`);
}

const briefEv = (x: { type: string; key: Buffer; revision: number; value?: Buffer }) => `${x.type} ${short(x.key)} @${x.revision} ${short(x.value)}`;

function startWatcher(sub: AsyncIterable<WatchEvent> & { close(): void }): RealWatcher {
  const w: RealWatcher = { sub, events: [], end: null, loop: Promise.resolve() };
  w.loop = (async () => {
    try {
      for await (const ev of sub) w.events.push(ev);
      w.end = { done: true };
    } catch (error) {
      w.end = { error };
    }
  })();
  return w;
}

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const t0 = Date.now();
  while (!cond() && Date.now() - t0 < ms) await new Promise((r) => setTimeout(r, cond() ? 0 : 2));
  await new Promise((r) => setImmediate(r));
}

/** The events a watcher must have seen, from the model. */
function expectedEvents(wm: WatcherModel): ModelEvent[] {
  return wm.nsModel.history.filter((ev) => ev.revision >= wm.minRev && matches(wm.sel, ev.key));
}

/**
 * Compares what a watcher got with the model. A replay that ended with E_COMPACTED is accepted
 * only as the model allows (see the top of this file). Returns true if the watcher ended.
 */
function judgeWatcher(m: Model, wm: WatcherModel, w: RealWatcher, what: string, prefixOnly = false): boolean {
  const want = prefixOnly ? expectedEvents(wm).slice(0, w.events.length) : expectedEvents(wm);
  const got = w.events;
  const gotB = got.map(briefEv);
  const wantB = want.map(briefEv);
  if (w.end !== null && 'error' in w.end) {
    const err = w.end.error;
    if (!(err instanceof KvError)) fail(`${what}: watcher ended with a non-KvError: ${(err as Error)?.stack ?? String(err)}`);
    if (err.code === 'E_NO_NAMESPACE' && wm.dropped) {
      eq(`${what}: events before the drop`, gotB, wantB);
      return true;
    }
    if (err.code === 'E_COMPACTED') {
      const from = wm.fromRevision;
      const c = err.compactRevision ?? -1;
      if (from === undefined) fail(`${what}: a live watch (no fromRevision) ended with ${err.message}`);
      if (c <= from) fail(`${what}: E_COMPACTED with compactRevision ${c} <= fromRevision ${from}: ${err.message}`);
      eq(`${what}: events before E_COMPACTED`, gotB, wantB.slice(0, got.length));
      const ceil = m.autoReclaim ? m.revision : Math.max(wm.nsModel.compactedCeil, wm.nsModel.compactedFloor);
      if (got.length === 0 && from <= ceil && c - 1 <= ceil) return true; // history reclaimed
      // else: the value of the next event was a separated value since collected
      const next = want[got.length];
      if (next === undefined || next.revision !== c - 1 || next.type !== 'put' || next.value!.length < VALUE_THRESHOLD ||
        valueLive(m, next.value!)) {
        fail(`${what}: unexpected ${err.message} (fromRevision ${from}, compaction ceiling ${ceil}); next expected event: ` +
          `${next ? briefEv(next) : 'none'}; got ${gotB.length} events`);
      }
      return true;
    }
    fail(`${what}: watcher ended with ${err.message}`);
  }
  eq(`${what}: events`, gotB, wantB);
  for (let i = 0; i < got.length; i++) {
    const a = got[i].value;
    const b = want[i].value;
    if ((a === undefined) !== (b === undefined) || (a !== undefined && !a.equals(b!))) fail(`${what}: value of event ${i} differs`);
  }
  if (w.end !== null) {
    if (wm.dropped) fail(`${what}: watcher of a dropped namespace ended without E_NO_NAMESPACE`);
    return true;
  }
  return false;
}

async function checkWatchers(m: Model, r: Real, what: string): Promise<void> {
  for (const wm of [...m.watchers]) {
    const w = r.watchers.get(wm.id)!;
    const n = expectedEvents(wm).length;
    await waitFor(() => w.events.length >= n || w.end !== null, 5000);
    if (judgeWatcher(m, wm, w, `${what}: watcher #${wm.id} ${'key' in wm.sel ? `key ${short(wm.sel.key)}` : `prefix ${short(wm.sel.prefix)}`} on ${wm.ns} from ${wm.fromRevision}`)) {
      m.watchers = m.watchers.filter((x) => x !== wm);
      r.watchers.delete(wm.id);
    }
  }
}

async function checkInvariants(m: Model, r: Real, what: string): Promise<void> {
  const st = r.e.stats();
  let keys = 0;
  for (const ns of m.ns.values()) keys += ns.keys.size;
  eq(`${what}: stats().keys`, st.keys, keys);
  eq(`${what}: stats().namespaces`, st.namespaces, m.ns.size);
  eq(`${what}: stats().revision`, st.revision, m.revision);
  eq(`${what}: stats().poisoned`, st.poisoned, 0);
  eq(`${what}: listNamespaces`, r.e.listNamespaces(), [...m.ns.keys()].sort());
}

// ------------------------------------------------------------------ commands

type Cmd = fc.AsyncCommand<Model, Real>;

function recordWrite(m: Model, nsm: NsModel, evs: ModelEvent[]): void {
  for (const ev of evs) {
    nsm.history.push(ev);
    if (ev.type === 'put') nsm.keys.set(hex(ev.key), { value: ev.value!, rev: ev.revision });
    else nsm.keys.delete(hex(ev.key));
  }
}

function casValue(spec: CasSpec, cur: number): number | undefined {
  if (spec === 'none') return undefined;
  if (spec === 'zero') return 0;
  if (spec === 'current') return cur;
  return cur + 1000;
}

class PutCmd implements Cmd {
  constructor(readonly ns: string, readonly key: Buffer, readonly value: Buffer, readonly cas: CasSpec) {}
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    const nsm = m.ns.get(this.ns);
    const cur = nsm?.keys.get(hex(this.key))?.rev ?? 0;
    const ifRevision = casValue(this.cas, cur);
    const res = await attempt(this.toString(), () => r.e.put(this.ns, this.key, this.value, ifRevision === undefined ? undefined : { ifRevision }));
    if (nsm === undefined) return expectCode(this.toString(), res, 'E_NO_NAMESPACE');
    if (ifRevision !== undefined && ifRevision !== cur) {
      expectCode(this.toString(), res, 'E_CAS_MISMATCH');
      if (!res.ok) eq(`${this}: currentRevision`, res.err.currentRevision, cur);
      return;
    }
    const rev = expectOk(this.toString(), res);
    eq(`${this}: revision`, rev, m.revision + 1);
    m.revision = rev;
    recordWrite(m, nsm, [{ type: 'put', key: this.key, revision: rev, value: this.value }]);
  }
  toString(): string { return `put(${this.ns}, ${short(this.key)}, ${short(this.value)}, cas ${this.cas})`; }
}

class DeleteCmd implements Cmd {
  constructor(readonly ns: string, readonly key: Buffer, readonly cas: CasSpec) {}
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    const nsm = m.ns.get(this.ns);
    const cur = nsm?.keys.get(hex(this.key))?.rev ?? 0;
    const ifRevision = casValue(this.cas, cur);
    const res = await attempt(this.toString(), () => r.e.delete(this.ns, this.key, ifRevision === undefined ? undefined : { ifRevision }));
    if (nsm === undefined) return expectCode(this.toString(), res, 'E_NO_NAMESPACE');
    if (ifRevision !== undefined && ifRevision !== cur) {
      expectCode(this.toString(), res, 'E_CAS_MISMATCH');
      if (!res.ok) eq(`${this}: currentRevision`, res.err.currentRevision, cur);
      return;
    }
    const rev = expectOk(this.toString(), res);
    if (cur === 0) return eq(`${this}: delete of an absent key`, rev, undefined);
    eq(`${this}: revision`, rev, m.revision + 1);
    m.revision = rev!;
    recordWrite(m, nsm, [{ type: 'delete', key: this.key, revision: rev! }]);
  }
  toString(): string { return `delete(${this.ns}, ${short(this.key)}, cas ${this.cas})`; }
}

class BatchCmd implements Cmd {
  constructor(readonly ns: string, readonly ops: Array<{ type: 'put'; key: Buffer; value: Buffer } | { type: 'delete'; key: Buffer }>) {}
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    const nsm = m.ns.get(this.ns);
    const res = await attempt(this.toString(), () => r.e.batch(this.ns, this.ops as BatchOp[]));
    if (nsm === undefined) return expectCode(this.toString(), res, 'E_NO_NAMESPACE');
    const rev = expectOk(this.toString(), res);
    if (this.ops.length === 0) return eq(`${this}: revision of an empty batch`, rev, m.revision);
    eq(`${this}: revision`, rev, m.revision + 1);
    m.revision = rev;
    recordWrite(m, nsm, this.ops.map((o) => (o.type === 'put'
      ? { type: 'put' as const, key: o.key, revision: rev, value: o.value }
      : { type: 'delete' as const, key: o.key, revision: rev })));
  }
  toString(): string {
    return `batch(${this.ns}, [${this.ops.map((o) => `${o.type} ${short(o.key)}${o.type === 'put' ? ` ${short(o.value)}` : ''}`).join(', ')}])`;
  }
}

class GetCmd implements Cmd {
  constructor(readonly ns: string, readonly key: Buffer) {}
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    const nsm = m.ns.get(this.ns);
    const res = await attempt(this.toString(), () => r.e.get(this.ns, this.key));
    const st = await attempt(this.toString(), () => r.e.stat(this.ns, this.key));
    if (nsm === undefined) {
      expectCode(this.toString(), st, 'E_NO_NAMESPACE');
      return expectCode(this.toString(), res, 'E_NO_NAMESPACE');
    }
    const got = expectOk(this.toString(), res);
    const want = nsm.keys.get(hex(this.key));
    eq(`${this}`, got === undefined ? null : { v: short(got.value), rev: got.revision },
      want === undefined ? null : { v: short(want.value), rev: want.rev });
    if (got !== undefined && !got.value.equals(want!.value)) fail(`${this}: value bytes differ`);
    const s = expectOk(this.toString(), st);
    eq(`${this}: stat`, s === undefined ? null : { size: s.size, rev: s.revision }, want === undefined ? null : { size: want.value.length, rev: want.rev });
  }
  toString(): string { return `get(${this.ns}, ${short(this.key)})`; }
}

class ListCmd implements Cmd {
  constructor(readonly ns: string, readonly prefix: Buffer | undefined, readonly after: Buffer | undefined, readonly limit: number | undefined) {}
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    const nsm = m.ns.get(this.ns);
    const opts: { prefix?: Buffer; after?: Buffer; limit?: number } = {};
    if (this.prefix !== undefined) opts.prefix = this.prefix;
    if (this.after !== undefined) opts.after = this.after;
    if (this.limit !== undefined) opts.limit = this.limit;
    const res = await attempt(this.toString(), () => r.e.list(this.ns, opts));
    if (nsm === undefined) return expectCode(this.toString(), res, 'E_NO_NAMESPACE');
    const got = expectOk(this.toString(), res).map((x) => ({ k: hex(x.key), rev: x.revision, size: x.size }));
    let keys = sortedKeys(nsm);
    if (this.after !== undefined) keys = keys.filter((k) => Buffer.compare(k, this.after!) > 0);
    if (this.prefix !== undefined) keys = keys.filter((k) => matches({ prefix: this.prefix! }, k));
    if (this.limit !== undefined) keys = keys.slice(0, this.limit);
    eq(`${this}`, got, keys.map((k) => {
      const en = nsm.keys.get(hex(k))!;
      return { k: hex(k), rev: en.rev, size: en.value.length };
    }));
  }
  toString(): string { return `list(${this.ns}, prefix ${short(this.prefix)}, after ${short(this.after)}, limit ${this.limit})`; }
}

class CreateNsCmd implements Cmd {
  constructor(readonly ns: string) {}
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    const res = await attempt(this.toString(), () => r.e.createNamespace(this.ns));
    if (m.ns.has(this.ns)) return expectCode(this.toString(), res, 'E_NAMESPACE_EXISTS');
    if (m.ns.size >= m.maxNamespaces) return expectCode(this.toString(), res, 'E_TOO_MANY_NAMESPACES');
    expectOk(this.toString(), res);
    const floor = m.droppedAt.get(this.ns) ?? 0;
    m.ns.set(this.ns, { keys: new Map(), history: [], compactedFloor: floor, compactedCeil: floor });
  }
  toString(): string { return `createNamespace(${this.ns})`; }
}

class DropNsCmd implements Cmd {
  constructor(readonly ns: string, readonly force: boolean) {}
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    const nsm = m.ns.get(this.ns);
    const res = await attempt(this.toString(), () => r.e.dropNamespace(this.ns, { force: this.force }));
    if (nsm === undefined) return expectCode(this.toString(), res, 'E_NO_NAMESPACE');
    if (!this.force && nsm.keys.size > 0) return expectCode(this.toString(), res, 'E_NAMESPACE_NOT_EMPTY');
    expectOk(this.toString(), res);
    m.ns.delete(this.ns);
    m.droppedAt.set(this.ns, m.revision);
    for (const wm of m.watchers) if (wm.nsModel === nsm) wm.dropped = true;
    await checkWatchers(m, r, this.toString());
  }
  toString(): string { return `dropNamespace(${this.ns}, force ${this.force})`; }
}

class WatchCmd implements Cmd {
  constructor(readonly ns: string, readonly sel: { key: Buffer } | { prefix: Buffer }, readonly from: 'none' | 'zero' | number) {}
  check(m: Model): boolean { return m.watchers.length < 4; }
  async run(m: Model, r: Real): Promise<void> {
    const nsm = m.ns.get(this.ns);
    // fromRevision: none, 0, or a revision relative to the current one (1 = the next write)
    const fromRevision = this.from === 'none' ? undefined : this.from === 'zero' ? 0 : Math.max(1, m.revision + this.from);
    const res = await attempt(this.toString(), () => r.e.watch(this.ns, this.sel, fromRevision === undefined ? undefined : { fromRevision }));
    if (nsm === undefined) return expectCode(this.toString(), res, 'E_NO_NAMESPACE');
    if (!res.ok) {
      if (res.err.code !== 'E_COMPACTED' || fromRevision === undefined) fail(`${this}: ${res.err.message}`);
      const c = res.err.compactRevision!;
      const ceil = m.autoReclaim ? m.revision : Math.max(nsm.compactedCeil, nsm.compactedFloor);
      if (!(fromRevision <= ceil && c > fromRevision && c - 1 <= ceil)) {
        fail(`${this}: unexpected ${res.err.message} (from ${fromRevision}, compaction ceiling ${ceil})`);
      }
      return;
    }
    if (fromRevision !== undefined && nsm.compactedFloor > 0 && fromRevision <= nsm.compactedFloor) {
      fail(`${this}: from ${fromRevision} at or below the revision of the namespace's earlier drop (${nsm.compactedFloor}) was not E_COMPACTED`);
    }
    const id = m.nextWatcherId++;
    m.watchers.push({ id, ns: this.ns, nsModel: nsm, sel: this.sel, minRev: fromRevision ?? m.revision + 1, fromRevision, dropped: false });
    r.watchers.set(id, startWatcher(res.v));
    await checkWatchers(m, r, this.toString());
  }
  toString(): string {
    return `watch(${this.ns}, ${'key' in this.sel ? `key ${short(this.sel.key)}` : `prefix ${short(this.sel.prefix)}`}, from ${this.from})`;
  }
}

class CloseWatcherCmd implements Cmd {
  constructor(readonly which: number) {}
  check(m: Model): boolean { return m.watchers.length > 0; }
  async run(m: Model, r: Real): Promise<void> {
    await checkWatchers(m, r, this.toString());
    if (m.watchers.length === 0) return;
    const wm = m.watchers[this.which % m.watchers.length];
    const w = r.watchers.get(wm.id)!;
    w.sub.close();
    await w.loop;
    if (w.end === null || !('done' in w.end)) fail(`${this}: a closed watcher did not end done`);
    m.watchers = m.watchers.filter((x) => x !== wm);
    r.watchers.delete(wm.id);
  }
  toString(): string { return `closeWatcher(${this.which})`; }
}

class CheckWatchersCmd implements Cmd {
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    await checkWatchers(m, r, 'checkWatchers');
    await checkInvariants(m, r, 'checkWatchers');
  }
  toString(): string { return 'checkWatchers'; }
}

class ReclaimCmd implements Cmd {
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    const res = await attempt('reclaim', () => r.e.reclaim());
    expectOk('reclaim', res);
    for (const nsm of m.ns.values()) nsm.compactedCeil = m.revision;
    await checkInvariants(m, r, 'reclaim');
  }
  toString(): string { return 'reclaim'; }
}

class SyncCmd implements Cmd {
  constructor(readonly gc: boolean) {}
  check(): boolean { return true; }
  async run(_m: Model, r: Real): Promise<void> {
    if (!this.gc) return void expectOk('sync', await attempt('sync', () => r.e.sync()));
    const g = expectOk('gc', await attempt('gc', () => r.e.gc()));
    eq('gc: orphans swept in a run without crashes', g.orphansSwept, 0);
  }
  toString(): string { return this.gc ? 'gc' : 'sync'; }
}

/**
 * Writes fired together (Promise.all), with a reclaim and a replaying watch among them: the
 * engine must hand out the next revisions, one per write, and apply them in revision order.
 */
class BurstCmd implements Cmd {
  constructor(readonly ns: string, readonly ops: Array<{ type: 'put'; key: Buffer; value: Buffer } | { type: 'batch'; ops: BatchCmd['ops'] }>,
    readonly reclaim: boolean, readonly watchFrom: number | null) {}
  check(m: Model): boolean { return m.ns.has(this.ns) && (this.watchFrom === null || m.watchers.length < 4); }
  async run(m: Model, r: Real): Promise<void> {
    const nsm = m.ns.get(this.ns)!;
    const base = m.revision;
    let fromRevision: number | undefined;
    const jobs: Array<Promise<{ ok: true; v: unknown } | { ok: false; err: KvError }>> = [];
    let reclaimJob: Promise<unknown> = Promise.resolve({ ok: true, v: null });
    let sub: (AsyncIterable<WatchEvent> & { close(): void }) | null = null;
    let subErr: unknown = null;
    // the reclaim first (its seal goes ahead of the writes), then half of the writes, acknowledged;
    // then a watch replaying from among them while the reclaim may still run; then the rest
    if (this.reclaim) {
      reclaimJob = attempt(`${this}: reclaim`, () => r.e.reclaim());
      await new Promise((res) => setImmediate(res));
    }
    const mid = Math.floor(this.ops.length / 2);
    for (let i = 0; i < this.ops.length; i++) {
      const o = this.ops[i];
      if (i === mid) {
        await Promise.all(jobs);
        if (this.watchFrom !== null) {
          fromRevision = Math.max(1, r.e.stats().revision + this.watchFrom);
          try {
            sub = r.e.watch(this.ns, { prefix: Buffer.alloc(0) }, { fromRevision });
          } catch (err) {
            subErr = err;
          }
        }
      }
      jobs.push(attempt(`${this}: op ${i}`, () => (o.type === 'put' ? r.e.put(this.ns, o.key, o.value) : r.e.batch(this.ns, o.ops as BatchOp[]))));
    }
    const results = await Promise.all(jobs);
    for (const res of results) expectOk(this.toString(), res);
    expectOk(`${this}: reclaim`, await reclaimJob as { ok: true; v: unknown });
    if (this.reclaim) for (const n of m.ns.values()) n.compactedCeil = base + this.ops.length; // at most
    // writes in revision order; an empty batch answers some revision already handed out
    const revs: Array<{ rev: number; i: number }> = [];
    for (let i = 0; i < this.ops.length; i++) {
      const rev = (results[i] as { v: number }).v;
      const o = this.ops[i];
      if (o.type === 'batch' && o.ops.length === 0) {
        if (rev < base || rev > base + this.ops.length) fail(`${this}: empty batch answered revision ${rev} (base ${base})`);
        continue;
      }
      revs.push({ rev, i });
    }
    revs.sort((a, b) => a.rev - b.rev);
    eq(`${this}: revisions handed out`, revs.map((x) => x.rev), revs.map((_, j) => base + 1 + j));
    for (const { rev, i } of revs) {
      const o = this.ops[i];
      recordWrite(m, nsm, o.type === 'put' ? [{ type: 'put', key: o.key, revision: rev, value: o.value }]
        : o.ops.map((x) => (x.type === 'put' ? { type: 'put' as const, key: x.key, revision: rev, value: x.value }
          : { type: 'delete' as const, key: x.key, revision: rev })));
    }
    m.revision = base + revs.length;
    if (fromRevision !== undefined) {
      if (subErr !== null) {
        if (!(subErr instanceof KvError) || subErr.code !== 'E_COMPACTED') fail(`${this}: watch threw ${(subErr as Error)?.stack ?? subErr}`);
        const ceil = m.autoReclaim ? m.revision : Math.max(nsm.compactedCeil, nsm.compactedFloor);
        if (!(fromRevision <= ceil && subErr.compactRevision! > fromRevision)) fail(`${this}: unexpected ${subErr.message}`);
      } else {
        const id = m.nextWatcherId++;
        m.watchers.push({ id, ns: this.ns, nsModel: nsm, sel: { prefix: Buffer.alloc(0) }, minRev: fromRevision, fromRevision, dropped: false });
        r.watchers.set(id, startWatcher(sub!));
      }
    }
    await checkWatchers(m, r, this.toString());
    await checkInvariants(m, r, this.toString());
  }
  toString(): string {
    return `burst(${this.ns}, [${this.ops.map((o) => (o.type === 'put' ? `put ${short(o.key)} ${short(o.value)}` : new BatchCmd(this.ns, o.ops).toString())).join(', ')}]` +
      `${this.reclaim ? ', reclaim' : ''}${this.watchFrom !== null ? `, watch from ${this.watchFrom}` : ''})`;
  }
}

/**
 * close() while writes are in flight: each write is acknowledged or fails with E_CLOSED; the
 * acknowledged ones took the next revisions and are all there after a reopen, the others are not.
 * Watchers end at the close (they may miss events still queued: close drops queues).
 */
class ClosingBurstCmd implements Cmd {
  constructor(readonly ns: string, readonly ops: BurstCmd['ops'], readonly closeAt: number) {}
  check(m: Model): boolean { return m.ns.has(this.ns); }
  async run(m: Model, r: Real): Promise<void> {
    await checkWatchers(m, r, this.toString());
    const nsm = m.ns.get(this.ns)!;
    const base = m.revision;
    const jobs: Array<Promise<{ ok: true; v: unknown } | { ok: false; err: KvError }>> = [];
    let closing: Promise<unknown> = Promise.resolve();
    for (let i = 0; i < this.ops.length; i++) {
      if (i === this.closeAt % this.ops.length) closing = attempt(`${this}: close`, () => r.e.close());
      const o = this.ops[i];
      jobs.push(attempt(`${this}: op ${i}`, () => (o.type === 'put' ? r.e.put(this.ns, o.key, o.value) : r.e.batch(this.ns, o.ops as BatchOp[]))));
    }
    const results = await Promise.all(jobs);
    expectOk(`${this}: close`, await closing as { ok: true; v: unknown });
    const revs: Array<{ rev: number; i: number }> = [];
    results.forEach((res, i) => {
      if (!res.ok) {
        if (res.err.code !== 'E_CLOSED') fail(`${this}: op ${i} failed with ${res.err.message}`);
        return;
      }
      const o = this.ops[i];
      if (o.type === 'batch' && o.ops.length === 0) return;
      revs.push({ rev: res.v as number, i });
    });
    revs.sort((a, b) => a.rev - b.rev);
    eq(`${this}: revisions of the acknowledged writes`, revs.map((x) => x.rev), revs.map((_, j) => base + 1 + j));
    for (const { rev, i } of revs) {
      const o = this.ops[i];
      recordWrite(m, nsm, o.type === 'put' ? [{ type: 'put', key: o.key, revision: rev, value: o.value }]
        : o.ops.map((x) => (x.type === 'put' ? { type: 'put' as const, key: x.key, revision: rev, value: x.value }
          : { type: 'delete' as const, key: x.key, revision: rev })));
    }
    m.revision = base + revs.length;
    for (const wm of m.watchers) {
      const w = r.watchers.get(wm.id)!;
      await w.loop;
      if (!judgeWatcher(m, wm, w, `${this}: watcher #${wm.id}`, true)) fail(`${this}: a watcher did not end at close`);
    }
    m.watchers = [];
    r.watchers.clear();
    expectCode(`${this}: get after close`, await attempt('get after close', () => r.e.get(this.ns, 'a')), 'E_CLOSED');
    r.e = expectOk('open', await attempt('open', () => open(r.dir, r.opts)));
    await checkInvariants(m, r, this.toString());
    for (const [ns, n] of m.ns) {
      for (const k of sortedKeys(n)) await new GetCmd(ns, k).run(m, r);
      await new ListCmd(ns, undefined, undefined, undefined).run(m, r);
    }
  }
  toString(): string {
    return `closingBurst(${this.ns}, [${this.ops.map((o) => (o.type === 'put' ? `put ${short(o.key)} ${short(o.value)}` : new BatchCmd(this.ns, o.ops).toString())).join(', ')}], close at ${this.closeAt})`;
  }
}

class ReopenCmd implements Cmd {
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    await checkWatchers(m, r, 'reopen');
    expectOk('close', await attempt('close', () => r.e.close()));
    for (const wm of m.watchers) {
      const w = r.watchers.get(wm.id)!;
      await w.loop;
      if (!judgeWatcher(m, wm, w, `reopen: watcher #${wm.id}`)) fail('reopen: a watcher did not end at close');
    }
    m.watchers = [];
    r.watchers.clear();
    r.e = expectOk('open', await attempt('open', () => open(r.dir, r.opts)));
    await checkInvariants(m, r, 'reopen');
    // every key, value and revision survived
    for (const [ns, nsm] of m.ns) {
      for (const k of sortedKeys(nsm)) await new GetCmd(ns, k).run(m, r);
      await new ListCmd(ns, undefined, undefined, undefined).run(m, r);
    }
  }
  toString(): string { return 'reopen'; }
}

class BadInputCmd implements Cmd {
  constructor(readonly kind: number) {}
  check(): boolean { return true; }
  async run(m: Model, r: Real): Promise<void> {
    const ns = [...m.ns.keys()][0] ?? 'n1';
    const cases: Array<[string, () => unknown, string]> = [
      ['empty key', () => r.e.put(ns, Buffer.alloc(0), 'v'), 'E_INVALID_KEY'],
      ['1025-byte key', () => r.e.put(ns, Buffer.alloc(1025, 1), 'v'), 'E_INVALID_KEY'],
      ['1025-byte key in a batch', () => r.e.batch(ns, [{ type: 'put', key: 'ok', value: 'v' }, { type: 'delete', key: Buffer.alloc(1025, 1) }]), 'E_INVALID_KEY'],
      ['bad batch op', () => r.e.batch(ns, [{ type: 'nope', key: 'k' } as unknown as BatchOp]), 'E_INVALID_ARGUMENT'],
      ['negative ifRevision', () => r.e.put(ns, 'k', 'v', { ifRevision: -1 }), 'E_INVALID_ARGUMENT'],
      ['namespace name with /', () => r.e.createNamespace('a/b'), 'E_INVALID_NAME'],
      ['namespace name ..', () => r.e.createNamespace('..'), 'E_INVALID_NAME'],
      ['negative limit', () => r.e.list(ns, { limit: -1 }), 'E_INVALID_ARGUMENT'],
      ['watch without a selector', () => r.e.watch(ns, {} as { key: string }), 'E_INVALID_ARGUMENT'],
    ];
    const [name, fn, code] = cases[this.kind % cases.length];
    const res = await attempt(`bad input: ${name}`, fn);
    if (m.ns.has(ns) || name.startsWith('namespace name')) expectCode(`bad input: ${name}`, res, code);
    await checkInvariants(m, r, `bad input: ${name}`);
  }
  toString(): string { return `badInput(${this.kind})`; }
}

export function commandArbs(): Array<fc.Arbitrary<Cmd>> {
  const opArb = fc.oneof(
    fc.record({ type: fc.constant('put' as const), key: keyArb, value: valueArb }),
    fc.record({ type: fc.constant('delete' as const), key: keyArb }),
  );
  const selArb = fc.oneof(keyArb.map((key) => ({ key })), fc.constantFrom(...PREFIXES).map((prefix) => ({ prefix })));
  const put = fc.tuple(nsArb, keyArb, valueArb, casArb).map(([n, k, v, c]) => new PutCmd(n, k, v, c));
  const batch = fc.tuple(nsArb, fc.array(opArb, { maxLength: 5 })).map(([n, ops]) => new BatchCmd(n, ops));
  return [ // (repeats weigh: fc.commands picks an arbitrary uniformly)
    put, put, put, put, batch, batch, batch,
    fc.tuple(nsArb, keyArb, casArb).map(([n, k, c]) => new DeleteCmd(n, k, c)),
    fc.tuple(nsArb, keyArb, casArb).map(([n, k, c]) => new DeleteCmd(n, k, c)),
    fc.tuple(nsArb, keyArb).map(([n, k]) => new GetCmd(n, k)),
    fc.tuple(nsArb, fc.option(fc.constantFrom(...PREFIXES), { nil: undefined }), fc.option(keyArb, { nil: undefined }),
      fc.option(fc.integer({ min: 0, max: 4 }), { nil: undefined })).map(([n, p, a, l]) => new ListCmd(n, p, a, l)),
    nsArb.map((n) => new CreateNsCmd(n)),
    fc.tuple(nsArb, fc.boolean()).map(([n, f]) => new DropNsCmd(n, f)),
    fc.tuple(nsArb, selArb, fc.oneof(fc.constantFrom<'none' | 'zero'>('none', 'zero'), fc.integer({ min: -12, max: 2 })))
      .map(([n, s, f]) => new WatchCmd(n, s, f)),
    fc.tuple(nsArb, selArb, fc.integer({ min: -12, max: 0 })).map(([n, s, f]) => new WatchCmd(n, s, f)),
    fc.nat().map((i) => new CloseWatcherCmd(i)),
    fc.nat().map((i) => new CloseWatcherCmd(i)),
    fc.constant(new CheckWatchersCmd()),
    fc.constant(new ReclaimCmd()),
    fc.boolean().map((g) => new SyncCmd(g)),
    fc.constant(new ReopenCmd()),
    fc.tuple(nsArb, fc.array(fc.oneof(
      fc.record({ type: fc.constant('put' as const), key: keyArb, value: valueArb }),
      fc.record({ type: fc.constant('batch' as const), ops: fc.array(opArb, { maxLength: 3 }) }),
    ), { minLength: 2, maxLength: 8 }), fc.boolean(), fc.option(fc.integer({ min: -8, max: 1 }), { nil: null }))
      .map(([n, ops, rc, w]) => new BurstCmd(n, ops, rc, w)),
    fc.tuple(nsArb, fc.array(fc.oneof(
      fc.record({ type: fc.constant('put' as const), key: keyArb, value: valueArb }),
      fc.record({ type: fc.constant('batch' as const), ops: fc.array(opArb, { maxLength: 3 }) }),
    ), { minLength: 1, maxLength: 6 }), fc.nat()).map(([n, ops, c]) => new ClosingBurstCmd(n, ops, c)),
    fc.nat().map((k) => new BadInputCmd(k)),
  ];
}

/** One run: a fresh data directory, the commands, a final check of everything, cleanup. */
export async function runModel(o: RunOptions, cmds: Iterable<Cmd>, dir: string): Promise<void> {
  const opts = engineOptions(o);
  const m = newModel(o);
  const r: Real = { e: await open(dir, opts), dir, opts, watchers: new Map(), log: [] };
  try {
    await r.e.createNamespace('n1');
    m.ns.set('n1', { keys: new Map(), history: [], compactedFloor: 0, compactedCeil: 0 });
    await fc.asyncModelRun(() => ({ model: m, real: r }), cmds);
    await checkWatchers(m, r, 'end');
    await new ReopenCmd().run(m, r);
  } finally {
    for (const w of r.watchers.values()) w.sub.close();
    await r.e.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
