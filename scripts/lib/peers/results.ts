/**
 * What one row of the peers benchmark measured, phase by phase, and how its
 * totals are made. Counts come from MinIO (the server's own Prometheus
 * counters, per bucket) when the store is the MinIO started for the run, and
 * from the system's client counters otherwise (glidekv on a file store);
 * both are kept when both exist, and `check` says whether they agree.
 */
import { addTraffic, ZERO, type Traffic } from './minio-counters.js';

/** The system's own count of what it uploaded (where it keeps one). */
export interface ClientCount {
  puts: number;
  /** null: the client does not count bytes. */
  uploadedBytes: number | null;
  /** Downloads, where the client counts them. */
  gets?: number;
}

export interface PhaseRow {
  name: string;
  /** Bytes of values the user put in the phase. */
  userBytes: number;
  /** From the phase's first operation until everything is in the store. */
  wallMs: number;
  /** MinIO's counters for the row's bucket over the phase (null: not a MinIO store). */
  server: Traffic | null;
  client: ClientCount | null;
  /** The figures the table shows: the server's where there is one, else the client's. */
  puts: number;
  uploadedBytes: number;
  /** null: nobody counted downloads. */
  gets: number | null;
  /** uploadedBytes / userBytes. */
  amplification: number;
  /** Where the phase's time went (ms), per system: ops, sync, compaction, ... */
  detail?: Record<string, number>;
}

export type SystemId =
  | 'glidekv-upload-separated'
  | 'glidekv-upload-inline'
  | 'glidekv-local-separated'
  | 'glidekv-local-inline'
  | 's3backer-defaults'
  | 's3backer-writethrough'
  | 'slatedb-1'
  | 'slatedb-16';

export interface SystemRow {
  id: SystemId;
  /** Short name for tables and the chart. */
  label: string;
  /** Product and version, e.g. `s3backer 1.5.4`. */
  version: string;
  /** How it was configured and what "durable" means for it. */
  config: string;
  writers: number;
  /** MinIO bucket, or the file store URL. */
  store: string;
  status: 'ok' | 'skipped' | 'failed';
  /** Why skipped or failed (one line). */
  reason?: string;
  phases: PhaseRow[];
  total: PhaseRow | null;
  /**
   * MinIO traffic of the row outside its phases (setup such as mkfs or
   * opening, read-back checks between phases, teardown): not in the totals.
   */
  outside: Traffic | null;
  /** Server and client PUT counts over the phases, where both exist. */
  check: { server: number | null; client: number | null; agree: boolean | null; note: string };
}

/** The figures a phase row shows, from what was counted. */
export function phaseRow(
  name: string,
  userBytes: number,
  wallMs: number,
  server: Traffic | null,
  client: ClientCount | null,
  detail?: Record<string, number>,
): PhaseRow {
  const puts = server ? server.puts : (client?.puts ?? 0);
  const uploadedBytes = server ? server.uploadedBytes : (client?.uploadedBytes ?? 0);
  const gets = server ? server.gets : (client?.gets ?? null);
  return {
    name,
    userBytes,
    wallMs: Math.round(wallMs),
    server,
    client,
    puts,
    uploadedBytes,
    gets,
    amplification: userBytes > 0 ? uploadedBytes / userBytes : 0,
    ...(detail ? { detail: Object.fromEntries(Object.entries(detail).map(([k, v]) => [k, Math.round(v)])) } : {}),
  };
}

/** The sum of the phases (amplification recomputed from the sums); client sums over the phases it counted. */
export function totalOf(phases: PhaseRow[]): PhaseRow {
  const server = phases.every((p) => p.server) ? phases.reduce((a, p) => addTraffic(a, p.server!), ZERO) : null;
  const counted = phases.filter((p) => p.client);
  const client = counted.length
    ? counted.reduce<ClientCount>(
        (a, p) => ({
          puts: a.puts + p.client!.puts,
          uploadedBytes: a.uploadedBytes === null || p.client!.uploadedBytes === null ? null : a.uploadedBytes + p.client!.uploadedBytes,
          ...(a.gets !== undefined && p.client!.gets !== undefined ? { gets: a.gets + p.client!.gets } : {}),
        }),
        { puts: 0, uploadedBytes: 0 as number | null, ...(counted.every((p) => p.client!.gets !== undefined) ? { gets: 0 } : {}) },
      )
    : null;
  const userBytes = phases.reduce((a, p) => a + p.userBytes, 0);
  const wallMs = phases.reduce((a, p) => a + p.wallMs, 0);
  return phaseRow('total', userBytes, wallMs, server, client);
}

/** Compares the server's and the client's PUT counts over the phases that both counted. */
export function crossCheck(phases: PhaseRow[], clientName: string): SystemRow['check'] {
  const both = phases.filter((p) => p.server && p.client);
  const anyServer = phases.some((p) => p.server);
  const anyClient = phases.some((p) => p.client);
  if (!anyServer && !anyClient) return { server: null, client: null, agree: null, note: 'nothing counted' };
  if (!anyServer) return { server: null, client: totalOf(phases).client?.puts ?? null, agree: null, note: `not a MinIO store: ${clientName}'s own counters only` };
  if (!both.length) return { server: totalOf(phases).server?.puts ?? null, client: null, agree: null, note: `${clientName} keeps no PUT counter: MinIO only` };
  const server = both.reduce((a, p) => a + p.server!.puts, 0);
  const client = both.reduce((a, p) => a + p.client!.puts, 0);
  const agree = server === client;
  const over = both.length === phases.length ? '' : ` (over the ${both.length} phases ${clientName} counted)`;
  const bad = both.filter((p) => p.server!.puts !== p.client!.puts).map((p) => `${p.name}: ${p.client!.puts} vs ${p.server!.puts}`);
  return {
    server,
    client,
    agree,
    note: agree
      ? `${clientName} and MinIO agree${over}`
      : `${clientName} counted ${client} PUTs, MinIO ${server}${over}; ${bad.slice(0, 4).join(', ')}`,
  };
}

/** A row that did not run (missing toolchain, or it failed). */
export function notRun(base: Pick<SystemRow, 'id' | 'label' | 'version' | 'config' | 'writers' | 'store'>, status: 'skipped' | 'failed', reason: string): SystemRow {
  return { ...base, status, reason, phases: [], total: null, outside: null, check: { server: null, client: null, agree: null, note: reason } };
}
