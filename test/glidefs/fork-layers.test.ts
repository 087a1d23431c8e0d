/**
 * Forks and snapshots as layers (FORMAT.md, "Layers"): constant-time forks
 * (no row copied), isolation both ways at depth 1 and 10, delete of a middle
 * volume, gc after deletes and during a flatten, restore of a chain of forks
 * from the store alone, sharedBlocks.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { GlideFs } from '../../glidefs/glidefs.js';
import { restoreCatalog } from '../../glidefs/restore.js';
import { BLOCK_SIZE } from '../../glidefs/block-key.js';
import { blockOf, listKeys, makeEnv, type Env } from './helpers.js';

const MiB = 1 << 20;
let env: Env | undefined;

afterEach(async () => {
  await env?.cleanup();
  env = undefined;
});

/** Writes block i of volume `name` with a pattern of `seed` and flushes. */
async function put(fs: GlideFs, name: string, writes: Array<[number, number]>): Promise<void> {
  const v = await fs.openVolume(name);
  try {
    for (const [i, seed] of writes) await v.write(i * BLOCK_SIZE, blockOf(seed));
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

/** The expected bytes of a volume from a model: block -> seed (0 = zeros). */
function model(blocks: number, m: Map<number, number>): Buffer {
  const out = Buffer.alloc(blocks * BLOCK_SIZE);
  for (const [i, seed] of m) if (seed !== 0) blockOf(seed).copy(out, i * BLOCK_SIZE);
  return out;
}

/** Every block key named by any volume's visible map. */
function namedKeys(fs: GlideFs): Set<string> {
  const out = new Set<string>();
  for (const v of fs.catalog.listVolumes()) for (const k of fs.catalog.blockMap(v.id).values()) out.add(k);
  return out;
}

describe('forks as layers', () => {
  it('copies no row: the catalog gains no block row and one layer per side, whatever the size', async () => {
    env = await makeEnv('memory');
    const fs = env.fs;
    await fs.createVolume('big', 64 * MiB);
    await put(
      fs,
      'big',
      Array.from({ length: 200 }, (_, i) => [i, i + 1] as [number, number]),
    );
    const before = fs.catalog.rowCounts();
    const info = await fs.fork('big', 'f');
    expect(info).toMatchObject({ name: 'f', parent: 'big', rowsCopied: 0 });
    expect(info.catalogMs).toBeLessThan(1000);
    const after = fs.catalog.rowCounts();
    expect(after.blockRows).toBe(before.blockRows); // nothing copied
    expect(after.layers).toBe(before.layers + 2); // a new top for each side
    expect(after.sealedLayers).toBe(before.sealedLayers + 1);
    const snap = await fs.snapshot('big', 's');
    expect(snap).toMatchObject({ snapshot: true, rowsCopied: 0 });
    expect(fs.catalog.rowCounts().blockRows).toBe(before.blockRows);
    // nothing written since: more snapshots seal nothing and do not deepen the source's chain
    const depth = fs.catalog.layerChain(fs.catalog.volume('big').id).length;
    for (let k = 0; k < 5; k++) await fs.snapshot('big', `s${k}`);
    expect(fs.catalog.layerChain(fs.catalog.volume('big').id)).toHaveLength(depth);
    expect(fs.catalog.rowCounts().sealedLayers).toBe(before.sealedLayers + 1);
    for (const k of [0, 4]) expect((await readAll(fs, `s${k}`)).equals(await readAll(fs, 'big')), `s${k}`).toBe(true);
    expect(fs.stats('f')).toMatchObject({ blocks: 200, sharedBlocks: 200 });
    expect(fs.stats('big')).toMatchObject({ blocks: 200, sharedBlocks: 200 });
  });

  for (const depth of [1, 10]) {
    it(`isolates writes in both directions at depth ${depth}`, async () => {
      env = await makeEnv('memory');
      const fs = env.fs;
      const blocks = 16;
      await fs.createVolume('v0', blocks * BLOCK_SIZE);
      const models: Array<Map<number, number>> = [new Map()];
      await put(fs, 'v0', [
        [0, 1],
        [1, 2],
        [2, 3],
      ]);
      models[0].set(0, 1).set(1, 2).set(2, 3);
      for (let d = 1; d <= depth; d++) {
        await fs.fork(`v${d - 1}`, `v${d}`);
        models[d] = new Map(models[d - 1]);
        // the parent writes after the fork: never seen by the child
        await put(fs, `v${d - 1}`, [[d % blocks, 100 + d]]);
        models[d - 1].set(d % blocks, 100 + d);
        // the child writes, and zeroes a block it inherited: never seen by the parent
        await put(fs, `v${d}`, [[(d + 3) % blocks, 200 + d]]);
        models[d].set((d + 3) % blocks, 200 + d);
        const z = await fs.openVolume(`v${d}`);
        await z.write(2 * BLOCK_SIZE, Buffer.alloc(BLOCK_SIZE)); // a hole over a parent's block: a tombstone
        await z.flush();
        await z.close();
        models[d].set(2, 0);
      }
      expect(fs.catalog.layerChain(fs.catalog.volume(`v${depth}`).id)).toHaveLength(depth + 1);
      for (let d = 0; d <= depth; d++) expect((await readAll(fs, `v${d}`)).equals(model(blocks, models[d])), `v${d}`).toBe(true);
      // and from a cold cache (every read through the catalog's layers)
      const g2 = await env.reopen({ fresh: true });
      for (let d = 0; d <= depth; d++) expect((await readAll(g2, `v${d}`)).equals(model(blocks, models[d])), `cold v${d}`).toBe(true);
    });
  }

  it('deletes a middle volume of a chain: the others read back unchanged, its own objects go, gc leaves no orphan', async () => {
    env = await makeEnv('memory');
    const fs = env.fs;
    await fs.createVolume('a', 8 * BLOCK_SIZE);
    await put(fs, 'a', [
      [0, 1],
      [1, 2],
    ]);
    await fs.fork('a', 'b');
    await put(fs, 'b', [
      [2, 3],
      [0, 4],
    ]);
    await fs.fork('b', 'c');
    await put(fs, 'c', [[3, 5]]);
    await put(fs, 'b', [[4, 6]]); // only b names this one
    const want = { a: await readAll(fs, 'a'), c: await readAll(fs, 'c') };
    const onlyB = [...namedKeys(fs)].filter((k) => k.startsWith('blocks/4/'));
    expect(onlyB).toHaveLength(1);
    await fs.deleteVolume('b');
    await fs.flatten(); // background work the delete started, done now
    expect((await readAll(fs, 'a')).equals(want.a)).toBe(true);
    expect((await readAll(fs, 'c')).equals(want.c)).toBe(true);
    const keys = await listKeys(env.raw);
    expect(keys).not.toContain(onlyB[0]); // b's own object is gone
    for (const k of namedKeys(fs)) expect(keys).toContain(k); // nothing named is gone
    const gc = await fs.gc({ graceMs: 0 });
    expect(gc).toMatchObject({ orphansDeleted: 0, deletedObjects: 0 });
    expect(new Set(await listKeys(env.raw))).toEqual(namedKeys(fs));
    const g2 = await env.reopen({ fresh: true });
    expect((await readAll(g2, 'c')).equals(want.c)).toBe(true);
    // deleting the rest leaves nothing behind, logs included
    await fs.deleteVolume('c');
    await fs.deleteVolume('a');
    await fs.close();
    expect(await listKeys(env.raw)).toEqual([]);
    const logs: string[] = [];
    for await (const k of env.raw.list('volumes/')) logs.push(k);
    expect(logs).toEqual([]);
  });

  it('a parent deleted under live children keeps its layer; flatten merges it when the chain is deep; gc during the flatten deletes nothing named', async () => {
    env = await makeEnv('memory');
    const fs = env.fs;
    await fs.createVolume('p', 64 * BLOCK_SIZE);
    await put(
      fs,
      'p',
      Array.from({ length: 40 }, (_, i) => [i, i + 1] as [number, number]),
    );
    await fs.fork('p', 'c');
    await put(fs, 'c', [
      [0, 500],
      [1, 501],
    ]); // shadows two of p's blocks
    const want = await readAll(fs, 'c');
    await fs.deleteVolume('p'); // c still stands on p's sealed layer
    expect((await readAll(fs, 'c')).equals(want)).toBe(true);
    const cid = fs.catalog.volume('c').id;
    expect(fs.catalog.layerChain(cid)).toHaveLength(2);
    let gcRuns = 0;
    const res = await fs.flatten({
      depth: 0,
      stepRows: 7,
      onStep: async () => {
        // gc between two steps of the merge: deletes no named object, leaves no orphan named by nothing
        const r = await fs.gc({ graceMs: 0 });
        expect(r.orphansDeleted).toBe(0);
        const keys = new Set(await listKeys(env!.raw));
        for (const k of namedKeys(fs)) expect(keys.has(k), k).toBe(true);
        gcRuns++;
      },
    });
    expect(gcRuns).toBeGreaterThan(3);
    expect(res).toMatchObject({ merged: 1, rowsMoved: 38, deletes: 2 }); // p's blocks 0 and 1 were shadowed by c
    expect(fs.catalog.layerChain(cid)).toHaveLength(1);
    expect((await readAll(fs, 'c')).equals(want)).toBe(true);
    await fs.gc({ graceMs: 0 });
    expect(new Set(await listKeys(env.raw))).toEqual(namedKeys(fs));
    const g2 = await env.reopen({ fresh: true });
    expect((await readAll(g2, 'c')).equals(want)).toBe(true);
  });

  it('restores a chain of forks (deleted parent, snapshots, tombstones) from the store alone, identical', async () => {
    env = await makeEnv('dir');
    const fs = env.fs;
    const blocks = 12;
    await fs.createVolume('r', blocks * BLOCK_SIZE);
    await put(fs, 'r', [
      [0, 1],
      [1, 2],
      [5, 3],
    ]);
    await fs.snapshot('r', 'r-snap');
    await fs.fork('r', 'f1');
    await put(fs, 'r', [[0, 10]]);
    const z = await fs.openVolume('f1');
    await z.write(5 * BLOCK_SIZE, Buffer.alloc(BLOCK_SIZE)); // tombstone over r's block 5
    await z.write(7 * BLOCK_SIZE + 100, Buffer.from('partial sector in the log'));
    await z.flush();
    await z.close();
    await fs.fork('f1', 'f2');
    await put(fs, 'f2', [[9, 20]]);
    await fs.fork('f2', 'f3');
    await fs.deleteVolume('f2'); // a middle volume: f3 stands on its layer
    // a live write after the last checkpoint, only in the log
    const l = await fs.openVolume('f3');
    await l.write(3 * BLOCK_SIZE + 4096, Buffer.from('only in a flush record'));
    await l.flush();
    const want = new Map<string, Buffer>();
    want.set('f3', Buffer.from(await l.read(0, l.sizeBytes)));
    await l.close();
    // close checkpointed f3; a flush after it stays in the log
    const l2 = await fs.openVolume('f3');
    await l2.write(11 * BLOCK_SIZE, blockOf(77));
    await l2.flush();
    want.set('f3', Buffer.from(await l2.read(0, l2.sizeBytes)));
    for (const n of ['r', 'r-snap', 'f1']) want.set(n, await readAll(fs, n));
    await env.fs.close();
    rmSync(env.catalogPath);
    rmSync(env.cacheDir, { recursive: true, force: true });

    const res = await restoreCatalog(env.store, '', join(env.root, 'restored.db'));
    expect(res.volumes.map((v) => v.name).sort()).toEqual(['f1', 'f3', 'r', 'r-snap']);
    const g2 = await GlideFs.open({ store: env.store, catalogPath: join(env.root, 'restored.db'), cacheDir: join(env.root, 'cache-r') });
    try {
      for (const [n, bytes] of want) expect((await readAll(g2, n)).equals(bytes), n).toBe(true);
      expect(g2.getVolume('f3')).toMatchObject({ parent: 'f2' });
      // the restored catalog has the layers, not copies: f3 stands on f2's and f1's layers
      expect(g2.catalog.layerChain(g2.catalog.volume('f3').id).length).toBeGreaterThanOrEqual(3);
      // it writes on, and gc on it deletes nothing named
      await put(g2, 'f1', [[4, 99]]);
      await g2.gc({ graceMs: 0 });
      const keys = new Set(await listKeys(env.raw));
      for (const k of namedKeys(g2)) expect(keys.has(k), k).toBe(true);
      for (const [n, bytes] of want) if (n !== 'f1') expect((await readAll(g2, n)).equals(bytes), `after gc ${n}`).toBe(true);
    } finally {
      await g2.close();
    }
  });

  it('sharedBlocks counts blocks another volume reads as the same object', async () => {
    env = await makeEnv('memory');
    const fs = env.fs;
    await fs.createVolume('a', 8 * BLOCK_SIZE);
    await put(fs, 'a', [
      [0, 1],
      [1, 2],
      [2, 3],
    ]);
    await fs.fork('a', 'b');
    expect(fs.stats('b')).toMatchObject({ blocks: 3, sharedBlocks: 3 });
    await put(fs, 'b', [[0, 9]]);
    await put(fs, 'a', [[1, 8]]);
    expect(fs.stats('b')).toMatchObject({ blocks: 3, sharedBlocks: 1 });
    expect(fs.stats('a')).toMatchObject({ blocks: 3, sharedBlocks: 1 });
    await fs.deleteVolume('a');
    expect(fs.stats('b')).toMatchObject({ blocks: 3, sharedBlocks: 0 });
  });
});
