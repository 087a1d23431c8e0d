/**
 * The keydir of one namespace: key -> (file id, offset, value size, revision, mtime, flags),
 * packed into typed arrays, never one JS object per key.
 *
 * - Entries live in parallel typed arrays (struct of arrays), indexed by an entry number.
 *   Freed entry numbers are chained through `fileId` and reused.
 * - Key bytes live in one arena Buffer (`keyOff`, `keyLen` point into it); the arena is
 *   compacted when more than half of it is garbage.
 * - An open-addressing hash table (linear probing, backward-shift deletion, no tombstones)
 *   maps FNV-1a(key) to entry number + 1.
 * - `list` order: a sorted array of entry numbers built on demand; later inserts are kept
 *   aside and merged in on the next sorted read, deletes are skipped during the merge
 *   (their entry numbers are not reused until then).
 *
 * - Revision and mtime are 48-bit integers, each a u32 low word plus a u16 high word
 *   (`revOf(e)`, `mtimeOf(e)` put them together): revisions are exact up to MAX_REVISION
 *   (2^48 - 1, which the engine enforces: E_REVISION_LIMIT beyond it), mtimes are whole
 *   milliseconds since 1970 up to the year 10889 (a record's mtime outside that is clamped).
 *
 * Per key: 31 bytes of entry arrays + 4 bytes per hash slot (load <= 0.75) + the key bytes.
 */
import { fnv1a } from '../lib/hash.js';
import { sortEntriesByKey } from './key-sort.js';

const F_DEAD = 0x80;
const TWO32 = 0x1_0000_0000;
/** The largest revision (and mtime, in ms) a keydir holds exactly: 48 bits. */
export const MAX_REVISION = 2 ** 48 - 1;
/** Entry flag: the record holds a blob pointer (payload = 16-byte hash). Same bit as record F_POINTER. */
export const KF_POINTER = 0x01;
/** Entry flag: a tombstone, kept only while recovery merges segments. */
export const KF_TOMBSTONE = 0x40;

function growU32(a: Uint32Array, n: number): Uint32Array { const b = new Uint32Array(n); b.set(a); return b; }
function growU16(a: Uint16Array, n: number): Uint16Array { const b = new Uint16Array(n); b.set(a); return b; }
function growU8(a: Uint8Array, n: number): Uint8Array { const b = new Uint8Array(n); b.set(a); return b; }

export class Keydir {
  keyOff: Uint32Array;
  keyLen: Uint16Array;
  flags: Uint8Array;
  fileId: Uint32Array;
  offset: Uint32Array;
  vsize: Uint32Array;
  /** Revision = revLo + revHi * 2^32 (revOf). */
  revLo: Uint32Array;
  revHi: Uint16Array;
  /** mtime (ms) = mtimeLo + mtimeHi * 2^32 (mtimeOf). */
  mtimeLo: Uint32Array;
  mtimeHi: Uint16Array;
  arena: Buffer;

  private cap: number;
  private top = 0; // entry numbers [0, top) have been handed out
  private freeHead = -1;
  private deferredHead = -1; // deleted while a sorted array exists
  private slots: Uint32Array; // entry + 1, 0 = empty
  private mask: number;
  private arenaUsed = 0;
  private arenaGarbage = 0;
  /** Number of live keys. */
  size = 0;

  /** Blob hashes of pointer entries (few: only values of valueThreshold bytes or more). */
  private readonly hashes = new Map<number, Buffer>();

  private sorted: Uint32Array | null = null;
  private sortedLen = 0;
  private added: number[] = [];
  private removedSinceSort = 0;

  constructor(initialCapacity = 16) {
    this.cap = Math.max(4, initialCapacity);
    this.keyOff = new Uint32Array(this.cap);
    this.keyLen = new Uint16Array(this.cap);
    this.flags = new Uint8Array(this.cap);
    this.fileId = new Uint32Array(this.cap);
    this.offset = new Uint32Array(this.cap);
    this.vsize = new Uint32Array(this.cap);
    this.revLo = new Uint32Array(this.cap);
    this.revHi = new Uint16Array(this.cap);
    this.mtimeLo = new Uint32Array(this.cap);
    this.mtimeHi = new Uint16Array(this.cap);
    let s = 16;
    while (s * 0.75 < this.cap) s *= 2;
    this.slots = new Uint32Array(s);
    this.mask = s - 1;
    this.arena = Buffer.allocUnsafe(Math.max(256, this.cap * 16));
  }

