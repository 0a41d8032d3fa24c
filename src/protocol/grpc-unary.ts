/**
 * Unary gRPC over HTTP/2, the parts that do not touch a socket: the 5-byte message envelope,
 * `grpc-timeout`, Trailers-Only error replies, and how an error becomes a gRPC status. Written
 * once and used by every path that answers gRPC itself: the native transport, the health
 * service, the Connect transport's fallback for unknown methods, and the test kit's in-memory
 * client (which goes through {@link createUnaryService} exactly as the native transport does).
 *
 * No `node:` imports: the socket side (node:http2 streams) is src/protocol/grpc-http2.ts.
 *
 * Error classification is by type, never by message text:
 * - `ConnectError` (raised on purpose by the framework: `grpc-error` mode, cancellation): its code
 *   and message;
 * - `RequestDecodeError` (src/errors.ts, thrown where a request body is decoded): `INVALID_ARGUMENT` with a
 *   short cause (the caller sent bytes we cannot read: its fault, not ours);
 * - anything else is a bug of ours or of a handler's environment: `INTERNAL` with the generic text
 *   "internal error", reported to `onInternalError` (the server logs it with its stack and counts it).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Dispatcher, CallInfo } from "../dispatch.js";
import { RequestDecodeError } from "../errors.js";
import { routeTable, type Route } from "../wire.js";

/** The request content types served; the answer carries the same one. */
export type GrpcContentType = "application/grpc+proto" | "application/grpc";

/** The served content type of a `content-type` header, or `undefined` (HTTP 415). */
export function grpcContentType(value: string | undefined): GrpcContentType | undefined {
  return value === "application/grpc+proto" || value === "application/grpc" ? value : undefined;
}

/** A gRPC error status to send (Trailers-Only). */
export interface GrpcFailure {
  readonly code: Code;
  /** Sent as `grpc-message` (percent-encoded on the wire). */
  readonly message: string;
}

const INTERNAL: GrpcFailure = Object.freeze({ code: Code.Internal, message: "internal error" });

/**
 * The gRPC status for an error raised while serving a call (see the module comment). Errors of
 * our own (neither a ConnectError nor a decode error) go to `onInternalError` and are not echoed.
 */
export function errorReply(err: unknown, onInternalError: ((err: unknown) => void) | undefined): GrpcFailure {
  if (err instanceof ConnectError) return { code: err.code, message: err.rawMessage };
  if (err instanceof RequestDecodeError) return { code: Code.InvalidArgument, message: err.message };
  onInternalError?.(err);
  return INTERNAL;
}

// --- grpc-timeout ------------------------------------------------------------------------

const GRPC_TIMEOUT_UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** Parses a `grpc-timeout` header into ms; `undefined` when absent, `NaN` when invalid. */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const unit = GRPC_TIMEOUT_UNITS[value.charAt(value.length - 1)];
  const digits = value.slice(0, -1);
  if (unit === undefined || digits.length === 0 || digits.length > 8 || !/^\d+$/.test(digits)) return NaN;
  return Number(digits) * unit;
}

// EMQX sends the same `grpc-timeout` on every call (its request_timeout), so parsed values are
// kept; the cache stops growing at 64 distinct values.
const timeoutCache = new Map<string, number>();

/** {@link parseGrpcTimeout}, remembering the values seen (the hot path's version). */
export function grpcTimeoutMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  let ms = timeoutCache.get(value);
  if (ms === undefined) {
    ms = parseGrpcTimeout(value) as number;
    if (timeoutCache.size < 64) timeoutCache.set(value, ms);
  }
  return ms;
}

/** Formats milliseconds as a `grpc-timeout` value (what a client sends). */
export function formatGrpcTimeout(ms: number): string {
  return `${Math.max(0, Math.ceil(ms))}m`;
}

// --- envelope ----------------------------------------------------------------------------

/** `message` in a 5-byte gRPC envelope (uncompressed). */
export function frameMessage(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(message.length + 5);
  const n = message.length;
  out[1] = n >>> 24;
  out[2] = (n >>> 16) & 0xff;
  out[3] = (n >>> 8) & 0xff;
  out[4] = n & 0xff;
  out.set(message, 5);
  return out;
}

/**
 * The one message of a unary request body, or why there is none: an incomplete envelope or more
 * than one message (`INVALID_ARGUMENT`), a compressed message (`INTERNAL`, as gRPC answers an
 * encoding it did not offer).
 */
export function unframeRequest(body: Uint8Array): Uint8Array | GrpcFailure {
  if (body.length < 5) return INCOMPLETE;
  const length = (((body[1] as number) << 24) | ((body[2] as number) << 16) | ((body[3] as number) << 8) | (body[4] as number)) >>> 0;
  if (body.length !== length + 5) return body.length < length + 5 ? INCOMPLETE : MORE_THAN_ONE;
  if ((body[0] as number) & 1) return COMPRESSED;
  return body.subarray(5);
}

const INCOMPLETE: GrpcFailure = Object.freeze({ code: Code.InvalidArgument, message: "protocol error: incomplete envelope" });
const MORE_THAN_ONE: GrpcFailure = Object.freeze({
  code: Code.InvalidArgument,
  message: "protocol error: more than one message in a unary call",
});
const COMPRESSED: GrpcFailure = Object.freeze({
  code: Code.Internal,
  message: "compressed messages are not supported (send grpc-encoding identity)",
});
const BAD_TIMEOUT: GrpcFailure = Object.freeze({ code: Code.InvalidArgument, message: "protocol error: invalid grpc timeout value" });

