// Goal: KvFs (the KV mount's operations) without FUSE, root or /dev/fuse, over a real
// engine on a temporary directory: namespaces are directories, keys are files, a file
// written through a handle is committed as ONE put on close/fsync (never a mix of old and
// new), unlink/rename/truncate are engine deletes/batches/puts, and every refusal answers
// the errno the kernel would see, through the same handlers (fuse.ts fuseHandlers) the
// mount hands to the addon.
import { constants as fsc, mkdtempSync, rmSync } from 'node:fs';
import { constants as os, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { open, type Engine } from '../../src/index.js';
import { fuseHandlers } from '../../mount/fuse.js';
import { KvFs, REVISION_XATTR } from '../../mount/kv-fs.js';
import { keyInode, namespaceInode } from '../../mount/inode-number.js';

const E = (name: keyof typeof os.errno) => -os.errno[name];
const S_IFMT = fsc.S_IFMT;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: { maxValueBytes?: number; spillThreshold?: number } = {}): Promise<{ fs: KvFs; engine: Engine; errors: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'glidekv-kv-fs-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const engine = await open(join(dir, 'data'));
  cleanups.push(() => engine.close());
  const errors: string[] = [];
  const fs = new KvFs(engine, { dataDir: dir, spillDir: join(dir, 'spill'), onError: (m) => errors.push(m), ...opts });
  cleanups.push(() => fs.closeAll());
  return { fs, engine, errors };
}

/** Calls a handler the way fuse-native does and resolves the callback's arguments. */
function call(h: Record<string, (...a: any[]) => void>, op: string, ...args: unknown[]): Promise<unknown[]> {
  return new Promise((resolve) => h[op](...args, (...r: unknown[]) => resolve(r)));
}

const text = async (engine: Engine, ns: string, key: string) => (await engine.get(ns, key))?.value.toString();

/** Writes `s` through a handle as a program would: open/create, write, close (flush + release). */
async function save(fs: KvFs, path: string, s: string, how: 'create' | 'trunc' = 'create'): Promise<void> {
  const fd = how === 'create' ? await fs.create(path) : await fs.open(path, fsc.O_WRONLY | fsc.O_TRUNC);
  const b = Buffer.from(s);
  expect(await fs.write(path, fd, b, b.length, 0)).toBe(b.length);
  await fs.flush(path, fd);
  await fs.release(path, fd);
}

