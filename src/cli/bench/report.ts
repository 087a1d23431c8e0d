/**
 * The re-upload bench's outputs: the terminal table and the heatmap input,
 * both pure functions of the result.
 */
import type { HeatmapInput, HeatmapPanel } from './heatmap-svg.js';
import type { ModeResult, PhaseResult, ReuploadResult } from './reupload.js';
import { BLOCK_SIZE } from './reupload.js';

function mib(n: number): string {
  return (n / (1024 * 1024)).toFixed(2);
}

function kib(n: number): string {
  return n >= 1024 * 1024 ? `${(n / (1024 * 1024)).toFixed(0)} MiB` : `${(n / 1024).toFixed(0)} KiB`;
}

function pad(cells: string[][]): string {
  const w = cells[0].map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ')).join('\n');
}

function phaseRow(mode: string, p: PhaseResult, largeBytes: number): string[] {
  return [
    `${mode} ${p.name}`,
    String(p.uploads),
    mib(p.uploadedBytes),
    String(p.reuploads),
    String(p.checkpointUploads),
    String(p.logPuts),
    mib(p.logBytes),
    String(p.puts),
    mib(p.userBytes),
    p.amplification.toFixed(2),
    mib(p.largeUploadedBytes),
    (p.largeUploadedBytes / largeBytes).toFixed(2),
  ];
}

function teardownRow(m: ModeResult): string[] {
  const t = m.teardown;
  return [`${m.mode} down`, String(t.uploads), mib(t.uploadedBytes), String(t.reuploads), String(t.checkpointUploads), String(t.logPuts), mib(t.logBytes), String(t.uploads + t.logPuts), '', '', '', ''];
}

function totalRow(m: ModeResult): string[] {
  return [
    `${m.mode} TOTAL`,
    String(m.uploads),
    mib(m.uploadedBytes),
    String(m.reuploads),
    String(m.checkpointUploads),
    String(m.logPuts),
    mib(m.logBytes),
    String(m.puts),
    mib(m.userBytes),
    m.amplification.toFixed(2),
    mib([m.write, ...m.rounds].reduce((a, p) => a + p.largeUploadedBytes, 0)),
    m.largeValueUploadFactor.toFixed(2),
  ];
}

/** The table printed at the end of a run. */
export function formatTable(r: ReuploadResult): string {
  const largeBytes = r.params.values * r.params.valueSize;
  const rows: string[][] = [
    ['phase', 'uploads', 'MiB up', 're-up', 'ckpt up', 'log PUTs', 'MiB log', 'PUTs', 'MiB user', 'ampl.', 'MiB large', 'large ×'],
  ];
  for (const m of [r.separated, r.inline]) {
    for (const p of [m.write, ...m.rounds]) rows.push(phaseRow(m.mode, p, largeBytes));
    rows.push(teardownRow(m));
    rows.push(totalRow(m));
  }
  const lines = [
    `re-upload bench: ${r.params.values} values × ${kib(r.params.valueSize)}, ${r.params.small} small values × ${r.params.smallSize} B, ${r.params.rounds} rounds; device fsync ${r.params.fsync ?? 'upload'}; store ${r.store}`,
    '',
    pad(rows),
    '',
    `largeValueUploadFactor: separated ${r.separated.largeValueUploadFactor.toFixed(2)}×, inline ${r.inline.largeValueUploadFactor.toFixed(2)}× ` +
      `(inline / separated = ${(r.inline.largeValueUploadFactor / Math.max(1e-9, r.separated.largeValueUploadFactor)).toFixed(1)})`,
    `uploads = block objects (offset-keyed; ckpt up = by checkpoints folding the log); log PUTs = volume log records; ` +
      `ampl. = all bytes PUT / user bytes (block objects only: separated ${r.separated.blockAmplification.toFixed(2)}, inline ${r.inline.blockAmplification.toFixed(2)})`,
    `setup (mkfs, mount; not in the totals): separated ${r.separated.setup.uploads} uploads, inline ${r.inline.setup.uploads} uploads`,
    `fork: ${r.fork.uploads} uploads, ${mib(r.fork.uploadedBytes)} MiB for one new ${kib(BLOCK_SIZE)} value; ` +
      `fork command ${r.fork.forkCommandMs} ms, all ${r.fork.durationMs} ms; parent unchanged: ${r.fork.parentUnchanged ? 'yes' : 'NO'} (${r.fork.parentKeysChecked} keys)`,
    `PUTs: glidefs ${r.puts.client}, MinIO ${r.puts.server === null ? 'n/a' : r.puts.server} — ${r.puts.note}`,
  ];
  return lines.join('\n') + '\n';
}

function panel(label: string, m: ModeResult): HeatmapPanel {
  return {
    label: `${label}: large values uploaded ${m.largeValueUploadFactor.toFixed(2)}×`,
    phases: [m.write, ...m.rounds].map((p) => ({
      name: p.name,
      uploads: p.perOffset,
      largeBlocks: p.largeBlockIndexes,
      uploadedBytes: p.uploadedBytes,
    })),
  };
}

export function heatmapInput(r: ReuploadResult): HeatmapInput {
  return {
    title: 'glidekv: uploads per block offset per phase, value separation on vs off',
    subtitle:
      `${r.params.values} values × ${kib(r.params.valueSize)}, ${r.params.small} small values, ${r.params.rounds} rounds of ` +
      `overwrite/delete half + reclaim + sync + flush; 128 KiB blocks`,
    blockSize: BLOCK_SIZE,
    panels: [panel('separated (threshold 128 KiB)', r.separated), panel('inline (threshold 0)', r.inline)],
  };
}
