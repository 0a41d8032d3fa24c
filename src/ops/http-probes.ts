/**
 * The operations HTTP port: `/metrics` (Prometheus), `/healthz` (process up) and `/readyz`
 * (ready to take EMQX traffic), plain HTTP/1.1 so any scraper or kubelet can use it. Kept off
 * the ExHook port because that one speaks gRPC over HTTP/2 only, and may require client certs.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { ExHookConfigError } from "../errors.js";
import type { ExHookMetrics } from "./metrics.js";

/** One more condition of `/readyz` (e.g. a bridged engine that must be connected). */
export interface ReadinessCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

/** When `/readyz` reports ready. */
export type ReadyWhen = "loaded" | "listening";

/** Options of {@link createOpsServer}. */
export interface OpsServerOptions {
  /** TCP port; 0 picks a free one. */
  readonly port: number;
  /** Interface. Default `"0.0.0.0"`. */
  readonly host?: string;
  /** Metrics to serve on `/metrics`; without them `/metrics` answers 404. */
  readonly metrics?: ExHookMetrics;
  /** Whether the ExHook server is listening and not draining. */
  readonly serving: () => boolean;
  /** Number of EMQX nodes that loaded the provider (`dispatcher.loadedNodes().length`). */
  readonly loadedNodes: () => number;
  /**
   * `"loaded"` (default): ready once at least one EMQX node has sent `OnProviderLoaded`.
   * `"listening"`: ready as soon as the ExHook port listens. Use `"listening"` when EMQX reaches
   * this server through a Kubernetes Service: an unready pod gets no traffic, so it would never be
   * loaded; and EMQX 4.x/5.0–5.8 do not re-send `OnProviderLoaded` to a restarted server.
   */
  readonly readyWhen?: ReadyWhen;
  /** More conditions: `/readyz` answers 503 while any is not ok, naming it. */
  readonly checks?: () => readonly ReadinessCheck[];
}

/** A running operations server. */
export interface OpsServer {
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
  readonly address: AddressInfo | undefined;
}

/** Creates the `/metrics` + `/healthz` + `/readyz` HTTP server. */
export function createOpsServer(options: OpsServerOptions): OpsServer {
  const readyWhen = options.readyWhen ?? "loaded";
  if (readyWhen !== "loaded" && readyWhen !== "listening") {
    throw new ExHookConfigError(`readyWhen must be "loaded" or "listening", got ${JSON.stringify(readyWhen)}`);
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
    throw new ExHookConfigError(`metrics port must be an integer from 0 to 65535, got ${JSON.stringify(options.port)}`);
  }
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain" }).end("method not allowed\n");
      return;
    }
    if (path === "/healthz") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
      return;
    }
    if (path === "/readyz") {
      const serving = options.serving();
      const loaded = options.loadedNodes();
      const failing = (options.checks?.() ?? []).filter((c) => !c.ok);
      const ready = serving && (readyWhen === "listening" || loaded > 0) && failing.length === 0;
      const why = !serving
        ? "not serving (starting or draining)"
        : readyWhen !== "listening" && loaded === 0
          ? "waiting for OnProviderLoaded from an EMQX node"
          : failing.length > 0
            ? `not ready: ${failing.map((c) => `${c.name}: ${c.detail}`).join("; ")}`
            : "ready";
      res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(`${why}; loaded nodes: ${loaded}\n`);
      return;
    }
    if (path === "/metrics" && options.metrics) {
      const m = options.metrics;
      m.text().then(
        (text) => res.writeHead(200, { "content-type": m.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(`${(err as Error).message}\n`),
      );
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" }).end("not found (try /metrics, /healthz, /readyz)\n");
  });
  // Probes and scrapes are short: do not let idle keep-alive sockets hold a drain open.
  server.keepAliveTimeout = 5000;
  let address: AddressInfo | undefined;
  return {
    get address() {
      return address;
    },
    listen() {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(options.port, options.host ?? "0.0.0.0", () => {
          server.off("error", reject);
          address = server.address() as AddressInfo;
          resolve(address);
        });
      });
    },
    close() {
      return new Promise((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        server.closeIdleConnections();
      });
    },
  };
}
