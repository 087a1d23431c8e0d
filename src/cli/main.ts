/**
 * The `glidekv` command line: the one place that composes the layers.
 *
 * Each command group lives in its own module and registers itself on the
 * program: `volume` and `gc` (block layer), `kv` (engine), `device`/`up`/
 * `down`/`fork`/`status` (mounts), `bench`.
 *
 * Every failure is one line on stderr (`glidekv: ...`, credentials redacted)
 * and a non-zero exit: 2 for usage errors, 1 for everything else.
 */
import { Command, CommanderError } from 'commander';
import { CliError, printError } from './util.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('glidekv')
    .description(
      'A key-value store on a copy-on-write network block device whose blocks are S3 objects.\n\n' +
        'Global options may also be given as environment variables:\n' +
        '  GLIDEKV_STORE, GLIDEKV_CATALOG, GLIDEKV_CACHE.\n' +
        'S3 credentials come from the AWS SDK standard variables (AWS_ACCESS_KEY_ID,\n' +
        'AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL);\n' +
        'they never appear in output or errors.',
    )
    .version('0.1.0')
    .exitOverride()
    .configureOutput({
      writeErr: (s) => process.stderr.write(s),
      outputError: (s, write) => write(`glidekv: ${s.replace(/^error: /, '')}`),
    });
  return program;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  // Command groups register here (one import per group).
  const groups = await Promise.all(
    ['./volume.js', './kv.js', './kv-mount.js', './mount.js', './bench.js'].map(async (m) => {
      try {
        return await import(m);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && String(err).includes(m.slice(2, -3))) {
          return undefined;
        }
        throw err;
      }
    }),
  );
  for (const g of groups) g?.register?.(program);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
        return 0;
      }
      return err.exitCode === 0 ? 0 : 2;
    }
    printError(err);
    return err instanceof CliError ? err.exitCode : 1;
  }
}

const code = await main(process.argv);
process.exitCode = code;
