/**
 * Per-bucket request and byte counters read from MinIO's own Prometheus
 * metrics, for the peers benchmark: every system writes to a bucket of its
 * own, so a bucket's counters are that system's traffic.
 *
 * The pinned MinIO (scripts/minio.version) serves two sets of bucket metrics:
 *   - v2 `/minio/v2/metrics/bucket` (`minio_bucket_requests_total{api=...}`,
 *     `minio_bucket_traffic_received_bytes`): cached, it lags by about 10 s;
 *   - v3 `/minio/metrics/v3/bucket/api/<bucket>`
 *     (`minio_bucket_api_total{name="PutObject",...}`,
 *     `minio_bucket_api_traffic_{sent,received}_bytes`): live.
 * We read v3. In this build the two v3 traffic names are swapped (the request
 * bodies MinIO received show up as `..._sent_bytes`), so which of the two
 * counts uploaded bytes is found once per run by `calibrate()`: PUT an object
 * of a known size into a bucket of its own and see which counter grew by it.
 *
 * The servers need MINIO_PROMETHEUS_AUTH_TYPE=public (scripts/lib/minio.ts
 * sets it). The page is parsed by the project's one Prometheus parser
 * (src/cli/bench/minio-metrics.ts).
 */
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { readMinioMetrics, sumMetric } from '../../../src/cli/bench/minio-metrics.js';
import { makeBucket, s3ClientOf, type MinioServer } from '../minio.js';

/** One bucket's counters at one instant (all monotonic). */
export interface BucketCounters {
  /** Requests by S3 API name (PutObject, GetObject, HeadObject, ListObjectsV2, ...). */
  requests: Record<string, number>;
  /** Bytes of request bodies MinIO received for the bucket (uploads). */
  bytesIn: number;
  /** Bytes of response bodies MinIO sent for the bucket (downloads). */
  bytesOut: number;
}

/** Counters of one interval: `after - before`. */
export interface Traffic {
  /** Object uploads: PutObject + PutObjectPart + CopyObject requests. */
  puts: number;
  /** Object downloads: GetObject requests. */
  gets: number;
  /** Bytes of request bodies MinIO received (what was uploaded). */
  uploadedBytes: number;
  downloadedBytes: number;
  /** Every S3 API with a non-zero count in the interval. */
  requests: Record<string, number>;
}

/** The S3 APIs that upload object bytes. */
export const PUT_APIS = ['PutObject', 'PutObjectPart', 'CopyObject', 'CopyObjectPart'];
export const GET_APIS = ['GetObject'];

export const ZERO: Traffic = { puts: 0, gets: 0, uploadedBytes: 0, downloadedBytes: 0, requests: {} };

export class MinioCounters {
  /** Which v3 traffic counter holds uploaded bytes (see calibrate()). */
  private inName = 'minio_bucket_api_traffic_received_bytes';
  private outName = 'minio_bucket_api_traffic_sent_bytes';

  constructor(private readonly endpoint: string) {}

  async read(bucket: string): Promise<BucketCounters> {
    const samples = await readMinioMetrics(this.endpoint, `/minio/metrics/v3/bucket/api/${encodeURIComponent(bucket)}`);
    const c: BucketCounters = { requests: {}, bytesIn: sumMetric(samples, this.inName, { bucket }), bytesOut: sumMetric(samples, this.outName, { bucket }) };
    for (const s of samples) {
      if (s.name === 'minio_bucket_api_total' && s.labels.bucket === bucket) c.requests[s.labels.name] = (c.requests[s.labels.name] ?? 0) + s.value;
    }
    return c;
  }

  /**
   * Finds which traffic counter counts uploaded bytes: PUTs an object of an
   * odd size into `bucket` (created here) and GETs it back.
   */
  async calibrate(m: MinioServer, bucket: string): Promise<string> {
    await makeBucket(m, bucket);
    const s3 = s3ClientOf(m);
    const size = 123_457;
    try {
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: 'calibrate', Body: Buffer.alloc(size, 1) }));
      await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: 'calibrate', Range: 'bytes=0-9' }))).Body!.transformToByteArray();
    } finally {
      s3.destroy();
    }
    const samples = await readMinioMetrics(this.endpoint, `/minio/metrics/v3/bucket/api/${encodeURIComponent(bucket)}`);
    const sent = sumMetric(samples, 'minio_bucket_api_traffic_sent_bytes', { bucket });
    const received = sumMetric(samples, 'minio_bucket_api_traffic_received_bytes', { bucket });
    const puts = sumMetric(samples, 'minio_bucket_api_total', { bucket, name: 'PutObject' });
    if (puts !== 1) throw new Error(`MinIO's v3 bucket metrics do not count requests (PutObject = ${puts}); is MINIO_PROMETHEUS_AUTH_TYPE=public set?`);
    if (received === size) {
      this.inName = 'minio_bucket_api_traffic_received_bytes';
      this.outName = 'minio_bucket_api_traffic_sent_bytes';
      return 'traffic_received_bytes counts uploads';
    }
    if (sent === size) {
      this.inName = 'minio_bucket_api_traffic_sent_bytes';
      this.outName = 'minio_bucket_api_traffic_received_bytes';
      return 'traffic_sent_bytes counts uploads (the v3 names are swapped in this MinIO build)';
    }
    throw new Error(`MinIO's bucket traffic counters do not show a ${size}-byte PUT (sent ${sent}, received ${received})`);
  }
}

/** The traffic between two readings of one bucket. */
export function diff(before: BucketCounters, after: BucketCounters): Traffic {
  const requests: Record<string, number> = {};
  for (const [api, n] of Object.entries(after.requests)) {
    const d = n - (before.requests[api] ?? 0);
    if (d > 0) requests[api] = d;
  }
  const sum = (apis: string[]) => apis.reduce((a, api) => a + (requests[api] ?? 0), 0);
  return {
    puts: sum(PUT_APIS),
    gets: sum(GET_APIS),
    uploadedBytes: after.bytesIn - before.bytesIn,
    downloadedBytes: after.bytesOut - before.bytesOut,
    requests,
  };
}

export function addTraffic(a: Traffic, b: Traffic): Traffic {
  const requests: Record<string, number> = { ...a.requests };
  for (const [api, n] of Object.entries(b.requests)) requests[api] = (requests[api] ?? 0) + n;
  return {
    puts: a.puts + b.puts,
    gets: a.gets + b.gets,
    uploadedBytes: a.uploadedBytes + b.uploadedBytes,
    downloadedBytes: a.downloadedBytes + b.downloadedBytes,
    requests,
  };
}

/** `a - b`, field by field (for the traffic outside the phases). */
export function subTraffic(a: Traffic, b: Traffic): Traffic {
  const requests: Record<string, number> = {};
  for (const [api, n] of Object.entries(a.requests)) {
    const d = n - (b.requests[api] ?? 0);
    if (d !== 0) requests[api] = d;
  }
  return {
    puts: a.puts - b.puts,
    gets: a.gets - b.gets,
    uploadedBytes: a.uploadedBytes - b.uploadedBytes,
    downloadedBytes: a.downloadedBytes - b.downloadedBytes,
    requests,
  };
}
