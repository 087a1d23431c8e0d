// Goal: `glidekv up`/`down`/`status`/`fork` run the whole stack through the real kernel and leave nothing behind (also after a failed up or a killed daemon); a live fork holds exactly the keys acknowledged before it.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cleanupUnder, glidekv, kernelUnavailable, stackEnv, leftovers, ok, q, sh } from './device-helpers.js';

const skipReason = kernelUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING glidekv up/down KERNEL TESTS: ${skipReason}. They need root, /dev/fuse and loop devices. !!!\n`);

interface Status {
  volume: string;
  mountpoint: string;
  state: string;
  problems: string[];
  kvPid: number;
  devicePid: number;
  loopDevice: string;
  dataDir: string;
}

describe.skipIf(skipReason !== undefined)('glidekv up / down / fork', () => {
  const root = mkdtempSync(join(tmpdir(), 'glidekv-updown-'));
  const env = stackEnv(root);
  const mnt = join(root, 'mnt');
  const mnt2 = join(root, 'mnt2');
  const files = join(root, 'files');
  const pidsToKill = new Set<number>();

  const status = async (): Promise<Status[]> => {
    const list = JSON.parse(await ok(glidekv(['status', '--json'], env))) as Status[];
    for (const s of list) if (s.loopDevice) seenLoops.add(s.loopDevice);
    return list;
  };
  // Loop devices this test saw in use (a loop whose FUSE file was lazily
  // unmounted shows a backing file outside root that no longer exists, so
  // check them by name too). Another test on the machine may have taken a
  // freed device meanwhile: its backing file exists outside root.
  const seenLoops = new Set<string>();
  const attached = (dev: string) => {
    try {
      const f = readFileSync(`/sys/block/${dev.slice(5)}/loop/backing_file`, 'utf8').trim();
      return f !== '' && (f.startsWith(root + '/') || !existsSync(f.replace(/ \(deleted\)$/, '')));
    } catch {
      return false;
    }
  };
  const nothingLeft = () => {
    expect(leftovers(root)).toEqual({ mounts: [], loops: [], pids: [] });
    expect([...seenLoops].filter(attached)).toEqual([]);
  };
  // Polls `cond` (no fixed sleep: a loaded machine may need longer); false once `ms` passed.
  const eventually = async (cond: () => boolean | Promise<boolean>, ms = 60_000): Promise<boolean> => {
    for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) if (await cond()) return true;
    return cond();
  };
  const up = (vol: string, at: string, extra: string[] = [], e: Record<string, string> = {}) => glidekv(['up', vol, at, '--size', '128M', ...extra], { ...env, ...e });

  beforeAll(async () => {
    mkdirSync(mnt);
    mkdirSync(mnt2);
    mkdirSync(files);
    await ok(sh(`head -c 5000000 /dev/urandom > ${q(files + '/big1')}; head -c 3000000 /dev/urandom > ${q(files + '/big2')}`));
  });

  afterAll(async () => {
    for (const st of await status().catch(() => [] as Status[])) await glidekv(['down', st.mountpoint], env);
    for (const p of [...pidsToKill, ...leftovers(root).pids]) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await cleanupUnder(root);
    rmSync(root, { recursive: true, force: true });
  });

  it('up makes every piece, status lists it, keys go in with cp, down leaves no mount, loop device or process', async () => {
    const r = await up('v1', mnt);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^device +.*\/dev\/volume \(volume 'v1', 134217728 bytes/m);
    expect(r.stdout).toMatch(/^loop +\/dev\/loop\d+ \(direct I\/O on, read-ahead 2048 KiB\)$/m);
    expect(r.stdout).toMatch(/^mkfs +ext4 .*first use/m);
    expect(r.stdout).toMatch(new RegExp(`^kv +${mnt} \\(pid \\d+`, 'm'));
    const [st] = await status();
    expect(st).toMatchObject({ volume: 'v1', mountpoint: mnt, state: 'up', problems: [] });
    expect(readFileSync(`/sys/block/${st.loopDevice.slice(5)}/loop/backing_file`, 'utf8').trim()).toBe(join(root, 'run', 'v1', 'dev', 'volume'));
    // no journal_async_commit: it ignores the result of the device flush (a failed upload would not fail the fsync)
    const ext4Line = readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.startsWith(`${st.loopDevice} `));
    expect(ext4Line, 'the ext4 of the stack in /proc/self/mounts').not.toMatch(/\bjournal_async_commit\b/);
    expect(ext4Line).toMatch(/\bdata=writeback\b/);

    await ok(sh(`mkdir ${q(mnt + '/ns')} && echo small > ${q(mnt + '/ns/s1')} && cp ${q(files + '/big1')} ${q(mnt + '/ns/big1')}`));
    expect(await ok(sh(`cat ${q(mnt + '/ns/s1')}`))).toBe('small\n');

    const d = await glidekv(['down', mnt], env);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toMatch(/device daemon \(pid \d+\) flushed and stopped/);
    nothingLeft();
    expect(await status()).toEqual([]);
    expect(JSON.parse(await ok(glidekv(['volume', 'stats', 'v1', '--json'], env))).dirtyBlocks).toBe(0);

    // Second up: no mkfs, same keys.
    const r2 = await up('v1', mnt);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stdout).not.toMatch(/^mkfs/m);
    await ok(sh(`cmp ${q(files + '/big1')} ${q(mnt + '/ns/big1')} && test "$(cat ${q(mnt + '/ns/s1')})" = small`));
    // Stays up for the next tests.
  });

  it('refuses, in one line and without leaving anything, a busy or bad MOUNTPOINT', async () => {
    const other = join(root, 'other');
    mkdirSync(other);
    const busy = await up('v2', mnt); // mnt is the KV mount of v1
    expect(busy.code).toBe(1);
    expect(busy.stderr.trim()).toBe(`glidekv: ${mnt} is busy: something is mounted there already`);
    writeFileSync(join(root, 'afile'), 'x');
    const file = await up('v2', join(root, 'afile'));
    expect(file.stderr.trim()).toBe(`glidekv: ${join(root, 'afile')} is not a directory`);
    writeFileSync(join(other, 'x'), 'x');
    const notEmpty = await up('v2', other);
    expect(notEmpty.stderr.trim()).toBe(`glidekv: ${other} is not empty (the KV mount needs an empty directory)`);
    rmSync(join(other, 'x'));
    const notRoot = await sh(`setpriv --reuid=65534 --regid=65534 --clear-groups ${q(process.execPath)} ${q(BIN)} up v2 ${q(other)}`, { env: { HOME: other } });
    expect(notRoot.code).toBe(1);
    expect(notRoot.stderr.trim()).toBe('glidekv: up must run as root (it uses losetup, mkfs.ext4 and mount)');
    expect((await status()).map((s) => s.volume)).toEqual(['v1']);
    expect(leftovers(join(root, 'run', 'v2'))).toEqual({ mounts: [], loops: [], pids: [] });
  });

  for (const step of ['loop', 'mkfs', 'ext4', 'kv']) {
    it(`a failing ${step} step of up takes down everything it had started`, async () => {
      const r = await up('v3', mnt2, [], { GLIDEKV_UP_FAIL_AT: step });
      expect(r.code).toBe(1);
      expect(r.stderr.trim()).toBe(`glidekv: ${step}: failing on purpose (GLIDEKV_UP_FAIL_AT=${step})`);
      expect(r.stdout).toMatch(/device daemon \(pid \d+\) flushed and stopped/);
      expect(leftovers(join(root, 'run', 'v3'))).toEqual({ mounts: [], loops: [], pids: [] });
      const loop = /^loop +(\/dev\/loop\d+)/m.exec(r.stdout)?.[1];
      if (step !== 'loop') expect(loop).toBeDefined();
      if (loop) expect(attached(loop), `${loop} still attached`).toBe(false);
      expect(leftovers(mnt2).mounts).toEqual([]);
      expect((await status()).map((s) => s.volume)).toEqual(['v1']);
    });
  }

  it('a failing mkfs (the real command) is reported in one line and cleaned up', async () => {
    const r = await up('v4', mnt2, [], { GLIDEKV_MKFS: 'false' });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^glidekv: mkfs: false -q -F .*\/dev\/loop\d+: /); // names the step
    expect(leftovers(join(root, 'run', 'v4'))).toEqual({ mounts: [], loops: [], pids: [] });
  });

  it('live fork: the fork holds exactly the keys acknowledged before it, the original keeps running', async () => {
    // The source runs with --sync none: acknowledged puts sit in the page
    // cache, so only the fork's engine sync + freeze + flush can carry them.
    const mnt3 = join(root, 'mnt3');
    mkdirSync(mnt3);
    const u0 = await up('f1', mnt3, ['--sync', 'none']);
    expect(u0.code, u0.stderr).toBe(0);
    const mnt = mnt3;
    await ok(sh(`mkdir ${q(mnt + '/ns')} && cp ${q(files + '/big1')} ${q(mnt + '/ns/big1')}`));
    // A writer puts key i, then logs i once cp returned (acknowledged).
    const log = join(root, 'acked.log');
    const script = `for i in $(seq 1 100000); do echo "value-$i" > ${q(mnt + '/ns/w')}$i || exit 1; echo $i >> ${q(log)}; done`;
    writeFileSync(log, '');
    const writer = spawn('bash', ['-c', script], { stdio: 'ignore' });
    pidsToKill.add(writer.pid!);
    try {
      const acked = () => readFileSync(log, 'utf8').split('\n').filter(Boolean).map(Number);
      await eventually(() => acked().length > 10); // let the writer get going
      const ackedBefore = acked();
      const f = await glidekv(['fork', 'f1', 'f1-fork', '--json'], env);
      expect(f.code, f.stderr).toBe(0);
      const startedAfter = Math.max(...acked()) + 2;
      const res = JSON.parse(f.stdout);
      expect(res).toMatchObject({ source: 'f1', fork: 'f1-fork', live: true });
      expect(res.durationMs).toBeGreaterThan(0);
      expect(ackedBefore.length).toBeGreaterThan(10);
      await eventually(() => Math.max(...acked()) > startedAfter); // the original keeps taking writes
      writer.kill('SIGTERM');
      await new Promise((r) => writer.once('exit', r));
      const lastOriginal = Math.max(...acked());
      expect(lastOriginal).toBeGreaterThan(startedAfter); // the original kept taking writes

      const u = await up('f1-fork', mnt2);
      expect(u.code, u.stderr).toBe(0);
      const forkKeys = new Set((await ok(sh(`ls ${q(mnt2 + '/ns')}`))).split('\n').filter(Boolean));
      for (const i of ackedBefore) expect(forkKeys.has(`w${i}`), `w${i} acknowledged before the fork; fork has ${forkKeys.size} keys: ${[...forkKeys].slice(0, 5)}`).toBe(true);
      for (const k of forkKeys) if (k.startsWith('w')) expect(Number(k.slice(1))).toBeLessThan(startedAfter);
      expect(await ok(sh(`cat ${q(mnt2 + '/ns/w' + ackedBefore[ackedBefore.length - 1])}`))).toBe(`value-${ackedBefore[ackedBefore.length - 1]}\n`);
      await ok(sh(`cmp ${q(files + '/big1')} ${q(mnt2 + '/ns/big1')}`));
      // The original still has everything it acknowledged, also after the fork.
      expect(await ok(sh(`cat ${q(mnt + '/ns/w' + lastOriginal)}`))).toBe(`value-${lastOriginal}\n`);
      // Independent afterwards: a key written to the fork is not in the original.
      await ok(sh(`cp ${q(files + '/big2')} ${q(mnt2 + '/ns/only-in-fork')}`));
      expect((await sh(`test -e ${q(mnt + '/ns/only-in-fork')}`)).code).not.toBe(0);
      expect((await status()).map((s) => s.volume)).toEqual(expect.arrayContaining(['f1', 'f1-fork']));
    } finally {
      writer.kill('SIGKILL');
      const d2 = await glidekv(['down', mnt2], env);
      const d3 = await glidekv(['down', mnt3], env);
      expect(d2.code, d2.stderr).toBe(0);
      expect(d3.code, d3.stderr).toBe(0);
    }
  });

  it('kill -9 of the KV daemon loses no acknowledged put; status shows it degraded; down still cleans up; up again has the keys', async () => {
    await ok(sh(`for i in $(seq 1 50); do echo "k-$i" > ${q(mnt + '/ns/k')}$i || exit 1; done; cp ${q(files + '/big2')} ${q(mnt + '/ns/big2')}`));
    const [st] = await status();
    process.kill(st.kvPid, 'SIGKILL');
    let after = st;
    await eventually(async () => ([after] = await status()) && after.state === 'degraded');
    expect(after.state).toBe('degraded');
    expect(after.problems).toContain('kv daemon not running');
    const d = await glidekv(['down', mnt], env);
    expect(d.code, d.stderr).toBe(0);
    nothingLeft();

    const r = await up('v1', mnt);
    expect(r.code, r.stderr).toBe(0);
    expect(await ok(sh(`cat ${q(mnt + '/ns/k50')} && cmp ${q(files + '/big2')} ${q(mnt + '/ns/big2')}`))).toBe('k-50\n');
    const d2 = await glidekv(['down', mnt], env);
    expect(d2.code, d2.stderr).toBe(0);
    nothingLeft();
  });

  it('kill -9 of the device daemon under a running stack: down still leaves nothing behind', async () => {
    expect((await up('v1', mnt)).code).toBe(0);
    const [st] = await status();
    process.kill(st.devicePid, 'SIGKILL');
    let problems: string[] = [];
    await eventually(async () => (problems = (await status())[0].problems).includes('device daemon not running'));
    expect(problems).toContain('device daemon not running');
    const d = await glidekv(['down', mnt], env, 180_000);
    expect(d.code, d.stderr).toBe(0);
    nothingLeft();
    expect(await status()).toEqual([]);
  });

  it('down thaws an ext4 that a killed fork left frozen, then leaves nothing behind', async () => {
    expect((await up('v1', mnt)).code).toBe(0);
    const st = (await status())[0] as Status & { ext4Mountpoint: string };
    await ok(sh(`fsfreeze -f ${q(st.ext4Mountpoint)}`));
    const d = await glidekv(['down', mnt], env);
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toContain(`thawed ${st.ext4Mountpoint}`);
    expect(d.stdout).toMatch(/kv daemon \(pid \d+\) stopped/);
    nothingLeft();
  });
});
