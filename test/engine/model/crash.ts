/**
 * The crash model: rounds of commands run by a real child process (crash-child.ts) on a real
 * data directory, each round ended by SIGKILL at a chosen point (right after the k-th ack, or
 * at the n-th mutating FileIo call: before it, after it, or in the middle of a write), or by a
 * clean close. After each round the parent opens the directory itself and checks it against the
 * model built from the acknowledgements the child printed:
 * - every acknowledged put / delete / batch / CAS / create / drop is there, exactly;
 * - the one command in flight at the kill is applied wholly or not at all (a batch all or
 *   nothing; each op of a concurrent burst on its own), and a put applied has a revision above
 *   every acknowledged one;
 * - revisions continue: a put after the reopen gets a revision above everything seen;
 * - watch from an old revision replays exactly the model's history (E_COMPACTED only with
 *   compactRevision > fromRevision, where a reclaim, a drop or a collected separated value
 *   explains it: the watch resumes from compactRevision and the rest must match);
 * - no dangling pointer; list with after/limit equals the model.
 * Rounds reopen with other options (sync mode, valueThreshold 0/64/4096/131072, segment size).
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { open, KvError, type Engine, type KvEngine, type WatchEvent } from '../../../src/index.js';
import { CKEYS, keyOf, SENTINEL, valueOf, type CCmd, type ChildSpec, type COpts, type CSubOp, type Kill } from './crash-spec.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHILD = path.join(here, 'crash-child.ts');

// ------------------------------------------------------------------ generation

const NS = ['n1', 'n1', 'n1', 'n1', 'n2', 'ü3'];
const nsArb = fc.constantFrom(...NS);
const keyArb = fc.integer({ min: 0, max: CKEYS.length - 1 });
const sizeArb = fc.constantFrom(0, 1, 63, 64, 65, 300, 4095, 4096, 4097, 200_000);
const fillArb = fc.integer({ min: 0, max: 255 });
const casArb = fc.constantFrom('none', 'none', 'none', 'zero', 'current', 'wrong') as fc.Arbitrary<'none' | 'zero' | 'current' | 'wrong'>;
const subArb: fc.Arbitrary<CSubOp> = fc.oneof(
  { arbitrary: fc.record({ t: fc.constant('put' as const), key: keyArb, size: sizeArb, fill: fillArb }), weight: 3 },
  { arbitrary: fc.record({ t: fc.constant('del' as const), key: keyArb }), weight: 1 },
);
const distinctSubs = fc.uniqueArray(subArb, { minLength: 1, maxLength: 5, selector: (o) => o.key });

export const optsArb: fc.Arbitrary<COpts> = fc.record({
  sync: fc.constantFrom('none', 'batch', 'always') as fc.Arbitrary<COpts['sync']>,
  valueThreshold: fc.constantFrom(0, 64, 4096, 131072),
  segmentMaxBytes: fc.constantFrom(256, 4096, 1 << 20),
  reclaimMinBytes: fc.constantFrom(512, 1 << 30),
  reclaimDeadRatio: fc.constantFrom(0.3, 0.5),
});

export const cmdArb: fc.Arbitrary<CCmd> = fc.oneof(
  { arbitrary: fc.record({ t: fc.constant('put' as const), ns: nsArb, key: keyArb, size: sizeArb, fill: fillArb, cas: casArb }), weight: 8 },
  { arbitrary: fc.record({ t: fc.constant('del' as const), ns: nsArb, key: keyArb, cas: casArb }), weight: 3 },
  { arbitrary: fc.record({ t: fc.constant('batch' as const), ns: nsArb, ops: fc.array(subArb, { minLength: 1, maxLength: 4 }) }), weight: 3 },
  { arbitrary: fc.record({ t: fc.constant('burst' as const), ns: nsArb, ops: distinctSubs }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('closeDuring' as const), ns: nsArb, ops: distinctSubs }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant('create' as const), ns: nsArb }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant('drop' as const), ns: nsArb, force: fc.boolean() }), weight: 1 },
  { arbitrary: fc.constant({ t: 'reclaim' as const }), weight: 2 },
  { arbitrary: fc.constant({ t: 'sync' as const }), weight: 1 },
  { arbitrary: fc.constant({ t: 'gc' as const }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant('reopen' as const), opts: optsArb }), weight: 1 },
);

const killArb: fc.Arbitrary<Kill> = fc.oneof(
  { arbitrary: fc.record({ mode: fc.constant('ack' as const), k: fc.integer({ min: 1, max: 12 }), delayMs: fc.constantFrom(0, 0, 1, 5) }), weight: 2 },
  { arbitrary: fc.record({ mode: fc.constant('io' as const),
    n: fc.oneof({ arbitrary: fc.integer({ min: 1, max: 40 }), weight: 3 }, { arbitrary: fc.integer({ min: 1, max: 200 }), weight: 1 }),
    how: fc.constantFrom('before', 'after', 'torn') as fc.Arbitrary<'before' | 'after' | 'torn'>, frac: fc.constantFrom(0.1, 0.5, 0.9) }), weight: 3 },
  { arbitrary: fc.constant({ mode: 'none' as const }), weight: 1 },
);

export interface Round { opts: COpts; cmds: CCmd[]; kill: Kill; pick: number }
export const roundsArb: fc.Arbitrary<Round[]> = fc.array(
  fc.record({ opts: optsArb, cmds: fc.array(cmdArb, { minLength: 1, maxLength: 24 }), kill: killArb, pick: fc.double({ min: 0, max: 1, noNaN: true }) }),
  { minLength: 1, maxLength: 4 },
);

// ------------------------------------------------------------------ model

interface Ev { type: 'put' | 'delete'; key: Buffer; rev: number; value?: Buffer; /** in flight at a kill: revision not known yet */ minRev?: number }
interface NsM { keys: Map<string, { value: Buffer; rev: number }>; history: Ev[]; startRev: number }
interface M {
  ns: Map<string, NsM>;
  /** Highest revision acknowledged or seen. */
  maxRev: number;
  /** A replay from at or below this may be E_COMPACTED (reclaim, drop). */
  ceil: number;
  autoReclaim: boolean;
  /** Smallest valueThreshold > 0 used so far (which values may be in the blob store). */
  minThreshold: number;
}

