/**
 * `glidekv kv ...`: the engine on a data directory, one command per call.
 *
 * Every command opens DIR, does one thing and closes it (the engine locks the
 * directory for the life of the process, so while a `kv watch` or a `kv mount`
 * holds DIR, other `kv` commands on it fail with E_LOCKED).
 *
 * Input is checked before DIR is opened; a command that fails leaves the
 * store as it was. Exit status: 0 ok, 1 error, 2 usage (bad flag, argument,
 * name or key), 3 compare-and-swap mismatch (--if-revision), 4 key not found.
 */
import { createReadStream } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { Command, Option } from 'commander';
import { open, type Engine, type EngineOptions } from '../index.js';
import { KvError } from '../errors.js';
import {
  EXIT_USAGE,
  KEY_ENCODINGS,
  checkKey,
  checkNamespace,
  decodeKeyArg,
  keyForText,
  putBytes,
  type KeyEncoding,
} from './kv-codec.js';
import { runWatch } from './kv-watch.js';
import { CliError, parseCount, parseSize, printJson } from './util.js';

export const EXIT_CAS_MISMATCH = 3;
export const EXIT_NOT_FOUND = 4;
const DEFAULT_MAX_VALUE = 64 * 1024 * 1024;

interface EngineFlags {
  sync?: 'always' | 'batch' | 'none';
  valueThreshold?: number;
  maxValueSize?: number;
}
interface KeyFlags {
  keyEncoding: KeyEncoding;
}

const EXIT_CODES = `
Exit status:
  0  success
  1  error (I/O, corruption, DIR locked by another process, ...)
  2  usage: unknown flag, bad argument, invalid namespace name or key
  3  compare-and-swap mismatch (--if-revision); the message names the current revision
  4  key not found (get, del)`;

/** Adds the engine's options (same flags on every kv command). */
function engineFlags(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--sync <mode>', 'durability: always (fsync per write), batch (group commit), none (leave it to the OS); default batch')
        .choices(['always', 'batch', 'none']),
    )
    .addOption(
      new Option('--value-threshold <size>', 'values of this size or more go to the blob store; 0 = keep every value inline; default 128K')
        .argParser(parseSize),
    )
    .addOption(
      new Option('--max-value-size <size>', 'refuse values larger than this; default 64M').argParser(parseSize),
    );
}

function keyEncodingFlag(cmd: Command): Command {
  return cmd.addOption(
    new Option('--key-encoding <enc>', 'how KEY, --prefix, --after and --key are written on the command line')
      .choices(KEY_ENCODINGS)
      .default('utf8'),
  );
}

function toEngineOptions(o: EngineFlags): EngineOptions {
  const opts: EngineOptions = {};
  if (o.sync !== undefined) opts.sync = o.sync;
  if (o.valueThreshold !== undefined) opts.valueThreshold = o.valueThreshold;
  if (o.maxValueSize !== undefined) opts.maxValueBytes = o.maxValueSize;
  return opts;
}

/** Maps an engine error to a one-line CLI error with the documented exit status. */
function cliError(err: unknown): unknown {
  if (!(err instanceof KvError)) return err;
  switch (err.code) {
    case 'E_CAS_MISMATCH':
      return new CliError(err.message, EXIT_CAS_MISMATCH);
    case 'E_INVALID_NAME':
    case 'E_INVALID_KEY':
    case 'E_INVALID_ARGUMENT':
      return new CliError(err.message, EXIT_USAGE);
    case 'E_NAMESPACE_NOT_EMPTY':
      return new CliError(`${err.message} (use --force to drop it with its keys)`);
    default:
      return new CliError(err.message);
  }
}

/**
 * Opens DIR, runs fn, closes DIR (also on failure). Unless `create`, DIR must
 * already exist: a typo must not leave an empty store behind.
 */
async function withEngine<T>(dir: string, flags: EngineFlags, fn: (e: Engine) => Promise<T>, create = false): Promise<T> {
  if (!create) {
    const st = await stat(dir).catch(() => undefined);
    if (!st?.isDirectory()) throw new CliError(`${dir}: no such directory (create a namespace with 'glidekv kv ns create ${dir} NS')`);
  }
  let engine: Engine;
  try {
    engine = await open(dir, toEngineOptions(flags));
  } catch (err) {
    throw cliError(err);
  }
  try {
    return await fn(engine);
  } catch (err) {
    throw cliError(err);
  } finally {
    await engine.close();
  }
}

