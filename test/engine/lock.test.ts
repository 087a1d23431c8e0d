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

it('never lets two processes in at once', async () => {
  const d = tmpDir('lock-race');
  try {
    const { spawn } = await import('node:child_process');
    // each child holds the engine open for 1.5 s and reports when it held it; all six are
    // released at once when every one has booted (a loaded machine boots them far apart)
    const children = Array.from({ length: 6 }, () => {
      const c = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'fixtures/open-child.ts'), d, 'hold'], { stdio: ['pipe', 'pipe', 'ignore'] });
      const child = { c, out: '', closed: new Promise<string>((resolve) => c.on('close', () => resolve(child.out.replace(/^READY\n/, '').trim()))) };
      c.stdout.on('data', (x: Buffer) => (child.out += x.toString()));
      return child;
    });
    for (const end = Date.now() + 60_000; !children.every((ch) => ch.out.startsWith('READY\n')); await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > end) throw new Error(`children not ready: ${children.map((ch) => ch.out).join(' | ')}`);
    }
    for (const ch of children) ch.c.stdin.end('go\n');
    const outs = await Promise.all(children.map((ch) => ch.closed));
    const held = outs.filter((o) => o.startsWith('OPENED')).map((o) => o.split(' ').slice(1).map(Number)).sort((a, b) => a[0] - b[0]);
    expect(held.length, outs.join('\n')).toBeGreaterThanOrEqual(1);
    for (let i = 1; i < held.length; i++) expect(held[i][0], 'two holders overlapped').toBeGreaterThanOrEqual(held[i - 1][1]);
    for (const o of outs) if (!o.startsWith('OPENED')) expect(o).toMatch(/^E_LOCKED .*locked by pid \d+/);
    expect(held.length).toBeLessThan(6); // they did overlap in time: some were refused
    expect(fs.readdirSync(d).filter((f) => f.startsWith('LOCK'))).toEqual([]);
  } finally {
    rmDir(d);
  }
});