class Fail extends Error {}
function fail(msg: string): never {
  throw new Fail(msg);
}
const hex = (b: Buffer) => b.toString('hex');
const short = (b: Buffer | undefined) => (b === undefined ? '-' : b.length > 10 ? `${b.subarray(0, 4).toString('hex')}..(${b.length})` : hex(b));
const brief = (e: { type: string; key: Buffer; rev?: number; revision?: number; value?: Buffer }) =>
  `${e.type} ${short(e.key)} @${e.rev ?? e.revision} ${short(e.value)}`;

function subValue(o: CSubOp): Buffer | undefined {
  return o.t === 'put' ? valueOf(o.size, o.fill) : undefined;
}

// ------------------------------------------------------------------ running a child

interface Line { s?: number; a?: number; j?: number; ok?: 0 | 1; rev?: number | null; code?: string; msg?: string; raw?: string;
  cas?: number; ifRevision?: number; cur?: number; done?: 1; closed?: 1; opened?: 1; reopened?: number }

function runChild(spec: ChildSpec, specPath: string): Promise<{ lines: Line[]; signal: string | null; code: number | null; stderr: string }> {
  fs.writeFileSync(specPath, JSON.stringify(spec));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, specPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const lines = out.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as Line);
      resolve({ lines, signal, code, stderr: err });
    });
  });
}

// ------------------------------------------------------------------ applying acknowledgements

