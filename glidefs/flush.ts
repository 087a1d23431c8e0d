/**
 * Flush: makes a volume's dirty blocks durable in the store with ONE log
 * record (FORMAT.md, "Flush — one log object per flush").
 *
 *  1. prepare the cache for the ack (cache.ts `prepareAck`: no fsync unless a
 *     dirty block was synced locally); take the dirty set synchronously (no
 *     write can land in between): per block the 4 KiB sectors written since
 *     the last flush.
 *     A block rewritten whole (or whose sectors are unknown after a restart)
 *     is hashed (zeros = hole; same key as committed = unchanged); for any
 *     other block its dirty sectors are copied and the whole block hashed;
 *  2. whole blocks: plan (`pending` rows for every key, so reused keys cannot
 *     vanish and gc leaves new ones alone) and PUT with bounded concurrency,
 *     each re-read just before its PUT (the bytes PUT are the ones recorded);
 *  3. the log record (whole-block changes + sectors, compressed) is created
 *     with putIfAbsent at the volume's next seq — the durability point; a
 *     record of another writer there = E_FENCED, the volume stops;
 *  4. commit the block map, logged blocks, refcounts, counters in ONE
 *     transaction;
 *  5. blocks not rewritten since 1 become clean; zero-ref objects are deleted.
 * A failure before 3 leaves every dirty block dirty with its sectors marked
 * (and orphans for gc); a crash between 3 and 4 is caught up at the next open.
 */
import pLimit from 'p-limit';
import { GlideFsError } from './errors.js';
import { BLOCK_SIZE, blockHash, blockKey, keyHash } from './block-key.js';
import type { BlockChange, Catalog, Owner } from './catalog.js';
import type { ObjectStore } from './object-store.js';
import type { VolumeCache } from './cache.js';
import { encodeRecord, extractSectors, FULL_MASK, KIND_FLUSH, type CheckpointRecord, type FlushRecord, type SectorEntry } from './log-record.js';
import { crashPoint, deleteObjects } from './volume-log.js';

export interface FlushResult {
  /** Block objects PUT by this flush (blocks rewritten whole). */
  uploads: number;
  uploadedBytes: number;
  /** Uploads at an offset of the volume's family that had been uploaded before. */
  reuploads: number;
  /** Dirty blocks whose bytes hashed to what was already committed. */
  skippedUnchanged: number;
  /** Blocks this flush moved to a new object or a hole. */
  committedBlocks: number;
  /** Blocks whose dirty sectors went into the log record. */
  loggedBlocks: number;
  /** Log records PUT (0 or 1). */
  logPuts: number;
  logBytes: number;
  /** Objects deleted after the commit (refcount fell to zero). */
  deletes: number;
  durationMs: number;
}

/** The result of a flush that had nothing to do (or ran on a read-only volume). */
export function emptyFlushResult(durationMs: number): FlushResult {
  return {
    uploads: 0,
    uploadedBytes: 0,
    reuploads: 0,
    skippedUnchanged: 0,
    committedBlocks: 0,
    loggedBlocks: 0,
    logPuts: 0,
    logBytes: 0,
    deletes: 0,
    durationMs,
  };
}

const ZERO_BLOCK = Buffer.alloc(BLOCK_SIZE);

export interface FlushProgress {
  /** 'hash': reading and hashing dirty blocks; 'upload': PUTs done. */
  phase: 'hash' | 'upload';
  done: number;
  total: number;
}

export interface FlushOptions {
  onProgress?: (p: FlushProgress) => void;
}

