/**
 * The phase loop shared by the peers that the benchmark drives itself
 * (s3backer, SlateDB): for each phase, read the bucket's MinIO counters (and
 * the client's, where it has them), run the phase until everything is in the
 * store, read them again; then check that every key reads back as the model
 * says, outside the counted interval. A lost or wrong value stops the row:
 * nothing acknowledged may be lost.
 */
import { diff, subTraffic, type BucketCounters, type MinioCounters, type Traffic } from './minio-counters.js';
import { crossCheck, phaseRow, totalOf, type ClientCount, type PhaseRow, type SystemRow } from './results.js';
import type { Phase, Workload } from './workload.js';

export interface PhaseDriver {
  /** Runs the phase's operations and its end (sync, compaction, until in the store). */
  run(phase: Phase): Promise<{ wallMs: number; detail: Record<string, number> }>;
  /** Reads every key back; returns the problems (empty: all as expected). */
  verify(phase: Phase): Promise<string[]>;
  /** The client's own cumulative counters, where it keeps them. */
  client?(): Promise<ClientCount>;
  /** Closes the system (unmount, shutdown): measured as the phase `close`, in the totals. */
  close(): Promise<void>;
}

export interface Meter {
  counters: MinioCounters;
  bucket: string;
}

export function readMeter(m: Meter): Promise<BucketCounters> {
  return m.counters.read(m.bucket);
}

export async function runPhases(
  label: string,
  workload: Workload,
  driver: PhaseDriver,
  meter: Meter,
  log: (line: string) => void,
): Promise<PhaseRow[]> {
  const rows: PhaseRow[] = [];
  for (const phase of workload.phases) {
    const c0 = driver.client ? await driver.client() : undefined;
    const m0 = await readMeter(meter);
    const { wallMs, detail } = await driver.run(phase);
    const m1 = await readMeter(meter);
    const c1 = driver.client ? await driver.client() : undefined;
    const server = diff(m0, m1);
    const client: ClientCount | null =
      c0 && c1
        ? {
            puts: c1.puts - c0.puts,
            uploadedBytes: c1.uploadedBytes === null || c0.uploadedBytes === null ? null : c1.uploadedBytes - c0.uploadedBytes,
            ...(c0.gets !== undefined && c1.gets !== undefined ? { gets: c1.gets - c0.gets } : {}),
          }
        : null;
    const row = phaseRow(phase.name, phase.userBytes, wallMs, server, client, detail);
    rows.push(row);
    log(`${label} ${phase.name}: ${row.puts} PUTs, ${(row.uploadedBytes / 2 ** 20).toFixed(2)} MiB, ${row.gets} GETs, ${(wallMs / 1000).toFixed(1)} s`);
    const problems = await driver.verify(phase);
    if (problems.length) {
      throw new Error(
        `after ${phase.name}: ${problems.length} keys do not read back as written: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? '; ...' : ''}`,
      );
    }
  }
  // Whatever closing the system uploads (the last write-back, a final flush) is the workload's too.
  const m0 = await readMeter(meter);
  const t0 = performance.now();
  await driver.close();
  const wallMs = performance.now() - t0;
  const row = phaseRow('close', 0, wallMs, diff(m0, await readMeter(meter)), null);
  rows.push(row);
  log(`${label} close: ${row.puts} PUTs, ${(row.uploadedBytes / 2 ** 20).toFixed(2)} MiB, ${row.gets} GETs, ${(wallMs / 1000).toFixed(1)} s`);
  return rows;
}

/** Traffic of the row outside its phases: all of it minus the phases'. */
export function outsideOf(start: BucketCounters, end: BucketCounters, phases: Traffic): Traffic {
  return subTraffic(diff(start, end), phases);
}

/** What describes a row before it runs. */
export type RowBase = Pick<SystemRow, 'id' | 'label' | 'version' | 'config' | 'writers' | 'store'>;

/**
 * The row of a system that ran: its phases, their total, the bucket's traffic
 * outside them (when MinIO was read at the row's `start` and `end`) and the
 * cross-check of MinIO's PUTs with `clientName`'s own.
 */
export function okRow(base: RowBase, phases: PhaseRow[], clientName: string, start?: BucketCounters, end?: BucketCounters): SystemRow {
  const total = totalOf(phases);
  return {
    ...base,
    status: 'ok',
    phases,
    total,
    outside: start && end && total.server ? outsideOf(start, end, total.server) : null,
    check: crossCheck(phases, clientName),
  };
}
