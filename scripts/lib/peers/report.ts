/**
 * The peers benchmark's outputs, pure functions of its result document: the
 * terminal tables (totals per system, then every phase) and the JSON file.
 */
import type { ChartBar, ChartInput } from './chart.js';
import type { PhaseRow, SystemRow } from './results.js';
import type { WorkloadParams } from './workload.js';

/** A figure measured by hand, kept beside the run's rows (not rerun here). */
export interface HandRow {
  label: string;
  version: string;
  config: string;
  puts: number;
  amplification: number;
  measured: string;
  note: string;
}

/** JuiceFS cannot be installed here (the Go module proxy refuses its versions): its row is the hand measurement. */
export const JUICEFS_HAND_ROW: HandRow = {
  label: 'JuiceFS, SQLite metadata',
  version: 'JuiceFS 1.3',
  config: 'JuiceFS 1.3 with SQLite metadata (metadata never reaches the store), same workload, same MinIO setup',
  puts: 7099,
  amplification: 1.02,
  measured: '2026-12',
  note: 'measured by hand, not rerun by this script (cannot be installed here)',
};

export interface PeersDoc {
  /** ISO time the run started. */
  date: string;
  quick: boolean;
  workload: WorkloadParams;
  /** Bytes of values the workload puts over all phases. */
  userBytes: number;
  /** Where the rows' objects went: the run's MinIO, or a file store (glidekv only, client counters). */
  store: string;
  versions: Record<string, string>;
  machine: string;
  /** Linux kernel release (FUSE, loop and ext4 are the kernel's). */
  kernel: string;
  /** How MinIO's counters were read (metric names). */
  counting: string;
  rows: SystemRow[];
  handMeasured: HandRow[];
  durationMs: number;
  /** True while the run is still going (the file is rewritten after each row). */
  partial: boolean;
}

const MiB = 2 ** 20;
const mib = (n: number) => (n / MiB).toFixed(2);
/** For the README: thousands separated (3,331.00). */
const mibMd = (n: number) => (n / MiB).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const secs = (ms: number) => (ms / 1000).toFixed(1);
const ampl = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) + '×';

function pad(rows: string[][], leftCols = 1): string {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i < leftCols ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ').trimEnd()).join('\n');
}

function figures(p: PhaseRow): string[] {
  return [
    String(p.puts),
    mib(p.uploadedBytes),
    p.userBytes ? (p.userBytes / MiB).toFixed(3) : '-',
    p.userBytes ? ampl(p.amplification) : '-',
    p.gets === null ? '-' : String(p.gets),
    secs(p.wallMs),
  ];
}

/** `glidekv 0.1.0 (...), node v20..., minio ...`: each version once, named. */
export function versionList(versions: Record<string, string>): string {
  return Object.entries(versions)
    .map(([k, v]) => (v.toLowerCase().startsWith(k.toLowerCase()) ? v : `${k} ${v}`))
    .join(', ');
}

/** The tables printed at the end of a run. */
export function formatTable(doc: PeersDoc): string {
  const w = doc.workload;
  const head = ['system', 'PUTs', 'MiB up', 'MiB user', 'ampl.', 'GETs', 'wall s'];
  const totals: string[][] = [head];
  for (const r of doc.rows) {
    if (r.status === 'ok' && r.total) totals.push([r.label, ...figures(r.total)]);
    else totals.push([r.label, r.status === 'skipped' ? 'skipped' : 'FAILED', '', '', '', '', '']);
  }
  for (const h of doc.handMeasured) {
    totals.push([`${h.label} (hand, ${h.measured})`, String(h.puts), '', '', ampl(h.amplification), '', '']);
  }
  const perPhase: string[][] = [['system', 'phase', 'PUTs', 'MiB up', 'MiB user', 'ampl.', 'GETs', 'wall s']];
  for (const r of doc.rows) {
    for (const p of r.phases) perPhase.push([r.label, p.name, ...figures(p)]);
  }
  const lines = [
    `peers: ${w.values} × ${w.valueSize / 1024} KiB + ${w.small} × ${w.smallSize} B, ${w.writers} writers (SlateDB: 1 and 16), ` +
      `${w.rounds} rounds of overwrite/delete half + compaction${doc.quick ? ' (--quick)' : ''}; store: ${doc.store}`,
    `counted at ${doc.store.startsWith('MinIO') ? 'MinIO, per bucket' : 'the client (glidekv counters)'}; amplification = bytes PUT / bytes the user put`,
    '',
    pad(totals),
    '',
    pad(perPhase, 2),
    '',
  ];
  for (const r of doc.rows) {
    if (r.status !== 'ok') lines.push(`${r.label}: ${r.status}: ${r.reason}`);
    else lines.push(`${r.label}: PUTs ${r.check.note}` + (r.outside ? `; outside the phases (setup, checks, teardown): ${r.outside.puts} PUTs, ${r.outside.gets} GETs` : ''));
  }
  for (const h of doc.handMeasured) lines.push(`${h.label}: ${h.note}`);
  lines.push('', `versions: ${versionList(doc.versions)}`);
  return lines.join('\n') + '\n';
}