function applyAck(m: M, c: CCmd, l: Line, ifRev: number | undefined, startMax: number, what: string): void {
  const nsm = 'ns' in c ? m.ns.get(c.ns) : undefined;
  const expectErr = (code: string) => {
    if (l.ok === 1 || l.code !== code) fail(`${what}: expected ${code}, got ${l.ok === 1 ? 'success' : l.msg}`);
  };
  const okRev = (): number => {
    if (l.ok !== 1) fail(`${what}: expected success, got ${l.msg}`);
    if (typeof l.rev !== 'number' || l.rev <= startMax) fail(`${what}: revision ${l.rev} is not above ${startMax}`);
    m.maxRev = Math.max(m.maxRev, l.rev);
    return l.rev;
  };
  const write = (n: NsM, ev: Ev) => {
    n.history.push(ev);
    n.history.sort((a, b) => a.rev - b.rev);
    if (ev.type === 'put') n.keys.set(hex(ev.key), { value: ev.value!, rev: ev.rev });
    else n.keys.delete(hex(ev.key));
  };
  switch (c.t) {
    case 'put': case 'del': {
      if (nsm === undefined) return expectErr('E_NO_NAMESPACE');
      const cur = nsm.keys.get(hex(keyOf(c.key)))?.rev ?? 0;
      if (ifRev !== undefined && ifRev !== cur) return expectErr('E_CAS_MISMATCH');
      if (c.t === 'del' && cur === 0) {
        if (l.ok !== 1 || l.rev !== null) fail(`${what}: delete of an absent key: expected undefined, got ${JSON.stringify(l)}`);
        return;
      }
      const rev = okRev();
      write(nsm, c.t === 'put' ? { type: 'put', key: keyOf(c.key), rev, value: valueOf(c.size, c.fill) } : { type: 'delete', key: keyOf(c.key), rev });
      return;
    }
    case 'batch': {
      if (nsm === undefined) return expectErr('E_NO_NAMESPACE');
      const rev = okRev();
      for (const o of c.ops) write(nsm, { type: o.t === 'put' ? 'put' : 'delete', key: keyOf(o.key), rev, value: subValue(o) });
      return;
    }
    case 'burst': case 'closeDuring': {
      const o = c.ops[l.j!];
      if (c.t === 'closeDuring' && l.ok === 0 && l.code === 'E_CLOSED') return;
      if (nsm === undefined) return expectErr('E_NO_NAMESPACE');
      if (o.t === 'del' && !nsm.keys.has(hex(keyOf(o.key)))) {
        if (l.ok !== 1 || l.rev !== null) fail(`${what}: delete of an absent key: expected undefined, got ${JSON.stringify(l)}`);
        return;
      }
      const rev = okRev();
      write(nsm, { type: o.t === 'put' ? 'put' : 'delete', key: keyOf(o.key), rev, value: subValue(o) });
      return;
    }
    case 'create':
      if (m.ns.has(c.ns)) return expectErr('E_NAMESPACE_EXISTS');
      if (l.ok !== 1) fail(`${what}: expected success, got ${l.msg}`);
      m.ns.set(c.ns, { keys: new Map(), history: [], startRev: m.maxRev + 1 });
      return;
    case 'drop':
      if (nsm === undefined) return expectErr('E_NO_NAMESPACE');
      if (!c.force && nsm.keys.size > 0) return expectErr('E_NAMESPACE_NOT_EMPTY');
      if (l.ok !== 1) fail(`${what}: expected success, got ${l.msg}`);
      m.ns.delete(c.ns);
      return;
    case 'reclaim':
      if (l.ok !== 1) fail(`${what}: expected success, got ${l.msg}`);
      m.ceil = Math.max(m.ceil, m.maxRev);
      return;
    default:
      if (l.ok !== 1) fail(`${what}: expected success, got ${l.msg}`);
  }
}

/** What the command in flight at the kill may have changed: per namespace and key, old or new. */
interface InFlight { c: CCmd; i: number; subs: number[]; startMax: number }

function cmdStr(c: CCmd): string {
  const ops = (os: CSubOp[]) => os.map((o) => `${o.t} ${short(keyOf(o.key))}${o.t === 'put' ? `=${o.size}/${o.fill}` : ''}`).join(', ');
  switch (c.t) {
    case 'put': return `put(${c.ns}, ${short(keyOf(c.key))}, ${c.size}/${c.fill}, cas ${c.cas})`;
    case 'del': return `del(${c.ns}, ${short(keyOf(c.key))}, cas ${c.cas})`;
    case 'batch': case 'burst': case 'closeDuring': return `${c.t}(${c.ns}, [${ops(c.ops)}])`;
    case 'create': return `create(${c.ns})`;
    case 'drop': return `drop(${c.ns}, force ${c.force})`;
    case 'reopen': return `reopen(${JSON.stringify(c.opts)})`;
    default: return c.t;
  }
}

// ------------------------------------------------------------------ checking a reopened directory

type Eng = Engine & KvEngine;

async function getAll(e: Eng, ns: string): Promise<Map<string, { value: Buffer; rev: number }>> {
  const r = new Map<string, { value: Buffer; rev: number }>();
  for (const { key } of e.list(ns)) {
    const g = await e.get(ns, key);
    if (g === undefined) fail(`${ns}: listed key ${short(key)} has no value`);
    r.set(hex(key), { value: g.value, rev: g.revision });
  }
  return r;
}

