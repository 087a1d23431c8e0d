// Goal: one writer per volume across catalogs (machines) through the lease in the store: while a
// holder has it, a writable open elsewhere is refused with E_LEASED naming the holder; after the
// holder closes, or its lease expires, the newcomer opens, claims the log, and a holder that was cut
// off gets E_FENCED; nothing acknowledged is lost.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { DirStore, GlideFs, MemoryStore, type ObjectStore } from '../../glidefs/index.js';
import { restoreCatalog } from '../../glidefs/restore.js';
import { leaseKey, parseLease, VolumeLease } from '../../glidefs/lease.js';
import { listLog, readRecord } from '../../glidefs/volume-log.js';
import { KIND_FLUSH } from '../../glidefs/log-record.js';

const roots: string[] = [];
const opened: GlideFs[] = [];
const stuckStores: StuckRenewals[] = [];
afterEach(async () => {
  for (const s of stuckStores.splice(0)) s.resume(); // a failed test must not leave a close waiting on a held renewal
  for (const g of opened.splice(0)) await g.close().catch(() => undefined);
  for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
});

function setup(): { root: string; store: DirStore } {
  const root = mkdtempSync(join(tmpdir(), 'glidefs-lease-'));
  roots.push(root);
  mkdirSync(join(root, 'objects'));
  return { root, store: new DirStore(join(root, 'objects'), { fsync: false }) };
}

async function openFs(store: ObjectStore, root: string, name: string, leaseMs = 30_000): Promise<GlideFs> {
  const g = await GlideFs.open({ store, catalogPath: join(root, `${name}.db`), cacheDir: join(root, `cache-${name}`), leaseMs, checkpoint: { onClose: false } });
  opened.push(g);
  return g;
}

const sector = (k: number) => Buffer.alloc(4096, 1 + (k % 250));

/** A store whose conditional replaces (the lease renewals) hang until `resume()`: a holder cut off from the store, or paused. */
class StuckRenewals extends MemoryStore {
  private held: Array<() => void> = [];
  stuck = false;
  constructor(private readonly inner: ObjectStore) {
    super();
    stuckStores.push(this);
  }
  override put(k: string, d: Uint8Array) {
    return this.inner.put(k, d);
  }
  override putIfAbsent(k: string, d: Uint8Array) {
    return this.inner.putIfAbsent(k, d);
  }
  override async putIfMatch(k: string, d: Uint8Array, t: string) {
    if (this.stuck) await new Promise<void>((r) => this.held.push(r));
    return this.inner.putIfMatch(k, d, t);
  }
  override getTagged(k: string) {
    return this.inner.getTagged(k);
  }
  override get(k: string) {
    return this.inner.get(k);
  }
  override head(k: string) {
    return this.inner.head(k);
  }
  override delete(k: string) {
    return this.inner.delete(k);
  }
  override list(p: string) {
    return this.inner.list(p);
  }
  resume(): void {
    this.stuck = false;
    for (const r of this.held.splice(0)) r();
  }
}

it('a writable open while another catalog holds the volume is refused with E_LEASED naming the holder; after close it opens', async () => {
  const { root, store } = setup();
  const a = await openFs(store, root, 'a');
  await a.createVolume('v', 8 * 131072);
  const va = await a.openVolume('v');
  await va.write(0, sector(1));
  await va.flush();
  // another machine: a catalog rebuilt from the store alone
  await restoreCatalog(store, '', join(root, 'b.db'));
  const b = await openFs(store, root, 'b');
  const seqBefore = (await listLog(store, '', b.catalog.volume('v').uuid)).length;
  const err = await b.openVolume('v').then(
    () => null,
    (e) => e,
  );
  expect(err?.code).toBe('E_LEASED');
  expect(err.message).toContain(`host ${hostname()}`);
  expect(err.message).toContain(`pid ${process.pid}`);
  expect(err.message).toContain(join(root, 'a.db'));
  await expect(b.deleteVolume('v')).rejects.toThrow(/E_LEASED/);
  // the refused opener wrote nothing to the log, and the holder goes on
  expect((await listLog(store, '', b.catalog.volume('v').uuid)).length).toBe(seqBefore);
  await va.write(4096, sector(2));
  await va.flush();
  // close releases the lease: the other catalog opens at once and reads every flushed byte
  await va.close();
  const lease = parseLease((await store.get(leaseKey('', b.catalog.volume('v').uuid)))!, 'lease');
  expect(lease.released).toBe(true);
  const vb = await b.openVolume('v');
  expect((await vb.read(0, 8192)).equals(Buffer.concat([sector(1), sector(2)]))).toBe(true);
  await vb.write(8192, sector(3));
  await vb.flush();
  // and now the first catalog is the one refused
  await expect(a.openVolume('v')).rejects.toThrow(/E_LEASED: volume 'v'/);
  // read-only opens of snapshots take no lease; a delete by the holder's side removes the lease
  await vb.close();
  await b.deleteVolume('v');
  expect(await store.get(leaseKey('', lease.volume))).toBeNull();
});

