/**
 * The store marker: one owner per store prefix (FORMAT.md, "Store marker").
 *
 * `<prefix>/glidekv-store.json` holds `{"format": "glidekv-store", "version":
 * 1, "storeId": <uuid>, "createdAt": <ISO time>}`. It is created once, with
 * putIfAbsent, and never rewritten. The catalog that created it records the
 * store id (catalog `meta`: `store_id`, `store_id_state`); a catalog whose id
 * differs, or that has none while the store has a marker, is not the store's
 * catalog: GlideFs refuses its writes and gc with E_STORE_OWNED naming both.
 *
 * Claiming is crash-safe in two steps: the catalog first records the new id
 * as `claimed` (durable), then creates the marker, then marks it `confirmed`.
 * A crash in between leaves `claimed`: the next open finds either no marker
 * (creates it again with the same id) or its own id (confirms), or another
 * id (another catalog won the race: the claim is dropped, E_STORE_OWNED).
 *
 * An unmarked prefix that already holds objects (a store used before markers
 * existed) is claimed only by a catalog that names an object in it; a fresh
 * catalog pointed at such a store is refused, so that it never becomes the
 * owner of, and gc's, another catalog's objects.
 */
import { randomUUID } from 'node:crypto';
import type { Catalog } from './catalog.js';
import { GlideFsError } from './errors.js';
import type { ObjectStore } from './object-store.js';

export const MARKER_NAME = 'glidekv-store.json';
export const MARKER_FORMAT = 'glidekv-store';
/** The marker format version this glidekv writes and understands. */
export const MARKER_VERSION = 1;

export interface StoreMarker {
  format: string;
  version: number;
  storeId: string;
  createdAt: string;
}

export function markerKey(prefix: string): string {
  return prefix ? `${prefix}/${MARKER_NAME}` : MARKER_NAME;
}

export function newMarker(storeId: string = randomUUID()): StoreMarker {
  return { format: MARKER_FORMAT, version: MARKER_VERSION, storeId, createdAt: new Date().toISOString() };
}

export function encodeMarker(m: StoreMarker): Buffer {
  return Buffer.from(JSON.stringify(m) + '\n');
}

/** Parses marker bytes; E_VERSION for a newer format version, E_CORRUPT for anything unreadable. */
export function decodeMarker(bytes: Buffer, where: string): StoreMarker {
  let m: Partial<StoreMarker>;
  try {
    m = JSON.parse(bytes.toString('utf8')) as Partial<StoreMarker>;
  } catch (err) {
    throw GlideFsError.CORRUPT(`store marker ${where} is not JSON`, err);
  }
  if (m === null || typeof m !== 'object' || m.format !== MARKER_FORMAT || typeof m.version !== 'number') {
    throw GlideFsError.CORRUPT(`store marker ${where} is not a glidekv store marker`);
  }
  if (m.version > MARKER_VERSION) {
    throw GlideFsError.VERSION(`store marker ${where} has format version ${m.version}; this glidekv understands version ${MARKER_VERSION} — use a newer glidekv`);
  }
  if (m.version < 1 || typeof m.storeId !== 'string' || !/^[0-9a-f-]{8,64}$/.test(m.storeId)) {
    throw GlideFsError.CORRUPT(`store marker ${where} has no valid store id`);
  }
  return { format: m.format, version: m.version, storeId: m.storeId, createdAt: String(m.createdAt ?? '') };
}

export async function readMarker(store: ObjectStore, prefix: string): Promise<StoreMarker | null> {
  const key = markerKey(prefix);
  const bytes = await store.get(key);
  return bytes === null ? null : decodeMarker(bytes, `${store.description}/${key}`);
}

/** True if anything at all is stored under the prefix (the marker aside). */
async function prefixHasObjects(store: ObjectStore, prefix: string): Promise<boolean> {
  const marker = markerKey(prefix);
  for await (const key of store.list(prefix ? `${prefix}/` : '')) {
    if (key !== marker) return true;
  }
  return false;
}

