/**
 * What the use cases do when the store fails: tell a failure worth retrying (the store is down,
 * busy, full, restarting) from one that retrying cannot fix (this data is refused), wait with
 * backoff and jitter between attempts, and log an outage once when it starts, at most every 30 s
 * while it lasts, and once when it ends, instead of once per failed attempt.
 */
import type { Logger } from "../provider.js";

/**
 * SQLite result codes (better-sqlite3 puts them in `err.code`) and PostgreSQL SQLSTATE classes that
 * mean "this data is refused": retrying the same rows fails the same way. Everything else (no
 * connection, a busy or full database, I/O errors, a restarting server, a dead worker thread) is
 * taken as transient and retried until the store comes back, because dropping data on an error we
 * do not know is worse than holding it.
 */
const PERMANENT_SQLITE = /^SQLITE_(CONSTRAINT|MISMATCH|TOOBIG|RANGE)/;
/** 22 data exception (bad value, invalid text, out of range), 23 integrity violation, 54 program limit exceeded. */
const PERMANENT_SQLSTATE_CLASSES = new Set(["22", "23", "54"]);

/** Whether retrying the same call with the same data cannot succeed (the data itself is refused). */
export function isPermanentStoreError(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") {
    if (PERMANENT_SQLITE.test(code)) return true;
    if (/^[0-9A-Z]{5}$/.test(code) && PERMANENT_SQLSTATE_CLASSES.has(code.slice(0, 2))) return true;
  }
  // Thrown by our own code on data it cannot convert (a payload that is not bytes, a value that
  // cannot be cloned to the SQLite thread): the same data would fail again.
  const name = (err as { name?: unknown }).name;
  return name === "TypeError" || name === "RangeError" || name === "DataCloneError";
}

/** A short description of an error for logs: message plus code when there is one. */
export function errorText(err: unknown): string {
  if (err instanceof Error || (typeof err === "object" && err !== null && "message" in err)) {
    const e = err as { message: string; code?: unknown };
    return typeof e.code === "string" && !e.message.includes(e.code) ? `${e.message} (${e.code})` : e.message;
  }
  return String(err);
}

/** Backoff settings. */
export interface BackoffOptions {
  /** First pause, in ms. Default 100. */
  readonly minMs?: number;
  /** Longest pause, in ms. Default 5000. */
  readonly maxMs?: number;
  /** Random numbers in [0, 1) for the jitter. Default `Math.random`. */
  readonly random?: () => number;
}

/**
 * The pause before attempt number `attempt` (0-based), without jitter: `minMs` doubled per
 * attempt, at most `maxMs`. For restarts of this process's own threads, where no other instance
 * comes back at the same instant.
 */
export function exponentialDelay(attempt: number, options: Omit<BackoffOptions, "random"> = {}): number {
  return Math.min(options.maxMs ?? 5000, (options.minMs ?? 100) * 2 ** Math.min(attempt, 30));
}

/**
 * The pause before retry number `attempt` (0-based): {@link exponentialDelay} with "equal jitter"
 * (half fixed, half random), so instances that lost the same database do not all come back at the
 * same instant and the pause never collapses to zero.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}): number {
  const exp = exponentialDelay(attempt, options);
  return Math.round(exp / 2 + ((options.random ?? Math.random)() * exp) / 2);
}

/** Resolves after `ms`, or at once when `signal` aborts (a close that stopped waiting). */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** Tracks one kind of write (`what`) through store outages and logs them without flooding. */
export interface OutageLog {
  /** A write failed with a transient error; logs at the start of an outage and every `everyMs`. */
  failed(err: unknown, details: () => Record<string, unknown>): void;
  /** A write succeeded; logs the end of an outage, if one was going on. */
  succeeded(details?: () => Record<string, unknown>): void;
  /** Whether the last attempt failed. */
  readonly down: boolean;
  /** When the current outage started (ms since epoch), 0 when none. */
  readonly downSince: number;
  /** Failed attempts since start. */
  readonly failedAttempts: number;
  /** Outages seen since start. */
  readonly outages: number;
}

/** Creates an {@link OutageLog}; `logger` absent = log nothing (the counters still count). */
export function createOutageLog(what: string, logger: Logger | undefined, everyMs = 30_000, now: () => number = Date.now): OutageLog {
  let downSince = 0;
  let lastLog = 0;
  let attemptsThisOutage = 0;
  let failedAttempts = 0;
  let outages = 0;
  return {
    failed(err, details) {
      failedAttempts++;
      attemptsThisOutage++;
      const t = now();
      if (downSince === 0) {
        downSince = t;
        lastLog = t;
        outages++;
        logger?.error(
          { err: errorText(err), ...details() },
          `${what}: store write failed; holding the data and retrying until the store is back`,
        );
      } else if (t - lastLog >= everyMs) {
        lastLog = t;
        logger?.error(
          { err: errorText(err), downForMs: t - downSince, attempts: attemptsThisOutage, ...details() },
          `${what}: store still failing; holding the data and retrying`,
        );
      }
    },
    succeeded(details) {
      if (downSince === 0) return;
      logger?.warn({ downForMs: now() - downSince, attempts: attemptsThisOutage, ...details?.() }, `${what}: store writes succeed again`);
      downSince = 0;
      attemptsThisOutage = 0;
    },
    get down() {
      return downSince !== 0;
    },
    get downSince() {
      return downSince;
    },
    get failedAttempts() {
      return failedAttempts;
    },
    get outages() {
      return outages;
    },
  };
}

/**
 * Counts data lost to a bound and logs it: the first loss at once, then a summary at most every
 * `everyMs` with how many were lost since the previous line and in total.
 */
export interface LossLog {
  lost(n: number, details: () => Record<string, unknown>): void;
  readonly total: number;
}

/** Creates a {@link LossLog}. */
export function createLossLog(message: string, logger: Logger | undefined, everyMs = 10_000, now: () => number = Date.now): LossLog {
  let total = 0;
  let sinceLog = 0;
  let lastLog = -Infinity;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let pendingDetails: (() => Record<string, unknown>) | undefined;
  const emit = (details: () => Record<string, unknown>) => {
    lastLog = now();
    logger?.error({ lost: sinceLog, lostTotal: total, ...details() }, message);
    sinceLog = 0;
  };
  return {
    lost(n, details) {
      total += n;
      sinceLog += n;
      if (now() - lastLog >= everyMs) {
        emit(details);
        return;
      }
      // Losses inside the quiet period are reported together when it ends.
      pendingDetails = details;
      if (!timer) {
        timer = setTimeout(
          () => {
            timer = undefined;
            if (sinceLog > 0) emit(pendingDetails ?? details);
          },
          Math.max(0, everyMs - (now() - lastLog)),
        );
        timer.unref?.();
      }
    },
    get total() {
      return total;
    },
  };
}

/** The logger used when a use case is given none: warnings and errors as JSON lines on stderr. */
export const stderrLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: "warn", time: Date.now(), ...obj, msg })}\n`),
  error: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: "error", time: Date.now(), ...obj, msg })}\n`),
};
