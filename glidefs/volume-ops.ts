/**
 * Catalog operations recorded in the store (FORMAT.md, "Catalog operations
 * in the store"): create, fork/snapshot and delete each write a record in the
 * volume's log before (create, fork) or as (delete) they change the catalog,
 * so that the store alone reproduces every volume (restore.ts).
 */
import pLimit from 'p-limit';
import { randomBytes } from 'node:crypto';
import { GlideFsError } from './errors.js';
import type { ObjectStore } from './object-store.js';
import { blockKey, keyHash } from './block-key.js';
import type { Catalog, Owner, VolumeRow } from './catalog.js';
import { encodeRecord, KIND_CHECKPOINT, KIND_DELETE, logKey, type CheckpointRecord, type DeleteRecord } from './log-record.js';
import { createRecord, fencedError, listLog, materializeMany, RecordCache, RecordGone, ZERO_HASH } from './volume-log.js';

export interface OpsDeps {
  catalog: Catalog;
  store: ObjectStore;
  prefix: string;
  owner: Owner;
  uploadConcurrency: number;
}

/** Writes the seq-1 checkpoint of a new volume, then inserts its catalog row. */
export async function createVolumeInStore(d: OpsDeps, name: string, sizeBytes: number): Promise<VolumeRow> {
  if (d.catalog.findVolume(name)) throw GlideFsError.VOLUME_EXISTS(name);
  const uuid = randomBytes(16).toString('hex');
  const createdAt = Date.now();
  const rec: CheckpointRecord = {
    kind: KIND_CHECKPOINT,
    volume: uuid,
    seq: 1,
    time: createdAt,
    writer: d.owner.token,
    meta: { name, sizeBytes, parent: null, parentUuid: null, parentSeq: null, family: uuid, snapshot: false, createdAt },
    blocks: [],
  };
  const body = await encodeRecord(rec);
  const out = await createRecord(d.store, d.prefix, uuid, 1, body);
  if (!out.created) throw GlideFsError.CORRUPT(`new volume id ${uuid} already has a log in the store`);
  try {
    return d.catalog.createVolume(name, sizeBytes, uuid, createdAt, body.length);
  } catch (err) {
    await d.store.delete(logKey(d.prefix, uuid, 1)).catch(() => undefined);
    throw err;
  }
}

/**
 * Fork/snapshot: the source's committed map, with every logged block folded
 * into a whole block object (uploaded unless the catalog has it), becomes the
 * child's seq-1 checkpoint, then its catalog row. The source is not written.
 */
export async function forkInStore(d: OpsDeps, src: string, dst: string, snapshot: boolean): Promise<VolumeRow> {
  for (let attempt = 0; ; attempt++) {
    const s = d.catalog.volume(src);
    const plan = d.catalog.planFork(s.id, d.owner);
    const pendingKeys = [...new Set(plan.blocks.values())];
    try {
      const blocks = new Map(plan.blocks);
      const folds: Array<{ i: number; key: string; base: string | undefined; l: { hash: string; seqs: number[] } }> = [];
      for (const [i, l] of plan.logged) {
        if (l.hash === ZERO_HASH) blocks.delete(i);
        else {
          const key = blockKey(d.prefix, i, l.hash);
          folds.push({ i, key, base: plan.blocks.get(i), l });
          blocks.set(i, key);
        }
      }
      const up = d.catalog.planUploads(
        folds.map((f) => f.key),
        d.owner,
      );
      pendingKeys.push(...folds.map((f) => f.key));
      const need = new Set(up.upload);
      const records = new RecordCache(d.store, d.prefix, s.uuid, 32);
      const limit = pLimit(d.uploadConcurrency);
      const uploads: Array<{ blockIndex: number; key: string }> = [];
      const todo = folds.filter((f) => need.has(f.key));
      // in batches: each record is read once per batch, whatever the number of blocks it holds sectors of
      for (let b = 0; b < todo.length; b += 256) {
        const batch = todo.slice(b, b + 256);
        const bytes = await materializeMany(d.store, records, `volume '${src}'`, batch.map((f) => ({ i: f.i, base: f.base, logged: f.l })));
        await Promise.all(
          batch.map((f) =>
            limit(async () => {
              await d.store.put(f.key, bytes.get(f.i)!);
              uploads.push({ blockIndex: f.i, key: f.key });
            }),
          ),
        );
      }
      const uuid = randomBytes(16).toString('hex');
      const createdAt = Date.now();
      const rec: CheckpointRecord = {
        kind: KIND_CHECKPOINT,
        volume: uuid,
        seq: 1,
        time: createdAt,
        writer: d.owner.token,
        meta: {
          name: dst,
          sizeBytes: s.size_bytes,
          parent: s.name,
          parentUuid: s.uuid,
          parentSeq: s.log_seq,
          family: s.family_uuid ?? s.uuid,
          snapshot,
          createdAt,
        },
        blocks: [...blocks].sort((a, b) => a[0] - b[0]).map(([i, k]) => [i, keyHash(k)]),
      };
      const body = await encodeRecord(rec);
      const out = await createRecord(d.store, d.prefix, uuid, 1, body);
      if (!out.created) throw GlideFsError.CORRUPT(`new volume id ${uuid} already has a log in the store`);
      try {
        return d.catalog.insertFork(s, dst, uuid, snapshot, createdAt, blocks, uploads, body.length, d.owner);
      } catch (err) {
        await d.store.delete(logKey(d.prefix, uuid, 1)).catch(() => undefined);
        throw err;
      }
    } catch (err) {
      try {
        d.catalog.dropPending(pendingKeys, d.owner);
      } catch {
        // stale once this process ends
      }
      // a checkpoint of the source folded a record we needed: plan again from the catalog
      if (err instanceof RecordGone && attempt < 3) continue;
      if (err instanceof RecordGone) throw GlideFsError.CORRUPT(`fork of '${src}': log record ${err.seq} is missing from the store`);
      throw err;
    }
  }
}

/**
 * Delete, step 1: the delete record (a tombstone) at the volume's next seq,
 * fenced like a flush. The caller then runs the catalog transaction and
 * deleteVolumeLog.
 */
export async function writeDeleteRecord(d: OpsDeps, row: VolumeRow): Promise<void> {
  const seq = row.log_seq + 1;
  const rec: DeleteRecord = { kind: KIND_DELETE, volume: row.uuid, seq, time: Date.now(), writer: d.owner.token };
  const out = await createRecord(d.store, d.prefix, row.uuid, seq, await encodeRecord(rec));
  // a delete record there already: a delete cut after its tombstone (kill -9, an answer given up on); finish it
  if (!out.created && out.existing.kind !== KIND_DELETE) throw fencedError(row.name, row.uuid, seq, out.existing);
}

/** Delete, last step: every record of a deleted volume, the tombstone (highest seq) last. */
export async function deleteVolumeLog(d: OpsDeps, uuid: string): Promise<number> {
  const seqs = await listLog(d.store, d.prefix, uuid);
  const top = seqs.pop();
  const limit = pLimit(d.uploadConcurrency);
  await Promise.all(seqs.map((s) => limit(() => d.store.delete(logKey(d.prefix, uuid, s)))));
  if (top !== undefined) await d.store.delete(logKey(d.prefix, uuid, top));
  return seqs.length + (top === undefined ? 0 : 1);
}
