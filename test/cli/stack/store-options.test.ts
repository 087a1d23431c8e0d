// Goal: a store URL that would silently mean something else is refused by the CLI in one line, with a non-zero exit, before anything is created (issue 9 item 14): `--store ""` (was: the default store under $HOME), `--store file:relative/x` (was: a store at /relative/x), and the same for --catalog/--cache "".
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { glidekv } from '../../mount/device-helpers.js';

describe('glidekv --store / --catalog / --cache refusals', () => {
  const home = mkdtempSync(join(tmpdir(), 'glidekv-storeopt-'));
  // No GLIDEKV_* variables: the defaults would live under this HOME.
  const env = { HOME: home, GLIDEKV_STORE: '', GLIDEKV_CATALOG: '', GLIDEKV_CACHE: '', GLIDEKV_RUN: '' };
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  it.each([
    [['--store', ''], /^glidekv: --store is empty: give a store URL, or leave the option out for the default$/],
    [['--store', '   '], /^glidekv: --store is empty/],
    [['--catalog', ''], /^glidekv: --catalog is empty/],
    [['--cache', ''], /^glidekv: --cache is empty/],
  ])('%j is refused with one line, exit 2, nothing created under $HOME', async (opt, line) => {
    const r = await glidekv([...opt, 'volume', 'create', 'v', '--size', '1M'], env);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(line);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(readdirSync(home)).toEqual([]);
  });

  it('file:RELATIVE is refused, and nothing is written at the filesystem root', async () => {
    const name = `glidekv-test-${randomBytes(4).toString('hex')}`;
    try {
      const r = await glidekv(['--store', `file:${name}/x`, '--catalog', join(home, 'c.db'), '--cache', join(home, 'cache'), 'volume', 'create', 'v', '--size', '1M'], env);
      expect(r.code).toBe(1);
      expect(r.stderr.trim()).toBe(
        `glidekv: E_BAD_URL: invalid store URL 'file:${name}/x' (a file URL is file:///absolute/path (three slashes)): use s3://BUCKET[/PREFIX], file:///ABSOLUTE/PATH or memory://`,
      );
      expect(existsSync(`/${name}`)).toBe(false);
    } finally {
      rmSync(`/${name}`, { recursive: true, force: true });
    }
  });

  it('a URL with credentials is refused without printing them', async () => {
    const r = await glidekv(['--store', 's3://AKIAEXAMPLE:topsecretvalue@bucket/p', 'volume', 'list'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('credentials do not belong in the URL');
    expect(r.stderr + r.stdout).not.toContain('topsecretvalue');
    expect(r.stderr + r.stdout).not.toContain('AKIAEXAMPLE');
  });
});