  /** Bytes held by this keydir's arrays, hash table and key arena (capacity, not use). */
  byteFootprint(): number {
    return this.keyOff.byteLength + this.keyLen.byteLength + this.flags.byteLength + this.fileId.byteLength +
      this.offset.byteLength + this.vsize.byteLength + this.revLo.byteLength + this.revHi.byteLength + this.mtimeLo.byteLength + this.mtimeHi.byteLength +
      this.slots.byteLength + this.arena.length + (this.sorted ? this.sorted.byteLength : 0) + this.added.length * 8;
  }

  /** Bytes of live keys (what the footprint would be for the keys alone). */
  keyBytes(): number {
    return this.arenaUsed - this.arenaGarbage;
  }

  private keyEquals(e: number, key: Uint8Array): boolean {
    const len = this.keyLen[e];
    if (len !== key.length) return false;
    const a = this.arena;
    const o = this.keyOff[e];
    for (let i = 0; i < len; i++) if (a[o + i] !== key[i]) return false;
    return true;
  }

  /** Entry number of `key`, or -1. */
  find(key: Uint8Array): number {
    let i = fnv1a(key, 0, key.length) & this.mask;
    for (;;) {
      const s = this.slots[i];
      if (s === 0) return -1;
      if (this.keyEquals(s - 1, key)) return s - 1;
      i = (i + 1) & this.mask;
    }
  }

  /** Revision of entry e (exact: at most MAX_REVISION). */
  revOf(e: number): number {
    return this.revLo[e] + this.revHi[e] * TWO32;
  }

  /** mtime (ms since 1970) of entry e. */
  mtimeOf(e: number): number {
    return this.mtimeLo[e] + this.mtimeHi[e] * TWO32;
  }

  /** Key bytes of an entry (a view into the arena: copy it if you keep it across writes). */
  keyView(e: number): Buffer {
    const o = this.keyOff[e];
    return this.arena.subarray(o, o + this.keyLen[e]);
  }

  keyCopy(e: number): Buffer {
    return Buffer.from(this.keyView(e));
  }

  /**
   * Sets the location of `key` (inserting it when absent). Returns the entry number.
   * `rev` must be an integer in [0, MAX_REVISION] (RangeError otherwise, nothing changed);
   * `mtime` is clamped to whole milliseconds in [0, MAX_REVISION].
   */
  set(key: Uint8Array, fileId: number, offset: number, vsize: number, rev: number, mtime: number, flags: number,
    hash: Buffer | null = null): number {
    if (!(rev >= 0 && rev <= MAX_REVISION && Math.floor(rev) === rev)) {
      throw new RangeError(`keydir: revision ${rev} is not an integer in [0, 2^48 - 1]`);
    }
    const m = mtime >= 0 ? (mtime <= MAX_REVISION ? Math.floor(mtime) : MAX_REVISION) : 0;
    let e = this.find(key);
    if (e < 0) e = this.insert(key);
    if (hash !== null && (flags & KF_POINTER) !== 0) this.hashes.set(e, hash);
    else if ((this.flags[e] & KF_POINTER) !== 0) this.hashes.delete(e);
    this.fileId[e] = fileId;
    this.offset[e] = offset;
    this.vsize[e] = vsize;
    this.revLo[e] = rev >>> 0; // ToUint32: rev mod 2^32, exact for integers
    this.revHi[e] = (rev - (rev >>> 0)) / TWO32;
    this.mtimeLo[e] = m >>> 0;
    this.mtimeHi[e] = (m - (m >>> 0)) / TWO32;
    this.flags[e] = flags;
    return e;
  }

  private insert(key: Uint8Array): number {
    if (key.length > 0xffff) throw new RangeError(`keydir: a key of ${key.length} bytes (keyLen is 16 bits)`);
    // room for the key bytes first: nothing is changed yet if this allocation fails
    if (this.arenaUsed + key.length > this.arena.length) this.growArena(key.length);
    let e: number;
    if (this.freeHead >= 0) {
      e = this.freeHead;
      this.freeHead = this.fileId[e] === 0xffffffff ? -1 : this.fileId[e];
    } else {
      if (this.top === this.cap) this.growEntries();
      e = this.top++;
    }
    // not in the table yet: a rehash below must not place it (it is placed once, after)
    this.flags[e] = F_DEAD;
    this.arena.set(key, this.arenaUsed);
    this.keyOff[e] = this.arenaUsed;
    this.keyLen[e] = key.length;
    this.arenaUsed += key.length;
    this.size++;
    this.unordered++;
    if ((this.size + 1) > this.slots.length * 0.75) this.rehash(this.slots.length * 2);
    let i = fnv1a(key, 0, key.length) & this.mask;
    while (this.slots[i] !== 0) i = (i + 1) & this.mask;
    this.slots[i] = e + 1;
    if (this.sorted !== null) {
      this.added.push(e);
      if (this.added.length > Math.max(65536, this.sortedLen)) this.dropSorted();
    }
    return e;
  }

