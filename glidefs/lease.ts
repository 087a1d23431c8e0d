/**
 * The volume lease in the store (FORMAT.md, "Volume lease"): while one
 * process (on any machine) has a volume open for writing, a writable open
 * anywhere else is refused with E_LEASED naming the holder. The lease is one
 * small JSON object, `<prefix>/volumes/<uuid>/lease`, created with
 * putIfAbsent and renewed, taken over and released with putIfMatch on its
 * entity tag, so of two racing takers exactly one wins.
 *
 * The lease makes the refusal clear; it is not what keeps two writers apart.
 * The log's fencing rule does that (volume-log.ts): a holder paused past its
 * expiry, then resumed, finds the newcomer's records at its next seq and gets
 * E_FENCED. A newcomer that takes over a lease its holder did not release
 * first appends an empty record (the claim, checkpoint.ts `claimLog`), so
 * that the old holder's next record lands on a taken seq.
 */
import { hostname } from 'node:os';
import { pidAlive } from '../lib/pid-alive.js';
import { GlideFsError } from './errors.js';
import type { ObjectStore } from './object-store.js';
import { volumesPrefix } from './log-record.js';

/** How long a lease lasts without renewal (ms). Renewed every third of it. */
export const DEFAULT_LEASE_MS = 30_000;
export const LEASE_FORMAT = 'glidekv-lease';
export const LEASE_VERSION = 1;

export interface LeaseHolder {
  /** The opening GlideFs's owner token (`host:pid:random`). */
  token: string;
  host: string;
  pid: number;
  /** The catalog file the holder opened the volume through. */
  catalog: string;
}

export interface LeaseBody {
  format: typeof LEASE_FORMAT;
  version: number;
  volume: string;
  name: string;
  holder: LeaseHolder;
  acquiredAt: number;
  renewedAt: number;
  /** The holder's clock (ms since the epoch): after it, anyone may take the lease over. */
  expiresAt: number;
  durationMs: number;
  /** Set by close: free at once. */
  released: boolean;
  /** Renewals by this holder (every body differs, so every write changes the tag). */
  n: number;
}

export function leaseKey(prefix: string, uuid: string): string {
  return `${volumesPrefix(prefix)}${uuid}/lease`;
}

/** Parses `<prefix>/volumes/<uuid>/lease`; null if it is not one. */
export function parseLeaseKey(prefix: string, key: string): string | null {
  const vp = volumesPrefix(prefix);
  if (!key.startsWith(vp)) return null;
  const m = /^([0-9a-f]{32})\/lease$/.exec(key.slice(vp.length));
  return m ? m[1] : null;
}

export function parseLease(buf: Buffer, key: string): LeaseBody {
  let b: LeaseBody;
  try {
    b = JSON.parse(buf.toString('utf8')) as LeaseBody;
  } catch {
    throw GlideFsError.CORRUPT(`lease ${key} is not JSON`);
  }
  if (b?.format !== LEASE_FORMAT || typeof b.version !== 'number') throw GlideFsError.CORRUPT(`lease ${key} is not a glidekv lease`);
  if (b.version > LEASE_VERSION) throw GlideFsError.VERSION(`lease ${key} has version ${b.version}, this glidekv reads version ${LEASE_VERSION}`);
  if (!Number.isInteger(b.version) || b.version < 1) throw GlideFsError.CORRUPT(`lease ${key} has no valid version`);
  if (typeof b.expiresAt !== 'number' || typeof b.holder?.token !== 'string' || typeof b.holder.host !== 'string' || typeof b.holder.pid !== 'number') {
    throw GlideFsError.CORRUPT(`lease ${key} lacks its holder or expiry`);
  }
  // every field a reader uses has its type and range (a time a Date can show; 'released' a boolean, not truthy)
  const time = (x: unknown) => typeof x === 'number' && x >= 0 && x <= 8.64e15;
  const nat = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x >= 0;
  if (!time(b.expiresAt) || !time(b.acquiredAt) || !time(b.renewedAt) || !nat(b.durationMs) || !nat(b.n) || typeof b.released !== 'boolean') {
    throw GlideFsError.CORRUPT(`lease ${key} has a malformed time, count or released flag`);
  }
  if (typeof b.volume !== 'string' || typeof b.name !== 'string' || typeof b.holder.catalog !== 'string' || !Number.isSafeInteger(b.holder.pid) || b.holder.pid <= 0) {
    throw GlideFsError.CORRUPT(`lease ${key} has a malformed volume, name or holder`);
  }
  return b;
}

