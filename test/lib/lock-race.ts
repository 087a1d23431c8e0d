/**
 * Races many child processes for one pid lock, round after round, and reports who won
 * each round. Before each round `prepare()` may plant a stale lock. Every racer tries once
 * per round; winners keep the lock until every racer has answered, so "more than one
 * winner" means two processes held it at the same time.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/lock-racer.ts');

export interface RoundResult {
  winners: number;
  answers: string[];
}

/** A pid that no process has any more (a child that has exited and been reaped). */
export function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

class Racer {
  private buf = '';
  private waiters: Array<(line: string) => void> = [];
  private lines: string[] = [];
  constructor(readonly c: ChildProcessWithoutNullStreams) {
    c.stdout.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        const w = this.waiters.shift();
        if (w) w(line);
        else this.lines.push(line);
      }
    });
  }
  next(timeoutMs = 60_000): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`racer ${this.c.pid} said nothing for ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push((line) => {
        clearTimeout(t);
        resolve(line);
      });
    });
  }
  send(line: string): void {
    this.c.stdin.write(line + '\n');
  }
}

export async function raceLock(opts: { mode: 'pid' | 'cache'; dir: string; racers: number; rounds: number; prepare: (round: number) => void }): Promise<RoundResult[]> {
  const racers = Array.from({ length: opts.racers }, () => new Racer(spawn(process.execPath, ['--import', 'tsx', fixture, opts.mode, opts.dir], { stdio: ['pipe', 'pipe', 'pipe'] })));
  const stderr: string[] = racers.map(() => '');
  racers.forEach((r, i) => r.c.stderr.on('data', (d: Buffer) => (stderr[i] += d.toString())));
  try {
    for (const r of racers) {
      const l = await r.next().catch((e) => {
        throw new Error(`${(e as Error).message}; stderr: ${stderr.join('\n')}`);
      });
      if (l !== 'READY') throw new Error(`racer said ${l}`);
    }
    const results: RoundResult[] = [];
    for (let round = 0; round < opts.rounds; round++) {
      opts.prepare(round);
      for (const r of racers) r.send('go');
      const answers = await Promise.all(racers.map((r) => r.next()));
      results.push({ winners: answers.filter((a) => a === 'WON').length, answers });
      for (const r of racers) r.send('release');
      for (const r of racers) {
        const l = await r.next();
        if (l !== 'DONE') throw new Error(`racer said ${l}`);
      }
    }
    return results;
  } finally {
    for (const r of racers) {
      r.c.stdin.end('exit\n');
      const t = setTimeout(() => r.c.kill('SIGKILL'), 10_000);
      await new Promise((res) => (r.c.exitCode !== null || r.c.signalCode !== null ? res(null) : r.c.on('close', res)));
      clearTimeout(t);
    }
  }
}
