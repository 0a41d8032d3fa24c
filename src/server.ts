/**
 * The standalone ExHook server: HTTP/2 cleartext with prior knowledge (what EMQX uses for
 * `http://` URLs), gRPC only.
 *
 * Two transports serve the same dispatcher with the same semantics:
 * - `"native"` (default): a lean unary-gRPC path on `node:http2` with Buf's codecs, because every
 *   MQTT login and publish waits on it (Connect's per-call machinery costs several times more);
 * - `"connect"`: `connectNodeAdapter` over `exhookRoutes`, the same routes users mount in their own
 *   Connect server; kept for comparison and for tests proving both paths answer alike.
 */
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { ConnectError, Code } from "@connectrpc/connect";
import { createDispatcher, type Dispatcher } from "./dispatch.js";
import { ExHookConfigError } from "./errors.js";
import type { HookMiddleware, Logger, Provider } from "./provider.js";
import { exhookRoutes } from "./routes.js";
import { routeTable, type Route } from "./wire.js";

/** Options of {@link createExHookServer}. */
export interface ExHookServerOptions {
  /** The provider to serve. */
  readonly provider: Provider;
  /** TCP port. Default 9000 (what EMQX's examples use); 0 picks a free port. */
  readonly port?: number;
  /** Interface to listen on. Default `"0.0.0.0"` (all IPv4 interfaces). */
  readonly host?: string;
  /** `"native"` (default, fast) or `"connect"` (connect-node adapter). */
  readonly transport?: "native" | "connect";
  /** Logger for handler failures and server events. Default: JSON lines on stderr. */
  readonly logger?: Logger;
  /** Middleware added outside the provider's own. */
  readonly middleware?: readonly HookMiddleware[];
  /**
   * Largest request body accepted, in bytes. Default 16 MiB (EMQX's default MQTT max packet is
   * 1 MiB; raise this if you raised that). Larger requests get `RESOURCE_EXHAUSTED`.
   */
  readonly maxRequestBytes?: number;
  /** HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` per connection. Default 1000. */
  readonly maxConcurrentStreams?: number;
  /** Use an existing dispatcher (to share loaded state), instead of creating one. */
  readonly dispatcher?: Dispatcher;
}

/** A running (or ready to run) ExHook server. */
export interface ExHookServer {
  /** Starts listening; resolves with the bound address. */
  listen(): Promise<AddressInfo>;
  /**
   * Stops accepting connections, lets in-flight calls finish for up to `graceMs` (default 5000),
   * then closes what is left.
   */
  close(graceMs?: number): Promise<void>;
  /** The bound address, once listening. */
  readonly address: AddressInfo | undefined;
  /** The dispatcher (loaded state, fallback counts). */
  readonly dispatcher: Dispatcher;
  /** The underlying `node:http2` server. */
  readonly http2: http2.Http2Server;
}

const GRPC_TIMEOUT_UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** Parses a `grpc-timeout` header into ms; `undefined` when absent, `NaN` when invalid. */
export function parseGrpcTimeout(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const unit = GRPC_TIMEOUT_UNITS[value.charAt(value.length - 1)];
  const digits = value.slice(0, -1);
  if (unit === undefined || digits.length === 0 || digits.length > 8 || !/^\d+$/.test(digits)) return NaN;
  return Number(digits) * unit;
}

