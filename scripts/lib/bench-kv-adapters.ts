/**
 * One small interface over the three stores the engine benchmark compares:
 * glidekv (this repo's engine), lmdb (lmdb-js) and classic-level (LevelDB).
 *
 * Durability levels, and what each store does for them:
 *
 *   none    glidekv sync 'none'          lmdb noSync: true            level put {sync: false}
 *           (acknowledged writes can be lost on a machine crash, never torn)
 *   batch   glidekv sync 'batch'          lmdb default: every put issued in   level put {sync: true}; LevelDB's
 *           (group commit: concurrent     one event turn joins one txn, the   writer queue groups concurrent
 *           puts share one fsync)         promise resolves after commit+sync  writes into one log write + fsync
 *   always  glidekv sync 'always'         lmdb default, one awaited put at    level put {sync: true}, one at a
 *           (one fsync per put)           a time = one txn + fsync per put    time = one fsync per put
 *
 * The caller decides the concurrency (64 writers for batch, 1 for none and
 * always); with one writer, batch and always cost the same in lmdb and level.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { open, type Engine, type EngineOptions } from '../../src/index.js';

export type SystemName = 'glidekv' | 'lmdb' | 'level';
export type Durability = 'none' | 'batch' | 'always';
export const NS = 'bench';

export interface BenchKv {
  put(key: Buffer, value: Buffer): Promise<void>;
  get(key: Buffer): Promise<Buffer | undefined>;
  /** Bulk load without per-write durability (used to prepare read phases). */
  load(entries: Array<[Buffer, Buffer]>): Promise<void>;
  /** Reads `n` keys in order after `after` (no values where the store allows); returns how many. */
  scan(after: Buffer, n: number): Promise<number>;
  close(): Promise<void>;
}

/** The engine, as the benchmark drives it (src/index.ts, imported statically: tsc checks every call). */
export type GlideEngine = Engine;

/** Opens the engine through its public entry and makes sure the bench namespace exists. */
export async function openGlide(dir: string, options: EngineOptions): Promise<GlideEngine> {
  const engine = await open(dir, options);
  if (!engine.listNamespaces().includes(NS)) await engine.createNamespace(NS);
  return engine;
}

const LOAD_CHUNK = 1000;

async function glidekv(dir: string, durability: Durability, extra: EngineOptions): Promise<BenchKv> {
  const e = await openGlide(dir, { sync: durability, ...extra });
  return {
    async put(k, v) {
      await e.put(NS, k, v);
    },
    async get(k) {
      return (await e.get(NS, k))?.value;
    },
    async load(entries) {
      for (let i = 0; i < entries.length; i += LOAD_CHUNK) {
        await e.batch(NS, entries.slice(i, i + LOAD_CHUNK).map(([key, value]) => ({ type: 'put' as const, key, value })));
      }
    },
    async scan(after, n) {
      return e.list(NS, { after, limit: n }).length;
    },
    close: () => e.close(),
  };
}

async function lmdb(dir: string, durability: Durability): Promise<BenchKv> {
  const { open } = await import('lmdb');
  const db = open<Buffer, Buffer>({
    path: dir,
    noSync: durability === 'none',
    encoding: 'binary',
    keyEncoding: 'binary',
    compression: false,
  });
  return {
    async put(k, v) {
      await db.put(k, v);
    },
    async get(k) {
      return db.get(k);
    },
    async load(entries) {
      for (let i = 0; i < entries.length; i += LOAD_CHUNK) {
        const chunk = entries.slice(i, i + LOAD_CHUNK);
        await db.transaction(() => {
          for (const [k, v] of chunk) db.put(k, v);
        });
      }
    },
    async scan(after, n) {
      let c = 0;
      for (const _ of db.getKeys({ start: after, exclusiveStart: true, limit: n } as never)) c++;
      return c;
    },
    close: () => db.close(),
  };
}

async function level(dir: string, durability: Durability): Promise<BenchKv> {
  const { ClassicLevel } = await import('classic-level');
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  await db.open();
  const sync = durability !== 'none';
  return {
    async put(k, v) {
      await db.put(k, v, { sync });
    },
    async get(k) {
      return db.get(k);
    },
    async load(entries) {
      for (let i = 0; i < entries.length; i += LOAD_CHUNK) {
        await db.batch(
          entries.slice(i, i + LOAD_CHUNK).map(([key, value]) => ({ type: 'put' as const, key, value })),
          { sync: false },
        );
      }
    },
    async scan(after, n) {
      return (await db.keys({ gt: after, limit: n }).all()).length;
    },
    close: () => db.close(),
  };
}

export function openKv(system: SystemName, dir: string, durability: Durability, extra: EngineOptions = {}): Promise<BenchKv> {
  if (system === 'glidekv') return glidekv(dir, durability, extra);
  if (system === 'lmdb') return lmdb(dir, durability);
  return level(dir, durability);
}

/** Total size of the regular files under dir (recursive). */
export async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const ent of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, ent.name);
    if (ent.isDirectory()) total += await dirBytes(p);
    else if (ent.isFile()) total += (await stat(p)).size;
  }
  return total;
}
