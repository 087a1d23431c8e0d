/**
 * A keyed async mutex: `run(key, fn)` runs `fn` only after every earlier
 * `run` for the same key has settled. Different keys never wait for each
 * other. The blob store keys it by blob hash so that the creation and the
 * deletion of one blob are serialized.
 *
 * Fair (FIFO per key), not reentrant: calling `run(k, ...)` from inside a
 * `run(k, ...)` deadlocks. An entry lives in the map only while a holder or
 * a waiter exists, so an idle lock costs nothing.
 */
export class HashLock {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `fn` exclusively for `key`; resolves or rejects as `fn` does. */
  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => { release = resolve; });
    this.tails.set(key, mine);
    try {
      if (prev) await prev;
      return await fn();
    } finally {
      if (this.tails.get(key) === mine) this.tails.delete(key);
      release();
    }
  }

  /** True while some `run` for `key` is running or waiting. */
  isHeld(key: string): boolean {
    return this.tails.has(key);
  }

  /** Number of keys currently held (for tests and stats). */
  get size(): number {
    return this.tails.size;
  }
}
