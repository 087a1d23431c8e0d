// Goal: `glidekv kv mount` behaves like a file system through the real kernel: namespaces as dirs, keys as files, one put per close, errno mapping, encoded names, 100k-key readdir, xattr revision, atomic rename, no acknowledged put lost on kill -9.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { open } from '../../src/index.js';
import { keyToName } from '../../mount/key-names.js';
import { cleanupDaemons, fuseUnavailable, KvDaemon, kvMountDirs, sh } from './kv-daemon.js';

const skipReason = fuseUnavailable();
if (skipReason) {
  console.warn(`\n!!! SKIPPING KV MOUNT KERNEL TESTS: ${skipReason}. They need root and /dev/fuse. !!!\n`);
}

const MANY = 100_000;
const LONG_KEY = Buffer.from('long-'.repeat(120)); // 600 bytes: a cut name with a hash
const q = (p: string) => `'${p.replace(/'/g, `'\\''`)}'`;

async function errCode(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
}

describe.skipIf(skipReason !== undefined)('kv mount through the kernel', () => {
  const { root, data, mnt } = kvMountDirs('glidekv-kvmount-');
  const files = join(root, 'files');
  let d: KvDaemon;

  beforeAll(async () => {
    mkdirSync(mnt);
    mkdirSync(files);
    // Populate before mounting, through the engine itself.
    const e = await open(data, { sync: 'none' });
    try {
      await e.createNamespace('seed');
      await e.put('seed', Buffer.from('photos/cat'), 'meow');
      await e.put('seed', Buffer.from('.'), 'dot');
      await e.put('seed', Buffer.from('100%'), 'percent');
      await e.put('seed', Buffer.of(0x61, 0xff, 0x00, 0x62), 'binary');
      await e.put('seed', LONG_KEY, 'long');
      await e.createNamespace('many');
      const value = Buffer.from('v');
      for (let i = 0; i < MANY; i += 2000) {
        const ops = [];
        for (let j = i; j < i + 2000; j++) ops.push({ type: 'put' as const, key: `k${String(j).padStart(6, '0')}`, value });
        await e.batch('many', ops);
      }
      await e.sync();
    } finally {
      await e.close();
    }
    d = await KvDaemon.start(data, mnt, ['--max-value-size', '8M']);
    expect(d.lines[0]).toBe(`glidekv: kv mounted ${data} at ${mnt} (pid ${d.pid})`);
  });


  it('lists namespaces at / ; mkdir creates one, rmdir drops an empty one', async () => {
    expect((await fsp.readdir(mnt)).sort()).toEqual(['many', 'seed']);
    await fsp.mkdir(join(mnt, 'photos'));
    expect((await fsp.readdir(mnt)).sort()).toEqual(['many', 'photos', 'seed']);
    expect((await fsp.stat(join(mnt, 'photos'))).isDirectory()).toBe(true);
    expect(await errCode(fsp.mkdir(join(mnt, 'photos')))).toBe('EEXIST');
    expect(await errCode(fsp.rmdir(join(mnt, 'seed')))).toBe('ENOTEMPTY');
    await fsp.rmdir(join(mnt, 'photos'));
    expect(await errCode(fsp.stat(join(mnt, 'photos')))).toBe('ENOENT');
    expect(await errCode(fsp.readFile(join(mnt, 'nope', 'k')))).toBe('ENOENT');
    expect(await errCode(fsp.writeFile(join(mnt, 'nope', 'k'), 'x'))).toBe('ENOENT');
    expect(await errCode(fsp.mkdir(join(mnt, 'seed', 'sub')))).toBe('EPERM');
  });

  it('cp in, cat out; stat has the size and mtime of the record; one put per close', async () => {
    await fsp.mkdir(join(mnt, 'a'));
    writeFileSync(join(files, 'small'), 'hello world\n');
    const t0 = Date.now();
    let r = await sh(`cp ${q(join(files, 'small'))} ${q(join(mnt, 'a', 'k1'))} && cat ${q(join(mnt, 'a', 'k1'))}`);
    expect(r).toMatchObject({ code: 0, stdout: 'hello world\n' });
    const st = await fsp.stat(join(mnt, 'a', 'k1'));
    expect(st.isFile()).toBe(true);
    expect(st.size).toBe(12);
    expect(Math.abs(st.mtimeMs - t0)).toBeLessThan(60_000);
    const rev1 = Number((await sh(`getfattr --only-values -n user.glidekv.revision ${q(join(mnt, 'a', 'k1'))}`)).stdout);
    expect(rev1).toBeGreaterThan(0);
    // Overwrite with the shell (which closes a dup of the fd before writing): exactly one new revision.
    r = await sh(`echo replaced > ${q(join(mnt, 'a', 'k1'))} && cat ${q(join(mnt, 'a', 'k1'))}`);
    expect(r.stdout).toBe('replaced\n');
    const rev2 = Number((await sh(`getfattr --only-values -n user.glidekv.revision ${q(join(mnt, 'a', 'k1'))}`)).stdout);
    expect(rev2).toBe(rev1 + 1);
    // Append and truncate.
    r = await sh(`echo more >> ${q(join(mnt, 'a', 'k1'))} && truncate -s 12 ${q(join(mnt, 'a', 'k1'))} && cat ${q(join(mnt, 'a', 'k1'))}`);
    expect(r.stdout).toBe('replaced\nmor');
    // touch makes an empty key; rm deletes it.
    r = await sh(`touch ${q(join(mnt, 'a', 'empty'))} && stat -c %s ${q(join(mnt, 'a', 'empty'))}`);
    expect(r).toMatchObject({ code: 0, stdout: '0\n' });
    r = await sh(`rm ${q(join(mnt, 'a', 'empty'))} && ls ${q(join(mnt, 'a'))}`);
    expect(r.stdout).toBe('k1\n');
    expect(await errCode(fsp.unlink(join(mnt, 'a', 'empty')))).toBe('ENOENT');
  });

  it('large files (several MiB) go through the spill file and read back identical', async () => {
    await fsp.mkdir(join(mnt, 'big'));
    writeFileSync(join(files, 'big6'), randomBytes(6 * 1024 * 1024 + 12345));
    const spill = join(data, '.glidekv-mount-spill');
    // While the file is still open (after head wrote 3 MiB), the bytes sit in a spill file inside DATA_DIR.
    const r = await sh(
      `{ head -c 3000000 ${q(join(files, 'big6'))}; ls -l ${q(spill)} >&2; } > ${q(join(mnt, 'big', 'held'))}; ` +
        `cp ${q(join(files, 'big6'))} ${q(join(mnt, 'big', 'six'))} && cmp ${q(join(files, 'big6'))} ${q(join(mnt, 'big', 'six'))} && ` +
        `head -c 3000000 ${q(join(files, 'big6'))} | cmp - ${q(join(mnt, 'big', 'held'))} && echo same`,
    );
    expect(r.stdout).toBe('same\n');
    expect(r.stderr).toMatch(/ 3000000 .* write-\d+-[0-9a-f]+\n/);
    expect((await fsp.stat(join(mnt, 'big', 'six'))).size).toBe(6 * 1024 * 1024 + 12345);
    expect(await fsp.readdir(spill)).toEqual([]); // removed after commit
  });

  it('concurrent writers to different keys each get their own bytes', async () => {
    await fsp.mkdir(join(mnt, 'conc'));
    const n = 8;
    for (let i = 0; i < n; i++) writeFileSync(join(files, `c${i}`), randomBytes(512 * 1024 + i * 200_000));
    const cps = Array.from({ length: n }, (_, i) => `cp ${q(join(files, `c${i}`))} ${q(join(mnt, 'conc', `c${i}`))} &`).join(' ');
    const r = await sh(`${cps} wait; for i in $(seq 0 ${n - 1}); do cmp ${q(files)}/c$i ${q(join(mnt, 'conc'))}/c$i || exit 1; done; echo ok`);
    expect(r).toMatchObject({ code: 0, stdout: 'ok\n' });
    expect((await fsp.readdir(join(mnt, 'conc'))).length).toBe(n);
  });

  it('shows keys that are not file names percent-encoded, and reads them back', async () => {
    const names = (await fsp.readdir(join(mnt, 'seed'))).sort();
    expect(names).toEqual(['%2E', '100%25', 'a%FF%00b', keyToName(LONG_KEY), 'photos%2Fcat'].sort());
    expect(keyToName(LONG_KEY)).toMatch(/%~[0-9a-f]{32}$/);
    let r = await sh(`cd ${q(join(mnt, 'seed'))} && cat photos%2Fcat %2E 100%25 a%FF%00b ${keyToName(LONG_KEY)}`);
    expect(r).toMatchObject({ code: 0, stdout: 'meowdotpercentbinarylong' });
    // A name written through the mount stands for its decoded key.
    r = await sh(`echo -n x > ${q(join(mnt, 'seed', 'new%2Fkey'))} && cat ${q(join(mnt, 'seed', 'new%2Fkey'))}`);
    expect(r).toMatchObject({ code: 0, stdout: 'x' });
    // Names that are not canonical encodings of any key are refused.
    expect(await errCode(fsp.writeFile(join(mnt, 'seed', 'bad%zz'), 'x'))).toBe('EINVAL');
    expect(await errCode(fsp.writeFile(join(mnt, 'seed', '50%'), 'x'))).toBe('EINVAL');
    expect(await errCode(fsp.readFile(join(mnt, 'seed', 'photos%2fcat')))).toBe('ENOENT');
    await fsp.unlink(join(mnt, 'seed', 'new%2Fkey'));
  });

  it('maps errors: EFBIG over --max-value-size, EXDEV across namespaces, setxattr ENOTSUP', async () => {
    await fsp.mkdir(join(mnt, 'err'));
    writeFileSync(join(files, 'nine'), randomBytes(9 * 1024 * 1024));
    let r = await sh(`cp ${q(join(files, 'nine'))} ${q(join(mnt, 'err', 'nine'))}`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/File too large/);
    await fsp.writeFile(join(mnt, 'err', 'k'), 'v');
    expect(await errCode(fsp.rename(join(mnt, 'err', 'k'), join(mnt, 'a', 'k')))).toBe('EXDEV');
    // mv falls back to copy + delete.
    r = await sh(`mv ${q(join(mnt, 'err', 'k'))} ${q(join(mnt, 'a', 'moved'))} && cat ${q(join(mnt, 'a', 'moved'))}`);
    expect(r).toMatchObject({ code: 0, stdout: 'v' });
    expect(await errCode(fsp.stat(join(mnt, 'err', 'k')))).toBe('ENOENT');
    r = await sh(`setfattr -n user.glidekv.revision -v 1 ${q(join(mnt, 'a', 'moved'))}`);
    expect(r.stderr).toMatch(/Operation not supported/);
    expect(await errCode(fsp.link(join(mnt, 'a', 'moved'), join(mnt, 'a', 'hard')))).toBe('EPERM');
  });

  it('exposes the revision as a read-only xattr user.glidekv.revision', async () => {
    await fsp.writeFile(join(mnt, 'a', 'x'), 'one');
    const r = await sh(`getfattr -d -m - ${q(join(mnt, 'a', 'x'))}`);
    const m = /user\.glidekv\.revision="(\d+)"/.exec(r.stdout);
    expect(m).not.toBeNull();
    const list = await sh(`getfattr -m - ${q(join(mnt, 'a', 'x'))}`);
    expect(list.stdout).toContain('user.glidekv.revision');
    await fsp.writeFile(join(mnt, 'a', 'x'), 'two');
    const again = await sh(`getfattr --only-values -n user.glidekv.revision ${q(join(mnt, 'a', 'x'))}`);
    expect(Number(again.stdout)).toBeGreaterThan(Number(m![1]));
    const none = await sh(`getfattr --only-values -n user.other ${q(join(mnt, 'a', 'x'))}`);
    expect(none.stderr).toMatch(/No such attribute/);
  });

  it('renames within a namespace atomically: one batch, one revision, source gone, target replaced', async () => {
    // (Through the kernel a rename cannot be watched half-done: the VFS locks the directory
    // against readdir/lookup while it runs. So the test checks the engine: one revision.)
    await fsp.mkdir(join(mnt, 'ren'));
    const dir = q(join(mnt, 'ren'));
    await fsp.writeFile(join(mnt, 'ren', 'target'), 'old');
    await fsp.writeFile(join(mnt, 'ren', 'A'), 'payload');
    const rev = async (name: string) => Number((await sh(`getfattr --only-values -n user.glidekv.revision ${dir}/${name}`)).stdout);
    const before = await rev('A');
    const r = await sh(`mv ${dir}/A ${dir}/target && cat ${dir}/target && ls ${dir}`);
    expect(r.stdout).toBe('payloadtarget\n');
    // delete A + put target were one batch: exactly one new revision.
    expect(await rev('target')).toBe(before + 1);
    // Renames back and forth keep the value and never leave both or neither.
    const flips = await sh(`cd ${dir} && for i in $(seq 1 20); do mv target B && mv B target || exit 1; done; ls; cat target`);
    expect(flips.stdout).toBe('target\npayload');
    expect(await rev('target')).toBe(before + 41);
  });

  it('an open file follows its rename; an unlinked open file never comes back', async () => {
    await fsp.mkdir(join(mnt, 'open'));
    const py = [
      'import os,sys',
      'os.chdir(sys.argv[1])',
      "f=open('A','w'); f.write('1'); f.flush(); os.rename('A','B'); f.write('2'); f.close()",
      // libfuse2 with hard_remove: I/O on an unlinked open file fails (ENOENT); the key stays deleted.
      "g=open('C','w'); g.write('x'); g.flush(); os.unlink('C')",
      'try:\n  g.write(\'y\'); g.close()\nexcept OSError as e:\n  print(e.strerror)',
      "h=open('B','a'); h.write('3'); h.flush(); h.write('4'); h.close()",
      "print(sorted(os.listdir('.')), open('B').read())",
    ].join('\n');
    const r = await sh(`python3 -c ${q(py)} ${q(join(mnt, 'open'))}`);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe("No such file or directory\n['B'] 1234\n");
  });

  it(`lists ${MANY.toLocaleString('en')} keys with ls, quickly`, async () => {
    const t = Date.now();
    const r = await sh(`ls ${q(join(mnt, 'many'))} | wc -l; ls ${q(join(mnt, 'many'))} | head -2`);
    const ms = Date.now() - t;
    expect(r.stdout).toBe(`${MANY}\nk000000\nk000001\n`);
    expect(ms).toBeLessThan(30_000);
    const st = await sh(`stat -c '%s %i' ${q(join(mnt, 'many', 'k099999'))}; stat -f -c '%l' ${q(mnt)}`);
    expect(st.stdout).toMatch(/^1 \d+\n255\n$/);
  });

  it('SIGUSR2 syncs and SIGUSR1 reclaims while mounted, each announced on stdout', async () => {
    const from = d.lines.length;
    process.kill(d.pid, 'SIGUSR2');
    expect(await d.waitLine(/^glidekv: kv sync /, 30_000, from)).toMatch(/^glidekv: kv sync done in \d+ ms$/);
    process.kill(d.pid, 'SIGUSR1');
    expect(await d.waitLine(/^glidekv: kv reclaim /, 60_000, from)).toMatch(
      /^glidekv: kv reclaim done: relocated \d+ bytes, removed \d+ segments in \d+ ms$/,
    );
    // Still serving.
    expect((await sh(`cat ${q(join(mnt, 'seed', 'photos%2Fcat'))}`)).stdout).toBe('meow');
  });

  it('SIGTERM unmounts, closes the engine and exits 0; the data is in DATA_DIR', async () => {
    const ino = (await sh(`stat -c %i ${q(join(mnt, 'a', 'k1'))}`)).stdout;
    try {
      await checkStoppedAndData();
    } finally {
      // The next test needs a daemon even when this one failed.
      d = await KvDaemon.start(data, mnt);
    }
    // Inode numbers are stable across mounts.
    expect((await sh(`stat -c %i ${q(join(mnt, 'a', 'k1'))}`)).stdout).toBe(ino);
  });

  async function checkStoppedAndData(): Promise<void> {
    expect(await d.stop()).toBe(0);
    expect(d.lines.at(-1)).toBe(`glidekv: kv unmounted ${mnt}`);
    expect((await sh(`grep -c ' ${mnt} ' /proc/self/mountinfo`)).stdout.trim()).toBe('0');
    const e = await open(data);
    try {
      expect((await e.get('a', 'k1'))?.value.toString()).toBe('replaced\nmor');
      expect((await e.get('big', 'six'))?.value.length).toBe(6 * 1024 * 1024 + 12345);
      expect(await e.get('err', 'nine')).toBeUndefined();
      expect(e.stat('seed', 'new/key')).toBeUndefined();
      expect((await e.get('ren', 'target'))?.value.toString()).toBe('payload');
      expect(e.stat('ren', 'A')).toBeUndefined();
    } finally {
      await e.close();
    }
  }

  it('kill -9 of the daemon loses no put acknowledged by close', async () => {
    await fsp.mkdir(join(mnt, 'crash'));
    writeFileSync(join(files, 'c3'), randomBytes(3 * 1024 * 1024));
    const r = await sh(
      `cp ${q(join(files, 'c3'))} ${q(join(mnt, 'crash', 'big'))} && ` +
        `for i in $(seq 1 20); do echo value-$i > ${q(join(mnt, 'crash'))}/k$i || exit 1; done; echo acked`,
    );
    expect(r.stdout).toBe('acked\n');
    await d.kill9();
    const e = await open(data);
    try {
      const big = await e.get('crash', 'big');
      expect(big?.value.equals(await fsp.readFile(join(files, 'c3')))).toBe(true);
      for (let i = 1; i <= 20; i++) expect((await e.get('crash', `k${i}`))?.value.toString()).toBe(`value-${i}\n`);
    } finally {
      await e.close();
    }
  });
});

describe.skipIf(skipReason !== undefined)('kv mount daemon lifecycle', () => {
  const { root, data, mnt } = kvMountDirs('glidekv-kvmount-life-');


  it('exits 0 and releases DATA_DIR when its mount is unmounted from outside; refuses a busy mount point', async () => {
    mkdirSync(mnt);
    const d = await KvDaemon.start(data, mnt);
    // A second daemon on the same mount point (or DATA_DIR) fails with one line.
    const second = await sh(`node ${q(join(process.cwd(), 'bin', 'glidekv.mjs'))} kv mount ${q(join(root, 'other'))} ${q(mnt)}`);
    expect(second.code).toBe(1);
    expect(second.stderr).toMatch(/^glidekv: .*already a mount point.*\n$/);
    await fsp.mkdir(join(mnt, 'ns'));
    await fsp.writeFile(join(mnt, 'ns', 'k'), 'v');
    expect((await sh(`fusermount -u ${q(mnt)}`)).code).toBe(0);
    const exit = await Promise.race([d.waitExit(), new Promise((r) => setTimeout(() => r('still running'), 60_000))]);
    expect(exit).toBe(0);
    expect(d.lines.at(-1)).toBe(`glidekv: kv unmounted ${mnt} (the mount went away)`);
    const e = await open(data);
    try {
      expect((await e.get('ns', 'k'))?.value.toString()).toBe('v');
    } finally {
      await e.close();
    }
  });
});

describe.skipIf(skipReason !== undefined)('kv mount commit errors', () => {
  const root = mkdtempSync(join(tmpdir(), 'glidekv-kvmount-full-'));

  afterAll(async () => {
    await cleanupDaemons();
    for (const sub of ['sep', 'inline']) {
      await sh(`fusermount -u -z ${q(join(root, sub, 'mnt'))} 2>/dev/null; umount -l ${q(join(root, sub, 'data'))} 2>/dev/null; true`);
    }
    rmSync(root, { recursive: true, force: true });
  });

  /** A KV daemon on a 4 MiB tmpfs; a 6 MiB cp cannot fit and must fail at close, leaving no key. */
  async function fillUp(sub: string, flags: string[]) {
    const data = join(root, sub, 'data');
    const mnt = join(root, sub, 'mnt');
    mkdirSync(data, { recursive: true });
    mkdirSync(mnt, { recursive: true });
    const m = await sh(`mount -t tmpfs -o size=4m glidekv-test ${q(data)}`);
    expect(m.code, m.stderr).toBe(0);
    // No spill (threshold above the file size): the bytes reach the engine only at close.
    const d = await KvDaemon.start(data, mnt, ['--spill-threshold', '64M', '--sync', 'always', ...flags]);
    await fsp.mkdir(join(mnt, 'ns'));
    const src = join(root, sub, 'six');
    writeFileSync(src, randomBytes(6 * 1024 * 1024));
    const r = await sh(`cp ${q(src)} ${q(join(mnt, 'ns', 'too-big-for-disk'))}`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/failed to close .*: No space left on device/);
    const ls = await sh(`ls ${q(join(mnt, 'ns'))}`);
    expect(ls.stdout).toBe('');
    expect(d.stderr).toMatch(/commit of ns\/too-big-for-disk failed: E_IO/);
    writeFileSync(join(root, sub, 'small'), 'x');
    const again = await sh(`cp ${q(join(root, sub, 'small'))} ${q(join(mnt, 'ns', 'small'))}`);
    return { d, again, mnt };
  }

  it('a separated value that does not fit fails cp with ENOSPC, and the engine keeps working', async () => {
    // The blob write fails before any pointer is appended: a clean failure, not a poisoned log.
    const { d, again, mnt } = await fillUp('sep', []);
    expect(again.code, again.stderr).toBe(0);
    expect(readFileSync(join(mnt, 'ns', 'small'), 'utf8')).toBe('x');
    expect(await d.stop()).toBeLessThanOrEqual(1);
  });

  it('an inline value that does not fit fails cp, and later writes get EROFS (poisoned log)', async () => {
    // With separation off the append itself hits ENOSPC: the engine refuses writes until reopened.
    const { d, again } = await fillUp('inline', ['--value-threshold', '0']);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/Read-only file system/);
    expect(await d.stop()).toBeLessThanOrEqual(1);
  });
});
