/**
 * DirStore: objects as files under one local directory (`file:///path`), the
 * embedded default store.
 *
 * Key `a/b/c` is the file `<root>/a/b/c`; the key's '/' separators become
 * directories. Keys are checked before they touch the file system: no empty
 * key, no leading '/', no empty, '.' or '..' segment, no NUL or backslash, no
 * segment starting with '.tmp-' (the temp-file namespace). A key may not be
 * both an object and a "directory" of other keys (`a` and `a/b`): the second
 * put fails with E_BAD_KEY. The block layer's keys never do that.
 *
 * put is atomic and durable: the bytes go to `<dir>/.tmp-<random>` in the
 * target's own directory, the temp file is fsynced, renamed over the target,
 * and the directory is fsynced (and so is every directory the put created, in
 * its parent). A crash leaves either the old state or the new object, plus at
 * most a stray temp file that list() never shows.
 *
 * putIfAbsent is the same temp file, fsynced, then link(2)ed to the target
 * instead of renamed: link never replaces, so of concurrent creators exactly
 * one links (true) and the others get EEXIST (false); the existing file is
 * untouched. The temp name is then unlinked and the directory fsynced.
 *
 * putIfMatch takes a per-key lock file `<dir>/.tmp-cas.<name>` (lib/pid-lock:
 * link(2), a dead holder's lock is broken), reads the object, compares its
 * tag (BLAKE3-128 of the bytes) and, when it matches, replaces it as `put`
 * does (temp file, fsync, rename, directory fsync), then drops the lock. The
 * name is never absent meanwhile, so putIfAbsent stays atomic beside it.
 *
 * delete removes the file and then the directories it leaves empty (up to the
 * root); a concurrent put that loses its directory to that cleanup retries.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { link, mkdir, open, opendir, readFile, rename, rmdir, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, sep } from 'node:path';
import { hash as blake3 } from 'blake3';
import { LockHeldError, PidLock } from '../lib/pid-lock.js';
import { pathToFileURL } from 'node:url';
import { fsyncDir } from '../lib/fsync.js';
import { GlideFsError } from './errors.js';
import type { ObjectHead, ObjectStore, TaggedObject } from './object-store.js';

const TMP_PREFIX = '.tmp-';

export interface DirStoreOptions {
  /** fsync files and directories on put (default true). Off only for throwaway test data. */
  fsync?: boolean;
  /** Mode of object files (default 0o600). */
  fileMode?: number;
  /** Mode of directories the store creates (default 0o700). */
  dirMode?: number;
}

export class DirStore implements ObjectStore {
  readonly description: string;
  readonly root: string;
  private readonly fsync: boolean;
  private readonly fileMode: number;
  private readonly dirMode: number;
  private closed = false;

  /** `root` must be an existing directory (openStore creates it). */
  constructor(root: string, opts: DirStoreOptions = {}) {
    this.root = root.length > 1 && root.endsWith(sep) ? root.slice(0, -1) : root;
    this.description = pathToFileURL(this.root).href;
    this.fsync = opts.fsync ?? true;
    this.fileMode = opts.fileMode ?? 0o600;
    this.dirMode = opts.dirMode ?? 0o700;
  }

