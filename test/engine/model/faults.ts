/**
 * The fault model: the crash model's commands run in this process on an engine whose FileIo
 * fails on cue — the n-th call of a kind (any mutating call, writes, fsyncs, renames, opens,
 * reads) fails with EIO or ENOSPC, once or for the next k calls, or a write is short (part of
 * the bytes, then success or an error). Checked after every step:
 * - every rejection is a KvError with a code (never a raw Error);
 * - a command that failed while the engine is not poisoned changed nothing (every key of every
 *   namespace as the model says, namespaces too);
 * - a poisoned engine fails writes with E_POISONED and keeps reading; after a clean reopen the
 *   failed command is applied wholly or not at all, and everything acknowledged is there;
 * - a fault during open fails it with a KvError and destroys nothing (a clean open after it
 *   finds every acknowledged write);
 * - at the end (clean close + reopen) the state and the watch replay equal the model.
 */
import fs from 'node:fs';
import fc from 'fast-check';
import { open, KvError, nodeFileIo, type EngineOptions, type FileIo } from '../../../src/index.js';
import { keyOf, SENTINEL, valueOf, type CCmd, type COpts, type CSubOp } from './crash-spec.js';
import {
  applyAck, checkReplay, cmdArb, cmdStr, fail, optsArb, reconcile, type Eng, type InFlight, type Line, type M,
} from './crash.js';

export type FaultKind = 'mutating' | 'write' | 'fsync' | 'rename' | 'open' | 'read' | 'any';
export interface Fault {
  kind: FaultKind;
  /** The n-th call of that kind (from when the fault is armed) fails. */
  n: number;
  /** ... and the next `count - 1` too. */
  count: number;
  errno: 'EIO' | 'ENOSPC';
  /** For writes: write this fraction first (0 = nothing). 'short' returns the partial count without an error. */
  partial: 0 | 0.5 | 'short';
}

export const faultArb: fc.Arbitrary<Fault> = fc.record({
  kind: fc.constantFrom<FaultKind>('mutating', 'mutating', 'write', 'write', 'fsync', 'rename', 'open', 'read', 'any'),
  n: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 4 }), weight: 3 }, { arbitrary: fc.integer({ min: 1, max: 30 }), weight: 1 }),
  count: fc.constantFrom(1, 1, 1, 3, 1000),
  errno: fc.constantFrom<'EIO' | 'ENOSPC'>('EIO', 'ENOSPC'),
  partial: fc.constantFrom<0 | 0.5 | 'short'>(0, 0, 0.5, 'short'),
});

export type Step = { cmd: CCmd; fault: Fault | null } | { cmd: { t: 'openFault'; opts: COpts }; fault: Fault };
export const stepsArb: fc.Arbitrary<Step[]> = fc.array(fc.oneof(
  { arbitrary: fc.record({ cmd: cmdArb, fault: fc.option(faultArb, { freq: 2 }) }), weight: 8 },
  { arbitrary: fc.record({ cmd: fc.record({ t: fc.constant('openFault' as const), opts: optsArb }), fault: faultArb }), weight: 1 },
), { minLength: 1, maxLength: 30 });

const KIND_OF: Record<string, FaultKind[]> = {
  write: ['write', 'mutating', 'any'], writeSync: ['write', 'mutating', 'any'], fsync: ['fsync', 'mutating', 'any'],
  fsyncDir: ['fsync', 'mutating', 'any'], ftruncate: ['mutating', 'any'], mkdir: ['mutating', 'any'], unlink: ['mutating', 'any'],
  rename: ['rename', 'mutating', 'any'], link: ['mutating', 'any'], rm: ['mutating', 'any'], open: ['open', 'any'],
  read: ['read', 'any'], readSync: ['read', 'any'], readFile: ['read', 'any'], readdir: ['read', 'any'], fstatSize: ['any'],
  close: [],
};

export class FaultIo {
  armed: Fault | null = null;
  calls = 0;
  fired = 0;
  readonly io: FileIo;

