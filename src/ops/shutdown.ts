/**
 * How `emqx-exhook serve` stops on SIGTERM/SIGINT: drain, close the provider, flush the logs, exit,
 * and never take longer than the drain timeout, whatever hangs.
 *
 * The budget: in-flight calls get the drain timeout minus a closing share (a fifth of it, at most
 * 1 s); the provider's `close()` and the log flush get that share; at the drain timeout the process
 * ends with exit code 1, skipping `exit` handlers (one of them may be what hangs).
 *
 * What used to hang: with stdout a closed pipe (`serve … | head -1`), pino's exit handler flushes
 * synchronously and its flush retries EPIPE forever. Here the logs are flushed asynchronously
 * before `process.exit` (a write on a broken pipe then fails once and pino stops writing), and
 * EPIPE on process.stdout/stderr is ignored rather than thrown.
 */
import type { Logger } from "../provider.js";

/** What {@link installShutdown} stops. */
export interface ShutdownOptions {
  /** Drains and closes the server within `graceMs`. */
  readonly closeServer: (graceMs: number) => Promise<void>;
  /** Closes what the provider owns (stores, queues); optional. */
  readonly closeProvider?: (() => Promise<void>) | undefined;
  readonly logger: Logger & { flush?: (cb?: (err?: Error) => void) => void };
  /** The whole shutdown's bound in ms. */
  readonly drainTimeoutMs: number;
  /** Whether SIGINT starts it too (workers of `--workers` ignore it: the primary sends SIGTERM). Default true. */
  readonly onSigint?: boolean;
}

/** Ignores write errors on stdout/stderr (a closed pipe): logging must never end the process. */
export function ignoreBrokenStdio(): void {
  for (const s of [process.stdout, process.stderr]) {
    if (s.listenerCount("error") === 0) s.on("error", () => {});
  }
}

/** The closing share of the budget: a fifth of it, at most 1 s. */
export function closingShare(drainTimeoutMs: number): number {
  return Math.min(1000, Math.floor(drainTimeoutMs / 5));
}

/** Ends the process now with `code`, skipping `exit` handlers (the hard deadline's way out). */
export function hardExit(code: number): never {
  const reallyExit = (process as unknown as { reallyExit?: (code: number) => never }).reallyExit;
  if (typeof reallyExit === "function") reallyExit.call(process, code);
  process.kill(process.pid, "SIGKILL");
  throw new Error("unreachable");
}

/** Installs the SIGTERM/SIGINT handlers; a second signal while stopping exits at once (code 1). */
export function installShutdown(options: ShutdownOptions): { stop(signal: string): void } {
  const { logger, drainTimeoutMs } = options;
  ignoreBrokenStdio();
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) hardExit(1);
    stopping = true;
    const deadline = setTimeout(() => {
      try {
        process.stderr.write(`emqx-exhook: shutdown did not finish within --drain-timeout ${drainTimeoutMs} ms; exiting\n`);
      } catch {
        // stderr may be gone too
      }
      hardExit(1);
    }, drainTimeoutMs);
    // Not unref'd: a close() that never settles leaves nothing else to keep the loop alive, and
    // Node would then end the process with code 0 as if all went well.
    void deadline;
    const share = closingShare(drainTimeoutMs);
    logger.info({ signal, drainTimeoutMs }, "draining: no new connections, finishing in-flight calls");
    options
      .closeServer(drainTimeoutMs - share)
      .then(
        async () => {
          // Providers owning resources (the use-case stack: queued messages, the store) close last.
          await options.closeProvider?.().catch((err: unknown) => logger.error({ err: (err as Error).message }, "provider close failed"));
          logger.info({ signal }, "drained, exiting");
          return 0;
        },
        (err: unknown) => {
          logger.error({ err: (err as Error).message }, "drain failed");
          return 1;
        },
      )
      .then(async (code) => {
        // Flushed: exit normally. Not flushed in time (a log pipe nobody reads): pino's own exit
        // handler would then retry synchronously forever, so exit without exit handlers.
        if (await flushLogs(logger, share)) process.exit(code);
        hardExit(code);
      });
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => (options.onSigint === false ? undefined : stop("SIGINT")));
  return { stop };
}

/** Waits (at most `boundMs`) until the logger has written what it buffered; false if it did not. */
function flushLogs(logger: ShutdownOptions["logger"], boundMs: number): Promise<boolean> {
  if (typeof logger.flush !== "function") return Promise.resolve(true);
  return new Promise((resolve) => {
    const guard = setTimeout(() => resolve(false), Math.max(50, boundMs));
    try {
      logger.flush?.((err) => {
        clearTimeout(guard);
        resolve(err === undefined || err === null);
      });
    } catch {
      clearTimeout(guard);
      resolve(false);
    }
  });
}
