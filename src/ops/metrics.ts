/**
 * Prometheus metrics for an ExHook server (prom-client, in a registry of their own).
 *
 * Per-hook observation is a {@link HookMiddleware}: pass `metrics.middleware` in the server's
 * `middleware` option (the server does this when given `metrics`). Non-hook events (gRPC status of
 * every stream, provider loads) are observed on the HTTP/2 server by {@link ExHookMetrics.observeServer}.
 * Label values are few and fixed (hook × package × kind), so child metrics are resolved once per
 * label set and cached: the hot path does no label hashing.
 */
import type * as http2 from "node:http2";
import { performance } from "node:perf_hooks";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { Code } from "@connectrpc/connect";
import type { Dispatcher } from "../dispatch.js";
import type { HookMiddleware, HookOutcome } from "../provider.js";
import { routeTable } from "../wire.js";
import { PEER_ERROR_KINDS, type ErrorCounts } from "./peer-errors.js";

/**
 * Latency buckets in seconds: 0.5 ms to 5 s. The low end separates in-memory handlers (sub-ms) from
 * ones that hit a database; the top matches EMQX's default `request_timeout` of 5 s, beyond which
 * EMQX has already applied its `failed_action`.
 */
export const DEFAULT_LATENCY_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** Options of {@link createMetrics}. */
export interface MetricsOptions {
  /** Metric name prefix. Default `"exhook_"`. */
  readonly prefix?: string;
  /** Registry to register into. Default: a new registry (the global one is left alone). */
  readonly registry?: Registry;
  /** Histogram buckets in seconds. Default {@link DEFAULT_LATENCY_BUCKETS}. */
  readonly buckets?: readonly number[];
  /** Also collect prom-client's process metrics (CPU, memory, event loop lag). Default true. */
  readonly processMetrics?: boolean;
  /**
   * EMQX node names that always get their own `node` label on the broker metrics (the server's
   * `readyNodes`). Other names, which come from whoever calls `OnProviderLoaded`, get their own
   * label only for the first {@link MetricsOptions.maxBrokerLabels}; the rest share `node="_other"`.
   */
  readonly knownNodes?: readonly string[];
  /** Most node names labelled on the broker metrics besides `knownNodes`. Default 32. */
  readonly maxBrokerLabels?: number;
}

/** The `node` (and `version`, `cluster`) label value shared by broker metrics past the label cap. */
export const OTHER_NODE_LABEL = "_other";
/** Longest label value taken from the wire; longer ones are cut (with "…"). */
const MAX_LABEL_CHARS = 128;
const label = (v: string) => (v.length > MAX_LABEL_CHARS ? `${v.slice(0, MAX_LABEL_CHARS - 1)}…` : v);

/** The metrics of one server. */
export interface ExHookMetrics {
  readonly registry: Registry;
  /** Observes every hook call: calls, decisions, fallbacks, latency, in-flight. */
  readonly middleware: HookMiddleware;
  /** Reports loaded nodes from this dispatcher at scrape time. */
  observeDispatcher(dispatcher: Dispatcher): void;
  /** Counts gRPC statuses of every stream the server answers (hook or not). */
  observeServer(server: http2.Http2Server | http2.Http2SecureServer): void;
  /** Reports a server's peer and internal error counts at scrape time. */
  observeErrors(source: () => ErrorCounts): void;
  /** Prometheus text exposition. */
  text(): Promise<string>;
  /** Content-Type of {@link text}. */
  readonly contentType: string;
}