/** Why a lease may be taken now, or null when its holder still has it. */
export function freeReason(b: LeaseBody, now: number, token: string, writerOf?: string): string | null {
  if (b.released) return 'released';
  if (b.holder.token === token) return 'ours';
  if (now >= b.expiresAt) return 'expired';
  if (b.holder.host === hostname() && b.holder.pid !== process.pid && !pidAlive(b.holder.pid)) return 'holder dead';
  // The caller holds the volume's writer row in catalog `writerOf` (E_LOCKED keeps out every live
  // writer of that catalog), so a holder of this host and catalog is not writing: a close whose
  // release did not reach the store, or an instance dropped without close.
  if (writerOf !== undefined && b.holder.host === hostname() && b.holder.catalog === writerOf) return 'same catalog, not its writer';
  return null;
}

export function leasedError(name: string, uuid: string, b: LeaseBody, now: number): GlideFsError {
  const h = b.holder;
  const left = Math.max(0, Math.ceil((b.expiresAt - now) / 1000));
  return new GlideFsError(
    'E_LEASED',
    `volume '${name}' (${uuid}) is open for writing on host ${h.host} by pid ${h.pid} (catalog ${h.catalog}, holder ${h.token}); ` +
      `its lease runs until ${new Date(b.expiresAt).toISOString()} (${left} s) and is renewed every ${Math.round(b.durationMs / 3000)} s while it is open: ` +
      `close it there, or open it here once that holder is gone and its lease has expired`,
  );
}

export interface AcquireResult {
  lease: VolumeLease;
  /** The lease taken over from a holder that did not release it (expired, or a dead pid on this host): the newcomer must claim the log. */
  takenOver: LeaseBody | null;
}

export class VolumeLease {
  private timer: NodeJS.Timeout | null = null;
  private renewing: Promise<void> | null = null;
  private released = false;
  /** The last renewal's error (a store outage): renewals go on; fencing protects the log meanwhile. */
  lastError: unknown = null;

  private constructor(
    private readonly store: ObjectStore,
    readonly key: string,
    private body: LeaseBody,
    private etag: string,
    /** Called for every PUT of the lease object (counted as the volume's lease PUTs). */
    private readonly onPut: () => void,
  ) {}

  get expiresAt(): number {
    return this.body.expiresAt;
  }

  get holder(): LeaseHolder {
    return this.body.holder;
  }

  /**
   * Takes the lease of volume `uuid` for `holder`: creates it when there is
   * none, takes it over when it is released, expired, held by a dead pid of
   * this host, or (`writerOf`: the caller holds the volume's writer row in
   * that catalog) held through the same catalog on this host; E_LEASED
   * (naming the holder) when another holder has it.
   */
  static async acquire(
    store: ObjectStore,
    prefix: string,
    uuid: string,
    name: string,
    holder: LeaseHolder,
    durationMs = DEFAULT_LEASE_MS,
    onPut: () => void = () => undefined,
    writerOf?: string,
  ): Promise<AcquireResult> {
    checkDuration(durationMs);
    const key = leaseKey(prefix, uuid);
    for (let attempt = 0; attempt < 16; attempt++) {
      const now = Date.now();
      const body: LeaseBody = {
        format: LEASE_FORMAT,
        version: LEASE_VERSION,
        volume: uuid,
        name,
        holder,
        acquiredAt: now,
        renewedAt: now,
        expiresAt: now + durationMs,
        durationMs,
        released: false,
        n: 0,
      };
      const bytes = Buffer.from(JSON.stringify(body));
      const cur = await store.getTagged(key);
      let prev: LeaseBody | null = null;
      if (cur === null) {
        onPut();
        if (!(await store.putIfAbsent(key, bytes))) continue; // another taker was first: look again
      } else {
        prev = parseLease(cur.data, key);
        const why = freeReason(prev, now, holder.token, writerOf);
        if (why === null) throw leasedError(name, uuid, prev, now);
        onPut();
        if ((await store.putIfMatch(key, bytes, cur.etag)) === null) {
          // another taker won, or our replace landed and its answer was lost: read back
          const again = await store.getTagged(key);
          if (!again?.data.equals(bytes)) continue;
        }
      }
      const mine = await store.getTagged(key);
      if (mine === null || !mine.data.equals(bytes)) continue; // replaced right after: decide again
      const takenOver = prev !== null && !prev.released && prev.holder.token !== holder.token ? prev : null;
      return { lease: new VolumeLease(store, key, body, mine.etag, onPut), takenOver };
    }
    throw GlideFsError.CONFLICT(`lease ${key}: 16 attempts lost to other takers`);
  }

