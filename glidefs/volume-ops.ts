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
import { ForkMoved, type Catalog, type Owner, type VolumeRow } from './catalog.js';
import { encodeRecord, KIND_CHECKPOINT, KIND_DELETE, logKey, type CheckpointRecord, type DeleteRecord } from './log-record.js';
import { createRecord, deleteObjects, fencedError, listLog } from './volume-log.js';
import { recordsPast } from './checkpoint.js';

export interface OpsDeps {
  catalog: Catalog;
  store: ObjectStore;
  prefix: string;
  owner: Owner;
  uploadConcurrency: number;
}

/**
 * PUTs the seq-1 checkpoint of a new volume (no blocks of its own) under a
 * fresh id; `meta` gets that id and the creation time. Create and fork both
 * start here, then insert the catalog row (and delete this record again if
 * that fails).
 */
async function putFirstCheckpoint(
  d: OpsDeps,
  meta: (uuid: string, createdAt: number) => CheckpointRecord['meta'],
): Promise<{ uuid: string; createdAt: number; bytes: number }> {
  const uuid = randomBytes(16).toString('hex');
  const createdAt = Date.now();
  const rec: CheckpointRecord = { kind: KIND_CHECKPOINT, volume: uuid, seq: 1, time: createdAt, writer: d.owner.token, meta: meta(uuid, createdAt), blocks: [] };
  const body = await encodeRecord(rec);
  const out = await createRecord(d.store, d.prefix, uuid, 1, body);
  if (!out.created) throw GlideFsError.CORRUPT(`new volume id ${uuid} already has a log in the store`);
  return { uuid, createdAt, bytes: body.length };
}

/** Writes the seq-1 checkpoint of a new volume, then inserts its catalog row. */
export async function createVolumeInStore(d: OpsDeps, name: string, sizeBytes: number): Promise<VolumeRow> {
  if (d.catalog.findVolume(name)) throw GlideFsError.VOLUME_EXISTS(name);
  const { uuid, createdAt, bytes } = await putFirstCheckpoint(d, (uuid, createdAt) => ({
    name,
    sizeBytes,
    parent: null,
    parentUuid: null,
    parentSeq: null,
    family: uuid,
    snapshot: false,
    createdAt,
  }));
  try {
    return d.catalog.createVolume(name, sizeBytes, uuid, createdAt, bytes);
  } catch (err) {
    await d.store.delete(logKey(d.prefix, uuid, 1)).catch(() => undefined);
    throw err;
  }
}

/** What a fork or snapshot did (FORMAT.md, "Layers"). */
export interface ForkOutcome {
  row: VolumeRow;
  /** The source's checkpoint record the child lies on (the fork point). */
  parentSeq: number;
  /** Block-map rows copied: always 0 (the source's layer is sealed and shared). */
  rowsCopied: number;
  /** The catalog transaction alone (ms). */
  catalogMs: number;
  /** Times the source had moved on past its checkpoint and was checkpointed again. */
  retries: number;
}

/**
 * Fork/snapshot in constant time (FORMAT.md, "Layers"): `settle` brings the
 * source to a checkpoint with nothing logged (its holder folds its log: the
 * bytes are in its cache), then the child's seq-1 checkpoint — no blocks,
 * `base` = the source's checkpoint record — is PUT, then one catalog
 * transaction seals the source's top layer and gives both sides a new empty
 * top layer. A source that moved on meanwhile (a flush after its checkpoint)
 * is settled again.
 */
