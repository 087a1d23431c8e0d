/**
 * Small measuring helpers of bench:scale: disk usage of a directory as the
 * disk sees it (allocated blocks, not file lengths: the cache's data file is
 * sparse), a du sampler, a process's RSS from /proc, a progress line, and
 * order statistics.
 */
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export interface DiskUsage {
  /** Bytes allocated on disk (st_blocks * 512) under the directory, directories included. */
  bytes: number;
  /** The part of `bytes` in the cache's metadata files (`slots`, `state`, `lock`): the "state file" allowance. */
  metaBytes: number;
  files: number;
}

/** The cache's slot table (`slots`; `state` before the bound) and its pid lock; the rest are cached blocks. */
const META_NAME = /^(slots|state|lock)/;

/** Allocated bytes under `dir` (files that vanish while walking are skipped: the cache evicts as we look). */
export function diskUsage(dir: string): DiskUsage {
  const out: DiskUsage = { bytes: 0, metaBytes: 0, files: 0 };
  const walk = (d: string) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const name of names) {
      const p = join(d, name);
      let st;
      try {
        st = lstatSync(p);
      } catch {
        continue;
      }
      const bytes = st.blocks * 512;
      out.bytes += bytes;
      if (st.isDirectory()) walk(p);
      else {
        out.files++;
        if (META_NAME.test(name)) out.metaBytes += bytes;
      }
    }
  };
  walk(dir);
  return out;
}

export interface DuSampler {
  /** Stops sampling (takes one last sample) and returns what was seen. */
  stop(): DuSummary;
}

export interface DuSummary {
  samples: number;
  maxBytes: number;
  /** metaBytes at the sample where `bytes` was largest, and the largest metaBytes seen. */
  metaAtMax: number;
  maxMetaBytes: number;
  /** Largest `bytes - metaBytes` seen (the cached blocks themselves). */
  maxDataBytes: number;
  /** Mean gap between samples (ms): the loop may be late on a loaded machine. */
  meanIntervalMs: number;
  /** [ms since start, bytes] per sample, at most ~200 points kept (every k-th). */
  series: Array<[number, number]>;
}

/** Samples diskUsage(dir) every `everyMs` on this process's event loop. */
export function sampleDiskUsage(dir: string, everyMs = 100): DuSampler {
  const t0 = performance.now();
  const all: Array<[number, number]> = [];
  const s = { samples: 0, maxBytes: 0, metaAtMax: 0, maxMetaBytes: 0, maxDataBytes: 0 };
  const take = () => {
    const u = diskUsage(dir);
    s.samples++;
    if (u.bytes > s.maxBytes) {
      s.maxBytes = u.bytes;
      s.metaAtMax = u.metaBytes;
    }
    s.maxMetaBytes = Math.max(s.maxMetaBytes, u.metaBytes);
    s.maxDataBytes = Math.max(s.maxDataBytes, u.bytes - u.metaBytes);
    all.push([Math.round(performance.now() - t0), u.bytes]);
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      const span = all[all.length - 1][0] - all[0][0];
      const k = Math.max(1, Math.ceil(all.length / 200));
      return { ...s, meanIntervalMs: all.length > 1 ? span / (all.length - 1) : 0, series: all.filter((_, i) => i % k === 0 || i === all.length - 1) };
    },
  };
}

/** VmRSS and VmHWM (peak RSS) of a process, bytes, from /proc/PID/status; null where /proc is absent. */
export function procRss(pid: number): { rss: number; hwm: number } | null {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return null;
  }
}

/**
 * A progress line on stderr for long phases: rewritten in place on a
 * terminal, otherwise one line every 10% (logs stay short).
 */
export function progress(label: string, total: number, unit = 'blocks'): { tick(done: number): void; done(): void } {
  const tty = process.stderr.isTTY === true;
  const t0 = performance.now();
  let lastDecile = -1;
  let lastDraw = 0;
  const draw = (done: number, end: boolean) => {
    const secs = (performance.now() - t0) / 1000;
    const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
    const line = `${label}: ${done.toLocaleString('en-US')}/${total.toLocaleString('en-US')} ${unit} (${pct}%), ${secs.toFixed(1)} s`;
    if (tty) process.stderr.write(`\r\x1b[K${line}${end ? '\n' : ''}`);
    else process.stderr.write(line + '\n');
  };
  return {
    tick(done) {
      if (tty) {
        const now = performance.now();
        if (now - lastDraw >= 200) {
          lastDraw = now;
          draw(done, false);
        }
        return;
      }
      const decile = total > 0 ? Math.floor((done / total) * 10) : 10;
      if (decile > lastDecile && decile < 10) {
        lastDecile = decile;
        draw(done, false);
      }
    },
    done() {
      draw(total, true);
    },
  };
}

export function median(xs: number[]): number {
  return quantile(xs, 0.5);
}

/** Linear-interpolated quantile (q in [0, 1]); NaN for an empty list. */
export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export function mean(xs: number[]): number {
  return xs.length === 0 ? NaN : xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Parses 64M, 4G, 512K, 131072 (binary units). */
export function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$/i.exec(text);
  if (!m) throw new Error(`'${text}' is not a size (e.g. 64M, 4G)`);
  const mult = { '': 1, K: KiB, M: MiB, G: GiB, T: 1024 * GiB }[m[2].toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const n = Math.round(Number(m[1]) * mult);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`'${text}' is not a positive size`);
  return n;
}

export function fmtMiB(bytes: number | null, d = 1): string {
  return bytes === null || !Number.isFinite(bytes) ? '-' : (bytes / MiB).toFixed(d);
}
