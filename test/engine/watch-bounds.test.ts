// Watch bounds against a model (fast-check): maxWatchers (E_TOO_MANY_WATCHERS; a closed, lagged or
// finished subscription frees its slot; stats().watchers counts them) and watchQueueMax (a subscriber
// that leaves more than watchQueueMax live events undelivered ends with E_LAGGED; what it got before
// is exactly the history's prefix; replayed events do not count). Watchers with and without replay,
// drained slowly or not at all. Replay: WATCH_BOUNDS_SEED=... WATCH_BOUNDS_PATH=...
import fc from 'fast-check';
import { it } from 'vitest';
import { open, KvError, type WatchEvent } from '../../src/index.js';
import { rmDir, tmpDir } from './helpers.js';

const KEYS = ['a', 'ab', 'b'];
type Cmd =
  | { t: 'put'; key: number; v: number }
  | { t: 'del'; key: number }
  | { t: 'batch'; keys: number[] }
  | { t: 'watch'; sel: { key: number } | { prefix: string }; from: 'none' | 'first' | 'mid' }
  | { t: 'drain'; w: number; n: number }
  | { t: 'close'; w: number };

const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { arbitrary: fc.record({ t: fc.constant('put' as const), key: fc.nat({ max: 2 }), v: fc.nat({ max: 9 }) }), weight: 6 },
  { arbitrary: fc.record({ t: fc.constant('del' as const), key: fc.nat({ max: 2 }) }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant('batch' as const), keys: fc.array(fc.nat({ max: 2 }), { minLength: 1, maxLength: 4 }) }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant('watch' as const), sel: fc.oneof(fc.record({ key: fc.nat({ max: 2 }) }), fc.record({ prefix: fc.constantFrom('', 'a', 'b', 'z') })),
    from: fc.constantFrom('none', 'none', 'first', 'mid') as fc.Arbitrary<'none' | 'first' | 'mid'> }), weight: 3 },
  { arbitrary: fc.record({ t: fc.constant('drain' as const), w: fc.nat({ max: 5 }), n: fc.integer({ min: 1, max: 6 }) }), weight: 3 },
  { arbitrary: fc.record({ t: fc.constant('close' as const), w: fc.nat({ max: 5 }) }), weight: 1 },
);

interface Ev { type: 'put' | 'delete'; key: string; revision: number; value?: string }
interface W {
  sub: AsyncIterable<WatchEvent> & { close(): void };
  it: AsyncIterator<WatchEvent>;
  match: (k: string) => boolean;
  /** Replayed events not yet taken, then live ones. */
  replay: Ev[];
  live: Ev[];
  lagged: boolean;
  done: boolean;
  got: number;
}

const brief = (e: { type: string; key: Buffer | string; revision: number; value?: Buffer | string }) =>
  `${e.type} ${e.key.toString()} @${e.revision} ${e.value?.toString() ?? ''}`;

