/**
 * Shared setup for the block-layer tests: a GlideFs over a memory, directory
 * or MinIO store, in fresh temporary directories, with a CountingStore on top
 * so tests can count PUTs/GETs/DELETEs that reached the store.
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
export { blockOf } from './block-data.js';
import { CountingStore, DirStore, GlideFs, MemoryStore, S3Store, type ObjectStore } from '../../glidefs/index.js';

export type StoreKind = 'memory' | 'dir' | 'minio';

export interface Env {
  kind: StoreKind;
  root: string;
  /** The store GlideFs uses (counting). */
  store: CountingStore;
  /** The store under the counter (to corrupt/plant objects without counting). */
  raw: ObjectStore;
  catalogPath: string;
  cacheDir: string;
  fs: GlideFs;
  /** Opens another GlideFs on the same catalog and store; `fresh` gives it a new, empty cache dir. */
  reopen(opts?: { fresh?: boolean }): Promise<GlideFs>;
  cleanup(): Promise<void>;
}

export function makeRawStore(kind: StoreKind, root: string): ObjectStore {
  if (kind === 'memory') return new MemoryStore();
  if (kind === 'dir') return new DirStore(join(root, 'objects'), { fsync: false });
  const m = inject('minio');
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  return new S3Store({
    bucket: m.bucket,
    prefix: `glidefs-test-${randomBytes(6).toString('hex')}`,
    endpoint: m.endpoint,
    region: m.region,
    credentials: { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey },
  });
}

export async function makeEnv(kind: StoreKind, opts: { uploadConcurrency?: number; wrap?: (s: ObjectStore) => ObjectStore } = {}): Promise<Env> {
  const root = mkdtempSync(join(tmpdir(), 'glidefs-test-'));
  if (kind === 'dir') (await import('node:fs')).mkdirSync(join(root, 'objects'));
  const raw = makeRawStore(kind, root);
  const store = new CountingStore(opts.wrap ? opts.wrap(raw) : raw);
  const catalogPath = join(root, 'catalog.db');
  const cacheDir = join(root, 'cache');
  const opened: GlideFs[] = [];
  const open = async (dir: string) => {
    const g = await GlideFs.open({ store, catalogPath, cacheDir: dir, uploadConcurrency: opts.uploadConcurrency });
    opened.push(g);
    return g;
  };
  const fs = await open(cacheDir);
  // the store marker (one PUT on first use) is setup, not what tests count
  await fs.checkStoreOwner();
  store.reset();
  let n = 0;
  return {
    kind,
    root,
    store,
    raw,
    catalogPath,
    cacheDir,
    fs,
    reopen: (o = {}) => open(o.fresh ? join(root, `cache-${++n}`) : cacheDir),
    async cleanup() {
      for (const g of opened) await g.close().catch(() => undefined);
      await raw.close().catch(() => undefined);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Every key under the store's blocks/ namespace. */
export async function listKeys(store: ObjectStore): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list('blocks/')) out.push(k);
  return out.sort();
}

/**
 * A second connection to a GlideFs's catalog file, for tests that plant or
 * inspect rows directly (the catalog's own handle is private). WAL mode: the
 * GlideFs sees what it writes at its next statement. Closed at process exit.
 */
export function catalogSql(g: { catalogPath: string }): Database.Database {
  const db = new Database(g.catalogPath);
  db.pragma('busy_timeout = 15000');
  process.once('exit', () => db.close());
  return db;
}