async function readValue(o: { from?: string; value?: string }, maxBytes: number): Promise<Buffer> {
  if ((o.from === undefined) === (o.value === undefined)) {
    throw new CliError('give the value with exactly one of --from FILE or --value STRING', EXIT_USAGE);
  }
  if (o.value !== undefined) return Buffer.from(o.value, 'utf8');
  const file = o.from as string;
  if (file !== '-') {
    const st = await stat(file).catch((err: NodeJS.ErrnoException) => {
      throw new CliError(`${file}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
    });
    if (!st.isFile()) throw new CliError(`${file}: not a regular file`);
    if (st.size > maxBytes) throw new CliError(`E_VALUE_TOO_LARGE: ${file} is ${st.size} bytes, the limit is ${maxBytes}`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of file === '-' ? process.stdin : createReadStream(file)) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) throw new CliError(`E_VALUE_TOO_LARGE: the value on stdin exceeds the limit of ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

/** Writes to stdout and waits until it is flushed; a reader that went away (EPIPE, `| head`) is not an error. */
function writeStdout(buf: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    // The 'error' event follows the write callback; keep a listener so an EPIPE is not an uncaught error.
    process.stdout.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') reject(err);
    });
    process.stdout.write(buf, (err) => (err && (err as NodeJS.ErrnoException).code !== 'EPIPE' ? reject(err) : resolve()));
  });
}

function metaJson(key: Buffer, m: { revision: number; mtime: number; size?: number }): Record<string, unknown> {
  const rec: Record<string, unknown> = {};
  putBytes(rec, 'key', key);
  rec.revision = m.revision;
  if (m.size !== undefined) rec.size = m.size;
  rec.mtime = m.mtime;
  return rec;
}

function registerPut(kv: Command): void {
  const cmd = kv
    .command('put')
    .description('Store a value under a key (atomic replace). Prints the new revision.')
    .argument('<dir>', 'data directory')
    .argument('<ns>', 'namespace (must exist: kv ns create)')
    .argument('<key>', 'key, 1-1024 bytes')
    .option('--from <file>', "read the value from FILE ('-' = stdin); any bytes")
    .option('--value <string>', 'the value, as UTF-8 text')
    .option('--if-revision <n>', "only if the key's revision is N (0 = only if absent); else exit 3", parseCount)
    .option('--json', 'print {"revision": N}');
  keyEncodingFlag(cmd);
  engineFlags(cmd).addHelpText(
    'after',
    `
Examples:
  glidekv kv put ./data photos cat --from cat.jpg
  glidekv kv put ./data cfg mode --value fast
  rev=$(glidekv kv put ./data cfg mode --value slow --if-revision 7)   # CAS
  glidekv kv put ./data cfg lock --value me --if-revision 0             # create only
  glidekv kv put ./data raw 00ff --key-encoding hex --from - < blob.bin
${EXIT_CODES}`,
  );
  cmd.action(async (dir: string, ns: string, keyText: string, o: EngineFlags & KeyFlags & { from?: string; value?: string; ifRevision?: number; json?: boolean }) => {
    checkNamespace(ns);
    const key = checkKey(decodeKeyArg(keyText, o.keyEncoding, 'key'));
    const value = await readValue(o, o.maxValueSize ?? DEFAULT_MAX_VALUE);
    const rev = await withEngine(dir, o, (e) =>
      e.put(ns, key, value, o.ifRevision !== undefined ? { ifRevision: o.ifRevision } : undefined),
    );
    if (o.json) printJson({ revision: rev });
    else process.stdout.write(`${rev}\n`);
  });
}

function registerGet(kv: Command): void {
  const cmd = kv
    .command('get')
    .description('Print the value of a key: raw bytes on stdout, or into FILE with --to. Exit 4 when absent.')
    .argument('<dir>', 'data directory')
    .argument('<ns>', 'namespace')
    .argument('<key>', 'key')
    .option('--to <file>', 'write the value to FILE instead of stdout')
    .option('--json', 'print {key, revision, size, mtime, value} (value in base64 with valueEncoding when not UTF-8)');
  keyEncodingFlag(cmd);
  engineFlags(cmd).addHelpText(
    'after',
    `
Examples:
  glidekv kv get ./data photos cat --to cat.jpg
  glidekv kv get ./data cfg mode
  glidekv kv get ./data cfg mode --json
${EXIT_CODES}`,
  );
  cmd.action(async (dir: string, ns: string, keyText: string, o: EngineFlags & KeyFlags & { to?: string; json?: boolean }) => {
    checkNamespace(ns);
    const key = checkKey(decodeKeyArg(keyText, o.keyEncoding, 'key'));
    const got = await withEngine(dir, o, (e) => e.get(ns, key));
    if (!got) throw new CliError(`key '${keyText}' not found in namespace '${ns}'`, EXIT_NOT_FOUND);
    if (o.to !== undefined) await writeFile(o.to, got.value);
    if (o.json) {
      const rec = metaJson(key, { revision: got.revision, size: got.value.length, mtime: got.mtime });
      if (o.to === undefined) putBytes(rec, 'value', got.value);
      printJson(rec);
    } else if (o.to === undefined) {
      await writeStdout(got.value);
    }
  });
}

function registerDel(kv: Command): void {
  const cmd = kv
    .command('del')
    .description("Delete a key. Prints the tombstone's revision. Exit 4 when the key is absent.")
    .argument('<dir>', 'data directory')
    .argument('<ns>', 'namespace')
    .argument('<key>', 'key')
    .option('--if-revision <n>', "only if the key's revision is N; else exit 3", parseCount)
    .option('--json', 'print {"revision": N}');
  keyEncodingFlag(cmd);
  engineFlags(cmd).addHelpText(
    'after',
    `
Examples:
  glidekv kv del ./data photos cat
  glidekv kv del ./data cfg lock --if-revision 12
${EXIT_CODES}`,
  );
  cmd.action(async (dir: string, ns: string, keyText: string, o: EngineFlags & KeyFlags & { ifRevision?: number; json?: boolean }) => {
    checkNamespace(ns);
    const key = checkKey(decodeKeyArg(keyText, o.keyEncoding, 'key'));
    const rev = await withEngine(dir, o, (e) =>
      e.delete(ns, key, o.ifRevision !== undefined ? { ifRevision: o.ifRevision } : undefined),
    );
    if (rev === undefined) throw new CliError(`key '${keyText}' not found in namespace '${ns}'`, EXIT_NOT_FOUND);
    if (o.json) printJson({ revision: rev });
    else process.stdout.write(`${rev}\n`);
  });
}

function registerLs(kv: Command): void {
  const cmd = kv
    .command('ls')
    .description('List keys of a namespace in key order (values are not read).')
    .argument('<dir>', 'data directory')
    .argument('<ns>', 'namespace')
    .option('--prefix <p>', 'only keys that start with P')
    .option('--after <k>', 'only keys after K (exclusive; for paging)')
    .option('--limit <n>', 'at most N keys', parseCount)
    .option('-l, --long', 'text output: revision, size, mtime (ISO) and key per line')
    .option('--json', 'print {namespace, keys: [{key, keyEncoding?, revision, size, mtime}], truncated}');
  keyEncodingFlag(cmd);
  engineFlags(cmd).addHelpText(
    'after',
    `
Text output is one key per line; a key that is not printable UTF-8 is shown as
base64:<base64>. In --json, such a key is base64 with "keyEncoding": "base64".
"truncated" is true when --limit cut the listing; continue with --after <last key>.

Examples:
  glidekv kv ls ./data photos
  glidekv kv ls ./data photos --prefix 2024/ --limit 100 --json
  glidekv kv ls ./data photos --after 2024/0099 --limit 100
${EXIT_CODES}`,
  );
  cmd.action(
    async (dir: string, ns: string, o: EngineFlags & KeyFlags & { prefix?: string; after?: string; limit?: number; long?: boolean; json?: boolean }) => {
      checkNamespace(ns);
      const opts: { prefix?: Buffer; after?: Buffer; limit?: number } = {};
      if (o.prefix !== undefined) opts.prefix = decodeKeyArg(o.prefix, o.keyEncoding, '--prefix');
      if (o.after !== undefined) opts.after = checkKey(decodeKeyArg(o.after, o.keyEncoding, '--after'), '--after');
      if (o.limit !== undefined) opts.limit = o.limit + 1;
      const rows = await withEngine(dir, o, async (e) => e.list(ns, opts));
      const truncated = o.limit !== undefined && rows.length > o.limit;
      const shown = o.limit !== undefined ? rows.slice(0, o.limit) : rows;
      if (o.json) {
        printJson({ namespace: ns, keys: shown.map((r) => metaJson(r.key, r)), truncated });
        return;
      }
      const out = shown.map((r) =>
        o.long ? `${r.revision}\t${r.size}\t${new Date(r.mtime).toISOString()}\t${keyForText(r.key)}` : keyForText(r.key),
      );
      if (out.length) await writeStdout(Buffer.from(out.join('\n') + '\n'));
    },
  );
}

function registerNs(kv: Command): void {
  const ns = kv.command('ns').description('Create, drop and list namespaces.');
  ns.addHelpText(
    'after',
    `
Examples:
  glidekv kv ns create ./data photos      # creates ./data if needed
  glidekv kv ns list ./data --json
  glidekv kv ns drop ./data photos --force
${EXIT_CODES}`,
  );
  engineFlags(
    ns
      .command('create')
      .description('Create a namespace (and the data directory if it does not exist).')
      .argument('<dir>', 'data directory')
      .argument('<ns>', "name: 1-255 bytes of UTF-8, no '/', no NUL, not '.' or '..'"),
  ).action(async (dir: string, name: string, o: EngineFlags) => {
    checkNamespace(name);
    await withEngine(dir, o, (e) => e.createNamespace(name), true);
  });
  engineFlags(
    ns
      .command('drop')
      .description('Drop a namespace. It must be empty unless --force.')
      .argument('<dir>', 'data directory')
      .argument('<ns>', 'namespace')
      .option('--force', 'drop it with all its keys'),
  ).action(async (dir: string, name: string, o: EngineFlags & { force?: boolean }) => {
    checkNamespace(name);
    await withEngine(dir, o, (e) => e.dropNamespace(name, { force: Boolean(o.force) }));
  });
  engineFlags(
    ns
      .command('list')
      .description('List namespaces, one per line.')
      .argument('<dir>', 'data directory')
      .option('--json', 'print a JSON array of names'),
  ).action(async (dir: string, o: EngineFlags & { json?: boolean }) => {
    const names = await withEngine(dir, o, async (e) => [...e.listNamespaces()].sort());
    if (o.json) printJson(names);
    else if (names.length) process.stdout.write(names.join('\n') + '\n');
  });
}

function registerReclaim(kv: Command): void {
  engineFlags(
    kv
      .command('reclaim')
      .description('Compact now: copy the live records of segments that are at least half garbage (the reclaim policy) into new segments and drop those segments.')
      .argument('<dir>', 'data directory')
      .option('--full', 'every segment, mostly live or not (afterwards the log holds live records only)')
      .option('--json', 'print {relocatedBytes, segmentsRemoved, durationMs}'),
  )
    .addHelpText(
      'after',
      `
Separated values (blobs) are not copied, only their 16-byte pointers. Mostly-live
segments stay where they are (on a block device, copying a record uploads it
again): see "Reclaim policy" in src/FORMAT.md.

Examples:
  glidekv kv reclaim ./data
  glidekv kv reclaim ./data --full --json
${EXIT_CODES}`,
    )
    .action(async (dir: string, o: EngineFlags & { json?: boolean; full?: boolean }) => {
      const r = await withEngine(dir, o, (e) => e.reclaim({ full: o.full === true }));
      if (o.json) printJson(r);
      else process.stdout.write(`relocated ${r.relocatedBytes} bytes, removed ${r.segmentsRemoved} segments in ${Math.round(r.durationMs)} ms\n`);
    });
}

function registerGc(kv: Command): void {
  engineFlags(
    kv
      .command('gc')
      .description('Remove orphan blobs: separated values no pointer references (left by a crash between blob write and pointer append).')
      .argument('<dir>', 'data directory')
      .option('--json', 'print {orphansSwept} (removed by the sweep on open and by gc)'),
  )
    .addHelpText(
      'after',
      `
Every acknowledged write is made durable first, so a blob is removed only
when no record (even one still in the page cache) references it. Opening
DIR sweeps orphans too; gc does it on demand.

Examples:
  glidekv kv gc ./data
  glidekv kv gc ./data --json
${EXIT_CODES}`,
    )
    .action(async (dir: string, o: EngineFlags & { json?: boolean }) => {
      // opening DIR already sweeps: report what open and gc removed together
      const r = await withEngine(dir, o, async (e) => {
        await e.gc();
        return { orphansSwept: e.stats().orphansSweptSinceOpen };
      });
      if (o.json) printJson(r);
      else process.stdout.write(`removed ${r.orphansSwept} orphan blob file(s)\n`);
    });
}

function registerStats(kv: Command): void {
  engineFlags(
    kv
      .command('stats')
      .description("Print the data directory's state and counters (keys, liveBytes, deadBytes, segments, revision, compactionBytes, ...).")
      .argument('<dir>', 'data directory')
      .option('--json', 'print one JSON object of numeric fields'),
  )
    .addHelpText(
      'after',
      `
Lifetime counters (over every process that used DIR, kept in DIR/meta.json):
  compactionBytes  bytes of records reclaim relocated
  reclaims         reclaims run (one per namespace)
  orphansSwept     orphan blob files removed (open, gc)
A process killed with -9 loses its increments since its last meta.json write
(reclaim, namespace drop and close write it). The same counters for this
process alone end in SinceOpen. Every other counter (fsyncs, writes,
warnings, emfileRetries, dirFsyncFailures, reclaimFailures, danglingPointers,
poisoned) is this process's, since it opened DIR; the rest is DIR's state now.

Examples:
  glidekv kv stats ./data
  glidekv kv stats ./data --json | jq .deadBytes
${EXIT_CODES}`,
    )
    .action(async (dir: string, o: EngineFlags & { json?: boolean }) => {
      const s = await withEngine(dir, o, async (e) => e.stats());
      const numeric: Record<string, number> = {};
      for (const [k, v] of Object.entries(s)) if (typeof v === 'number') numeric[k] = v;
      if (o.json) {
        printJson(numeric);
        return;
      }
      const w = Math.max(...Object.keys(numeric).map((k) => k.length));
      process.stdout.write(Object.entries(numeric).map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n') + '\n');
    });
}

function registerWatch(kv: Command): void {
  const cmd = kv
    .command('watch')
    .description('Stream put/delete events of a namespace as JSON lines until interrupted (SIGINT/SIGTERM: exit 0).')
    .argument('<dir>', 'data directory')
    .argument('<ns>', 'namespace')
    .option('--key <k>', 'only this key')
    .option('--prefix <p>', 'only keys that start with P (default: every key)')
    .option('--from <rev>', 'first replay events from revision REV still in the log, then follow', parseCount)
    .option('--count <n>', 'exit after N events', parseCount);
  keyEncodingFlag(cmd);
  engineFlags(cmd).addHelpText(
    'after',
    `
One JSON object per line:
  {"type":"put","key":"a","revision":7,"value":"hello"}
  {"type":"delete","key":"a","revision":8}
A key or value that is not valid UTF-8 is printed in base64 with
"keyEncoding":"base64" / "valueEncoding":"base64".

The engine locks DIR for one process, so while watch runs, writers must be in
the same process (a kv mount, a program using the library); from another
shell, replay the history with --from on a closed DIR instead.
A revision already reclaimed fails with E_COMPACTED (exit 1).

Examples:
  glidekv kv watch ./data cfg --from 1 --count 10
  glidekv kv watch ./data photos --prefix 2024/ --from 100 | jq -c .
${EXIT_CODES}`,
  );
  cmd.action(
    async (dir: string, ns: string, o: EngineFlags & KeyFlags & { key?: string; prefix?: string; from?: number; count?: number }) => {
      checkNamespace(ns);
      if (o.key !== undefined && o.prefix !== undefined) throw new CliError('give at most one of --key and --prefix', EXIT_USAGE);
      const sel =
        o.key !== undefined
          ? { key: checkKey(decodeKeyArg(o.key, o.keyEncoding, '--key'), '--key') }
          : { prefix: decodeKeyArg(o.prefix ?? '', o.keyEncoding, '--prefix') };
      if (o.count === 0) return;
      await withEngine(dir, o, (e) => runWatch(e, ns, sel, { fromRevision: o.from, count: o.count }));
    },
  );
}

export function register(program: Command): void {
  const kv = program
    .command('kv')
    .description('Use the key-value engine on a data directory (namespaces, keys, values, revisions).')
    .addHelpText(
      'after',
      `
Every kv command opens DIR, does its work and closes it. Engine options
(--sync, --value-threshold, --max-value-size) are accepted by every command.
Keys are UTF-8 text on the command line unless --key-encoding hex|base64.

Examples:
  glidekv kv ns create ./data cfg
  glidekv kv put ./data cfg mode --value fast
  glidekv kv get ./data cfg mode
  glidekv kv ls ./data cfg --json
  glidekv kv stats ./data --json
  glidekv kv gc ./data
${EXIT_CODES}`,
    );
  registerPut(kv);
  registerGet(kv);
  registerDel(kv);
  registerLs(kv);
  registerNs(kv);
  registerReclaim(kv);
  registerGc(kv);
  registerWatch(kv);
  registerStats(kv);
}
