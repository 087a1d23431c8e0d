/**
 * `npm run bench:scale [-- OPTIONS]`: volumes far bigger than the machine
 * (issue 11). On a file store of its own, in a temp directory:
 *
 * - forks/snapshots: time at 1,000, 10,000 and 100,000 written blocks, the
 *   build's own durationMs / rowsCopied / catalog transaction time, catalog
 *   rows and bytes added per fork (scripts/lib/scale/forks.ts);
 * - cache bound: --cache-size 64M on a 4 GiB volume, 512 MiB written,
 *   flushed, read back, du of the cache dir every ~100 ms, beside a large
 *   cache (cache-bound.ts);
 * - memory: RSS of a device daemon holding the 100,000-block volume, at open
 *   and after a full read (memory.ts);
 * - chains: a cold block read through 8 forks against 1 (chain.ts).
 *
 * Prints tables and the checks against the targets; writes
 * bench-results/scale-<date>.json. Exit 0 when it ran (whatever the checks
 * say), 1 on an error, 2 on bad options.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { formatReport, FULL, PHASES, QUICK, runScale, writeDoc, type Phase, type ScaleOptions } from './lib/scale/run.js';
import { daemonPossible } from './lib/scale/memory.js';
import { parseBytes } from './lib/scale/util.js';

const HELP = `usage: npm run bench:scale -- [options]
       npx tsx scripts/bench-scale.ts [options]

Measures what issue 11 asks for, on a file store in a temp dir:
forks/snapshots at growing sizes, the cache bound, daemon memory, fork chains.
Prints tables + checks; writes bench-results/scale-<date>.json.

options:
  --blocks LIST          written blocks at which forks are timed (default 1000,10000,100000);
                         the largest is also the memory phase's volume
  --repeats N            forks and snapshots per size (default 9)
  --only LIST            phases to run: ${PHASES.join(',')} (default all)
  --no-cli               skip the command-line runs: one 'glidekv volume fork|snapshot --json'
                         per size, and the cache bound through 'glidekv --cache-size'
  --cache-size SIZE      the bound of the cache phase (default 64M)
  --cache-volume SIZE    its volume (default 4G)
  --cache-write SIZE     bytes written, flushed and read back (default 512M)
  --cache-large SIZE     the large-cache run beside it (default 8G; 'default' = the build's default)
  --memory-via MODE      daemon (glidekv device mount; needs root + /dev/fuse) or library
                         (a child process with GlideFs) (default: ${daemonPossible() ? 'daemon here' : 'library here'})
  --memory-cache-size SIZE  cache bound of that process (default 256M; 'default' = the build's)
  --chain-depth N        forks in the chain (default 8)
  --chain-blocks N       blocks read per pass (default 2048)
  --chain-rounds N       passes per depth (default 3)
  --quick                small sizes (blocks 100,1000,5000; 8M bound on 512M, 64M written; ...)
  --dir DIR              work directory (kept); default a temp dir removed at the end
  --keep                 keep the temp dir
  --out FILE             JSON path (default bench-results/scale-<date>.json)
  -h, --help             this text

examples:
  npm run bench:scale
  npx tsx scripts/bench-scale.ts --quick
  npx tsx scripts/bench-scale.ts --only forks --blocks 1000,100000 --repeats 3
`;

function fail(msg: string): never {
  process.stderr.write(`bench:scale: ${msg}\n`);
  process.exit(2);
}

function positiveInt(name: string, v: string): number {
  if (!/^\d+$/.test(v) || Number(v) <= 0) fail(`--${name} '${v}' is not a positive whole number`);
  return Number(v);
}

function size(name: string, v: string): number {
  try {
    return parseBytes(v);
  } catch (err) {
    fail(`--${name}: ${(err as Error).message}`);
  }
}

let parsed;
try {
  parsed = parseArgs({
    options: {
      blocks: { type: 'string' },
      repeats: { type: 'string' },
      only: { type: 'string' },
      'no-cli': { type: 'boolean' },
      'cache-size': { type: 'string' },
      'cache-volume': { type: 'string' },
      'cache-write': { type: 'string' },
      'cache-large': { type: 'string' },
      'memory-via': { type: 'string' },
      'memory-cache-size': { type: 'string' },
      'chain-depth': { type: 'string' },
      'chain-blocks': { type: 'string' },
      'chain-rounds': { type: 'string' },
      quick: { type: 'boolean' },
      dir: { type: 'string' },
      keep: { type: 'boolean' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: false,
  }).values;
} catch (err) {
  fail(`${(err as Error).message} (see --help)`);
}
if (parsed.help) {
  process.stdout.write(HELP);
  process.exit(0);
}

const o: ScaleOptions = { ...FULL, ...(parsed.quick ? QUICK : {}) };
if (parsed.blocks !== undefined) o.blocks = parsed.blocks.split(',').map((s) => positiveInt('blocks', s.trim()));
if (parsed.repeats !== undefined) o.repeats = positiveInt('repeats', parsed.repeats);
if (parsed.only !== undefined) {
  o.only = parsed.only.split(',').map((s) => s.trim()) as Phase[];
  for (const p of o.only) if (!PHASES.includes(p)) fail(`--only: unknown phase '${p}' (${PHASES.join(', ')})`);
}
if (parsed['no-cli']) o.cli = false;
if (parsed['cache-size'] !== undefined) o.cacheBytes = size('cache-size', parsed['cache-size']);
if (parsed['cache-volume'] !== undefined) o.cacheVolumeBytes = size('cache-volume', parsed['cache-volume']);
if (parsed['cache-write'] !== undefined) o.cacheWriteBytes = size('cache-write', parsed['cache-write']);
if (parsed['cache-large'] !== undefined) o.cacheLargeBytes = parsed['cache-large'] === 'default' ? null : size('cache-large', parsed['cache-large']);
if (parsed['memory-via'] !== undefined) {
  if (parsed['memory-via'] !== 'daemon' && parsed['memory-via'] !== 'library') fail(`--memory-via must be daemon or library`);
  o.memoryVia = parsed['memory-via'];
  if (o.memoryVia === 'daemon' && !daemonPossible()) fail('--memory-via daemon needs root and /dev/fuse (use --memory-via library)');
}
if (parsed['memory-cache-size'] !== undefined) o.memoryCacheBytes = parsed['memory-cache-size'] === 'default' ? null : size('memory-cache-size', parsed['memory-cache-size']);
if (parsed['chain-depth'] !== undefined) o.chainDepth = positiveInt('chain-depth', parsed['chain-depth']);
if (parsed['chain-blocks'] !== undefined) o.chainBlocks = positiveInt('chain-blocks', parsed['chain-blocks']);
if (parsed['chain-rounds'] !== undefined) o.chainRounds = positiveInt('chain-rounds', parsed['chain-rounds']);
if (parsed.dir !== undefined) o.dir = parsed.dir;
if (parsed.keep) o.keep = true;
if (o.cacheWriteBytes > o.cacheVolumeBytes) fail('--cache-write is larger than --cache-volume');
if (o.cacheVolumeBytes % 131072 !== 0) fail('--cache-volume must be a multiple of 128K');

// A temp work dir is made here and removed after the report is out (removing
// a 100,000-block store takes a while).
const temp = o.dir === null ? mkdtempSync(join(tmpdir(), 'glidekv-bench-scale-')) : null;
let code = 0;
try {
  const doc = await runScale({ ...o, dir: temp ?? o.dir });
  doc.options.dir = o.dir;
  process.stdout.write(formatReport(doc) + '\n');
  const path = writeDoc(doc, parsed.out);
  process.stdout.write(`wrote ${path}\n`);
} catch (err) {
  process.stderr.write(`bench:scale: ${(err as Error).stack ?? err}\n`);
  code = 1;
} finally {
  if (temp !== null) {
    if (o.keep) process.stderr.write(`bench:scale: kept ${temp}\n`);
    else {
      process.stderr.write(`bench:scale: removing ${temp}\n`);
      rmSync(temp, { recursive: true, force: true });
    }
  }
}
process.exit(code);
