/**
 * Prometheus metrics of the bridge (prom-client), per sink. Names (default prefix `exhook_`):
 *
 * - `exhook_bridge_committed_total{sink}` — entries committed to the outbox;
 * - `exhook_bridge_delivered_total{sink}` — messages the engine confirmed (then deleted);
 * - `exhook_bridge_failed_total{sink,reason}` — sends not confirmed: `unreachable` (timeout,
 *   connection down) or `rejected` (the engine refused the message);
 * - `exhook_bridge_retries_total{sink}` — messages sent again after a failed attempt;
 * - `exhook_bridge_connect_failures_total{sink}` — failed connection attempts to the engine;
 * - `exhook_bridge_parked_total{sink}` — messages parked after `retry.maxAttempts` refusals;
 * - `exhook_bridge_lost_total{sink,reason}` — messages that never reached the outbox or left it
 *   unsent: `queue_full`, `outbox_full` (refuse-new), `evicted` (drop-oldest), `unroutable`,
 *   `write_failed`, `expired` (persist-before-route budget ran out before the write);
 * - `exhook_bridge_outbox_depth{sink,state}` — rows `pending` / `parked` (read from the store at
 *   scrape time: with PostgreSQL, the whole shared outbox);
 * - `exhook_bridge_outbox_oldest_age_seconds{sink}` — age of the oldest pending row (0 when none);
 * - `exhook_bridge_confirm_duration_seconds{sink}` — send-to-last-confirm time of a batch;
 * - `exhook_bridge_sink_up{sink,kind}` — 1 while the engine connection is up;
 * - `exhook_bridge_partitions_held{sink}` — outbox partitions this instance forwards;
 * - `exhook_bridge_writer_queue` — captures waiting for their outbox commit;
 * - `exhook_bridge_forward_thread_restarts_total` — times the forwarding thread ended unexpectedly
 *   and was started again.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { DEFAULT_LATENCY_BUCKETS } from "../../ops/metrics.js";
import type { OutboxStats } from "../store.js";
import type { ForwarderObserver } from "./forwarder.js";
import type { LostReason } from "./outbox-writer.js";

/** Options of {@link createBridgeMetrics}. */
export interface BridgeMetricsOptions {
  readonly registry: Registry;
  /** Default `"exhook_"` (as the server's metrics). */
  readonly prefix?: string;
  /** The outbox depth, read at scrape time. */
  readonly outboxStats: () => Promise<readonly OutboxStats[]>;
  /** Sink connection states, read at scrape time. */
  readonly sinkUp: () => ReadonlyArray<{ readonly sink: string; readonly kind: string; readonly up: boolean }>;
  readonly writerQueue: () => number;
}

/** The bridge's metrics. */
export interface BridgeMetrics {
  /** The observer a sink's forwarder reports to. */
  forwarder(sink: string): ForwarderObserver;
  committed(sink: string, n: number): void;
  lost(sink: string, reason: LostReason, n: number): void;
  /** The forwarding thread ended unexpectedly and is started again. */
  forwardThreadRestarted(): void;
}

