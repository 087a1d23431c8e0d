/**
 * `glidekv kv watch`: follows an engine watch and prints one JSON line per
 * event, `{type, key, revision, value?}` (key/value as UTF-8 when valid, else
 * base64 with `keyEncoding`/`valueEncoding: "base64"`).
 *
 * Ends cleanly (exit 0, watch closed, DIR unlocked) on SIGINT, SIGTERM, after
 * `count` events, or when stdout is closed by the reader (EPIPE, `| head`).
 * An engine error (E_COMPACTED, E_LAGGED, ...) propagates to the caller.
 */
import type { Engine } from '../index.js';
import { putBytes } from './kv-codec.js';

type Selector = { key: Buffer } | { prefix: Buffer };

export async function runWatch(
  engine: Engine,
  ns: string,
  sel: Selector,
  opts: { fromRevision?: number; count?: number },
): Promise<void> {
  const w = engine.watch(ns, sel, opts.fromRevision !== undefined ? { fromRevision: opts.fromRevision } : undefined);
  const it = w[Symbol.asyncIterator]();
  let stop!: () => void;
  const stopped = new Promise<IteratorResult<never>>((resolve) => {
    stop = () => resolve({ done: true, value: undefined as never });
  });
  const onSignal = (): void => stop();
  const onStdoutError = (err: NodeJS.ErrnoException): void => {
    if (err.code === 'EPIPE') stop();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.stdout.on('error', onStdoutError);
  // A watch waiting for events holds no handle of its own: keep the process alive until stopped.
  const keepAlive = setInterval(() => {}, 1 << 30);
  let n = 0;
  try {
    for (;;) {
      const r = await Promise.race([it.next(), stopped]);
      if (r.done) break;
      const ev = r.value;
      const rec: Record<string, unknown> = { type: ev.type };
      putBytes(rec, 'key', ev.key);
      rec.revision = ev.revision;
      if (ev.value !== undefined) putBytes(rec, 'value', ev.value);
      process.stdout.write(JSON.stringify(rec) + '\n');
      if (opts.count !== undefined && ++n >= opts.count) break;
    }
  } finally {
    clearInterval(keepAlive);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.stdout.off('error', onStdoutError);
    w.close();
  }
}
