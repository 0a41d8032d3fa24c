/**
 * The native transport: a lean unary-gRPC path on `node:http2` streams, serving a dispatcher with
 * Buf's codecs. Every EMQX hook call crosses it, so it avoids per-call work that Connect's generic
 * machinery does (see bench/README.md for the numbers).
 */
import type * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Dispatcher } from "./dispatch.js";
import type { Logger } from "./provider.js";
import { routeTable, type Route } from "./wire.js";

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
function grpcTimeoutMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  let ms = timeoutCache.get(value);
  if (ms === undefined) {
    ms = parseGrpcTimeout(value) as number;
    if (timeoutCache.size < 64) timeoutCache.set(value, ms);
  }
  return ms;
}

/** A `node:http2` `stream` event listener. */
export type StreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

/** The native unary-gRPC path: one request message in, one response message out. */
export function nativeHandler(dispatcher: Dispatcher, maxRequestBytes: number, logger: Logger | undefined): StreamHandler {
  const routes = routeTable();
  return (stream, headers) => {
    const path = headers[":path"] ?? "";
    const contentType = headers["content-type"];
    if (contentType !== "application/grpc+proto" && contentType !== "application/grpc") {
      stream.respond({ ":status": 415, "content-type": "text/plain" }, { endStream: true });
      stream.resume();
      return;
    }
    const route = routes.get(path);
    if (route === undefined || headers[":method"] !== "POST") {
      endWithStatus(stream, contentType, Code.Unimplemented, `unknown method ${path}`);
      stream.resume();
      return;
    }
    const timeoutMs = grpcTimeoutMs(headers["grpc-timeout"] as string | undefined);
    if (timeoutMs !== undefined && Number.isNaN(timeoutMs)) {
      endWithStatus(stream, contentType, Code.InvalidArgument, "protocol error: invalid grpc timeout value");
      stream.resume();
      return;
    }
    let first: Buffer | undefined;
    let chunks: Buffer[] | undefined;
    let size = 0;
    let tooLarge = false;
    stream.on("data", (chunk: Buffer) => {
      if (tooLarge) return;
      size += chunk.length;
      if (size > maxRequestBytes + 5) {
        tooLarge = true;
        return;
      }
      if (first === undefined) first = chunk;
      else (chunks ??= [first]).push(chunk);
    });
    stream.on("end", () => {
      if (tooLarge) {
        endWithStatus(stream, contentType, Code.ResourceExhausted, `request larger than ${maxRequestBytes} bytes`);
        return;
      }
      const body = chunks ? Buffer.concat(chunks, size) : (first ?? EMPTY);
      unary(stream, contentType, route, body, timeoutMs);
    });
  };

  function unary(stream: http2.ServerHttp2Stream, contentType: GrpcContentType, route: Route, body: Buffer, timeoutMs: number | undefined): void {
    if (body.length < 5) {
      endWithStatus(stream, contentType, Code.InvalidArgument, "protocol error: incomplete envelope");
      return;
    }
    const length = body.readUInt32BE(1);
    if (body.length !== length + 5) {
      endWithStatus(stream, contentType, Code.InvalidArgument, body.length < length + 5 ? "protocol error: incomplete envelope" : "protocol error: more than one message in a unary call");
      return;
    }
    if ((body[0] as number) & 1) {
      endWithStatus(stream, contentType, Code.Internal, "compressed messages are not supported (send grpc-encoding identity)");
      return;
    }
    let result: Promise<Uint8Array> | Uint8Array;
    try {
      // Hook calls learn of cancellation through bindAbort: no AbortController per call; the
      // handler's ctx.signal is created only if it reads it (CallContext does that lazily).
      result = dispatcher.handleBytes(route.pkg, route.target, body.subarray(5), {
        timeoutMs,
        bindAbort: (ctx) => onCancel(stream, ctx),
      });
    } catch (err) {
      fail(stream, contentType, err);
      return;
    }
    if (result instanceof Uint8Array) send(stream, contentType, result);
    else result.then((bytes) => send(stream, contentType, bytes), (err: unknown) => fail(stream, contentType, err));
  }

  function fail(stream: http2.ServerHttp2Stream, contentType: GrpcContentType, err: unknown): void {
    if (err instanceof ConnectError) {
      endWithStatus(stream, contentType, err.code, err.rawMessage);
      return;
    }
    const msg = err instanceof Error ? err.message : String(err);
    // Decoding errors from protobuf-es; anything else is ours and is not echoed.
    if (/^(parse binary|premature EOF|invalid|cannot|illegal)/i.test(msg) || err instanceof RangeError) {
      endWithStatus(stream, contentType, Code.Internal, `parse binary: ${msg.replace(/^parse binary: /, "")}`);
      return;
    }
    logger?.error({ err: msg }, "internal error while serving a call");
    endWithStatus(stream, contentType, Code.Internal, "internal error");
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * Aborts `ctx` when the stream closes before the answer was sent (EMQX cancelled the call or went
 * away). After an answer nothing is aborted: building a ConnectError (stack trace) and an abort
 * event after every answered call cost ~12% of the hot path. The dispatcher calls this only when
 * a handler first reads `ctx.signal`, so most calls register no listener at all.
 */
function onCancel(stream: http2.ServerHttp2Stream, ctx: { abort(reason: unknown): void }): void {
  const cancelled = () => {
    if (!stream.headersSent) ctx.abort(new ConnectError("the call was cancelled", Code.Canceled));
  };
  if (stream.closed || stream.destroyed) cancelled();
  else stream.once("close", cancelled);
}

// Constant header objects and options: `respond` copies them, so one of each serves every call.
// No `date` header (gRPC has no use for it; Node would add one to every answer).
/** The request content types served; the answer carries the same one. */
type GrpcContentType = "application/grpc+proto" | "application/grpc";
const OK_HEADERS: Readonly<Record<GrpcContentType, http2.OutgoingHttpHeaders>> = {
  "application/grpc+proto": { ":status": 200, "content-type": "application/grpc+proto" },
  "application/grpc": { ":status": 200, "content-type": "application/grpc" },
};
const RESPOND_WITH_TRAILERS: http2.ServerStreamResponseOptions = { waitForTrailers: true, sendDate: false } as http2.ServerStreamResponseOptions;
const RESPOND_AND_END: http2.ServerStreamResponseOptions = { endStream: true, sendDate: false } as http2.ServerStreamResponseOptions;
const OK_TRAILERS: http2.OutgoingHttpHeaders = { "grpc-status": "0" };

/** One `wantTrailers` listener for every stream (no closure per call). */
function sendOkTrailers(this: http2.ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

function send(stream: http2.ServerHttp2Stream, contentType: GrpcContentType, bytes: Uint8Array): void {
  if (stream.destroyed || stream.closed) return;
  const frame = Buffer.allocUnsafe(bytes.length + 5);
  frame[0] = 0;
  frame.writeUInt32BE(bytes.length, 1);
  frame.set(bytes, 5);
  stream.respond(OK_HEADERS[contentType], RESPOND_WITH_TRAILERS);
  stream.on("wantTrailers", sendOkTrailers);
  stream.end(frame);
}

/** A Trailers-Only gRPC error: no message, so EMQX can never mistake it for an answer. */
function endWithStatus(stream: http2.ServerHttp2Stream, contentType: GrpcContentType, code: Code, message: string): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond(
    { ":status": 200, "content-type": contentType, "grpc-status": String(code), "grpc-message": encodeURIComponent(message) },
    RESPOND_AND_END,
  );
}
