/**
 * The bridge use case: hook handlers that capture messages and events for the configured sinks,
 * the outbox writer that commits them to the store, and one forwarder per sink that moves them to
 * its engine with at-least-once delivery (docs/bridging.md).
 *
 * Hot path: a message hook matches the sinks' topic filters, copies the payload once and queues
 * one capture per matching sink; it answers `keep()` at once. With `persistBeforeRoute`, the
 * message.publish handler instead waits until its captures are committed (or refused, or failed)
 * and answers `keep()` only when all were committed, else the configured fallback; the framework
 * answers the same fallback when the budget (`timeoutMs`) runs out first.
 */
import { Registry } from "prom-client";
import { ExHookConfigError } from "../../errors.js";
import { HOOKS, type HookKey } from "../../hooks.js";
import type { ReadinessCheck } from "../../ops/http-probes.js";
import type { HookConfig, HookHandler, HookHandlers, Logger } from "../../provider.js";
import { drop, keep, type PublishDecision } from "../../responses.js";
import { compileTopicFilters, type TopicMatcher } from "../../topic.js";
import type { OutboxBound, OutboxStats, Store } from "../store.js";
import { CaptureState, type Capture, type SinkRoute } from "./capture.js";
import { MESSAGE_HOOKS, type BridgeConfig, type BridgeHook, type SinkConfig } from "./config-schema.js";
import { createForwardThread, type ForwardThread } from "./forward-thread.js";
import type { ForwardStoreSpec } from "./forward-worker.js";
import { newOwnerId, type ForwarderStats } from "./forwarder.js";
import { createLocalForwarding, createSink, loadSinkClient, logSinkStatus, type Forwarding, type ForwardingSpec } from "./forwarding.js";
import { createBridgeMetrics } from "./metrics.js";
import { createOutboxWriter, type OutboxWriter, type OutboxWriterStats } from "./outbox-writer.js";
import type { Sink } from "./sink.js";
import { compileTemplate } from "./template.js";

/** Options of {@link createBridge}. */
export interface BridgeOptions {
  /** The validated `bridge` section of the configuration. */
  readonly config: BridgeConfig;
  readonly store: Store;
  readonly logger?: Logger;
  /** Registry for the bridge metrics. Default: a new one (`bridge.registry`). */
  readonly registry?: Registry;
  /** Where `${env:NAME}` in credentials is read from. Default `process.env`. */
  readonly env?: NodeJS.ProcessEnv;
  /** This instance's owner id for partition leases. Default: `host/pid/random`. */
  readonly owner?: string;
  /**
   * How the forwarding thread reaches the store (`config.forwarding.mode: "thread"`): the same
   * database as `store`, opened again by the thread. Without it (an in-memory store, say) the
   * forwarders run on this thread whatever the mode says. `createStack` passes it for the store it opens.
   */
  readonly forwardStore?: ForwardStoreSpec;
  /** The compiled forwarding-thread entry (tests). Default: forward-worker.js of this package. */
  readonly forwardWorkerFile?: string;
}

/** Counters and state of the bridge. */
export interface BridgeStats {
  readonly writer: OutboxWriterStats;
  readonly sinks: Record<string, ForwarderStats & { readonly kind: string }>;
  /** Outbox depth per sink, as last read (by a scrape, `/stats` or the CLI). */
  readonly outbox: readonly OutboxStats[];
}

/** The assembled bridge. */
export interface Bridge {
  /** Hook handlers to serve (merge them into a provider's handlers; see `mergeHookHandlers`). */
  readonly handlers: HookHandlers;
  /** Where the forwarders run: `thread` (a worker thread of their own) or `main` (this thread). */
  readonly forwarding: "thread" | "main";
  /** The engine clients, when the forwarders run on this thread (empty when they run in the forwarding thread). */
  readonly sinks: readonly Sink[];
  /** The forwarding thread, when there is one. */
  readonly forwardThread: ForwardThread | undefined;
  readonly writer: OutboxWriter;
  readonly registry: Registry;
  readonly owner: string;
  /** Starts the forwarders (connecting to the engines in the background). */
  start(): void;
  /** Commits everything captured so far. */
  flush(): Promise<void>;
  /** Sinks with `readiness: true`: ready while their engine is connected. */
  readiness(): ReadinessCheck[];
  /** Reads the outbox depth from the store now. */
  outboxStats(): Promise<readonly OutboxStats[]>;
  stats(): BridgeStats;
  /** Commits what is queued, stops the forwarders (after their batch in flight), closes the engine connections. */
  close(): Promise<void>;
}

