// Write amplification, the measurement the project exists for: 60 values of 256 KiB plus churn of
// small values, 15 reclaims; separated, reclaim relocates pointers (compactionBytes) at least 100x
// fewer bytes than with every value inline (valueThreshold 0).
import { afterAll, expect, it } from 'vitest';
import { open } from '../../src/index.js';
import { bigValue } from './fixtures/sep-fault-io.js';
import { rmDir, tmpDir } from './helpers.js';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));

const LARGE = 60;
const ROUNDS = 15;

async function run(valueThreshold: number | undefined): Promise<{ compactionBytes: number; reclaims: number; blobs: number }> {
  const dir = tmpDir(`wamp-${valueThreshold ?? 'default'}`);
  dirs.push(dir);
  const e = await open(dir, { ...(valueThreshold !== undefined ? { valueThreshold } : {}), reclaimMinBytes: 1e15 });
  await e.createNamespace('n');
  for (let i = 0; i < LARGE; i++) await e.put('n', `large-${i}`, bigValue(256 * 1024, i + 1));
  let small = 0;
  for (let round = 0; round < ROUNDS; round++) {
    // churn: 200 small overwrites over 40 keys, in batches of 20 (group commits)
    for (let b = 0; b < 10; b++) {
      await e.batch('n', Array.from({ length: 20 }, () => ({ type: 'put' as const, key: `small-${small % 40}`, value: `v${small++}-${'x'.repeat(small % 90)}` })));
    }
    await e.reclaim({ full: true }); // every segment: the relocation a full reclaim costs per value kind
  }
  for (let i = 0; i < LARGE; i += 7) expect((await e.get('n', `large-${i}`))!.value.equals(bigValue(256 * 1024, i + 1))).toBe(true);
  const s = e.stats();
  await e.close();
  return { compactionBytes: s.compactionBytes, reclaims: s.reclaims, blobs: s.blobs };
}

it('separated values make reclaim relocate at least 100x fewer bytes than inline ones', async () => {
  const separated = await run(undefined); // the default: valueThreshold 131072
  const inline = await run(0);
  console.log(`write amplification (${LARGE} x 256 KiB + small churn, ${ROUNDS} reclaims): compactionBytes ` +
    `separated=${separated.compactionBytes} inline=${inline.compactionBytes} ` +
    `(inline/separated = ${(inline.compactionBytes / Math.max(1, separated.compactionBytes)).toFixed(0)}x)`);
  expect(separated.reclaims).toBe(ROUNDS);
  expect(inline.reclaims).toBe(ROUNDS);
  expect(separated.blobs).toBe(LARGE);
  expect(inline.blobs).toBe(0);
  expect(separated.compactionBytes).toBeGreaterThan(0);
  expect(inline.compactionBytes).toBeGreaterThan(ROUNDS * LARGE * 256 * 1024); // every large value, every reclaim
  expect(separated.compactionBytes * 100).toBeLessThanOrEqual(inline.compactionBytes);
}, 60_000);