  /**
   * Renews every `durationMs / 3` until release. `onLost` is called once when
   * another holder has the lease (this holder was paused or cut off past
   * its expiry): the caller stops writing (the log would fence it anyway).
   */
  start(onLost: (err: GlideFsError) => void): void {
    if (this.timer || this.released) return;
    this.timer = setInterval(() => {
      if (this.renewing) return;
      this.renewing = this.renew()
        .then(() => {
          this.lastError = null;
        })
        .catch((err) => {
          this.lastError = err;
          if (err instanceof GlideFsError && err.code === 'E_FENCED') {
            this.stop();
            onLost(err);
          }
        })
        .finally(() => {
          this.renewing = null;
        });
    }, Math.max(1, Math.floor(this.body.durationMs / 3)));
    this.timer.unref();
  }

  /** One renewal: a new expiry under the current tag. E_FENCED when another holder has it. */
  async renew(): Promise<void> {
    if (this.released) return;
    const now = Date.now();
    const next: LeaseBody = { ...this.body, renewedAt: now, expiresAt: now + this.body.durationMs, n: this.body.n + 1 };
    const bytes = Buffer.from(JSON.stringify(next));
    this.onPut();
    const tag = await this.store.putIfMatch(this.key, bytes, this.etag);
    if (tag !== null) {
      this.body = next;
      this.etag = tag;
      return;
    }
    const cur = await this.store.getTagged(this.key);
    if (cur?.data.equals(bytes)) {
      this.body = next; // our replace landed, its answer was lost
      this.etag = cur.etag;
      return;
    }
    const other = cur ? parseLease(cur.data, this.key) : null;
    const who = other ? `${other.holder.host} pid ${other.holder.pid} (${other.holder.token})` : 'nobody (the lease is gone)';
    throw new GlideFsError('E_FENCED', `volume '${this.body.name}' (${this.body.volume}): its lease was taken over by ${who}; this writer stops`);
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Stops renewing and marks the lease released (only if it is still ours). Best effort: otherwise it expires. */
  async release(): Promise<void> {
    if (this.released) return;
    this.stop();
    await this.renewing?.catch(() => undefined);
    this.released = true;
    const now = Date.now();
    const done: LeaseBody = { ...this.body, renewedAt: now, expiresAt: now, released: true, n: this.body.n + 1 };
    try {
      this.onPut();
      await this.store.putIfMatch(this.key, Buffer.from(JSON.stringify(done)), this.etag);
    } catch {
      // the store is unreachable: the lease expires by itself
    }
  }
}

function checkDuration(ms: number): void {
  if (!Number.isFinite(ms) || ms < 300) throw GlideFsError.INVALID(`lease duration must be at least 300 ms, got ${ms}`);
}

/**
 * E_LEASED when another holder has a live lease on the volume (delete checks
 * this); resolves otherwise. `writerOf`: the caller holds the volume's writer
 * row in that catalog, so a holder through the same catalog on this host is
 * not writing (as in `acquire`).
 */
export async function checkNotLeased(store: ObjectStore, prefix: string, uuid: string, name: string, token: string, writerOf?: string): Promise<void> {
  const key = leaseKey(prefix, uuid);
  const cur = await store.get(key);
  if (cur === null) return;
  const b = parseLease(cur, key);
  const now = Date.now();
  if (freeReason(b, now, token, writerOf) === null) throw leasedError(name, uuid, b, now);
}