it('a lease of a holder on another machine is refused until it expires, then taken over; the newcomer claims the log', async () => {
  const { root, store } = setup();
  const a = await openFs(store, root, 'a');
  await a.createVolume('v', 8 * 131072);
  const uuid = a.catalog.volume('v').uuid;
  const va = await a.openVolume('v');
  await va.write(0, sector(7));
  await va.flush();
  await va.close();
  // a holder on another machine that died without releasing: its lease runs 1.5 s more
  const far = await VolumeLease.acquire(store, '', uuid, 'v', { token: 'far-away:4242:abcd', host: 'far-away', pid: 4242, catalog: '/elsewhere/catalog.db' }, 1500);
  expect(far.takenOver).toBeNull(); // a released lease is free
  const t0 = Date.now();
  await expect(a.openVolume('v')).rejects.toThrow(/E_LEASED: volume 'v' .* on host far-away by pid 4242 \(catalog \/elsewhere\/catalog\.db/);
  const seqs = await listLog(store, '', uuid);
  let vb;
  for (;;) {
    try {
      vb = await a.openVolume('v');
      break;
    } catch (err) {
      if ((err as { code?: string }).code !== 'E_LEASED') throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  expect(Date.now() - t0).toBeGreaterThanOrEqual(1400); // not before the expiry
  // the claim: one empty flush record of the newcomer at the next seq
  const after = await listLog(store, '', uuid);
  expect(after.length).toBe(seqs.length + 1);
  const claim = (await readRecord(store, '', uuid, after[after.length - 1]))!.rec;
  expect(claim.kind).toBe(KIND_FLUSH);
  expect(claim.kind === KIND_FLUSH && claim.blocks.length + claim.sectors.length).toBe(0);
  expect(claim.writer).not.toBe('far-away:4242:abcd');
  expect((await vb.read(0, 4096)).equals(sector(7))).toBe(true);
  // the old holder's lease object is ours now: its renewal is refused
  await expect(far.lease.renew()).rejects.toThrow(/E_FENCED: .*taken over by/);
});

it('a holder cut off past its expiry: the newcomer takes over, the old holder is fenced (at its lease renewal, or at its next flush); nothing acknowledged is lost', async () => {
  const { root, store } = setup();
  const stuck = new StuckRenewals(store);
  // a 3 s lease: B's first open (after a restore) falls inside it even on a loaded machine (600 ms did not, at load 20)
  const a = await openFs(stuck, root, 'a', 3000);
  await a.createVolume('v', 8 * 131072);
  const va = await a.openVolume('v');
  for (let k = 0; k < 3; k++) {
    await va.write(k * 4096, sector(k));
    await va.flush(); // acknowledged
  }
  stuck.stuck = true; // A can no longer renew (paused, or cut off from the store)
  await restoreCatalog(store, '', join(root, 'b.db'));
  const b = await openFs(store, root, 'b', 600);
  await expect(b.openVolume('v')).rejects.toThrow(/E_LEASED/);
  await new Promise((r) => setTimeout(r, 3100));
  const vb = await b.openVolume('v'); // expired: taken over, log claimed
  for (let k = 0; k < 3; k++) expect((await vb.read(k * 4096, 4096)).equals(sector(k)), `A's ack ${k}`).toBe(true);
  await vb.write(65536, sector(50));
  await vb.flush();
  // A, still cut off from the lease, writes and flushes: its record lands on a taken seq
  await va.write(3 * 4096, sector(3));
  await expect(va.flush()).rejects.toThrow(/E_FENCED/);
  await expect(va.write(4 * 4096, sector(4))).rejects.toThrow(/E_FENCED/);
  stuck.resume();
  // B keeps writing; everything both acknowledged is in the store
  await vb.write(65536 + 4096, sector(51));
  await vb.flush();
  await restoreCatalog(store, '', join(root, 'c.db'));
  const c = await openFs(store, root, 'c');
  await vb.close();
  const vc = await c.openVolume('v');
  for (let k = 0; k < 3; k++) expect((await vc.read(k * 4096, 4096)).equals(sector(k))).toBe(true);
  expect((await vc.read(3 * 4096, 4096)).equals(Buffer.alloc(4096))).toBe(true); // A's unacknowledged write is not there
  expect((await vc.read(65536, 8192)).equals(Buffer.concat([sector(50), sector(51)]))).toBe(true);
});

it('a renewal that finds another holder fences the old holder before its next flush', async () => {
  const { root, store } = setup();
  const stuck = new StuckRenewals(store);
  const a = await openFs(stuck, root, 'a', 600);
  await a.createVolume('v', 8 * 131072);
  const va = await a.openVolume('v');
  await va.write(0, sector(0));
  await va.flush();
  stuck.stuck = true;
  await new Promise((r) => setTimeout(r, 700));
  await restoreCatalog(store, '', join(root, 'b.db'));
  const b = await openFs(store, root, 'b', 600);
  const vb = await b.openVolume('v');
  stuck.resume(); // A's held renewal goes through now: refused, the lease is B's
  for (const end = Date.now() + 5000; !(va as unknown as { fenced: unknown }).fenced && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
  await expect(va.write(4096, sector(1))).rejects.toThrow(/E_FENCED: .*lease was taken over by/);
  await vb.close();
});

it("every PUT of the lease is counted in the volume's stats (leasePuts), so glidefs's PUT count stays the store's", async () => {
  const { root } = setup();
  const inner = new MemoryStore();
  let leasePuts = 0;
  const counted = new StuckRenewals(inner); // a pass-through here (never stuck)
  for (const m of ['putIfAbsent', 'putIfMatch', 'put'] as const) {
    const f = counted[m].bind(counted) as (...a: unknown[]) => Promise<unknown>;
    (counted as unknown as Record<string, unknown>)[m] = (k: string, ...rest: unknown[]) => {
      if (k.endsWith('/lease')) leasePuts++;
      return f(k, ...rest);
    };
  }
  const a = await openFs(counted, root, 'a', 600);
  await a.createVolume('v', 131072);
  const v = await a.openVolume('v');
  await new Promise((r) => setTimeout(r, 700)); // renewed every 200 ms
  await v.close();
  expect(leasePuts).toBeGreaterThanOrEqual(3); // create, renewals, release
  expect(a.stats('v').leasePuts).toBe(leasePuts);
});
