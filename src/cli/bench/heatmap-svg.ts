/**
 * An SVG heatmap of uploads per block offset per phase, one panel per mode
 * (separated and inline side by side), for the re-upload bench.
 *
 * Each panel: one row per phase (top to bottom, in order), one column per
 * block that was uploaded at least once or held large-value bytes in that
 * panel's run, in offset order (offsets never written are left out, so the
 * axis is ordinal: its ticks give the byte offset in MiB of the column under
 * them). A cell's colour is the number of uploads of that block in that
 * phase. Under each row a thin blue strip marks the blocks that hold bytes of
 * large values after that phase, so "large values are uploaded once" reads
 * as: blue columns are coloured in the first row only.
 *
 * When a panel has more columns than pixels, neighbouring columns share a
 * cell and the cell shows the most-uploaded block among them (said in the
 * subtitle). A pure function of its input: same data, same bytes.
 */

export interface HeatmapPhase {
  /** 'write', 'round 1', ... */
  name: string;
  /** Uploads per block in this phase (blocks absent or 0: none). */
  uploads: Array<{ blockIndex: number; uploads: number }>;
  /** Blocks holding large-value bytes after this phase. */
  largeBlocks: number[];
  /** Bytes uploaded in this phase (printed at the row's end). */
  uploadedBytes: number;
}

export interface HeatmapPanel {
  label: string;
  phases: HeatmapPhase[];
}

export interface HeatmapInput {
  title: string;
  subtitle?: string;
  blockSize: number;
  panels: HeatmapPanel[];
}

/**
 * Sequential palette, light to dark (ColorBrewer YlOrRd without its palest
 * classes, so a single upload stands out from the grey of none).
 */
export const PALETTE = ['#fed976', '#feb24c', '#fd8d3c', '#fc4e2a', '#e31a1c', '#bd0026', '#800026'];
export const ZERO_COLOUR = '#f2f2f2';
export const LARGE_COLOUR = '#2166ac';

const PANEL_W = 520;
const LEFT = 78; // phase labels
const RIGHT = 92; // per-row totals
const GAP = 36; // between panels
const ROW_H = 20;
const STRIP_H = 5;
const ROW_GAP = 3;
const TOP = 100;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function mib(bytes: number): string {
  const m = bytes / (1024 * 1024);
  return m >= 100 ? m.toFixed(0) : m >= 10 ? m.toFixed(1) : m.toFixed(2);
}

/**
 * Colour classes for counts 1..max: one class per count while max fits the
 * palette, else doubling ranges (1, 2, 3–4, 5–8, ...; the last one open to
 * max), so "once" and "a few times" stay apart even when one hot block (the
 * ext4 journal) is uploaded hundreds of times. Returns [lo, hi] per class.
 */
export function colourClasses(max: number): Array<[number, number]> {
  if (max <= 0) return [];
  const n = PALETTE.length;
  if (max <= n) return Array.from({ length: max }, (_, i) => [i + 1, i + 1] as [number, number]);
  const out: Array<[number, number]> = [[1, 1]];
  let hi = 1;
  while (hi < max) {
    const lo = hi + 1;
    hi = out.length === n - 1 ? max : Math.min(max, hi * 2);
    out.push([lo, hi]);
  }
  return out;
}

/** The colour of a count given the classes (palette spread over the classes). */
export function colourOf(count: number, classes: Array<[number, number]>): string {
  if (count <= 0 || classes.length === 0) return ZERO_COLOUR;
  const i = classes.findIndex(([lo, hi]) => count >= lo && count <= hi);
  const k = i < 0 ? classes.length - 1 : i;
  // Spread few classes across the whole palette so 1 and 2 differ clearly.
  const p = classes.length === 1 ? PALETTE.length - 3 : Math.round((k * (PALETTE.length - 1)) / (classes.length - 1));
  return PALETTE[p];
}

interface Columns {
  blocks: number[];
  perCell: number;
  cells: number;
}

