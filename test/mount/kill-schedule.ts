/**
 * When a kill test kills its daemon in a round (kill-device, kill-kv): the even rounds at a random time
 * (30 + int(maxMs) ms: mid-operation), the odd ones right after the k-th acknowledged operation (1 + int(maxOps)).
 * The draws are made in that order, so a seed replays the same schedule.
 */
export class KillSchedule {
  killed = false;
  readonly byTime: boolean;
  readonly killAt: number;
  readonly killAfterOps: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    round: number,
    int: (n: number) => number,
    opts: { maxMs: number; maxOps: number },
    private readonly kill: () => Promise<void>,
  ) {
    this.byTime = round % 2 === 0;
    this.killAt = 30 + int(opts.maxMs);
    this.killAfterOps = 1 + int(opts.maxOps);
    this.timer = setTimeout(() => {
      if (!this.byTime) return;
      this.killed = true;
      void this.kill();
    }, this.killAt);
  }

  /** Call after each acknowledged operation with the count so far: kills right after the k-th. */
  async acked(ops: number): Promise<void> {
    if (!this.byTime && ops === this.killAfterOps) {
      this.killed = true;
      await this.kill();
    }
  }

  /** Stops the timer (the round is over). */
  clear(): void {
    clearTimeout(this.timer);
  }

  /** For messages: `at N ms` or `after op K`. */
  toString(): string {
    return this.byTime ? `at ${this.killAt} ms` : `after op ${this.killAfterOps}`;
  }
}