/** Resolves `${env:NAME}` in a credential; throws naming the setting when the variable is missing. */
export function resolveSecret(value: string, where: string, env: NodeJS.ProcessEnv): string {
  return value.replace(/\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const v = env[name];
    if (v === undefined) throw new ExHookConfigError(`${where}: environment variable ${name} is not set`);
    return v;
  });
}

function withSecrets(s: SinkConfig, i: number, env: NodeJS.ProcessEnv): SinkConfig {
  const out: Record<string, unknown> = { ...s };
  for (const k of ["url", "user", "password", "token", "username"]) {
    const v = out[k];
    if (typeof v === "string") out[k] = resolveSecret(v, `bridge.sinks[${i}].${k}`, env);
  }
  return out as SinkConfig;
}

function routeOf(cfg: SinkConfig, i: number): SinkRoute {
  const where = `bridge.sinks[${i}]`;
  switch (cfg.kind) {
    case "nats":
      return {
        name: cfg.name,
        style: "nats",
        messageTemplate: compileTemplate(cfg.subject, "nats", `${where}.subject`),
        eventTemplate: compileTemplate(cfg.eventSubject, "nats", `${where}.eventSubject`),
      };
    case "rabbitmq":
      return {
        name: cfg.name,
        style: "amqp",
        messageTemplate: compileTemplate(cfg.routingKey, "amqp", `${where}.routingKey`),
        eventTemplate: compileTemplate(cfg.eventRoutingKey, "amqp", `${where}.eventRoutingKey`),
      };
    case "redis":
      return {
        name: cfg.name,
        style: "raw",
        messageTemplate: compileTemplate(cfg.stream, "raw", `${where}.stream`),
        eventTemplate: compileTemplate(cfg.eventStream, "raw", `${where}.eventStream`),
      };
  }
}

interface HookRoute {
  readonly route: SinkRoute;
  readonly match: TopicMatcher | undefined;
}

const KEEP = keep();
const DROP = drop();

