/**
 * The `"connect"` transport: connect-node's adapter over `exhookRoutes` (the routes users mount
 * in their own Connect server) and the health service, with what a standalone server needs
 * around it:
 * - fair turns and a bound on calls in flight (src/fair-scheduler.ts): Connect's per-call
 *   machinery holds ~35 KB of heap per call in flight, so 64 connections x 100 streams would hold
 *   hundreds of MB; beyond {@link CONNECT_MAX_IN_FLIGHT} calls wait, paused, one queue per
 *   connection served in turn, and the time a call waited comes off its `grpc-timeout`. A waiting
 *   call is only its HTTP/2 stream: the compatibility request/response pair connect-node needs
 *   (~10 KB more) is made when its turn comes, so this listens for `stream`, not `request`;
 * - unknown paths answered with a Trailers-Only `UNIMPLEMENTED` on the stream itself (connect-node's
 *   compatibility response would send headers, an empty DATA frame and a RST_STREAM);
 * - errors that are not ConnectErrors (ours: the dispatcher rejects only with ConnectError)
 *   reported before Connect answers them `INTERNAL "internal error"`.
 * Stream errors are handled by Node's compatibility layer; the server counts them.
 */
import * as http2 from "node:http2";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Dispatcher } from "./dispatch.js";
import { createFairScheduler } from "./fair-scheduler.js";
import { healthRoutes, type HealthState } from "./ops/health.js";
import { respondFailure, respondUnsupportedMediaType } from "./protocol/grpc-http2.js";
import { formatGrpcTimeout, grpcContentType, grpcTimeoutMs } from "./protocol/grpc-unary.js";
import { exhookRoutes } from "./routes.js";

/** Calls the Connect transport runs at once (~35 KB of heap each); more wait their connection's turn. */
export const CONNECT_MAX_IN_FLIGHT = 128;

/** Options of {@link connectTransport}. */
export interface ConnectTransportOptions {
  readonly dispatcher: Dispatcher;
  readonly health: HealthState;
  readonly healthRequiresLoaded: boolean;
  readonly maxRequestBytes: number;
  readonly onInternalError: (err: unknown) => void;
}

/** A `stream` listener for a `node:http2` server. */
export type StreamListener = (
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  flags: number,
  rawHeaders: string[],
) => void;

/** Creates the Connect transport's `stream` listener. */
export function connectTransport(options: ConnectTransportOptions): StreamListener {
  const reportInternal: Interceptor = (next) => (req) =>
    next(req).catch((err: unknown) => {
      if (!(err instanceof ConnectError)) options.onInternalError(err);
      throw err;
    });
  const adapter = connectNodeAdapter({
    routes: (router) => {
      exhookRoutes(options.dispatcher)(router);
      healthRoutes(options.health, options.healthRequiresLoaded)(router);
    },
    grpc: true,
    grpcWeb: false,
    connect: false,
    readMaxBytes: options.maxRequestBytes,
    interceptors: [reportInternal],
    fallback: (req) => {
      const stream = (req as unknown as http2.Http2ServerRequest).stream;
      const contentType = grpcContentType(req.headers["content-type"]);
      if (contentType === undefined) respondUnsupportedMediaType(stream);
      else respondFailure(stream, contentType, { code: Code.Unimplemented, message: `unknown method ${req.url ?? ""}` });
      stream.resume();
    },
  });
  const turns = createFairScheduler<http2.Http2Session>({ maxInFlight: CONNECT_MAX_IN_FLIGHT });
  const release = () => turns.release();
  const start = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, rawHeaders: string[]) => {
    // What node:http2 does for a `request` listener (onServerStream), done only now.
    const req = new http2.Http2ServerRequest(stream, headers, {}, rawHeaders);
    const res = new http2.Http2ServerResponse(stream);
    res.once("close", release);
    adapter(req, res);
  };
  return (stream, headers, _flags, rawHeaders) => {
    if (turns.tryStart()) {
      start(stream, headers, rawHeaders);
      return;
    }
    const owner = stream.session;
    if (owner === undefined) return;
    const queuedAt = performance.now();
    turns.enqueue(owner, () => {
      if (stream.destroyed || stream.closed) {
        release();
        return;
      }
      // The wait comes off the caller's deadline; past it, the caller has given up already.
      const timeout = grpcTimeoutMs(headers["grpc-timeout"] as string | undefined);
      if (timeout !== undefined && !Number.isNaN(timeout)) {
        const left = timeout - (performance.now() - queuedAt);
        const contentType = grpcContentType(headers["content-type"]);
        if (left <= 0 && contentType !== undefined) {
          respondFailure(stream, contentType, {
            code: Code.DeadlineExceeded,
            message: "the deadline passed while the call waited its turn",
          });
          stream.resume();
          release();
          return;
        }
        headers["grpc-timeout"] = formatGrpcTimeout(left);
      }
      start(stream, headers, rawHeaders);
    });
  };
}