/** gRPC status code names, lower snake case as in EMQX logs (`deadline_exceeded`). */
const CODE_NAMES: Record<string, string> = { "0": "ok" };
for (const [name, value] of Object.entries(Code)) {
  if (typeof value === "number") CODE_NAMES[String(value)] = name.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

interface Series {
  readonly calls: Counter.Internal;
  readonly inFlight: Gauge.Internal<string>;
  readonly duration: Histogram.Internal<string>;
  readonly decisions: Map<string, Counter.Internal>;
  readonly fallbacks: Map<string, Counter.Internal>;
}

/**
 * Creates the metric set. Names (with the default prefix):
 * - `exhook_hook_calls_total{hook,package}` — handler calls (after topic-filter matching);
 * - `exhook_hook_decisions_total{hook,package,decision}` — `allow`/`deny`/`no-opinion`, `keep`/`rewrite`/`drop`;
 * - `exhook_hook_fallbacks_total{hook,package,reason}` — fallback answers by reason (`timeout`, `error`, `invalid`);
 * - `exhook_hook_duration_seconds{hook,package}` — handler latency histogram (includes middleware);
 * - `exhook_hook_in_flight{hook,package}` — calls running now;
 * - `exhook_grpc_responses_total{package,method,code}` — every gRPC stream answered, by status;
 * - `exhook_broker_loaded{package,node,version,cluster}` — 1 per EMQX node that loaded the provider
 *   (past the label cap, `node="_other"` counts the rest);
 * - `exhook_broker_loads{package,node}` — how many times that node sent `OnProviderLoaded`;
 * - `exhook_loaded_brokers` — number of loaded (package, node) pairs;
 * - `exhook_peer_errors_total{kind}` — errors caused by peers on the ExHook port (resets, GOAWAY
 *   with an error code, protocol violations, floods), handled and logged at debug;
 * - `exhook_internal_errors_total` — errors of our own while serving a call (answered INTERNAL,
 *   logged at error with the stack).
 */
export function createMetrics(options: MetricsOptions = {}): ExHookMetrics {
  const prefix = options.prefix ?? "exhook_";
  const registry = options.registry ?? new Registry();
  const registers = [registry];
  const buckets = [...(options.buckets ?? DEFAULT_LATENCY_BUCKETS)];
  if (options.processMetrics !== false) {
    collectDefaultMetrics({ register: registry, prefix: `${prefix}process_` });
  }

  const calls = new Counter({
    name: `${prefix}hook_calls_total`,
    help: "Hook handler calls (after topic-filter matching).",
    labelNames: ["hook", "package"],
    registers,
  });
  const decisions = new Counter({
    name: `${prefix}hook_decisions_total`,
    help: "Decisions sent by decision hooks, by kind.",
    labelNames: ["hook", "package", "decision"],
    registers,
  });
  const fallbacks = new Counter({
    name: `${prefix}hook_fallbacks_total`,
    help: "Fallback answers sent instead of the handler's, by reason.",
    labelNames: ["hook", "package", "reason"],
    registers,
  });
  const duration = new Histogram({
    name: `${prefix}hook_duration_seconds`,
    help: "Hook handler latency in seconds (compare with EMQX request_timeout).",
    labelNames: ["hook", "package"],
    buckets,
    registers,
  });
  const inFlight = new Gauge({
    name: `${prefix}hook_in_flight`,
    help: "Hook calls running now.",
    labelNames: ["hook", "package"],
    registers,
  });
  const grpc = new Counter({
    name: `${prefix}grpc_responses_total`,
    help: "gRPC calls answered, by package, method and status code.",
    labelNames: ["package", "method", "code"],
    registers,
  });

  const dispatchers: Dispatcher[] = [];
  // Label values on the broker metrics come from the wire (any caller can send OnProviderLoaded),
  // so the set of names that get a label of their own is bounded; the rest collapse into one.
  const known = new Set(options.knownNodes ?? []);
  const labelled = new Set<string>();
  const maxLabels = options.maxBrokerLabels ?? 32;
  const nodeLabel = (node: string): string => {
    if (known.has(node) || labelled.has(node)) return label(node);
    if (labelled.size < maxLabels) {
      labelled.add(node);
      return label(node);
    }
    return OTHER_NODE_LABEL;
  };
  const loadedGauge = new Gauge({
    name: `${prefix}broker_loaded`,
    help: "1 for each EMQX node that has loaded the provider (OnProviderLoaded) and not unloaded it.",
    labelNames: ["package", "node", "version", "cluster"],
    registers,
    // With --workers the primary sums each metric over the workers; a node loaded by two workers is still 1.
    aggregator: "max",
    collect() {
      this.reset();
      for (const d of dispatchers) {
        for (const n of d.loadedNodes()) {
          const node = nodeLabel(n.node);
          if (node === OTHER_NODE_LABEL) this.inc({ package: n.package, node, version: OTHER_NODE_LABEL, cluster: OTHER_NODE_LABEL }, 1);
          else this.set({ package: n.package, node, version: label(n.version), cluster: label(n.clusterName) }, 1);
        }
      }
    },
  });
  const loadsGauge = new Gauge({
    name: `${prefix}broker_loads`,
    help: "How many times each loaded EMQX node sent OnProviderLoaded (re-loads after reconnects count).",
    labelNames: ["package", "node"],
    registers,
    collect() {
      this.reset();
      for (const d of dispatchers) for (const n of d.loadedNodes()) this.inc({ package: n.package, node: nodeLabel(n.node) }, n.loads);
    },
  });
  new Gauge({
    name: `${prefix}loaded_brokers`,
    help: "Number of (package, EMQX node) pairs that have loaded the provider.",
    registers,
    aggregator: "max",
    collect() {
      this.set(dispatchers.reduce((sum, d) => sum + d.loadedNodes().length, 0));
    },
  });
  void loadedGauge;
  void loadsGauge;

  // Counted by the server (src/ops/peer-errors.ts) whether or not metrics are on; read at scrape.
  const errorSources: Array<() => ErrorCounts> = [];
  new Counter({
    name: `${prefix}peer_errors_total`,
    help: "Errors caused by peers on the ExHook port (connection resets, stream resets and GOAWAY with an error code, protocol violations, floods), by kind.",
    labelNames: ["kind"],
    registers,
    collect() {
      this.reset();
      for (const kind of PEER_ERROR_KINDS) {
        const n = errorSources.reduce((sum, src) => sum + src().peer[kind], 0);
        if (n > 0) this.inc({ kind }, n);
      }
    },
  });
  new Counter({
    name: `${prefix}internal_errors_total`,
    help: "Errors of our own while serving a call (answered INTERNAL, logged with the stack).",
    registers,
    collect() {
      this.reset();
      const n = errorSources.reduce((sum, src) => sum + src().internal, 0);
      if (n > 0) this.inc(n);
    },
  });

  const series = new Map<string, Series>();
  function seriesFor(hook: string, pkg: string): Series {
    const key = `${hook}|${pkg}`;
    let s = series.get(key);
    if (s === undefined) {
      const labels = { hook, package: pkg };
      s = {
        calls: calls.labels(labels),
        inFlight: inFlight.labels(labels),
        duration: duration.labels(labels),
        decisions: new Map(),
        fallbacks: new Map(),
      };
      series.set(key, s);
    }
    return s;
  }

  function record(s: Series, hook: string, pkg: string, outcome: HookOutcome): void {
    const kind = outcome.decision?.kind;
    if (kind !== undefined) {
      let c = s.decisions.get(kind);
      if (c === undefined) s.decisions.set(kind, (c = decisions.labels({ hook, package: pkg, decision: kind })));
      c.inc();
    }
    const reason = outcome.fallback;
    if (reason !== undefined) {
      let c = s.fallbacks.get(reason);
      if (c === undefined) s.fallbacks.set(reason, (c = fallbacks.labels({ hook, package: pkg, reason })));
      c.inc();
    }
  }

  const middleware: HookMiddleware = (call, next) => {
    const pkg = call.ctx.package;
    const s = seriesFor(call.hook, pkg);
    s.calls.inc();
    s.inFlight.inc();
    const start = performance.now();
    return next().then(
      (outcome) => {
        s.inFlight.dec();
        s.duration.observe((performance.now() - start) / 1000);
        record(s, call.hook, pkg, outcome);
        return outcome;
      },
      (err: unknown) => {
        // A middleware inside threw: the dispatcher answers with the fallback.
        s.inFlight.dec();
        s.duration.observe((performance.now() - start) / 1000);
        record(s, call.hook, pkg, { decision: undefined, fallback: "error" });
        throw err;
      },
    );
  };

  const methodOf = new Map<string, { package: string; method: string }>();
  for (const [path, route] of routeTable()) methodOf.set(path, { package: route.pkg, method: route.rpc });
  methodOf.set("/grpc.health.v1.Health/Check", { package: "grpc.health.v1", method: "Check" });
  methodOf.set("/grpc.health.v1.Health/Watch", { package: "grpc.health.v1", method: "Watch" });
  const grpcChildren = new Map<string, Counter.Internal>();

  return {
    registry,
    middleware,
    contentType: registry.contentType,
    observeDispatcher(dispatcher) {
      if (!dispatchers.includes(dispatcher)) dispatchers.push(dispatcher);
    },
    observeErrors(source) {
      if (!errorSources.includes(source)) errorSources.push(source);
    },
    observeServer(server) {
      server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
        const path = headers[":path"] ?? "";
        stream.once("close", () => {
          // Trailers-Only errors carry the status in the headers, normal answers in the trailers.
          const status = stream.sentHeaders?.["grpc-status"] ?? stream.sentTrailers?.["grpc-status"];
          const code = status === undefined ? (stream.rstCode === 0 ? "none" : "reset") : (CODE_NAMES[String(status)] ?? String(status));
          const route = methodOf.get(path);
          // Unknown paths share one series per code, so a scanner cannot blow up cardinality.
          const key = route ? `${path}|${code}` : `?|${code}`;
          let c = grpcChildren.get(key);
          if (c === undefined) {
            c = grpc.labels({ package: route?.package ?? "unknown", method: route?.method ?? "unknown", code });
            grpcChildren.set(key, c);
          }
          c.inc();
        });
      });
    },
    text: () => registry.metrics(),
  };
}
