// Goal: bad input at the command line ends in one line `glidekv: ...` that names the problem, a non-zero exit,
// no credential in the output, and nothing changed: bad URLs, an unreachable store, wrong credentials, a catalog,
// cache or data directory of a newer format, names/sizes/offsets out of range, too few file descriptors (ulimit -n),
// and (root) a full disk under the cache directory.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { BIN, glidekv, q, sh } from '../mount/device-helpers.js';

const root = mkdtempSync(join(tmpdir(), 'glidekv-badinput-'));
const env = (name: string): Record<string, string> => ({
  GLIDEKV_STORE: `file://${join(root, name, 'objects')}`,
  GLIDEKV_CATALOG: join(root, name, 'catalog.db'),
  GLIDEKV_CACHE: join(root, name, 'cache'),
});

/** One line on stderr, starting `glidekv: `, matching `re`; exit code not 0; no secret anywhere. */
function oneLine(r: { code: number; stdout: string; stderr: string }, re: RegExp, secrets: string[] = []): void {
  expect(r.code, r.stderr).not.toBe(0);
  const err = r.stderr.trimEnd();
  expect(err.split('\n'), err).toHaveLength(1);
  expect(err).toMatch(/^glidekv: \S/);
  expect(err).toMatch(re);
  for (const s of secrets) expect(r.stdout + r.stderr).not.toContain(s);
}

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