/** Reconciles the model with the reopened directory, deciding the in-flight command. */
async function reconcile(m: M, e: Eng, inf: InFlight | null, what: string): Promise<void> {
  const names = e.listNamespaces();
  const c = inf?.c;
  // namespaces
  const want = new Set(m.ns.keys());
  if (c?.t === 'create' && !want.has(c.ns) && names.includes(c.ns)) {
    m.ns.set(c.ns, { keys: new Map(), history: [], startRev: inf!.startMax + 1 });
    want.add(c.ns);
  }
  if (c?.t === 'drop' && want.has(c.ns) && !names.includes(c.ns) && (c.force || m.ns.get(c.ns)!.keys.size === 0)) {
    m.ns.delete(c.ns);
    want.delete(c.ns);
    m.ceil = Math.max(m.ceil, inf!.startMax);
  }
  if (JSON.stringify(names) !== JSON.stringify([...want].sort())) fail(`${what}: namespaces ${JSON.stringify(names)}, model ${JSON.stringify([...want].sort())}`);
  if (c?.t === 'reclaim' || c?.t === 'drop') m.ceil = Math.max(m.ceil, inf!.startMax);

  for (const [ns, nsm] of m.ns) {
    const got = await getAll(e, ns);
    // the in-flight writes to this namespace: candidate changes
    const subs: CSubOp[][] = []; // groups that are all-or-nothing
    if (c !== undefined && 'ns' in c && c.ns === ns) {
      if (c.t === 'put' || c.t === 'del') {
        subs.push([c.t === 'put' ? { t: 'put', key: c.key, size: c.size, fill: c.fill } : { t: 'del', key: c.key }]);
      } else if (c.t === 'batch') subs.push(c.ops);
      else if (c.t === 'burst' || c.t === 'closeDuring') for (const j of inf!.subs) subs.push([c.ops[j]]);
    }
    const touched = new Set<string>();
    for (const g of subs) for (const o of g) touched.add(hex(keyOf(o.key)));
    for (const k of new Set([...got.keys(), ...nsm.keys.keys()])) {
      if (touched.has(k)) continue;
      const a = got.get(k);
      const b = nsm.keys.get(k);
      if (a === undefined || b === undefined || a.rev !== b.rev || !a.value.equals(b.value)) {
        fail(`${what}: ${ns}/${short(Buffer.from(k, 'hex'))}: got ${a ? `${short(a.value)} @${a.rev}` : 'absent'}, ` +
          `model ${b ? `${short(b.value)} @${b.rev}` : 'absent'}`);
      }
    }
    for (const g of subs) {
      // the state after the group, per key (a batch may write a key twice: the last wins)
      const after = new Map<string, Buffer | undefined>();
      for (const o of g) after.set(hex(keyOf(o.key)), subValue(o));
      let isOld = true;
      let isNew = true;
      let newRev: number | undefined;
      for (const [k, v] of after) {
        const a = got.get(k);
        const b = nsm.keys.get(k);
        const sameOld = a === undefined ? b === undefined : b !== undefined && a.rev === b.rev && a.value.equals(b.value);
        const sameNew = v === undefined ? a === undefined : a !== undefined && a.value.equals(v) && a.rev > inf!.startMax;
        if (!sameOld) isOld = false;
        if (!sameNew) isNew = false;
        if (sameNew && a !== undefined) {
          if (newRev !== undefined && c!.t === 'batch' && newRev !== a.rev) isNew = false; // one revision per batch
          newRev = a.rev;
        }
      }
      if (!isOld && !isNew) {
        fail(`${what}: ${ns}: in-flight ${cmdStr(c!)} is half-applied: ${[...after.keys()].map((k) => {
          const a = got.get(k);
          return `${short(Buffer.from(k, 'hex'))}=${a ? `${short(a.value)} @${a.rev}` : 'absent'}`;
        }).join(', ')}`);
      }
      if (isNew && !isOld) {
        // applied: into the model (a delete's revision is learned from the replay)
        const rev = newRev;
        for (const o of g) {
          const ev: Ev = { type: o.t === 'put' ? 'put' : 'delete', key: keyOf(o.key), rev: rev ?? NaN, value: subValue(o), minRev: inf!.startMax + 1 };
          if (rev !== undefined) delete ev.minRev;
          nsm.history.push(ev);
        }
        for (const [k, v] of after) {
          if (v === undefined) nsm.keys.delete(k);
          else nsm.keys.set(k, { value: v, rev: got.get(k)!.rev });
        }
        if (rev !== undefined) m.maxRev = Math.max(m.maxRev, rev);
      } else if (isNew && isOld && g.length > 0 && g.some((o) => o.t === 'del') && c!.t === 'batch') {
        // a batch that changes no key's state (deletes of absent keys): its events may or may not be in the log
        for (const o of g) nsm.history.push({ type: o.t === 'put' ? 'put' : 'delete', key: keyOf(o.key), rev: NaN, value: subValue(o), minRev: inf!.startMax + 1, optional: true } as Ev);
      }
    }
    nsm.history = sortHistory(nsm.history);
  }
}

