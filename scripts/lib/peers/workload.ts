/**
 * The re-upload workload of the peers benchmark, the same for every system
 * (and the same as `glidekv bench reupload`, whose key names and round
 * choices it reuses from src/cli/bench/reupload.ts):
 *
 *   write    `values` large values (distinct random bytes) and `small`
 *            values of `smallSize` bytes, from `writers` concurrent writers;
 *   round r  overwrite or delete half of the small values (seeded choices,
 *            so every system gets the same keys and the same deletes), then
 *            the system's compaction.
 *
 * Every put is durable before it is acknowledged, in the system's own sense
 * (documented per system in its runner), and at the end of each phase
 * everything is in the store before the phase's counters are read.
 */
import { randomBytes } from 'node:crypto';
import { largeKey, roundOps, smallKey, type ReuploadParams } from '../../../src/cli/bench/reupload.js';

/** The re-upload bench's sizes, and how many write concurrently. */
export type WorkloadParams = Pick<ReuploadParams, 'values' | 'valueSize' | 'small' | 'smallSize' | 'rounds'> & {
  /** Concurrent writers (SlateDB rows set their own: 1 and 16). */
  writers: number;
};

/** The workload: 40 × 256 KiB + 2000 × 100 B, 8 writers, 5 rounds. */
export const FULL: WorkloadParams = { values: 40, valueSize: 256 * 1024, small: 2000, smallSize: 100, rounds: 5, writers: 8 };
/** --quick: the same shape, small enough for a debugging run. */
export const QUICK: WorkloadParams = { values: 4, valueSize: 256 * 1024, small: 100, smallSize: 100, rounds: 2, writers: 8 };

/** A put (value) or a delete (undefined). */
export type Op = [key: string, value: Buffer | undefined];

export interface Phase {
  name: string;
  ops: Op[];
  /** Rounds compact after their operations; the write phase does not. */
  compact: boolean;
  /** Bytes of values put in the phase (deletes count 0). */
  userBytes: number;
  /** Every key's value after the phase (undefined = deleted). */
  expect: Map<string, Buffer | undefined>;
}

export interface Workload {
  params: WorkloadParams;
  large: Buffer[];
  phases: Phase[];
  /** Sum of the phases' userBytes. */
  userBytes: number;
}

function phaseOf(name: string, ops: Op[], compact: boolean, model: Map<string, Buffer | undefined>): Phase {
  return { name, ops, compact, userBytes: ops.reduce((a, [, v]) => a + (v?.length ?? 0), 0), expect: new Map(model) };
}

/** All phases of one run, values drawn now (each system gets the same bytes). */
export function buildWorkload(params: WorkloadParams): Workload {
  const large = Array.from({ length: params.values }, () => randomBytes(params.valueSize));
  const model = new Map<string, Buffer | undefined>();
  const write: Op[] = large.map((v, i) => [largeKey(i), v]);
  for (let i = 0; i < params.small; i++) write.push([smallKey(i), randomBytes(params.smallSize)]);
  for (const [k, v] of write) model.set(k, v);
  const phases = [phaseOf('write', write, false, model)];
  for (let r = 1; r <= params.rounds; r++) {
    const ops = roundOps(model, params.small, params.smallSize, r); // updates the model
    phases.push(phaseOf(`round ${r}`, ops, true, model));
  }
  return { params, large, phases, userBytes: phases.reduce((a, p) => a + p.userBytes, 0) };
}

/** User bytes the workload writes for `params`, without drawing values (the rounds' choices are seeded). */
export function userBytesOf(params: WorkloadParams): number {
  const model = new Map<string, Buffer | undefined>();
  let bytes = params.values * params.valueSize + params.small * params.smallSize;
  for (let i = 0; i < params.small; i++) model.set(smallKey(i), Buffer.alloc(0));
  for (let r = 1; r <= params.rounds; r++) {
    for (const [, v] of roundOps(model, params.small, params.smallSize, r)) bytes += v?.length ?? 0;
  }
  return bytes;
}