  /** Removes entry `e` from the table. */
  remove(e: number): void {
    const key = this.keyView(e);
    let i = fnv1a(key, 0, key.length) & this.mask;
    while (this.slots[i] !== e + 1) {
      if (this.slots[i] === 0) throw new Error('keydir: removing an absent entry');
      i = (i + 1) & this.mask;
    }
    // backward-shift deletion
    let j = i;
    for (;;) {
      j = (j + 1) & this.mask;
      const s = this.slots[j];
      if (s === 0) break;
      const k = this.keyView(s - 1);
      const home = fnv1a(k, 0, k.length) & this.mask;
      // can s move to i? yes if home is cyclically outside (i, j]
      const dist = (j - home) & this.mask;
      const gap = (j - i) & this.mask;
      if (dist >= gap) {
        this.slots[i] = s;
        i = j;
      }
    }
    this.slots[i] = 0;
    if ((this.flags[e] & KF_POINTER) !== 0) this.hashes.delete(e);
    this.arenaGarbage += this.keyLen[e];
    this.flags[e] = F_DEAD;
    this.size--;
    if (this.sorted !== null) {
      this.fileId[e] = this.deferredHead < 0 ? 0xffffffff : this.deferredHead;
      this.deferredHead = e;
      this.removedSinceSort++;
    } else {
      this.fileId[e] = this.freeHead < 0 ? 0xffffffff : this.freeHead;
      this.freeHead = e;
    }
    if (this.arenaGarbage > 65536 && this.arenaGarbage * 2 > this.arenaUsed) this.compactArena();
  }

  /** The blob hash of a pointer entry (undefined for inline values). */
  pointerHash(e: number): Buffer | undefined {
    return this.hashes.get(e);
  }

  /** Moves an entry to a new location (reclaim), keeping everything else. */
  relocate(e: number, fileId: number, offset: number): void {
    this.fileId[e] = fileId;
    this.offset[e] = offset;
  }

  isLive(e: number): boolean {
    return (this.flags[e] & F_DEAD) === 0;
  }

  /** Calls fn(e) for every live entry. fn must not insert or remove. */
  forEach(fn: (e: number) => void): void {
    for (let e = 0; e < this.top; e++) if ((this.flags[e] & F_DEAD) === 0) fn(e);
  }

  /** Upper bound of entry numbers (for loops with isLive). */
  get entryLimit(): number {
    return this.top;
  }

  private growEntries(): void {
    // 1.5x while small, 1.25x once large: bounds the unused tail to a quarter
    const n = Math.max(16, Math.ceil(this.cap * (this.cap < 65536 ? 1.5 : 1.25)));
    this.keyOff = growU32(this.keyOff, n);
    this.keyLen = growU16(this.keyLen, n);
    this.flags = growU8(this.flags, n);
    this.fileId = growU32(this.fileId, n);
    this.offset = growU32(this.offset, n);
    this.vsize = growU32(this.vsize, n);
    this.revLo = growU32(this.revLo, n);
    this.revHi = growU16(this.revHi, n);
    this.mtimeLo = growU32(this.mtimeLo, n);
    this.mtimeHi = growU16(this.mtimeHi, n);
    this.cap = n;
  }

  /** Makes room for `need` more key bytes after arenaUsed: compacts in place of growing when garbage is plenty. */
  private growArena(need: number): void {
    const live = this.arenaUsed - this.arenaGarbage;
    if (this.arenaGarbage > 0 && this.arenaGarbage * 4 > this.arenaUsed && live + need <= this.arena.length) {
      this.compactArena(need);
      return;
    }
    const n = Math.max(Math.ceil(this.arena.length * (this.arena.length < 1 << 20 ? 1.5 : 1.25)), this.arenaUsed + need);
    const b = Buffer.allocUnsafe(n);
    this.arena.copy(b, 0, 0, this.arenaUsed);
    this.arena = b;
  }

