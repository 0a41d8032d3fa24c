/**
 * The native transport: a lean unary-gRPC path on `node:http2` streams, serving a dispatcher with
 * Buf's codecs. Every EMQX hook call crosses it, so it avoids per-call work that Connect's generic
 * machinery does (see bench/README.md for the numbers). The protocol itself (envelope, deadlines,
 * error replies) is src/protocol/grpc-unary.ts, shared with the health service and the test kit.
 */
import type * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Dispatcher } from "./dispatch.js";
import { createFairScheduler } from "./fair-scheduler.js";
import { readBody, respondFailure, respondMessage, respondUnsupportedMediaType } from "./protocol/grpc-http2.js";
import {
  createUnaryService,
  grpcContentType,
  isFailure,
  type GrpcContentType,
  type GrpcFailure,
  type UnaryHead,
  type UnaryReplier,
} from "./protocol/grpc-unary.js";

export { parseGrpcTimeout } from "./protocol/grpc-unary.js";

/** A `node:http2` `stream` event listener. */
export type StreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

/** Options of {@link nativeHandler}. */
export interface NativeHandlerOptions {
  /** Largest request message accepted, in bytes. */
  readonly maxRequestBytes: number;
  /** Told about every error of our own while serving a call (logged and counted by the server). */
  readonly onInternalError?: (err: unknown) => void;
  /** Time per event-loop turn spent starting calls before the rest waits its connection's turn (src/fair-scheduler.ts). Default 10 ms. */
  readonly turnBudgetMs?: number;
}

/**
 * The native unary-gRPC path: one request message in, one response message out. The caller (the
 * server) has already given the stream its `error` listener.
 */
export function nativeHandler(dispatcher: Dispatcher, options: NativeHandlerOptions): StreamHandler {
  const maxRequestBytes = options.maxRequestBytes;
  const service = createUnaryService(dispatcher, options.onInternalError ? { onInternalError: options.onInternalError } : {});
  const tooLarge: GrpcFailure = { code: Code.ResourceExhausted, message: `request larger than ${maxRequestBytes} bytes` };
  const turns = createFairScheduler<http2.Http2Session>(options.turnBudgetMs !== undefined ? { budgetMs: options.turnBudgetMs } : {});
  return (stream, headers) => {
    const contentType = grpcContentType(headers["content-type"]);
    if (contentType === undefined) {
      respondUnsupportedMediaType(stream);
      stream.resume();
      return;
    }
    const head = service.head(headers[":method"], headers[":path"] ?? "", headers["grpc-timeout"] as string | undefined);
    if (isFailure(head)) {
      respondFailure(stream, contentType, head);
      stream.resume();
      return;
    }
    const reply = REPLIERS[contentType];
    // Hook calls learn of cancellation through bindAbort: no AbortController per call; the
    // handler's ctx.signal is created only if it reads it (CallContext does that lazily).
    const bindAbort = (ctx: { abort(reason: unknown): void }) => onCancel(stream, ctx);
    readBody(stream, maxRequestBytes, (body) => {
      if (body === undefined) {
        respondFailure(stream, contentType, tooLarge);
        return;
      }
      if (turns.tryStart()) {
        service.run(head, body, stream, reply, bindAbort);
        return;
      }
      // This turn's budget is spent: the call waits for its connection's turn, and the time it
      // waits comes off its deadline.
      const owner = stream.session;
      if (owner === undefined) return; // the connection is gone
      const queuedAt = performance.now();
      turns.enqueue(owner, () => {
        if (stream.destroyed || stream.closed) return;
        service.run(waited(head, performance.now() - queuedAt), body, stream, reply, bindAbort);
      });
    });
  };
}

/** `head` with `ms` less time before its deadline (at least 0). */
function waited(head: UnaryHead, ms: number): UnaryHead {
  return head.timeoutMs === undefined ? head : { route: head.route, timeoutMs: Math.max(0, head.timeoutMs - ms) };
}

/** One replier per content type, shared by every call (no closure per call). */
const REPLIERS: Readonly<Record<GrpcContentType, UnaryReplier<http2.ServerHttp2Stream>>> = {
  "application/grpc+proto": {
    ok: (stream, message) => void respondMessage(stream, "application/grpc+proto", message),
    fail: (stream, failure) => void respondFailure(stream, "application/grpc+proto", failure),
  },
  "application/grpc": {
    ok: (stream, message) => void respondMessage(stream, "application/grpc", message),
    fail: (stream, failure) => void respondFailure(stream, "application/grpc", failure),
  },
};

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
