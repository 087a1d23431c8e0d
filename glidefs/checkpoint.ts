/**
 * Checkpoints and catch-up (FORMAT.md, "Checkpoint").
 *
 * A checkpoint folds every logged block of a volume into a whole block
 * object (`blockKey(i, hash)`, uploaded unless the catalog has it — these are
 * the uploads the per-offset counters and the heatmap count), writes the
 * volume's whole block map as a checkpoint record at the next seq (fenced like
 * a flush), commits, and then deletes zero-ref objects and every record with
 * a smaller seq. Recovery reads the newest checkpoint and the records after
 * it only.
 *
 * Crash story: before the record PUT, only orphan block objects (gc); after
 * it and before the commit, the next open catches the checkpoint up; after
 * the commit, stale records below the checkpoint, which the next checkpoint
 * (it lists the log) or gc deletes.
 *
 * Catch-up: on a writable open the volume's log is listed; records past the
 * catalog's `log_seq` are applied in order (a commit a crash cut off, or a
 * record of another writer).
 */
import pLimit from 'p-limit';
import { GlideFsError } from './errors.js';
import { blockHash, blockKey, keyHash } from './block-key.js';
import { encodeRecord, FULL_MASK, KIND_CHECKPOINT, KIND_DELETE, KIND_FLUSH, logKey, type CheckpointRecord, type FlushRecord, type LogRecord } from './log-record.js';
import { createRecord, crashPoint, deleteObjects, fencedError, listLog, materializeMany, readRecord, RecordGone, ZERO_HASH, type RecordCache } from './volume-log.js';
import { STATE_CLEAN } from './cache.js';
import type { BlockChange, Catalog, LoggedBlock, Owner } from './catalog.js';
import type { ObjectStore } from './object-store.js';
import type { VolumeCache } from './cache.js';
import type { BlockLookup } from './block-lookup.js';

/**
 * What checkpoints, catch-up and the log append see of an open volume
 * (OpenVolume implements it): its ids, the committed state they move, the
 * cache they fold from, and the record cache they read the log through.
 */
export interface CheckpointVolume {
  readonly name: string;
  readonly uuid: string;
  readonly volumeId: number;
  readonly blockCount: number;
  readonly deps: { catalog: Catalog; store: ObjectStore; prefix: string; owner: Owner; uploadConcurrency: number };
  readonly cache: VolumeCache;
  readonly map: BlockLookup;
  logged: Map<number, LoggedBlock>;
  readonly masks: Uint32Array;
  readonly records: RecordCache;
  fenced: Error | null;
  unsavedGets: number;
  invalidate(i: number): void;
}

export interface CheckpointResult {
  /** Seq of the checkpoint record (0: nothing to do). */
  seq: number;
  /** Logged blocks folded into whole block objects. */
  foldedBlocks: number;
  /** Block objects PUT by the fold. */
  uploads: number;
  reuploads: number;
  recordBytes: number;
  /** Log records deleted after the commit. */
  deletedRecords: number;
  /** Objects deleted (refcount fell to zero). */
  deletes: number;
  durationMs: number;
}