function sortHistory(h: Ev[]): Ev[] {
  const known = h.filter((e) => !Number.isNaN(e.rev)).sort((a, b) => a.rev - b.rev);
  const unknown = h.filter((e) => Number.isNaN(e.rev));
  return [...known, ...unknown];
}

function evMatches(a: WatchEvent, b: Ev): boolean {
  if (a.type !== b.type || !a.key.equals(b.key)) return false;
  if ((a.value === undefined) !== (b.value === undefined)) return false;
  return a.value === undefined || a.value.equals(b.value!);
}

/** Is a value held by a live key anywhere (its blob cannot have been collected)? */
function valueLive(m: M, v: Buffer): boolean {
  for (const n of m.ns.values()) for (const x of n.keys.values()) if (x.value.equals(v)) return true;
  return false;
}

/** Subscribes from `from`, writes the sentinel, collects events up to it. */
async function collect(e: Eng, ns: string, from: number): Promise<{ events: WatchEvent[]; err: KvError | null; sentinelRev: number; tag: string }> {
  let sub: AsyncIterable<WatchEvent> & { close(): void };
  try {
    sub = e.watch(ns, { prefix: Buffer.alloc(0) }, { fromRevision: from });
  } catch (err) {
    if (err instanceof KvError) return { events: [], err, sentinelRev: -1, tag: '' };
    throw err;
  }
  const events: WatchEvent[] = [];
  let err: KvError | null = null;
  let sentinelRev = -1;
  const it = sub[Symbol.asyncIterator]();
  const tag = `s${from}-${++sentinels}`;
  const put = e.put(ns, SENTINEL, Buffer.from(tag)).then((r) => (sentinelRev = r));
  try {
    for (;;) {
      const r = await Promise.race([it.next(), new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), 20_000))]);
      if (r === 'timeout') fail(`watch ${ns} from ${from}: no sentinel event within 20 s; got ${events.map(brief).join('; ')}`);
      if (r.done) break;
      const ev = r.value;
      if (ev.key.equals(SENTINEL) && ev.type === 'put' && ev.value?.toString() === tag) break;
      events.push(ev);
    }
  } catch (x) {
    if (!(x instanceof KvError)) fail(`watch ${ns} from ${from}: non-KvError ${(x as Error)?.stack}`);
    err = x;
  } finally {
    sub.close();
  }
  await put;
  return { events, err, sentinelRev, tag };
}
let sentinels = 0;