function columnsOf(panel: HeatmapPanel): Columns {
  const set = new Set<number>();
  for (const ph of panel.phases) {
    for (const u of ph.uploads) if (u.uploads > 0) set.add(u.blockIndex);
    for (const b of ph.largeBlocks) set.add(b);
  }
  const blocks = [...set].sort((a, b) => a - b);
  const perCell = Math.max(1, Math.ceil(blocks.length / PANEL_W));
  return { blocks, perCell, cells: Math.ceil(blocks.length / perCell) };
}

export function renderHeatmap(input: HeatmapInput): string {
  const cols = input.panels.map(columnsOf);
  let max = 0;
  for (const p of input.panels) for (const ph of p.phases) for (const u of ph.uploads) max = Math.max(max, u.uploads);
  const classes = colourClasses(max);
  const rows = Math.max(1, ...input.panels.map((p) => p.phases.length));
  const rowPitch = ROW_H + STRIP_H + ROW_GAP;
  const panelOuter = LEFT + PANEL_W + RIGHT;
  const width = input.panels.length * panelOuter + (input.panels.length - 1) * GAP + 20;
  const gridBottom = TOP + rows * rowPitch;
  const legendTop = gridBottom + 58;
  const height = legendTop + 70;

  const o: string[] = [];
  o.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`,
  );
  o.push(`<title>${esc(input.title)}</title>`);
  o.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  o.push(`<text x="10" y="24" font-size="18" font-weight="bold">${esc(input.title)}</text>`);
  if (input.subtitle) o.push(`<text x="10" y="44" fill="#444">${esc(input.subtitle)}</text>`);

  input.panels.forEach((panel, pi) => {
    const c = cols[pi];
    const x0 = 10 + pi * (panelOuter + GAP) + LEFT;
    const cellW = c.cells > 0 ? PANEL_W / c.cells : PANEL_W;
    const note = c.perCell > 1 ? ` — ${c.perCell} blocks per cell, colour of the most-uploaded` : '';
    o.push(`<g class="panel" data-label="${esc(panel.label)}">`);
    o.push(
      `<text x="${x0}" y="${TOP - 28}" font-size="14" font-weight="bold">${esc(panel.label)}</text>` +
        `<text x="${x0}" y="${TOP - 10}" fill="#444" font-size="11">${c.blocks.length} blocks uploaded at least once${esc(note)}</text>`,
    );
    o.push(`<text x="${x0 + PANEL_W + 8}" y="${TOP - 4}" fill="#444" font-size="11">uploaded</text>`);
    panel.phases.forEach((ph, ri) => {
      const y = TOP + ri * rowPitch;
      const counts = new Map<number, number>();
      for (const u of ph.uploads) counts.set(u.blockIndex, (counts.get(u.blockIndex) ?? 0) + u.uploads);
      const large = new Set(ph.largeBlocks);
      o.push(`<text x="${x0 - 8}" y="${y + ROW_H - 6}" text-anchor="end">${esc(ph.name)}</text>`);
      o.push(`<rect x="${x0}" y="${y}" width="${PANEL_W}" height="${ROW_H}" fill="${ZERO_COLOUR}"/>`);
      const vals: number[] = [];
      const larges: boolean[] = [];
      for (let k = 0; k < c.cells; k++) {
        let v = 0;
        let isLarge = false;
        for (let j = k * c.perCell; j < Math.min(c.blocks.length, (k + 1) * c.perCell); j++) {
          v = Math.max(v, counts.get(c.blocks[j]) ?? 0);
          if (large.has(c.blocks[j])) isLarge = true;
        }
        vals.push(v);
        larges.push(isLarge);
      }
      // One rect per run of equal cells: no hairline seams, small files.
      for (let k = 0; k < c.cells; ) {
        let e = k + 1;
        while (e < c.cells && vals[e] === vals[k]) e++;
        const v = vals[k];
        if (v > 0) {
          const first = c.blocks[k * c.perCell];
          const last = c.blocks[Math.min(c.blocks.length, e * c.perCell) - 1];
          const where = first === last ? `block ${first}` : `blocks ${first}–${last}`;
          o.push(
            `<rect class="cell" x="${(x0 + k * cellW).toFixed(2)}" y="${y}" width="${((e - k) * cellW).toFixed(2)}" height="${ROW_H}" fill="${colourOf(v, classes)}" data-uploads="${v}"><title>${esc(
              `${ph.name}: ${where} (from ${mib(first * input.blockSize)} MiB): ${v} upload${v === 1 ? '' : 's'} each`,
            )}</title></rect>`,
          );
        }
        k = e;
      }
      for (let k = 0; k < c.cells; ) {
        let e = k + 1;
        while (e < c.cells && larges[e] === larges[k]) e++;
        if (larges[k]) {
          o.push(
            `<rect class="large" x="${(x0 + k * cellW).toFixed(2)}" y="${y + ROW_H}" width="${((e - k) * cellW).toFixed(2)}" height="${STRIP_H}" fill="${LARGE_COLOUR}"/>`,
          );
        }
        k = e;
      }
      o.push(
        `<text x="${x0 + PANEL_W + 8}" y="${y + ROW_H - 6}">${mib(ph.uploadedBytes)} MiB</text>`,
      );
    });
    // x axis: ticks at up to 6 columns, labelled with their offset.
    const axisY = TOP + panel.phases.length * rowPitch + 2;
    o.push(`<line x1="${x0}" y1="${axisY}" x2="${x0 + PANEL_W}" y2="${axisY}" stroke="#333"/>`);
    const ticks = Math.min(6, c.cells);
    for (let t = 0; t < ticks; t++) {
      const k = ticks === 1 ? 0 : Math.round((t * (c.cells - 1)) / (ticks - 1));
      const tx = x0 + (k + 0.5) * cellW;
      const b = c.blocks[k * c.perCell];
      o.push(`<line x1="${tx.toFixed(2)}" y1="${axisY}" x2="${tx.toFixed(2)}" y2="${axisY + 5}" stroke="#333"/>`);
      o.push(`<text x="${tx.toFixed(2)}" y="${axisY + 18}" text-anchor="middle" font-size="11">${mib(b * input.blockSize)}</text>`);
    }
    o.push(
      `<text x="${x0 + PANEL_W / 2}" y="${axisY + 36}" text-anchor="middle" fill="#333">block offset in the volume (MiB); only blocks ever uploaded, in offset order</text>`,
    );
    o.push(`</g>`);
  });

  // Legend: colour scale, zero, and the large-value strip.
  let lx = 10 + LEFT;
  o.push(`<g class="legend">`);
  o.push(`<text x="${lx}" y="${legendTop}" font-weight="bold">uploads of a block in a phase</text>`);
  const sw = 46;
  const items: Array<[string, string]> = [[ZERO_COLOUR, '0']];
  for (const [lo, hi] of classes) items.push([colourOf(lo, classes), lo === hi ? `${lo}` : `${lo}–${hi}`]);
  items.forEach(([colour, label], i) => {
    const x = lx + i * (sw + 4);
    o.push(`<rect class="swatch" x="${x}" y="${legendTop + 8}" width="${sw}" height="16" fill="${colour}" stroke="#999" stroke-width="0.5"/>`);
    o.push(`<text x="${x + sw / 2}" y="${legendTop + 38}" text-anchor="middle" font-size="11">${esc(label)}</text>`);
  });
  lx += items.length * (sw + 4) + 40;
  o.push(`<rect x="${lx}" y="${legendTop + 14}" width="${sw}" height="${STRIP_H}" fill="${LARGE_COLOUR}"/>`);
  o.push(`<text x="${lx + sw + 8}" y="${legendTop + 21}">block holds bytes of large values after the phase</text>`);
  o.push(`</g>`);
  o.push(`</svg>`);
  return o.join('\n') + '\n';
}
