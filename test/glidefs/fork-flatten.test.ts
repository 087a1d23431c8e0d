/**
 * Copy-up flatten of deep chains of live forks (FORMAT.md, "Layers"): a chain
 * of 12 forks of forks, each still live, gets every volume's depth down to the
 * limit + 1 with every volume reading back the same (isolation kept both ways
 * after it), refcounts consistent, gc deleting nothing named and leaving no
 * orphan (also with gc between steps); a fork during the build makes the
 * switch abandon and retry; a half-built layer of a dead process goes at gc;
 * the store is unchanged by it: a restore rebuilds the old chain, same reads.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { GlideFs } from '../../glidefs/glidefs.js';
import { restoreCatalog } from '../../glidefs/restore.js';
import { BLOCK_SIZE } from '../../glidefs/block-key.js';
import { blockOf, catalogSql, listKeys, makeEnv, type Env } from './helpers.js';

const LIMIT = 8; // the default flattenDepth
const BLOCKS = 48;
const LEVELS = 12;
let env: Env | undefined;

afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

async function put(fs: GlideFs, name: string, writes: Array<[number, number]>): Promise<void> {
  const v = await fs.openVolume(name);
  try {
    for (const [i, seed] of writes) await v.write(i * BLOCK_SIZE, seed === 0 ? Buffer.alloc(BLOCK_SIZE) : blockOf(seed));
    await v.flush();
  } finally {
    await v.close();
  }
}

async function readAll(fs: GlideFs, name: string): Promise<Buffer> {
  const v = await fs.openVolume(name);
  try {
    return Buffer.from(await v.read(0, v.sizeBytes));
  } finally {
    await v.close();
  }
}

function model(m: Map<number, number>): Buffer {
  const out = Buffer.alloc(BLOCKS * BLOCK_SIZE);
  for (const [i, seed] of m) if (seed !== 0) blockOf(seed).copy(out, i * BLOCK_SIZE);
  return out;
}

function namedKeys(fs: GlideFs): Set<string> {
  const out = new Set<string>();
  for (const v of fs.catalog.listVolumes()) for (const k of fs.catalog.blockMap(v.id).values()) out.add(k);
  return out;
}

/** Refcount of every object = the rows naming it; every layer is on some volume's chain; nothing half built. */
function checkCatalog(fs: GlideFs): void {
  const db = catalogSql(fs);
  try {
    const refs = db.prepare('SELECT key, refcount FROM objects ORDER BY key').raw().all();
    const rows = db.prepare("SELECT key, count(*) FROM blocks WHERE key != '' GROUP BY key ORDER BY key").raw().all();
    expect(refs).toEqual(rows);
    const onChains = new Set<number>();
    for (const v of fs.catalog.listVolumes()) for (const l of fs.catalog.layerChain(v.id)) onChains.add(l);
    const layers = db.prepare('SELECT id FROM layers ORDER BY id').pluck().all() as number[];
    expect(layers).toEqual([...onChains].sort((a, b) => a - b));
  } finally {
    db.close();
  }
}

/** v0..v11: each a live fork of the previous, each written (and one block zeroed) at its level. */
async function buildChain(fs: GlideFs): Promise<Array<Map<number, number>>> {
  await fs.createVolume('v0', BLOCKS * BLOCK_SIZE);
  const models: Array<Map<number, number>> = [new Map()];
  await put(fs, 'v0', Array.from({ length: 20 }, (_, i) => [i, i + 1] as [number, number]));
  for (let i = 0; i < 20; i++) models[0].set(i, i + 1);
  for (let d = 1; d < LEVELS; d++) {
    await fs.fork(`v${d - 1}`, `v${d}`);
    models[d] = new Map(models[d - 1]);
    // the parent writes after the fork (seals nothing new until its next fork), the child writes and zeroes
    await put(fs, `v${d - 1}`, [[20 + d, 100 + d]]);
    models[d - 1].set(20 + d, 100 + d);
    await put(fs, `v${d}`, [
      [d, 200 + d],
      [30 + d, 300 + d],
      [d + 10, 0],
    ]);
    models[d].set(d, 200 + d).set(30 + d, 300 + d).set(d + 10, 0);
  }
  return models;
}

