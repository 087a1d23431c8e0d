// One owner per store (issue 10 item 1): the store marker, E_STORE_OWNED for a catalog that is
// not the store's (writes and gc), E_VERSION for a newer marker, and gc's rules: only block-shaped
// keys, never younger than the grace period, counting only objects that really went.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DirStore } from '../../glidefs/dir-store.js';
import { GlideFs } from '../../glidefs/glidefs.js';
import { MemoryStore } from '../../glidefs/memory-store.js';
import type { ObjectStore } from '../../glidefs/object-store.js';
import { markerKey, readMarker } from '../../glidefs/store-marker.js';
import { blockOf } from './block-data.js';
import { makeRawStore, catalogSql } from './helpers.js';

const roots: string[] = [];
const opened: GlideFs[] = [];
afterEach(async () => {
  for (const g of opened.splice(0)) await g.close().catch(() => undefined);
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

function tmp(): string {
  const r = mkdtempSync(join(tmpdir(), 'glidefs-owner-'));
  roots.push(r);
  return r;
}

async function open(store: ObjectStore, root: string, name: string, extra: { gcGraceMs?: number; prefix?: string } = {}): Promise<GlideFs> {
  const g = await GlideFs.open({ store, catalogPath: join(root, `${name}.db`), cacheDir: join(root, `${name}-cache`), ...extra });
  opened.push(g);
  return g;
}

async function allKeys(store: ObjectStore): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list('')) out.push(k);
  return out.sort();
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return `${(err as { code?: string }).code}: ${(err as Error).message}`;
  }
}

describe('two catalogs on one file store', () => {
  it('the second is refused for writes and gc, and nothing of the first is deleted', async () => {
    const root = tmp();
    mkdirSync(join(root, 'objects'));
    const store = new DirStore(join(root, 'objects'), { fsync: false });
    const a = await open(store, root, 'a', { gcGraceMs: 0 });
    await a.createVolume('v', 1 << 20);
    const bytes = Buffer.concat([blockOf(1), blockOf(2), blockOf(3)]);
    const va = await a.openVolume('v');
    await va.write(0, bytes);
    await va.flush();
    await va.close();
    const marker = await readMarker(store, '');
    expect(marker?.storeId).toMatch(/^[0-9a-f-]{36}$/);
    expect(a.catalog.storeOwner()).toEqual({ storeId: marker!.storeId, state: 'confirmed' });
    const before = await allKeys(store);
    expect(before.filter((k) => k.startsWith('blocks/')).length).toBe(3);

    // B: a fresh catalog pointed at A's store (another machine, another --catalog)
    const b = await open(store, root, 'b', { gcGraceMs: 0 });
    for (const op of [() => b.gc(), () => b.gc({ dryRun: true }), () => b.createVolume('w', 1 << 20)]) {
      const r = await codeOf(op());
      expect(r).toMatch(/^E_STORE_OWNED: /);
      expect(r).toContain(marker!.storeId);
    }
    // C: a catalog that owns another store, then pointed here: both ids named
    const other = new MemoryStore();
    const c0 = await open(other, root, 'c');
    await c0.createVolume('x', 1 << 20);
    await c0.close();
    const c = await open(store, root, 'c', { gcGraceMs: 0 });
    const cId = c.catalog.storeOwner()!.storeId;
    for (const op of [() => c.gc(), () => c.openVolume('x'), () => c.fork('x', 'y'), () => c.deleteVolume('x')]) {
      const r = await codeOf(op());
      expect(r).toMatch(/^E_STORE_OWNED: /);
      expect(r).toContain(marker!.storeId);
      expect(r).toContain(cId);
    }
    expect(await allKeys(store)).toEqual(before);
    // and A still reads its volume, and its own gc deletes nothing of it
    const va2 = await a.openVolume('v');
    expect((await va2.read(0, bytes.length)).equals(bytes)).toBe(true);
    await va2.close();
    expect(await a.gc()).toMatchObject({ deletedObjects: 0, orphansDeleted: 0, failed: 0 });
    expect((await allKeys(store)).filter((k) => k.startsWith('blocks/')).length).toBe(3);
  });

  it('an unmarked store that holds objects is claimed only by a catalog that names some of them', async () => {
    const root = tmp();
    mkdirSync(join(root, 'objects'));
    const store = new DirStore(join(root, 'objects'), { fsync: false });
    const a = await open(store, root, 'a');
    await a.createVolume('v', 1 << 20);
    const va = await a.openVolume('v');
    await va.write(0, blockOf(9));
    await va.flush();
    await va.close();
    await a.close();
    // as before markers existed: no marker, no store id in the catalog
    await store.delete(markerKey(''));
    const a0 = await open(store, root, 'a');
    a0.catalog.clearStoreOwner(a0.catalog.storeOwner()!.storeId);
    await a0.close();
    const fresh = await open(store, root, 'fresh');
    expect(await codeOf(fresh.createVolume('w', 1 << 20))).toMatch(/^E_STORE_OWNED: .*holds objects but no store marker/);
    expect(await readMarker(store, '')).toBeNull();
    const a1 = await open(store, root, 'a');
    expect(await codeOf(a1.gc())).toBe('OK');
    expect((await readMarker(store, ''))?.storeId).toBe(a1.catalog.storeOwner()!.storeId);
  });

  it('a catalog whose store lost its marker is refused', async () => {
    const store = new MemoryStore();
    const root = tmp();
    const a = await open(store, root, 'a');
    await a.createVolume('v', 1 << 20);
    await a.close();
    await store.delete(markerKey(''));
    const a1 = await open(store, root, 'a');
    expect(await codeOf(a1.createVolume('w', 1 << 20))).toMatch(/^E_STORE_OWNED: .*has no store marker/);
  });
});

