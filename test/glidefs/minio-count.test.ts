// Goal: the PUTs the client counts (block uploads + log records) equal the PUTs MinIO itself counted (Prometheus metrics), on a private MinIO.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BLOCK_SIZE, GlideFs, S3Store } from '../../glidefs/index.js';
import { minioPutCount, startMinio, type MinioServer } from '../../scripts/lib/minio.js';
import { blockOf } from './block-data.js';

let server: MinioServer;
const root = mkdtempSync(join(tmpdir(), 'glidefs-minio-count-'));
beforeAll(async () => {
  server = await startMinio({ bucket: 'count' });
});
afterAll(async () => {
  await server?.stop();
  rmSync(root, { recursive: true, force: true });
});

/**
 * MinIO's PUT counter once it has caught up (its metrics lag): waits until it
 * moved at least `atLeast` past `base` (or 30 s pass), then reads it again
 * after a pause so any extra PUTs would show.
 */
async function settledPutCount(base: number, atLeast: number): Promise<number> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && (await minioPutCount(server.endpoint)) - base < atLeast) {
    await new Promise((r) => setTimeout(r, 250));
  }
  await new Promise((r) => setTimeout(r, 1500));
  return minioPutCount(server.endpoint);
}

it('client-counted uploads == MinIO PUT count delta', async () => {
  const store = new S3Store({
    bucket: server.bucket,
    prefix: 'vols',
    endpoint: server.endpoint,
    region: server.region,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
  });
  // a lease long enough that no renewal lands between reading the counts and MinIO's (renewals are counted: lease.test.ts)
  const fs = await GlideFs.open({ store, catalogPath: join(root, 'c.db'), cacheDir: join(root, 'cache'), leaseMs: 600_000 });
  await fs.createVolume('v', 64 * BLOCK_SIZE);
  const v = await fs.openVolume('v');
  await new Promise((r) => setTimeout(r, 1500));
  const before = await minioPutCount(server.endpoint);
  const { logPuts: logBefore, leasePuts: leaseBefore } = fs.stats('v'); // the create record, the lease taken at open
  for (let i = 0; i < 40; i++) await v.write(i * BLOCK_SIZE, blockOf(i + 1));
  await v.write(50 * BLOCK_SIZE, Buffer.alloc(BLOCK_SIZE)); // a hole: no PUT
  let r = await v.flush(); // 40 block objects + 1 log record
  expect(r).toMatchObject({ uploads: 40, logPuts: 1 });
  for (let i = 0; i < 10; i++) await v.write(i * BLOCK_SIZE, blockOf(i + 1)); // unchanged: no PUT
  for (let i = 10; i < 15; i++) await v.write(i * BLOCK_SIZE + 4096, Buffer.from('changed')); // 5 blocks' sectors
  r = await v.flush();
  expect(r).toMatchObject({ uploads: 0, loggedBlocks: 5, logPuts: 1 }); // one log record, no block object
  // the source is checkpointed first (its 5 logged blocks folded into block objects, + the
  // checkpoint record), then the fork's first record: no block object of the fork's own
  await fs.fork('v', 'w');
  const s = fs.stats('v');
  const w = fs.stats('w');
  expect(s).toMatchObject({ uploads: 45, checkpointUploads: 5 });
  expect(w).toMatchObject({ uploads: 0, logPuts: 1 });
  const client = s.uploads + s.logPuts - logBefore + s.leasePuts - leaseBefore + w.uploads + w.logPuts + w.leasePuts;
  const after = await settledPutCount(before, client);
  expect(after - before).toBe(client);
  await fs.close();
  await store.close();
});
