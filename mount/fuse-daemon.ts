/**
 * The life of a foreground FUSE daemon (`glidekv device mount`):
 *
 *   start()  -> prints one ready line on stdout
 *   SIGINT / SIGTERM -> stop() once (flush, unmount, close) -> exit 0
 *   a second signal while stopping -> logged, ignored (the flush must finish)
 *   stop() fails -> the error on stderr, exit 1
 *
 * The process exits explicitly: fuse-native keeps a libuv handle that would
 * hold the event loop open after the unmount.
 */
export interface DaemonHandle {
  /** One line printed on stdout once the daemon serves (what `up` waits for). */
  readyLine: string;
  /** Graceful stop: flush, unmount, close. */
  stop(): Promise<void>;
}

export interface DaemonOptions {
  /** Prefix for log lines on stderr, e.g. 'glidekv device'. */
  name: string;
  /** Redacts a log line (credentials). */
  redact?: (s: string) => string;
}

/**
 * Runs `start` and serves until a signal; never returns normally (the
 * process exits with 0 after a clean stop, 1 otherwise).
 */
export async function runDaemon(start: () => Promise<DaemonHandle>, opts: DaemonOptions): Promise<never> {
  const redact = opts.redact ?? ((s: string) => s);
  const log = (line: string) => process.stderr.write(`${opts.name}: ${redact(line)}\n`);
  let handle: DaemonHandle | undefined;
  let stopping = false;
  let pendingSignal: NodeJS.Signals | undefined;

  const stop = (signal: NodeJS.Signals) => {
    if (!handle) {
      pendingSignal = signal;
      return;
    }
    if (stopping) {
      log(`${signal} received while stopping; still flushing`);
      return;
    }
    stopping = true;
    log(`${signal} received: flushing and unmounting`);
    handle.stop().then(
      () => {
        log('stopped');
        process.exit(0);
      },
      (err) => {
        log(`stop failed: ${(err as Error)?.message ?? String(err)}`.split('\n')[0]);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGHUP', () => log('SIGHUP ignored'));

  try {
    handle = await start();
  } catch (err) {
    log((err as Error)?.message ?? String(err));
    process.exit(1);
  }
  process.stdout.write(handle.readyLine + '\n');
  if (pendingSignal) stop(pendingSignal);
  return new Promise<never>(() => {});
}
