// The engine's whole public API under a randomized model test (issue 9): see test/engine/model/.
// Default runs (40 + 30) take ~30-40 s; hunt with more: MODEL_RUNS=2000 MODEL_CONC_RUNS=1000 npx vitest run test/engine/model.test.ts
// Replay a failure with the seed (and path) fast-check prints: MODEL_SEED=... MODEL_PATH=...
import fc from 'fast-check';
import { it } from 'vitest';
import { tmpDir } from './helpers.js';
import { commandArbs, runModel, runOptionsArb } from './model/model.js';
import { runConcurrent, waveArb } from './model/concurrent.js';

const seed = process.env.MODEL_SEED !== undefined ? Number(process.env.MODEL_SEED) : undefined;
const path = process.env.MODEL_PATH;
// a run that hangs fails with its seed (fast-check's per-run timeout) instead of the whole test timing out
const params = (runs: number): fc.Parameters<unknown> => ({
  numRuns: runs, timeout: 60_000, ...(seed !== undefined ? { seed } : {}), ...(path !== undefined ? { path, endOnFailure: true } : {}),
});

it('the engine behaves as the model: put/delete/batch/CAS/get/list/watch/reclaim/reopen/namespaces', async () => {
  const runs = Number(process.env.MODEL_RUNS ?? 40);
  await fc.assert(
    fc.asyncProperty(runOptionsArb, fc.commands(commandArbs(), { maxCommands: 80, size: 'large' }), async (o, cmds) => {
      await runModel(o, cmds, tmpDir('model'));
    }),
    params(runs) as fc.Parameters<[unknown, unknown]>,
  );
}, 120_000 + 5_000 * Number(process.env.MODEL_RUNS ?? 40));

it('concurrent namespace create/drop and writes: acknowledged writes survive, errors are typed', async () => {
  const runs = Number(process.env.MODEL_CONC_RUNS ?? 30);
  await fc.assert(
    fc.asyncProperty(fc.constantFrom<'none' | 'batch' | 'always'>('none', 'batch', 'always'), fc.array(waveArb, { minLength: 1, maxLength: 8 }),
      async (sync, waves) => {
        await runConcurrent(sync, waves, tmpDir('model-conc'));
      }),
    params(runs) as fc.Parameters<[unknown, unknown]>,
  );
}, 120_000 + 5_000 * Number(process.env.MODEL_CONC_RUNS ?? 30));