  /**
   * Drops spare capacity after a bulk load (recovery): the entry arrays shrink to the entry
   * numbers handed out and the key arena to the live keys. Inserts grow them again as usual.
   */
  trim(): void {
    if (this.sorted !== null) return; // deferred entries wait for the merge: leave everything as is
    if (this.arena.length > this.arenaUsed - this.arenaGarbage) {
      this.moveLiveKeys(Buffer.allocUnsafe(Math.max(1, this.arenaUsed - this.arenaGarbage)));
    }
    const n = Math.max(4, this.top);
    if (this.cap > n) {
      this.keyOff = this.keyOff.slice(0, n);
      this.keyLen = this.keyLen.slice(0, n);
      this.flags = this.flags.slice(0, n);
      this.fileId = this.fileId.slice(0, n);
      this.offset = this.offset.slice(0, n);
      this.vsize = this.vsize.slice(0, n);
      this.revLo = this.revLo.slice(0, n);
      this.revHi = this.revHi.slice(0, n);
      this.mtimeLo = this.mtimeLo.slice(0, n);
      this.mtimeHi = this.mtimeHi.slice(0, n);
      this.cap = n;
    }
  }

  /** Copies the live keys into a new arena with room for at least `need` more bytes. */
  private compactArena(need = 0): void {
    const live = this.arenaUsed - this.arenaGarbage;
    this.moveLiveKeys(Buffer.allocUnsafe(Math.max(256, Math.ceil(live * 1.25), live + need)));
  }

  /** Copies the live keys, in entry order, to the start of `b`, which becomes the arena. */
  private moveLiveKeys(b: Buffer): void {
    let p = 0;
    for (let e = 0; e < this.top; e++) {
      if ((this.flags[e] & F_DEAD) !== 0) continue;
      const o = this.keyOff[e];
      const l = this.keyLen[e];
      this.arena.copy(b, p, o, o + l);
      this.keyOff[e] = p;
      p += l;
    }
    this.arena = b;
    this.arenaUsed = p;
    this.arenaGarbage = 0;
  }

  private rehash(n: number): void {
    const slots = new Uint32Array(n);
    const mask = n - 1;
    for (let e = 0; e < this.top; e++) {
      if ((this.flags[e] & F_DEAD) !== 0) continue;
      const o = this.keyOff[e];
      let i = fnv1a(this.arena, o, this.keyLen[e]) & mask;
      while (slots[i] !== 0) i = (i + 1) & mask;
      slots[i] = e + 1;
    }
    this.slots = slots;
    this.mask = mask;
  }

  /** Compares the keys of entries a and b (bytewise, shorter first on a tie). */
  compareEntries(a: number, b: number): number {
    const ar = this.arena;
    let oa = this.keyOff[a];
    let ob = this.keyOff[b];
    const la = this.keyLen[a];
    const lb = this.keyLen[b];
    const n = la < lb ? la : lb;
    for (let i = 0; i < n; i++, oa++, ob++) {
      const d = ar[oa] - ar[ob];
      if (d !== 0) return d;
    }
    return la - lb;
  }

  /** Compares entry e's key with `key`. */
  compareKey(e: number, key: Uint8Array): number {
    const ar = this.arena;
    const o = this.keyOff[e];
    const l = this.keyLen[e];
    const n = l < key.length ? l : key.length;
    for (let i = 0; i < n; i++) {
      const d = ar[o + i] - key[i];
      if (d !== 0) return d;
    }
    return l - key.length;
  }

  private dropSorted(): void {
    this.sorted = null;
    this.sortedLen = 0;
    this.added = [];
    this.removedSinceSort = 0;
    this.releaseDeferred();
  }

  private releaseDeferred(): void {
    while (this.deferredHead >= 0) {
      const e = this.deferredHead;
      const next = this.fileId[e];
      this.deferredHead = next === 0xffffffff ? -1 : next;
      this.fileId[e] = this.freeHead < 0 ? 0xffffffff : this.freeHead;
      this.freeHead = e;
    }
  }

