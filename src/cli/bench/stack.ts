/**
 * What the re-upload bench needs of a running stack (`glidekv up`), behind
 * one small interface so the runner reads as the experiment it is. The real
 * implementation drives the `glidekv` command line as child processes
 * (stack-cli.ts); the daemons are other processes, so this process may do
 * file I/O on their mounts.
 */

/** glidefs counters of one volume (`glidekv volume stats --json`). */
export interface VolumeCounters {
  /** Block objects PUT (flushes of blocks rewritten whole, checkpoint folds). */
  uploads: number;
  uploadedBytes: number;
  reuploads: number;
  /** Log records PUT (create/fork, flushes, checkpoints) and their bytes. */
  logPuts: number;
  logBytes: number;
  /** Block uploads made by checkpoints (part of `uploads`). */
  checkpointUploads: number;
  /** PUTs of the volume's lease object (acquire, renewals every 10 s, release). */
  leasePuts?: number;
}

export interface VolumeSnapshot extends VolumeCounters {
  perOffset: Array<{ blockIndex: number; uploads: number }>;
}

export interface UpOptions {
  volume: string;
  mountpoint: string;
  stateDir: string;
  /** Object store URL for this volume family. */
  store: string;
  sizeBytes: number;
  /** Engine value threshold; undefined = the default. */
  valueThreshold?: number;
  /** Device fsync mode (`glidekv up --fsync`); undefined = the default ('upload'). */
  fsync?: 'upload' | 'local';
  /** Extra environment for the children (S3 credentials). */
  env: Record<string, string>;
}

export interface Stack {
  readonly volume: string;
  /** The KV mount: `/<ns>/<key>` files. */
  readonly mountpoint: string;
  /** The engine's data directory, on the ext4 (to locate value bytes). */
  readonly dataDir: string;
  /** Engine sync: everything acknowledged is fsynced. */
  sync(): Promise<void>;
  /** Engine reclaim (compaction), waits until it finished. */
  reclaim(): Promise<void>;
  /** Makes glidefs upload everything written so far (ext4 settled, volume flushed). */
  flush(): Promise<void>;
  /** The volume's glidefs counters and its uploads per block offset. */
  snapshot(): Promise<VolumeSnapshot>;
  /** Live fork of this volume to `name` (the stack stays up). */
  fork(name: string): Promise<void>;
  down(): Promise<void>;
}

export interface StackDriver {
  up(opts: UpOptions): Promise<Stack>;
  /** Counters of a volume whose stack is down (read from its catalog). */
  snapshot(opts: UpOptions): Promise<VolumeSnapshot>;
}
