// The volume cache lock (issue 9 item 9): of many processes racing for one volume's
// cache lock, a stale one planted before each round, exactly one wins; the lock it holds
// names it; the loser's error is E_LOCKED naming the winner; nothing is left behind.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { acquireLock, lockHolder } from '../../glidefs/cache.js';
import { deadPid, raceLock } from '../lib/lock-race.js';

const root = mkdtempSync(path.join(tmpdir(), 'glidefs-cache-lock-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

it('many processes racing for one volume cache, with a stale lock: exactly one wins each round', async () => {
  const dir = path.join(root, 'volumes', 'v1');
  mkdirSync(dir, { recursive: true });
  const dead = deadPid();
  const results = await raceLock({
    mode: 'cache',
    dir,
    racers: 8,
    rounds: 12,
    // a dead holder's pid, or (every third round) the empty file a taker killed between
    // create and write left behind with the old algorithm
    prepare: (round) => writeFileSync(path.join(dir, 'lock'), round % 3 === 2 ? '' : `${dead}\n`),
  });
  for (const [round, r] of results.entries()) {
    expect(r.winners, `round ${round}: ${r.answers.join(' | ')}`).toBe(1);
    for (const a of r.answers) if (a !== 'WON') expect(a).toMatch(/^LOST E_LOCKED E_LOCKED: volume 'v' is open in another process \(pid \d+\)/);
  }
  expect(readdirSync(dir)).toEqual([]);
});

it('a second opener in this process is refused; release frees the lock, and only our own', async () => {
  const dir = path.join(root, 'volumes', 'v2');
  const release = await acquireLock(dir, 'v2');
  expect(lockHolder(dir)).toBe(process.pid);
  await expect(acquireLock(dir, 'v2')).rejects.toMatchObject({ code: 'E_LOCKED', message: expect.stringContaining('already open in this process') });
  release();
  expect(lockHolder(dir)).toBe(null);
  expect(readdirSync(dir)).toEqual([]);
  const again = await acquireLock(dir, 'v2');
  expect(readFileSync(path.join(dir, 'lock'), 'utf8')).toBe(`${process.pid}\n`);
  again();
});
