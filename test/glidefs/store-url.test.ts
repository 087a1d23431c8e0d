// Goal: openStore turns each accepted URL form into the right store stack and refuses everything else with one clear E_BAD_URL line.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DirStore } from '../../glidefs/dir-store.js';
import { GlideFsError } from '../../glidefs/errors.js';
import { MemoryStore } from '../../glidefs/memory-store.js';
import { RetryStore } from '../../glidefs/retry-store.js';
import { S3Store } from '../../glidefs/s3-store.js';
import { checkStore, openStore } from '../../glidefs/store-url.js';

const tmp = mkdtempSync(join(tmpdir(), 'glidefs-url-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('openStore', () => {
  it('memory:// is a MemoryStore', async () => {
    const s = await openStore('memory://');
    expect(s).toBeInstanceOf(MemoryStore);
    await checkStore(s);
    await s.close();
  });

  it('file:///abs/path is a DirStore on that directory, created 0700 with parents', async () => {
    const path = join(tmp, 'deep', 'objects');
    const s = await openStore(pathToFileURL(path).href);
    expect(s).toBeInstanceOf(DirStore);
    expect((s as DirStore).root).toBe(path);
    expect(s.description).toBe(pathToFileURL(path).href);
    expect(statSync(path).mode & 0o777).toBe(0o700);
    await checkStore(s);
    await s.put('x/y', Buffer.from('1'));
    expect(statSync(join(path, 'x', 'y')).isFile()).toBe(true);
    await s.close();
    // percent-encoded characters and file://localhost/ are paths too
    const spaced = await openStore(`file://localhost${pathToFileURL(join(tmp, 'with space')).pathname}`);
    expect((spaced as DirStore).root).toBe(join(tmp, 'with space'));
    await spaced.close();
  });

  it('s3://bucket/prefix is a RetryStore over an S3Store with that bucket and prefix', async () => {
    const s = await openStore('s3://my-bucket/some/prefix/', { s3: { endpoint: 'http://127.0.0.1:9', region: 'us-east-1' } });
    expect(s).toBeInstanceOf(RetryStore);
    const inner = (s as RetryStore).inner as S3Store;
    expect(inner).toBeInstanceOf(S3Store);
    expect(inner.bucket).toBe('my-bucket');
    expect(inner.prefix).toBe('some/prefix');
    expect(s.description).toBe('s3://my-bucket/some/prefix');
    expect(inner.endpoint).toBe('http://127.0.0.1:9');
    await s.close();
    const bare = await openStore('s3://my-bucket', { retry: false, s3: { endpoint: 'http://127.0.0.1:9' } });
    expect(bare).toBeInstanceOf(S3Store);
    expect((bare as S3Store).prefix).toBe('');
    expect(bare.description).toBe('s3://my-bucket');
    await bare.close();
  });

  it.each([
    ['', /empty/],
    ['   ', /empty/],
    ['objects', /not a URL/],
    ['/abs/path', /not a URL/],
    ['http://example.com/x', /unknown scheme 'http:'/],
    ['ftp://host/x', /unknown scheme 'ftp:'/],
    ['file://relative/path', /host 'relative'/],
    // Issue 9 item 14: these parse as /relative/x and /abs/x at the filesystem root.
    ['file:relative/x', /three slashes/],
    ['file:/abs/x', /three slashes/],
    ['file:///', /absolute directory/],
    ['file:///tmp/a/../b', /segment/],
    ['file:///tmp//b', /segment/],
    ['file:///tmp/a%2Fb', /encoded \//],
    ['file:///tmp/a%00b', /NUL/],
    ['file:///tmp/a b', /spaces or control/],
    ['file:///tmp/x?y=1', /no query/],
    ['s3:bucket/x', /s3:\/\/BUCKET/],
    ['s3:///x', /no bucket/],
    ['s3://', /no bucket/],
    ['s3://MyBucket/x', /not a valid bucket name/],
    ['s3://192.168.1.10/x', /not a valid bucket name/],
    ['s3://b..c/x', /not a valid bucket name/],
    ['s3://bucket/x#frag', /no query/],
    ['s3://Upper_Case/x', /not a valid bucket name/],
    ['s3://ab/x', /not a valid bucket name/],
    ['s3://bucket:9000/x', /no port/],
    ['s3://bucket/a/../b', /segment/],
    ['s3://bucket/a//b', /segment/],
    ['s3://bucket/./x', /segment/],
    ['s3://bucket/x/%2E%2e', /segment/],
    ['memory://somewhere', /memory:\/\/ takes no path/],
  ])('refuses %j with E_BAD_URL', async (url, why) => {
    const err = await openStore(url).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GlideFsError);
    const e = err as GlideFsError;
    expect(e.code).toBe('E_BAD_URL');
    expect(e.message).toMatch(/^E_BAD_URL: /);
    expect(e.message).toMatch(why);
    expect(e.message).toContain('s3://BUCKET[/PREFIX], file:///ABSOLUTE/PATH or memory://');
    expect(e.message).not.toContain('\n');
  });

  it.each([
    ['s3://AKIAXYZ:topsecretvalue@bucket/p'],
    ['s3://topsecretvalue@bucket/p'],
    ['https://AKIAXYZ:topsecretvalue@127.0.0.1/x'],
    ['memory://AKIAXYZ:topsecretvalue@'],
    ['AKIAXYZ:topsecretvalue@host/x'],
    ['s3://bucket/p?X-Amz-Credential=AKIAXYZ&X-Amz-Signature=topsecretvalue'],
    ['file:///tmp/x#AKIAXYZtopsecretvalue'],
    ['weird://AKIAXYZ:topsecretvalue@host'],
  ])('never repeats user info, a query or a fragment of %j', async (url) => {
    const err = (await openStore(url).catch((e: unknown) => e)) as GlideFsError;
    expect(err).toBeInstanceOf(GlideFsError);
    expect(err.code).toBe('E_BAD_URL');
    expect(err.message).not.toContain('topsecretvalue');
    expect(err.message).not.toContain('AKIAXYZ');
  });

  it('checks the S3 endpoint: an http(s) URL of a host, without credentials; any host is allowed', async () => {
    const bad = [
      ['ftp://127.0.0.1:9000', /scheme 'ftp:'/],
      ['http://AKIAXYZ:topsecretvalue@127.0.0.1:9000', /credentials/],
      ['127.0.0.1:9000', /not a URL|scheme/],
      ['http://127.0.0.1:9000/?x=topsecretvalue', /no query/],
    ] as const;
    for (const [endpoint, why] of bad) {
      const err = (await openStore('s3://my-bucket/p', { s3: { endpoint } }).catch((e: unknown) => e)) as GlideFsError;
      expect(err, endpoint).toBeInstanceOf(GlideFsError);
      expect(err.code).toBe('E_BAD_URL');
      expect(err.message).toMatch(why);
      expect(err.message).toMatch(/invalid S3 endpoint .* in the endpoint/);
      expect(err.message).not.toContain('topsecretvalue');
    }
    // A remote endpoint is a user's choice (nothing is sent: opening makes no request).
    const remote = await openStore('s3://my-bucket/p', { s3: { endpoint: 'https://s3.example.com' } });
    expect(((remote as RetryStore).inner as S3Store).endpoint).toBe('https://s3.example.com');
    await remote.close();
  });

  it('refuses credentials in the URL without repeating them', async () => {
    const err = (await openStore('s3://AKIAXYZ:topsecretvalue@bucket/p').catch((e: unknown) => e)) as GlideFsError;
    expect(err.code).toBe('E_BAD_URL');
    expect(err.message).toContain('credentials do not belong in the URL');
    expect(err.message).not.toContain('topsecretvalue');
    expect(err.message).not.toContain('AKIAXYZ');
  });

  it('a file store whose directory cannot be made fails with a typed error', async () => {
    const blocker = join(tmp, 'afile');
    await (await openStore(pathToFileURL(join(tmp, 'p')).href)).close();
    (await import('node:fs')).writeFileSync(blocker, 'x');
    const err = (await openStore(pathToFileURL(join(blocker, 'sub')).href).catch((e: unknown) => e)) as GlideFsError;
    expect(err).toBeInstanceOf(GlideFsError);
    expect(err.code).toBe('E_STORE');
    expect(err.message).toContain('cannot create store directory');
  });
});
