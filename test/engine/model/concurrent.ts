/**
 * The concurrent variant of the model test: waves of namespace creates, drops and writes
 * fired together (Promise.all, each after its own small delay), with reclaims and reads among
 * them, then invariants:
 * - every error is a KvError, none an I/O error, poisoning or corruption;
 * - every acknowledged write is readable (the highest revision per key wins), unless its
 *   namespace was dropped in the same wave; keys of a namespace dropped and created again in
 *   one wave are each one of that wave's acknowledged writes, and readable;
 * - a close + reopen keeps exactly what was there.
 */
import fs from 'node:fs';
import fc from 'fast-check';
import { open, KvError, type Engine, type EngineOptions, type KvEngine } from '../../../src/index.js';
import { KEYS, VALUE_THRESHOLD } from './model.js';

export type WaveOp =
  | { op: 'create'; ns: string }
  /** create, retried at each turn of the event loop while the name exists (up to 300 times): lands right after a drop */
  | { op: 'createRetry'; ns: string }
  | { op: 'drop'; ns: string }
  | { op: 'reclaim'; ns: string }
  | { op: 'get'; ns: string; key: Buffer }
  | { op: 'put'; ns: string; key: Buffer; value: Buffer }
  | { op: 'batch'; ns: string; items: Array<{ key: Buffer; value: Buffer }> };

/** Each op starts after its delay: 0 = at once, k > 0 = after k - 1 ms (setTimeout), so some land mid-drop. */
export interface Wave { ops: WaveOp[]; delays: number[]; reopen: boolean }

const NS = ['c1', 'c2'];
const nsArb = fc.constantFrom(...NS);
const keyArb = fc.constantFrom(...KEYS.slice(0, 6), KEYS[9]);
const valueArb = fc.tuple(fc.constantFrom(1, 9, VALUE_THRESHOLD + 10), fc.integer({ min: 0, max: 255 }))
  .map(([n, f]) => Buffer.alloc(n, f));

export const waveArb: fc.Arbitrary<Wave> = fc.record({
  ops: fc.array(fc.oneof(
    nsArb.map((ns) => ({ op: 'create' as const, ns })),
    nsArb.map((ns) => ({ op: 'createRetry' as const, ns })),
    nsArb.map((ns) => ({ op: 'drop' as const, ns })),
    nsArb.map((ns) => ({ op: 'reclaim' as const, ns })),
    fc.record({ op: fc.constant('get' as const), ns: nsArb, key: keyArb }),
    fc.record({ op: fc.constant('put' as const), ns: nsArb, key: keyArb, value: valueArb }),
    fc.record({ op: fc.constant('put' as const), ns: nsArb, key: keyArb, value: valueArb }),
    fc.record({ op: fc.constant('batch' as const), ns: nsArb,
      items: fc.array(fc.record({ key: keyArb, value: valueArb }), { minLength: 1, maxLength: 3 }) }),
  ), { minLength: 2, maxLength: 10 }),
  delays: fc.array(fc.constantFrom(0, 0, 1, 1, 2, 3, 4, 6), { minLength: 10, maxLength: 10 }),
  reopen: fc.boolean(),
});

const short = (b: Buffer) => (b.length > 12 ? `${b.subarray(0, 4).toString('hex')}..(${b.length})` : b.toString('hex'));
export const describeWave = (w: Wave) => w.ops.map((o, i) => (o.op === 'put' ? `put ${o.ns} ${short(o.key)}=${short(o.value)}`
  : o.op === 'batch' ? `batch ${o.ns} [${o.items.map((x) => `${short(x.key)}=${short(x.value)}`).join(' ')}]` : `${o.op} ${o.ns}`) +
  (w.delays[i] > 0 ? ` @${w.delays[i] - 1}ms` : '')).join(' | ');

type State = Map<string, Map<string, { value: Buffer; rev: number }>>;

async function snapshot(e: Engine): Promise<State> {
  const s: State = new Map();
  for (const ns of e.listNamespaces()) {
    const m = new Map<string, { value: Buffer; rev: number }>();
    for (const it of e.list(ns)) {
      const g = await e.get(ns, it.key);
      if (g === undefined) throw new Error(`${ns}: listed key ${short(it.key)} has no value`);
      m.set(it.key.toString('hex'), { value: Buffer.from(g.value), rev: g.revision });
    }
    s.set(ns, m);
  }
  return s;
}

