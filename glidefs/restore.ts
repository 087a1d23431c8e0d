/**
 * Restore: rebuilds a SQLite catalog from the store alone (FORMAT.md,
 * "Restore"), and gc of the log (records below a checkpoint, volumes whose
 * newest record is a delete).
 *
 * Restore lists `<prefix>/volumes/`, and per volume GETs records from the
 * newest down to the newest checkpoint, then applies them upward with the
 * same code the catch-up uses (Catalog.replayRecord). Refcounts come from the
 * block maps. Nothing in the store is written or deleted.
 */
import { existsSync, statSync } from 'node:fs';
import { GlideFsError } from './errors.js';
import type { ObjectStore } from './object-store.js';
import { Catalog, newOwner, type Owner, type StoreName } from './catalog.js';
import { blockKey } from './block-key.js';
import { KIND_CHECKPOINT, KIND_DELETE, logKey, parseLogKey, volumesPrefix, type CheckpointRecord, type LogRecord } from './log-record.js';
import { readRecord } from './volume-log.js';
import { parseLease, parseLeaseKey } from './lease.js';
import { adoptStoreMarker } from './store-marker.js';
import pLimit from 'p-limit';

export interface RestoreResult {
  volumes: Array<{ name: string; uuid: string; logSeq: number; checkpointSeq: number; blocks: number }>;
  /** Volumes whose newest record is a delete (skipped). */
  deletedVolumes: number;
  /** Volumes skipped because a checkpoint they lie on is gone (a fork cut off before its catalog commit; FORMAT.md, "Layers"). */
  unrestorable: Array<{ uuid: string; name: string; why: string }>;
  recordsRead: number;
  bytesRead: number;
  listed: number;
  durationMs: number;
}

/** A checkpoint a volume lies on is gone from the store. */
class MissingBase extends Error {}

/** Every volume's record seqs in the store, ascending. */
async function listVolumes(store: ObjectStore, prefix: string): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  for await (const k of store.list(volumesPrefix(prefix))) {
    const p = parseLogKey(prefix, k);
    if (!p) continue;
    let l = out.get(p.uuid);
    if (!l) out.set(p.uuid, (l = []));
    l.push(p.seq);
  }
  for (const l of out.values()) l.sort((a, b) => a - b);
  return out;
}

/**
 * Rebuilds the catalog at `catalogPath` (which must not exist, or hold no
 * volume) from the store. Refuses with E_INVALID otherwise, changing nothing.
 */
