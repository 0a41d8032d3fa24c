/**
 * The errors of our own: a provider or server configured wrongly, and a request body that does not
 * decode. Other wire errors are Connect's `ConnectError` with a gRPC `Code`.
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

/**
 * A request body that does not decode as the rpc's request message. Thrown where a body is
 * decoded (wire.ts), so that the answer (`INVALID_ARGUMENT`, the caller's fault) is chosen by the
 * error's type, never by guessing from a decoder's message text.
 */
export class RequestDecodeError extends Error {
  constructor(
    /** The message type that was expected, e.g. `emqx.exhook.v3.ClientAuthenticateRequest`. */
    readonly typeName: string,
    cause: unknown,
  ) {
    super(`invalid ${typeName}: ${shortCause(cause)}`, { cause });
    this.name = "RequestDecodeError";
  }
}

/** The first line of a decoder's complaint, at most 120 characters (it is sent to the caller). */
function shortCause(cause: unknown): string {
  const text = (cause instanceof Error ? cause.message : String(cause)).split("\n", 1)[0] ?? "";
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}
