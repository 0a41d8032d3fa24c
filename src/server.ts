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
import { createDispatcher, type Dispatcher } from "./dispatch.js";
import { ExHookConfigError } from "./errors.js";
import type { HookMiddleware, Logger, Provider } from "./provider.js";
import { connectTransport } from "./connect-transport.js";
import { nativeHandler } from "./native-transport.js";
import { HEALTH_PATH_PREFIX, serveHealthStream, type HealthState } from "./ops/health.js";
import {
  checkReadiness,
  checkReadyOptions,
  createOpsServer,
  type OpsServer,
  type ReadinessCheck,
  type ReadyWhen,
} from "./ops/http-probes.js";
import { shareLearnedState } from "./ops/learned-state.js";
import { monitorLoopDelay, type LoopDelayMonitor } from "./ops/loop-delay.js";
import { createMetrics, type ExHookMetrics } from "./ops/metrics.js";
import { createServerErrors, type ErrorCounts } from "./ops/peer-errors.js";
import { readTlsOptions, watchTls, type TlsFiles } from "./ops/tls.js";

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
  /**
   * Use an existing dispatcher (to share loaded state), instead of creating one. Its middleware is
   * then its own: `middleware` and the per-hook part of `metrics` are not added to it.
   */
  readonly dispatcher?: Dispatcher;
  /**
   * Serve TLS (EMQX `https://` URLs) with these PEM files; with `ca`, clients must present a
   * certificate signed by it (mutual TLS). Files are re-read when they change. Default: h2c.
   */
  readonly tls?: TlsFiles;
  /**
   * Prometheus metrics to record into (see `createMetrics`). Default: created when `metricsPort`
   * is set, else none (no per-call cost).
   */
  readonly metrics?: ExHookMetrics;
  /**
   * Port of the operations HTTP server (`/metrics`, `/healthz`, `/readyz`, and the provider's
   * routes such as the use-case stack's read API); 0 picks a free port. Default: none.
   */
  readonly metricsPort?: number;
  /** Interface of the operations server. Default `"127.0.0.1"` (this machine only). */
  readonly metricsHost?: string;
  /** Bearer token the operations server requires for `/metrics` and the provider's routes. Default: none. */
  readonly metricsToken?: string;
  /**
   * When `/readyz` is ready: `"listening"` (default: listening, not draining, and the provider's
   * own check) or `"loaded"` (also loaded by one of `readyNodes`).
   */
  readonly readyWhen?: ReadyWhen;
  /**
   * EMQX node names whose `OnProviderLoaded` counts for `readyWhen: "loaded"` (required then) and
   * for `healthRequiresLoaded`; loads from other names are answered but do not make us ready.
   */
  readonly readyNodes?: readonly string[];
  /**
   * Whether the gRPC health service reports `SERVING` only after an EMQX node loaded the provider.
   * Default false: `SERVING` while listening and not draining.
   */
  readonly healthRequiresLoaded?: boolean;
  /**
   * Pins the `ResponsedType` numbering of v1 answers: `true` for EMQX 4.3.0–4.3.2, `false` for
   * later 4.x (see `DispatcherOptions.legacyResponseNumbering`). Default: learned from EMQX.
   */
  readonly legacyResponseNumbering?: boolean;
  /**
   * A JSON file keeping what was learned from EMQX (the v1 numbering) across restarts: EMQX 4.x
   * does not send `OnProviderLoaded` again to a restarted server. Default: none (memory only).
   * Under `serve --workers N` the workers also share it over the cluster bus.
   */
  readonly stateFile?: string;
  /**
   * Closes a connection on which no frame went either way (PINGs count) for this long, in ms; 0
   * keeps idle connections forever. Default 300000 (5 min): EMQX pings each pooled connection every
   * 60 s, so only dead or abandoned ones are closed, e.g. one that nghttp2 stopped serving after a
   * flood (it sends GOAWAY but leaves the socket open).
   */
  readonly idleTimeoutMs?: number;
  /** More `/readyz` conditions (the use-case stack's bridged engines, say); 503 while any fails. */
  readonly readiness?: () => readonly ReadinessCheck[];
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
  /** The underlying `node:http2` server (a secure one with `tls`). */
  readonly http2: http2.Http2Server | http2.Http2SecureServer;
  /** `"idle"` before listen, `"serving"`, `"draining"` during close, `"closed"`. */
  readonly state: "idle" | "serving" | "draining" | "closed";
  /** The metrics recorded, if any. */
  readonly metrics: ExHookMetrics | undefined;
  /** The operations server's address, once listening (only with `metricsPort`). */
  readonly opsAddress: AddressInfo | undefined;
  /** Re-reads the TLS files now; false (and the old certificate kept) when they do not load. */
  reloadTls(): boolean;
  /** Peer errors by kind and internal errors so far (also `exhook_peer_errors_total`, `exhook_internal_errors_total`). */
  errorCounts(): ErrorCounts;
}