  async put(key: string, data: Uint8Array): Promise<void> {
    this.checkOpen();
    const path = this.pathOf(key);
    const dir = dirname(path);
    for (let attempt = 0; ; attempt++) {
      try {
        await this.putOnce(path, dir, data);
        return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // A concurrent delete removed our (empty) directory: make it again.
        if (code === 'ENOENT' && attempt < 5) continue;
        if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'EEXIST') {
          throw GlideFsError.BAD_KEY(key, 'it collides with another key used as a directory (or the reverse)');
        }
        throw this.fsError('put', key, err);
      }
    }
  }

  private async putOnce(path: string, dir: string, data: Uint8Array): Promise<void> {
    const created = await mkdir(dir, { recursive: true, mode: this.dirMode });
    const tmp = join(dir, TMP_PREFIX + randomBytes(8).toString('hex'));
    const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, this.fileMode);
    let renamed = false;
    try {
      try {
        await fh.writeFile(data);
        if (this.fsync) await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
      renamed = true;
    } finally {
      if (!renamed) await unlink(tmp).catch(() => {});
    }
    if (this.fsync) {
      await fsyncDir(dir);
      // mkdir created `created` and everything below it: make each entry durable in its parent.
      if (created !== undefined) {
        for (let d = dir; d !== dirname(created) && d.length >= this.root.length; d = dirname(d)) {
          await fsyncDir(dirname(d));
        }
      }
    }
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    this.checkOpen();
    const path = this.pathOf(key);
    const dir = dirname(path);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.createOnce(path, dir, body);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' && attempt < 5) continue; // our directory was removed by a delete: again
        if (code === 'ENOTDIR' || code === 'EISDIR') {
          throw GlideFsError.BAD_KEY(key, 'it collides with another key used as a directory (or the reverse)');
        }
        throw this.fsError('putIfAbsent', key, err);
      }
    }
  }

  private async createOnce(path: string, dir: string, data: Uint8Array): Promise<boolean> {
    const created = await mkdir(dir, { recursive: true, mode: this.dirMode });
    const tmp = join(dir, TMP_PREFIX + randomBytes(8).toString('hex'));
    const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, this.fileMode);
    try {
      try {
        await fh.writeFile(data);
        if (this.fsync) await fh.sync();
      } finally {
        await fh.close();
      }
      try {
        await link(tmp, path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        // a directory of that name is a key collision, not an existing object
        if ((await stat(path).catch(() => null))?.isDirectory()) throw Object.assign(new Error('EISDIR'), { code: 'EISDIR' });
        return false;
      }
    } finally {
      await unlink(tmp).catch(() => {});
    }
    if (this.fsync) {
      await fsyncDir(dir);
      if (created !== undefined) {
        for (let d = dir; d !== dirname(created) && d.length >= this.root.length; d = dirname(d)) {
          await fsyncDir(dirname(d));
        }
      }
    }
    return true;
  }

  async getTagged(key: string): Promise<TaggedObject | null> {
    const data = await this.get(key);
    return data === null ? null : { data, etag: tagOf(data) };
  }

  async putIfMatch(key: string, body: Uint8Array, etag: string): Promise<string | null> {
    this.checkOpen();
    const path = this.pathOf(key);
    const dir = dirname(path);
    const lockFile = join(dir, `${TMP_PREFIX}cas.${basename(path)}`);
    let lock: PidLock;
    for (const deadline = Date.now() + 10_000; ; ) {
      try {
        lock = await PidLock.acquire(lockFile, { waitMs: 10_000 });
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') return null; // no directory: no object
        if (!(err instanceof LockHeldError)) throw this.fsError('putIfMatch', key, err);
        if (Date.now() > deadline) throw GlideFsError.CONFLICT(`conditional replace of '${key}' on ${this.description}: its lock stayed held for 10 s`);
        await new Promise((r) => setTimeout(r, 2 + Math.random() * 8));
      }
    }
    try {
      let cur: Buffer;
      try {
        cur = await readFile(path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return null;
        throw this.fsError('putIfMatch', key, err);
      }
      if (tagOf(cur) !== etag) return null;
      try {
        await this.putOnce(path, dir, body);
      } catch (err) {
        throw this.fsError('putIfMatch', key, err);
      }
      return tagOf(body);
    } finally {
      await lock.release();
    }
  }

  async head(key: string): Promise<ObjectHead | null> {
    this.checkOpen();
    const path = this.pathOf(key);
    try {
      const st = await stat(path);
      return st.isFile() ? { size: st.size, modifiedAt: st.mtimeMs } : null;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw this.fsError('head', key, err);
    }
  }

  async get(key: string): Promise<Buffer | null> {
    this.checkOpen();
    const path = this.pathOf(key);
    try {
      return await readFile(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return null;
      throw this.fsError('get', key, err);
    }
  }

  async delete(key: string): Promise<void> {
    this.checkOpen();
    const path = this.pathOf(key);
    try {
      await unlink(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      if (code === 'EISDIR' || code === 'EPERM') {
        // On Linux unlink of a directory is EISDIR; the key names no object.
        if ((await stat(path).catch(() => null))?.isDirectory()) return;
      }
      throw this.fsError('delete', key, err);
    }
    // Remove directories left empty, deepest first; stop at the first non-empty one.
    for (let d = dirname(path); d.length > this.root.length && d.startsWith(this.root + sep); d = dirname(d)) {
      try {
        await rmdir(d);
      } catch {
        break;
      }
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    this.checkOpen();
    if (prefix.startsWith('/') || prefix.includes('\0')) throw GlideFsError.BAD_KEY(prefix, 'bad list prefix');
    // Start at the deepest directory the prefix fully names.
    const cut = prefix.lastIndexOf('/');
    const dirPart = cut < 0 ? '' : prefix.slice(0, cut);
    if (dirPart) {
      for (const seg of dirPart.split('/')) if (seg === '..' || seg === '.' || seg === '') return;
    }
    yield* this.walk(dirPart, prefix);
  }

  private async *walk(rel: string, prefix: string): AsyncGenerator<string> {
    let dir;
    try {
      dir = await opendir(rel ? join(this.root, rel) : this.root);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw this.fsError('list', prefix, err);
    }
    const subdirs: string[] = [];
    for await (const ent of dir) {
      if (ent.name.startsWith(TMP_PREFIX)) continue;
      const key = rel ? `${rel}/${ent.name}` : ent.name;
      if (ent.isDirectory()) {
        // Descend only where keys below could still match the prefix.
        const asDir = key + '/';
        if (asDir.startsWith(prefix) || prefix.startsWith(asDir)) subdirs.push(key);
      } else if (ent.isFile() && key.startsWith(prefix)) {
        yield key;
      }
    }
    for (const sub of subdirs) yield* this.walk(sub, prefix);
  }

  /** Checks that the root is a writable directory. */
  async probe(): Promise<void> {
    this.checkOpen();
    let st;
    try {
      st = await stat(this.root);
    } catch (err) {
      throw GlideFsError.STORE(`store directory ${this.root} is not accessible: ${(err as Error).message}`, { cause: err });
    }
    if (!st.isDirectory()) throw GlideFsError.STORE(`store path ${this.root} is not a directory`);
    const probeKey = `${TMP_PREFIX}probe-${randomBytes(6).toString('hex')}`;
    const p = join(this.root, probeKey);
    try {
      const fh = await open(p, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, this.fileMode);
      await fh.close();
      await unlink(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw GlideFsError.ACCESS_DENIED(`store directory ${this.root} is not writable`, err);
      }
      throw this.fsError('probe', '', err);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** The file path of a key, after checking the key is safe. */
  pathOf(key: string): string {
    checkKey(key);
    return join(this.root, ...key.split('/'));
  }

  private checkOpen(): void {
    if (this.closed) throw GlideFsError.CLOSED(`store ${this.description}`);
  }

  private fsError(op: string, key: string, err: unknown): GlideFsError {
    const code = (err as NodeJS.ErrnoException).code;
    const what = `${op} ${key ? `'${key}' ` : ''}in ${this.root} failed: ${code ?? (err as Error).message}`;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return GlideFsError.ACCESS_DENIED(what, err);
    return GlideFsError.STORE(what, { cause: err });
  }
}

/** Throws E_BAD_KEY unless `key` is a safe relative key. */
export function checkKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw GlideFsError.BAD_KEY(String(key), 'empty key');
  if (key.startsWith('/')) throw GlideFsError.BAD_KEY(key, 'absolute keys are not allowed');
  if (key.includes('\0')) throw GlideFsError.BAD_KEY(key, 'NUL byte');
  if (key.includes('\\')) throw GlideFsError.BAD_KEY(key, 'backslash');
  for (const seg of key.split('/')) {
    if (seg === '') throw GlideFsError.BAD_KEY(key, 'empty path segment');
    if (seg === '.' || seg === '..') throw GlideFsError.BAD_KEY(key, `'${seg}' segment`);
    if (seg.startsWith(TMP_PREFIX)) throw GlideFsError.BAD_KEY(key, `segments may not start with '${TMP_PREFIX}'`);
    if (Buffer.byteLength(seg) > 255) throw GlideFsError.BAD_KEY(key, 'segment longer than 255 bytes');
  }
}

/** A directory store's entity tag: BLAKE3-128 of the bytes, hex. */
function tagOf(data: Uint8Array): string {
  return (blake3(data, { length: 16 }) as Buffer).toString('hex');
}
