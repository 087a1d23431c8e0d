/**
 * The `glidekv` command line: the one place that composes the layers.
 *
 * Each command group lives in its own module and registers itself on the
 * program: `volume` and `gc` (block layer), `kv` (engine), `device`/`up`/
 * `down`/`fork`/`status` (mounts), `bench`.
 *
 * Every failure is one line on stderr (`glidekv: ...`, credentials redacted)
 * and a non-zero exit: 2 for usage errors, 1 for everything else.
 *
 * Every option given on the command line takes effect or is refused:
 * - no subcommand defines an option one of its ancestors defines (commander
 *   would hand the value to the ancestor and the subcommand would silently
 *   use its default, as `bench reupload --store` once did): checked when the
 *   program is built, a failure is a bug of glidekv (exit 1);
 * - the block layer's global options (--store, --catalog, --cache; written
 *   before or after the subcommand) are refused, exit 2, by the commands that
 *   do not use them (GLOBALS_UNUSED).
 */
import { Command, CommanderError, type Option } from 'commander';
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

/** Command (path prefix) -> the global options it does not use. */
const GLOBALS_UNUSED: Record<string, string[]> = {
  // The engine runs on a directory: no store, catalog or cache.
  kv: ['store', 'catalog', 'cache'],
  // down and status work from the stack's state directory.
  down: ['store', 'catalog', 'cache'],
  status: ['store', 'catalog', 'cache'],
  // Each stack of the bench keeps its catalog and cache in its state directory.
  'bench reupload': ['catalog', 'cache'],
};

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Throws if a subcommand defines an option (long or short flag) that an ancestor defines. */
export function checkNoShadowing(cmd: Command, inherited: Map<string, string> = new Map()): void {
  const flags = (o: Option) => [o.long, o.short].filter((f): f is string => typeof f === 'string');
  for (const o of cmd.options as readonly Option[]) {
    for (const f of flags(o)) {
      const owner = inherited.get(f);
      if (owner !== undefined) {
        throw new Error(`internal: '${commandPath(cmd) || cmd.name()}' defines ${f}, which '${owner || 'glidekv'}' already defines: one of them would be ignored`);
      }
    }
  }
  const mine = new Map(inherited);
  for (const o of cmd.options as readonly Option[]) for (const f of flags(o)) mine.set(f, commandPath(cmd));
  for (const sub of cmd.commands) checkNoShadowing(sub, mine);
}

/** Refuses the global options the running command does not use (they would be ignored). */
function refuseUnusedGlobals(program: Command): void {
  program.hook('preAction', (_root, action) => {
    const path = commandPath(action);
    for (const [prefix, unused] of Object.entries(GLOBALS_UNUSED)) {
      if (path !== prefix && !path.startsWith(prefix + ' ')) continue;
      for (const name of unused) {
        if (program.getOptionValueSource(name) === 'cli') {
          throw new CliError(`--${name} has no effect on 'glidekv ${path}': leave it out`, 2);
        }
      }
    }
  });
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  // Command groups register here (one import per group).
  const groups = await Promise.all(
    ['./volume.js', './kv.js', './kv-mount.js', './mount.js', './bench.js', './restore.js'].map(async (m) => {
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
    checkNoShadowing(program);
    refuseUnusedGlobals(program);
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
