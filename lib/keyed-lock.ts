/**
 * A keyed async mutex: `run(key, fn)` runs `fn` only after every earlier
 * `run` holding the same key has settled. Different keys never wait for each
 * other. `run([k1, k2], fn)` holds several keys at once; they are taken in
 * sorted order (duplicates dropped), so two multi-key callers never deadlock.
 *
 * Fair (FIFO per key), not reentrant: a `run(k, ...)` from inside a
 * `run(k, ...)` deadlocks. A key lives in the map only while a holder or a
 * waiter exists, so an idle lock costs nothing.
 *
 * Users: the blob store (keyed by blob hash: create and delete of one blob are
 * serialized) and the KV mount (read-modify-write of one key: commit,
 * truncate, rename, unlink).
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `fn` holding `keys`; resolves or rejects as `fn` does. Every key is released either way. */
  async run<T>(keys: string | readonly string[], fn: () => Promise<T>): Promise<T> {
    const sorted = typeof keys === 'string' ? [keys] : [...new Set(keys)].sort();
    const releases: Array<() => void> = [];
    try {
      for (const k of sorted) releases.push(await this.acquire(k));
      return await fn();
    } finally {
      for (const r of releases.reverse()) r();
    }
  }

  /** True while some `run` holding `key` is running or waiting. */
  isHeld(key: string): boolean {
    return this.tails.has(key);
  }

  /** Number of keys held or waited for (for tests and leak checks). */
  get size(): number {
    return this.tails.size;
  }

  private async acquire(key: string): Promise<() => void> {
    const prev = this.tails.get(key);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.tails.set(key, mine);
    if (prev) await prev;
    return () => {
      if (this.tails.get(key) === mine) this.tails.delete(key);
      release();
    };
  }
}
