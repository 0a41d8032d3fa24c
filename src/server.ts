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
import { Code } from "@connectrpc/connect";
import { createDispatcher, type Dispatcher } from "./dispatch.js";
import { ExHookConfigError } from "./errors.js";
import type { HookMiddleware, Logger, Provider } from "./provider.js";
import { exhookRoutes } from "./routes.js";
import { nativeHandler } from "./native-transport.js";

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
