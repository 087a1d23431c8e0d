/**
 * `glidekv bench reupload`: the end-to-end re-upload measurement (issue 6),
 * through every real layer — KV mount, engine, ext4, loop, device mount,
 * glidefs, MinIO. See src/cli/bench/reupload.ts for the experiment.
 *
 * Without --store the bench starts its own MinIO (scripts/lib/minio.ts, the
 * pinned build from scripts/setup.sh) on a free loopback port and stops it
 * after, so the PUTs can be counted by MinIO too.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { type Command, Option } from 'commander';
import { CliError, parseCount, parseSize } from './util.js';

export function register(program: Command): void {
  const bench = program.command('bench').description('Measurements of the whole stack');
  bench
    .command('reupload')
    .description(
      'Measure how often large values are uploaded to the object store over their life, with value ' +
        'separation on (default threshold) and off (--value-threshold 0), end to end: each mode writes ' +
        'large and small values through a fresh `glidekv up` stack, then overwrites/deletes half the ' +
        'small values and reclaims, round after round. Prints a table, writes JSON and an SVG heatmap. ' +
        'Needs root and /dev/fuse (it mounts).',
    )
    .option('--store <url>', 'object store (s3://bucket/prefix or file:///abs/dir); default: a MinIO started for the run')
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
Examples:
  $ npm run bench:reupload
  $ glidekv bench reupload --values 10 --rounds 3 --store file:///tmp/glidekv-store
  $ glidekv bench reupload --fsync local --json bench-results/reupload-local.json --svg bench-results/reupload-local.svg
  $ glidekv bench reupload --json docs/reupload.json --svg docs/reupload-heatmap.svg

JSON shape:
  { "separated": { uploads, uploadedBytes, reuploads, amplification, largeValueUploadFactor, rounds: [...] },
    "inline": { ... }, "fork": { uploadedBytes, durationMs, parentUnchanged }, "puts": { client, server } }`,
    )
    .action(async (opts) => {
      if (process.getuid?.() !== 0) throw new CliError('bench reupload needs root (it mounts FUSE, loop devices and ext4)');
      if (opts.values < 1) throw new CliError('--values must be at least 1', 2);
      if (opts.valueSize < 131072) throw new CliError('--value-size must be at least 128K (a large value)', 2);
      const { runBenchCommand } = await import('./bench/command.js');
      const result = await runBenchCommand({
        store: opts.store,
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
