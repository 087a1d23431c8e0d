// Goal: the re-upload heatmap is well-formed SVG with title, axes and legend,
// and its cell colours darken as the upload counts grow.
import { describe, expect, it } from 'vitest';
import {
  colourClasses,
  colourOf,
  PALETTE,
  renderHeatmap,
  ZERO_COLOUR,
  type HeatmapInput,
} from '../../../src/cli/bench/heatmap-svg.js';

/** A small XML well-formedness check: balanced tags, quoted attributes, escaped text. */
function checkWellFormed(xml: string): void {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  const re = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/g;
  let m: RegExpExecArray | null;
  let roots = 0;
  while ((m = re.exec(body))) {
    if (m[6]) throw new Error(`stray '<' at ${m.index}: ${body.slice(m.index, m.index + 40)}`);
    if (m[5] !== undefined) {
      if (stack.length === 0 && m[5].trim()) throw new Error(`text outside the root: ${m[5].slice(0, 40)}`);
      if (/&(?!amp;|lt;|gt;|quot;|apos;|#\d+;)/.test(m[5])) throw new Error(`unescaped '&' in ${m[5].slice(0, 40)}`);
      continue;
    }
    const [, close, name, , selfClose] = m;
    if (close) {
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> closes <${open}>`);
    } else {
      if (stack.length === 0) roots++;
      if (!selfClose) stack.push(name);
    }
  }
  if (stack.length) throw new Error(`unclosed: ${stack.join(' > ')}`);
  if (roots !== 1) throw new Error(`${roots} root elements`);
}

function input(): HeatmapInput {
  return {
    title: 'uploads <per> block & phase',
    subtitle: '3 values',
    blockSize: 131072,
    panels: [
      {
        label: 'separated',
        phases: [
          { name: 'write', uploads: [{ blockIndex: 10, uploads: 1 }, { blockIndex: 11, uploads: 1 }], largeBlocks: [10, 11], uploadedBytes: 2 * 131072 },
          { name: 'round 1', uploads: [{ blockIndex: 3, uploads: 2 }], largeBlocks: [10, 11], uploadedBytes: 2 * 131072 },
        ],
      },
      {
        label: 'inline',
        phases: [
          { name: 'write', uploads: [{ blockIndex: 20, uploads: 1 }], largeBlocks: [20], uploadedBytes: 131072 },
          { name: 'round 1', uploads: [{ blockIndex: 21, uploads: 4 }, { blockIndex: 3, uploads: 7 }], largeBlocks: [21], uploadedBytes: 11 * 131072 },
        ],
      },
    ],
  };
}

describe('renderHeatmap', () => {
  it('is well-formed XML with a title, both panels, axes and a legend', () => {
    const svg = renderHeatmap(input());
    expect(() => checkWellFormed(svg)).not.toThrow();
    expect(svg).toMatch(/^<\?xml[^>]*>\n<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg).toContain('<title>uploads &lt;per&gt; block &amp; phase</title>');
    expect(svg).toContain('data-label="separated"');
    expect(svg).toContain('data-label="inline"');
    expect(svg).toContain('block offset in the volume (MiB)');
    expect(svg).toMatch(/class="legend"/);
    expect(svg.match(/class="swatch"/g)!.length).toBeGreaterThanOrEqual(2);
    expect(svg.match(/class="large"/g)!.length).toBe(4); // one strip per phase row with large blocks
    expect(renderHeatmap(input())).toBe(svg); // pure
  });

  it('the checker catches broken XML', () => {
    expect(() => checkWellFormed('<svg><g></svg>')).toThrow();
    expect(() => checkWellFormed('<svg>a & b</svg>')).toThrow();
  });

  it('colours darken with the count and zero stays grey', () => {
    const svg = renderHeatmap(input());
    const cells = [...svg.matchAll(/class="cell"[^>]*fill="(#[0-9a-f]{6})" data-uploads="(\d+)"/g)].map((m) => ({
      fill: m[1],
      uploads: Number(m[2]),
    }));
    const byCount = new Map(cells.map((c) => [c.uploads, c.fill]));
    expect([...byCount.keys()].sort((a, b) => a - b)).toEqual([1, 2, 4, 7]);
    const rank = (n: number) => PALETTE.indexOf(byCount.get(n)!);
    expect(rank(1)).toBeGreaterThanOrEqual(0);
    expect(rank(1)).toBeLessThan(rank(2));
    expect(rank(2)).toBeLessThan(rank(4));
    expect(rank(4)).toBeLessThan(rank(7));
    expect(colourOf(0, colourClasses(7))).toBe(ZERO_COLOUR);
  });

  it('groups counts into palette-sized classes when the maximum is large', () => {
    const cls = colourClasses(100);
    expect(cls.length).toBe(PALETTE.length);
    expect(cls[0][0]).toBe(1);
    expect(cls[cls.length - 1][1]).toBe(100);
    for (let i = 1; i < cls.length; i++) expect(cls[i][0]).toBe(cls[i - 1][1] + 1);
    expect(PALETTE.indexOf(colourOf(100, cls))).toBe(PALETTE.length - 1);
    expect(PALETTE.indexOf(colourOf(1, cls))).toBe(0);
    // Doubling ranges keep "once" apart from "a few times" next to a hot block.
    expect(colourClasses(151)).toEqual([[1, 1], [2, 2], [3, 4], [5, 8], [9, 16], [17, 32], [33, 151]]);
    expect(colourOf(1, colourClasses(151))).not.toBe(colourOf(2, colourClasses(151)));
  });

  it('bins columns when a panel has more blocks than pixels', () => {
    const many = input();
    many.panels[0].phases[0].uploads = Array.from({ length: 3000 }, (_, i) => ({ blockIndex: i, uploads: 1 + (i === 2999 ? 5 : 0) }));
    const svg = renderHeatmap(many);
    expect(() => checkWellFormed(svg)).not.toThrow();
    expect(svg).toMatch(/blocks per cell, colour of the most-uploaded/);
    expect(svg).toContain('data-uploads="6"'); // the max of its bin survives
  });
});
