// The preallocated tail of the active segment (FORMAT.md "Preallocated tail"): zeros ahead of the
// records while the engine runs with sync 'always'/'batch', cut by a roll and by close; after a
// crash the zero tail, and a record torn inside it, are cut by recovery and nothing acknowledged is lost.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { nodeFileIo, open, type Engine, type FileIo } from '../../src/index.js';
import { scanSegment } from '../../src/recovery.js';
import { parseSegmentName, parseTrailer, TRAILER_SIZE } from '../../src/segment.js';
import { rmDir, segFiles, tmpDir } from './helpers.js';
import { noSyncIo } from './fixtures/fast-io.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));

type State = Map<string, string>;

function activeSeg(e: Engine): { path: string; size: number } {
  const act = (e as unknown as { namespaces: Map<string, { active: { seg: { path: string; size: number } } | null }> })
    .namespaces.get('n')!.active!;
  return act.seg;
}

async function stateOf(e: Engine): Promise<State> {
  const s: State = new Map();
  for (const { key } of e.list('n')) s.set(key.toString(), (await e.get('n', key))!.value.toString());
  return s;
}

function allZero(b: Buffer): boolean {
  for (const x of b) if (x !== 0) return false;
  return true;
}

/** Where the intact records of a segment file end (the file's bytes scanned as records). */
function recordsEnd(file: Buffer): number {
  return scanSegment(file, 0, file.length, () => {}, false).decodedEnd;
}