it('maxWatchers and watchQueueMax behave as the model', async () => {
  const seed = process.env.WATCH_BOUNDS_SEED !== undefined ? Number(process.env.WATCH_BOUNDS_SEED) : undefined;
  const p = process.env.WATCH_BOUNDS_PATH;
  await fc.assert(fc.asyncProperty(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), fc.array(cmdArb, { minLength: 1, maxLength: 40 }),
    async (maxWatchers, queueMax, cmds) => {
      const dir = tmpDir('watch-bounds');
      const e = await open(dir, { maxWatchers, watchQueueMax: queueMax, sync: 'none' });
      const history: Ev[] = [];
      const ws: W[] = [];
      function fail(msg: string): never {
        throw new Error(`${msg}\n  commands: ${JSON.stringify(cmds)}`);
      }
      const deliver = (evs: Ev[]) => {
        for (const ev of evs) {
          history.push(ev);
          for (const w of ws) {
            if (w.done || !w.match(ev.key)) continue;
            if (w.live.length >= queueMax) {
              w.lagged = true;
              w.done = true;
              w.live = [];
              w.replay = [];
              continue;
            }
            w.live.push(ev);
          }
        }
      };
      try {
        await e.createNamespace('n');
        for (const c of cmds) {
          const open_ = ws.filter((w) => !w.done).length;
          if (e.stats().watchers !== open_) fail(`stats().watchers ${e.stats().watchers}, model ${open_}`);
          switch (c.t) {
            case 'put': {
              const rev = await e.put('n', KEYS[c.key], `v${c.v}`);
              deliver([{ type: 'put', key: KEYS[c.key], revision: rev, value: `v${c.v}` }]);
              break;
            }
            case 'del': {
              const rev = await e.delete('n', KEYS[c.key]);
              if (rev !== undefined) deliver([{ type: 'delete', key: KEYS[c.key], revision: rev }]);
              break;
            }
            case 'batch': {
              const rev = await e.batch('n', c.keys.map((k, i) => ({ type: 'put' as const, key: KEYS[k], value: `b${i}` })));
              deliver(c.keys.map((k, i) => ({ type: 'put' as const, key: KEYS[k], revision: rev, value: `b${i}` })));
              break;
            }
            case 'watch': {
              const sel = 'key' in c.sel ? { key: KEYS[c.sel.key] } : { prefix: c.sel.prefix };
              const match = 'key' in sel ? (k: string) => k === sel.key : (k: string) => k.startsWith(sel.prefix);
              const last = history.length > 0 ? history[history.length - 1].revision : 0;
              const from = c.from === 'none' ? undefined : c.from === 'first' ? 1 : Math.max(1, Math.ceil(last / 2));
              let sub: AsyncIterable<WatchEvent> & { close(): void };
              try {
                sub = e.watch('n', sel, from === undefined ? undefined : { fromRevision: from });
              } catch (err) {
                if (err instanceof KvError && err.code === 'E_TOO_MANY_WATCHERS' && open_ >= maxWatchers) break;
                fail(`watch with ${open_}/${maxWatchers} open: ${(err as Error).message}`);
              }
              if (open_ >= maxWatchers) fail(`watch number ${open_ + 1} of at most ${maxWatchers} was taken`);
              const replay = from === undefined ? [] : history.filter((h) => h.revision >= from && match(h.key));
              ws.push({ sub: sub!, it: sub![Symbol.asyncIterator](), match, replay, live: [], lagged: false, done: false, got: 0 });
              break;
            }
            case 'drain': {
              const w = ws[c.w % Math.max(1, ws.length)];
              if (w === undefined) break;
              for (let i = 0; i < c.n; i++) {
                const want = w.replay.length > 0 ? w.replay[0] : w.live[0];
                let r: IteratorResult<WatchEvent> | 'pending';
                try {
                  r = await Promise.race([w.it.next(), new Promise<'pending'>((res) => setTimeout(() => res('pending'), 200))]);
                } catch (err) {
                  if (!(err instanceof KvError)) fail(`next(): a non-KvError ${(err as Error)?.stack}`);
                  if (err.code === 'E_LAGGED' && w.lagged) break;
                  fail(`next(): ${err.message} (model: lagged ${w.lagged}, next ${want ? brief(want) : 'none'})`);
                }
                if (w.lagged) fail(`next() after the watcher lagged gave ${r === 'pending' ? 'nothing' : JSON.stringify(r)}, not E_LAGGED`);
                if (r === 'pending') {
                  if (want !== undefined) fail(`next() waited, model has ${brief(want)}`);
                  // the pending next() takes the next live event directly (no queue): model it as a drain of 1 later
                  w.done = true; // keep it simple: a watcher with a pending next() is closed
                  w.sub.close();
                  break;
                }
                if (r.done) {
                  if (!w.done) fail(`watcher ended, model says open`);
                  break;
                }
                if (want === undefined) fail(`got ${brief(r.value)}, model expects nothing`);
                const ev = r.value;
                if (brief(ev) !== brief(want)) fail(`got ${brief(ev)}, want ${brief(want)}`);
                if (w.replay.length > 0) w.replay.shift();
                else w.live.shift();
                w.got++;
              }
              if (w.lagged) w.done = true;
              break;
            }
            case 'close': {
              const w = ws[c.w % Math.max(1, ws.length)];
              if (w === undefined) break;
              w.sub.close();
              w.done = true;
              break;
            }
          }
        }
      } finally {
        for (const w of ws) w.sub.close();
        await e.close();
        rmDir(dir);
      }
    }), { numRuns: Number(process.env.WATCH_BOUNDS_RUNS ?? 150), ...(seed !== undefined ? { seed } : {}), ...(p !== undefined ? { path: p, endOnFailure: true } : {}) });
}, 300_000);