/** Creates a standalone ExHook server. Throws {@link ExHookConfigError} on bad options. */
export function createExHookServer(options: ExHookServerOptions): ExHookServer {
  const port = options.port ?? 9000;
  const host = options.host ?? "0.0.0.0";
  if (!options.provider || typeof options.provider.hookSpecs !== "function") {
    throw new ExHookConfigError("createExHookServer: options.provider must be a provider from defineProvider()");
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ExHookConfigError(`port must be an integer from 0 to 65535, got ${JSON.stringify(options.port)}`);
  }
  const transport = options.transport ?? "native";
  if (transport !== "native" && transport !== "connect") {
    throw new ExHookConfigError(`transport must be "native" or "connect", got ${JSON.stringify(transport)}`);
  }
  const maxRequestBytes = options.maxRequestBytes ?? 16 * 1024 * 1024;
  if (!Number.isInteger(maxRequestBytes) || maxRequestBytes < 5) {
    throw new ExHookConfigError(`maxRequestBytes must be an integer of at least 5, got ${JSON.stringify(options.maxRequestBytes)}`);
  }
  const maxConcurrentStreams = options.maxConcurrentStreams ?? 1000;
  if (!Number.isInteger(maxConcurrentStreams) || maxConcurrentStreams < 1) {
    throw new ExHookConfigError(`maxConcurrentStreams must be a positive integer, got ${JSON.stringify(options.maxConcurrentStreams)}`);
  }
  const dispatcher =
    options.dispatcher ??
    createDispatcher(options.provider, {
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.middleware ? { middleware: options.middleware } : {}),
    });
  const logger = options.logger;
  const server = http2.createServer({ settings: { maxConcurrentStreams } });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  server.on("sessionError", (err) => logger?.warn({ err: err.message }, "HTTP/2 session error (not an h2c client?)"));

  if (transport === "native") {
    const serve = nativeHandler(dispatcher, maxRequestBytes, logger);
    server.on("stream", serve);
  } else {
    server.on(
      "request",
      connectNodeAdapter({
        routes: exhookRoutes(dispatcher),
        grpc: true,
        grpcWeb: false,
        connect: false,
        readMaxBytes: maxRequestBytes,
        fallback: (req, res) => {
          const r = res as unknown as http2.Http2ServerResponse;
          r.writeHead(200, { "content-type": "application/grpc+proto", "grpc-status": String(Code.Unimplemented), "grpc-message": encodeURIComponent(`unknown method ${req.url ?? ""}`) });
          r.end();
        },
      }),
    );
  }

  let address: AddressInfo | undefined;
  return {
    get address() {
      return address;
    },
    dispatcher,
    http2: server,
    listen() {
      return new Promise<AddressInfo>((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        server.once("error", onError);
        server.listen(port, host, () => {
          server.off("error", onError);
          address = server.address() as AddressInfo;
          resolve(address);
        });
      });
    },
    close(graceMs = 5000) {
      return new Promise<void>((resolve) => {
        if (!server.listening) {
          resolve();
          return;
        }
        const timer = setTimeout(() => {
          for (const s of sessions) s.destroy();
        }, graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        for (const s of sessions) s.close();
      });
    },
  };
}

type StreamHandler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

/** The native unary-gRPC path: one request message in, one response message out. */
function nativeHandler(dispatcher: Dispatcher, maxRequestBytes: number, logger: Logger | undefined): StreamHandler {
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
    const timeoutMs = parseGrpcTimeout(headers["grpc-timeout"] as string | undefined);
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

  function unary(stream: http2.ServerHttp2Stream, contentType: string, route: Route, body: Buffer, timeoutMs: number | undefined): void {
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
    let signal: AbortSignal | undefined;
    let result: Promise<Uint8Array> | Uint8Array;
    try {
      if (typeof route.target === "object") {
        // Only created for hook calls, whose handlers may watch for EMQX giving up.
        const controller = new AbortController();
        stream.once("close", () => controller.abort(new ConnectError("the call was cancelled", Code.Canceled)));
        signal = controller.signal;
      }
      result = dispatcher.handleBytes(route.pkg, route.target, body.subarray(5), { timeoutMs, signal });
    } catch (err) {
      fail(stream, contentType, err);
      return;
    }
    if (result instanceof Uint8Array) send(stream, contentType, result);
    else result.then((bytes) => send(stream, contentType, bytes), (err: unknown) => fail(stream, contentType, err));
  }

  function fail(stream: http2.ServerHttp2Stream, contentType: string, err: unknown): void {
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

function send(stream: http2.ServerHttp2Stream, contentType: string, bytes: Uint8Array): void {
  if (stream.destroyed || stream.closed) return;
  const frame = Buffer.allocUnsafe(bytes.length + 5);
  frame[0] = 0;
  frame.writeUInt32BE(bytes.length, 1);
  frame.set(bytes, 5);
  stream.respond({ ":status": 200, "content-type": contentType }, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.end(frame);
}

/** A Trailers-Only gRPC error: no message, so EMQX can never mistake it for an answer. */
function endWithStatus(stream: http2.ServerHttp2Stream, contentType: string, code: Code, message: string): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond(
    { ":status": 200, "content-type": contentType, "grpc-status": String(code), "grpc-message": encodeURIComponent(message) },
    { endStream: true },
  );
}
