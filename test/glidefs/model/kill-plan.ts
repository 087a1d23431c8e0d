/**
 * The plan of the kill -9 model test (test/glidefs/model-kill.test.ts), shared by the parent and the child
 * (test/glidefs/model/kill-child.ts).
 */
import { mulberry32 } from '../../../lib/prng.js';

export type KillOp =
  | { t: 'create'; vol: string; blocks: number }
  | { t: 'write'; vol: string; off: number; len: number; seed: number }
  | { t: 'flush'; vol: string }
  | { t: 'checkpoint'; vol: string }
  | { t: 'fork'; src: string; dst: string; snapshot: boolean }
  | { t: 'delete'; vol: string }
  | { t: 'close'; vol: string }
  /** Writes in flight at once (Promise.all), then one ACK for all. */
  | { t: 'writes'; vol: string; ws: Array<{ off: number; len: number; seed: number }> };

export interface KillPlan {
  objects: string;
  catalog: string;
  cache: string;
  maxLogRecords: number;
  killAt: number;
  land: boolean;
  ops: KillOp[];
}

/** The bytes a write op writes (the parent computes the same). */
export function writeBytes(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  if (seed % 4 === 0) return b; // zeros: a hole
  const r = mulberry32(seed);
  for (let i = 0; i < len; i++) b[i] = (r() * 256) | 0;
  return b;
}
