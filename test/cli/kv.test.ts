// Goal: `glidekv kv ...` run as a real process stores, reads, lists, watches and reports exactly what
// the engine holds, and every bad input is one line on stderr, a documented exit code, and no change.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const BIN = resolve(__dirname, '../../bin/glidekv.mjs');
let tmp: string;

interface Run {
  status: number | null;
  stdout: Buffer;
  out: string;
  err: string;
}

function kv(args: string[], input?: Buffer): Run {
  const r = spawnSync(process.execPath, [BIN, 'kv', ...args], { input, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, out: r.stdout.toString('utf8'), err: r.stderr.toString('utf8') };
}

/** stderr is exactly one `glidekv: ...` line (commander may add its fixed help hint after it). */
function oneLineError(r: Run): string {
  const lines = r.err.split('\n').filter((l) => l !== '' && !l.startsWith('(run with --help'));
  expect(lines, r.err).toHaveLength(1);
  expect(lines[0]).toMatch(/^glidekv: /);
  return lines[0];
}

function ok(r: Run): Run {
  expect(r.err, r.err).toBe('');
  expect(r.status).toBe(0);
  return r;
}

/** The whole logical state of a directory: namespaces, every key's listing, the revision. */
function snapshot(dir: string): string {
  const names = JSON.parse(ok(kv(['ns', 'list', dir, '--json'])).out) as string[];
  const lists = names.map((n) => JSON.parse(ok(kv(['ls', dir, n, '--json'])).out));
  const stats = JSON.parse(ok(kv(['stats', dir, '--json'])).out);
  return JSON.stringify({ names, lists, revision: stats.revision, keys: stats.keys });
}

async function freshDir(nsNames: string[] = ['cfg']): Promise<string> {
  const dir = await mkdtemp(join(tmp, 'd-'));
  for (const n of nsNames) ok(kv(['ns', 'create', dir, n]));
  return dir;
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'glidekv-cli-kv-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('glidekv kv: round trips', () => {
  it('put prints the revision, get prints the raw value, --json adds the metadata', async () => {
    const dir = await freshDir();
    expect(ok(kv(['put', dir, 'cfg', 'mode', '--value', 'fast'])).out).toBe('1\n');
    expect(ok(kv(['put', dir, 'cfg', 'mode', '--value', 'slow ünï'])).out).toBe('2\n');
    expect(ok(kv(['get', dir, 'cfg', 'mode'])).out).toBe('slow ünï');
    const j = JSON.parse(ok(kv(['get', dir, 'cfg', 'mode', '--json'])).out);
    expect(j).toMatchObject({ key: 'mode', revision: 2, size: Buffer.byteLength('slow ünï'), value: 'slow ünï' });
    expect(typeof j.mtime).toBe('number');
    expect(j.valueEncoding).toBeUndefined();
  });

  it('binary values go in with --from FILE / --from - and out with --to FILE and raw stdout', async () => {
    const dir = await freshDir();
    const small = Buffer.from([0xff, 0x00, 0xfe, 0x0a, 0x80]);
    const big = randomBytes(300 * 1024); // above the default value threshold
    const f1 = join(dir, '..', 'small.bin');
    const f2 = join(dir, '..', 'big.bin');
    await writeFile(f1, small);
    await writeFile(f2, big);
    ok(kv(['put', dir, 'cfg', 'small', '--from', f1]));
    ok(kv(['put', dir, 'cfg', 'big', '--from', f2]));
    ok(kv(['put', dir, 'cfg', 'stdin', '--from', '-'], big.subarray(0, 1000)));
    expect(Buffer.compare(ok(kv(['get', dir, 'cfg', 'small'])).stdout, small)).toBe(0);
    expect(Buffer.compare(ok(kv(['get', dir, 'cfg', 'stdin'])).stdout, big.subarray(0, 1000))).toBe(0);
    const out = join(dir, '..', 'big.out');
    expect(ok(kv(['get', dir, 'cfg', 'big', '--to', out])).out).toBe('');
    expect(Buffer.compare(await readFile(out), big)).toBe(0);
    const j = JSON.parse(ok(kv(['get', dir, 'cfg', 'small', '--json'])).out);
    expect(j).toMatchObject({ value: small.toString('base64'), valueEncoding: 'base64', size: 5 });
  });

  it('del prints the tombstone revision; get and del of an absent key exit 4', async () => {
    const dir = await freshDir();
    ok(kv(['put', dir, 'cfg', 'a', '--value', '1']));
    expect(ok(kv(['del', dir, 'cfg', 'a'])).out).toBe('2\n');
    const g = kv(['get', dir, 'cfg', 'a']);
    expect(g.status).toBe(4);
    expect(oneLineError(g)).toMatch(/not found/);
    expect(g.out).toBe('');
    const d = kv(['del', dir, 'cfg', 'a']);
    expect(d.status).toBe(4);
    oneLineError(d);
  });

  it('keys in hex reach any byte string; ls shows them as base64', async () => {
    const dir = await freshDir();
    ok(kv(['put', dir, 'cfg', 'ff00', '--key-encoding', 'hex', '--value', 'x']));
    expect(ok(kv(['get', dir, 'cfg', '/wA=', '--key-encoding', 'base64'])).out).toBe('x');
    const ls = JSON.parse(ok(kv(['ls', dir, 'cfg', '--json'])).out);
    expect(ls.keys[0]).toMatchObject({ key: '/wA=', keyEncoding: 'base64' });
    expect(ok(kv(['ls', dir, 'cfg'])).out).toBe('base64:/wA=\n');
  });
});