export async function runCheckpoint(vol: CheckpointVolume): Promise<CheckpointResult> {
  const t0 = performance.now();
  const { catalog, store, prefix, owner } = vol.deps;
  if (vol.fenced) throw vol.fenced;
  const row = catalog.volumeById(vol.volumeId);
  if (!row) throw GlideFsError.NO_VOLUME(vol.name);
  if (row.log_seq > 0 && row.log_seq === row.checkpoint_seq && vol.logged.size === 0) {
    return { seq: 0, foldedBlocks: 0, uploads: 0, reuploads: 0, recordBytes: 0, deletedRecords: 0, deletes: 0, durationMs: performance.now() - t0 };
  }
  const logged = new Map(vol.logged);
  const folds: Array<BlockChange & { hash: string }> = [];
  for (const [i, l] of logged) {
    folds.push({ blockIndex: i, oldKey: vol.map.get(i) ?? null, newKey: l.hash === ZERO_HASH ? null : blockKey(prefix, i, l.hash), uploaded: false, hash: l.hash });
  }
  const keyed = folds.filter((c) => c.newKey !== null);
  const pendingKeys = keyed.map((c) => c.newKey!);
  try {
    const plan = catalog.planUploads(pendingKeys, owner);
    const uploadSet = new Set(plan.upload);
    const limit = pLimit(vol.deps.uploadConcurrency);
    let n = 0;
    const todo = keyed.filter((c) => uploadSet.has(c.newKey!));
    for (let b = 0; b < todo.length; b += 256) {
      const batch = todo.slice(b, b + 256);
      const bytes = await committedBytesMany(vol, batch.map((c) => ({ i: c.blockIndex, base: c.oldKey ?? undefined, logged: logged.get(c.blockIndex)! })));
      await Promise.all(
        batch.map((c) =>
          limit(async () => {
            await store.put(c.newKey!, bytes.get(c.blockIndex)!);
            c.uploaded = true;
            if (++n === 1) crashPoint('checkpoint-between-block-uploads');
          }),
        ),
      );
    }
    // the record holds the top layer (folds applied) over the layer it lies on (FORMAT.md, "Layers")
    const content = catalog.checkpointContent(vol.volumeId, folds);
    const rec: CheckpointRecord = {
      kind: KIND_CHECKPOINT,
      volume: vol.uuid,
      seq: 0,
      time: Date.now(),
      writer: owner.token,
      meta: {
        name: row.name,
        sizeBytes: row.size_bytes,
        parent: row.parent,
        parentUuid: row.parent_uuid,
        parentSeq: row.parent_seq,
        family: row.family_uuid ?? row.uuid,
        snapshot: row.snapshot === 1,
        createdAt: row.created_at,
        base: content.base,
      },
      blocks: [...content.blocks].sort((a, b) => a[0] - b[0]).map(([i, k]) => [i, k === null ? null : keyHash(k)]),
    };
    // the keys new to the catalog are the folded ones: the rest are the top layer's own rows
    const { seq, bytes } = await appendRecord(vol, rec, pendingKeys);
    crashPoint('checkpoint-after-record-put');
    const commit = catalog.commitCheckpoint(vol.volumeId, seq, bytes, folds, pendingKeys, owner, content.base);
    for (const c of folds) {
      if (c.newKey === null) vol.map.delete(c.blockIndex);
      else vol.map.set(c.blockIndex, c.newKey);
    }
    vol.logged = new Map();
    crashPoint('checkpoint-before-log-deletes');
    const deletes = await deleteObjects(vol, commit.toDelete, vol.volumeId);
    const deletedRecords = await deleteRecordsBelow(vol, seq);
    crashPoint('checkpoint-after-log-deletes');
    return {
      seq,
      foldedBlocks: folds.length,
      uploads: commit.uploads,
      reuploads: commit.reuploads,
      recordBytes: bytes,
      deletedRecords,
      deletes,
      durationMs: performance.now() - t0,
    };
  } catch (err) {
    try {
      catalog.dropPending(pendingKeys, owner);
    } catch {
      // stale once this process ends
    }
    throw err;
  }
}

/** The committed bytes of logged blocks: the cache's clean copy when it hashes right, else base + records from the store (each record read once). */
async function committedBytesMany(vol: CheckpointVolume, items: Array<{ i: number; base: string | undefined; logged: { hash: string; seqs: number[] } }>): Promise<Map<number, Buffer>> {
  const out = new Map<number, Buffer>();
  const rest: typeof items = [];
  for (const it of items) {
    if (vol.cache.state(it.i) === STATE_CLEAN) {
      const buf = vol.cache.readBlock(it.i);
      if (blockHash(buf) === it.logged.hash) {
        out.set(it.i, buf);
        continue;
      }
    }
    rest.push(it);
  }
  if (rest.length === 0) return out;
  try {
    const got = await materializeMany(vol.deps.store, vol.records, `volume '${vol.name}'`, rest, () => vol.unsavedGets++);
    for (const [i, b] of got) out.set(i, b);
    return out;
  } catch (err) {
    if (err instanceof RecordGone) throw GlideFsError.CORRUPT(`volume '${vol.name}': log record ${err.seq} is missing from the store`);
    throw err;
  }
}

/** Deletes every record of the volume below `seq` (listed: leftovers of a crash go too). Failures are left for the next checkpoint or gc. */
export async function deleteRecordsBelow(vol: CheckpointVolume, seq: number): Promise<number> {
  const { store, prefix } = vol.deps;
  const kept = vol.deps.catalog.keptRecords(); // checkpoints a layer lies on stay (FORMAT.md, "Layers")
  const seqs = (await listLog(store, prefix, vol.uuid)).filter((s) => s < seq && !kept.has(`${vol.uuid}:${s}`));
  const limit = pLimit(vol.deps.uploadConcurrency);
  let n = 0;
  await Promise.all(
    seqs.map((s) =>
      limit(async () => {
        try {
          await store.delete(logKey(prefix, vol.uuid, s));
          vol.records.forget(s);
          n++;
        } catch {
          // left behind: deleted by the next checkpoint or gc
        }
      }),
    ),
  );
  vol.deps.catalog.addLogDeletes(vol.volumeId, n);
  return n;
}