  constructor() {
    const io: FileIo = { ...nodeFileIo };
    const self = this;
    const errno = (code: string, name: string) => Object.assign(new Error(`${code}: injected into ${name}`), { code });
    for (const name of Object.keys(KIND_OF)) {
      const f = (nodeFileIo as unknown as Record<string, (...a: unknown[]) => unknown>)[name];
      if (f === undefined) continue;
      const sync = name.endsWith('Sync');
      (io as unknown as Record<string, unknown>)[name] = sync
        ? (...a: unknown[]) => {
          const fault = self.hit(name);
          if (fault === null) return f(...a);
          if (name === 'writeSync' && fault.partial !== 0) {
            const [fd, buf, off, len, pos] = a as [number, Uint8Array, number, number, number];
            const half = len >> 1;
            const w = half > 0 ? nodeFileIo.writeSync!(fd, buf, off, half, pos) : 0;
            if (fault.partial === 'short' && w > 0) return w;
          }
          throw errno(fault.errno, name);
        }
        : async (...a: unknown[]) => {
          const fault = self.hit(name);
          if (fault === null) return f(...a);
          if (name === 'write' && fault.partial !== 0) {
            const [fd, buf, off, len, pos] = a as [number, Uint8Array, number, number, number];
            const half = len >> 1;
            const w = half > 0 ? await nodeFileIo.write(fd, buf, off, half, pos) : 0;
            if (fault.partial === 'short' && w > 0) return w;
          }
          throw errno(fault.errno, name);
        };
    }
    this.io = io;
  }

  arm(f: Fault | null): void {
    this.armed = f;
    this.calls = 0;
    if (f !== null) this.fired = 0;
  }

  private hit(name: string): Fault | null {
    const f = this.armed;
    if (f === null || !KIND_OF[name].includes(f.kind)) return null;
    this.calls++;
    if (this.calls < f.n || this.calls >= f.n + f.count) return null;
    this.fired++;
    return f;
  }
}

function engOpts(o: COpts, io: FileIo): EngineOptions {
  return { ...o, io, onWarning: () => {} };
}

async function attempt(fn: () => Promise<unknown>): Promise<{ ok: true; v: unknown } | { ok: false; err: KvError }> {
  try {
    return { ok: true, v: await fn() };
  } catch (err) {
    if (err instanceof KvError) return { ok: false, err };
    fail(`non-KvError: ${(err as Error)?.stack ?? String(err)}`);
  }
}

const lineOf = (i: number, j: number, r: { ok: true; v: unknown } | { ok: false; err: KvError }): Line => (r.ok
  ? { a: i, j, ok: 1, rev: typeof r.v === 'number' ? r.v : null }
  : { a: i, j, ok: 0, code: r.err.code, msg: r.err.message });

function subOp(e: Eng, ns: string, o: CSubOp): Promise<number | undefined> {
  return o.t === 'put' ? e.put(ns, keyOf(o.key), valueOf(o.size, o.fill)) : e.delete(ns, keyOf(o.key));
}