describe('glidekv kv: compare-and-swap', () => {
  it('a revision mismatch exits 3, names the current revision and changes nothing', async () => {
    const dir = await freshDir();
    ok(kv(['put', dir, 'cfg', 'lock', '--value', 'me', '--if-revision', '0']));
    const before = snapshot(dir);
    const p = kv(['put', dir, 'cfg', 'lock', '--value', 'you', '--if-revision', '0']);
    expect(p.status).toBe(3);
    expect(oneLineError(p)).toMatch(/E_CAS_MISMATCH.*current revision is 1\b/);
    const d = kv(['del', dir, 'cfg', 'lock', '--if-revision', '7']);
    expect(d.status).toBe(3);
    expect(oneLineError(d)).toMatch(/current revision is 1\b/);
    expect(snapshot(dir)).toBe(before);
    expect(ok(kv(['get', dir, 'cfg', 'lock'])).out).toBe('me');
    expect(ok(kv(['put', dir, 'cfg', 'lock', '--value', 'you', '--if-revision', '1'])).out).toBe('2\n');
    expect(ok(kv(['del', dir, 'cfg', 'lock', '--if-revision', '2'])).out).toBe('3\n');
  });
});

describe('glidekv kv: bad input', () => {
  it('bad names, keys, flags and values: one line, exit 2 (usage) or 1, nothing changed', async () => {
    const dir = await freshDir();
    ok(kv(['put', dir, 'cfg', 'k', '--value', 'v']));
    const bigFile = join(dir, '..', 'toolarge.bin');
    await writeFile(bigFile, Buffer.alloc(5000));
    const before = snapshot(dir);
    const cases: Array<[string[], number, RegExp]> = [
      [['put', dir, 'a/b', 'k', '--value', 'v'], 2, /namespace name/],
      [['put', dir, '..', 'k', '--value', 'v'], 2, /namespace name/],
      [['ns', 'create', dir, 'x/y'], 2, /namespace name/],
      [['put', dir, 'cfg', '', '--value', 'v'], 2, /key is empty/],
      [['put', dir, 'cfg', 'k'.repeat(1025), '--value', 'v'], 2, /1025 bytes/],
      [['put', dir, 'cfg', 'k', '--value', 'v', '--from', bigFile], 2, /exactly one of/],
      [['put', dir, 'cfg', 'k'], 2, /exactly one of/],
      [['put', dir, 'cfg', 'k', '--value', 'v', '--bogus'], 2, /unknown option/],
      [['put', dir, 'cfg', 'k', '--value', 'v', '--sync', 'sometimes'], 2, /sometimes/],
      [['put', dir, 'cfg', 'k', '--value', 'v', '--if-revision', '-1'], 2, /-1/],
      [['put', dir, 'cfg', 'k', '--value', 'v', '--value-threshold', 'lots'], 2, /not a size/],
      [['put', dir, 'cfg', 'zz', '--key-encoding', 'hex', '--value', 'v'], 2, /not hex/],
      [['ls', dir, 'cfg', '--limit', 'ten'], 2, /non-negative integer/],
      [['watch', dir, 'cfg', '--key', 'a', '--prefix', 'b'], 2, /at most one/],
      [['put', dir, 'nope', 'k', '--value', 'v'], 1, /E_NO_NAMESPACE/],
      [['put', dir, 'cfg', 'k', '--from', bigFile, '--max-value-size', '4K'], 1, /E_VALUE_TOO_LARGE/],
      [['put', dir, 'cfg', 'k', '--value', 'x'.repeat(5000), '--max-value-size', '4K'], 1, /E_VALUE_TOO_LARGE/], // the engine's check
      [['put', dir, 'cfg', 'k', '--from', join(dir, 'missing')], 1, /no such file/],
      [['ns', 'create', dir, 'cfg'], 1, /E_NAMESPACE_EXISTS/],
    ];
    for (const [args, code, msg] of cases) {
      const r = kv(args);
      expect(r.status, args.join(' ')).toBe(code);
      expect(oneLineError(r), args.join(' ')).toMatch(msg);
      expect(r.out, args.join(' ')).toBe('');
    }
    expect(snapshot(dir)).toBe(before);
  }, 360_000); // ~30 glidekv processes: minutes on a loaded 2-core machine

  it('a missing DIR is an error and is not created (only ns create makes a directory)', async () => {
    const dir = join(tmp, 'never-made');
    for (const args of [['get', dir, 'cfg', 'k'], ['put', dir, 'cfg', 'k', '--value', 'v'], ['stats', dir, '--json'], ['ns', 'list', dir]]) {
      const r = kv(args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(oneLineError(r)).toMatch(/no such directory/);
    }
    expect(existsSync(dir)).toBe(false);
  });
});

describe('glidekv kv: ls, ns, stats, reclaim', () => {
  it('ls --json: key order, prefix, after, limit and truncated', async () => {
    const dir = await freshDir();
    for (const k of ['b/2', 'a/1', 'b/1', 'c', 'b/3']) ok(kv(['put', dir, 'cfg', k, '--value', `v-${k}`]));
    const all = JSON.parse(ok(kv(['ls', dir, 'cfg', '--json'])).out);
    expect(all.namespace).toBe('cfg');
    expect(all.truncated).toBe(false);
    expect(all.keys.map((k: { key: string }) => k.key)).toEqual(['a/1', 'b/1', 'b/2', 'b/3', 'c']);
    for (const k of all.keys) {
      expect(Object.keys(k).sort()).toEqual(['key', 'mtime', 'revision', 'size']);
      expect(k.size).toBe(`v-${k.key}`.length);
    }
    expect(all.keys.find((k: { key: string }) => k.key === 'a/1').revision).toBe(2);
    const page = JSON.parse(ok(kv(['ls', dir, 'cfg', '--prefix', 'b/', '--after', 'b/1', '--limit', '1', '--json'])).out);
    expect(page.keys.map((k: { key: string }) => k.key)).toEqual(['b/2']);
    expect(page.truncated).toBe(true);
    const last = JSON.parse(ok(kv(['ls', dir, 'cfg', '--prefix', 'b/', '--after', 'b/2', '--limit', '1', '--json'])).out);
    expect(last.keys.map((k: { key: string }) => k.key)).toEqual(['b/3']);
    expect(last.truncated).toBe(false);
    expect(ok(kv(['ls', dir, 'cfg', '--prefix', 'b/'])).out).toBe('b/1\nb/2\nb/3\n');
  });

  it('ns create/list/drop; drop of a non-empty namespace needs --force', async () => {
    const dir = await freshDir(['zeta', 'alpha']);
    expect(JSON.parse(ok(kv(['ns', 'list', dir, '--json'])).out)).toEqual(['alpha', 'zeta']);
    ok(kv(['put', dir, 'alpha', 'k', '--value', 'v']));
    const r = kv(['ns', 'drop', dir, 'alpha']);
    expect(r.status).toBe(1);
    expect(oneLineError(r)).toMatch(/E_NAMESPACE_NOT_EMPTY.*--force/);
    ok(kv(['ns', 'drop', dir, 'zeta']));
    ok(kv(['ns', 'drop', dir, 'alpha', '--force']));
    expect(ok(kv(['ns', 'list', dir])).out).toBe('');
  });

  it('stats in a later process shows lifetime counters: the bytes kv reclaim relocated, and reclaims', async () => {
    const dir = await freshDir();
    for (let i = 0; i < 2; i++) ok(kv(['put', dir, 'cfg', 'k', '--value', `value ${i}`]));
    const r1 = JSON.parse(ok(kv(['reclaim', dir, '--json'])).out);
    expect(r1.relocatedBytes).toBeGreaterThan(0);
    const s = JSON.parse(ok(kv(['stats', dir, '--json'])).out);
    expect(s.compactionBytes).toBe(r1.relocatedBytes);
    expect(s.reclaims).toBe(1); // one namespace
    const r2 = Number(/^relocated (\d+) bytes/.exec(ok(kv(['reclaim', dir])).out)![1]);
    const s2 = JSON.parse(ok(kv(['stats', dir, '--json'])).out);
    expect(s2.compactionBytes).toBe(s.compactionBytes + r2);
    expect(s2.reclaims).toBe(2);
    // this process alone (a stats process relocates nothing)
    expect(s2.compactionBytesSinceOpen).toBe(0);
    expect(s2.reclaimsSinceOpen).toBe(0);
    expect(JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')).counters).toMatchObject({
      compactionBytes: s2.compactionBytes, reclaims: 2,
    });
    expect(ok(kv(['stats', dir, '--help'])).out).toMatch(/Lifetime counters/);
  }, 240_000);

  it('orphansSwept in stats is the lifetime count: kv gc in one process, kv stats in the next', async () => {
    const dir = await freshDir();
    ok(kv(['put', dir, 'cfg', 'k', '--value', 'v']));
    const { BlobStore } = await import('../../src/blob-store.js');
    for (const n of [1, 2]) {
      const orphan = randomBytes(1500 + n);
      await writeFile(join(dir, 'values', `blob-${BlobStore.hashOf(orphan).toString('hex')}`), orphan);
      expect(JSON.parse(ok(kv(['gc', dir, '--json'])).out)).toEqual({ orphansSwept: 1 }); // this run's
    }
    const s = JSON.parse(ok(kv(['stats', dir, '--json'])).out);
    expect(s.orphansSwept).toBe(2);
    expect(s.orphansSweptSinceOpen).toBe(0);
  }, 240_000);

  it('a data directory of another format version is refused with one line, exit 1, and left as it was', async () => {
    const dir = await freshDir();
    ok(kv(['put', dir, 'cfg', 'k', '--value', 'v']));
    const metaFile = join(dir, 'meta.json');
    const m = JSON.parse(await readFile(metaFile, 'utf8'));
    await writeFile(metaFile, JSON.stringify({ ...m, version: 2 }));
    const before = await readFile(metaFile);
    for (const args of [['ls', dir, 'cfg'], ['put', dir, 'cfg', 'k', '--value', 'w'], ['reclaim', dir], ['stats', dir]]) {
      const r = kv(args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(oneLineError(r)).toMatch(/E_VERSION: .*meta\.json: format version 2, this glidekv reads version 1/);
    }
    expect((await readFile(metaFile)).equals(before)).toBe(true);
  }, 240_000);

  it('stats --json holds every counter as a number; reclaim --json reports its work', async () => {
    const dir = await freshDir();
    for (let i = 0; i < 3; i++) ok(kv(['put', dir, 'cfg', 'k', '--value', `v${i}`]));
    ok(kv(['put', dir, 'cfg', 'other', '--value', 'x']));
    const s = JSON.parse(ok(kv(['stats', dir, '--json'])).out);
    for (const f of ['keys', 'liveBytes', 'deadBytes', 'segments', 'revision', 'compactionBytes']) expect(s, f).toHaveProperty(f);
    for (const [f, v] of Object.entries(s)) expect(typeof v, f).toBe('number');
    expect(s.keys).toBe(2);
    expect(s.revision).toBe(4);
    expect(s.deadBytes).toBeGreaterThan(0);
    // the reclaim policy: the one segment is under half garbage (2 dead records of 4), so it stays
    const p = JSON.parse(ok(kv(['reclaim', dir, '--json'])).out);
    expect(p).toMatchObject({ relocatedBytes: 0, segmentsRemoved: 0 });
    // --full: every segment
    const r = JSON.parse(ok(kv(['reclaim', dir, '--full', '--json'])).out);
    expect(Object.keys(r).sort()).toEqual(['durationMs', 'relocatedBytes', 'segmentsRemoved']);
    expect(r.relocatedBytes).toBeGreaterThan(0);
    const after = JSON.parse(ok(kv(['stats', dir, '--json'])).out);
    expect(after.deadBytes).toBe(0);
    expect(after.keys).toBe(2);
    expect(ok(kv(['get', dir, 'cfg', 'k'])).out).toBe('v2');
  });

  it('--value-threshold reaches the engine (a value at or above it becomes a blob); gc removes orphan blobs', async () => {
    const dir = await freshDir();
    const file = join(tmp, 'v4k');
    const v = randomBytes(4096);
    await writeFile(file, v);
    ok(kv(['put', dir, 'cfg', 'inline', '--from', file])); // default threshold 128K: inline
    expect(JSON.parse(ok(kv(['stats', dir, '--json'])).out).blobs).toBe(0);
    ok(kv(['put', dir, 'cfg', 'big', '--from', file, '--value-threshold', '1K']));
    const s = JSON.parse(ok(kv(['stats', dir, '--json'])).out);
    expect(s.blobs).toBe(1);
    expect(s.blobBytes).toBe(4096);
    expect(ok(kv(['get', dir, 'cfg', 'big'])).stdout.equals(v)).toBe(true);
    // an orphan: a well-formed blob no pointer references (as a crash before the pointer append leaves)
    const orphan = randomBytes(2000);
    const { BlobStore } = await import('../../src/blob-store.js');
    const orphanFile = join(dir, 'values', `blob-${BlobStore.hashOf(orphan).toString('hex')}`);
    await writeFile(orphanFile, orphan);
    expect(JSON.parse(ok(kv(['gc', dir, '--json'])).out)).toEqual({ orphansSwept: 1 });
    expect(existsSync(orphanFile)).toBe(false);
    expect(ok(kv(['gc', dir])).out).toBe('removed 0 orphan blob file(s)\n');
    expect(ok(kv(['get', dir, 'cfg', 'big'])).stdout.equals(v)).toBe(true);
    expect(oneLineError(kv(['gc', join(tmp, 'no-such-dir')]))).toMatch(/no such directory/);
  });

  it('--help of each command documents arguments, examples and exit codes', () => {
    for (const cmd of [['put'], ['get'], ['del'], ['ls'], ['ns'], ['reclaim'], ['watch'], ['stats'], ['gc']]) {
      const r = ok(kv([...cmd, '--help']));
      expect(r.out, cmd.join(' ')).toMatch(/Examples:\n {2}glidekv kv /);
      expect(r.out, cmd.join(' ')).toMatch(/3 +compare-and-swap mismatch/);
    }
    expect(ok(kv(['put', '--help'])).out).toMatch(/--value-threshold <size>/);
  });
});

describe('glidekv kv watch', () => {
  // The engine locks DIR per process, so a `kv put` from another process cannot run while
  // `kv watch` holds it (checked below); events are produced first, then replayed with --from.
  it('replays history as JSON lines (UTF-8 or base64) and ends with exit 0 on SIGINT', async () => {
    const dir = await freshDir();
    ok(kv(['put', dir, 'cfg', 'a', '--value', 'one']));
    await writeFile(join(dir, '..', 'w.bin'), Buffer.from([0xc3, 0x28]));
    ok(kv(['put', dir, 'cfg', 'b', '--from', join(dir, '..', 'w.bin')]));
    ok(kv(['del', dir, 'cfg', 'a']));
    ok(kv(['put', dir, 'cfg', 'other', '--value', 'x']));
    const child = spawn(process.execPath, [BIN, 'kv', 'watch', dir, 'cfg', '--prefix', 'a', '--from', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    try {
      await new Promise<void>((res, rej) => {
        const t = setTimeout(() => rej(new Error(`watch printed: ${out} ${err}`)), 30_000);
        child.stdout.on('data', (d) => {
          out += d;
          if (out.split('\n').length > 2) {
            clearTimeout(t);
            res();
          }
        });
      });
      // While watch holds DIR, another process is refused.
      const locked = kv(['put', dir, 'cfg', 'a', '--value', 'two']);
      expect(locked.status).toBe(1);
      expect(oneLineError(locked)).toMatch(/E_LOCKED.*pid \d+/);
      child.kill('SIGINT');
      expect(await exited).toBe(0);
    } finally {
      child.kill('SIGKILL');
    }
    expect(err).toBe('');
    expect(out.trim().split('\n').map((l) => JSON.parse(l))).toEqual([
      { type: 'put', key: 'a', revision: 1, value: 'one' },
      { type: 'delete', key: 'a', revision: 3 },
    ]);
    const all = ok(kv(['watch', dir, 'cfg', '--from', '2', '--count', '3'])).out.trim().split('\n').map((l) => JSON.parse(l));
    expect(all).toEqual([
      { type: 'put', key: 'b', revision: 2, value: Buffer.from([0xc3, 0x28]).toString('base64'), valueEncoding: 'base64' },
      { type: 'delete', key: 'a', revision: 3 },
      { type: 'put', key: 'other', revision: 4, value: 'x' },
    ]);
    const one = ok(kv(['watch', dir, 'cfg', '--key', 'other', '--from', '1', '--count', '1'])).out;
    expect(JSON.parse(one)).toEqual({ type: 'put', key: 'other', revision: 4, value: 'x' });
  });
});
