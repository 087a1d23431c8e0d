// Goal: end to end through every real layer (KV mount, engine, ext4, loop,
// device mount, glidefs, file store), value separation uploads each large
// value about once over its life; and inline, the engine's reclaim policy
// leaves the large values' mostly-live segments in place, so the rounds'
// reclaims do not upload them again (before the policy: every live inline
// value at every round, 3-6x over the run).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runBenchCommand, type BenchCommandResult } from '../../src/cli/bench/command.js';

const canMount = process.getuid?.() === 0 && existsSync('/dev/fuse');
if (!canMount) console.warn('SKIPPING the re-upload bench test: it needs root and /dev/fuse (FUSE, loop devices, ext4)');

describe.skipIf(!canMount)('glidekv bench reupload (10 values, 3 rounds, file store)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'glidekv-reupload-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('separated: large values uploaded <= 1.05x; inline: the rounds re-upload almost none of them', { timeout: 600_000 }, async () => {
    const r: BenchCommandResult = await runBenchCommand({
      store: `file://${join(dir, 'store')}`,
      values: 10,
      valueSize: 256 * 1024,
      small: 300,
      rounds: 3,
      volumeSize: 256 * 1024 * 1024,
      stateDir: join(dir, 'state'),
      progress: false,
    });
    const { separated, inline, fork, puts } = r.result;
    console.log(r.table);
    expect(separated.rounds).toHaveLength(3);
    expect(separated.write.largeBlocks).toBeGreaterThan(0);
    expect(separated.largeValueUploadFactor).toBeGreaterThan(0);
    expect(separated.largeValueUploadFactor).toBeLessThanOrEqual(1.05);
    // inline: the values' segments are mostly live (only small records die), so reclaim copies
    // none of them; a round may re-upload a block it shares with small records at a segment's edge
    const largeBytes = 10 * 256 * 1024;
    const inlineRounds = inline.rounds.reduce((a, p) => a + p.largeUploadedBytes, 0);
    expect(inlineRounds, 'bytes of large-value blocks uploaded by the inline rounds').toBeLessThanOrEqual(0.25 * largeBytes);
    expect(inline.largeValueUploadFactor).toBeLessThanOrEqual(1.5);
    expect(fork.parentUnchanged).toBe(true);
    expect(fork.uploadedBytes).toBeGreaterThan(0);
    expect(puts.server).toBeNull(); // a file store: only glidefs counts
    expect(r.svg).toContain('<svg');
    expect(r.problems).toEqual([]);
  });
});
