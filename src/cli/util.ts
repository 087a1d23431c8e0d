/**
 * Helpers shared by every `glidekv` subcommand: argument parsing with clear
 * errors, secret redaction, and the one-line-error/non-zero-exit convention.
 */
import { InvalidArgumentError } from 'commander';

/** An error meant for the user: printed as one line, exit status `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  K: 1024,
  KB: 1024,
  KIB: 1024,
  M: 1024 ** 2,
  MB: 1024 ** 2,
  MIB: 1024 ** 2,
  G: 1024 ** 3,
  GB: 1024 ** 3,
  GIB: 1024 ** 3,
  T: 1024 ** 4,
  TB: 1024 ** 4,
  TIB: 1024 ** 4,
};

/**
 * Parses a byte size such as `4096`, `128K`, `64M`, `4G`, `1T` (binary units,
 * case-insensitive, optional `B`/`iB`). Throws commander's InvalidArgumentError
 * so it can be used directly as an option parser.
 */
export function parseSize(text: string): number {
  const m = /^\s*(\d+)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? SIZE_UNITS[m[2].toUpperCase()] : undefined;
  if (!m || unit === undefined) {
    throw new InvalidArgumentError(`'${text}' is not a size (examples: 4096, 128K, 64M, 4G)`);
  }
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`size '${text}' is too large`);
  return n;
}

/** Parses a non-negative integer (decimal, or with a size suffix such as 128K). */
export function parseNonNegative(text: string): number {
  return parseSize(text);
}

/** Parses an integer >= 0 without units (revisions, counts). */
export function parseCount(text: string): number {
  if (!/^\d+$/.test(text.trim())) throw new InvalidArgumentError(`'${text}' is not a non-negative integer`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError(`'${text}' is too large`);
  return n;
}

/**
 * Removes S3 credentials from a message. Credentials come from the standard
 * AWS environment variables; whatever their values are, they never reach the
 * terminal.
 */
export function redact(text: string): string {
  let out = text;
  for (const name of ['AWS_SECRET_ACCESS_KEY', 'AWS_ACCESS_KEY_ID', 'AWS_SESSION_TOKEN']) {
    const v = process.env[name];
    if (v && v.length >= 4) out = out.split(v).join('***');
  }
  return out;
}

/** Prints `glidekv: message` (one line, redacted) on stderr. */
export function printError(err: unknown): void {
  const msg = err instanceof Error ? err.message : String(err);
  const line = msg.split('\n')[0];
  process.stderr.write(`glidekv: ${redact(line)}\n`);
}

/** Writes a value as pretty JSON on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