interface Change extends BlockChange {
  gen: number;
  hash: string | null;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * A block with this many log records holding its sectors since its base
 * object is sent whole at its next flush (uploaded as an offset-keyed block
 * object, its logged sectors dropped): a cold read of any block needs its
 * base object and at most this many records (FORMAT.md, "Flush"). Costs one
 * 128 KiB upload per HOT_BLOCK_RECORDS fsyncs of a hot block (~1 KiB per fsync).
 */
export const HOT_BLOCK_RECORDS = 128;

/**
 * What a flush sees of an open volume (OpenVolume implements it): the cache
 * and its dirty set, the committed state to compare with, and the calls that
 * move the committed state in memory after the catalog commit. The catalog is
 * reached only through its methods.
 */
export interface FlushSource {
  readonly name: string;
  readonly uuid: string;
  readonly volumeId: number;
  readonly deps: { catalog: Catalog; store: ObjectStore; prefix: string; owner: Owner; uploadConcurrency: number };
  readonly cache: VolumeCache;
  /** Per block, the 4 KiB sectors written since the last flush (taken and reset by the flush). */
  readonly masks: Uint32Array;
  /** Write generation per block. */
  readonly gens: Uint32Array;
  readonly fenced: Error | null;
  /** Hash of block i's committed bytes. */
  committedHash(i: number): string;
  /** Block i's committed base object, if any. */
  baseKey(i: number): string | undefined;
  /** Log records holding sectors of block i since its base. */
  loggedRecords(i: number): number;
  /** Marks block i clean unless written since `gen`. */
  markClean(i: number, gen: number): void;
  /** GETs not yet counted in the catalog: taken for the commit, given back when it fails. */
  takeGets(): number;
  returnGets(n: number): void;
  /** Creates the record at the volume's next seq (fencing rule). */
  appendRecord(rec: FlushRecord): Promise<{ seq: number; bytes: number }>;
  /** After the commit: block i is `key` (null: a hole), with no logged sectors. */
  setCommitted(i: number, key: string | null): void;
  /** After the commit: record `seq` holds sectors of block i, whose bytes now hash to `hash`. */
  addLogged(i: number, hash: string, seq: number): void;
}

export async function runFlush(vol: FlushSource, opts: FlushOptions = {}): Promise<FlushResult> {
  const progress = opts.onProgress ?? (() => undefined);
  const t0 = performance.now();
  const { catalog, store, prefix, owner } = vol.deps;
  if (vol.fenced) throw vol.fenced;
  // no fsync of the cache as a rule: a kill -9 keeps the page cache, and a reboot drops unsynced dirty blocks (FORMAT.md, "Dirty-set durability")
  vol.cache.prepareAck();
  const empty = (): FlushResult => emptyFlushResult(performance.now() - t0);

  // 1. the dirty set, taken synchronously
  const dirty = vol.cache.dirtyIndices();
  if (dirty.length === 0) return empty();
  const whole: Change[] = [];
  const sectors: Array<SectorEntry & { gen: number }> = [];
  const unchanged: Array<{ i: number; gen: number }> = [];
  const taken = new Map<number, number>();
  const scratch = Buffer.allocUnsafe(BLOCK_SIZE);
  for (let n = 0; n < dirty.length; n++) {
    const i = dirty[n];
    const gen = vol.gens[i];
    const mask = vol.masks[i] === 0 ? FULL_MASK : vol.masks[i];
    taken.set(i, vol.masks[i]);
    vol.masks[i] = 0;
    vol.cache.readBlock(i, scratch);
    const h = blockHash(scratch);
    if (h === vol.committedHash(i)) {
      unchanged.push({ i, gen });
      continue;
    }
    const hot = vol.loggedRecords(i) >= HOT_BLOCK_RECORDS;
    if (mask === FULL_MASK || hot) {
      const oldKey = vol.baseKey(i) ?? null;
      const newKey = scratch.equals(ZERO_BLOCK) ? null : blockKey(prefix, i, h);
      whole.push({ blockIndex: i, oldKey, newKey, uploaded: false, gen, hash: h });
    } else {
      sectors.push({ index: i, mask, hash: h, data: extractSectors(scratch, mask), gen });
    }
  }
  progress({ phase: 'hash', done: dirty.length, total: dirty.length });
  const restoreMasks = () => {
    for (const [i, m] of taken) vol.masks[i] = (vol.masks[i] | (m === 0 ? FULL_MASK : m)) >>> 0;
  };
  if (whole.length === 0 && sectors.length === 0) {
    for (const u of unchanged) vol.markClean(u.i, u.gen);
    catalog.addSkipped(vol.volumeId, unchanged.length);
    const r = empty();
    r.skippedUnchanged = unchanged.length;
    return r;
  }

  // 2. whole blocks: plan + upload
  const gets = vol.takeGets();
  let pendingKeys: string[] = [];
  let planned = 0;
  try {
    const keyed = whole.filter((c) => c.newKey !== null);
    // no whole blocks (a small fsync): no planning transaction
    const plan = keyed.length === 0 ? { upload: [], wait: [] } : catalog.planUploads(
      keyed.map((c) => c.newKey!),
      owner,
    );
    pendingKeys = keyed.map((c) => c.newKey!);
    const uploadSet = new Set(plan.upload);
    const ups = keyed.filter((c) => uploadSet.has(c.newKey!));
    planned = ups.length;
    await waitForDeletes(vol, plan.wait);
    const up = await uploadAll(vol, ups, (done) => progress({ phase: 'upload', done, total: ups.length }));
    for (const c of up.ok) c.uploaded = true;
    // a block rewritten between step 1 and its PUT is not in this record: it stays dirty, whole
    const dropped = new Set(up.dropped);
    for (const c of up.dropped) vol.masks[c.blockIndex] = FULL_MASK;
    const kept = whole.filter((c) => !dropped.has(c));
    whole.length = 0;
    whole.push(...kept);
    if (whole.length === 0 && sectors.length === 0) {
      catalog.dropPending(pendingKeys, owner);
      vol.returnGets(gets);
      for (const u of unchanged) vol.markClean(u.i, u.gen);
      catalog.addSkipped(vol.volumeId, unchanged.length);
      const r = empty();
      r.skippedUnchanged = unchanged.length;
      return r;
    }

    // 3. the log record: the durability point
    const rec: FlushRecord = {
      kind: KIND_FLUSH,
      volume: vol.uuid,
      seq: 0,
      time: Date.now(),
      writer: owner.token,
      blocks: whole.map((c) => [c.blockIndex, c.newKey === null ? null : c.hash]),
      sectors: sectors.map(({ index, mask, hash, data }) => ({ index, mask, hash, data })),
    };
    const { seq, bytes } = await vol.appendRecord(rec);

    // 4. commit
    crashPoint('flush-after-log-put');
    const commit = catalog.commitLog(
      vol.volumeId,
      seq,
      bytes,
      whole,
      sectors.map((e) => ({ blockIndex: e.index, hash: e.hash })),
      pendingKeys,
      { skippedUnchanged: unchanged.length, gets },
      owner,
      // sectors only: nothing is released, so nothing is deleted after this commit, and a commit a power
      // loss takes back is replayed from the record by the next open's catch-up: no fsync of the catalog
      whole.length > 0,
    );
    crashPoint('flush-after-commit');

    // 5. memory follows the catalog; clean; deletes
    for (const c of whole) {
      vol.setCommitted(c.blockIndex, c.newKey);
      vol.markClean(c.blockIndex, c.gen);
    }
    for (const e of sectors) {
      vol.addLogged(e.index, e.hash, seq);
      vol.markClean(e.index, e.gen);
    }
    for (const u of unchanged) vol.markClean(u.i, u.gen);
    const deletes = await deleteObjects(vol, commit.toDelete, vol.volumeId);
    return {
      uploads: commit.uploads,
      uploadedBytes: commit.uploadedBytes,
      reuploads: commit.reuploads,
      skippedUnchanged: unchanged.length,
      committedBlocks: whole.length,
      loggedBlocks: sectors.length,
      logPuts: 1,
      logBytes: bytes,
      deletes,
      durationMs: performance.now() - t0,
    };
  } catch (err) {
    vol.returnGets(gets);
    restoreMasks();
    try {
      catalog.dropPending(pendingKeys, owner);
    } catch {
      // the catalog is closed or busy: the rows are stale once this process ends (gc drops them)
    }
    if (err instanceof GlideFsError && err.code === 'E_FENCED') throw err;
    throw flushError(vol.name, err, planned);
  }
}

/**
 * PUTs each change's block, re-read right before its PUT: a block rewritten
 * since step 1 (its bytes no longer hash to the planned key) is dropped from
 * this flush and stays dirty.
 */
async function uploadAll(vol: FlushSource, ups: Change[], onDone: (n: number) => void): Promise<{ ok: Change[]; dropped: Change[] }> {
  let done = 0;
  const limit = pLimit(vol.deps.uploadConcurrency);
  const ok: Change[] = [];
  const dropped: Change[] = [];
  let firstError: unknown;
  await Promise.all(
    ups.map((c) =>
      limit(async () => {
        if (firstError !== undefined) return;
        const buf = vol.cache.readBlock(c.blockIndex);
        if (blockHash(buf) !== keyHash(c.newKey!)) {
          dropped.push(c);
          return;
        }
        try {
          await vol.deps.store.put(c.newKey!, buf);
          ok.push(c);
          onDone(++done);
          if (done === 1) crashPoint('flush-between-block-uploads');
        } catch (err) {
          firstError ??= err;
        }
      }),
    ),
  );
  if (firstError !== undefined) throw firstError;
  return { ok, dropped };
}

async function waitForDeletes(vol: FlushSource, keys: string[]): Promise<void> {
  let left = keys;
  const deadline = Date.now() + 120_000;
  while (left.length > 0) {
    left = vol.deps.catalog.stillDeleting(left);
    if (left.length === 0) return;
    if (Date.now() > deadline) throw GlideFsError.BUSY(`${left.length} objects are still being deleted by another process`);
    await sleep(20);
  }
}

function flushError(name: string, err: unknown, planned: number): GlideFsError {
  const code = err instanceof GlideFsError ? err.code : 'E_STORE';
  const inner = (err instanceof Error ? err.message : String(err)).replace(/^[A-Z_]+: /, '');
  const what = planned > 0 ? ` (${planned} uploads planned)` : '';
  return new GlideFsError(code, `flush of volume '${name}' failed${what}: ${inner}; dirty blocks are kept, a later flush retries`, {
    cause: err,
    retryable: err instanceof GlideFsError ? err.retryable : false,
  });
}
