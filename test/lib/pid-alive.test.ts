// lib/pid-alive.ts: a live process is alive, a reaped one is not, and a zombie (exited, not yet
// reaped by its parent) is not either, though kill(pid, 0) still finds it.
import { spawn, spawnSync } from 'node:child_process';
import { expect, it } from 'vitest';
import { pidAlive } from '../../lib/pid-alive.js';
import { alive } from '../../src/cli/stack/system.js';

it('live, reaped, zombie, nonsense', async () => {
  expect(pidAlive(process.pid)).toBe(true);
  const reaped = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  expect(pidAlive(Number(reaped.stdout))).toBe(false);
  for (const bad of [0, -1, 1.5, NaN]) expect(pidAlive(bad)).toBe(false);
  // `sleep 0` exits at once; its parent then becomes `sleep 5`, which never reaps it
  const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const zombie = Number(await new Promise<string>((r) => parent.stdout.once('data', (d: Buffer) => r(d.toString()))));
    for (const end = Date.now() + 5000; Date.now() < end && pidAlive(zombie); ) await new Promise((r) => setTimeout(r, 20));
    expect(() => process.kill(zombie, 0)).not.toThrow(); // it still exists for the kernel
    expect(pidAlive(zombie)).toBe(false);
    expect(alive(zombie)).toBe(false); // the stack's check is the same function
    expect(alive(parent.pid)).toBe(true);
  } finally {
    parent.kill('SIGKILL');
  }
});