describe('bad input at the command line', () => {
  it('too few file descriptors (ulimit -n 30): one line, exit 1, before anything is opened', async () => {
    const r = await sh(`ulimit -n 30; exec ${q(process.execPath)} ${q(BIN)} volume create v --size 1M`, { env: env('ulimit') });
    oneLine(r, /open-file limit \(ulimit -n\) is 30; glidekv needs at least 64$/);
    const list = await glidekv(['volume', 'list'], env('ulimit'));
    expect(list.stdout.trim()).toBe('no volumes');
  });

  it('bad store URLs: one line each, nothing created', async () => {
    for (const [url, re] of [
      ['s3://x', /E_BAD_URL: invalid store URL 's3:\/\/x'/],
      ['http://127.0.0.1/x', /E_BAD_URL: .*unknown scheme 'http:'/],
      ['file:relative/x', /E_BAD_URL/],
      ['s3://user:secretpw@bucket/x', /E_BAD_URL/],
    ] as Array<[string, RegExp]>) {
      const r = await glidekv(['volume', 'create', 'v', '--size', '1M'], { ...env('url'), GLIDEKV_STORE: url });
      oneLine(r, re, ['secretpw']);
    }
  });

  it('an unreachable store and wrong credentials: one line, no secret, no volume', async () => {
    const m = inject('minio');
    const s3 = {
      GLIDEKV_STORE: `s3://${m.bucket}/badinput-${process.pid}`,
      AWS_REGION: m.region,
      AWS_ACCESS_KEY_ID: m.accessKeyId,
      AWS_SECRET_ACCESS_KEY: 'Wr0ngSecretValueNeverPrinted',
    };
    const denied = await glidekv(['volume', 'create', 'v', '--size', '1M'], { ...env('creds'), ...s3, AWS_ENDPOINT_URL_S3: m.endpoint });
    oneLine(denied, /E_ACCESS_DENIED: access denied to bucket/, ['Wr0ngSecretValueNeverPrinted', m.secretAccessKey]);
    const refused = await glidekv(['volume', 'create', 'v', '--size', '1M'], { ...env('creds'), ...s3, AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:1' }, 180_000);
    oneLine(refused, /E_STORE_UNREACHABLE: store unreachable at http:\/\/127\.0\.0\.1:1/, ['Wr0ngSecretValueNeverPrinted']);
    const list = await glidekv(['volume', 'list'], { ...env('creds'), ...s3, AWS_ENDPOINT_URL_S3: m.endpoint });
    expect(list.stdout.trim()).toBe('no volumes');
  }, 240_000);

  it('names, sizes and offsets out of range: one line each, the volume unchanged', async () => {
    const e = env('range');
    expect((await glidekv(['volume', 'create', 'v', '--size', '1M'], e)).code).toBe(0);
    const src = join(root, 'four');
    writeFileSync(src, 'abcd');
    oneLine(await glidekv(['volume', 'create', 'a/b', '--size', '1M'], e), /E_BAD_NAME: invalid volume name 'a\/b'/);
    oneLine(await glidekv(['volume', 'create', 'w', '--size', '0'], e), /size 0 must be a positive multiple of 128K/);
    oneLine(await glidekv(['volume', 'create', 'w', '--size', '9T'], e), /E_BAD_SIZE: .*larger than the limit/);
    oneLine(await glidekv(['volume', 'create', 'w', '--size', '1T0'], e), /'1T0' is not a size/);
    oneLine(await glidekv(['volume', 'write', 'v', '--offset', '1048574', '--from', src], e), /E_OUT_OF_RANGE: writing 4 bytes at offset 1048574 ends past the end/);
    oneLine(await glidekv(['volume', 'write', 'v', '--offset', '-1', '--from', src], e), /'-1' is not a size/);
    oneLine(await glidekv(['volume', 'read', 'v', '--offset', '1048570', '--length', '100', '--to', join(root, 'out')], e), /E_OUT_OF_RANGE/);
    oneLine(await glidekv(['volume', 'fork', 'nope', 'x'], e), /E_NO_VOLUME: no volume named 'nope'/);
    const list = await glidekv(['volume', 'list', '--json'], e);
    expect(JSON.parse(list.stdout).map((v: { name: string }) => v.name)).toEqual(['v']);
    const stats = JSON.parse((await glidekv(['volume', 'stats', 'v', '--json'], e)).stdout);
    expect(stats.dirtyBlocks).toBe(0);
  });

  it('a catalog, cache or data directory of a newer format: E_VERSION, the file unchanged', async () => {
    const e = env('newer');
    expect((await glidekv(['volume', 'create', 'v', '--size', '1M'], e)).code).toBe(0);
    const src = join(root, 'five');
    writeFileSync(src, 'hello');
    expect((await glidekv(['volume', 'write', 'v', '--offset', '0', '--from', src], e)).code).toBe(0);
    // the cache's slot table: format version at byte 8
    const slots = execFileSync('find', [e.GLIDEKV_CACHE, '-name', 'slots'], { encoding: 'utf8' }).trim();
    const before = readFileSync(slots);
    const newer = Buffer.from(before);
    newer.writeUInt32LE(99, 8);
    writeFileSync(slots, newer);
    oneLine(await glidekv(['volume', 'read', 'v', '--offset', '0', '--length', '5', '--to', join(root, 'r')], e), /E_VERSION: cache slot table .* has format version 99/);
    expect(readFileSync(slots).equals(newer)).toBe(true);
    writeFileSync(slots, before);
    // the catalog: SQLite user_version
    const db = new Database(e.GLIDEKV_CATALOG);
    db.pragma('user_version = 99');
    db.close();
    oneLine(await glidekv(['volume', 'list'], e), /E_VERSION: catalog schema version 99 is newer than this glidekv/);
    const db2 = new Database(e.GLIDEKV_CATALOG, { readonly: true });
    expect(db2.pragma('user_version', { simple: true })).toBe(99);
    db2.close();
    // an engine data directory
    const data = join(root, 'data');
    expect((await glidekv(['kv', 'ns', 'create', data, 'n'], {})).code).toBe(0);
    const meta = join(data, 'meta.json');
    const text = readFileSync(meta, 'utf8').replace('"version":1', '"version":7');
    writeFileSync(meta, text);
    oneLine(await glidekv(['kv', 'put', data, 'n', 'k', '--value', 'x'], {}), /E_VERSION: .*meta.json: format version 7/);
    expect(readFileSync(meta, 'utf8')).toBe(text);
  });

  const root0 = process.getuid?.() === 0;
  it.skipIf(!root0)('a full disk under the cache directory: one line (ENOSPC), the flushed bytes still read back', async () => {
    const fs = join(root, 'tiny');
    mkdirSync(fs);
    expect((await sh(`mount -t tmpfs -o size=3m tmpfs ${q(fs)}`)).code).toBe(0);
    try {
      const e = { ...env('full'), GLIDEKV_CACHE: join(fs, 'cache'), GLIDEKV_CACHE_SIZE: '2M' };
      const one = join(root, 'one');
      writeFileSync(one, Buffer.alloc(300_000, 7));
      expect((await glidekv(['volume', 'create', 'v', '--size', '4M'], e)).code).toBe(0);
      const w = await glidekv(['volume', 'write', 'v', '--offset', '0', '--from', one, '--flush'], e);
      expect(w.code, w.stderr).toBe(0);
      await sh(`dd if=/dev/zero of=${q(join(fs, 'fill'))} bs=64k 2>/dev/null; true`);
      const two = join(root, 'two');
      writeFileSync(two, Buffer.alloc(300_000, 9));
      oneLine(await glidekv(['volume', 'write', 'v', '--offset', '1M', '--from', two], e), /ENOSPC|no space left/i);
      rmSync(join(fs, 'fill'));
      const r = await glidekv(['volume', 'read', 'v', '--offset', '0', '--length', '300000', '--to', join(root, 'back')], e);
      expect(r.code, r.stderr).toBe(0);
      expect(readFileSync(join(root, 'back')).equals(readFileSync(one))).toBe(true);
    } finally {
      await sh(`umount -l ${q(fs)}`);
    }
  });
});