/** Runs one command; returns its ack lines (a burst has one per op). */
async function exec(e: Eng, c: CCmd, i: number, reopen: (o: COpts) => Promise<void>): Promise<{ lines: Line[]; ifRev?: number }> {
  switch (c.t) {
    case 'put': case 'del': {
      let ifRevision: number | undefined;
      if (c.cas !== 'none') {
        let cur = 0;
        try { cur = e.stat(c.ns, keyOf(c.key))?.revision ?? 0; } catch { /* no namespace */ }
        ifRevision = c.cas === 'zero' ? 0 : c.cas === 'current' ? cur : cur + 7;
      }
      const opts = ifRevision === undefined ? undefined : { ifRevision };
      const r = await attempt(() => (c.t === 'put' ? e.put(c.ns, keyOf(c.key), valueOf(c.size, c.fill), opts) : e.delete(c.ns, keyOf(c.key), opts)));
      return { lines: [lineOf(i, 0, r)], ifRev: ifRevision };
    }
    case 'batch':
      return { lines: [lineOf(i, 0, await attempt(() => e.batch(c.ns, c.ops.map((o) => (o.t === 'put'
        ? { type: 'put' as const, key: keyOf(o.key), value: valueOf(o.size, o.fill) } : { type: 'delete' as const, key: keyOf(o.key) })))))] };
    case 'burst': case 'closeDuring': {
      const ps = c.ops.map((o, j) => attempt(() => subOp(e, c.ns, o)).then((r) => lineOf(i, j, r)));
      if (c.t === 'closeDuring') {
        await new Promise((r) => setImmediate(r));
        await e.close(); // never rejects
      }
      const lines = await Promise.all(ps);
      return { lines };
    }
    case 'create': return { lines: [lineOf(i, 0, await attempt(() => e.createNamespace(c.ns)))] };
    case 'drop': return { lines: [lineOf(i, 0, await attempt(() => e.dropNamespace(c.ns, { force: c.force })))] };
    case 'reclaim': return { lines: [lineOf(i, 0, await attempt(() => e.reclaim().then(() => undefined)))] };
    case 'sync': return { lines: [lineOf(i, 0, await attempt(() => e.sync()))] };
    case 'gc': return { lines: [lineOf(i, 0, await attempt(() => e.gc().then(() => undefined)))] };
    case 'reopen': await reopen(c.opts); return { lines: [{ a: i, j: 0, ok: 1, rev: null }] };
  }
}

const IO_CODES = new Set(['E_IO', 'E_POISONED', 'E_CORRUPT']);

