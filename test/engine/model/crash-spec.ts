// What the crash model (crash.ts) hands its child (crash-child.ts): JSON only; keys and values are
// rebuilt from small numbers on both sides.

export const CKEYS: Buffer[] = [
  Buffer.from('a'), Buffer.from('ab'), Buffer.from('b/1'), Buffer.from('b/2'), Buffer.from([0xff, 0x00]),
  Buffer.from('L'.repeat(700)), Buffer.from('k5'), Buffer.from('k6'),
];
/** The key the checker writes after subscribing, to know when a replay is complete. */
export const SENTINEL = Buffer.from('~sentinel');

export function keyOf(i: number): Buffer {
  return i < 0 ? SENTINEL : CKEYS[i];
}

export function valueOf(size: number, fill: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (fill + i * 13 + (i >> 8)) & 0xff;
  return b;
}

export type Cas = 'none' | 'zero' | 'current' | 'wrong';
export type CSubOp = { t: 'put'; key: number; size: number; fill: number } | { t: 'del'; key: number };
export type CCmd =
  | { t: 'put'; ns: string; key: number; size: number; fill: number; cas: Cas }
  | { t: 'del'; ns: string; key: number; cas: Cas }
  | { t: 'batch'; ns: string; ops: CSubOp[] }
  /** Concurrent single puts/deletes on distinct keys (one group commit). */
  | { t: 'burst'; ns: string; ops: CSubOp[] }
  /** Concurrent single ops, and close() right after they are issued; then the child reopens. */
  | { t: 'closeDuring'; ns: string; ops: CSubOp[] }
  | { t: 'create'; ns: string }
  | { t: 'drop'; ns: string; force: boolean }
  | { t: 'reclaim' } | { t: 'sync' } | { t: 'gc' }
  | { t: 'reopen'; opts: COpts };

export interface COpts {
  sync: 'none' | 'batch' | 'always';
  valueThreshold: number;
  segmentMaxBytes: number;
  reclaimMinBytes: number;
  reclaimDeadRatio: number;
}

export type Kill =
  | { mode: 'none' }
  | { mode: 'ack'; k: number; delayMs: number }
  | { mode: 'io'; n: number; how: 'before' | 'after' | 'torn'; frac: number };

export interface ChildSpec {
  dir: string;
  opts: COpts;
  cmds: CCmd[];
  kill: Kill;
}