/** Registers the bridge metrics in `registry`. */
export function createBridgeMetrics(options: BridgeMetricsOptions): BridgeMetrics {
  const prefix = options.prefix ?? "exhook_";
  const registers = [options.registry];
  const committed = new Counter({
    name: `${prefix}bridge_committed_total`,
    help: "Entries committed to the bridge outbox.",
    labelNames: ["sink"],
    registers,
  });
  const delivered = new Counter({
    name: `${prefix}bridge_delivered_total`,
    help: "Messages the engine confirmed.",
    labelNames: ["sink"],
    registers,
  });
  const failed = new Counter({
    name: `${prefix}bridge_failed_total`,
    help: "Sends the engine did not confirm, by reason (unreachable, rejected).",
    labelNames: ["sink", "reason"],
    registers,
  });
  const retries = new Counter({
    name: `${prefix}bridge_retries_total`,
    help: "Messages sent again after a failed attempt.",
    labelNames: ["sink"],
    registers,
  });
  const connectFailures = new Counter({
    name: `${prefix}bridge_connect_failures_total`,
    help: "Failed connection attempts to the engine.",
    labelNames: ["sink"],
    registers,
  });
  const parked = new Counter({
    name: `${prefix}bridge_parked_total`,
    help: "Messages parked after too many refusals.",
    labelNames: ["sink"],
    registers,
  });
  const lost = new Counter({
    name: `${prefix}bridge_lost_total`,
    help: "Messages not bridged, by reason.",
    labelNames: ["sink", "reason"],
    registers,
  });
  const confirm = new Histogram({
    name: `${prefix}bridge_confirm_duration_seconds`,
    help: "Time from sending a batch to its last confirm, in seconds.",
    labelNames: ["sink"],
    buckets: [...DEFAULT_LATENCY_BUCKETS],
    registers,
  });
  const held = new Gauge({
    name: `${prefix}bridge_partitions_held`,
    help: "Outbox partitions this instance forwards.",
    labelNames: ["sink"],
    registers,
  });
  new Gauge({
    name: `${prefix}bridge_outbox_depth`,
    help: "Rows in the bridge outbox, by state (pending, parked).",
    labelNames: ["sink", "state"],
    registers,
    async collect() {
      for (const st of await options.outboxStats()) {
        this.set({ sink: st.sink, state: "pending" }, st.pending);
        this.set({ sink: st.sink, state: "parked" }, st.parked);
      }
    },
  });
  new Gauge({
    name: `${prefix}bridge_outbox_oldest_age_seconds`,
    help: "Age of the oldest pending outbox row, in seconds (0 when none).",
    labelNames: ["sink"],
    registers,
    async collect() {
      const now = Date.now();
      for (const st of await options.outboxStats())
        this.set({ sink: st.sink }, st.oldestCreatedAt === null ? 0 : Math.max(0, now - st.oldestCreatedAt) / 1000);
    },
  });
  new Gauge({
    name: `${prefix}bridge_sink_up`,
    help: "1 while the sink's engine connection is up.",
    labelNames: ["sink", "kind"],
    registers,
    collect() {
      for (const s of options.sinkUp()) this.set({ sink: s.sink, kind: s.kind }, s.up ? 1 : 0);
    },
  });
  const threadRestarts = new Counter({
    name: `${prefix}bridge_forward_thread_restarts_total`,
    help: "Times the forwarding thread ended unexpectedly and was started again.",
    registers,
  });
  new Gauge({
    name: `${prefix}bridge_writer_queue`,
    help: "Captures waiting for their outbox commit.",
    registers,
    collect() {
      this.set(options.writerQueue());
    },
  });

  return {
    forwarder(sink) {
      const d = delivered.labels({ sink });
      const un = failed.labels({ sink, reason: "unreachable" });
      const rej = failed.labels({ sink, reason: "rejected" });
      const r = retries.labels({ sink });
      const p = parked.labels({ sink });
      const c = confirm.labels({ sink });
      const h = held.labels({ sink });
      const cf = connectFailures.labels({ sink });
      // Every series of the sink exists from the start (at 0), so rates and alerts work before the first event.
      for (const c of [d, un, rej, r, p, cf, committed.labels({ sink })]) c.inc(0);
      return {
        delivered: (n) => d.inc(n),
        failed: (n, reason) => (reason === "rejected" ? rej : un).inc(n),
        retried: (n) => r.inc(n),
        parked: (n) => p.inc(n),
        confirmSeconds: (x) => c.observe(x),
        partitions: (n) => h.set(n),
        connectFailed: () => cf.inc(),
      };
    },
    committed: (sink, n) => committed.labels({ sink }).inc(n),
    lost: (sink, reason, n) => lost.labels({ sink, reason }).inc(n),
    forwardThreadRestarted: () => threadRestarts.inc(),
  };
}
