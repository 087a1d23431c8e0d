/**
 * Store layers for the block layer's model test (test/glidefs/model.test.ts).
 *
 * Both wrap any ObjectStore through a Proxy, so they follow the interface as it
 * grows (every method is passed through; the ones named here are intercepted).
 *
 * - `switchable(faulty, clean)`: routes every call to the faulty chain while
 *   `faults` is on, else to the clean store (the same objects underneath).
 * - `severable(inner)`: the store as seen by one process. `crashAfter(n, land)`
 *   arms a crash at the n-th request from now: at that request `onCrash` runs
 *   synchronously (the harness copies the catalog and cache as a kill -9 would
 *   leave them), the request reaches the store only if `land` (a PUT/DELETE
 *   whose answer is lost), and it and every later request throw `Crashed`.
 */
import type { ObjectStore } from '../../../glidefs/index.js';

export class Crashed extends Error {
  constructor() {
    super('process crashed (model test)');
    this.name = 'Crashed';
  }
}

const MUTATING = new Set(['put', 'putIfAbsent', 'putIfMatch', 'delete']);
const REQUESTS = new Set(['put', 'putIfAbsent', 'putIfMatch', 'delete', 'get', 'getTagged', 'head', 'list']);

export interface Switchable {
  store: ObjectStore;
  faults: boolean;
}

export function switchable(faulty: ObjectStore, clean: ObjectStore): Switchable {
  const sw: Switchable = { faults: false, store: undefined as unknown as ObjectStore };
  sw.store = new Proxy(clean, {
    get(_t, prop) {
      const target = (sw.faults ? faulty : clean) as unknown as Record<string | symbol, unknown>;
      const v = target[prop];
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return sw;
}

export interface Severable {
  store: ObjectStore;
  dead: boolean;
  requests: number;
  /** Arms a crash at the n-th request from now (n >= 1). */
  crashAfter(n: number, land: boolean, onCrash: () => void): void;
  /** Crashes now (between requests). */
  crashNow(onCrash: () => void): void;
}

export function severable(inner: ObjectStore): Severable {
  let countdown: number | null = null;
  let land = false;
  let onCrash: (() => void) | null = null;
  const s: Severable = {
    store: undefined as unknown as ObjectStore,
    dead: false,
    requests: 0,
    crashAfter(n, l, cb) {
      countdown = n;
      land = l;
      onCrash = cb;
    },
    crashNow(cb) {
      countdown = null;
      s.dead = true;
      cb();
    },
  };
  /** True when this request is the one the crash happens at (the state is copied first). */
  const hit = (): boolean => {
    if (s.dead) throw new Crashed();
    s.requests++;
    if (countdown === null) return false;
    countdown--;
    if (countdown > 0) return false;
    countdown = null;
    s.dead = true;
    onCrash?.();
    return true;
  };
  const base = inner as unknown as Record<string | symbol, unknown>;
  s.store = new Proxy(inner, {
    get(_t, prop) {
      const v = base[prop];
      if (typeof v !== 'function' || typeof prop !== 'string' || !REQUESTS.has(prop)) {
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(inner) : v;
      }
      const fn = (v as (...a: unknown[]) => unknown).bind(inner);
      if (prop === 'list') {
        return (prefix: string) =>
          (async function* () {
            if (hit()) throw new Crashed();
            for await (const k of fn(prefix) as AsyncIterable<string>) {
              if (s.dead) throw new Crashed();
              yield k;
            }
          })();
      }
      return async (...args: unknown[]) => {
        if (hit()) {
          if (land && MUTATING.has(prop)) await Promise.resolve(fn(...args)).catch(() => undefined);
          throw new Crashed();
        }
        const r = await fn(...args);
        if (s.dead) throw new Crashed(); // the answer reached a dead process
        return r;
      };
    },
  });
  return s;
}
