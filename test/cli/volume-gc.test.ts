// Issue 9 items 15, 16, 18 through the command line: a failed command changes nothing (bad
// names, sizes, URLs, unknown volumes in a new environment create no catalog, cache or store
// dir); `volume create --size 20T` is refused naming the limit; `gc --dry-run` lists what gc
// would delete with sizes (and --json), and gc counts only what it deleted.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = mkdtempSync(join(tmpdir(), 'glidekv-cli-gc-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function envFor(dir: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: dir,
    GLIDEKV_STORE: pathToFileURL(join(dir, 'objects')).href,
    GLIDEKV_CATALOG: join(dir, 'catalog.db'),
    GLIDEKV_CACHE: join(dir, 'cache'),
  };
}

function glidekv(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['bin/glidekv.mjs', ...args], { env }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('a failed command changes nothing', () => {
  it('bad names, sizes, URLs and unknown volumes in a new environment create no catalog, cache or store dir', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['volume', 'create', 'a/b', '--size', '1M'], /E_BAD_NAME/],
      [['volume', 'create', 'big', '--size', '20T'], /E_BAD_SIZE: .*limit of 8796093022208 bytes \(8T\)/],
      [['volume', 'create', 'huge', '--size', '500T'], /E_BAD_SIZE: .*8T/],
      [['volume', 'create', 'odd', '--size', '1000'], /multiple of 128K/],
      [['--store', 'ftp://x/y', 'volume', 'create', 'ok', '--size', '1M'], /E_BAD_URL/],
      [['volume', 'fork', 'nosuch', 'x/y'], /E_BAD_NAME/],
      [['volume', 'fork', 'nosuch', 'copy'], /E_NO_VOLUME/],
      [['volume', 'snapshot', 'nosuch', 'snap'], /E_NO_VOLUME/],
      [['volume', 'delete', 'nosuch'], /E_NO_VOLUME/],
      [['volume', 'flush', 'nosuch'], /E_NO_VOLUME/],
      [['volume', 'stats', 'nosuch'], /E_NO_VOLUME/],
      [['volume', 'read', 'nosuch'], /E_NO_VOLUME/],
    ];
    const one = async ([args, re]: [string[], RegExp], n: number) => {
      const dir = join(root, `fresh-${n}`);
      mkdirSync(dir);
      const r = await glidekv(args, envFor(dir));
      expect(r.code, args.join(' ')).not.toBe(0);
      const lines = r.stderr.trimEnd().split('\n').filter((l) => !l.startsWith('(run with --help'));
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(re);
      expect(readdirSync(dir), args.join(' ')).toEqual([]);
    };
    // independent: three at a time (each is a process start on a shared, loaded machine)
    for (let i = 0; i < cases.length; i += 3) await Promise.all(cases.slice(i, i + 3).map((c, j) => one(c, i + j)));
  }, 600_000);
});

describe('one catalog per store, through the CLI', () => {
  it("a second catalog on the store is refused for writes and gc in one line, and leaves no catalog or cache behind", async () => {
    const dir = join(root, 'owned');
    mkdirSync(dir);
    const a = envFor(dir);
    const r0 = await glidekv(['volume', 'create', 'v', '--size', '1M'], a);
    expect(r0.stderr).toBe('');
    const storeFiles = () => readdirSync(join(dir, 'objects'), { recursive: true }).map(String).sort();
    const files = storeFiles();
    expect(files).toContain('glidekv-store.json');
    const b = { ...a, GLIDEKV_CATALOG: join(dir, 'b', 'catalog.db'), GLIDEKV_CACHE: join(dir, 'b', 'cache') };
    mkdirSync(join(dir, 'b'));
    for (const args of [['volume', 'create', 'w', '--size', '1M'], ['gc'], ['gc', '--dry-run']]) {
      const r = await glidekv(args, b);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr).toMatch(/^glidekv: E_STORE_OWNED: store file:\/\/.* belongs to store id [0-9a-f-]{36}; catalog .*b\/catalog.db has no store id/);
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(readdirSync(join(dir, 'b')), args.join(' ')).toEqual([]);
    }
    expect(storeFiles()).toEqual(files);
  }, 600_000);
});

describe('glidekv gc', () => {
  it('--dry-run lists what gc would delete with sizes and deletes nothing; gc deletes and counts it', async () => {
    const dir = join(root, 'gc');
    mkdirSync(dir);
    const env = envFor(dir);
    const ok = async (args: string[]) => {
      const r = await glidekv(args, env);
      expect(r.stderr, args.join(' ')).toBe('');
      expect(r.code).toBe(0);
      return r.stdout;
    };
    await ok(['volume', 'create', 'v', '--size', '1M']);
    writeFileSync(join(dir, 'in.bin'), Buffer.alloc(200_000, 3));
    await ok(['volume', 'write', 'v', '--from', join(dir, 'in.bin'), '--flush']);
    // an orphan a crashed flush left an hour ago, and one written just now (maybe in flight)
    const oldKey = `blocks/5/${'ab'.repeat(16)}`;
    const youngKey = `blocks/6/${'cd'.repeat(16)}`;
    for (const [k, n] of [[oldKey, 1000], [youngKey, 500]] as const) {
      mkdirSync(join(dir, 'objects', ...k.split('/').slice(0, -1)), { recursive: true });
      writeFileSync(join(dir, 'objects', ...k.split('/')), Buffer.alloc(n, 1));
    }
    const hourAgo = new Date(Date.now() - 3600_000);
    utimesSync(join(dir, 'objects', ...oldKey.split('/')), hourAgo, hourAgo);

    const text = await ok(['gc', '--dry-run']);
    expect(text).toContain(`would delete ${oldKey}  1000 bytes  (orphan, written ${hourAgo.toISOString().slice(0, 16)}`);
    expect(text).toMatch(/gc \(dry run\): would delete 0 unreferenced objects and 1 orphans \(1000 bytes\), 0 log records; 1 unnamed object\(s\) younger than 900s left alone\n$/);
    const dry = JSON.parse(await ok(['gc', '--dry-run', '--json']));
    expect(dry).toMatchObject({ dryRun: true, orphansDeleted: 1, deletedBytes: 1000, youngSkipped: 1, items: [{ key: oldKey, size: 1000, kind: 'orphan' }] });
    expect(existsSync(join(dir, 'objects', ...oldKey.split('/')))).toBe(true);

    const real = JSON.parse(await ok(['gc', '--json']));
    expect(real).toMatchObject({ dryRun: false, deletedObjects: 0, orphansDeleted: 1, deletedBytes: 1000, youngSkipped: 1, failed: 0 });
    expect(existsSync(join(dir, 'objects', ...oldKey.split('/')))).toBe(false);
    expect(existsSync(join(dir, 'objects', ...youngKey.split('/')))).toBe(true);
    // nothing left to delete: a second run counts nothing
    expect(await ok(['gc'])).toMatch(/^gc: deleted 0 unreferenced objects and 0 orphans \(0 bytes\), 0 log records; 1 unnamed/);
    expect(JSON.parse(await ok(['gc', '--grace', '0s', '--json']))).toMatchObject({ orphansDeleted: 1, deletedBytes: 500 });
    expect((await glidekv(['gc', '--grace', 'soon'], env)).stderr).toMatch(/not a duration/);
    const v = JSON.parse(await ok(['volume', 'stats', 'v', '--json']));
    expect(v).toMatchObject({ blocks: 2 });
  }, 600_000);
});