export async function restoreCatalog(store: ObjectStore, prefix: string, catalogPath: string): Promise<RestoreResult> {
  const t0 = performance.now();
  if (existsSync(catalogPath) && statSync(catalogPath).size > 0) {
    const c = Catalog.open(catalogPath);
    const n = c.listVolumes().length;
    c.close();
    if (n > 0) throw GlideFsError.INVALID(`catalog ${catalogPath} already holds ${n} volumes: restore needs a new catalog path`);
  }
  const vols = await listVolumes(store, prefix);
  let recordsRead = 0;
  let bytesRead = 0;
  let deletedVolumes = 0;
  // read each volume's records, newest down to its newest checkpoint
  const plans: Array<{ uuid: string; recs: Array<{ rec: LogRecord; bytes: number }> }> = [];
  const limit = pLimit(8);
  await Promise.all(
    [...vols].map(([uuid, seqs]) =>
      limit(async () => {
        const recs: Array<{ rec: LogRecord; bytes: number }> = [];
        for (let k = seqs.length - 1; k >= 0; k--) {
          const r = await readRecord(store, prefix, uuid, seqs[k]);
          if (r === null) throw GlideFsError.CORRUPT(`volume ${uuid}: log record ${seqs[k]} vanished during restore`);
          recordsRead++;
          bytesRead += r.bytes;
          if (r.rec.kind === KIND_DELETE) {
            if (k === seqs.length - 1) {
              deletedVolumes++;
              return;
            }
            throw GlideFsError.CORRUPT(`volume ${uuid}: delete record ${seqs[k]} is not its newest record`);
          }
          recs.unshift(r);
          if (r.rec.kind === KIND_CHECKPOINT) break;
        }
        if (recs.length === 0 || recs[0].rec.kind !== KIND_CHECKPOINT) throw GlideFsError.CORRUPT(`volume ${uuid}: no checkpoint record in the store`);
        for (let j = 1; j < recs.length; j++) {
          if (recs[j].rec.seq !== recs[j - 1].rec.seq + 1) {
            throw GlideFsError.CORRUPT(`volume ${uuid}: log record ${recs[j - 1].rec.seq + 1} is missing (next is ${recs[j].rec.seq})`);
          }
        }
        plans.push({ uuid, recs });
      }),
    ),
  );
  const catalog = Catalog.open(catalogPath);
  const owner: Owner = newOwner();
  const out: RestoreResult['volumes'] = [];
  const unrestorable: RestoreResult['unrestorable'] = [];
  try {
    // the rebuilt catalog is the store's catalog (store-marker.ts)
    await adoptStoreMarker(store, prefix, catalog);
    const names = new Map<string, string>();
    for (const p of plans) {
      const cp = p.recs[0].rec as CheckpointRecord;
      const other = names.get(cp.meta.name);
      if (other) throw GlideFsError.CORRUPT(`two volumes named '${cp.meta.name}' in the store: ${other} and ${p.uuid}`);
      names.set(cp.meta.name, p.uuid);
    }
    plans.sort((a, b) => (a.recs[0].rec as CheckpointRecord).meta.createdAt - (b.recs[0].rec as CheckpointRecord).meta.createdAt);
    // Layers (FORMAT.md, "Layers"): each checkpoint a volume's checkpoint lies on (its base, and theirs,
    // down to a checkpoint with none) becomes a sealed layer named by it, read once whatever the number of
    // volumes on it. The newest checkpoint of a live volume that is itself a base is shared, not copied.
    const fromPlans = new Map(plans.map((p) => [`${p.uuid}:${p.recs[0].rec.seq}`, p.recs[0].rec as CheckpointRecord]));
    const layers = new Map<string, Promise<number>>();
    const layerFor = (name: StoreName, via: string[]): Promise<number> => {
      const id = `${name.volume}:${name.seq}`;
      if (via.includes(id)) throw GlideFsError.CORRUPT(`checkpoint ${id} lies on itself (${via.join(' -> ')})`);
      let l = layers.get(id);
      if (!l) {
        l = (async () => {
          let cp = fromPlans.get(id);
          if (!cp) {
            const r = await readRecord(store, prefix, name.volume, name.seq);
            if (r === null) throw new MissingBase(`checkpoint record ${name.seq} of volume ${name.volume}, which it lies on, is missing from the store`);
            if (r.rec.kind !== KIND_CHECKPOINT) throw GlideFsError.CORRUPT(`record ${name.seq} of volume ${name.volume}, which a volume lies on, is not a checkpoint`);
            recordsRead++;
            bytesRead += r.bytes;
            cp = r.rec;
          }
          const base = cp.meta.base ?? null;
          const parent = base ? await layerFor(base, [...via, id]) : null;
          return catalog.insertSealedLayer(name, base, parent, cp.blocks.map(([i, h]) => [i, h === null ? null : blockKey(prefix, i, h)]));
        })();
        layers.set(id, l);
      }
      return l;
    };
    const bases = new Set<string>();
    for (const p of plans) {
      const b = (p.recs[0].rec as CheckpointRecord).meta.base;
      if (b) bases.add(`${b.volume}:${b.seq}`);
    }
    for (const p of plans) {
      const cp = p.recs[0].rec as CheckpointRecord;
      const m = cp.meta;
      const base = m.base ?? null;
      if (base) {
        try {
          await layerFor(base, [p.uuid]);
        } catch (err) {
          if (!(err instanceof MissingBase)) throw err;
          unrestorable.push({ uuid: p.uuid, name: m.name, why: err.message });
          continue;
        }
      }
      let id: number;
      if (bases.has(`${p.uuid}:${cp.seq}`)) {
        // a fork point of another volume: the volume stands on it with an empty top layer
        id = catalog.insertRestoredVolume(p.uuid, m, cp.seq, await layerFor({ volume: p.uuid, seq: cp.seq }, []), [], base);
      } else {
        const parent = base ? await layerFor(base, [p.uuid]) : null;
        id = catalog.insertRestoredVolume(p.uuid, m, cp.seq, parent, cp.blocks.map(([i, h]) => [i, h === null ? null : blockKey(prefix, i, h)]), base);
      }
      for (const r of p.recs.slice(1)) catalog.replayRecord(id, r.rec, prefix, r.bytes, owner);
      const row = catalog.volumeById(id)!;
      out.push({ name: m.name, uuid: p.uuid, logSeq: row.log_seq, checkpointSeq: row.checkpoint_seq, blocks: catalog.blockMap(id).size });
    }
    catalog.finishRestore();
  } finally {
    catalog.close();
  }
  return { volumes: out, deletedVolumes, unrestorable, recordsRead, bytesRead, listed: [...vols.values()].reduce((a, l) => a + l.length, 0), durationMs: performance.now() - t0 };
}