  /** Live entry numbers in key order: arr[0, len). Valid until the next insert or remove. */
  sortedEntries(): { arr: Uint32Array; len: number } {
    const cmp = (a: number, b: number) => this.compareEntries(a, b);
    if (this.sorted === null) {
      const arr = new Uint32Array(this.size);
      let n = 0;
      for (let e = 0; e < this.top; e++) if ((this.flags[e] & F_DEAD) === 0) arr[n++] = e;
      sortEntriesByKey(arr, n, this, cmp);
      this.sorted = arr;
      this.sortedLen = n;
      this.added = [];
      this.removedSinceSort = 0;
      this.releaseDeferred();
    } else if (this.added.length > 0 || this.removedSinceSort > 0) {
      const add = Uint32Array.from(this.added.filter((e) => (this.flags[e] & F_DEAD) === 0));
      sortEntriesByKey(add, add.length, this, cmp);
      const old = this.sorted;
      const out = new Uint32Array(this.size);
      let i = 0, j = 0, n = 0;
      while (i < this.sortedLen || j < add.length) {
        if (i < this.sortedLen && (this.flags[old[i]] & F_DEAD) !== 0) { i++; continue; }
        if (j >= add.length || (i < this.sortedLen && cmp(old[i], add[j]) < 0)) out[n++] = old[i++];
        else out[n++] = add[j++];
      }
      this.sorted = out;
      this.sortedLen = n;
      this.added = [];
      this.removedSinceSort = 0;
      this.releaseDeferred();
    }
    return { arr: this.sorted, len: this.sortedLen };
  }

  /** Entries inserted since the last renumberSorted (they sit out of key order). */
  private unordered = Infinity;

  /**
   * Is renumberSorted worth it? (never done, or more than 1/8 of the keys came since.) list's
   * cost per key is mostly cache misses on the entry arrays when entry numbers (insertion
   * order) are not key order.
   */
  wantsRenumber(): boolean {
    return this.size >= 1024 && this.unordered * 8 > this.size;
  }

  /**
   * Renumbers the live entries in key order (and lays the arena out in that order), so a list
   * walks every array front to back. Every entry number held by a caller becomes invalid:
   * call only when none is held across this call (the engine: no reclaim running).
   * `keepView` false drops the sorted array afterwards (its next build finds the entries in
   * order and skips the sort): what open does, so the keydir holds no array it does not need.
   */
  renumberSorted(keepView = true): void {
    const { arr, len: n } = this.sortedEntries();
    this.unordered = 0;
    const newOf = new Int32Array(this.top).fill(-1);
    for (let i = 0; i < n; i++) newOf[arr[i]] = i;
    const cap = this.cap;
    const keyOff = new Uint32Array(cap);
    const keyLen = new Uint16Array(cap);
    const flags = new Uint8Array(cap);
    const fileId = new Uint32Array(cap);
    const offset = new Uint32Array(cap);
    const vsize = new Uint32Array(cap);
    const revLo = new Uint32Array(cap);
    const revHi = new Uint16Array(cap);
    const mtimeLo = new Uint32Array(cap);
    const mtimeHi = new Uint16Array(cap);
    const arena = Buffer.allocUnsafe(Math.max(256, this.arena.length));
    let p = 0;
    for (let i = 0; i < n; i++) {
      const e = arr[i];
      const o = this.keyOff[e];
      const l = this.keyLen[e];
      this.arena.copy(arena, p, o, o + l);
      keyOff[i] = p;
      keyLen[i] = l;
      p += l;
      flags[i] = this.flags[e];
      fileId[i] = this.fileId[e];
      offset[i] = this.offset[e];
      vsize[i] = this.vsize[e];
      revLo[i] = this.revLo[e];
      revHi[i] = this.revHi[e];
      mtimeLo[i] = this.mtimeLo[e];
      mtimeHi[i] = this.mtimeHi[e];
    }
    for (let i = n; i < cap; i++) flags[i] = F_DEAD;
    const slots = this.slots;
    for (let i = 0; i < slots.length; i++) if (slots[i] !== 0) slots[i] = newOf[slots[i] - 1] + 1;
    const hashes = [...this.hashes];
    this.hashes.clear();
    for (const [e, h] of hashes) if (newOf[e] >= 0) this.hashes.set(newOf[e], h);
    this.keyOff = keyOff;
    this.keyLen = keyLen;
    this.flags = flags;
    this.fileId = fileId;
    this.offset = offset;
    this.vsize = vsize;
    this.revLo = revLo;
    this.revHi = revHi;
    this.mtimeLo = mtimeLo;
    this.mtimeHi = mtimeHi;
    this.arena = arena;
    this.arenaUsed = p;
    this.arenaGarbage = 0;
    this.top = n;
    this.freeHead = -1;
    this.deferredHead = -1;
    for (let i = 0; i < n; i++) arr[i] = i;
    if (!keepView) this.dropSorted();
  }

  /** First position in the sorted array whose key is >= key (or > key when `strict`). */
  lowerBound(arr: Uint32Array, len: number, key: Uint8Array, strict: boolean): number {
    let lo = 0, hi = len;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const c = this.compareKey(arr[mid], key);
      if (c < 0 || (strict && c === 0)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
