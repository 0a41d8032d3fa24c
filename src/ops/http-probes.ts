/**
 * The operations HTTP port: `/metrics` (Prometheus), `/healthz` (process up), `/readyz` (ready to
 * take EMQX traffic), and the provider's own routes (the use-case stack's read API: `/messages`,
 * `/presence`, `/stats`). Plain HTTP/1.1 so any scraper or kubelet can use it; kept off the ExHook
 * port because that one speaks gRPC over HTTP/2 only, may require client certificates, and must be
 * reachable by EMQX while this one should not be reachable by everyone.
 *
 * Secure by default: it listens on 127.0.0.1 unless told otherwise. With a token, `/metrics` and
 * the provider's routes need `Authorization: Bearer <token>` (the probes never do: kubelets call
 * them). On an interface other than loopback without a token, `/metrics` is open (as exporters
 * usually are) but the provider's routes, which expose stored data, are refused.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { ExHookConfigError } from "../errors.js";
import type { Logger, OpsRequest, OpsResponse, ProviderOps } from "../provider.js";

/** One more condition of `/readyz` (e.g. a bridged engine that must be connected). */
export interface ReadinessCheck {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

/** When `/readyz` reports ready (besides listening, not draining, and the provider's own check). */
export type ReadyWhen = "loaded" | "listening";

/** What `/readyz` reports. */
export interface Readiness {
  readonly ready: boolean;
  /** Why not (empty when ready). */
  readonly reasons: readonly string[];
  /** EMQX nodes that have loaded the provider (the allow-listed ones with `readyWhen: "loaded"`). */
  readonly loadedNodes: number;
}

/** Inputs of {@link checkReadiness}. */
export interface ReadinessInputs {
  /** Whether the ExHook port is listening and not draining. */
  readonly serving: boolean;
  /** Names of the EMQX nodes that have loaded the provider. */
  readonly loadedNodes: readonly string[];
  readonly readyWhen: ReadyWhen;
  /** The allow-list `readyWhen: "loaded"` needs. */
  readonly readyNodes: readonly string[] | undefined;
  /** The provider's own check (see {@link ProviderOps.notReady}): undefined = ready. */
  readonly providerNotReady: string | undefined;
  /** More conditions (a provider module's `addReadinessCheck`, e.g. bridged engines): each failing one is a reason. */
  readonly checks?: readonly ReadinessCheck[] | undefined;
}

/**
 * The readiness rule. `"listening"` (default): ready while the ExHook port listens, is not
 * draining, and the provider's own check passes (the use-case stack: its store answers).
 * `"loaded"`: additionally, one of the EMQX nodes in `readyNodes` has sent `OnProviderLoaded`;
 * loads from other names do not count, since anyone who reaches the ExHook port can send one.
 */
export function checkReadiness(i: ReadinessInputs): Readiness {
  const reasons: string[] = [];
  if (!i.serving) reasons.push("not serving (starting or draining)");
  if (i.providerNotReady !== undefined) reasons.push(i.providerNotReady);
  for (const c of i.checks ?? []) if (!c.ok) reasons.push(`${c.name}: ${c.detail}`);
  const allowed = i.readyWhen === "loaded" ? i.loadedNodes.filter((n) => i.readyNodes?.includes(n)) : i.loadedNodes;
  const loaded = new Set(allowed).size;
  if (i.readyWhen === "loaded" && loaded === 0) reasons.push(`waiting for OnProviderLoaded from one of ${(i.readyNodes ?? []).join(", ")}`);
  return { ready: reasons.length === 0, reasons, loadedNodes: loaded };
}

/** Checks `readyWhen` / `readyNodes`; throws an ExHookConfigError saying what to fix. */
export function checkReadyOptions(readyWhen: unknown, readyNodes: readonly string[] | undefined): ReadyWhen {
  const when = readyWhen ?? "listening";
  if (when !== "loaded" && when !== "listening")
    throw new ExHookConfigError(`readyWhen must be "loaded" or "listening", got ${JSON.stringify(when)}`);
  if (when === "loaded" && (!readyNodes || readyNodes.length === 0)) {
    throw new ExHookConfigError(
      'readyWhen "loaded" needs the EMQX node names that count (readyNodes / --ready-nodes emqx@host1,emqx@host2): anyone who reaches the ExHook port can send OnProviderLoaded',
    );
  }
  return when;
}

/** What the operations port serves; the single-process server and the `--workers` primary each make one. */
export interface OpsSource {
  /** `/readyz`. */
  readiness(): Promise<Readiness>;
  /** `/metrics`; absent = 404. */
  readonly metrics?: { text(): Promise<string>; readonly contentType: string } | undefined;
  /** Every other path; absent or `undefined` = 404. */
  readonly http?: ProviderOps["http"] | undefined;
  /** The paths `http` answers (for the 404 text). */
  readonly paths?: readonly string[] | undefined;
}

/** Options of {@link createOpsServer}. */
export interface OpsServerOptions {
  /** TCP port; 0 picks a free one. */
  readonly port: number;
  /** Interface. Default `"127.0.0.1"`: set it (e.g. `"0.0.0.0"`) to let scrapers and kubelets in. */
  readonly host?: string;
  /** What to serve. */
  readonly source: OpsSource;
  /** Bearer token required for `/metrics` and the provider's routes. Default: none. */
  readonly token?: string;
  /** Warnings at start (an exposed port without a token). */
  readonly logger?: Logger;
}

/** A running operations server. */
export interface OpsServer {
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
  readonly address: AddressInfo | undefined;
}

/** Whether `host` is a loopback address (only this machine can connect). */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Checks an operations port number; throws an ExHookConfigError naming it. */
export function checkOpsPort(port: unknown): number {
  if (typeof port !== "number" || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ExHookConfigError(`metrics port must be an integer from 0 to 65535, got ${JSON.stringify(port)}`);
  }
  return port;
}

/** Creates the operations HTTP server. */
export function createOpsServer(options: OpsServerOptions): OpsServer {
  checkOpsPort(options.port);
  const host = options.host ?? "127.0.0.1";
  const { source, logger } = options;
  if (options.token !== undefined && options.token.length < 16) {
    throw new ExHookConfigError("the operations port token must be at least 16 characters (e.g. openssl rand -hex 32)");
  }
  const tokenDigest = options.token === undefined ? undefined : createHash("sha256").update(options.token).digest();
  const exposed = !isLoopback(host);
  const authorized = (req: http.IncomingMessage): boolean => {
    if (!tokenDigest) return true;
    const h = req.headers.authorization ?? "";
    const given = h.startsWith("Bearer ") ? h.slice(7).trim() : "";
    return timingSafeEqual(createHash("sha256").update(given).digest(), tokenDigest);
  };
  const text = (res: http.ServerResponse, status: number, body: string, head: boolean, extra: http.OutgoingHttpHeaders = {}) => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": Buffer.byteLength(body), ...extra });
    res.end(head ? undefined : body);
  };
  const json = (res: http.ServerResponse, r: OpsResponse, head: boolean) => {
    const body = JSON.stringify(r.body);
    res.writeHead(r.status, {
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(body),
      "cache-control": "no-store",
    });
    res.end(head ? undefined : body);
  };
  const known = ["/metrics", "/healthz", "/readyz", ...(source.paths ?? [])].join(", ");

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const path = url.pathname;
    const head = req.method === "HEAD";
    if (req.method !== "GET" && !head) return text(res, 405, "method not allowed\n", false, { allow: "GET, HEAD" });
    if (path === "/healthz") return text(res, 200, "ok\n", head);
    if (path === "/readyz") {
      source.readiness().then(
        (r) => text(res, r.ready ? 200 : 503, `${r.ready ? "ready" : r.reasons.join("; ")}; loaded nodes: ${r.loadedNodes}\n`, head),
        (err: unknown) => text(res, 503, `readiness check failed: ${(err as Error).message}\n`, head),
      );
      return;
    }
    if (path === "/metrics" && source.metrics) {
      if (!authorized(req)) return text(res, 401, "bearer token required\n", head, { "www-authenticate": 'Bearer realm="emqx-exhook"' });
      const m = source.metrics;
      m.text().then(
        (body) => text(res, 200, body, head, { "content-type": m.contentType }),
        (err: unknown) => text(res, 500, `${(err as Error).message}\n`, head),
      );
      return;
    }
    if (source.http && path !== "/metrics") {
      if (!tokenDigest && exposed) {
        return text(res, 403, `${path} exposes stored data: on ${host} (not localhost) it needs a token (--metrics-token-file)\n`, head);
      }
      if (!authorized(req)) return text(res, 401, "bearer token required\n", head, { "www-authenticate": 'Bearer realm="emqx-exhook"' });
      const query: Record<string, string> = {};
      for (const [k, v] of url.searchParams) if (!(k in query)) query[k] = v;
      const request: OpsRequest = { method: req.method as string, path, query };
      source.http(request).then(
        (r) => (r ? json(res, r, head) : text(res, 404, `not found (try ${known})\n`, head)),
        (err: unknown) => json(res, { status: 500, body: { error: (err as Error).message } }, head),
      );
      return;
    }
    text(res, 404, `not found (try ${known})\n`, head);
  });
  // Probes and scrapes are short: do not let idle keep-alive sockets hold a drain open, nor a slow
  // client hold a socket for long.
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 60_000;
  let address: AddressInfo | undefined;
  return {
    get address() {
      return address;
    },
    listen() {
      return new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(options.port, host, () => {
          server.off("error", reject);
          address = server.address() as AddressInfo;
          if (exposed && !tokenDigest) {
            logger?.warn(
              { host, port: address.port },
              "operations port is reachable from other hosts without a token: /metrics is open to them, the read API is refused (set --metrics-token-file)",
            );
          }
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
