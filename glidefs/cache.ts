/**
 * VolumeCache: the local write-back cache of one volume (FORMAT.md, "Cache").
 *
 * `<cacheDir>/volumes/<volume uuid>/` (0700) holds:
 * - `data`:  a sparse file as large as the volume; block i lives at
 *            i * BLOCK_SIZE. Written with pwrite, read with pread.
 * - `state`: a 16-byte header and one state byte per block:
 *            0 = not cached, 1 = clean (a copy of the catalog's object, or a
 *            hole), 2 = dirty (written here, not yet committed by a flush).
 * - `lock`:  the pid of the process that has the volume open (lib/pid-lock.ts).
 *
 * Durability (the contract Volume documents):
 * - A write first pwrites the bytes into `data`, then, if the block was not
 *   already dirty, pwrites its state byte 2. Both land in the OS page cache,
 *   which outlives a kill -9 of the process: a resolved write() survives the
 *   process dying, and the next flush after reopen uploads it. No fsync per
 *   write.
 * - `sync()` fdatasyncs `data` and then `state`: after it, the written bytes
 *   and the dirty set also survive an OS crash or power loss.
 * - Clean blocks are never trusted blindly: the first read of a clean block in
 *   a process re-hashes it against the catalog's key (Volume does this), so a
 *   state byte that reached the disk without its data is caught and refetched.
 */
