#!/usr/bin/env node
// The glidekv command. The sources are TypeScript run through tsx, so a fresh
// clone works after `npm ci` with no build step.
//
// Too few file descriptors (ulimit -n) is one line too: below MIN_OPEN_FILES
// the loader itself cannot open the sources, so it is refused before loading
// anything; an EMFILE/ENFILE nobody handled (the loader's own worker, a read
// of the sources) ends the process with one line instead of a stack trace.
import { readFileSync } from 'node:fs';

const MIN_OPEN_FILES = 64;

function openFileLimit() {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : Infinity;
  } catch {
    return Infinity;
  }
}

const limit = openFileLimit();
if (limit < MIN_OPEN_FILES) {
  process.stderr.write(`glidekv: the open-file limit (ulimit -n) is ${limit}; glidekv needs at least ${MIN_OPEN_FILES}\n`);
  process.exit(1);
}
process.on('uncaughtException', (err) => {
  const code = err && err.code;
  if (code === 'EMFILE' || code === 'ENFILE') {
    const what = String(err.message || err).split('\n')[0];
    process.stderr.write(`glidekv: too many open files (raise the open-file limit, ulimit -n): ${what}\n`);
    process.exit(1);
  }
  // Anything else: what Node prints for an uncaught exception, and exit 1.
  process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
  process.exit(1);
});

const { register } = await import('tsx/esm/api');
register();
await import('../src/cli/main.ts');
