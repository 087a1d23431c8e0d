/**
 * One SVG for the peers benchmark: two horizontal bar panels on log scales,
 * side by side, one bar per system in the same order: bytes uploaded (with a
 * dashed line at the bytes the user wrote, so a bar's end reads as its
 * amplification) and PUTs. Hand-measured rows are grey and say so. A pure
 * function of its input: same data, same bytes.
 */

export interface ChartBar {
  label: string;
  uploadedBytes: number;
  puts: number;
  amplification: number;
  /** Hand-measured, not from this run. */
  hand?: boolean;
  /** Acknowledges a write before it is in the store (marked † and explained under the chart). */
  ackBeforeStore?: boolean;
  /** Colour group (one per product). */
  group: 'glidekv' | 's3backer' | 'slatedb' | 'juicefs';
}

export interface ChartInput {
  title: string;
  subtitle: string;
  userBytes: number;
  bars: ChartBar[];
  footnote?: string;
}

const COLOURS: Record<ChartBar['group'], string> = {
  glidekv: '#2166ac',
  s3backer: '#b35806',
  slatedb: '#1b7837',
  juicefs: '#9e9e9e',
};

const W = 1000;
const LABEL_W = 250;
const PANEL_W = 300;
const GAP = 70;
const TOP = 92;
const BAR_H = 22;
const ROW_H = 32;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * Powers of ten covering [lo, hi], starting a decade lower when the smallest
 * value sits near a power of ten (its bar would have no length).
 */
function decades(lo: number, hi: number): number[] {
  let a = Math.floor(Math.log10(Math.max(lo, 1e-9)));
  if (lo / 10 ** a < 2) a -= 1;
  const b = Math.ceil(Math.log10(Math.max(hi, 1e-9)));
  const out: number[] = [];
  for (let e = a; e <= b; e++) out.push(10 ** e);
  return out;
}

/** Splits `text` into lines of at most `width` characters, at spaces. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ').filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

function fmtCount(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

function fmtMiB(bytes: number): string {
  const m = bytes / 2 ** 20;
  return m >= 100 ? fmtCount(m) : m >= 10 ? m.toFixed(1) : m.toFixed(2);
}

function fmtAmpl(x: number): string {
  return (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) + '×';
}

function tickLabel(v: number, unit: 'MiB' | 'PUTs'): string {
  if (unit === 'MiB') return v >= 1 ? `${fmtCount(v)}` : `${v}`;
  return v >= 1000 ? `${fmtCount(v / 1000)}k` : `${v}`;
}

interface Panel {
  x: number;
  title: string;
  unit: 'MiB' | 'PUTs';
  value: (b: ChartBar) => number;
  text: (b: ChartBar) => string;
  /** A reference line (value, label). */
  ref?: [number, string];
}

export function renderPeersChart(input: ChartInput): string {
  const rows = input.bars.length;
  const plotH = rows * ROW_H;
  const early = input.bars.some((b) => b.ackBeforeStore);
  const notes = [
    ...(early
      ? ['† acknowledges a write before it is in the store (glidekv --fsync local: on the local disk; s3backer defaults: in its write-back cache).']
      : []),
    ...wrap(input.footnote ?? '', 150),
  ];
  const H = TOP + plotH + 48 + notes.length * 16;
  const panels: Panel[] = [
    {
      x: LABEL_W,
      title: "MiB uploaded (log scale), × the user's bytes",
      unit: 'MiB',
      value: (b) => b.uploadedBytes / 2 ** 20,
      text: (b) => `${fmtAmpl(b.amplification)}  (${fmtMiB(b.uploadedBytes)} MiB)`,
      ref: [input.userBytes / 2 ** 20, `the user's ${fmtMiB(input.userBytes)} MiB`],
    },
    {
      x: LABEL_W + PANEL_W + GAP + 40,
      title: 'PUT requests (log scale)',
      unit: 'PUTs',
      value: (b) => b.puts,
      text: (b) => fmtCount(b.puts),
    },
  ];
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="16" y="26" font-size="17" font-weight="bold">${esc(input.title)}</text>`,
    `<text x="16" y="46" fill="#444">${esc(input.subtitle)}</text>`,
  );
  for (const p of panels) {
    const values = input.bars.map(p.value).filter((v) => v > 0);
    if (p.ref) values.push(p.ref[0]);
    const ticks = decades(Math.min(...values), Math.max(...values));
    const lo = Math.log10(ticks[0]);
    const hi = Math.log10(ticks[ticks.length - 1]);
    const xOf = (v: number) => p.x + ((Math.log10(Math.max(v, ticks[0])) - lo) / (hi - lo || 1)) * PANEL_W;
    out.push(`<text x="${p.x}" y="${TOP - 22}" font-weight="bold">${esc(p.title)}</text>`);
    for (const t of ticks) {
      const x = xOf(t).toFixed(1);
      out.push(
        `<line x1="${x}" y1="${TOP - 6}" x2="${x}" y2="${TOP + plotH}" stroke="#dddddd"/>`,
        `<text x="${x}" y="${TOP + plotH + 16}" text-anchor="middle" fill="#555">${tickLabel(t, p.unit)}</text>`,
      );
    }
    input.bars.forEach((b, i) => {
      const y = TOP + i * ROW_H + (ROW_H - BAR_H) / 2;
      const v = p.value(b);
      const x1 = xOf(v);
      const fill = COLOURS[b.group];
      out.push(
        `<rect x="${p.x}" y="${y.toFixed(1)}" width="${Math.max(1, x1 - p.x).toFixed(1)}" height="${BAR_H}" fill="${fill}"` +
          (b.hand ? ` fill-opacity="0.45" stroke="${fill}" stroke-dasharray="4 3"` : '') +
          `/>`,
        `<text x="${(x1 + 5).toFixed(1)}" y="${(y + BAR_H / 2 + 4).toFixed(1)}" fill="#222">${esc(p.text(b))}</text>`,
      );
    });
    if (p.ref) {
      const x = xOf(p.ref[0]).toFixed(1);
      out.push(
        `<line x1="${x}" y1="${TOP - 8}" x2="${x}" y2="${TOP + plotH}" stroke="#000" stroke-width="1.5" stroke-dasharray="5 4"/>`,
        `<text x="${x}" y="${TOP + plotH + 32}" text-anchor="middle" font-size="11">${esc(p.ref[1])} (1×)</text>`,
      );
    }
  }
  input.bars.forEach((b, i) => {
    const y = TOP + i * ROW_H + ROW_H / 2 + 4;
    out.push(
      `<text x="${LABEL_W - 10}" y="${y}" text-anchor="end"${b.hand ? ' fill="#666" font-style="italic"' : ''}>${esc(b.label)}${b.ackBeforeStore ? ' †' : ''}</text>`,
    );
  });
  notes.forEach((line, i) => {
    out.push(`<text x="16" y="${H - 10 - (notes.length - 1 - i) * 16}" fill="#555" font-size="11">${esc(line)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