/**
 * Catch-up on a writable open: applies the records past the catalog's
 * `log_seq`. A volume from before the log (log_seq 0) gets its first
 * checkpoint.
 */
export async function catchUp(vol: CheckpointVolume): Promise<void> {
  const takeLease = leaseAtCatchUp.get(vol);
  if (takeLease) {
    if (await takeLease()) claimAtCatchUp.add(vol); // taken over from a holder that did not release it
    leaseAtCatchUp.delete(vol);
  }
  await catchUpRecords(vol);
  if (claimAtCatchUp.has(vol)) {
    await claimLog(vol);
    claimAtCatchUp.delete(vol);
  }
}

/**
 * Volumes whose lease was taken over from a holder that did not release it
 * (lease.ts): their catch-up ends with a claim of the log.
 */
export const claimAtCatchUp = new WeakSet<CheckpointVolume>();

/**
 * Writable opens take their lease (lease.ts) first thing in the catch-up, so
 * a store unreachable at the open defers it with the catch-up, to before the
 * first flush or checkpoint. Resolves true when the lease was taken over.
 */
export const leaseAtCatchUp = new WeakMap<CheckpointVolume, () => Promise<boolean>>();

/**
 * The claim of a volume taken over from another holder (FORMAT.md, "Volume
 * lease"): an empty flush record at the next seq. A record of the old holder
 * found at that seq was written before the claim — an fsync it may have
 * acknowledged — so it is applied and the claim tried at the next seq. Once
 * the claim is in the log, every later record of the old holder lands on a
 * taken seq: E_FENCED for it.
 */
export async function claimLog(vol: CheckpointVolume): Promise<number> {
  const { catalog, store, prefix, owner } = vol.deps;
  for (let attempt = 0; attempt < 64; attempt++) {
    const row = catalog.volumeById(vol.volumeId);
    if (!row) throw GlideFsError.NO_VOLUME(vol.name);
    const seq = row.log_seq + 1;
    const rec: FlushRecord = { kind: KIND_FLUSH, volume: vol.uuid, seq, time: Date.now(), writer: owner.token, blocks: [], sectors: [] };
    const body = await encodeRecord(rec);
    const out = await createRecord(store, prefix, vol.uuid, seq, body);
    if (out.created) {
      catalog.commitLog(vol.volumeId, seq, body.length, [], [], [], { skippedUnchanged: 0, gets: 0 }, owner);
      return seq;
    }
    await applyReplayed(vol, out.existing, out.bytes); // the old holder's record, from before the claim (a delete fences us)
  }
  throw GlideFsError.STORE(`volume '${vol.name}': could not claim its log after 64 attempts`, { retryable: true });
}

async function catchUpRecords(vol: CheckpointVolume): Promise<void> {
  const row = vol.deps.catalog.volumeById(vol.volumeId);
  if (!row) throw GlideFsError.NO_VOLUME(vol.name);
  if (row.log_seq === 0) {
    await runCheckpoint(vol);
    return;
  }
  for (const r of await recordsPast(vol.deps.store, vol.deps.prefix, vol.uuid, `volume '${vol.name}'`, row.log_seq)) await applyReplayed(vol, r.rec, r.bytes);
}

/**
 * The records of a volume past the catalog's `logSeq`, in the order they
 * are applied (catch-up): read newest first, down to a checkpoint (it covers
 * everything below it) or to `logSeq + 1`; E_CORRUPT for a gap, or when the
 * store has no log at all for a volume the catalog has at `logSeq`.
 */
