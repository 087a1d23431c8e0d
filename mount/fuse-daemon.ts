/**
 * The life of a foreground FUSE daemon, one for both (`glidekv device mount`,
 * `glidekv kv mount`):
 *
 *   start()            -> prints its ready line on stdout (what `up` waits for)
 *   SIGINT / SIGTERM   -> stop('') once (unmount, flush or commit, close);
 *                         one line `<SIG> received: <stopping>` on stderr
 *   a second signal while stopping -> logged, ignored (the flush must finish)
 *   a signal during start -> start may see `ctx.stopRequested` and return
 *                         undefined (nothing to stop: exit 0), else the
 *                         daemon stops right after it is ready (no ready line)
 *   the mount disappears (`fusermount -u` from outside; handle.mountpoint
 *                         set) -> stop('the mount went away')
 *   SIGUSR1 / SIGUSR2  -> handle.signals[sig](), one at a time, never while
 *                         stopping; a signal before the daemon is ready waits
 *                         for it (never kills it); a signal the daemon has no
 *                         use for is logged and ignored; SIGHUP is ignored
 *   exit status: 0 after a clean stop; 1 when stop() throws or resolves
 *   false (e.g. a commit was lost); a failed start prints one line
 *   `glidekv: <message>` on stderr and exits with the error's `exitCode`
 *   (CliError: 2 for usage) or 1.
 *
 * The process exits explicitly: fuse-native keeps a libuv handle that would
 * hold the event loop open after the unmount.
 */
import { closeSync, openSync } from 'node:fs';
import { mountAt } from './mountinfo.js';

/**
 * File descriptors held back while the daemon serves and given up when it
 * stops: a daemon that reached its open-file limit (ulimit -n; its operations
 * then fail with EMFILE) can still start the unmount (a worker thread, a
 * fusermount child and its pipes) and its last flush.
 */
const RESERVE_FDS = 16;

export type MaintenanceSignal = 'SIGUSR1' | 'SIGUSR2';

export interface DaemonHandle {
  /** One line printed on stdout once the daemon serves. */
  readyLine: string;
  /**
   * Graceful stop: unmount, flush or commit, close. `why` is '' for a signal,
   * else the reason ('the mount went away'). `maintenance` settles once the
   * signal work already running is done (wait for it before closing what it
   * uses). Resolving `false` means the stop finished but lost something
   * (exit 1); throwing too.
   */
  stop(why: string, maintenance: Promise<void>): Promise<void | boolean>;
  /** Watched once a second when set: if it is no longer a mount point, the daemon stops. */
  mountpoint?: string;
  /** Maintenance work on signals (their results are the handler's to print). */
  signals?: Partial<Record<MaintenanceSignal, () => Promise<unknown>>>;
  /** Called for a maintenance signal that cannot run because the daemon is stopping. */
  onSignalRefused?(signal: MaintenanceSignal): void;
}

export interface DaemonContext {
  /** A SIGINT/SIGTERM arrived during start. */
  readonly stopRequested: boolean;
}

export interface DaemonOptions {
  /** Prefix for log lines on stderr, e.g. 'glidekv'. */
  name: string;
  /** Redacts a log line (credentials). */
  redact?: (s: string) => string;
  /** What the stop does, for the `<SIG> received: ...` line (default 'stopping'). */
  stopping?: string;
  /** How often the mount point is checked (ms, default 1000). */
  watchMs?: number;
}

/**
 * Runs `start` and serves until a signal; never returns normally (the
 * process exits with 0 after a clean stop, 1 otherwise).
 */
export async function runDaemon(start: (ctx: DaemonContext) => Promise<DaemonHandle | undefined>, opts: DaemonOptions): Promise<never> {
  const redact = opts.redact ?? ((s: string) => s);
  const log = (line: string) => process.stderr.write(`${opts.name}: ${redact(line)}\n`);
  // Whoever started the daemon may stop reading its output; that must not take the mount down.
  process.stdout.on('error', () => {});
  process.stderr.on('error', () => {});
  let handle: DaemonHandle | undefined;
  let stopRequested = false;
  let stopping: Promise<void> | undefined;
  let watcher: NodeJS.Timeout | undefined;
  // Maintenance runs one at a time, after start, never once stopping began.
  let started!: () => void;
  let busy: Promise<unknown> = new Promise<void>((r) => (started = r));

  const exit = (code: number) => {
    if (watcher) clearInterval(watcher);
    process.exit(code);
  };
  let reserve: number[] = [];
  const stop = (why: string) => {
    stopRequested = true;
    if (!handle) return;
    for (const fd of reserve) closeSync(fd);
    reserve = [];
    const maintenance = busy.then(
      () => undefined,
      () => undefined,
    );
    stopping ??= Promise.resolve()
      .then(() => handle!.stop(why, maintenance))
      .then(
        (ok) => exit(ok === false ? 1 : 0),
        (err) => {
          log(`stop failed: ${(err as Error)?.message ?? String(err)}`.split('\n')[0]);
          exit(1);
        },
      );
  };
  const onStopSignal = (signal: NodeJS.Signals) => {
    if (stopRequested) {
      log(`${signal} received while stopping; still ${opts.stopping ?? 'stopping'}`);
      return;
    }
    stopRequested = true;
    log(`${signal} received: ${opts.stopping ?? 'stopping'}`);
    stop('');
  };
  const onMaintenance = (signal: MaintenanceSignal) => {
    busy = busy.then(async () => {
      const run = handle?.signals?.[signal];
      if (!handle) return; // start failed or gave up: exiting anyway
      if (!run) {
        log(`${signal} ignored`);
        return;
      }
      if (stopRequested) {
        handle.onSignalRefused?.(signal);
        return;
      }
      await run().catch((err) => log(`${signal}: ${(err as Error)?.message ?? String(err)}`.split('\n')[0]));
    });
  };
  process.on('SIGINT', () => onStopSignal('SIGINT'));
  process.on('SIGTERM', () => onStopSignal('SIGTERM'));
  process.on('SIGHUP', () => log('SIGHUP ignored'));
  process.on('SIGUSR1', () => onMaintenance('SIGUSR1'));
  process.on('SIGUSR2', () => onMaintenance('SIGUSR2'));

  try {
    handle = await start({
      get stopRequested() {
        return stopRequested;
      },
    });
  } catch (err) {
    log(((err as Error)?.message ?? String(err)).split('\n')[0]);
    const code = (err as { exitCode?: unknown })?.exitCode;
    exit(typeof code === 'number' && code > 0 ? code : 1);
    return new Promise<never>(() => {});
  }
  if (!handle) exit(0);
  try {
    for (let i = 0; i < RESERVE_FDS; i++) reserve.push(openSync('/dev/null', 'r'));
  } catch {
    // already short of fds: serve without a reserve
  }
  started();
  const h = handle!;
  if (stopRequested) {
    stop('');
  } else {
    process.stdout.write(h.readyLine + '\n');
    if (h.mountpoint) {
      const mnt = h.mountpoint;
      watcher = setInterval(() => {
        if (stopping) return;
        let gone: boolean;
        try {
          gone = !mountAt(mnt);
        } catch {
          // mountinfo unreadable right now (EMFILE at the open-file limit): no answer, not "gone";
          // an exception here would end the daemon and take its mount away.
          return;
        }
        if (gone) stop('the mount went away');
      }, opts.watchMs ?? 1000);
    }
  }
  return new Promise<never>(() => {});
}