describe('KvFs', () => {
  it('namespaces are directories: mkdir creates, readdir lists, rmdir drops an empty one', async () => {
    const { fs, engine } = await setup();
    const h = fuseHandlers(fs);
    await fs.mkdir('/photos');
    expect(engine.listNamespaces()).toContain('photos');
    expect((await fs.readdir('/')).names).toEqual(['.', '..', 'photos']);
    const st = await fs.getattr('/photos');
    expect(st.mode & S_IFMT).toBe(fsc.S_IFDIR);
    expect(st.ino).toBe(namespaceInode('photos'));
    expect(await call(h, 'mkdir', '/photos', 0o755)).toEqual([E('EEXIST')]);
    await save(fs, '/photos/cat', 'meow');
    expect(await call(h, 'rmdir', '/photos')).toEqual([E('ENOTEMPTY')]);
    await fs.unlink('/photos/cat');
    expect(await call(h, 'rmdir', '/photos')).toEqual([0]);
    expect(engine.listNamespaces()).not.toContain('photos');
    expect(await call(h, 'getattr', '/photos')).toEqual([E('ENOENT')]);
    expect(await call(h, 'getattr', '/a/b/c')).toEqual([E('ENOENT')]);
  });

  it('a file written through a handle is one put on close; readers see the old value until then', async () => {
    const { fs, engine } = await setup();
    await fs.mkdir('/ns');
    await save(fs, '/ns/k', 'old value');
    const rev1 = engine.stat('ns', 'k')!.revision;
    const w = await fs.open('/ns/k', fsc.O_WRONLY | fsc.O_TRUNC);
    await fs.write('/ns/k', w, Buffer.from('new'), 3, 0);
    await fs.write('/ns/k', w, Buffer.from(' value!'), 7, 3);
    // Not committed yet: the engine still holds the old value; getattr reports the buffered size.
    expect(await text(engine, 'ns', 'k')).toBe('old value');
    expect((await fs.getattr('/ns/k')).size).toBe(10);
    await fs.flush('/ns/k', w);
    expect(await text(engine, 'ns', 'k')).toBe('new value!');
    // Exactly one put for the whole file.
    expect(engine.stat('ns', 'k')!.revision).toBe(rev1 + 1);
    await fs.release('/ns/k', w);
    expect(fs.openHandles).toBe(0);
    // Read back through a handle.
    const r = await fs.open('/ns/k', fsc.O_RDONLY);
    const buf = Buffer.alloc(64);
    expect(await fs.read('/ns/k', r, buf, 64, 4)).toBe(6);
    expect(buf.subarray(0, 6).toString()).toBe('value!');
    expect(await fs.read('/ns/k', r, buf, 64, 100)).toBe(0);
    await fs.release('/ns/k', r);
    const st = await fs.getattr('/ns/k');
    expect(st.mode & S_IFMT).toBe(fsc.S_IFREG);
    expect(st.ino).toBe(keyInode('ns', Buffer.from('k')));
  });

  it('an O_TRUNC open with nothing written is not committed by the first close (shell `>` redirection)', async () => {
    const { fs, engine } = await setup();
    await fs.mkdir('/ns');
    await save(fs, '/ns/k', 'keep');
    const fd = await fs.open('/ns/k', fsc.O_WRONLY | fsc.O_TRUNC);
    await fs.flush('/ns/k', fd); // the shell closes a dup before writing
    expect(await text(engine, 'ns', 'k')).toBe('keep');
    await fs.write('/ns/k', fd, Buffer.from('x'), 1, 0);
    await fs.release('/ns/k', fd);
    expect(await text(engine, 'ns', 'k')).toBe('x');
  });

  it('fsync commits and syncs; the handle keeps working', async () => {
    const { fs, engine } = await setup();
    await fs.mkdir('/ns');
    const fd = await fs.create('/ns/f');
    await fs.write('/ns/f', fd, Buffer.from('abc'), 3, 0);
    await fs.fsync('/ns/f', false, fd);
    expect(await text(engine, 'ns', 'f')).toBe('abc');
    await fs.write('/ns/f', fd, Buffer.from('d'), 1, 3);
    await fs.release('/ns/f', fd);
    expect(await text(engine, 'ns', 'f')).toBe('abcd');
  });

  it('unlink deletes the key; an open writer of an unlinked file never commits it back', async () => {
    const { fs, engine } = await setup();
    const h = fuseHandlers(fs);
    await fs.mkdir('/ns');
    await save(fs, '/ns/k', 'v');
    const fd = await fs.open('/ns/k', fsc.O_WRONLY);
    await fs.write('/ns/k', fd, Buffer.from('zombie'), 6, 0);
    await fs.unlink('/ns/k');
    await fs.release('/ns/k', fd);
    expect(await engine.get('ns', 'k')).toBeUndefined();
    expect(await call(h, 'unlink', '/ns/k')).toEqual([E('ENOENT')]);
    expect(await call(h, 'unlink', '/ns')).toEqual([E('EISDIR')]);
  });

  it('rename within a namespace is one batch; across namespaces it is EXDEV (mv then copies)', async () => {
    const { fs, engine } = await setup();
    const h = fuseHandlers(fs);
    await fs.mkdir('/a');
    await fs.mkdir('/b');
    await save(fs, '/a/x', 'X');
    await save(fs, '/a/y', 'Y');
    const before = engine.stat('a', 'y')!.revision;
    await fs.rename('/a/x', '/a/y');
    expect(await engine.get('a', 'x')).toBeUndefined();
    expect(await text(engine, 'a', 'y')).toBe('X');
    // One batch: the delete and the put share one revision.
    expect(engine.stat('a', 'y')!.revision).toBe(before + 1);
    expect(await call(h, 'rename', '/a/y', '/b/y')).toEqual([E('EXDEV')]);
    expect(await call(h, 'rename', '/a/nope', '/a/z')).toEqual([E('ENOENT')]);
  });

  it('truncate by path resizes the value with one put', async () => {
    const { fs, engine } = await setup();
    await fs.mkdir('/ns');
    await save(fs, '/ns/k', 'abcdef');
    await fs.truncate('/ns/k', 3);
    expect(await text(engine, 'ns', 'k')).toBe('abc');
    await fs.truncate('/ns/k', 5);
    expect((await engine.get('ns', 'k'))!.value).toEqual(Buffer.from('abc\0\0'));
  });

  it('a value over maxValueBytes is EFBIG and the handle never commits its partial bytes', async () => {
    const { fs, engine } = await setup({ maxValueBytes: 8 });
    const h = fuseHandlers(fs);
    await fs.mkdir('/ns');
    await save(fs, '/ns/k', 'small');
    const fd = await fs.open('/ns/k', fsc.O_WRONLY);
    expect(await call(h, 'write', '/ns/k', fd, Buffer.from('0123456789'), 10, 0)).toEqual([E('EFBIG')]);
    expect(await call(h, 'flush', '/ns/k', fd)).toEqual([E('EFBIG')]);
    await fs.release('/ns/k', fd);
    expect(await text(engine, 'ns', 'k')).toBe('small');
  });

  it('the revision is a read-only extended attribute', async () => {
    const { fs, engine } = await setup();
    const h = fuseHandlers(fs);
    await fs.mkdir('/ns');
    await save(fs, '/ns/k', 'v');
    const rev = engine.stat('ns', 'k')!.revision;
    expect(await call(h, 'getxattr', '/ns/k', REVISION_XATTR, 0)).toEqual([0, Buffer.from(String(rev))]);
    expect(await call(h, 'getxattr', '/ns/k', 'user.other', 0)).toEqual([0, null]);
    expect(await call(h, 'listxattr', '/ns/k')).toEqual([0, [REVISION_XATTR]]);
    expect(await call(h, 'setxattr', '/ns/k', REVISION_XATTR, Buffer.from('1'), 0, 0)).toEqual([E('ENOTSUP')]);
    expect(await call(h, 'removexattr', '/ns/k', REVISION_XATTR)).toEqual([E('ENOTSUP')]);
  });

  it('times, modes and owners are accepted on existing paths only; links and device nodes are EPERM', async () => {
    const { fs } = await setup();
    const h = fuseHandlers(fs);
    await fs.mkdir('/ns');
    await save(fs, '/ns/k', 'v');
    expect(await call(h, 'utimens', '/ns/k', 0, 0)).toEqual([0]);
    expect(await call(h, 'chmod', '/ns/k', 0o600)).toEqual([0]);
    expect(await call(h, 'chown', '/ns/k', 0, 0)).toEqual([0]);
    expect(await call(h, 'utimens', '/ns/none', 0, 0)).toEqual([E('ENOENT')]);
    expect(await call(h, 'link', '/ns/k', '/ns/l')).toEqual([E('EPERM')]);
    expect(await call(h, 'symlink', '/ns/k', '/ns/s')).toEqual([E('EPERM')]);
    expect(await call(h, 'mknod', '/ns/n', 0o644, 0)).toEqual([E('EPERM')]);
  });

  it('keys that are no file names are percent-encoded both ways', async () => {
    const { fs, engine } = await setup();
    await fs.mkdir('/ns');
    await engine.put('ns', Buffer.from('a/b'), 'slash');
    expect((await fs.readdir('/ns')).names).toContain('a%2Fb');
    const fd = await fs.open('/ns/a%2Fb', fsc.O_RDONLY);
    const buf = Buffer.alloc(16);
    const n = await fs.read('/ns/a%2Fb', fd, buf, 16, 0);
    expect(buf.subarray(0, n).toString()).toBe('slash');
    await fs.release('/ns/a%2Fb', fd);
  });

  it('a large value spills to disk and reads back whole', async () => {
    const { fs, engine } = await setup({ spillThreshold: 1024 });
    await fs.mkdir('/ns');
    const fd = await fs.create('/ns/big');
    const chunk = Buffer.alloc(4096);
    for (let i = 0; i < 16; i++) {
      chunk.fill(i);
      await fs.write('/ns/big', fd, chunk, chunk.length, i * chunk.length);
    }
    await fs.release('/ns/big', fd);
    const v = (await engine.get('ns', 'big'))!.value;
    expect(v.length).toBe(16 * 4096);
    for (let i = 0; i < 16; i++) expect(v[i * 4096 + 17]).toBe(i);
  });

  it('commitAll at shutdown commits what open files hold', async () => {
    const { fs, engine } = await setup();
    await fs.mkdir('/ns');
    const fd = await fs.create('/ns/open');
    await fs.write('/ns/open', fd, Buffer.from('held'), 4, 0);
    expect(await fs.commitAll()).toEqual([]);
    expect(await text(engine, 'ns', 'open')).toBe('held');
    await fs.closeAll();
    expect(fs.openHandles).toBe(0);
  });

  it('statfs reports the data directory and never throws', async () => {
    const { fs } = await setup();
    const [err, st] = await call(fuseHandlers(fs), 'statfs', '/');
    expect(err).toBe(0);
    expect((st as { bsize: number }).bsize).toBeGreaterThan(0);
  });
});
