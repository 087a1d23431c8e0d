/**
 * One MinIO server for the whole test run, on a free loopback port with a
 * temporary data directory; tests read its address with
 * `inject('minio')` and make their own buckets or prefixes in it.
 * The server is stopped (and its data removed) when the run ends, also when
 * tests fail.
 */
import type { TestProject } from 'vitest/node';
import { startMinio, type MinioServer } from '../scripts/lib/minio.js';

export interface ProvidedMinio {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  bucket: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    minio: ProvidedMinio;
  }
}

let server: MinioServer | undefined;

export default async function setup(project: TestProject) {
  server = await startMinio({ bucket: 'glidekv-test' });
  project.provide('minio', {
    endpoint: server.endpoint,
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
    region: server.region,
    bucket: server.bucket,
  });
  return async () => {
    await server?.stop();
  };
}