async function checkReads(fs: GlideFs, models: Array<Map<number, number>>, names?: string[]): Promise<void> {
  for (let d = 0; d < models.length; d++) expect((await readAll(fs, names?.[d] ?? `v${d}`)).equals(model(models[d])), names?.[d] ?? `v${d}`).toBe(true);
}

describe('copy-up flatten of live fork chains', () => {
  it('12 live forks of forks: depth <= limit+1, same reads, isolation both ways after, gc between steps deletes nothing named, no orphan', async () => {
    env = await makeEnv('memory');
    const fs = env.fs;
    const models = await buildChain(fs);
    const depthOf = (d: number) => fs.catalog.layerChain(fs.catalog.volume(`v${d}`).id).length;
    expect(depthOf(LEVELS - 1)).toBeGreaterThan(LIMIT + 1);
    await checkReads(fs, models);
    const rawBefore = new Set(await listKeys(env.raw));
    let steps = 0;
    const res = await fs.flatten({
      stepRows: 7,
      onStep: async () => {
        steps++;
        const gc = await fs.gc({ graceMs: 0 });
        expect(gc).toMatchObject({ orphansDeleted: 0, deletedObjects: 0 });
        const keys = new Set(await listKeys(env!.raw));
        for (const k of namedKeys(fs)) expect(keys.has(k), k).toBe(true);
      },
    });
    await fs.flatten(); // the background flatten gc started: done too
    expect(res.copiedUp).toBeGreaterThan(0);
    expect(steps).toBeGreaterThan(res.copiedUp); // several steps per copy-up, gc between each
    for (let d = 0; d < LEVELS; d++) expect(depthOf(d), `v${d}`).toBeLessThanOrEqual(LIMIT + 1);
    await checkReads(fs, models);
    checkCatalog(fs);
    // no object named before is gone (copy-up moves names, deletes no data every volume still reads)
    const after = new Set(await listKeys(env.raw));
    for (const k of namedKeys(fs)) expect(after.has(k)).toBe(true);
    expect([...after].every((k) => rawBefore.has(k))).toBe(true);
    // isolation both ways after the flatten: every volume writes its own blocks over shared ones
    for (let d = 0; d < LEVELS; d++) {
      await put(fs, `v${d}`, [
        [d, 400 + d],
        [47 - d, 500 + d],
      ]);
      models[d].set(d, 400 + d).set(47 - d, 500 + d);
    }
    await checkReads(fs, models);
    const g2 = await env.reopen({ fresh: true });
    await checkReads(g2, models);
    const gc = await fs.gc({ graceMs: 0 });
    expect(gc).toMatchObject({ orphansDeleted: 0, deletedObjects: 0 });
    await fs.flatten();
    checkCatalog(fs);
    expect(new Set(await listKeys(env.raw))).toEqual(namedKeys(fs));
    // deleting every volume leaves nothing (no layer or refcount left behind by the copy-up)
    for (let d = 0; d < LEVELS; d++) await fs.deleteVolume(`v${d}`);
    await fs.flatten();
    expect(await listKeys(env.raw)).toEqual([]);
  });

  it('a fork of the volume during the build makes the switch abandon (rows and refs dropped), then the retry flattens', async () => {
    env = await makeEnv('memory');
    const fs = env.fs;
    const models = await buildChain(fs);
    const want = new Map(models.map((m, d) => [`v${d}`, m]));
    let forked = '';
    const res = await fs.flatten({
      stepRows: 5,
      onStep: async () => {
        if (forked) return;
        // the volume being copied up (the first deep one): written (a non-empty top) and forked, which seals its top
        const id = fs.catalog.deepVolumes(LIMIT)[0].volume;
        forked = fs.catalog.listVolumes().find((v) => v.id === id)!.name;
        await put(fs, forked, [[47, 999]]);
        want.get(forked)!.set(47, 999);
        await fs.fork(forked, 'x');
        await put(fs, 'x', [[46, 777]]);
        want.set('x', new Map(want.get(forked)!).set(46, 777));
      },
    });
    expect(forked).not.toBe('');
    expect(res.abandoned).toBe(1);
    expect(res.copiedUp).toBeGreaterThan(0);
    for (const n of want.keys()) expect(fs.catalog.layerChain(fs.catalog.volume(n).id).length, n).toBeLessThanOrEqual(LIMIT + 1);
    await checkReads(fs, [...want.values()], [...want.keys()]);
    checkCatalog(fs);
    const gc = await fs.gc({ graceMs: 0 });
    expect(gc).toMatchObject({ orphansDeleted: 0, deletedObjects: 0 });
    expect(new Set(await listKeys(env.raw))).toEqual(namedKeys(fs));
  });

  it('a copy-up layer a dead process left half built is dropped by gc, its refs released', async () => {
    env = await makeEnv('memory');
    const fs = env.fs;
    const models = await buildChain(fs);
    const dead = spawnSync(process.execPath, ['-e', '']).pid!;
    const top = fs.catalog.volume(`v${LEVELS - 1}`).layer;
    const v = fs.catalog.deepVolumes(LIMIT).find((x) => x.top === top)!;
    const m = fs.catalog.copyUpBegin({ token: 'dead', host: hostname(), pid: dead });
    const step = fs.catalog.copyUpStep(m, v.parent, -1, 10);
    expect(step.rows).toBeGreaterThan(0);
    const gc = await fs.gc({ graceMs: 0 });
    expect(gc).toMatchObject({ orphansDeleted: 0, deletedObjects: 0 });
    await fs.flatten();
    checkCatalog(fs); // M is gone: every layer is on a chain, refcounts = rows
    await checkReads(fs, models);
    for (let d = 0; d < LEVELS; d++) await fs.deleteVolume(`v${d}`);
    await fs.flatten();
    expect(await listKeys(env.raw)).toEqual([]);
  });

  it('the store is unchanged by a copy-up: restore from the store alone rebuilds the deep chain, reading the same; a flatten copies it up again', async () => {
    env = await makeEnv('memory');
    const fs = env.fs;
    const models = await buildChain(fs);
    expect((await fs.flatten()).copiedUp).toBeGreaterThan(0);
    for (let d = 0; d < LEVELS; d++) {
      await put(fs, `v${d}`, [[40 + (d % 8), 600 + d]]);
      models[d].set(40 + (d % 8), 600 + d);
      const v = await fs.openVolume(`v${d}`);
      await v.checkpoint(); // a checkpoint after the switch lies on M's name (= the replaced layer's)
      await v.close();
    }
    await checkReads(fs, models);
    await fs.close();
    rmSync(env.catalogPath);
    rmSync(env.cacheDir, { recursive: true, force: true });
    const res = await restoreCatalog(env.store, '', join(env.root, 'restored.db'));
    expect(res.volumes).toHaveLength(LEVELS);
    const g2 = await GlideFs.open({ store: env.store, catalogPath: join(env.root, 'restored.db'), cacheDir: join(env.root, 'cache-r') });
    try {
      await checkReads(g2, models);
      expect(g2.catalog.layerChain(g2.catalog.volume(`v${LEVELS - 1}`).id).length).toBeGreaterThan(LIMIT + 1); // the old chain
      expect((await g2.flatten()).copiedUp).toBeGreaterThan(0);
      for (let d = 0; d < LEVELS; d++) expect(g2.catalog.layerChain(g2.catalog.volume(`v${d}`).id).length).toBeLessThanOrEqual(LIMIT + 1);
      await checkReads(g2, models);
      checkCatalog(g2);
    } finally {
      await g2.close();
    }
  });
});