/** The JSON document, numbers rounded where they are ratios. */
export function toJson(doc: PeersDoc): string {
  return (
    JSON.stringify(doc, (k, v) => (k === 'amplification' && typeof v === 'number' ? Math.round(v * 1000) / 1000 : v), 2) + '\n'
  );
}

/** The chart's input: every row that ran, then the hand-measured ones. */
export function chartInput(doc: PeersDoc): ChartInput {
  const bars: ChartBar[] = [];
  for (const r of doc.rows) {
    if (r.status !== 'ok' || !r.total) continue;
    bars.push({
      label: r.label,
      uploadedBytes: r.total.uploadedBytes,
      puts: r.total.puts,
      amplification: r.total.amplification,
      group: r.id.startsWith('glidekv') ? 'glidekv' : r.id.startsWith('s3backer') ? 's3backer' : 'slatedb',
      ackBeforeStore: r.id.startsWith('glidekv-local') || r.id === 's3backer-defaults',
    });
  }
  for (const h of doc.handMeasured) {
    bars.push({
      label: `${h.version} (by hand, ${h.measured})`,
      uploadedBytes: h.amplification * doc.userBytes,
      puts: h.puts,
      amplification: h.amplification,
      hand: true,
      group: 'juicefs',
    });
  }
  const w = doc.workload;
  return {
    title: 'The re-upload workload on glidekv and its peers: bytes and PUTs sent to the object store',
    subtitle:
      `${w.values} × ${w.valueSize / 1024} KiB + ${w.small} × ${w.smallSize} B values, ${w.writers} writers, ${w.rounds} rounds of overwrite/delete half + compaction` +
      `${doc.quick ? ' (--quick sizes)' : ''}; counted at ${doc.store.startsWith('MinIO') ? 'MinIO' : 'the client'}; ${doc.date.slice(0, 10)}`,
    userBytes: doc.userBytes,
    bars,
    footnote: `Totals of all phases. ${versionList(doc.versions)}.`,
  };
}

/** The README's table: one line per row (totals), the hand-measured rows marked as such. */
export function markdownTable(doc: PeersDoc): string {
  const lines = [
    '| system | version | writers | PUTs | MiB uploaded | amplification | GETs | wall s | PUTs: client vs MinIO |',
    '|---|---|--:|--:|--:|--:|--:|--:|---|',
  ];
  for (const r of doc.rows) {
    if (r.status !== 'ok' || !r.total) {
      lines.push(`| ${r.label} | ${r.version} | ${r.writers} | ${r.status}: ${r.reason} | | | | | |`);
      continue;
    }
    const t = r.total;
    const check = r.check.agree === null ? r.check.note : r.check.agree ? `agree (${r.check.client})` : `${r.check.client} vs ${r.check.server}`;
    lines.push(
      `| ${r.label} | ${r.version.replace(/ \(main .*\)$/, '')} | ${r.writers} | ${t.puts.toLocaleString('en-US')} | ${mibMd(t.uploadedBytes)} | ${ampl(t.amplification)} | ${t.gets?.toLocaleString('en-US') ?? '-'} | ${secs(t.wallMs)} | ${check} |`,
    );
  }
  for (const h of doc.handMeasured) {
    lines.push(`| ${h.label} — **measured by hand ${h.measured}, not rerun** (cannot be installed here) | ${h.version} | | ${h.puts.toLocaleString('en-US')} | | ${ampl(h.amplification)} | | | |`);
  }
  return lines.join('\n') + '\n';
}

/** The per-phase PUTs and amplification of each row, for the README. */
export function markdownPhases(doc: PeersDoc): string {
  const ok = doc.rows.filter((r) => r.status === 'ok');
  if (!ok.length) return '';
  const names = ok[0].phases.map((p) => p.name);
  const lines = [`| system | ${names.join(' | ')} |`, `|---|${names.map(() => '--:').join('|')}|`];
  for (const r of ok) {
    lines.push(`| ${r.label} | ${r.phases.map((p) => `${p.puts.toLocaleString('en-US')} / ${mibMd(p.uploadedBytes)}`).join(' | ')} |`);
  }
  return lines.join('\n') + '\n';
}
