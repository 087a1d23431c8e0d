// Goal: mulberry32 is deterministic per seed (a seed replays a run), in [0, 1), and
// keeps the sequence the fault-injection seeds of existing runs were recorded with.
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../lib/prng.js';

describe('mulberry32', () => {
  it('the same seed gives the same sequence, another seed another one', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const c = mulberry32(43);
    const sa = Array.from({ length: 100 }, a);
    expect(Array.from({ length: 100 }, b)).toEqual(sa);
    expect(Array.from({ length: 100 }, c)).not.toEqual(sa);
    for (const x of sa) expect(x >= 0 && x < 1).toBe(true);
  });

  it('keeps the recorded sequence of seed 1', () => {
    const r = mulberry32(1);
    expect([r(), r(), r()].map((x) => Math.round(x * 1e9))).toEqual(SEED1);
  });
});

const SEED1 = [627073941, 2735721, 527447040];
