/**
 * Watch subscriptions: put/delete events of one key or a key prefix in a namespace.
 * A subscription first replays history from the log (events with revision in
 * [fromRevision, replayThrough]), then delivers live events with revision > replayThrough.
 * Bounds: at most `maxWatchers` subscriptions in total (E_TOO_MANY_WATCHERS), at most
 * `queueMax` undelivered live events per subscription: past it the subscription ends
 * with E_LAGGED and its queue is dropped, so memory never grows without bound.
 */
import { KvError } from './errors.js';

export interface WatchEvent {
  type: 'put' | 'delete';
  key: Buffer;
  revision: number;
  value?: Buffer;
}

export type WatchSelector = { key: Buffer } | { prefix: Buffer };

export class Subscription implements AsyncIterable<WatchEvent> {
  private queue: WatchEvent[] = [];
  private head = 0;
  private waiter: { resolve: (r: IteratorResult<WatchEvent>) => void; reject: (e: unknown) => void } | null = null;
  private error: unknown = null;
  private ended = false;
  private replay: AsyncIterator<WatchEvent> | null;

  constructor(
    private readonly hub: WatchHub,
    readonly ns: string,
    readonly key: Buffer | null,
    readonly prefix: Buffer | null,
    /** Live events at or below this revision are already covered by the replay. */
    readonly replayThrough: number,
    replay: AsyncIterable<WatchEvent> | null,
    private readonly queueMax: number,
    /** Events below this revision are not wanted (fromRevision). */
    readonly minRevision = 0,
  ) {
    this.replay = replay ? replay[Symbol.asyncIterator]() : null;
  }

  matches(key: Buffer): boolean {
    if (this.key !== null) return this.key.equals(key);
    const p = this.prefix!;
    return key.length >= p.length && p.compare(key, 0, p.length) === 0;
  }

  /** Called by the hub for a live event that matches. */
  push(ev: WatchEvent): void {
    if (this.ended || ev.revision <= this.replayThrough || ev.revision < this.minRevision) return;
    if (this.waiter !== null && this.replay === null && this.head === this.queue.length) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve({ value: ev, done: false });
      return;
    }
    if (this.queue.length - this.head >= this.queueMax) {
      this.fail(new KvError('E_LAGGED', `watch on ${this.ns} fell more than ${this.queueMax} events behind`));
      return;
    }
    this.queue.push(ev);
  }

  /** Ends the subscription with an error (delivered after nothing: the queue is dropped). */
  fail(err: unknown): void {
    if (this.ended) return;
    this.error = err;
    this.finish();
    if (this.waiter !== null) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(err);
    }
  }

  close(): void {
    if (this.ended) return;
    this.finish();
    if (this.waiter !== null) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve({ value: undefined, done: true });
    }
  }

  private finish(): void {
    this.ended = true;
    this.queue = [];
    this.head = 0;
    if (this.replay !== null) {
      void this.replay.return?.();
      this.replay = null;
    }
    this.hub.remove(this);
  }

  async next(): Promise<IteratorResult<WatchEvent>> {
    if (this.error !== null) throw this.error;
    if (this.ended) return { value: undefined, done: true };
    if (this.replay !== null) {
      let r: IteratorResult<WatchEvent>;
      try {
        r = await this.replay.next();
      } catch (err) {
        this.fail(err);
        throw err;
      }
      if (this.error !== null) throw this.error;
      if (this.ended) return { value: undefined, done: true };
      if (!r.done) return r;
      this.replay = null;
    }
    if (this.head < this.queue.length) {
      const ev = this.queue[this.head];
      this.queue[this.head++] = undefined as unknown as WatchEvent;
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      return { value: ev, done: false };
    }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    return {
      next: () => this.next(),
      return: async () => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }
}

interface NsSubs {
  byKey: Map<string, Set<Subscription>>;
  byPrefix: Set<Subscription>;
}

export class WatchHub {
  private readonly namespaces = new Map<string, NsSubs>();
  private count = 0;

  constructor(readonly maxWatchers: number, readonly queueMax: number) {}

  get size(): number {
    return this.count;
  }

  /** Fast check before building events. */
  has(ns: string): boolean {
    return this.namespaces.has(ns);
  }

  add(ns: string, sel: WatchSelector, replayThrough: number, replay: AsyncIterable<WatchEvent> | null, minRevision = 0): Subscription {
    if (this.count >= this.maxWatchers) {
      throw new KvError('E_TOO_MANY_WATCHERS', `at most ${this.maxWatchers} watch subscriptions`);
    }
    const key = 'key' in sel ? sel.key : null;
    const prefix = 'prefix' in sel ? sel.prefix : null;
    const sub = new Subscription(this, ns, key, prefix, replayThrough, replay, this.queueMax, minRevision);
    let s = this.namespaces.get(ns);
    if (s === undefined) {
      s = { byKey: new Map(), byPrefix: new Set() };
      this.namespaces.set(ns, s);
    }
    if (key !== null) {
      const k = key.toString('latin1');
      let set = s.byKey.get(k);
      if (set === undefined) s.byKey.set(k, (set = new Set()));
      set.add(sub);
    } else {
      s.byPrefix.add(sub);
    }
    this.count++;
    return sub;
  }

  remove(sub: Subscription): void {
    const s = this.namespaces.get(sub.ns);
    if (s === undefined) return;
    let removed = false;
    if (sub.key !== null) {
      const k = sub.key.toString('latin1');
      const set = s.byKey.get(k);
      if (set !== undefined && set.delete(sub)) {
        removed = true;
        if (set.size === 0) s.byKey.delete(k);
      }
    } else {
      removed = s.byPrefix.delete(sub);
    }
    if (removed) this.count--;
    if (s.byKey.size === 0 && s.byPrefix.size === 0) this.namespaces.delete(sub.ns);
  }

  /** Delivers a live event to every matching subscription of `ns`. */
  dispatch(ns: string, type: 'put' | 'delete', key: Buffer, revision: number, value: Buffer | undefined): void {
    const s = this.namespaces.get(ns);
    if (s === undefined) return;
    let ev: WatchEvent | null = null;
    if (s.byKey.size > 0) {
      const set = s.byKey.get(key.toString('latin1'));
      if (set !== undefined) {
        ev = { type, key: Buffer.from(key), revision, value };
        for (const sub of [...set]) sub.push(ev);
      }
    }
    for (const sub of [...s.byPrefix]) {
      if (!sub.matches(key)) continue;
      if (ev === null) ev = { type, key: Buffer.from(key), revision, value };
      sub.push(ev);
    }
  }

  /** Ends every subscription of `ns` (namespace dropped) or all of them (engine closed). */
  endAll(ns: string | null, err: unknown): void {
    for (const [name, s] of [...this.namespaces]) {
      if (ns !== null && name !== ns) continue;
      for (const set of s.byKey.values()) for (const sub of [...set]) err ? sub.fail(err) : sub.close();
      for (const sub of [...s.byPrefix]) err ? sub.fail(err) : sub.close();
    }
  }
}