/** Watch from an old revision replays exactly the history (resuming after an explained E_COMPACTED). */
async function checkReplay(m: M, e: Eng, ns: string, nsm: NsM, pick: number, what: string): Promise<void> {
  const pending = nsm.history.filter((x) => Number.isNaN(x.rev));
  const lo = nsm.startRev;
  const hi = Math.max(lo, m.maxRev + 1);
  let from = Math.max(1, Math.min(hi, lo + Math.floor(pick * (hi - lo + 1))));
  for (const p of pending) from = Math.min(from, p.minRev!); // replay what is not known yet
  from = Math.max(from, 1);
  const want = nsm.history.filter((x) => Number.isNaN(x.rev) || x.rev >= from);
  let wi = 0; // next known expected event
  const unknown = new Set(want.filter((x) => Number.isNaN(x.rev)));
  const known = want.filter((x) => !Number.isNaN(x.rev));
  let lastSentinel = -1;
  for (let round = 0; round < 20; round++) {
    const { events, err, sentinelRev, tag } = await collect(e, ns, from);
    // the sentinel write is a put like any other: into the model
    if (sentinelRev > 0) {
      if (sentinelRev <= m.maxRev) fail(`${what}: sentinel put got revision ${sentinelRev}, not above ${m.maxRev}`);
      m.maxRev = sentinelRev;
      lastSentinel = sentinelRev;
      nsm.keys.set(hex(SENTINEL), { value: Buffer.from(tag), rev: sentinelRev });
      nsm.history.push({ type: 'put', key: SENTINEL, rev: sentinelRev, value: Buffer.from(tag) });
    }
    // a resumed watch replays this sentinel too
    const sentinelEv: Ev | null = sentinelRev > 0 ? { type: 'put', key: SENTINEL, rev: sentinelRev, value: Buffer.from(tag) } : null;
    for (const ev of events) {
      if (ev.revision < from) fail(`${what}: watch from ${from} yielded ${brief(ev)}`);
      const k = known[wi];
      if (k !== undefined && k.rev === ev.revision && evMatches(ev, k)) {
        wi++;
        continue;
      }
      const u = [...unknown].find((x) => evMatches(ev, x) && ev.revision >= x.minRev!);
      if (u !== undefined) {
        u.rev = ev.revision;
        delete u.minRev;
        unknown.delete(u);
        continue;
      }
      fail(`${what}: watch ${ns} from ${from}: got ${brief(ev)}, expected ${k ? brief(k) : 'nothing'} ` +
        `(history from ${from}: ${want.map(brief).join('; ')})`);
    }
    if (sentinelEv !== null) known.push(sentinelEv);
    if (err === null) {
      // the collection ended at this round's sentinel: everything known before it was seen
      if (sentinelEv === null || wi !== known.length - 1) {
        fail(`${what}: watch ${ns} from ${from}: missing events ${known.slice(wi, known.length - 1).map(brief).join('; ')}`);
      }
      wi = known.length;
      break;
    }
    if (err.code !== 'E_COMPACTED') fail(`${what}: watch ${ns} from ${from} ended with ${err.message}`);
    const c = err.compactRevision ?? -1;
    if (c <= from) fail(`${what}: ${err.message} with compactRevision ${c} <= fromRevision ${from}`);
    const ceil = m.autoReclaim ? m.maxRev : m.ceil;
    const next = known[wi];
    const blobGone = next !== undefined && next.rev === c - 1 && next.type === 'put' && m.minThreshold > 0 &&
      next.value!.length >= m.minThreshold && !valueLive(m, next.value!);
    if (!(c - 1 <= ceil) && !blobGone) {
      fail(`${what}: watch ${ns} from ${from}: unexpected ${err.message} (compaction ceiling ${ceil}; next expected ${next ? brief(next) : 'none'})`);
    }
    // history below c is gone: skip it in the model and resume there
    while (wi < known.length && known[wi].rev < c) wi++;
    from = c;
  }
  if (wi < known.length) fail(`${what}: watch ${ns}: missing events ${known.slice(wi).map(brief).join('; ')}`);
  // in-flight events whose revision was not learned: optional ones (no state change) go, others fail
  for (const u of unknown) {
    if ((u as Ev & { optional?: boolean }).optional !== true && (m.ceil < u.minRev! && !m.autoReclaim)) {
      fail(`${what}: watch ${ns}: the applied in-flight ${brief(u)} is not in the replay`);
    }
  }
  nsm.history = sortHistory(nsm.history.filter((x) => !Number.isNaN(x.rev)));
  void lastSentinel;
}

async function checkDir(m: M, dir: string, inf: InFlight | null, pick: number, what: string): Promise<void> {
  let e: Eng;
  try {
    e = await open(dir, { sync: 'batch', valueThreshold: 64, reclaimMinBytes: 1 << 30, onWarning: () => {} });
  } catch (err) {
    fail(`${what}: open failed: ${(err as Error)?.stack ?? err}`);
  }
  try {
    await reconcile(m, e, inf, what);
    const st = e.stats();
    if (st.danglingPointers !== 0) fail(`${what}: ${st.danglingPointers} dangling pointers after reopen`);
    if (st.revision < m.maxRev) fail(`${what}: revision after reopen ${st.revision} < acknowledged ${m.maxRev}`);
    if (st.poisoned !== 0) fail(`${what}: poisoned after reopen`);
    for (const [ns, nsm] of m.ns) {
      await checkReplay(m, e, ns, nsm, pick, what);
      // list with after/limit
      const keys = [...nsm.keys.keys()].map((k) => Buffer.from(k, 'hex')).sort(Buffer.compare);
      const after = keys[Math.floor(pick * keys.length)];
      const limit = 1 + Math.floor(pick * 3);
      const want = keys.filter((k) => after === undefined || Buffer.compare(k, after) > 0).slice(0, limit).map(hex);
      const got = e.list(ns, { ...(after ? { after } : {}), limit }).map((x) => hex(x.key));
      if (JSON.stringify(got) !== JSON.stringify(want)) fail(`${what}: list(${ns}, after ${short(after)}, limit ${limit}): ${got} != ${want}`);
    }
  } finally {
    await e.close();
  }
}

