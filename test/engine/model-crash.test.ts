// The crash model (test/engine/model/crash.ts): rounds of commands in a child process killed with
// SIGKILL at a chosen point, each checked after reopen. Default runs are few (each round spawns a node);
// hunt with MODEL_CRASH_RUNS=200; replay a failure with MODEL_SEED=... MODEL_PATH=... (fast-check prints both).
import fc from 'fast-check';
import { it } from 'vitest';
import { tmpDir } from './helpers.js';
import { roundsArb, runCrashModel } from './model/crash.js';

const seed = process.env.MODEL_SEED !== undefined ? Number(process.env.MODEL_SEED) : undefined;
const path = process.env.MODEL_PATH;
const runs = Number(process.env.MODEL_CRASH_RUNS ?? 6);

it('kill -9 at any point: acknowledged writes survive, in-flight ones are whole or absent, revisions continue, replay equals history', async () => {
  await fc.assert(
    fc.asyncProperty(roundsArb, async (rounds) => {
      await runCrashModel(rounds, tmpDir('model-crash'), process.env.MODEL_VERBOSE ? (s) => console.log(s) : undefined);
    }),
    { numRuns: runs, timeout: 300_000, ...(seed !== undefined ? { seed } : {}), ...(path !== undefined ? { path, endOnFailure: true } : {}) },
  );
}, 120_000 + 60_000 * runs);
