/**
 * `glidekv bench reupload`: the end-to-end re-upload measurement (issue 6),
 * through every real layer — KV mount, engine, ext4, loop, device mount,
 * glidefs, MinIO. See src/cli/bench/reupload.ts for the experiment.
 *
 * The store comes from the command line (`--store`, the root program's one
 * global option, wherever it is written) or from GLIDEKV_BENCH_S3_URL; the
 * command never starts a server. `npm run bench:reupload`
 * (scripts/bench-reupload.ts) starts a pinned MinIO on a loopback port and
 * calls this command with `--store s3://...` and `--minio-metrics`, so the
 * PUTs are counted by MinIO too.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { openStore } from '../../glidefs/index.js';
import { CliError, parseCount, parseSize } from './util.js';

/** Where `bench reupload` finds its store when --store is not given. */
export const BENCH_STORE_ENV = 'GLIDEKV_BENCH_S3_URL';
/** Where it finds a MinIO to count PUTs on the server side when --minio-metrics is not given. */
export const BENCH_METRICS_ENV = 'GLIDEKV_BENCH_MINIO_METRICS';

export function register(program: Command): void {
  const bench = program.command('bench').description('Measurements of the whole stack');
  bench
    .command('reupload')
    .description(
      'Measure how often large values are uploaded to the object store over their life, with value ' +
        'separation on (default threshold) and off (--value-threshold 0), end to end: each mode writes ' +
        'large and small values through a fresh `glidekv up` stack, then overwrites/deletes half the ' +
        'small values and reclaims, round after round. Prints a table, writes JSON and an SVG heatmap. ' +
        'Needs root and /dev/fuse (it mounts). The store is the global --store (s3://BUCKET/PREFIX or ' +
        `file:///ABS/DIR; each mode uses PREFIX/<mode>), else ${BENCH_STORE_ENV}; ` +
        '`npm run bench:reupload` starts a MinIO and passes it.',
    )
    .option('--minio-metrics <url>', `also count PUTs on the server: the MinIO behind --store (http://HOST:PORT, metrics public; env ${BENCH_METRICS_ENV})`)
    .addOption(new Option('--values <n>', 'number of large values').argParser(parseCount).default(40))
    .addOption(new Option('--value-size <size>', 'size of each large value').argParser(parseSize).default(256 * 1024, '256K'))
    .addOption(new Option('--small <n>', 'number of small values (~100 bytes)').argParser(parseCount).default(2000))
    .addOption(new Option('--rounds <n>', 'rounds of overwrite/delete + reclaim').argParser(parseCount).default(5))
    .addOption(new Option('--volume-size <size>', 'size of each volume').argParser(parseSize).default(1024 ** 3, '1G'))
    .addOption(new Option('--fsync <mode>', "device fsync mode of the stacks (glidekv up --fsync): 'upload' or 'local'").choices(['upload', 'local']).default('upload'))
    .option('--state <dir>', 'directory for the stacks (state, mountpoints); default: a temporary one, removed after')
    .option('--json <file>', 'write the result as JSON here', 'bench-results/reupload.json')
    .option('--svg <file>', 'write the heatmap here', 'bench-results/reupload-heatmap.svg')
    .option('--quiet', 'no progress bars')
    .addHelpText(
      'after',
      `
The store (--store, a global option: before or after 'bench reupload'):
  --store URL, else the environment variable ${BENCH_STORE_ENV}; the catalog
  and cache of each stack live in its state directory (--catalog and --cache
  are refused). S3 endpoint and credentials: the AWS_* variables.

Examples:
  $ npm run bench:reupload                 # starts a MinIO, counts PUTs on both sides
  $ npm run bench:reupload -- --values 10 --rounds 3
  $ glidekv bench reupload --values 10 --rounds 3 --store file:///tmp/glidekv-store
  $ npm run bench:reupload -- --fsync local --json bench-results/reupload-local.json --svg bench-results/reupload-local.svg
  $ npm run bench:reupload -- --json docs/reupload.json --svg docs/reupload-heatmap.svg

JSON shape:
  { "separated": { uploads, uploadedBytes, reuploads, amplification, largeValueUploadFactor, rounds: [...] },
    "inline": { ... }, "fork": { uploadedBytes, durationMs, parentUnchanged }, "puts": { client, server } }`,
    )
    .action(async (opts, cmd: Command) => {
      if (opts.values < 1) throw new CliError('--values must be at least 1', 2);
      if (opts.valueSize < 131072) throw new CliError('--value-size must be at least 128K (a large value)', 2);
      // --store is the root program's (one definition: a second one here would be shadowed by it).
      const given = (cmd.optsWithGlobals() as { store?: string }).store;
      const store = given ?? process.env[BENCH_STORE_ENV];
      if (store === undefined) {
        throw new CliError(`bench reupload needs a store: --store URL or ${BENCH_STORE_ENV} (npm run bench:reupload starts a MinIO for it)`, 2);
      }
      const where = given !== undefined ? '--store' : BENCH_STORE_ENV;
      if (/^\s*memory:/i.test(store)) throw new CliError(`${where}: a memory store lives in one process; the bench's stacks are several: use s3:// or file:///`, 2);
      const minioMetrics: string | undefined = opts.minioMetrics ?? process.env[BENCH_METRICS_ENV];
      if (minioMetrics !== undefined && !/^https?:\/\/[^/?#@\s]+\/?$/.test(minioMetrics)) {
        throw new CliError(`--minio-metrics: '${minioMetrics}' is not http(s)://HOST:PORT`, 2);
      }
      if (process.getuid?.() !== 0) throw new CliError('bench reupload needs root (it mounts FUSE, loop devices and ext4)');
      // A bad URL is refused before anything is mounted (a file:// store creates its directory, as the run would).
      try {
        await (await openStore(store, { retry: false })).close?.();
      } catch (err) {
        throw new CliError(`${where}: ${(err as Error).message}`, 2);
      }
      const { runBenchCommand } = await import('./bench/command.js');
      const result = await runBenchCommand({
        store,
        minioMetrics,
        values: opts.values,
        valueSize: opts.valueSize,
        small: opts.small,
        rounds: opts.rounds,
        volumeSize: opts.volumeSize,
        fsync: opts.fsync,
        stateDir: opts.state,
        progress: !opts.quiet && process.stderr.isTTY === true,
        log: opts.quiet ? undefined : (l: string) => process.stderr.write(`bench: ${l}\n`),
      });
      process.stdout.write(result.table);
      for (const [file, text] of [
        [opts.json, JSON.stringify(result.json, null, 2) + '\n'],
        [opts.svg, result.svg],
      ] as const) {
        mkdirSync(dirname(resolve(file)), { recursive: true });
        writeFileSync(file, text);
      }
      process.stdout.write(`JSON: ${opts.json}\nSVG: ${opts.svg}\n`);
      if (result.problems.length) {
        for (const p of result.problems) process.stderr.write(`glidekv: ${p}\n`);
        process.exitCode = 1;
      }
    });
}
