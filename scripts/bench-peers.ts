/**
 * `npm run bench:peers`: the re-upload workload (40 × 256 KiB + 2000 × 100 B
 * values, 8 writers, 5 rounds of overwrite/delete half + compaction) on
 * glidekv (--fsync upload and local, values separated and inline),
 * s3backer + ext4 (defaults and write-through) and SlateDB (durable puts,
 * 1 and 16 writers), all against one MinIO started for the run, each row in
 * a bucket of its own, counted by MinIO (and cross-checked with the client's
 * counters where it keeps them). Prints a table; writes peers.json and
 * peers.svg (docs/ for a full run of every row, bench-results/ otherwise).
 *
 *   --only LIST   rows to run: glidekv, s3backer, slatedb, or row ids
 *                 (glidekv-upload-separated, s3backer-writethrough, slatedb-1, ...)
 *   --quick       small sizes (4 large + 100 small values, 2 rounds), for debugging
 *   --json        print the JSON document on stdout (the table goes to stderr)
 *   --out DIR     where peers.json and peers.svg go
 *   --store URL   a file:// store instead of MinIO: glidekv rows only, glidekv's counters
 *   --markdown FILE  print the README's tables from a result JSON, run nothing
 *
 * Installs on demand: SlateDB's venv on the first run that needs it; s3backer
 * comes from scripts/setup.sh. A missing toolchain skips its rows with one line.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { renderPeersChart } from './lib/peers/chart.js';
import { chartInput, formatTable, markdownPhases, markdownTable, toJson, type PeersDoc } from './lib/peers/report.js';
import { runPeers, selectSystems, SYSTEMS } from './lib/peers/run.js';
import { runCleanups } from './lib/peers/sh.js';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      only: { type: 'string' },
      quick: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      out: { type: 'string' },
      store: { type: 'string' },
      markdown: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(
      'usage: npm run bench:peers -- [--only glidekv,s3backer,slatedb|ROW-IDS] [--quick] [--json] [--out DIR] [--store file:///DIR] | --markdown FILE.json\n' +
        `rows: ${SYSTEMS.join(', ')}\n`,
    );
    return 0;
  }
  if (values.markdown) {
    const doc = JSON.parse(readFileSync(values.markdown, 'utf8')) as PeersDoc;
    process.stdout.write(markdownTable(doc) + '\n' + markdownPhases(doc));
    return 0;
  }
  const systems = selectSystems(values.only);
  if (values.store && !values.store.startsWith('file:///')) throw new UsageError('--store takes a file:///ABSOLUTE/DIR URL (without it the bench starts its own MinIO)');
  const full = !values.quick && !values.only && !values.store;
  const outDir = values.out ?? (full ? 'docs' : 'bench-results');
  const jsonFile = join(outDir, 'peers.json');
  const svgFile = join(outDir, 'peers.svg');
  const say = (l: string) => process.stderr.write(`peers: ${l}\n`);
  const write = (doc: PeersDoc) => {
    mkdirSync(outDir, { recursive: true });
    writeFileSync(jsonFile, toJson(doc));
    writeFileSync(svgFile, renderPeersChart(chartInput(doc)));
  };
  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\npeers: ${sig}: taking down what the run brought up\n`);
    void runCleanups().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const doc = await runPeers({ systems, quick: values.quick!, fileStore: values.store, log: say, onRow: write });
  write(doc);
  const table = formatTable(doc);
  if (values.json) {
    process.stderr.write(table);
    process.stdout.write(toJson(doc));
  } else {
    process.stdout.write(table);
  }
  process.stderr.write(`JSON: ${jsonFile}\nSVG: ${svgFile}\n`);
  return doc.rows.some((r) => r.status === 'failed') ? 1 : 0;
}

class UsageError extends Error {}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`bench:peers: ${err.message.split('\n')[0]}\n`);
    process.exit(err instanceof UsageError || /^--only|Unknown option|unexpected argument/i.test(err.message) ? 2 : 1);
  },
);
