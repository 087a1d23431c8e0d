// The directory lock: a second opener (same or another process) gets E_LOCKED naming the pid; stale locks are taken over.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { open } from '../../src/index.js';
import { codeOf, rmDir, tmpDir } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = tmpDir('lock');
afterAll(() => rmDir(dir));

function childOpen(): string {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(here, 'fixtures/open-child.ts'), dir], { encoding: 'utf8', timeout: 60_000 });
  return r.stdout.trim();
}

it('refuses a second opener while held, in this process and in another', async () => {
  const e = await open(dir);
  try {
    expect(await codeOf(open(dir))).toBe('E_LOCKED');
    const out = childOpen();
    expect(out).toContain('E_LOCKED');
    expect(out).toContain(`locked by pid ${process.pid}`);
  } finally {
    await e.close();
  }
  expect(childOpen()).toBe('OPENED');
});

it('takes over the lock of a dead process', async () => {
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(dead.stdout);
  expect(pid).toBeGreaterThan(0);
  fs.writeFileSync(path.join(dir, 'LOCK'), `${pid}\n`);
  const e = await open(dir);
  expect(fs.readFileSync(path.join(dir, 'LOCK'), 'utf8').trim()).toBe(String(process.pid));
  await e.close();
  expect(fs.existsSync(path.join(dir, 'LOCK'))).toBe(false);
});
