// glidekv's engine: the package's main export.
export { open, KvEngine, validateNamespaceName } from './engine.js';
export type {
  Engine, EngineOptions, EngineStats, SyncMode, BatchOp, KeyInput, ValueInput, ValueSeparator,
} from './engine.js';
export { KvError, isKvError } from './errors.js';
export type { KvErrorCode } from './errors.js';
export type { WatchEvent } from './watch.js';
export type { FileIo } from './file-io.js';
export { nodeFileIo } from './file-io.js';
export { BlobSeparator } from './value-separator.js';
export type { BlobSeparatorStats } from './value-separator.js';
