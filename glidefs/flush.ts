/**
 * Flush: moves a volume's dirty blocks into the object store and the catalog.
 *
 *  1. sync the cache (the dirty set is durable before anything is uploaded);
 *  2. read + hash each dirty block (BLAKE3, 16-byte digest). A zero block
 *     becomes a hole (no object); a block whose key equals the catalog's is
 *     skipped as unchanged;
 *  3. plan: keys already in the catalog are reused, the others get `pending`
 *     rows (gc will not touch them) and are uploaded with bounded
 *     concurrency (p-limit); retries with backoff come from RetryStore. Each
 *     block is re-read and re-hashed just before its PUT: one rewritten
 *     meanwhile is left dirty for the next flush;
 *  4. commit the block map, refcounts and counters in ONE transaction;
 *  5. only then delete objects whose refcount fell to zero.
 * A crash before 4 leaves only orphans (gc removes them); the catalog never
 * names an object that is not in the store.
 */
import pLimit from 'p-limit';
import { GlideFsError } from './errors.js';
import { BLOCK_SIZE, blockHash, blockKey, keyHash } from './block-key.js';
import { ReuseLost, type BlockChange } from './catalog.js';
import type { OpenVolume } from './volume.js';

export interface FlushResult {
  /** Objects PUT by this flush. */
  uploads: number;
  uploadedBytes: number;
  /** Uploads at an offset of the volume's family that had been uploaded before. */
  reuploads: number;
  /** Dirty blocks whose bytes hashed to the key the catalog already had. */
  skippedUnchanged: number;
  /** Blocks whose catalog entry this flush changed (new key or hole). */
  committedBlocks: number;
  /** Objects deleted after the commit (refcount fell to zero). */
  deletes: number;
  durationMs: number;
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
}

const tick = () => new Promise<void>((r) => setImmediate(r));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function runFlush(vol: OpenVolume, opts: FlushOptions = {}): Promise<FlushResult> {
  const progress = opts.onProgress ?? (() => undefined);
  const t0 = performance.now();
  const { catalog, store, prefix, owner } = vol.deps;
  vol.cache.sync();

  // 2. hash
  const dirty = vol.cache.dirtyIndices();
  if (dirty.length === 0) {
    return { uploads: 0, uploadedBytes: 0, reuploads: 0, skippedUnchanged: 0, committedBlocks: 0, deletes: 0, durationMs: performance.now() - t0 };
  }
  const changes: Change[] = [];
  const unchanged: Array<{ i: number; gen: number }> = [];
  const scratch = Buffer.allocUnsafe(BLOCK_SIZE);
  for (let n = 0; n < dirty.length; n++) {
    if (n % 64 === 63) {
      progress({ phase: 'hash', done: n, total: dirty.length });
      await tick();
    }
    const i = dirty[n];
    const gen = vol.gens[i];
    vol.cache.readBlock(i, scratch);
    const newKey = scratch.equals(ZERO_BLOCK) ? null : blockKey(prefix, i, blockHash(scratch));
    const oldKey = vol.map.get(i) ?? null;
    if (newKey === oldKey) unchanged.push({ i, gen });
    else changes.push({ blockIndex: i, oldKey, newKey, uploaded: false, gen });
  }

  // 3. plan + upload (+ again for keys that vanished before the commit)
  let toPlan = changes.filter((c) => c.newKey !== null);
  let dropped = new Set<Change>();
  const uploadedKeys: string[] = [];
  let commit;
  const gets = vol.takeGets();
  for (let round = 0; ; round++) {
    const plan = catalog.planUploads(
      toPlan.map((c) => c.newKey!),
      owner,
    );
    const uploadSet = new Set(plan.upload);
    const ups = toPlan.filter((c) => uploadSet.has(c.newKey!));
    try {
      await waitForDeletes(vol, plan.wait);
      dropped = new Set([...dropped, ...(await uploadAll(vol, ups, (done) => progress({ phase: 'upload', done, total: ups.length })))]);
    } catch (err) {
      vol.unsavedGets += gets;
      catalog.dropPending([...plan.upload, ...uploadedKeys], owner);
      throw flushError(vol.name, err, ups.length);
    }
    for (const c of ups) if (!dropped.has(c)) (c.uploaded = true), uploadedKeys.push(c.newKey!);
    const droppedKeys = [...dropped].map((c) => c.newKey!);
    catalog.dropPending(droppedKeys, owner);
    const committing = changes.filter((c) => !dropped.has(c));
    try {
      commit = catalog.commitFlush(
        vol.volumeId,
        committing,
        uploadedKeys,
        BLOCK_SIZE,
        { skippedUnchanged: unchanged.length, gets },
        owner,
      );
      break;
    } catch (err) {
      if (!(err instanceof ReuseLost) || round >= 4) {
        vol.unsavedGets += gets;
        catalog.dropPending(uploadedKeys, owner);
        throw flushError(vol.name, err, 0);
      }
      const lost = new Set(err.keys);
      toPlan = committing.filter((c) => c.newKey !== null && lost.has(c.newKey));
    }
  }

  // after the commit: the in-memory map and the cache states follow it
  const committed = changes.filter((c) => !dropped.has(c));
  for (const c of committed) {
    if (c.newKey === null) vol.map.delete(c.blockIndex);
    else vol.map.set(c.blockIndex, c.newKey);
    vol.markClean(c.blockIndex, c.gen);
  }
  for (const u of unchanged) vol.markClean(u.i, u.gen);

  // 5. deletes, only after the commit
  const deletes = await deleteObjects(vol, commit.toDelete, vol.volumeId);

  return {
    uploads: commit.uploads,
    uploadedBytes: commit.uploadedBytes,
    reuploads: commit.reuploads,
    skippedUnchanged: unchanged.length,
    committedBlocks: committed.length,
    deletes,
    durationMs: performance.now() - t0,
  };
}

