/**
 * Structured logs with pino: JSON lines (one object per event) for log collectors, pretty
 * output when stdout is a terminal, and secrets redacted: a client's password and a message's
 * payload never reach the logs unless explicitly asked for.
 */
import pino, { type DestinationStream, type Level, type Logger as PinoLogger } from "pino";
import { performance } from "node:perf_hooks";
import { ownRequire } from "../own-location.js";
import type { HookMiddleware } from "../provider.js";

/** Log levels accepted by {@link createLogger}. */
export const LOG_LEVELS: readonly string[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** Paths whose values are replaced by `"[redacted]"`, wherever a request is logged. */
export const REDACT_PASSWORD_PATHS: readonly string[] = [
  "password",
  "clientinfo.password",
  "*.clientinfo.password",
  "request.clientinfo.password",
];
/** Payload paths, redacted unless `logPayloads` is set. */
export const REDACT_PAYLOAD_PATHS: readonly string[] = ["payload", "message.payload", "*.message.payload", "request.message.payload"];

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** Minimum level. Default `"info"`. */
  readonly level?: string;
  /** `true`: human-readable (pino-pretty); `false`: JSON lines; `"auto"` (default): pretty on a TTY. */
  readonly pretty?: boolean | "auto";
  /** Log message payloads instead of redacting them. Default false. Passwords are always redacted. */
  readonly logPayloads?: boolean;
  /** Where to write. Default stdout, written synchronously (`pino.destination({ dest: 1, sync: true })`). */
  readonly destination?: DestinationStream;
  /** Fields on every line. Default `{ name: "emqx-exhook" }`. */
  readonly base?: Record<string, unknown>;
}

/** Creates the pino logger the CLI uses; pass it as `logger` to the server. */
export function createLogger(options: LoggerOptions = {}): PinoLogger {
  const level = options.level ?? "info";
  if (!LOG_LEVELS.includes(level)) throw new Error(`log level must be one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(level)}`);
  const pretty =
    options.pretty === "auto" || options.pretty === undefined
      ? options.destination === undefined && process.stdout.isTTY === true
      : options.pretty;
  const opts: pino.LoggerOptions = {
    level,
    base: options.base ?? { name: "emqx-exhook" },
    redact: { paths: [...REDACT_PASSWORD_PATHS, ...(options.logPayloads ? [] : REDACT_PAYLOAD_PATHS)], censor: "[redacted]" },
  };
  if (pretty) {
    // Synchronous pretty stream (no worker thread): logs are not lost on a fast exit. Loaded only on
    // a terminal, through ownRequire so it works in the ESM build too.
    const pinoPretty = ownRequire("pino-pretty") as (o: object) => DestinationStream;
    return pino(opts, pinoPretty({ colorize: true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname,name" }));
  }
  // Synchronous writes to stdout by default (pino's own recommendation unless logging is extreme):
  // nothing is lost when the process ends, and a closed stdout pipe fails the next write at once,
  // which pino turns into "stop logging", instead of a retry loop in its exit handler (the
  // asynchronous destination's flush retries EPIPE forever, which hung `serve … | head -1` on SIGTERM).
  return pino(opts, options.destination ?? pino.destination({ dest: 1, sync: true }));
}

/**
 * A middleware logging one line per hook call at `level` (default `"debug"`): hook, package,
 * node, client id, topic, decision, fallback, duration. The request itself is logged only with
 * `includeRequest` (its password and payload still go through the logger's redaction).
 * Costs nothing when the level is disabled.
 */
export function hookLogMiddleware(logger: PinoLogger, options: { level?: Level; includeRequest?: boolean } = {}): HookMiddleware {
  const level = options.level ?? "debug";
  return (call, next) => {
    if (!logger.isLevelEnabled(level)) return next();
    const start = performance.now();
    return next().then((outcome) => {
      logger[level](
        {
          hook: call.hook,
          package: call.ctx.package,
          node: call.ctx.broker?.node,
          clientId: call.clientId,
          ...(call.topic !== undefined ? { topic: call.topic } : {}),
          ...(outcome.decision ? { decision: outcome.decision.kind } : {}),
          ...(outcome.fallback ? { fallback: outcome.fallback } : {}),
          ms: Math.round((performance.now() - start) * 1000) / 1000,
          ...(options.includeRequest ? { request: call.request } : {}),
        },
        "hook call",
      );
      return outcome;
    });
  };
}
