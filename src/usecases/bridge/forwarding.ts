/**
 * The forwarders of a bridge, wherever they run: on the calling thread ({@link createLocalForwarding},
 * `bridge.forwarding.mode: main`, and inside the forwarding thread) or in a worker thread of their
 * own (forward-thread.ts, the default). The bridge talks to either through {@link Forwarding}.
 */
import type { Logger } from "../../provider.js";
import type { Store } from "../store.js";
import type { SinkConfig } from "./config-schema.js";
import { createForwarder, type Forwarder, type ForwarderObserver, type ForwarderStats } from "./forwarder.js";
import { createNatsSink, loadNatsClient } from "./nats-sink.js";
import { createRabbitmqSink, loadRabbitmqClient } from "./rabbitmq-sink.js";
import { createRedisSink, loadRedisClient } from "./redis-sink.js";
import type { Sink, SinkEvents } from "./sink.js";

/** What the bridge needs from its forwarders. */
export interface Forwarding {
  /** Starts forwarding (connecting to the engines in the background). */
  start(): void;
  /** Rows were committed for `sink` by this process: its forwarder wakes up (after the linger). */
  notify(sink: string, rows: number): void;
  /** The sink's counters (zeros until the forwarding thread first reports). */
  stats(sink: string): ForwarderStats | undefined;
  /** Whether the sink's engine connection is up. */
  connected(sink: string): boolean;
  /** Stops every forwarder after its batch in flight, gives up the leases, closes the engine connections. */
  stop(): Promise<void>;
}

/** The part of the bridge configuration the forwarders use (structured-clonable: it crosses to the thread). */
export interface ForwardingSpec {
  /** The sinks, with `${env:…}` secrets already resolved. */
  readonly sinks: readonly SinkConfig[];
  readonly partitions: number;
  readonly leaseMs: number;
  readonly pollMs: number;
  /** The owner id of this process's leases (kept across restarts of the forwarding thread). */
  readonly owner: string;
}

/** Loads the engine client of a sink kind, so a missing package fails at start wherever the sink will run. */
export function loadSinkClient(kind: SinkConfig["kind"]): void {
  if (kind === "nats") loadNatsClient();
  else if (kind === "rabbitmq") loadRabbitmqClient();
  else loadRedisClient();
}

/** Creates the engine client of a sink (not connected yet). */
export function createSink(cfg: SinkConfig, events: SinkEvents, logger: Logger | undefined): Sink {
  switch (cfg.kind) {
    case "nats":
      return createNatsSink(cfg, events, logger);
    case "rabbitmq":
      return createRabbitmqSink(cfg, events, logger);
    case "redis":
      return createRedisSink(cfg, events, logger);
  }
}

/** Logs an engine connection's state changes (the same lines whichever thread forwards). */
export function logSinkStatus(logger: Logger | undefined, cfg: SinkConfig): SinkEvents {
  return {
    status(status, detail) {
      if (status === "connected") logger?.info({ sink: cfg.name, kind: cfg.kind, server: detail }, "bridge: engine connected");
      else if (detail === "closed") logger?.info({ sink: cfg.name, kind: cfg.kind }, "bridge: engine connection closed (stopping)");
      else logger?.warn({ sink: cfg.name, kind: cfg.kind, reason: detail }, "bridge: engine disconnected; messages wait in the outbox");
    },
  };
}

/** Options of {@link createLocalForwarding}. */
export interface LocalForwardingOptions {
  readonly spec: ForwardingSpec;
  readonly store: Store;
  /** One engine client per `spec.sinks` entry, in that order. */
  readonly sinks: readonly Sink[];
  readonly observer: (sink: string) => ForwarderObserver;
  readonly logger?: Logger;
}

/** The forwarders on this thread: one per sink. */
export function createLocalForwarding(options: LocalForwardingOptions): Forwarding {
  const { spec, store, sinks, logger } = options;
  const forwarders = new Map<string, Forwarder>();
  const byName = new Map<string, Sink>();
  spec.sinks.forEach((cfg, i) => {
    const sink = sinks[i] as Sink;
    byName.set(cfg.name, sink);
    forwarders.set(
      cfg.name,
      createForwarder({
        sink,
        store,
        owner: spec.owner,
        partitions: spec.partitions,
        leaseMs: spec.leaseMs,
        pollMs: spec.pollMs,
        batchSize: cfg.batch.size,
        lingerMs: cfg.batch.lingerMs,
        retry: cfg.retry,
        observer: options.observer(cfg.name),
        ...(logger ? { logger } : {}),
      }),
    );
  });
  return {
    start() {
      for (const f of forwarders.values()) f.start();
    },
    notify: (sink, rows) => forwarders.get(sink)?.notify(rows),
    stats: (sink) => forwarders.get(sink)?.stats(),
    connected: (sink) => byName.get(sink)?.connected() ?? false,
    async stop() {
      await Promise.all([...forwarders.values()].map((f) => f.stop()));
      await Promise.all(
        sinks.map((s) =>
          s
            .close()
            .catch((err: unknown) =>
              logger?.warn({ sink: s.name, err: (err as Error).message }, "bridge: closing the engine connection failed"),
            ),
        ),
      );
    },
  };
}