export async function recordsPast(store: ObjectStore, prefix: string, uuid: string, what: string, logSeq: number): Promise<Array<{ rec: LogRecord; bytes: number }>> {
  const all = await listLog(store, prefix, uuid);
  const seqs = all.filter((s) => s > logSeq);
  if (seqs.length === 0) {
    if (all.length === 0) throw GlideFsError.CORRUPT(`${what}: the catalog is at log record ${logSeq} but the store has no log for it`);
    return [];
  }
  const max = seqs[seqs.length - 1];
  const recs: Array<{ rec: LogRecord; bytes: number }> = [];
  for (let k = seqs.length - 1; k >= 0; k--) {
    const r = await readRecord(store, prefix, uuid, seqs[k]);
    if (r === null) continue; // folded by a checkpoint of another writer meanwhile: the checkpoint above covers it
    recs.unshift(r);
    if (r.rec.kind === KIND_CHECKPOINT) break;
  }
  let expect = recs[0]?.rec.kind === KIND_CHECKPOINT ? recs[0].rec.seq : logSeq + 1;
  for (const r of recs) {
    if (r.rec.seq !== expect) throw GlideFsError.CORRUPT(`${what}: log record ${expect} is missing from the store (the log ends at ${max})`);
    expect++;
  }
  return recs;
}

/** Applies one record found in the store to the catalog and the open volume's memory. */
export async function applyReplayed(vol: CheckpointVolume, rec: LogRecord, bytes: number): Promise<void> {
  if (rec.kind === KIND_DELETE) {
    vol.fenced = fencedError(vol.name, vol.uuid, rec.seq, rec);
    throw vol.fenced;
  }
  const toDelete = vol.deps.catalog.replayRecord(vol.volumeId, rec, vol.deps.prefix, bytes, vol.deps.owner);
  // blocks whose committed bytes may have changed: a checkpoint may change any (its base too)
  const touched = new Set<number>(vol.logged.keys());
  if (rec.kind === KIND_CHECKPOINT) {
    for (let i = 0; i < vol.blockCount; i++) touched.add(i);
  } else {
    for (const [i] of rec.blocks) touched.add(i);
    for (const e of rec.sectors) touched.add(e.index);
  }
  vol.map.clear();
  vol.logged = vol.deps.catalog.loggedBlocks(vol.volumeId);
  for (const i of vol.logged.keys()) touched.add(i);
  for (const i of touched) {
    vol.invalidate(i);
    // another writer's record changed the committed bytes under our dirty copy: send it whole
    if (rec.writer !== vol.deps.owner.token && vol.masks[i] !== 0) vol.masks[i] = FULL_MASK;
  }
  await deleteObjects(vol, toDelete, vol.volumeId);
}

/** The block keys a flush or checkpoint record names (whole blocks; a checkpoint: its top layer). */
export function recordKeys(prefix: string, rec: FlushRecord | CheckpointRecord): string[] {
  const out: string[] = [];
  for (const [i, h] of rec.blocks) if (h !== null) out.push(blockKey(prefix, i, h));
  return out;
}

/**
 * Creates `rec` at the volume's next seq (putIfAbsent). `named`: the keys
 * the record names that the catalog may not hold yet (default: all it names),
 * noted before the PUT (Catalog.noteUnapplied). A record of our own
 * at that seq (a flush whose answer was lost) is caught up first; another
 * writer's record fences the volume. Returns the seq and the bytes PUT.
 */
export async function appendRecord(vol: CheckpointVolume, rec: FlushRecord | CheckpointRecord, named?: string[]): Promise<{ seq: number; bytes: number }> {
  for (let attempt = 0; attempt < 8; attempt++) {
    const row = vol.deps.catalog.volumeById(vol.volumeId);
    if (!row) throw GlideFsError.NO_VOLUME(vol.name);
    const seq = row.log_seq + 1;
    rec.seq = seq;
    rec.time = Date.now();
    const body = await encodeRecord(rec);
    // what the record names stays in the store until the catalog applies it or the log passes this seq
    // (a PUT that lands while its answer is lost, or a crash before the commit: FORMAT.md, "gc rule")
    vol.deps.catalog.noteUnapplied(vol.volumeId, seq, named ?? recordKeys(vol.deps.prefix, rec));
    crashPoint(rec.kind === KIND_FLUSH ? 'flush-before-log-put' : 'checkpoint-before-record-put');
    const out = await createRecord(vol.deps.store, vol.deps.prefix, vol.uuid, seq, body);
    if (out.created) return { seq, bytes: body.length };
    if (out.existing.writer !== vol.deps.owner.token) {
      vol.fenced = fencedError(vol.name, vol.uuid, seq, out.existing);
      throw vol.fenced;
    }
    // an earlier flush of ours landed though we saw it fail: apply it, then take the next seq
    await applyReplayed(vol, out.existing, out.bytes);
  }
  throw GlideFsError.STORE(`volume '${vol.name}': could not append to the log after 8 attempts`, { retryable: true });
}
