// Goal: a KV daemon that reaches its open-file limit (ulimit -n) answers EMFILE for the operation that needs one
// more file and keeps serving; it does not die and take its mount away (found by the stack soak's bad-input run:
// the daemon's mount watch read /proc/self/mountinfo every second, and its EMFILE there was an uncaught exception
// that ended the daemon: every later operation on the mount got ENOTCONN).
// Method: the real kernel; the daemon's limit is lowered with prlimit(1) to a few fds above what it holds, then
// namespaces (one open segment each) are made until mkdir fails, and the mount is used again after the watch ran.
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { open } from '../../src/index.js';
import { fuseUnavailable, KvDaemon, kvMountDirs, sh } from './kv-daemon.js';

const skipReason = fuseUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING fd-limit KERNEL TEST: ${skipReason}. !!!\n`);
const q = (p: string) => `'${p.replace(/'/g, `'\\''`)}'`;

describe.skipIf(skipReason !== undefined)('kv daemon at its open-file limit', () => {
  const { data, mnt } = kvMountDirs('glidekv-fdlimit-');


  it('EMFILE for the namespace that needs one more file; the daemon stays up and serves the rest', async () => {
    mkdirSync(mnt);
    const d = await KvDaemon.start(data, mnt);
    const held = readdirSync(`/proc/${d.pid}/fd`).length;
    const limit = held + 6;
    const p = await sh(`prlimit --pid ${d.pid} --nofile=${limit}:`);
    expect(p.code, p.stderr).toBe(0);
    let failed = '';
    for (let i = 0; i < 40 && !failed; i++) {
      const r = await sh(`mkdir ${q(join(mnt, `ns${i}`))} && echo v${i} > ${q(join(mnt, `ns${i}`, 'k'))}`);
      if (r.code !== 0) failed = r.stderr.trim();
    }
    expect(failed, 'the limit was never reached').toMatch(/Too many open files/);
    // Hold it there: no fd left at all (a failed mkdir may have given one back). An open takes the lowest free
    // number, and fails when that is not below the limit.
    const used = new Set(readdirSync(`/proc/${d.pid}/fd`).map(Number));
    let lowestFree = 0;
    while (used.has(lowestFree)) lowestFree++;
    expect((await sh(`prlimit --pid ${d.pid} --nofile=${lowestFree}:`)).code).toBe(0);
    // The daemon's mount watch runs every second: give it a few rounds at the limit.
    await new Promise((r) => setTimeout(r, 3000));
    expect(d.exitCode, `daemon died: ${d.stderr}`).toBeNull();
    // It still answers what needs no new fd (the namespaces are in memory).
    const r = await sh(`ls ${q(mnt)}`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ns0$/m);
    expect(d.exitCode, `daemon died: ${d.stderr}`).toBeNull();
    // Stopped at the limit: the unmount (a worker thread, a fusermount child) still runs: the daemon's fd reserve.
    const code = await d.stop();
    expect(code, d.stderr).toBe(0);
    expect((await sh(`mountpoint -q ${q(mnt)}`)).code, 'still mounted').not.toBe(0);
    const e = await open(data);
    try {
      expect((await e.get('ns0', 'k'))?.value.toString()).toBe('v0\n');
    } finally {
      await e.close();
    }
  }, 120_000);
});