/** PUTs each change's block; returns the changes whose block was rewritten meanwhile. */
async function uploadAll(vol: OpenVolume, ups: Change[], onDone: (n: number) => void): Promise<Change[]> {
  let done = 0;
  const limit = pLimit(vol.deps.uploadConcurrency);
  const dropped: Change[] = [];
  let firstError: unknown;
  await Promise.all(
    ups.map((c) =>
      limit(async () => {
        if (firstError !== undefined) return;
        const buf = vol.cache.readBlock(c.blockIndex);
        if (blockHash(buf) !== keyHash(c.newKey!)) {
          dropped.push(c); // rewritten since it was hashed: stays dirty
          return;
        }
        try {
          await vol.deps.store.put(c.newKey!, buf);
          onDone(++done);
        } catch (err) {
          firstError ??= err;
        }
      }),
    ),
  );
  if (firstError !== undefined) throw firstError;
  return dropped;
}

async function waitForDeletes(vol: OpenVolume, keys: string[]): Promise<void> {
  let left = keys;
  const deadline = Date.now() + 120_000;
  while (left.length > 0) {
    left = vol.deps.catalog.stillDeleting(left);
    if (left.length === 0) return;
    if (Date.now() > deadline) throw GlideFsError.BUSY(`${left.length} objects are still being deleted by another process`);
    await sleep(20);
  }
}

/**
 * Deletes objects whose `deleting` rows this process holds, then drops the
 * rows (counting the deletes). A delete that fails still drops its row: the
 * object is then an orphan, which gc removes.
 */
export async function deleteObjects(
  vol: { deps: { store: OpenVolume['deps']['store']; catalog: OpenVolume['deps']['catalog']; uploadConcurrency: number } },
  keys: string[],
  volumeId: number | null,
): Promise<number> {
  if (keys.length === 0) return 0;
  const limit = pLimit(vol.deps.uploadConcurrency);
  const done: string[] = [];
  const failed: string[] = [];
  await Promise.all(
    keys.map((k) =>
      limit(async () => {
        try {
          await vol.deps.store.delete(k);
          done.push(k);
        } catch {
          failed.push(k);
        }
      }),
    ),
  );
  vol.deps.catalog.finishDeletes(done, volumeId);
  if (failed.length > 0) {
    vol.deps.catalog.immediate(() => {
      const del = vol.deps.catalog.db.prepare('DELETE FROM deleting WHERE key = ?');
      for (const k of failed) del.run(k);
    });
  }
  return done.length;
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