/**
 * HTTP/2 session limits (node:http2 / nghttp2 options), chosen so that no single peer can take
 * more than its share of memory or CPU; each was checked against a flood in test/abuse.test.ts.
 * - `maxSessionMemory` 32 MiB (Node's default 10): the outbound buffer a connection may hold
 *   (answers a slow reader has not taken) before new streams on it are refused; EMQX's answers
 *   are small, a connection that holds 32 MiB is not reading.
 * - `maxSessionRejectedStreams` 100, `maxSessionInvalidFrames` 100: a peer whose streams keep being
 *   refused, or that sends frames the protocol forbids, is disconnected (ENHANCE_YOUR_CALM).
 * - `maxHeaderListPairs` 64 and a 16 KiB `maxHeaderListSize`: EMQX sends 8 headers.
 * - `maxOutstandingPings` / nghttp2's own flood checks (PING, SETTINGS, RST_STREAM rate, empty
 *   frames, CONTINUATION count) stay at their defaults, which already close a flooding connection.
 */
const SESSION_LIMITS = {
  maxSessionMemory: 32,
  maxSessionRejectedStreams: 100,
  maxSessionInvalidFrames: 100,
  maxHeaderListPairs: 64,
} as const;
const MAX_HEADER_LIST_SIZE = 16 * 1024;

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
  const idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
  if (!Number.isInteger(idleTimeoutMs) || idleTimeoutMs < 0) {
    throw new ExHookConfigError(
      `idleTimeoutMs must be a non-negative integer of milliseconds, got ${JSON.stringify(options.idleTimeoutMs)}`,
    );
  }
  const readyWhen = checkReadyOptions(options.readyWhen, options.readyNodes);
  const readyNodes = options.readyNodes;
  const metrics =
    options.metrics ?? (options.metricsPort !== undefined ? createMetrics(readyNodes ? { knownNodes: readyNodes } : {}) : undefined);
  // Metrics outermost, so their latency includes the user's middleware.
  const middleware = [...(metrics ? [metrics.middleware] : []), ...(options.middleware ?? [])];
  const logger = options.logger;
  const errors = createServerErrors(logger);
  // Measured while listening (started by listen(), stopped by close()).
  let loopDelay: LoopDelayMonitor | undefined;
  const learned = shareLearnedState({ file: options.stateFile, logger });
  const dispatcher =
    options.dispatcher ??
    createDispatcher(options.provider, {
      ...(options.logger ? { logger: options.logger } : {}),
      ...(middleware.length > 0 ? { middleware } : {}),
      loopDelayMs: (inFlight) => (loopDelay ? loopDelay.ms(inFlight) : 0),
      ...(options.legacyResponseNumbering !== undefined ? { legacyResponseNumbering: options.legacyResponseNumbering } : {}),
      onLearned: (state) => learned.publish(state),
    });
  learned.attach(dispatcher);
  let state: ExHookServer["state"] = "idle";
  const loadedNames = () => dispatcher.loadedNodes().map((n) => n.node);
  const health: HealthState = {
    serving: () => state === "serving",
    loaded: () => (readyNodes ? loadedNames().some((n) => readyNodes.includes(n)) : dispatcher.loadedNodes().length > 0),
  };
  const healthRequiresLoaded = options.healthRequiresLoaded ?? false;
  const settings: http2.Settings = { maxConcurrentStreams, maxHeaderListSize: MAX_HEADER_LIST_SIZE };
  const server: http2.Http2Server | http2.Http2SecureServer = options.tls
    ? http2.createSecureServer({ ...readTlsOptions(options.tls), ...SESSION_LIMITS, settings })
    : http2.createServer({ ...SESSION_LIMITS, settings });
  // Without a 'timeout' listener, Node destroys a session that timed out.
  if (idleTimeoutMs > 0) server.setTimeout(idleTimeoutMs);
  const tlsWatch = options.tls ? watchTls(server as http2.Http2SecureServer, options.tls, logger) : undefined;
  if (options.tls) {
    server.on("tlsClientError", (err: Error) =>
      logger?.warn({ err: err.message }, "TLS handshake failed (client without a valid certificate?)"),
    );
  }
  if (metrics) {
    metrics.observeDispatcher(dispatcher);
    metrics.observeServer(server);
    metrics.observeErrors(errors.counts);
  }
  let ops: OpsServer | undefined;
  if (options.metricsPort !== undefined) {
    const providerOps = options.provider.options.ops;
    ops = createOpsServer({
      port: options.metricsPort,
      ...(options.metricsHost !== undefined ? { host: options.metricsHost } : {}),
      ...(options.metricsToken !== undefined ? { token: options.metricsToken } : {}),
      ...(logger ? { logger } : {}),
      source: {
        metrics,
        http: providerOps?.http,
        paths: providerOps?.paths,
        readiness: async () =>
          checkReadiness({
            serving: health.serving(),
            loadedNodes: loadedNames(),
            readyWhen,
            readyNodes,
            providerNotReady: await providerOps?.notReady?.(),
            checks: options.readiness?.(),
          }),
      },
    });
  }
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    // Node refreshes a session's idle timer on a received PING only when someone listens for
    // PINGs: without this, an EMQX pool that is quiet but pinging would be closed when idle.
    if (idleTimeoutMs > 0) session.on("ping", ignorePing);
  });
  // Connection-level errors (resets, GOAWAY with an error code, protocol violations): the peer's
  // doing, logged at debug and counted. Streams get their listener first thing in "stream" below.
  server.on("sessionError", (err: Error, session: http2.ServerHttp2Session) => errors.onSessionError(err, session));
  const onStreamError = errors.onStreamError;

  if (transport === "native") {
    const serve = nativeHandler(dispatcher, { maxRequestBytes, onInternalError: errors.onInternalError });
    server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
      stream.on("error", onStreamError);
      // The health service is routed here so the native handler stays ExHook-only.
      if (headers[":path"]?.startsWith(HEALTH_PATH_PREFIX)) serveHealthStream(health, healthRequiresLoaded, stream, headers);
      else serve(stream, headers);
    });
  } else {
    const serve = connectTransport({ dispatcher, health, healthRequiresLoaded, maxRequestBytes, onInternalError: errors.onInternalError });
    server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
      stream.on("error", onStreamError);
      serve(stream, headers, flags, rawHeaders);
    });
  }

  let address: AddressInfo | undefined;
  return {
    get address() {
      return address;
    },
    get state() {
      return state;
    },
    get opsAddress() {
      return ops?.address;
    },
    dispatcher,
    metrics,
    http2: server,
    reloadTls: () => tlsWatch?.reload() ?? false,
    errorCounts: errors.counts,
    async listen() {
      // The probe port first: /healthz answers while the ExHook port binds.
      await ops?.listen();
      loopDelay ??= monitorLoopDelay();
      return new Promise<AddressInfo>((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        server.once("error", onError);
        server.listen(port, host, () => {
          server.off("error", onError);
          address = server.address() as AddressInfo;
          state = "serving";
          resolve(address);
        });
      });
    },
    close(graceMs = 5000) {
      // Drain: health turns NOT_SERVING and /readyz 503 at once; the listener stops accepting;
      // every session gets GOAWAY (no new streams) but its open streams run to their answer;
      // whatever is still open after graceMs is reset.
      state = state === "closed" ? "closed" : "draining";
      tlsWatch?.stop();
      const drained = new Promise<void>((resolve) => {
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
        for (const s of sessions) drainSession(s, graceMs);
      });
      return drained.then(async () => {
        state = "closed";
        loopDelay?.stop();
        loopDelay = undefined;
        learned.stop();
        await ops?.close();
      });
    },
  };
}

function ignorePing(): void {}

/**
 * Graceful HTTP/2 shutdown of one session (RFC 9113 §6.8): a first GOAWAY with the largest stream
 * id tells the client to open no new streams while still accepting the ones already on the wire;
 * a PING round trip proves the client has seen it; then `close()` sends the final GOAWAY with the
 * real last stream id and lets open streams finish. A bare `close()` would refuse
 * (REFUSED_STREAM) every call EMQX sent before it saw the GOAWAY, and EMQX would apply
 * `failed_action` to each.
 */
function drainSession(session: http2.ServerHttp2Session, graceMs: number): void {
  if (session.closed || session.destroyed) return;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    clearTimeout(guard);
    if (!session.closed && !session.destroyed) session.close();
  };
  // A peer that never acks the PING must not hold the drain: close after at most 1 s.
  const guard = setTimeout(finish, Math.min(1000, graceMs));
  guard.unref();
  try {
    session.goaway(http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1);
    if (!session.ping(() => finish())) finish();
  } catch {
    finish();
  }
}
