// Goal: the memory, directory and S3 (MinIO) stores all pass the one ObjectStore conformance suite.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inject } from 'vitest';
import { CountingStore } from '../../glidefs/counting-store.js';
import { DirStore } from '../../glidefs/dir-store.js';
import { FaultyStore } from '../../glidefs/faulty-store.js';
import { MemoryStore } from '../../glidefs/memory-store.js';
import { S3Store } from '../../glidefs/s3-store.js';
import { objectStoreSuite } from '../conformance/object-store.suite.js';

objectStoreSuite('MemoryStore', async () => ({ store: new MemoryStore() }));

// the wrapping layers pass every operation through, putIfAbsent included
objectStoreSuite('CountingStore over MemoryStore', async () => ({ store: new CountingStore(new MemoryStore()) }));
objectStoreSuite('FaultyStore (no faults) over MemoryStore', async () => ({ store: new FaultyStore(new MemoryStore(), { seed: 1 }) }));

objectStoreSuite('DirStore', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'glidefs-dirstore-'));
  return { store: new DirStore(dir), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

objectStoreSuite(
  'S3Store (MinIO)',
  async () => {
    const m = inject('minio');
    const prefix = `conformance/${randomBytes(6).toString('hex')}`;
    const store = new S3Store({
      bucket: m.bucket,
      prefix,
      endpoint: m.endpoint,
      region: m.region,
      credentials: { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey },
    });
    return { store };
  },
  { manyKeys: 1100 },
);