describe('the store marker', () => {
  it('lives at <prefix>/glidekv-store.json: format version, store id, created at', async () => {
    const store = new MemoryStore();
    const g = await open(store, tmp(), 'a', { prefix: 'pre/fix' });
    await g.createVolume('v', 1 << 20);
    const m = JSON.parse((await store.get('pre/fix/glidekv-store.json'))!.toString());
    expect(m).toEqual({ format: 'glidekv-store', version: 1, storeId: g.catalog.storeOwner()!.storeId, createdAt: expect.any(String) });
    expect(Date.parse(m.createdAt)).toBeGreaterThan(Date.now() - 60_000);
  });

  it('a marker of a newer format version is refused (E_VERSION), before anything is written', async () => {
    const store = new MemoryStore();
    await store.put('glidekv-store.json', Buffer.from(JSON.stringify({ format: 'glidekv-store', version: 2, storeId: 'aaaaaaaa-0000-0000-0000-000000000000', createdAt: '' })));
    const g = await open(store, tmp(), 'a');
    expect(await codeOf(g.createVolume('v', 1 << 20))).toMatch(/^E_VERSION: .*version 2.*version 1/);
    expect(await codeOf(g.gc())).toMatch(/^E_VERSION/);
    expect(g.listVolumes()).toEqual([]);
    expect(store.size).toBe(1);
  });

  it.each(['memory', 'minio'] as const)('many catalogs racing to claim an empty %s store: exactly one owns it', async (kind) => {
    const root = tmp();
    const store = makeRawStore(kind, root); // minio: a fresh prefix of the test bucket
    const gs = await Promise.all(Array.from({ length: 8 }, (_, i) => open(store, root, `c${i}`)));
    const results = await Promise.all(gs.map((g, i) => codeOf(g.createVolume(`v${i}`, 1 << 20))));
    expect(results.filter((r) => r === 'OK').length).toBe(1);
    for (const r of results) if (r !== 'OK') expect(r).toMatch(/^E_STORE_OWNED/);
    const owners = gs.map((g) => g.catalog.storeOwner());
    expect(owners.filter((o) => o !== null).length).toBe(1); // the losers dropped their claims
    expect((await readMarker(store, ''))?.storeId).toBe(owners.find((o) => o !== null)!.storeId);
    for (const g of gs) await g.close();
    await store.close();
  });

  it('a claim on disk whose marker was never created (crash between) is completed on the next use', async () => {
    const store = new MemoryStore();
    const root = tmp();
    const g = await open(store, root, 'a');
    g.catalog.setStoreOwner('bbbbbbbb-1111-2222-3333-444444444444', 'claimed');
    await g.createVolume('v', 1 << 20);
    expect((await readMarker(store, ''))?.storeId).toBe('bbbbbbbb-1111-2222-3333-444444444444');
    expect(g.catalog.storeOwner()?.state).toBe('confirmed');
  });
});

