// The block layer (GlideFs) under a randomized model test: see test/glidefs/model/model.ts.
// Commands: create, write (unaligned, cross-block, whole-block, zeros, copies), read, flush,
// checkpoint, fork, snapshot, delete, close+reopen, waves (2-5 writes/reads/flushes/checkpoints/forks in
// flight at once), gc (then: the catalog names nothing missing, no orphan is left, refcount = block rows,
// every layer on a chain, no pending/deleting row), crash (kill -9 at a request of a flush/checkpoint/fork/delete/create or
// between operations: reopen from the same catalog + cache), machine loss (restore from the store
// alone: exactly the flushed bytes; with the 2 MiB cache bound per block also a version written since),
// transient store faults on and off. A real kill -9 is test/glidefs/model-kill.test.ts.
// Defaults (~30-60 s): GLIDEFS_MODEL_RUNS=20 on the memory store, GLIDEFS_MODEL_DIR_RUNS=5 on a
// directory store. Hunt: GLIDEFS_MODEL_RUNS=500. Replay: GLIDEFS_MODEL_SEED=<seed> [GLIDEFS_MODEL_PATH=<path>]
// (both printed on failure; the seed of every run is printed at its start).
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { it } from 'vitest';
import { coverage, cmdArb, runModel, runOptionsArb, type Cmd, type StoreKind } from './model/model.js';

const envSeed = process.env.GLIDEFS_MODEL_SEED;
const seed = envSeed !== undefined ? Number(envSeed) : (Date.now() ^ (process.pid << 8)) >>> 0;
const path = process.env.GLIDEFS_MODEL_PATH;
const runs = Number(process.env.GLIDEFS_MODEL_RUNS ?? 20);
const dirRuns = Number(process.env.GLIDEFS_MODEL_DIR_RUNS ?? 5);

function property(kind: StoreKind, n: number, maxCommands: number, budgetMs: number) {
  console.log(`glidefs model (${kind}): GLIDEFS_MODEL_SEED=${seed} runs ${n}`);
  let firstFailure = true;
  return fc.assert(
    fc.asyncProperty(runOptionsArb, fc.array(cmdArb, { minLength: 1, maxLength: maxCommands, size: 'max' }), async (o, cmds) => {
      try {
        await runModel(o, [{ t: 'create', blocks: 3 }, ...cmds], mkdtempSync(join(tmpdir(), `glidefs-model-${kind}-`)), kind);
      } catch (err) {
        // the first failure as found (before shrinking), in case shrinking runs out of time
        if (firstFailure) console.log(`first failure (${kind}, seed ${seed}): ${(err as Error).message.slice(0, 4000)}`);
        firstFailure = false;
        throw err;
      }
    }),
    // a run that hangs fails with its seed; shrinking stops at the budget and reports the smallest case so far
    { numRuns: n, seed, timeout: 60_000, interruptAfterTimeLimit: budgetMs, ...(path !== undefined ? { path, endOnFailure: true } : {}) },
  ).finally(() => {
    console.log(`coverage (${kind}): ${[...coverage].sort().map(([k, c]) => `${k}: ${c}`).join(', ')}`);
    coverage.clear();
  });
}

it('GlideFs behaves as the byte-array model (memory store, faults, crashes, machine loss)', async () => {
  await property('memory', runs, 60, 120_000 + 8_000 * runs);
}, 180_000 + 10_000 * runs);

it('GlideFs behaves as the byte-array model (directory store)', async () => {
  await property('dir', dirRuns, 40, 120_000 + 8_000 * dirRuns);
}, 180_000 + 10_000 * dirRuns);

// Bugs the model found, each as the smallest command sequence (fast-check's shrunk counterexample).
const quiet = { maxLogRecords: 10_000, faultSeed: 0, faultProbability: 0.1, faultsOn: false, smallCache: false };
const regression = (cmds: Cmd[]) => runModel(quiet, cmds, mkdtempSync(join(tmpdir(), 'glidefs-model-regression-')));

it('regression: a delete cut by kill -9 right after its tombstone PUT can be finished by deleting again (seed 1015843430)', async () => {
  // was: the volume stayed in the catalog, every open failed E_FENCED ("taken over by another writer")
  // and every later delete failed E_FENCED too: it could be neither used nor deleted
  await regression([
    { t: 'create', blocks: 3 },
    { t: 'crash', op: 'delete', v: 0, after: 1, land: true, r: { kind: 'any', a: 0, b: 0 }, fill: { kind: 'zeros', seed: 0 } },
    { t: 'write', v: 0, r: { kind: 'any', a: 0, b: 0 }, fill: { kind: 'byte', seed: 1 } },
  ]);
});

it('model check: a snapshot whose delete was cut after its tombstone stays readable until deleted again, and restore drops it', async () => {
  // shrunk by the model (seed 1021804121) when the model wrongly expected restore to keep it: kept as a check of that rule
  await regression([
    { t: 'create', blocks: 3 },
    { t: 'fork', v: 0, snapshot: true },
    { t: 'delete', v: 0 },
    { t: 'crash', op: 'delete', v: 0, after: 1, land: true, r: { kind: 'any', a: 0, b: 0 }, fill: { kind: 'zeros', seed: 0 } },
    { t: 'write', v: 0, r: { kind: 'any', a: 0, b: 0 }, fill: { kind: 'zeros', seed: 0 } },
  ]);
});

it('model check: with the 2 MiB cache bound, a write-back flush may make unflushed bytes durable before any flush (finding 7, seed 1028522467)', async () => {
  // 6 dirty blocks of 17 reach half the dirty limit (12 of 16 slots): the write starts a background flush, which
  // uploads the bytes; after the machine loss they are legally there. Was read as a bug by the model (finding 7 of
  // notes/s3/model.md); the model now allows, per block, the flushed bytes or a version written since (MVol.bg).
  await runModel({ ...quiet, maxLogRecords: 2, smallCache: true }, [
    { t: 'create', blocks: 3 },
    { t: 'create', blocks: 17 },
    { t: 'write', v: 3, r: { kind: 'any', a: 0, b: 131072 }, fill: { kind: 'zeros', seed: 0 } },
    { t: 'write', v: 3, r: { kind: 'any', a: 2515662, b: 12950834 }, fill: { kind: 'byte', seed: 0 } },
    { t: 'write', v: 0, r: { kind: 'any', a: 0, b: 0 }, fill: { kind: 'random', seed: 685786195 } },
    { t: 'lose' },
  ], mkdtempSync(join(tmpdir(), 'glidefs-model-regression-')));
});