describe('preallocated tail', () => {
  for (const mode of ['always', 'batch', 'none'] as const) {
    it(`sync '${mode}': ${mode === 'none' ? 'no tail' : 'zeros ahead of the records while open'}, none after close`, async () => {
      const dir = tmpDir(`prealloc-${mode}`);
      dirs.push(dir);
      const e = await open(dir, { sync: mode });
      await e.createNamespace('n');
      for (let i = 0; i < 30; i++) await e.put('n', `k${i}`, `v${i}`.repeat(i + 1));
      await e.delete('n', 'k3');
      const seg = activeSeg(e);
      const end = seg.size;
      const file = fs.readFileSync(seg.path);
      expect(recordsEnd(file)).toBe(end);
      if (mode === 'none') {
        expect(file.length).toBe(end);
      } else {
        expect(file.length).toBeGreaterThanOrEqual(end + 16 * 1024);
        expect(allZero(file.subarray(end))).toBe(true);
      }
      const before = await stateOf(e);
      await e.close();
      expect(fs.statSync(seg.path).size).toBe(end); // close cut the tail: records only
      const r = await open(dir, { sync: mode });
      expect(await stateOf(r)).toEqual(before);
      expect(await r.put('n', 'more', 'x')).toBeGreaterThan(0);
      await r.close();
    });
  }

  it('a roll cuts the tail: every sealed segment ends with its footer', async () => {
    const dir = tmpDir('prealloc-roll');
    dirs.push(dir);
    const e = await open(dir, { sync: 'always', io: noSyncIo, segmentMaxBytes: 64 * 1024 });
    await e.createNamespace('n');
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 30; i++) await e.put('n', `key${i % 7}`, Buffer.alloc(100, i));
      // does not fit: the segment rolls with most of its zero tail still ahead of the records
      await e.put('n', `big${round}`, Buffer.alloc(60 * 1024, round + 1));
    }
    const active = path.basename(activeSeg(e).path);
    const sealed = segFiles(dir, 'n').filter((f) => f !== active);
    expect(sealed.length).toBeGreaterThan(2);
    for (const f of sealed) {
      const b = fs.readFileSync(path.join(dir, 'ns', 'n', f));
      const tr = parseTrailer(b.subarray(b.length - TRAILER_SIZE), b.length, parseSegmentName(f));
      expect(tr, f).not.toBeNull();
      expect(tr!.dataEnd).toBe(recordsEnd(b.subarray(0, tr!.dataEnd)));
    }
    const before = await stateOf(e);
    await e.close();
    const r = await open(dir, { io: noSyncIo });
    expect(await stateOf(r)).toEqual(before);
    await r.close();
  });

  it('crash images: a zero tail of any length, and a record torn inside it, recover the acknowledged prefix', async () => {
    const src = tmpDir('prealloc-img');
    const work = tmpDir('prealloc-img-work');
    dirs.push(src, work);
    const e = await open(src, { sync: 'always', io: noSyncIo });
    await e.createNamespace('n');
    const model: State = new Map();
    const states: State[] = [new Map()];
    const ends: number[] = [activeSeg(e).size];
    const images: Buffer[] = [fs.readFileSync(activeSeg(e).path)];
    for (let i = 0; i < 24; i++) {
      const k = `k${i % 9}`;
      if (i % 7 === 5) {
        await e.delete('n', `k${(i + 3) % 9}`);
        model.delete(`k${(i + 3) % 9}`);
      } else if (i % 5 === 4) {
        await e.batch('n', [{ type: 'put', key: `b${i}`, value: `bv${i}` }, { type: 'put', key: k, value: `bk${i}` }]);
        model.set(`b${i}`, `bv${i}`);
        model.set(k, `bk${i}`);
      } else {
        await e.put('n', k, `v${i}-${'z'.repeat(i * 3)}`);
        model.set(k, `v${i}-${'z'.repeat(i * 3)}`);
      }
      states.push(new Map(model));
      ends.push(activeSeg(e).size);
      images.push(fs.readFileSync(activeSeg(e).path)); // what a kill -9 right after this ack leaves
    }
    const segName = path.basename(activeSeg(e).path);
    await e.close();
    fs.rmSync(path.join(src, 'LOCK'), { force: true });
    const segPath = path.join(work, 'ns', 'n', segName);
    const check = async (bytes: Buffer, want: State, wantEnd: number, what: string): Promise<void> => {
      rmDir(work);
      fs.cpSync(src, work, { recursive: true });
      fs.writeFileSync(segPath, bytes);
      const r = await open(work, { io: noSyncIo });
      try {
        expect(await stateOf(r), what).toEqual(want);
        expect(fs.statSync(segPath).size, what).toBe(wantEnd); // recovery cut the zeros and the torn record
        await r.put('n', 'after', 'x'); // and appends go on from there
      } finally {
        await r.close();
      }
      const r2 = await open(work, { io: noSyncIo });
      try {
        expect((await r2.get('n', 'after'))!.value.toString(), what).toBe('x');
        expect((await stateOf(r2)).size, what).toBe(want.size + (want.has('after') ? 0 : 1));
      } finally {
        await r2.close();
      }
    };
    let opens = 0;
    for (let k = 1; k < images.length; k++) {
      const img = images[k];
      expect(img.length, `op ${k}`).toBeGreaterThan(ends[k]); // the image has a zero tail
      expect(allZero(img.subarray(ends[k])), `op ${k}`).toBe(true);
      // the zero tail cut anywhere (a crash during an extension of the tail)
      for (const cut of [img.length, ends[k] + 1, ends[k] + ((img.length - ends[k]) >> 1)]) {
        await check(img.subarray(0, cut), states[k], ends[k], `op ${k}, file cut at ${cut}`);
        opens++;
      }
      // op k torn inside the preallocated area: its first j bytes written over the zeros, the rest still zero
      for (let j = ends[k - 1]; j < ends[k]; j += 8) {
        const torn = Buffer.from(img);
        torn.fill(0, j, ends[k]);
        await check(torn, states[k - 1], ends[k - 1], `op ${k} torn at ${j}`);
        opens++;
      }
    }
    expect(opens).toBeGreaterThan(100);
  }, 300_000);

  it('kill -9 mid-put (sync always, one writer): every acknowledged put survives, the zero tail is cut', async () => {
    const dir = tmpDir('prealloc-kill');
    dirs.push(dir);
    const acked = new Map<string, number>();
    for (let round = 0; round < 3; round++) {
      const lines = await new Promise<string[]>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'fixtures/prealloc-child.ts'), dir, `r${round}`], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        let acks = 0;
        const want = 150 + Math.floor(Math.random() * 300);
        child.stdout.on('data', (d: Buffer) => {
          const s = d.toString();
          out += s;
          acks += s.split('\n').filter((l) => l.startsWith('P ')).length;
          if (acks >= want && child.exitCode === null && !child.killed) child.kill('SIGKILL');
        });
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('close', (code, signal) => (signal === 'SIGKILL' ? resolve(out.split('\n')) : reject(new Error(`child: ${code} ${err}`))));
        setTimeout(() => child.kill('SIGKILL'), 60_000);
      });
      for (const l of lines) {
        const [kind, key, rev] = l.split(' ');
        if (kind === 'P') acked.set(key, Number(rev));
      }
      // the killed writer left its active segment with a zero tail
      const segs = segFiles(dir, 'n');
      const last = fs.readFileSync(path.join(dir, 'ns', 'n', segs[segs.length - 1]));
      const end = recordsEnd(last);
      expect(last.length).toBeGreaterThan(end);
      expect(allZero(last.subarray(end + 400))).toBe(true); // past what an unacknowledged put may have torn
      const e = await open(dir);
      try {
        for (const [k, rev] of acked) {
          const g = await e.get('n', k);
          expect(g, k).toBeDefined();
          expect(g!.revision).toBe(rev);
          expect(g!.value.toString().startsWith(`val:${k}:`)).toBe(true);
        }
      } finally {
        await e.close();
      }
      for (const f of segFiles(dir, 'n')) {
        const b = fs.readFileSync(path.join(dir, 'ns', 'n', f));
        const tr = parseTrailer(b.subarray(b.length - TRAILER_SIZE), b.length, parseSegmentName(f));
        if (tr === null) expect(recordsEnd(b), f).toBe(b.length); // the active one: records only, after a close
      }
    }
    expect(acked.size).toBeGreaterThan(400);
  }, 240_000);

  it('a failed write of zeros (ENOSPC) does not fail the put: the segment just has no tail', async () => {
    const dir = tmpDir('prealloc-enospc');
    dirs.push(dir);
    let refused = 0;
    const io: FileIo = {
      ...nodeFileIo,
      writeSync(fd, buf, off, len, pos) {
        if (len >= 32 * 1024) {
          refused++;
          throw Object.assign(new Error('ENOSPC: injected'), { code: 'ENOSPC' });
        }
        return nodeFileIo.writeSync!(fd, buf, off, len, pos);
      },
      async write(fd, buf, off, len, pos) {
        if (len >= 32 * 1024) {
          refused++;
          throw Object.assign(new Error('ENOSPC: injected'), { code: 'ENOSPC' });
        }
        return nodeFileIo.write(fd, buf, off, len, pos);
      },
    };
    const e = await open(dir, { sync: 'always', io });
    await e.createNamespace('n');
    for (let i = 0; i < 40; i++) await e.put('n', `k${i}`, `v${i}`);
    expect(refused).toBe(1); // tried once, then not again for this segment
    const seg = activeSeg(e);
    expect(fs.statSync(seg.path).size).toBe(seg.size);
    expect(e.stats().poisoned).toBe(0);
    await e.close();
    const r = await open(dir);
    for (let i = 0; i < 40; i++) expect((await r.get('n', `k${i}`))!.value.toString()).toBe(`v${i}`);
    await r.close();
  });
});
