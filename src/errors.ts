/**
 * The one error of our own: a provider or server was configured wrongly. Wire errors are
 * Connect's `ConnectError` with a gRPC `Code`.
 */
const brand = Symbol.for("emqx-exhook.ExHookConfigError");

/** Thrown when a provider, server or CLI option is wrong; the message says what to fix. */
export class ExHookConfigError extends Error {
  readonly [brand] = true;
  constructor(message: string) {
    super(message);
    this.name = "ExHookConfigError";
  }
}

/** Whether `err` is an {@link ExHookConfigError} (works across copies of the package). */
export function isExHookConfigError(err: unknown): err is ExHookConfigError {
  return typeof err === "object" && err !== null && (err as Record<symbol, unknown>)[brand] === true;
}
