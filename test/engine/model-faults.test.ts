// The fault model (test/engine/model/faults.ts): EIO / ENOSPC / short writes at chosen FileIo calls, under
// the crash model's commands. Hunt with MODEL_FAULT_RUNS=500; replay with MODEL_SEED=... MODEL_PATH=...
import fc from 'fast-check';
import { it } from 'vitest';
import { tmpDir } from './helpers.js';
import { optsArb } from './model/crash.js';
import { runFaultModel, stepsArb } from './model/faults.js';

const seed = process.env.MODEL_SEED !== undefined ? Number(process.env.MODEL_SEED) : undefined;
const path = process.env.MODEL_PATH;
const runs = Number(process.env.MODEL_FAULT_RUNS ?? 40);

it('I/O faults: typed errors, a failed op changes nothing unless it poisons, a poisoned engine reopens whole', async () => {
  await fc.assert(
    fc.asyncProperty(optsArb, stepsArb, async (opts, steps) => {
      await runFaultModel(opts, steps, tmpDir('model-faults'), process.env.MODEL_VERBOSE ? (s) => console.log(s) : undefined);
    }),
    { numRuns: runs, timeout: 120_000, ...(seed !== undefined ? { seed } : {}), ...(path !== undefined ? { path, endOnFailure: true } : {}) },
  );
}, 120_000 + 10_000 * runs);
