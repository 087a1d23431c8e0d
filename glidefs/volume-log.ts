/**
 * The volume log in the store: creating records under the fencing rule,
 * listing and reading them, rebuilding a block from its base object and its
 * logged sectors, and catching a catalog up with records it has not seen.
 * Formats and rules: FORMAT.md, "The volume log".
 *
 * Fencing: a record is created with `putIfAbsent` at the next seq. When the
 * key exists, the existing record decides: the same bytes are our own put
 * whose answer was lost (done); a record with our writer token is an earlier
 * flush of ours that failed on our side but landed (caught up, then the next
 * seq); anything else is another writer: E_FENCED.
 */
import pLimit from 'p-limit';
import { GlideFsError } from './errors.js';
import type { ObjectStore } from './object-store.js';
import { BLOCK_SIZE, blockHash, keyHash } from './block-key.js';
import { applySectors, decodeRecord, KIND_FLUSH, logKey, logPrefix, parseLogKey, type FlushRecord, type LogRecord } from './log-record.js';
import type { Catalog, LoggedBlock } from './catalog.js';

/** The conditional create every store has (object-store.ts). */
type ConditionalStore = ObjectStore & { putIfAbsent?(key: string, body: Uint8Array): Promise<boolean> };

export const ZERO_HASH = blockHash(Buffer.alloc(BLOCK_SIZE));

export type CreateOutcome = { created: true } | { created: false; existing: LogRecord; bytes: number };

/**
 * Creates record `seq` of a volume. `created: true` when the bytes are now
 * the record (ours); otherwise the record that holds the key.
 */
export async function createRecord(store: ObjectStore, prefix: string, uuid: string, seq: number, body: Buffer): Promise<CreateOutcome> {
  const s = store as ConditionalStore;
  if (typeof s.putIfAbsent !== 'function') throw GlideFsError.INVALID(`store ${store.description} has no conditional create (putIfAbsent)`);
  const key = logKey(prefix, uuid, seq);
  if (await s.putIfAbsent(key, body)) return { created: true };
  const existing = await store.get(key);
  if (existing === null) throw GlideFsError.STORE(`log record ${key} exists for a conditional create but cannot be read`, { retryable: true });
  if (existing.equals(body)) return { created: true }; // our own put, answer lost and retried
  return { created: false, existing: decodeRecord(existing, key), bytes: existing.length };
}

export function fencedError(name: string, uuid: string, seq: number, rec: LogRecord): GlideFsError {
  return new GlideFsError(
    'E_FENCED',
    `volume '${name}' (${uuid}) was taken over by another writer: log record ${seq} was written by ${rec.writer} at ${new Date(rec.time).toISOString()}; this writer stops (its unflushed writes are not in the store)`,
  );
}

/** Sequence numbers of a volume's records in the store, ascending. */
export async function listLog(store: ObjectStore, prefix: string, uuid: string): Promise<number[]> {
  const out: number[] = [];
  for await (const k of store.list(logPrefix(prefix, uuid))) {
    const p = parseLogKey(prefix, k);
    if (p && p.uuid === uuid) out.push(p.seq);
  }
  return out.sort((a, b) => a - b);
}

export async function readRecord(store: ObjectStore, prefix: string, uuid: string, seq: number): Promise<{ rec: LogRecord; bytes: number } | null> {
  const key = logKey(prefix, uuid, seq);
  const buf = await store.get(key);
  if (buf === null) return null;
  const rec = decodeRecord(buf, key);
  if (rec.volume !== uuid || rec.seq !== seq) throw GlideFsError.CORRUPT(`log record ${key} names volume ${rec.volume} seq ${rec.seq}`);
  return { rec, bytes: buf.length };
}

/** A small cache of decoded flush records (a replay reads the same record for many blocks). */
export class RecordCache {
  private readonly map = new Map<number, Promise<FlushRecord | null>>();
  constructor(
    private readonly store: ObjectStore,
    private readonly prefix: string,
    private readonly uuid: string,
    private readonly max = 16,
  ) {}

  get(seq: number): Promise<FlushRecord | null> {
    let p = this.map.get(seq);
    if (p) {
      this.map.delete(seq);
      this.map.set(seq, p);
      return p;
    }
    p = readRecord(this.store, this.prefix, this.uuid, seq).then((r) => {
      if (r === null) return null;
      if (r.rec.kind !== KIND_FLUSH) throw GlideFsError.CORRUPT(`log record ${seq} of volume ${this.uuid} is not a flush record`);
      return r.rec;
    });
    p.catch(() => this.map.delete(seq));
    this.map.set(seq, p);
    while (this.map.size > this.max) this.map.delete(this.map.keys().next().value as number);
    return p;
  }

  forget(seq: number): void {
    this.map.delete(seq);
  }
}

/** Thrown when a record a block needs is gone: the caller re-reads the catalog (a checkpoint folded it) and retries. */
export class RecordGone extends Error {
  constructor(readonly seq: number) {
    super(`log record ${seq} is gone`);
  }
}

