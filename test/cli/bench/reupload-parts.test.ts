// Goal: the bench's pure parts — the rounds' choice of small values, store
// prefixes per mode, the table and the JSON shape — do what the issue says.
import { describe, expect, it } from 'vitest';
import { storeForMode, toJson } from '../../../src/cli/bench/command.js';
import { formatTable, heatmapInput } from '../../../src/cli/bench/report.js';
import { roundOps, smallKey, type ModeResult, type PhaseResult, type ReuploadResult } from '../../../src/cli/bench/reupload.js';

describe('roundOps', () => {
  it('touches half of the small values, overwriting or deleting, the same way every run', () => {
    const model = new Map<string, Buffer | undefined>();
    for (let i = 0; i < 100; i++) model.set(smallKey(i), Buffer.alloc(100, 1));
    const ops = roundOps(model, 100, 100, 1);
    expect(ops).toHaveLength(50);
    expect(new Set(ops.map(([k]) => k)).size).toBe(50);
    const deletes = ops.filter(([, v]) => v === undefined).length;
    expect(deletes).toBeGreaterThan(10);
    expect(deletes).toBeLessThan(40);
    for (const [k, v] of ops) expect(model.get(k)).toBe(v); // the model follows
    const again = new Map<string, Buffer | undefined>();
    for (let i = 0; i < 100; i++) again.set(smallKey(i), Buffer.alloc(100, 1));
    expect(roundOps(again, 100, 100, 1).map(([k, v]) => [k, v === undefined])).toEqual(ops.map(([k, v]) => [k, v === undefined]));
  });
  it('re-creates a deleted value instead of deleting it twice', () => {
    const model = new Map<string, Buffer | undefined>();
    for (let i = 0; i < 10; i++) model.set(smallKey(i), undefined);
    const ops = roundOps(model, 10, 100, 2);
    expect(ops.every(([, v]) => v !== undefined && v.length === 100)).toBe(true);
  });
});

describe('storeForMode', () => {
  it('gives each mode its own prefix', () => {
    expect(storeForMode('s3://b/run1/', 'inline')).toBe('s3://b/run1/inline');
    expect(storeForMode('file:///tmp/s', 'separated')).toBe('file:///tmp/s/separated');
  });
});

function phaseResult(name: string, up: number, large: number): PhaseResult {
  return {
    name,
    uploads: up,
    uploadedBytes: up * 131072,
    reuploads: 0,
    logPuts: 4,
    logBytes: 4000,
    checkpointUploads: 0,
    puts: up + 4,
    bytesPut: up * 131072 + 4000,
    blockAmplification: (up * 131072) / 1000,
    userBytes: 1000,
    amplification: (up * 131072 + 4000) / 1000,
    largeUploadedBytes: large * 131072,
    largeBlocks: 2,
    durationMs: 5,
    perOffset: [{ blockIndex: 1, uploads: up }],
    largeBlockIndexes: [1, 2],
  };
}

function modeResult(mode: 'separated' | 'inline', factor: number): ModeResult {
  return {
    mode,
    valueThreshold: mode === 'inline' ? 0 : null,
    volume: `v-${mode}`,
    uploads: 3,
    uploadedBytes: 3 * 131072,
    reuploads: 1,
    logPuts: 10,
    logBytes: 10000,
    checkpointUploads: 1,
    puts: 13,
    bytesPut: 3 * 131072 + 10000,
    blockAmplification: (3 * 131072) / 2000,
    teardown: { uploads: 1, uploadedBytes: 131072, reuploads: 0, logPuts: 2, logBytes: 2000, checkpointUploads: 1 },
    userBytes: 2000,
    amplification: (3 * 131072 + 10000) / 2000,
    largeValueUploadFactor: factor,
    setup: { uploads: 9, uploadedBytes: 9 * 131072, reuploads: 0, logPuts: 1, logBytes: 100, checkpointUploads: 0 },
    write: phaseResult('write', 2, 2),
    rounds: [phaseResult('round 1', 1, mode === 'inline' ? 2 : 0)],
  };
}

describe('report', () => {
  const r: ReuploadResult = {
    params: { values: 1, valueSize: 262144, small: 10, smallSize: 100, rounds: 1, volumeSize: 1 << 30 },
    store: 'file:///x',
    separated: modeResult('separated', 1),
    inline: modeResult('inline', 2),
    fork: { uploads: 1, uploadedBytes: 131072, durationMs: 10, forkCommandMs: 5, parentUnchanged: true, parentKeysChecked: 11 },
    puts: { client: 25, server: 24, agree: false, note: 'MISMATCH: glidefs counted 25 PUTs, MinIO 24' },
  };
  it('the JSON has the issue\'s shape', () => {
    const j = toJson(r) as Record<string, Record<string, unknown>>;
    for (const m of ['separated', 'inline']) {
      for (const f of ['uploads', 'uploadedBytes', 'reuploads', 'amplification', 'largeValueUploadFactor', 'rounds']) {
        expect(j[m], `${m}.${f}`).toHaveProperty(f);
      }
    }
    expect(j.fork).toMatchObject({ uploadedBytes: 131072, durationMs: 10, parentUnchanged: true });
    expect(j.puts).toMatchObject({ client: 25, server: 24 });
  });
  it('the table shows every phase, the totals, the factor, the fork and a PUT mismatch loudly', () => {
    const t = formatTable(r);
    expect(t).toMatch(/separated write/);
    expect(t).toMatch(/inline round 1/);
    expect(t).toMatch(/separated TOTAL +3 +0\.38 +1 +1 +10 +0\.01 +13 .* 1\.00\n/); // block uploads, ckpt uploads, log PUTs and MiB beside them
    expect(t).toMatch(/separated down +1 +0\.13 +0 +1 +2 /); // the checkpoint of `down`
    expect(t).toMatch(/ampl\. = all bytes PUT/);
    expect(t).toMatch(/inline \/ separated = 2\.0/);
    expect(t).toMatch(/MISMATCH/);
    expect(t).toMatch(/parent unchanged: yes/);
  });
  it('the heatmap gets one row per phase and the large-value blocks', () => {
    const h = heatmapInput(r);
    expect(h.panels).toHaveLength(2);
    expect(h.panels[1].phases.map((p) => p.name)).toEqual(['write', 'round 1']);
    expect(h.panels[0].phases[0].largeBlocks).toEqual([1, 2]);
  });
});

describe('glidekv bench reupload: bad options', () => {
  it('rejects them with one line and exit status 2, before mounting anything', async () => {
    const { spawnSync } = await import('node:child_process');
    for (const [args, msg] of [
      [['--value-size', '4K'], /--value-size must be at least 128K/],
      [['--values', 'x'], /'x' is not a non-negative integer/],
      [['--values', '0'], /--values must be at least 1/],
    ] as const) {
      const r = spawnSync(process.execPath, ['bin/glidekv.mjs', 'bench', 'reupload', ...args], { encoding: 'utf8' });
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
    }
  });
});