// ------------------------------------------------------------------ one run

export async function runCrashModel(rounds: Round[], dir: string, log: (s: string) => void = () => {}): Promise<void> {
  const m: M = { ns: new Map(), maxRev: 0, ceil: 0, autoReclaim: false, minThreshold: 64 };
  try {
    {
      const e = await open(dir, { valueThreshold: 64, onWarning: () => {} });
      await e.createNamespace('n1');
      await e.close();
      m.ns.set('n1', { keys: new Map(), history: [], startRev: 1 });
    }
    for (let r = 0; r < rounds.length; r++) {
      const round = rounds[r];
      const opts = [round.opts, ...round.cmds.flatMap((c) => (c.t === 'reopen' ? [c.opts] : []))];
      for (const o of opts) {
        if (o.reclaimMinBytes < (1 << 30)) m.autoReclaim = true;
        if (o.valueThreshold > 0) m.minThreshold = Math.min(m.minThreshold, o.valueThreshold);
      }
      const what = `round ${r} (kill ${JSON.stringify(round.kill)})`;
      const res = await runChild({ dir, opts: round.opts, cmds: round.cmds, kill: round.kill }, path.join(dir, '..', `${path.basename(dir)}.spec.json`));
      const started = new Set<number>();
      const acked = new Map<number, Set<number>>();
      const ifRevs = new Map<number, number>();
      const startMax = new Map<number, number>();
      for (const l of res.lines) {
        if (l.raw !== undefined) fail(`${what}: the child got a non-KvError: ${l.raw}`);
        if (l.s !== undefined) {
          started.add(l.s);
          startMax.set(l.s, m.maxRev);
        } else if (l.cas !== undefined) {
          const c = round.cmds[l.cas] as Extract<CCmd, { t: 'put' | 'del' }>;
          const cur = m.ns.get(c.ns)?.keys.get(hex(keyOf(c.key)))?.rev ?? 0;
          if (l.cur !== cur) fail(`${what}: cmd ${l.cas} ${cmdStr(c)}: stat revision ${l.cur}, model ${cur}`);
          ifRevs.set(l.cas, l.ifRevision!);
        } else if (l.a !== undefined) {
          const c = round.cmds[l.a];
          log(`  ${l.a} ${cmdStr(c)} -> ${l.ok ? `ok ${l.rev}` : l.code}`);
          applyAck(m, c, l, ifRevs.get(l.a), startMax.get(l.a)!, `${what}: cmd ${l.a} ${cmdStr(c)}${l.j ? ` op ${l.j}` : ''}`);
          if (!acked.has(l.a)) acked.set(l.a, new Set());
          acked.get(l.a)!.add(l.j ?? 0);
        }
      }
      const done = res.lines.some((l) => l.closed === 1);
      if (res.signal !== 'SIGKILL' && !done) fail(`${what}: child ended ${res.code}/${res.signal} without closing: ${res.stderr.slice(-2000)}`);
      // the command in flight: the last started one, if not wholly acknowledged
      let inf: InFlight | null = null;
      const last = Math.max(-1, ...started);
      if (last >= 0 && !done) {
        const c = round.cmds[last];
        const n = c.t === 'burst' || c.t === 'closeDuring' ? c.ops.length : 1;
        const subs = [...Array(n).keys()].filter((j) => !acked.get(last)?.has(j));
        if (subs.length > 0) inf = { c, i: last, subs, startMax: startMax.get(last)! };
        if (subs.length === 0 && (c.t === 'reclaim' || c.t === 'drop' || c.t === 'create')) inf = null;
      }
      log(`round ${r}: ${res.signal ?? 'closed'}; in flight: ${inf ? cmdStr(inf.c) : 'none'}`);
      await checkDir(m, dir, inf, round.pick, what);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(path.join(dir, '..', `${path.basename(dir)}.spec.json`), { force: true });
  }
}

export { Fail, applyAck, reconcile, checkReplay, cmdStr, fail };
export type { M, InFlight, Line, Eng };