/**
 * Block keys that log records the catalog has not applied name (FORMAT.md,
 * "gc rule"): records past a catalog volume's `log_seq` (a flush or
 * checkpoint whose record landed while its commit did not: an answer lost
 * after the store's retries, a crash between the PUT and the commit) and
 * every record of a volume the catalog does not know whose newest record is
 * not a delete (a create or fork cut before its commit). The next catch-up
 * applies such a record, so what it names is live: gc's orphan step keeps it.
 */
export async function keysPastCatalog(d: { catalog: Catalog; store: ObjectStore; prefix: string; uploadConcurrency: number }): Promise<Set<string>> {
  const vols = new Map<string, number[]>();
  for await (const k of d.store.list(volumesPrefix(d.prefix))) {
    const p = parseLogKey(d.prefix, k);
    if (!p) continue;
    let l = vols.get(p.uuid);
    if (!l) vols.set(p.uuid, (l = []));
    l.push(p.seq);
  }
  const known = new Map(d.catalog.listVolumes().map((v) => [v.uuid, v.log_seq]));
  const out = new Set<string>();
  const limit = pLimit(d.uploadConcurrency);
  await Promise.all(
    [...vols].map(([uuid, seqs]) =>
      limit(async () => {
        const logSeq = known.get(uuid) ?? 0;
        // newest first: a volume the catalog does not know whose newest record is a delete is gone
        for (let k = seqs.length - 1; k >= 0 && seqs[k] > logSeq; k--) {
          const r = await readRecord(d.store, d.prefix, uuid, seqs[k]);
          if (r === null) continue;
          if (r.rec.kind === KIND_DELETE) {
            if (!known.has(uuid)) return;
            continue;
          }
          for (const [i, h] of r.rec.blocks) if (h !== null) out.add(blockKey(d.prefix, i, h));
        }
      }),
    ),
  );
  return out;
}

/** A log record or lease gc deleted (or, in a dry run, would delete). */
export interface GcLogItem {
  key: string;
  size: number;
  modifiedAt: number;
  /** `log-record`: below a checkpoint of a volume of this catalog, or of a volume this catalog deleted. `lease`: of a volume that has no log left. */
  kind: 'log-record' | 'lease';
}

export interface GcLogsResult {
  /** Log records deleted (dry run: that would be deleted). */
  records: number;
  items: GcLogItem[];
  /** Deleted volumes' logs left alone: their delete record was written by no writer of this catalog. */
  unattributed: number;
}