export async function runFaultModel(opts: COpts, steps: Step[], dir: string, log: (s: string) => void = () => {}): Promise<void> {
  const fio = new FaultIo();
  const m: M = { ns: new Map(), maxRev: 0, ceil: 0, autoReclaim: opts.reclaimMinBytes < (1 << 30), minThreshold: 64 };
  let cur = opts;
  let e: Eng = await open(dir, engOpts(opts, fio.io));
  const reopenClean = async (o: COpts, inf: InFlight | null, what: string) => {
    fio.arm(null);
    await e.close();
    e = await open(dir, engOpts(o, fio.io));
    cur = o;
    if (o.reclaimMinBytes < (1 << 30)) m.autoReclaim = true;
    if (o.valueThreshold > 0) m.minThreshold = Math.min(m.minThreshold, o.valueThreshold);
    await reconcile(m, e, inf, what);
  };
  try {
    await e.createNamespace('n1');
    m.ns.set('n1', { keys: new Map(), history: [], startRev: 1 });
    for (let i = 0; i < steps.length; i++) {
      const { cmd: c, fault } = steps[i];
      const what = `step ${i} ${c.t === 'openFault' ? `open with fault` : cmdStr(c)} fault ${JSON.stringify(fault)}`;
      if (c.t === 'openFault') {
        await e.close();
        fio.arm(fault);
        const r = await attempt(() => open(dir, engOpts(c.opts, fio.io)));
        fio.arm(null);
        log(`${what} -> ${r.ok ? 'opened' : r.err.message}`);
        if (r.ok) {
          e = r.v as Eng;
          // a fault the open survived (a swallowed one) may still have poisoned it
          await reopenClean(c.opts, null, what);
        } else {
          if (!IO_CODES.has(r.err.code)) fail(`${what}: open failed with ${r.err.message}`);
          e = await open(dir, engOpts(c.opts, fio.io)).catch((err) => fail(`${what}: a clean open after the failed one: ${err?.stack ?? err}`));
          cur = c.opts;
          await reconcile(m, e, null, `${what}: clean open after a failed one`);
        }
        continue;
      }
      const startMax = m.maxRev;
      fio.arm(fault);
      let res: { lines: Line[]; ifRev?: number };
      try {
        res = await exec(e, c, i, async (o) => {
          await e.close();
          e = await open(dir, engOpts(o, fio.io)).catch(async (err) => {
            if (!(err instanceof KvError) || !IO_CODES.has(err.code)) fail(`${what}: reopen: ${err?.stack ?? err}`);
            fio.arm(null);
            return open(dir, engOpts(o, fio.io));
          });
          cur = o;
        });
      } finally {
        fio.arm(null);
      }
      if (c.t === 'closeDuring') {
        // the engine was closed: open it again (clean) and decide the ops that failed
        const failed = res.lines.filter((l) => l.ok === 0).map((l) => l.j!);
        for (const l of res.lines) if (l.ok === 1 || l.code === 'E_CLOSED') applyAck(m, c, l, undefined, startMax, what);
        const undecided = res.lines.filter((l) => l.ok === 0 && l.code !== 'E_CLOSED').map((l) => l.j!);
        e = await open(dir, engOpts(cur, fio.io));
        await reconcile(m, e, undecided.length > 0 ? { c, i, subs: undecided, startMax } : null, what);
        log(`${what} -> ${res.lines.map((l) => (l.ok ? `ok ${l.rev}` : l.code)).join(', ')} (failed ${failed})`);
        continue;
      }
      log(`${what} -> ${res.lines.map((l) => (l.ok ? `ok ${l.rev}` : l.code)).join(', ')}${fio.fired ? ' (fired)' : ''}`);
      const undecided: number[] = [];
      for (const l of res.lines) {
        if (l.ok === 0 && IO_CODES.has(l.code!)) {
          undecided.push(l.j!);
          continue;
        }
        applyAck(m, c, l, res.ifRev, startMax, what);
      }
      // a failed reclaim or drop may have compacted history (the namespace stays)
      if ((c.t === 'reclaim' || c.t === 'drop') && res.lines.some((l) => l.ok === 0)) m.ceil = Math.max(m.ceil, m.maxRev);
      if (c.t === 'reopen' && undecided.length > 0) continue;
      if (undecided.length === 0 && e.poisoned === null) continue;
      if (e.poisoned === null) {
        // failed, not poisoned: nothing changed
        await reconcile(m, e, null, `${what} (failed with ${res.lines.map((l) => l.msg).join(' / ')}, not poisoned)`);
        // ... and the engine stays usable: a write goes through now the fault is gone
        const n1 = m.ns.get('n1');
        if (n1 !== undefined) {
          const v = Buffer.from(`probe${i}`);
          const r = await attempt(() => e.put('n1', SENTINEL, v));
          if (!r.ok) fail(`${what}: not poisoned, but a write after the failure: ${r.err.message}`);
          const rev = r.v as number;
          if (rev <= m.maxRev) fail(`${what}: probe put got revision ${rev}, not above ${m.maxRev}`);
          m.maxRev = rev;
          n1.keys.set(SENTINEL.toString('hex'), { value: v, rev });
          n1.history.push({ type: 'put', key: SENTINEL, rev, value: v });
        }
        continue;
      }
      // poisoned: writes fail E_POISONED, reads work; a clean reopen decides the failed command
      const w = await attempt(() => e.put('n1', keyOf(0), Buffer.from('x')));
      if (w.ok || w.err.code !== 'E_POISONED') fail(`${what}: a write to a poisoned engine: ${w.ok ? 'succeeded' : w.err.message}`);
      const inf: InFlight | null = undecided.length > 0 ? { c, i, subs: undecided, startMax } : null;
      await reopenClean(cur, inf, `${what} (poisoned: ${e.poisoned.message})`);
    }
    // the end: a clean reopen, the whole state and the replay of every namespace
    await reopenClean(cur, null, 'final reopen');
    let pick = 0.3;
    for (const [ns, nsm] of m.ns) {
      await checkReplay(m, e, ns, nsm, pick, 'final replay');
      pick = (pick * 7) % 1;
    }
  } finally {
    await e.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
