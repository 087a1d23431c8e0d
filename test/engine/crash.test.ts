// kill -9 in the middle of a stream of 'batch' puts, many times: every put that resolved is there after reopen.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { open } from '../../src/index.js';
import { rmDir, tmpDir } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const dir = tmpDir('crash');
afterAll(() => rmDir(dir));

function runAndKill(tag: string, killAfterAcks: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    // node --import tsx (not the tsx wrapper, which would leave its node child running after SIGKILL)
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'fixtures/put-child.ts'), dir, tag], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let acks = 0;
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      const s = d.toString();
      out += s;
      acks += s.split('\n').filter((l) => l.startsWith('P ') || l.startsWith('B ')).length;
      if (acks >= killAfterAcks && child.exitCode === null && !child.killed) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('close', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`child ended with ${code}/${signal}: ${err}`));
      else resolve(out.split('\n'));
    });
    setTimeout(() => child.kill('SIGKILL'), 30_000);
  });
}

it('every acknowledged put and batch survives kill -9, across many crashes', async () => {
  const acked = new Map<string, number>();
  let lastRev = 0;
  for (let round = 0; round < 8; round++) {
    const lines = await runAndKill(`r${round}`, 200 + round * 150);
    let maxRev = 0;
    for (const l of lines) {
      const [kind, keys, rev] = l.split(' ');
      if (kind !== 'P' && kind !== 'B') continue;
      for (const k of keys.split(',')) acked.set(k, Number(rev));
      maxRev = Math.max(maxRev, Number(rev));
      expect(Number(rev)).toBeGreaterThan(lastRev); // revisions are never reused after a crash
    }
    lastRev = Math.max(lastRev, maxRev);
    expect(maxRev).toBeGreaterThan(0);
  }
  const e = await open(dir);
  try {
    let found = 0;
    for (const [k, rev] of acked) {
      const g = await e.get('n', k);
      expect(g, k).toBeDefined();
      expect(g!.revision).toBe(rev);
      expect(g!.value.toString().startsWith(`val:${k}`)).toBe(true);
      found++;
    }
    expect(found).toBe(acked.size);
    // batches are whole: both halves or neither, also for the unacknowledged ones
    for (const { key } of e.list('n')) {
      const m = /^(r\d+-b\d+)-([12])$/.exec(key.toString());
      if (m) expect(e.stat('n', `${m[1]}-${m[2] === '1' ? '2' : '1'}`), key.toString()).toBeDefined();
    }
  } finally {
    await e.close();
  }
});
