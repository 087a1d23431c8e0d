/**
 * A MinIO server's own request counters, read from its Prometheus metrics:
 * the one parser of that text format in the project. The metrics must be
 * readable without a token (MINIO_PROMETHEUS_AUTH_TYPE=public, as
 * scripts/lib/minio.ts starts it).
 *
 * `glidekv bench reupload --minio-metrics URL` compares `minioPutCount` with
 * the PUTs glidefs counted; the scripts (scripts/lib/minio.ts and the peers
 * benchmark's per-bucket counters) read their pages with `parseMetrics` and
 * `sumMetric`. The product never starts a MinIO (scripts/ do).
 */

/** One sample of a Prometheus text page: `name{label="value",...} value`. */
export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the `name{labels} value` lines of a Prometheus text page (comments and blank lines skipped). */
export function parseMetrics(text: string): MetricSample[] {
  const out: MetricSample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of the samples named `name` whose labels include every pair of `match` (e.g. summed over servers). */
export function sumMetric(samples: readonly MetricSample[], name: string, match: Record<string, string> = {}): number {
  let total = 0;
  for (const s of samples) {
    if (s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)) total += s.value;
  }
  return total;
}

/** GETs a metrics page of the MinIO at `endpoint` (http://HOST:PORT) and parses it. */
export async function readMinioMetrics(endpoint: string, path: string): Promise<MetricSample[]> {
  const res = await fetch(`${endpoint.replace(/\/+$/, '')}${path}`);
  if (!res.ok) throw new Error(`MinIO metrics at ${endpoint}${path}: HTTP ${res.status}`);
  return parseMetrics(await res.text());
}

/**
 * PUT requests counted by the server, all buckets: its v2 cluster metrics,
 * `minio_s3_requests_total{api="putobject"}` summed over servers.
 */
export async function minioPutCount(endpoint: string): Promise<number> {
  return sumMetric(await readMinioMetrics(endpoint, '/minio/v2/metrics/cluster'), 'minio_s3_requests_total', { api: 'putobject' });
}