import {
  closeSync,
  existsSync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { GlideFsError } from './errors.js';
import { lockHolder as pidLockHolder, PidLock } from '../lib/pid-lock.js';

export const STATE_NONE = 0;
export const STATE_CLEAN = 1;
export const STATE_DIRTY = 2;

/*
 * state file
 * ┌──────────────────┬────────────────┬────────────────┬──────────────────────────┐
 * │ magic "GLFSCST1" │ blockCount u32 │ blockSize u32  │ state[blockCount] u8 ... │
 * │ 8 bytes          │ LE             │ LE             │ 0 none,1 clean,2 dirty   │
 * └──────────────────┴────────────────┴────────────────┴──────────────────────────┘
 */
const STATE_MAGIC = Buffer.from('GLFSCST1', 'latin1');
export const STATE_HEADER = 16;

function encodeStateHeader(blockCount: number, blockSize: number): Buffer {
  const h = Buffer.alloc(STATE_HEADER);
  STATE_MAGIC.copy(h, 0);
  h.writeUInt32LE(blockCount, 8);
  h.writeUInt32LE(blockSize, 12);
  return h;
}

function decodeStateHeader(buf: Buffer, path: string): { blockCount: number; blockSize: number } {
  if (buf.length < STATE_HEADER || !buf.subarray(0, 8).equals(STATE_MAGIC)) {
    throw GlideFsError.CORRUPT(`cache state file ${path} has no valid header`);
  }
  return { blockCount: buf.readUInt32LE(8), blockSize: buf.readUInt32LE(12) };
}

/**
 * The largest volume the cache can hold: 8 TiB. The data file is a sparse file
 * as large as the volume (ext4 ends files at 16 TiB; EFBIG beyond), and the
 * state bytes (one per block) are kept in memory (64 MiB at 8 TiB).
 * GlideFs.createVolume refuses larger sizes (E_BAD_SIZE).
 */
export const MAX_VOLUME_BYTES = 8 * 1024 ** 4;

export function volumeCacheDir(cacheDir: string, uuid: string): string {
  return join(cacheDir, 'volumes', uuid);
}

export class VolumeCache {
  readonly dir: string;
  readonly blockCount: number;
  readonly blockSize: number;
  /** In-memory copy of the state bytes (the file is kept equal to it). */
  readonly states: Uint8Array;
  private dataFd: number;
  private stateFd: number;
  private dirty = 0;
  private readonly one = Buffer.alloc(1);
  private closed = false;

  private constructor(dir: string, blockCount: number, blockSize: number, dataFd: number, stateFd: number, states: Uint8Array) {
    this.dir = dir;
    this.blockCount = blockCount;
    this.blockSize = blockSize;
    this.dataFd = dataFd;
    this.stateFd = stateFd;
    this.states = states;
    for (let i = 0; i < states.length; i++) if (states[i] === STATE_DIRTY) this.dirty++;
  }

  /** Opens (creating if needed) the cache of a volume. The caller holds the lock. */
  static open(dir: string, blockCount: number, blockSize: number): VolumeCache {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const statePath = join(dir, 'state');
    const dataPath = join(dir, 'data');
    let states: Uint8Array;
    if (existsSync(statePath)) {
      const raw = readFileSync(statePath);
      const h = decodeStateHeader(raw, statePath);
      if (h.blockCount !== blockCount || h.blockSize !== blockSize) {
        throw GlideFsError.CORRUPT(`cache ${dir} is for ${h.blockCount} blocks of ${h.blockSize}, volume has ${blockCount} of ${blockSize}`);
      }
      states = new Uint8Array(blockCount);
      states.set(raw.subarray(STATE_HEADER, STATE_HEADER + blockCount));
    } else {
      // Data first, sized, so a state file never exists without its data file
      // (and a volume the cache's filesystem cannot hold leaves nothing behind).
      const dfd = openSync(dataPath, 'a', 0o600);
      let sizeErr: unknown = null;
      try {
        if (fstatSync(dfd).size !== blockCount * blockSize) ftruncateSync(dfd, blockCount * blockSize);
      } catch (err) {
        sizeErr = err;
      } finally {
        closeSync(dfd);
      }
      if (sizeErr !== null) {
        rmSync(dataPath, { force: true });
        throw sizeError(sizeErr, dir, blockCount * blockSize);
      }
      const tmp = statePath + '.tmp';
      writeFileSync(tmp, Buffer.concat([encodeStateHeader(blockCount, blockSize), Buffer.alloc(blockCount)]), { mode: 0o600 });
      const fd = openSync(tmp, 'r+');
      fdatasyncSync(fd);
      closeSync(fd);
      renameSync(tmp, statePath); // atomic: no state file, or a whole one
      states = new Uint8Array(blockCount);
    }
    const dataFd = openSync(dataPath, 'r+');
    const want = blockCount * blockSize;
    try {
      if (fstatSync(dataFd).size !== want) ftruncateSync(dataFd, want);
    } catch (err) {
      closeSync(dataFd);
      throw sizeError(err, dir, want);
    }
    const stateFd = openSync(statePath, 'r+');
    return new VolumeCache(dir, blockCount, blockSize, dataFd, stateFd, states);
  }

  get dirtyCount(): number {
    return this.dirty;
  }

  state(i: number): number {
    return this.states[i];
  }

  /** Sets a block's state byte, in memory and in the state file (pwrite, no fsync). */
  setState(i: number, s: number): void {
    const prev = this.states[i];
    if (prev === s) return;
    this.one[0] = s;
    writeSync(this.stateFd, this.one, 0, 1, STATE_HEADER + i);
    this.states[i] = s;
    if (prev === STATE_DIRTY) this.dirty--;
    if (s === STATE_DIRTY) this.dirty++;
  }

  /** Reads `length` bytes of block `i` from `offsetInBlock` into `target` at `targetOffset`. */
  read(i: number, offsetInBlock: number, length: number, target: Uint8Array, targetOffset: number): void {
    let done = 0;
    const pos = i * this.blockSize + offsetInBlock;
    while (done < length) {
      const n = readSync(this.dataFd, target, targetOffset + done, length - done, pos + done);
      if (n === 0) throw GlideFsError.IO(`short read in cache ${this.dir} at block ${i}`);
      done += n;
    }
  }

  readBlock(i: number, target: Buffer = Buffer.allocUnsafe(this.blockSize)): Buffer {
    this.read(i, 0, this.blockSize, target, 0);
    return target;
  }

  /** Writes bytes into block `i` at `offsetInBlock` (pwrite, no fsync). */
  write(i: number, offsetInBlock: number, data: Uint8Array): void {
    let done = 0;
    const pos = i * this.blockSize + offsetInBlock;
    while (done < data.length) {
      done += writeSync(this.dataFd, data, done, data.length - done, pos + done);
    }
  }

  /** Every dirty block index, ascending. */
  dirtyIndices(): number[] {
    const out: number[] = [];
    const s = this.states;
    for (let i = 0; i < s.length; i++) if (s[i] === STATE_DIRTY) out.push(i);
    return out;
  }

  /** Makes the cached bytes and then the dirty set durable on the local disk. */
  sync(): void {
    if (this.closed) return;
    fdatasyncSync(this.dataFd);
    fdatasyncSync(this.stateFd);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.sync();
    } finally {
      closeSync(this.dataFd);
      closeSync(this.stateFd);
      this.dataFd = -1;
      this.stateFd = -1;
    }
  }

  /** Number of dirty blocks recorded in a volume's cache dir (for stats from any process). */
  static countDirty(dir: string): number {
    const path = join(dir, 'state');
    if (!existsSync(path)) return 0;
    const raw = readFileSync(path);
    decodeStateHeader(raw, path);
    let n = 0;
    for (let i = STATE_HEADER; i < raw.length; i++) if (raw[i] === STATE_DIRTY) n++;
    return n;
  }

  static remove(dir: string): void {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** EFBIG/EINVAL from sizing the data file: a typed error naming the size; others: E_IO. */
function sizeError(err: unknown, dir: string, bytes: number): GlideFsError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EFBIG' || code === 'EINVAL') {
    return GlideFsError.BAD_SIZE(`the cache's filesystem cannot hold a ${bytes}-byte file in ${dir} (${code}); volumes are limited to ${MAX_VOLUME_BYTES} bytes (8T)`);
  }
  return GlideFsError.IO(`cannot size cache file in ${dir}: ${code ?? (err as Error).message}`, err);
}

// --- lock file ----------------------------------------------------------------

/** The pid holding a volume's lock, or null (no lock, or its holder is dead). */
export function lockHolder(dir: string): number | null {
  return pidLockHolder(join(dir, 'lock'));
}

/**
 * Takes a volume's lock file `<dir>/lock` (lib/pid-lock.ts: the pid appears
 * atomically with the file; a lock whose pid is dead is taken over, by one
 * taker only). Throws E_LOCKED when a live process holds it. Returns the
 * release function.
 */
export async function acquireLock(dir: string, name: string): Promise<() => void> {
  let lock: PidLock;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    lock = await PidLock.acquire(join(dir, 'lock'), {
      heldError: (pid) =>
        GlideFsError.LOCKED(
          pid === null
            ? `volume '${name}': cannot take lock ${join(dir, 'lock')}`
            : pid === process.pid
              ? `volume '${name}' is already open in this process (pid ${pid})`
              : `volume '${name}' is open in another process (pid ${pid})`,
        ),
    });
  } catch (err) {
    if (err instanceof GlideFsError) throw err;
    throw GlideFsError.IO(`cannot take lock ${join(dir, 'lock')}: ${(err as Error).message}`, err);
  }
  return () => lock.releaseSync();
}