/** Whether a value is a {@link GrpcFailure} (a unary step's "no"). */
export function isFailure(v: unknown): v is GrpcFailure {
  return typeof v === "object" && v !== null && !(v instanceof Uint8Array) && "code" in v;
}

// --- Trailers-Only ----------------------------------------------------------------------

/**
 * `grpc-message` as the gRPC spec (PROTOCOL-HTTP2) wants it: printable ASCII except `%` as is,
 * every other UTF-8 byte as `%XX`. (`encodeURIComponent` would also encode `/`, `:` and the like,
 * which some clients, grpc-js among them, then show encoded.)
 */
export function encodeGrpcMessage(text: string): string {
  if (/^[\x20-\x24\x26-\x7e]*$/.test(text)) return text;
  let out = "";
  for (const byte of new TextEncoder().encode(text)) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * The header block of a Trailers-Only reply (status in the HEADERS frame, sent with END_STREAM,
 * no message): what every error answer is, so a client can never mistake it for an answer.
 */
export function trailersOnlyHeaders(contentType: GrpcContentType, failure: GrpcFailure): Record<string, string | number> {
  return {
    ":status": 200,
    "content-type": contentType,
    "grpc-status": String(failure.code),
    "grpc-message": encodeGrpcMessage(failure.message),
  };
}

/** The trailers of a successful unary answer. */
export const OK_TRAILERS: Readonly<Record<string, string>> = Object.freeze({ "grpc-status": "0" });

// --- the unary service ------------------------------------------------------------------

/** Where a unary call's outcome goes (no promise per call: the transport passes one replier). */
export interface UnaryReplier<T> {
  /** The response message (unframed). */
  ok(target: T, message: Uint8Array): void;
  /** A gRPC error status. */
  fail(target: T, failure: GrpcFailure): void;
}

/** A call whose head was accepted: where it goes and its deadline. */
export interface UnaryHead {
  readonly route: Route;
  /** From `grpc-timeout`; `undefined` when the caller sent none. */
  readonly timeoutMs: number | undefined;
}

/** The HookProvider services as unary gRPC, independent of how bytes arrive. */
export interface UnaryService {
  /**
   * Checks a call's head (`:method`, `:path`, `grpc-timeout`): where it goes, or the error to
   * answer right away (`UNIMPLEMENTED` for an unknown path, `INVALID_ARGUMENT` for a bad timeout).
   */
  head(method: string | undefined, path: string, grpcTimeout: string | undefined): UnaryHead | GrpcFailure;
  /**
   * Runs a call whose whole body was read: unframes it, dispatches it and hands the outcome to
   * `reply` (synchronously when the handler answers synchronously).
   */
  run<T>(head: UnaryHead, body: Uint8Array, target: T, reply: UnaryReplier<T>, bindAbort?: CallInfo["bindAbort"]): void;
}

/** Options of {@link createUnaryService}. */
export interface UnaryServiceOptions {
  /** Told about every error of our own (not a caller's fault); default: nothing. */
  readonly onInternalError?: (err: unknown) => void;
}

/** Creates the unary service of a dispatcher. */
export function createUnaryService(dispatcher: Dispatcher, options: UnaryServiceOptions = {}): UnaryService {
  // Per path, the heads already made for each grpc-timeout value: EMQX sends the same value on
  // every call, so a call's head is found, not allocated (at most 64 values per path are kept).
  const paths = new Map<string, { readonly route: Route; readonly heads: Map<string | undefined, UnaryHead | GrpcFailure> }>();
  for (const [path, route] of routeTable()) paths.set(path, { route, heads: new Map() });
  const onInternalError = options.onInternalError;
  return {
    head(method, path, grpcTimeout) {
      const entry = paths.get(path);
      if (entry === undefined || method !== "POST") return { code: Code.Unimplemented, message: `unknown method ${path}` };
      let head = entry.heads.get(grpcTimeout);
      if (head === undefined) {
        const timeoutMs = parseGrpcTimeout(grpcTimeout);
        head = timeoutMs !== undefined && Number.isNaN(timeoutMs) ? BAD_TIMEOUT : Object.freeze({ route: entry.route, timeoutMs });
        if (entry.heads.size < 64) entry.heads.set(grpcTimeout, head);
      }
      return head;
    },
    run(head, body, target, reply, bindAbort) {
      const message = unframeRequest(body);
      if (isFailure(message)) {
        reply.fail(target, message);
        return;
      }
      let result: Promise<Uint8Array> | Uint8Array;
      try {
        result = dispatcher.handleBytes(head.route.pkg, head.route.target, message, { timeoutMs: head.timeoutMs, bindAbort });
      } catch (err) {
        reply.fail(target, errorReply(err, onInternalError));
        return;
      }
      if (result instanceof Uint8Array) reply.ok(target, result);
      else {
        result.then(
          (bytes) => reply.ok(target, bytes),
          (err: unknown) => reply.fail(target, errorReply(err, onInternalError)),
        );
      }
    },
  };
}

export { RequestDecodeError };