describe('gc rules', () => {
  async function withOrphans() {
    const store = new MemoryStore();
    const g = await open(store, tmp(), 'a');
    await g.createVolume('v', 1 << 20);
    const v = await g.openVolume('v');
    await v.write(0, blockOf(1));
    await v.flush();
    await v.close();
    const orphan = 'blocks/3/' + 'ab'.repeat(16);
    await store.put(orphan, Buffer.alloc(1000, 1));
    // not block-shaped, or outside blocks/: never attributed, never deleted
    await store.put('blocks/3/not-a-hash', Buffer.alloc(10));
    await store.put('blocks/zz/' + 'cd'.repeat(16), Buffer.alloc(10));
    await store.put('elsewhere/' + 'ef'.repeat(16), Buffer.alloc(10));
    return { store, g, orphan };
  }

  it('objects younger than the grace period are never orphans; older ones go, counted with their bytes', async () => {
    const { store, g, orphan } = await withOrphans();
    const keys = await allKeys(store);
    const r1 = await g.gc(); // default grace: 15 min
    expect(r1).toMatchObject({ deletedObjects: 0, orphansDeleted: 0, youngSkipped: 1, deletedBytes: 0, items: [] });
    expect(await allKeys(store)).toEqual(keys);
    store.setModifiedAt(orphan, Date.now() - 16 * 60_000);
    const dry = await g.gc({ dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, orphansDeleted: 1, deletedBytes: 1000, items: [{ key: orphan, size: 1000, kind: 'orphan' }] });
    expect(await allKeys(store)).toEqual(keys); // a dry run deletes nothing
    const r2 = await g.gc();
    expect(r2).toMatchObject({ dryRun: false, deletedObjects: 0, orphansDeleted: 1, deletedBytes: 1000, youngSkipped: 0, items: [{ key: orphan, size: 1000 }] });
    expect(await allKeys(store)).toEqual(keys.filter((k) => k !== orphan));
    expect(await g.gc({ graceMs: 0 })).toMatchObject({ deletedObjects: 0, orphansDeleted: 0, youngSkipped: 0 });
  });

  it('counts only what it really deleted (issue 9 item 18): keys already gone are not counted', async () => {
    const { store, g } = await withOrphans();
    // a delete left unfinished by a dead process, whose object a flush had already removed
    catalogSql(g)
      .prepare('INSERT INTO deleting (key, owner, owner_host, owner_pid, started_at) VALUES (?, ?, ?, ?, ?)')
      .run('blocks/5/' + '12'.repeat(16), 'dead', (await import('node:os')).hostname(), 0x7ffffff0, Date.now());
    // a store whose listing still shows a key deleted meanwhile
    const ghost = 'blocks/6/' + '34'.repeat(16);
    const lagging: ObjectStore = Object.create(store, {
      list: {
        value: async function* (prefix: string) {
          yield* store.list(prefix);
          if (ghost.startsWith(prefix)) yield ghost;
        },
      },
    });
    const g2 = await open(lagging, roots[roots.length - 1], 'a', { gcGraceMs: 0 });
    const r = await g2.gc();
    expect(r).toMatchObject({ deletedObjects: 0, failed: 0 });
    expect(r.orphansDeleted).toBe(1); // the planted orphan only, not the ghost
    expect(r.items.map((i) => i.key)).toEqual(['blocks/3/' + 'ab'.repeat(16)]);
    expect(catalogSql(g2).prepare('SELECT count(*) FROM deleting').pluck().get()).toBe(0);
  });
});