/** Creates the bridge (loading each configured engine's client; a missing one fails naming its package). */
export function createBridge(options: BridgeOptions): Bridge {
  const { config, store, logger } = options;
  const env = options.env ?? process.env;
  const owner = options.owner ?? newOwnerId();
  const registry = options.registry ?? new Registry();
  const sinkCfgs = config.sinks.map((s, i) => withSecrets(s, i, env));
  const routes = sinkCfgs.map(routeOf);
  let lastStats: readonly OutboxStats[] = [];
  let statsRead: { at: number; p: Promise<readonly OutboxStats[]> } | undefined;
  const outboxStats = (): Promise<readonly OutboxStats[]> => {
    // Two gauges read it per scrape: one store query serves both.
    if (statsRead && Date.now() - statsRead.at < 500) return statsRead.p;
    const p = store.outboxStats(sinkCfgs.map((s) => s.name)).then((st) => (lastStats = st));
    statsRead = { at: Date.now(), p };
    p.catch(() => (statsRead = undefined));
    return p;
  };
  let writer: OutboxWriter | undefined;
  const threaded = config.forwarding.mode === "thread" && options.forwardStore !== undefined;
  // Where the forwarders run, the engine clients load here: a missing package fails at start.
  if (threaded) for (const c of sinkCfgs) loadSinkClient(c.kind);
  const sinks = threaded ? [] : sinkCfgs.map((cfg) => createSink(cfg, logSinkStatus(logger, cfg), logger));
  const metrics = createBridgeMetrics({
    registry,
    outboxStats,
    // Read at scrape time, when `fwd` (below) exists.
    sinkUp: () => sinkCfgs.map((s) => ({ sink: s.name, kind: s.kind, up: fwd.connected(s.name) })),
    writerQueue: () => writer?.stats().queued ?? 0,
  });
  const spec: ForwardingSpec = {
    sinks: sinkCfgs,
    partitions: config.partitions,
    leaseMs: config.leaseMs,
    pollMs: config.pollMs,
    owner,
  };
  const observer = (sink: string) => metrics.forwarder(sink);
  const forwardThread = threaded
    ? createForwardThread({
        spec,
        store: options.forwardStore as ForwardStoreSpec,
        nice: config.forwarding.nice,
        observer,
        onRestart: () => metrics.forwardThreadRestarted(),
        ...(options.forwardWorkerFile ? { workerFile: options.forwardWorkerFile } : {}),
        ...(logger ? { logger } : {}),
      })
    : undefined;
  const fwd: Forwarding = forwardThread ?? createLocalForwarding({ spec, store, sinks, observer, ...(logger ? { logger } : {}) });
  const bounds: Record<string, OutboxBound> = {};
  for (const s of sinkCfgs) bounds[s.name] = s.outbox;
  const w = createOutboxWriter({
    store,
    bounds,
    maxQueue: config.writer.maxQueue,
    batchSize: config.writer.batchSize,
    lingerMs: config.writer.lingerMs,
    retries: config.writer.retries,
    onCommitted(perSink) {
      for (const [sink, n] of perSink) {
        metrics.committed(sink, n);
        fwd.notify(sink, n);
      }
    },
    onLost: (sink, reason, n) => metrics.lost(sink, reason, n),
    ...(logger ? { logger } : {}),
  });
  writer = w;

  const pbr = config.persistBeforeRoute;
  if (pbr.enabled) {
    for (const s of sinkCfgs) {
      if (s.hooks.includes("message.publish") && s.outbox.overflow === "drop-oldest") {
        logger?.warn(
          { sink: s.name },
          "bridge: persistBeforeRoute with outbox.overflow drop-oldest: a full outbox evicts messages subscribers already received; refuse-new keeps both sides consistent",
        );
      }
    }
  }

  // One handler per bridged hook, serving every sink that bridges it.
  const handlers: Record<string, unknown> = {};
  const bridged = new Set<BridgeHook>(sinkCfgs.flatMap((s) => s.hooks));
  for (const hook of bridged) {
    const def = HOOKS.find((h) => h.name === hook);
    if (!def) continue;
    const isMessage = (MESSAGE_HOOKS as readonly string[]).includes(hook);
    const hookRoutes: HookRoute[] = [];
    const topics = new Set<string>();
    sinkCfgs.forEach((s, i) => {
      if (!s.hooks.includes(hook)) return;
      hookRoutes.push({
        route: routes[i] as SinkRoute,
        match: isMessage && !s.topics.includes("#") ? compileTopicFilters(s.topics) : undefined,
      });
      for (const t of s.topics) topics.add(t);
    });
    const topicList = isMessage && !topics.has("#") ? [...topics] : undefined;
    if (hook === "message.publish" && pbr.enabled) {
      const fallback = pbr.fallback === "drop" ? DROP : KEEP;
      const handler: HookHandler<"onMessagePublish"> = (req, ctx) => {
        const m = req.message;
        if (!m) return KEEP;
        let payload: Uint8Array | undefined;
        let pending = 0;
        const caps: Capture[] = [];
        const at = Date.now();
        for (const r of hookRoutes) {
          if (r.match && !r.match(m.topic)) continue;
          payload ??= m.payload.slice();
          caps.push({
            route: r.route,
            hook,
            request: req,
            payload,
            at,
            deadline: ctx.deadline,
            state: CaptureState.queued,
            done: undefined,
          });
        }
        if (caps.length === 0) return KEEP;
        return new Promise<PublishDecision>((resolve) => {
          const one = () => {
            if (--pending > 0) return;
            resolve(caps.every((c) => c.state === CaptureState.committed) ? KEEP : fallback);
          };
          pending = caps.length;
          for (const c of caps) {
            c.done = one;
            w.push(c);
          }
        });
      };
      handlers[def.key] = {
        handler,
        ...(topicList ? { topics: topicList } : {}),
        timeoutMs: pbr.timeoutMs,
        fallback: pbr.fallback,
      } satisfies HookConfig<"onMessagePublish">;
    } else if (isMessage) {
      const handler = (req: { message?: { topic: string; payload: Uint8Array } }) => {
        const m = req.message;
        if (m) {
          let payload: Uint8Array | undefined;
          const at = Date.now();
          for (const r of hookRoutes) {
            if (r.match && !r.match(m.topic)) continue;
            payload ??= m.payload.slice();
            w.push({ route: r.route, hook, request: req, payload, at, deadline: 0, state: CaptureState.queued, done: undefined });
          }
        }
        return hook === "message.publish" ? KEEP : undefined;
      };
      handlers[def.key] = { handler, ...(topicList ? { topics: topicList } : {}) };
    } else {
      handlers[def.key] = (req: unknown) => {
        const at = Date.now();
        for (const r of hookRoutes)
          w.push({ route: r.route, hook, request: req, payload: undefined, at, deadline: 0, state: CaptureState.queued, done: undefined });
      };
    }
  }

  let started = false;
  let closing: Promise<void> | undefined;
  return {
    handlers: handlers as HookHandlers,
    forwarding: forwardThread ? "thread" : "main",
    sinks,
    forwardThread,
    writer: w,
    registry,
    owner,
    start() {
      if (started) return;
      started = true;
      fwd.start();
    },
    flush: () => w.flush(),
    readiness() {
      return sinkCfgs.flatMap((s) => {
        if (!s.readiness) return [];
        const st = fwd.stats(s.name);
        const ok = fwd.connected(s.name);
        return [
          {
            name: `bridge sink ${s.name} (${s.kind})`,
            ok,
            detail: ok ? "connected" : `not connected${st?.lastError ? `: ${st.lastError}` : ""}`,
          },
        ];
      });
    },
    outboxStats,
    stats() {
      const out: Record<string, ForwarderStats & { kind: string }> = {};
      for (const s of sinkCfgs) {
        const st = fwd.stats(s.name);
        if (st) out[s.name] = { ...st, kind: s.kind };
      }
      return { writer: w.stats(), sinks: out, outbox: lastStats };
    },
    close: () =>
      (closing ??= (async () => {
        await w.close();
        await fwd.stop();
      })()),
  };
}

