// Shared helpers for the engine tests: temp dirs and error matchers.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KvError } from '../../src/index.js';

export function tmpDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `glidekv-${tag}-`));
}

export function rmDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Resolves the KvError code a promise (or function) fails with; throws if it does not fail. */
export async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    if (err instanceof KvError) return err.code;
    throw err;
  }
  throw new Error('expected a KvError, got success');
}

export function segFiles(dir: string, ns: string): string[] {
  return fs.readdirSync(path.join(dir, 'ns', ns)).filter((f) => f.endsWith('.seg')).sort();
}
