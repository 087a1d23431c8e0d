/**
 * `npm run bench:reupload [-- OPTIONS]`: the end-to-end re-upload bench
 * against a MinIO of its own.
 *
 * Starts the pinned MinIO build (scripts/lib/minio.ts; scripts/setup.sh
 * builds it) on a free loopback port, then runs
 *
 *   glidekv bench reupload --store s3://glidekv-bench/reupload-<time>
 *                          --minio-metrics http://127.0.0.1:PORT  OPTIONS
 *
 * with the server's credentials in the AWS_* variables, so MinIO counts the
 * PUTs too. OPTIONS are the command's (--values, --rounds, --fsync, --json,
 * ...); --store is the script's to choose (use the command directly for
 * another store). Ctrl-C reaches the command (it takes its stacks down); the
 * server is stopped and its data removed afterwards, also on failure. The
 * exit status is the command's.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startMinio } from './lib/minio.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
if (args.some((a) => a === '--store' || a.startsWith('--store=') || a === '--minio-metrics' || a.startsWith('--minio-metrics='))) {
  process.stderr.write('bench:reupload: --store and --minio-metrics are set by this script (its own MinIO); for another store run: glidekv bench reupload --store URL ...\n');
  process.exit(2);
}

const m = await startMinio({ bucket: 'glidekv-bench' });
const store = `s3://${m.bucket}/reupload-${Date.now().toString(36)}`;
process.stderr.write(`bench:reupload: MinIO on ${m.endpoint}, store ${store}\n`);
let code = 1;
try {
  const child = spawn(process.execPath, [join(root, 'bin', 'glidekv.mjs'), 'bench', 'reupload', '--store', store, '--minio-metrics', m.endpoint, ...args], {
    stdio: 'inherit',
    env: { ...process.env, ...m.env },
  });
  // The terminal's Ctrl-C reaches the child too (same process group); a
  // SIGTERM sent to this script alone is passed on. Either way: wait for it.
  const forward = (sig: NodeJS.Signals) => child.kill(sig);
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', forward);
  code = await new Promise<number>((resolve) => {
    child.on('error', (err) => {
      process.stderr.write(`bench:reupload: ${err.message}\n`);
      resolve(1);
    });
    child.on('exit', (c, sig) => resolve(c ?? 128 + (sig ? constants.signals[sig] : 0)));
  });
} finally {
  await m.stop();
}
process.exit(code);