function stateText(s: State): string {
  return [...s].sort(([a], [b]) => (a < b ? -1 : 1)).map(([ns, m]) => `${ns}: ${[...m].sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${short(Buffer.from(k, 'hex'))}=${short(v.value)}@${v.rev}`).join(' ')}`).join('\n');
}

const BAD_CODES = new Set(['E_IO', 'E_POISONED', 'E_CORRUPT', 'E_CLOSED', 'E_INVALID_ARGUMENT', 'E_INVALID_KEY', 'E_INVALID_NAME']);

export async function runConcurrent(sync: 'none' | 'batch' | 'always', waves: Wave[], dir: string): Promise<void> {
  const opts: EngineOptions = { sync, valueThreshold: VALUE_THRESHOLD, segmentMaxBytes: 4096, onWarning: () => {} };
  let e: Engine & KvEngine = await open(dir, opts);
  try {
    let before: State = new Map();
    for (let wi = 0; wi < waves.length; wi++) {
      const wave = waves[wi];
      const where = `wave ${wi} (${describeWave(wave)})`;
      const results = await Promise.allSettled(wave.ops.map(async (o, i) => {
        const d = wave.delays[i];
        if (d > 0) await new Promise((r) => setTimeout(r, d - 1));
        switch (o.op) {
          case 'create': return e.createNamespace(o.ns);
          case 'createRetry':
            for (let n = 0; ; n++) {
              try {
                return await e.createNamespace(o.ns);
              } catch (err) {
                if (!(err instanceof KvError) || err.code !== 'E_NAMESPACE_EXISTS' || n >= 300) throw err;
                await new Promise((r) => setImmediate(r));
              }
            }
          case 'drop': return e.dropNamespace(o.ns, { force: true });
          case 'reclaim': return e.reclaim();
          case 'get': return e.get(o.ns, o.key);
          case 'put': return e.put(o.ns, o.key, o.value);
          case 'batch': return e.batch(o.ns, o.items.map((i) => ({ type: 'put' as const, key: i.key, value: i.value })));
        }
      }));
      const dropped = new Set<string>();
      results.forEach((r, i) => {
        const o = wave.ops[i];
        if (r.status === 'rejected') {
          const err = r.reason;
          if (!(err instanceof KvError)) throw new Error(`${where}: ${o.op} ${o.ns} threw a non-KvError: ${(err as Error)?.stack ?? err}`);
          if (BAD_CODES.has(err.code)) throw new Error(`${where}: ${o.op} ${o.ns} failed: ${err.message}`);
        } else if (o.op === 'drop') {
          dropped.add(o.ns);
        }
      });
      if (e.stats().poisoned !== 0) throw new Error(`${where}: the engine is poisoned: ${e.poisoned?.message}`);
      // acknowledged writes, per namespace and key: the highest revision wins
      const acked = new Map<string, Map<string, Array<{ value: Buffer; rev: number }>>>();
      results.forEach((r, i) => {
        const o = wave.ops[i];
        if (r.status !== 'fulfilled' || (o.op !== 'put' && o.op !== 'batch')) return;
        const rev = r.value as number;
        let m = acked.get(o.ns);
        if (m === undefined) acked.set(o.ns, (m = new Map()));
        for (const it of o.op === 'put' ? [{ key: o.key, value: o.value }] : o.items) {
          const k = it.key.toString('hex');
          let a = m.get(k);
          if (a === undefined) m.set(k, (a = []));
          a.push({ value: it.value, rev }); // within a batch, a later item of one key wins: pushed later
        }
      });
      let after: State;
      try {
        after = await snapshot(e);
      } catch (err) {
        throw new Error(`${where}: reading back failed: ${(err as Error)?.message ?? err}`);
      }
      for (const ns of NS) {
        const got = after.get(ns);
        const ack = acked.get(ns) ?? new Map<string, Array<{ value: Buffer; rev: number }>>();
        if (!dropped.has(ns)) {
          // nothing of it was dropped: the state before + this wave's acknowledged writes
          const want = new Map(before.get(ns) ?? []);
          for (const [k, a] of ack) {
            let best = a[0];
            for (const x of a) if (x.rev >= best.rev) best = x;
            const cur = want.get(k);
            if (cur === undefined || best.rev > cur.rev) want.set(k, best);
          }
          if (got === undefined) {
            if (want.size > 0 || before.has(ns)) throw new Error(`${where}: namespace ${ns} is gone though no drop of it succeeded`);
            continue;
          }
          const w = stateText(new Map([[ns, want]]));
          const g = stateText(new Map([[ns, got]]));
          if (w !== g) throw new Error(`${where}: ${ns} after the wave:\n  got  ${g}\n  want ${w}\n  before ${stateText(before)}`);
        } else if (got !== undefined) {
          // dropped (and created again) in this wave: what is there was written in this wave
          for (const [k, v] of got) {
            const a = ack.get(k) ?? [];
            if (!a.some((x) => x.rev === v.rev && x.value.equals(v.value))) {
              throw new Error(`${where}: ${ns} key ${short(Buffer.from(k, 'hex'))}=${short(v.value)}@${v.rev} after a drop is no acknowledged write of the wave`);
            }
          }
        }
      }
      if (wave.reopen) {
        await e.close();
        e = await open(dir, opts);
        const again = await snapshot(e);
        if (stateText(again) !== stateText(after)) {
          throw new Error(`${where}: reopen changed the state:\n  before close ${stateText(after)}\n  after open   ${stateText(again)}`);
        }
      }
      before = after;
    }
  } finally {
    await e.close().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
