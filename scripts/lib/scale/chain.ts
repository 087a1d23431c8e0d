/**
 * bench:scale, chains: a read of a block through a chain of D forks against
 * a read through one. A base volume gets `blocks` written blocks; fork 1 is
 * a fork of the base, fork k a fork of fork k-1, each writing a few blocks of
 * its own past the read range (so every level has layers of its own and the
 * blocks read all come from the base). Each round opens fork 1 and fork D in
 * turn with an empty cache dir (cold: every read is a GET from the file
 * store, verified) and reads the base's blocks one 128 KiB read at a time;
 * the order alternates between rounds.
 */
import { BLOCK_SIZE, CountingStore } from '../../../glidefs/index.js';
import { fillBlocks, openFs, readBlocks, type BlockData, type ScaleEnv } from './env.js';
import { mean, median, progress, quantile } from './util.js';

export interface ChainRow {
  depth: number;
  volume: string;
  /** Per-block read time over all rounds (ms). */
  perBlockMsMedian: number;
  perBlockMsP90: number;
  perBlockMsMean: number;
  /** openVolume time, median over rounds (ms). */
  openMsMedian: number;
  getsPerBlock: number;
  readVerified: boolean;
}

export interface ChainPhase {
  depth: number;
  blocks: number;
  rounds: number;
  blocksPerLevel: number;
  rows: ChainRow[];
  /** perBlockMsMedian at depth D / at depth 1. */
  ratio: number;
}

export async function measureChain(env: ScaleEnv, data: BlockData, o: { depth: number; blocks: number; rounds: number; perLevel?: number }): Promise<ChainPhase> {
  const perLevel = o.perLevel ?? 8;
  const size = (o.blocks + o.depth * perLevel) * BLOCK_SIZE;
  const base = 'chain-0';
  {
    const g = await openFs(env, env.freshCacheDir('chain-setup'));
    try {
      await g.fs.createVolume(base, size);
    } finally {
      await g.close();
    }
  }
  await fillBlocks(env, base, 0, o.blocks, data, { label: `chain: write ${base}` });
  for (let d = 1; d <= o.depth; d++) {
    const g = await openFs(env, env.freshCacheDir('chain-setup'), { fsync: false });
    try {
      await g.fs.fork(`chain-${d - 1}`, `chain-${d}`);
      const vol = await g.fs.openVolume(`chain-${d}`);
      const first = o.blocks + (d - 1) * perLevel;
      for (let i = first; i < first + perLevel; i++) await vol.write(i * BLOCK_SIZE, data.block(i + 1_000_000 * d));
      await vol.flush();
      await vol.close();
    } finally {
      await g.close();
    }
  }
  env.freshCacheDir('chain-setup');

  const targets = o.depth === 1 ? [1] : [1, o.depth];
  const acc = new Map<number, { per: number[]; open: number[]; gets: number; reads: number; ok: boolean }>();
  for (const t of targets) acc.set(t, { per: [], open: [], gets: 0, reads: 0, ok: true });
  const bar = progress(`chain: cold reads at depth ${targets.join(' and ')}`, o.rounds * targets.length * o.blocks);
  let done = 0;
  for (let r = 0; r < o.rounds; r++) {
    const order = r % 2 === 0 ? targets : [...targets].reverse();
    for (const d of order) {
      let counting: CountingStore | null = null;
      const g = await openFs(env, env.freshCacheDir(`chain-read`), { wrap: (s) => (counting = new CountingStore(s)) });
      try {
        const t0 = performance.now();
        const vol = await g.fs.openVolume(`chain-${d}`);
        const a = acc.get(d)!;
        a.open.push(performance.now() - t0);
        const g0 = counting!.stats().gets;
        const { perBlockMs, ok } = await readBlocks(vol, 0, o.blocks, data, (n) => bar.tick(done + n));
        a.gets += counting!.stats().gets - g0;
        a.reads += o.blocks;
        a.per.push(...perBlockMs);
        a.ok &&= ok;
        done += o.blocks;
        await vol.close();
      } finally {
        await g.close();
      }
    }
  }
  bar.done();
  env.freshCacheDir('chain-read');
  const rows: ChainRow[] = targets.map((d) => {
    const a = acc.get(d)!;
    return {
      depth: d,
      volume: `chain-${d}`,
      perBlockMsMedian: median(a.per),
      perBlockMsP90: quantile(a.per, 0.9),
      perBlockMsMean: mean(a.per),
      openMsMedian: median(a.open),
      getsPerBlock: a.gets / a.reads,
      readVerified: a.ok,
    };
  });
  return { depth: o.depth, blocks: o.blocks, rounds: o.rounds, blocksPerLevel: perLevel, rows, ratio: rows[rows.length - 1].perBlockMsMedian / rows[0].perBlockMsMedian };
}
