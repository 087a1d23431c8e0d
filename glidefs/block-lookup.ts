/**
 * BlockLookup: an open volume's view of its block map (FORMAT.md, "Layers").
 *
 * The map is not held in memory: a lookup of block i is a point query to the
 * catalog through the volume's layer chain (Catalog.lookup, a statement
 * prepared once), behind a bounded LRU of the answers (holes included). The
 * memory is the LRU's, whatever the volume's size: at most `max` entries of
 * ~150 bytes (a JS Map entry plus a ~50-character key string; measured 148 B
 * with node --expose-gc), 64 Ki entries by default: about 9.5 MiB at most.
 *
 * Only the volume's writer changes what a volume reads (flush and checkpoint
 * commits set entries here after their catalog commit; a catch-up clears
 * them). Forks, deletes and flattens of other volumes move rows between
 * layers but never change a volume's view, so cached answers stay true.
 */
import type { Catalog } from './catalog.js';

export const DEFAULT_LOOKUP_CACHE_ENTRIES = 65536;

export class BlockLookup {
  /** block index -> object key, or null for a hole; insertion order = recency. */
  private readonly lru = new Map<number, string | null>();
  /** Catalog queries made (tests, stats). */
  misses = 0;

  constructor(
    private readonly catalog: Catalog,
    private readonly volumeId: number,
    readonly max = DEFAULT_LOOKUP_CACHE_ENTRIES,
  ) {}

  /** The object key of block i as committed; undefined = a hole. */
  get(i: number): string | undefined {
    const c = this.lru.get(i);
    if (c !== undefined) {
      this.lru.delete(i);
      this.lru.set(i, c);
      return c ?? undefined;
    }
    this.misses++;
    const k = this.catalog.lookup(this.volumeId, i);
    this.remember(i, k ?? null);
    return k;
  }

  has(i: number): boolean {
    return this.get(i) !== undefined;
  }

  /** Block i now names `key` (after a commit that said so). */
  set(i: number, key: string): void {
    this.remember(i, key);
  }

  /** Block i is now a hole (after a commit that said so). */
  delete(i: number): void {
    this.remember(i, null);
  }

  /** Forgets every answer (after the catalog changed under the volume: catch-up, checkpoint). */
  clear(): void {
    this.lru.clear();
  }

  /** Entries held (bounded by `max`). */
  get cached(): number {
    return this.lru.size;
  }

  private remember(i: number, v: string | null): void {
    this.lru.delete(i);
    this.lru.set(i, v);
    if (this.lru.size > this.max) this.lru.delete(this.lru.keys().next().value as number);
  }
}