/**
 * The bytes of block `i` as committed: its base object (or zeros), with the
 * sectors of each record in `logged.seqs` applied in order, checked against
 * `logged.hash`. Counts GETs through `onGet`.
 */
export async function materialize(
  store: ObjectStore,
  records: RecordCache,
  what: string,
  i: number,
  baseKey: string | undefined,
  logged: LoggedBlock,
  onGet: () => void = () => undefined,
): Promise<Buffer> {
  let block: Buffer;
  if (baseKey === undefined) block = Buffer.alloc(BLOCK_SIZE);
  else {
    const data = await store.get(baseKey);
    onGet();
    if (data === null) throw GlideFsError.CORRUPT(`object ${baseKey} (block ${i} of ${what}) is missing from the store`);
    if (data.length !== BLOCK_SIZE || blockHash(data) !== keyHash(baseKey)) {
      throw GlideFsError.CORRUPT(`object ${baseKey} (block ${i} of ${what}) does not match its hash`);
    }
    block = Buffer.from(data);
  }
  for (const seq of logged.seqs) {
    const rec = await records.get(seq);
    onGet();
    if (rec === null) throw new RecordGone(seq);
    for (const e of rec.sectors) if (e.index === i) applySectors(block, e);
  }
  if (blockHash(block) !== logged.hash) {
    throw GlideFsError.CORRUPT(`block ${i} of ${what}: base ${baseKey ?? '(zeros)'} + log records ${logged.seqs.join(',')} do not match hash ${logged.hash}`);
  }
  return block;
}

/**
 * The committed bytes of many logged blocks at once: each base object is
 * GET once, each record once (in seq order, a window of `window` GETs in
 * flight), and applied to every block it holds sectors of. Checked against
 * each block's hash. A record gone (folded by a checkpoint meanwhile) throws
 * RecordGone.
 */
export async function materializeMany(
  store: ObjectStore,
  records: RecordCache,
  what: string,
  items: Array<{ i: number; base: string | undefined; logged: LoggedBlock }>,
  onGet: () => void = () => undefined,
  window = 8,
): Promise<Map<number, Buffer>> {
  const out = new Map<number, Buffer>();
  const limit = pLimit(window);
  await Promise.all(
    items.map((it) =>
      limit(async () => {
        if (it.base === undefined) {
          out.set(it.i, Buffer.alloc(BLOCK_SIZE));
          return;
        }
        const data = await store.get(it.base);
        onGet();
        if (data === null) throw GlideFsError.CORRUPT(`object ${it.base} (block ${it.i} of ${what}) is missing from the store`);
        if (data.length !== BLOCK_SIZE || blockHash(data) !== keyHash(it.base)) {
          throw GlideFsError.CORRUPT(`object ${it.base} (block ${it.i} of ${what}) does not match its hash`);
        }
        out.set(it.i, Buffer.from(data));
      }),
    ),
  );
  const need = new Map<number, Set<number>>();
  for (const it of items) {
    for (const seq of it.logged.seqs) {
      let s = need.get(seq);
      if (!s) need.set(seq, (s = new Set()));
      s.add(it.i);
    }
  }
  const seqs = [...need.keys()].sort((a, b) => a - b);
  const inflight: Array<Promise<FlushRecord | null>> = [];
  let next = 0;
  for (let k = 0; k < seqs.length; k++) {
    while (inflight.length < window && next < seqs.length) {
      const p = records.get(seqs[next++]);
      p.catch(() => undefined);
      inflight.push(p);
    }
    const rec = await inflight.shift()!;
    onGet();
    if (rec === null) throw new RecordGone(seqs[k]);
    const blocks = need.get(seqs[k])!;
    for (const e of rec.sectors) if (blocks.has(e.index)) applySectors(out.get(e.index)!, e);
  }
  for (const it of items) {
    if (blockHash(out.get(it.i)!) !== it.logged.hash) {
      throw GlideFsError.CORRUPT(`block ${it.i} of ${what}: base ${it.base ?? '(zeros)'} + log records ${it.logged.seqs.length} do not match hash ${it.logged.hash}`);
    }
  }
  return out;
}

/** Crash points for the kill -9 tests: GLIDEFS_CRASH_AT=<point> kills the process there. */
export function crashPoint(point: string): void {
  if (process.env.GLIDEFS_CRASH_AT === point) {
    process.stdout.write(`CRASH ${point}\n`);
    process.kill(process.pid, 'SIGKILL');
  }
}

/**
 * Deletes objects whose `deleting` rows this process holds, then drops the
 * rows (counting the deletes). A delete that fails still drops its row: the
 * object is then an orphan, which gc removes.
 */
export async function deleteObjects(
  vol: { deps: { store: ObjectStore; catalog: Catalog; uploadConcurrency: number } },
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
  vol.deps.catalog.dropDeleting(failed);
  return done.length;
}
