/**
 * glidefs: the block layer's public API (volumes over an object store with a
 * local write-back cache and a SQLite catalog). Formats: FORMAT.md.
 */
export { GlideFs, type GlideFsOptions, type VolumeInfo, type VolumeStats, type GcResult } from './glidefs.js';
export type { Volume, FlushResult, FlushOptions, FlushProgress, CheckpointPolicy } from './volume.js';
export { DEFAULT_CHECKPOINT_POLICY } from './volume.js';
export type { CheckpointResult } from './checkpoint.js';
export { restoreCatalog, type RestoreResult } from './restore.js';
export { BLOCK_SIZE, blockKey, blockHash, parseBlockKey } from './block-key.js';
export { GlideFsError, isGlideFsError } from './errors.js';
export type { ObjectStore } from './object-store.js';
export { openStore, checkStore, probe, type OpenStoreOptions } from './store-url.js';
export { MemoryStore } from './memory-store.js';
export { DirStore, type DirStoreOptions } from './dir-store.js';
export { S3Store, type S3StoreOptions } from './s3-store.js';
export { RetryStore, type RetryOptions, type RetryStats } from './retry-store.js';
export { FaultyStore, type FaultyStoreOptions, type FaultyStats } from './faulty-store.js';
export { CountingStore, type CountingStats } from './counting-store.js';
