// lib/pid-lock.ts: one holder at a time, across processes, whatever stale state is left
// behind (a dead holder's lock, a lock file with no pid, a dead breaker's break lock).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { LockHeldError, lockHolder, PidLock } from '../../lib/pid-lock.js';
import { deadPid, raceLock } from './lock-race.js';

const root = mkdtempSync(path.join(tmpdir(), 'pid-lock-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

it('racing processes: exactly one holds the lock each round, with stale locks and stale break locks planted', async () => {
  const dir = path.join(root, 'race');
  mkdirSync(dir);
  const dead = deadPid();
  const results = await raceLock({
    mode: 'pid',
    dir,
    racers: 6,
    rounds: 9,
    prepare: (round) => {
      writeFileSync(path.join(dir, 'lock'), round % 3 === 1 ? 'garbage' : `${dead}\n`);
      // a breaker killed inside its break section left this behind
      if (round % 3 === 2) for (const k of [0, 1]) writeFileSync(path.join(dir, `lock.break.${k}`), `${dead}\n`);
    },
  });
  for (const [round, r] of results.entries()) {
    expect(r.winners, `round ${round}: ${r.answers.join(' | ')}`).toBe(1);
    for (const a of r.answers) if (a !== 'WON') expect(a).toMatch(/^LOST LOCK_HELD .*lock is held by pid \d+$/);
  }
  expect(readdirSync(dir)).toEqual([]);
});

it('refuses a second taker in this process with the holder, and takes over a dead holder', async () => {
  const file = path.join(root, 'one', 'lock');
  mkdirSync(path.dirname(file));
  writeFileSync(file, `${deadPid()}\n`);
  writeFileSync(`${file}.${deadPid()}.0a1b.tmp`, 'left by a taker killed before its link');
  const lock = await PidLock.acquire(file);
  expect(readFileSync(file, 'utf8')).toBe(`${process.pid}\n`);
  expect(lockHolder(file)).toBe(process.pid);
  const err = await PidLock.acquire(file).catch((e) => e);
  expect(err).toBeInstanceOf(LockHeldError);
  expect(err.pid).toBe(process.pid);
  // the caller's own error type
  await expect(PidLock.acquire(file, { heldError: (pid) => Object.assign(new Error(`held by ${pid}`), { code: 'E_MINE' }) })).rejects.toMatchObject({ code: 'E_MINE', message: `held by ${process.pid}` });
  await lock.release();
  expect(lockHolder(file)).toBe(null);
  expect(readdirSync(path.dirname(file))).toEqual([]);
});

it('release removes only its own lock', async () => {
  const file = path.join(root, 'own', 'lock');
  mkdirSync(path.dirname(file));
  const lock = await PidLock.acquire(file);
  writeFileSync(file, '12345678\n'); // somebody else's now (as after a takeover)
  await lock.release();
  expect(readFileSync(file, 'utf8')).toBe('12345678\n');
});

it('waits for a live breaker, then gives up with pid null', async () => {
  const file = path.join(root, 'wait', 'lock');
  mkdirSync(path.dirname(file));
  writeFileSync(file, `${deadPid()}\n`);
  // a live breaker (another live process: this process's own pid in a break lock it does not hold is a stale one) that never finishes
  writeFileSync(`${file}.break.0`, `${process.ppid}\n`);
  const err = await PidLock.acquire(file, { waitMs: 300 }).catch((e) => e);
  expect(err).toBeInstanceOf(LockHeldError);
  expect(err.pid).toBe(null);
  rmSync(`${file}.break.0`);
  const lock = await PidLock.acquire(file);
  await lock.release();
});