export async function forkInStore(
  d: OpsDeps,
  src: string,
  dst: string,
  snapshot: boolean,
  settle: () => Promise<void>,
): Promise<ForkOutcome> {
  for (let attempt = 0; ; attempt++) {
    await settle();
    const s = d.catalog.volume(src);
    if (s.log_seq !== s.checkpoint_seq || d.catalog.hasLogged(s.id)) {
      if (attempt < 3) continue;
      throw GlideFsError.BUSY(
        `volume '${src}' has ${s.log_seq - s.checkpoint_seq} log records since its checkpoint ${s.checkpoint_seq}; its writer must checkpoint it before a fork (the device daemon does on SIGUSR2)`,
      );
    }
    const parentSeq = s.checkpoint_seq;
    const { uuid, createdAt, bytes } = await putFirstCheckpoint(d, (_uuid, createdAt) => ({
      name: dst,
      sizeBytes: s.size_bytes,
      parent: s.name,
      parentUuid: s.uuid,
      parentSeq,
      family: s.family_uuid ?? s.uuid,
      snapshot,
      createdAt,
      base: { volume: s.uuid, seq: parentSeq },
    }));
    try {
      const t0 = performance.now();
      const row = d.catalog.sealAndFork(src, dst, uuid, snapshot, createdAt, parentSeq, bytes);
      return { row, parentSeq, rowsCopied: 0, catalogMs: performance.now() - t0, retries: attempt };
    } catch (err) {
      await d.store.delete(logKey(d.prefix, uuid, 1)).catch(() => undefined);
      if (err instanceof ForkMoved && attempt < 3) continue;
      if (err instanceof ForkMoved) throw GlideFsError.BUSY(`volume '${src}' kept changing during the fork: try again`);
      throw err;
    }
  }
}

/**
 * Delete, step 1: the delete record (a tombstone) at the volume's next seq,
 * fenced like a flush. The caller has checked that no other holder has the
 * volume's lease, so records past the catalog's `log_seq` are of writers that
 * are gone (a flush or claim a crash cut before its catalog commit, never
 * caught up since): they are caught up first (Catalog.replayRecord, as an
 * open would), and the tombstone goes after them. The caller then runs the
 * catalog transaction and deleteVolumeLog.
 */
export async function writeDeleteRecord(d: OpsDeps, row: VolumeRow): Promise<void> {
  let seq = row.log_seq + 1;
  for (const r of await recordsPast(d.store, d.prefix, row.uuid, `volume '${row.name}'`, row.log_seq)) {
    if (r.rec.kind === KIND_DELETE) return; // a delete cut after its tombstone (kill -9, an answer given up on): finish it
    await deleteObjects({ deps: d }, d.catalog.replayRecord(row.id, r.rec, d.prefix, r.bytes, d.owner), row.id);
    seq = r.rec.seq + 1;
  }
  const rec: DeleteRecord = { kind: KIND_DELETE, volume: row.uuid, seq, time: Date.now(), writer: d.owner.token };
  const out = await createRecord(d.store, d.prefix, row.uuid, seq, await encodeRecord(rec));
  // a delete record there already: a delete cut after its tombstone whose answer was lost; finish it
  if (!out.created && out.existing.kind !== KIND_DELETE) throw fencedError(row.name, row.uuid, seq, out.existing);
}

/**
 * Delete, last step: every record of a deleted volume, the tombstone (highest
 * seq) last — except checkpoint records a layer still needs (a live child's
 * fork point, and what it lies on: Catalog.keptRecords); then the tombstone
 * stays too, and log gc deletes them once nothing needs them.
 */
export async function deleteVolumeLog(d: OpsDeps, uuid: string): Promise<number> {
  const kept = d.catalog.keptRecords();
  const all = await listLog(d.store, d.prefix, uuid);
  const top = all[all.length - 1];
  const needed = all.some((s) => kept.has(`${uuid}:${s}`));
  const seqs = all.filter((s) => s !== top && !kept.has(`${uuid}:${s}`));
  const limit = pLimit(d.uploadConcurrency);
  await Promise.all(seqs.map((s) => limit(() => d.store.delete(logKey(d.prefix, uuid, s)))));
  if (top !== undefined && !needed) await d.store.delete(logKey(d.prefix, uuid, top));
  return seqs.length + (top !== undefined && !needed ? 1 : 0);
}