/**
 * Merges two sets of hook handlers into one: hooks in only one set are kept as they are; a hook in
 * both runs the first handler, then the second. For message.publish the first handler's decision
 * stands when it is not `keep`; otherwise the second's. The topic filters become the union (no
 * filter on either side = all topics); budget and fallback come from the second set when it sets
 * them. Used to serve persistence and the bridge from one provider.
 */
export function mergeHookHandlers(a: HookHandlers, b: HookHandlers): HookHandlers {
  const out: Record<string, unknown> = { ...a };
  for (const [key, entry] of Object.entries(b)) {
    const first = (a as Record<string, unknown>)[key];
    if (first === undefined) {
      out[key] = entry;
      continue;
    }
    const ca = normalize(first);
    const cb = normalize(entry);
    const topics = ca.topics === undefined || cb.topics === undefined ? undefined : [...new Set([...ca.topics, ...cb.topics])];
    const isPublish = (key as HookKey) === "onMessagePublish";
    const handler = isPublish
      ? (req: never, ctx: never): unknown => {
          const r1 = ca.handler(req, ctx);
          const then = (d1: unknown) => (d1 && (d1 as { kind?: string }).kind !== "keep" ? d1 : cb.handler(req, ctx));
          return r1 instanceof Promise ? r1.then(then) : then(r1);
        }
      : (req: never, ctx: never): unknown => {
          // Notification hooks: both run whatever the other does (a failing one must not hide the event from the other).
          let r1: unknown;
          let r2: unknown;
          let err: unknown;
          try {
            r1 = ca.handler(req, ctx);
          } catch (e) {
            err = e;
          }
          try {
            r2 = cb.handler(req, ctx);
          } catch (e) {
            err ??= e;
          }
          if (r1 instanceof Promise || r2 instanceof Promise) {
            return Promise.allSettled([r1, r2]).then((rs) => {
              const failed = rs.find((r) => r.status === "rejected");
              if (err !== undefined) throw err;
              if (failed) throw (failed as PromiseRejectedResult).reason;
            });
          }
          if (err !== undefined) throw err;
          return undefined;
        };
    out[key] = {
      handler,
      ...(topics ? { topics } : {}),
      ...(cb.timeoutMs !== undefined ? { timeoutMs: cb.timeoutMs } : ca.timeoutMs !== undefined ? { timeoutMs: ca.timeoutMs } : {}),
      ...(cb.fallback !== undefined ? { fallback: cb.fallback } : ca.fallback !== undefined ? { fallback: ca.fallback } : {}),
    };
  }
  return out as HookHandlers;
}

interface NormalHook {
  handler: (req: never, ctx: never) => unknown;
  topics: readonly string[] | undefined;
  timeoutMs: number | undefined;
  fallback: string | undefined;
}

function normalize(entry: unknown): NormalHook {
  if (typeof entry === "function")
    return { handler: entry as NormalHook["handler"], topics: undefined, timeoutMs: undefined, fallback: undefined };
  const c = entry as { handler: NormalHook["handler"]; topics?: readonly string[]; timeoutMs?: number; fallback?: string };
  return {
    handler: c.handler,
    topics: c.topics && c.topics.length > 0 ? c.topics : undefined,
    timeoutMs: c.timeoutMs,
    fallback: c.fallback,
  };
}
