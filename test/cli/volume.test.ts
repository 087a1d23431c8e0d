// Goal: the `glidekv volume`/`gc` commands work end to end, and every bad input is one line on stderr, a non-zero exit, and no change.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, inject, it } from 'vitest';

const root = mkdtempSync(join(tmpdir(), 'glidekv-cli-vol-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const baseEnv = {
  PATH: process.env.PATH ?? '/usr/bin:/bin',
  HOME: root,
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  GLIDEKV_STORE: pathToFileURL(join(root, 'objects')).href,
  GLIDEKV_CATALOG: join(root, 'catalog.db'),
  GLIDEKV_CACHE: join(root, 'cache'),
};

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function glidekv(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['bin/glidekv.mjs', ...args], { env: { ...baseEnv, ...env }, maxBuffer: 64 << 20, encoding: 'buffer' }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout: stdout.toString('latin1'), stderr: stderr.toString() });
    });
  });
}

async function ok(args: string[], env?: Record<string, string>): Promise<string> {
  const r = await glidekv(args, env);
  expect(r.stderr, args.join(' ')).toBe('');
  expect(r.code, args.join(' ')).toBe(0);
  return r.stdout;
}

/** A failing command: non-zero exit, exactly one stderr line `glidekv: ...` matching `re`. */
async function fails(args: string[], re: RegExp, env?: Record<string, string>): Promise<string> {
  const r = await glidekv(args, env);
  expect(r.code, args.join(' ')).not.toBe(0);
  // usage errors may add commander's '(run with --help for usage)' hint line
  const lines = r.stderr.trimEnd().split('\n').filter((l) => !l.startsWith('(run with --help'));
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^glidekv: /);
  expect(lines[0]).toMatch(re);
  return lines[0];
}

