/**
 * PUT requests counted by a MinIO server itself, from its Prometheus v2
 * cluster metrics (`minio_s3_requests_total{api="putobject"}`, summed over
 * servers). The metrics must be readable without a token
 * (MINIO_PROMETHEUS_AUTH_TYPE=public, as scripts/lib/minio.ts starts it).
 *
 * `glidekv bench reupload --minio-metrics URL` compares these with the PUTs
 * glidefs counted; the product never starts a MinIO (scripts/ do).
 */
export async function minioPutCount(endpoint: string): Promise<number> {
  const res = await fetch(`${endpoint.replace(/\/+$/, '')}/minio/v2/metrics/cluster`);
  if (!res.ok) throw new Error(`MinIO metrics at ${endpoint}: HTTP ${res.status}`);
  const text = await res.text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('minio_s3_requests_total{') && line.includes('api="putobject"')) {
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return total;
}