function owned(store: ObjectStore, catalogPath: string, mine: string | null, theirs: string): GlideFsError {
  return GlideFsError.STORE_OWNED(
    mine === null
      ? `store ${store.description} belongs to store id ${theirs}; catalog ${catalogPath} has no store id, so it is not that store's catalog (rebuild one from the store with 'glidekv restore')`
      : `store ${store.description} has store id ${theirs}, but catalog ${catalogPath} belongs to store id ${mine}: refusing writes and gc`,
  );
}

/**
 * Makes sure `catalog` is the owner of the store prefix: creates the marker on
 * first use, or checks that its store id is the catalog's. Throws
 * E_STORE_OWNED (naming both ids), E_VERSION (a newer marker), E_CORRUPT, or
 * the store's error. Returns the store id.
 */
export async function ensureStoreOwner(store: ObjectStore, prefix: string, catalog: Catalog, catalogPath: string): Promise<string> {
  const key = markerKey(prefix);
  const where = `${store.description}/${key}`;
  const mine = catalog.storeOwner();
  let marker = await readMarker(store, prefix);
  if (marker === null) {
    if (mine?.state === 'confirmed') {
      throw GlideFsError.STORE_OWNED(
        `catalog ${catalogPath} belongs to store id ${mine.storeId}, but ${store.description} has no store marker (a different or emptied store): refusing writes and gc`,
      );
    }
    if (mine === null && (await prefixHasObjects(store, prefix)) && !(await namesAnObjectIn(store, catalog))) {
      throw GlideFsError.STORE_OWNED(
        `store ${store.description} holds objects but no store marker, and catalog ${catalogPath} names none of them: they belong to another catalog; refusing writes and gc`,
      );
    }
    const claim = mine?.storeId ?? randomUUID();
    if (mine === null) catalog.setStoreOwner(claim, 'claimed');
    if (await store.putIfAbsent(key, encodeMarker(newMarker(claim)))) {
      catalog.setStoreOwner(claim, 'confirmed');
      return claim;
    }
    marker = await readMarker(store, prefix);
    if (marker === null) throw GlideFsError.STORE(`store marker ${where} was created and is gone again`);
    if (marker.storeId === claim) {
      // ours: an earlier attempt created it (its answer was lost)
      catalog.setStoreOwner(claim, 'confirmed');
      return claim;
    }
    catalog.clearStoreOwner(claim); // another catalog won the race: not ours
    throw owned(store, catalogPath, null, marker.storeId);
  }
  if (mine !== null && mine.storeId === marker.storeId) {
    if (mine.state !== 'confirmed') catalog.setStoreOwner(mine.storeId, 'confirmed');
    return mine.storeId;
  }
  if (mine !== null && mine.state === 'claimed') catalog.clearStoreOwner(mine.storeId); // lost the race: not ours
  throw owned(store, catalogPath, mine?.state === 'confirmed' ? mine.storeId : null, marker.storeId);
}

/** Does the catalog name an object that is in this store (a catalog that used it before markers)? */
async function namesAnObjectIn(store: ObjectStore, catalog: Catalog): Promise<boolean> {
  for (const key of catalog.sampleObjectKeys(3)) {
    if ((await store.head(key)) !== null) return true;
  }
  return false;
}

/**
 * Makes `catalog` the owner of the store's existing marker (restore: a
 * catalog rebuilt from the store). E_VERSION/E_CORRUPT as readMarker; a store
 * without a marker gets one.
 */
export async function adoptStoreMarker(store: ObjectStore, prefix: string, catalog: Catalog): Promise<string> {
  let marker = await readMarker(store, prefix);
  if (marker === null) {
    const m = newMarker();
    catalog.setStoreOwner(m.storeId, 'claimed');
    if (await store.putIfAbsent(markerKey(prefix), encodeMarker(m))) {
      catalog.setStoreOwner(m.storeId, 'confirmed');
      return m.storeId;
    }
    marker = await readMarker(store, prefix);
    if (marker === null) throw GlideFsError.STORE(`store marker of ${store.description} was created and is gone again`);
  }
  catalog.setStoreOwner(marker.storeId, 'confirmed');
  return marker.storeId;
}