describe('glidekv volume', () => {
  it('creates, writes, flushes, reads, forks, snapshots, reports stats, collects garbage and deletes', async () => {
    expect(JSON.parse(await ok(['volume', 'create', 'data', '--size', '1M', '--json']))).toMatchObject({ name: 'data', sizeBytes: 1048576, parent: null, snapshot: false });
    const bytes = Buffer.alloc(300_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff;
    writeFileSync(join(root, 'in.bin'), bytes);
    const w = JSON.parse(await ok(['volume', 'write', 'data', '--offset', '1000', '--from', join(root, 'in.bin'), '--json']));
    expect(w).toMatchObject({ bytes: 300_000, dirtyBlocks: 3 });
    const f = JSON.parse(await ok(['volume', 'flush', 'data', '--json']));
    expect(f).toMatchObject({ uploads: 3, reuploads: 0 });
    await ok(['volume', 'read', 'data', '--offset', '1000', '--length', '300000', '--to', join(root, 'out.bin')]);
    expect(readFileSync(join(root, 'out.bin')).equals(bytes)).toBe(true);
    const head = await glidekv(['volume', 'read', 'data', '--offset', '0', '--length', '1004']);
    expect(head.stdout).toBe('\0'.repeat(1000) + bytes.subarray(0, 4).toString('latin1'));
    await ok(['volume', 'fork', 'data', 'copy']);
    await ok(['volume', 'snapshot', 'data', 'snap']);
    const list = JSON.parse(await ok(['volume', 'list', '--json']));
    expect(list.map((v: { name: string }) => v.name)).toEqual(['copy', 'data', 'snap']);
    expect(list.find((v: { name: string }) => v.name === 'snap')).toMatchObject({ parent: 'data', snapshot: true });
    const stats = JSON.parse(await ok(['volume', 'stats', 'copy', '--json']));
    for (const k of ['uploads', 'uploadedBytes', 'reuploads', 'skippedUnchanged', 'sharedBlocks', 'gets', 'deletes', 'blocks', 'objects']) {
      expect(typeof stats[k], k).toBe('number');
    }
    expect(stats).toMatchObject({ uploads: 0, sharedBlocks: 3, blocks: 3, objects: 3 });
    expect(JSON.parse(await ok(['volume', 'stats', 'data', '--json', '--offsets'])).uploadsPerOffset).toEqual([
      { blockIndex: 0, uploads: 1 },
      { blockIndex: 1, uploads: 1 },
      { blockIndex: 2, uploads: 1 },
    ]);
    expect(JSON.parse(await ok(['gc', '--json']))).toMatchObject({ deletedObjects: 0, orphansDeleted: 0, dryRun: false, items: [] });
    for (const n of ['copy', 'snap', 'data']) await ok(['volume', 'delete', n]);
    expect(JSON.parse(await ok(['volume', 'list', '--json']))).toEqual([]);
    expect((await glidekv(['volume', '--help'])).stdout).toMatch(/Examples:/);
  });

  it('refuses bad input with one line and a non-zero exit, changing nothing', async () => {
    await ok(['volume', 'create', 'v', '--size', '512K']);
    await ok(['volume', 'snapshot', 'v', 's']);
    writeFileSync(join(root, 'small.bin'), Buffer.alloc(4096, 1));
    writeFileSync(join(root, 'big.bin'), Buffer.alloc(600 * 1024, 1));
    const before = await ok(['volume', 'list', '--json']);
    const cases: Array<[string[], RegExp]> = [
      [['volume', 'stats', 'nope'], /E_NO_VOLUME/],
      [['volume', 'write', 'nope', '--from', join(root, 'small.bin')], /E_NO_VOLUME/],
      [['volume', 'read', 'nope', '--length', '1'], /E_NO_VOLUME/],
      [['volume', 'flush', 'nope'], /E_NO_VOLUME/],
      [['volume', 'delete', 'nope'], /E_NO_VOLUME/],
      [['volume', 'fork', 'nope', 'x'], /E_NO_VOLUME/],
      [['volume', 'create', 'v', '--size', '1M'], /E_VOLUME_EXISTS/],
      [['volume', 'create', 'z', '--size', '0'], /multiple of 128K/],
      [['volume', 'create', 'z', '--size', '100K'], /multiple of 128K/],
      [['volume', 'create', 'z', '--size', 'lots'], /not a size/],
      [['volume', 'create', 'bad/name', '--size', '1M'], /E_BAD_NAME/],
      [['volume', 'write', 'v', '--offset', '510K', '--from', join(root, 'small.bin')], /E_OUT_OF_RANGE/],
      [['volume', 'write', 'v', '--from', join(root, 'big.bin')], /E_OUT_OF_RANGE/],
      [['volume', 'write', 'v', '--from', join(root, 'missing.bin')], /ENOENT/],
      [['volume', 'read', 'v', '--offset', '512K', '--length', '1'], /E_OUT_OF_RANGE/],
      [['volume', 'read', 'v', '--offset', '600K'], /E_OUT_OF_RANGE/],
      [['volume', 'write', 's', '--from', join(root, 'small.bin')], /E_READ_ONLY/],
      [['volume', 'fork', 'v', 's'], /E_VOLUME_EXISTS/],
      [['volume', 'snapshot', 'v', 'v'], /E_VOLUME_EXISTS/],
      [['--store', 'ftp://x/y', 'volume', 'flush', 'v'], /E_BAD_URL/],
    ];
    // independent and read-only: run four at a time
    for (let i = 0; i < cases.length; i += 4) await Promise.all(cases.slice(i, i + 4).map(([a, r]) => fails(a, r)));
    expect(await ok(['volume', 'list', '--json'])).toBe(before);
    expect(JSON.parse(await ok(['volume', 'stats', 'v', '--json']))).toMatchObject({ dirtyBlocks: 0, uploads: 0, blocks: 0 });
  });

  it('reports unreachable stores, missing buckets and bad credentials in one line without the secret', async () => {
    const m = inject('minio');
    const s3 = (over: Record<string, string>) => ({
      AWS_ACCESS_KEY_ID: m.accessKeyId,
      AWS_SECRET_ACCESS_KEY: m.secretAccessKey,
      AWS_REGION: m.region,
      AWS_ENDPOINT_URL_S3: m.endpoint,
      GLIDEKV_STORE: `s3://${m.bucket}/cli-test`,
      // another store, another catalog: the file store's catalog is not this store's owner
      GLIDEKV_CATALOG: join(root, 's3-catalog.db'),
      GLIDEKV_CACHE: join(root, 's3-cache'),
      ...over,
    });
    await ok(['volume', 'create', 'remote', '--size', '256K'], s3({}));
    writeFileSync(join(root, 'r.bin'), Buffer.alloc(1000, 7));
    await ok(['volume', 'write', 'remote', '--from', join(root, 'r.bin'), '--flush'], s3({}));
    const lines = [
      await fails(['volume', 'flush', 'remote'], /E_STORE_UNREACHABLE/, s3({ AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9' })),
      await fails(['volume', 'flush', 'remote'], /E_NO_BUCKET/, s3({ GLIDEKV_STORE: 's3://no-such-bucket-here/x' })),
      await fails(['volume', 'flush', 'remote'], /E_ACCESS_DENIED/, s3({ AWS_SECRET_ACCESS_KEY: 'wrong-secret-value-1234' })),
      await fails(['gc'], /E_ACCESS_DENIED/, s3({ AWS_SECRET_ACCESS_KEY: 'wrong-secret-value-1234' })),
    ];
    for (const l of lines) {
      expect(l).not.toContain(m.secretAccessKey);
      expect(l).not.toContain('wrong-secret-value-1234');
    }
    expect(JSON.parse(await ok(['volume', 'stats', 'remote', '--json'], s3({})))).toMatchObject({ uploads: 1, blocks: 1 });
  });
});