/**
 * gc of the log (FORMAT.md, "gc rule", step 3): records below each catalog
 * volume's checkpoint, and every record of a volume the catalog does not
 * know whose newest record is a delete written by one of this catalog's
 * writers (Catalog.isOwnWriter; tombstone last); leases of volumes with no
 * log left that are released or expired. Everything else under `volumes/` is
 * left alone: a create in progress, a volume of another catalog of the same
 * store (a restored one on another machine), anything not attributable.
 * `dryRun` lists and deletes nothing.
 */
export async function gcLogs(
  d: { catalog: Catalog; store: ObjectStore; prefix: string; uploadConcurrency: number },
  opts: { dryRun?: boolean } = {},
): Promise<GcLogsResult> {
  const vols = new Map<string, number[]>();
  const leases: string[] = [];
  for await (const k of d.store.list(volumesPrefix(d.prefix))) {
    const p = parseLogKey(d.prefix, k);
    if (p) {
      let l = vols.get(p.uuid);
      if (!l) vols.set(p.uuid, (l = []));
      l.push(p.seq);
    } else if (parseLeaseKey(d.prefix, k) !== null) leases.push(k);
  }
  for (const l of vols.values()) l.sort((a, b) => a - b);
  const known = new Map(d.catalog.listVolumes().map((v) => [v.uuid, v]));
  const kept = d.catalog.keptRecords(); // checkpoints a layer lies on (FORMAT.md, "Layers")
  const isKept = (uuid: string, s: number) => kept.has(`${uuid}:${s}`);
  const plan: Array<{ key: string; kind: GcLogItem['kind']; last: boolean }> = [];
  let unattributed = 0;
  for (const [uuid, seqs] of vols) {
    const v = known.get(uuid);
    if (v) {
      for (const s of seqs) if (s < v.checkpoint_seq && !isKept(uuid, s)) plan.push({ key: logKey(d.prefix, uuid, s), kind: 'log-record', last: false });
      continue;
    }
    const top = seqs[seqs.length - 1];
    const r = await readRecord(d.store, d.prefix, uuid, top).catch(() => null);
    if (r === null || r.rec.kind !== KIND_DELETE) continue;
    if (!d.catalog.isOwnWriter(r.rec.writer)) {
      unattributed++;
      continue;
    }
    // the tombstone stays while a kept record does
    const keepTop = seqs.some((s) => isKept(uuid, s));
    for (const s of seqs) if (!isKept(uuid, s) && !(s === top && keepTop)) plan.push({ key: logKey(d.prefix, uuid, s), kind: 'log-record', last: s === top });
  }
  const now = Date.now();
  for (const k of leases) {
    const uuid = parseLeaseKey(d.prefix, k)!;
    if (vols.has(uuid) || known.has(uuid)) continue;
    const buf = await d.store.get(k).catch(() => null);
    if (buf === null) continue;
    let free = false;
    try {
      const b = parseLease(buf, k);
      free = b.released || now >= b.expiresAt;
    } catch {
      free = false; // not ours to judge
    }
    if (free) plan.push({ key: k, kind: 'lease', last: false });
  }
  const limit = pLimit(d.uploadConcurrency);
  const items: GcLogItem[] = [];
  const run = (xs: typeof plan) =>
    Promise.all(
      xs.map((x) =>
        limit(async () => {
          const head = await d.store.head(x.key).catch(() => null);
          if (head === null) return;
          if (!opts.dryRun) {
            try {
              await d.store.delete(x.key);
            } catch {
              return; // the next gc sees it again
            }
          }
          items.push({ key: x.key, size: head.size, modifiedAt: head.modifiedAt, kind: x.kind });
        }),
      ),
    );
  await run(plan.filter((x) => !x.last));
  await run(plan.filter((x) => x.last)); // tombstones last: a deleted volume's log never looks alive
  items.sort((a, b) => (a.key < b.key ? -1 : 1));
  return { records: items.filter((i) => i.kind === 'log-record').length, items, unattributed };
}
