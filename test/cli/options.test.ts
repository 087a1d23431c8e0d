// Goal: every option given to glidekv takes effect or is refused (issue 9 item 10).
// `bench reupload --store URL` once ran against a MinIO of its own because the root
// program's global --store swallowed the subcommand's: the URL must now reach the
// bench (the result names it) wherever it is written; a bad or missing store is
// refused before anything is mounted; commands that do not use a global option
// refuse it instead of ignoring it; and no subcommand may redefine an option of an
// ancestor (checked at startup, so `glidekv --help` fails if one does).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'glidekv.mjs');
const dir = mkdtempSync(join(tmpdir(), 'glidekv-cli-options-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function glidekv(args: string[], env: Record<string, string> = {}, timeout = 60_000) {
  const clean = { ...process.env };
  delete clean.GLIDEKV_BENCH_S3_URL;
  delete clean.GLIDEKV_BENCH_MINIO_METRICS;
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...clean, ...env }, timeout });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A refusal: exit 2, exactly one line on stderr matching `re`. */
function refused(r: ReturnType<typeof glidekv>, re: RegExp) {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(re);
}

describe('glidekv options take effect or are refused', () => {
  it('starts: no subcommand redefines an option of an ancestor', () => {
    const r = glidekv(['--help']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
  });

  it('bench reupload reads --store wherever it is written, and refuses a bad one before mounting', () => {
    for (const args of [
      ['bench', 'reupload', '--values', '1', '--store', 'ftp://nowhere/x'],
      ['--store', 'ftp://nowhere/x', 'bench', 'reupload', '--values', '1'],
      ['bench', '--store', 'ftp://nowhere/x', 'reupload'],
    ]) {
      refused(glidekv(args), /^glidekv: --store: E_BAD_URL: .*'ftp:\/\/nowhere\/x'/);
    }
    refused(glidekv(['bench', 'reupload', '--store', 'file:relative/x']), /--store: E_BAD_URL: .*three slashes/);
    refused(glidekv(['bench', 'reupload', '--store', 'memory://']), /--store: a memory store lives in one process/);
  });

  it('bench reupload needs a store: --store, else GLIDEKV_BENCH_S3_URL; --store wins', () => {
    refused(glidekv(['bench', 'reupload']), /needs a store: --store URL or GLIDEKV_BENCH_S3_URL/);
    refused(glidekv(['bench', 'reupload'], { GLIDEKV_BENCH_S3_URL: 'ftp://env/x' }), /^glidekv: GLIDEKV_BENCH_S3_URL: E_BAD_URL: .*'ftp:\/\/env\/x'/);
    refused(glidekv(['bench', 'reupload', '--store', 'ftp://flag/x'], { GLIDEKV_BENCH_S3_URL: 's3://bucket-from-env/p' }), /--store: E_BAD_URL: .*'ftp:\/\/flag\/x'/);
    refused(glidekv(['bench', 'reupload', '--store', 's3://b-ok/p', '--minio-metrics', 'not a url']), /--minio-metrics: 'not a url' is not http/);
  });

  it('commands refuse the global options they would ignore', () => {
    const data = join(dir, 'kvdata');
    for (const [args, re] of [
      [['kv', 'ns', 'list', data, '--store', 'file:///tmp/x'], /--store has no effect on 'glidekv kv ns list'/],
      [['--catalog', join(dir, 'c.db'), 'kv', 'ns', 'list', data], /--catalog has no effect on 'glidekv kv ns list'/],
      [['down', join(dir, 'mnt'), '--cache', join(dir, 'cache')], /--cache has no effect on 'glidekv down'/],
      [['status', '--store', 'file:///tmp/x'], /--store has no effect on 'glidekv status'/],
      [['bench', 'reupload', '--store', 'file:///tmp/x', '--catalog', join(dir, 'c.db')], /--catalog has no effect on 'glidekv bench reupload'/],
    ] as const) {
      refused(glidekv([...args]), re);
    }
    // Refused before anything was done.
    expect(existsSync(data)).toBe(false);
    expect(existsSync(join(dir, 'c.db'))).toBe(false);
  });
});

const canMount = process.getuid?.() === 0 && existsSync('/dev/fuse') && existsSync('/dev/loop-control');
if (!canMount) console.warn('\n!!! SKIPPING the bench reupload --store kernel test: it needs root, /dev/fuse and loop devices. !!!\n');

describe.skipIf(!canMount)('bench reupload --store through the CLI (kernel)', () => {
  it('runs against the store given on the command line (file://), not a server of its own', { timeout: 600_000 }, () => {
    const store = join(dir, 'store');
    const out = join(dir, 'out');
    const r = glidekv(
      ['bench', 'reupload', '--values', '1', '--small', '20', '--rounds', '1', '--volume-size', '128M', '--quiet',
        '--store', `file://${store}`, '--state', join(dir, 'state'), '--json', join(out, 'r.json'), '--svg', join(out, 'r.svg')],
      {},
      540_000,
    );
    expect(r.code, r.stderr).toBe(0);
    const json = JSON.parse(readFileSync(join(out, 'r.json'), 'utf8')) as { store: string; puts: { client: number; server: number | null } };
    expect(json.store).toBe(`file://${store}`);
    expect(json.puts.server).toBeNull(); // no --minio-metrics: only glidefs counts
    expect(json.puts.client).toBeGreaterThan(0);
    // Both modes wrote their objects under the given store.
    expect(readdirSync(store).sort()).toEqual(['inline', 'separated']);
    expect(r.stdout).toMatch(/PUTs: glidefs \d+/);
  });
});
