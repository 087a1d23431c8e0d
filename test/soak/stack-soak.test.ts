// The stack soak's short variant (test/soak/stack-soak.ts has the whole story and the long runs): up, puts/gets/deletes
// through the KV mount, writes + fsync through the device, kill -9 of the device daemon mid-load then down + up,
// MinIO killed and restarted mid-load, and at the end machine loss (glidekv restore onto a new catalog and cache):
// everything acknowledged is there after each step, status tells the truth, nothing is left behind.
// Seed: GLIDEKV_SOAK_SEED (printed) replays the choices.
import { describe, expect, it } from 'vitest';
import { kernelUnavailable } from '../mount/device-helpers.js';
import { runSoak } from './stack-soak.js';

const skipReason = kernelUnavailable();
if (skipReason) console.warn(`\n!!! SKIPPING the stack soak: ${skipReason}. !!!\n`);
const seed = process.env.GLIDEKV_SOAK_SEED !== undefined ? Number(process.env.GLIDEKV_SOAK_SEED) : Date.now() >>> 0;

describe.skipIf(skipReason !== undefined)('stack soak (short)', () => {
  it('kv + device load, kill -9 of the device daemon, a store outage, machine loss: nothing acknowledged lost', async () => {
    console.log(`stack soak: GLIDEKV_SOAK_SEED=${seed}`);
    const r = await runSoak({ seed, plan: ['kv', 'dev', 'killdev', 'outage'], log: (l) => console.log(l) });
    expect(r.steps.map((s) => s.kind)).toEqual(['kv', 'dev', 'killdev', 'outage']);
  }, 600_000);
});
