/**
 * Forwarding in a worker thread (`bridge.forwarding.mode: thread`, the default): the forwarders, the
 * engine clients and a store connection of their own run in forward-worker.ts, so fetching,
 * sending, waiting for confirms and settling never take the event loop that answers EMQX, and the
 * thread runs at a lower CPU priority (a bridged publish then costs the serving thread only its
 * capture and outbox commit). The main thread keeps the metrics (the thread reports its forwarders'
 * events after each batch, at most every 10 ms), the log lines (the thread sends them) and the
 * readiness. `stats()` is as of the last report.
 *
 * A thread that ends unexpectedly (an engine client's uncaught error, say) is logged, counted
 * (`exhook_bridge_forward_thread_restarts_total`) and started again after a pause that grows with
 * repeated failures (0.1 s … 5 s); it keeps this process's owner id, so it renews the same outbox
 * leases. Rows it had sent but not settled are sent again (same ids: at-least-once). The counts of
 * its last ~10 ms, not yet reported, are lost with it (metrics only: the outbox is the record).
 */
import { Worker } from "node:worker_threads";
import type { Logger } from "../../provider.js";
import { exponentialDelay } from "../store-retry.js";
import { FORWARD_WORKER_FILE } from "./forward-worker-file.js";
import type { ForwardStoreSpec, ForwardThreadInit, FromForwardThread, ToForwardThread } from "./forward-worker.js";
import type { ForwarderObserver, ForwarderStats } from "./forwarder.js";
import type { Forwarding, ForwardingSpec } from "./forwarding.js";

/** Options of {@link createForwardThread}. */
export interface ForwardThreadOptions {
  readonly spec: ForwardingSpec;
  readonly store: ForwardStoreSpec;
  /** Nice value of the thread on Linux (0 = unchanged). */
  readonly nice: number;
  /** Where each sink's forwarder events go (the bridge metrics). */
  readonly observer: (sink: string) => ForwarderObserver;
  readonly logger?: Logger;
  /** Called when the thread ended unexpectedly and is started again. */
  readonly onRestart?: () => void;
  /** The compiled thread entry. Default: forward-worker.js next to this module. */
  readonly workerFile?: string;
  /** Longest wait for the thread to stop (its batches in flight land) before it is terminated, in ms. Default 30000. */
  readonly stopTimeoutMs?: number;
}

/** The forwarding thread, as the bridge uses it. */
export interface ForwardThread extends Forwarding {
  /** Times the thread ended unexpectedly and was started again. */
  restarts(): number;
  /** @internal For tests of the restart path: makes the thread exit, or throw an uncaught error, the way a crash would. */
  crashForTest(how: "exit" | "throw"): void;
}

const IDLE_STATS: Omit<ForwarderStats, "lastError"> = {
  delivered: 0,
  unreachable: 0,
  rejected: 0,
  retried: 0,
  parked: 0,
  batches: 0,
  connectFailures: 0,
  failing: 0,
  partitions: [],
  connected: false,
};

/** Starts the forwarding thread (on {@link Forwarding.start}). */
export function createForwardThread(options: ForwardThreadOptions): ForwardThread {
  const { spec, logger } = options;
  const file = options.workerFile ?? FORWARD_WORKER_FILE;
  const init: ForwardThreadInit = { spec, store: options.store, nice: options.nice };
  const observers = new Map<string, ForwarderObserver>();
  for (const s of spec.sinks) observers.set(s.name, options.observer(s.name));
  /** The current thread's counters (as of its last report), and those of the threads before it. */
  const stats = new Map<string, ForwarderStats>();
  const before = new Map<string, ForwarderStats>();
  for (const s of spec.sinks) {
    stats.set(s.name, { ...IDLE_STATS, lastError: "" });
    before.set(s.name, { ...IDLE_STATS, lastError: "" });
  }
  /** Counters since start, across restarts (as the metrics count). */
  const total = (sink: string): ForwarderStats | undefined => {
    const now = stats.get(sink);
    const old = before.get(sink);
    if (!now || !old) return undefined;
    return {
      ...now,
      delivered: old.delivered + now.delivered,
      unreachable: old.unreachable + now.unreachable,
      rejected: old.rejected + now.rejected,
      retried: old.retried + now.retried,
      parked: old.parked + now.parked,
      batches: old.batches + now.batches,
      connectFailures: old.connectFailures + now.connectFailures,
    };
  };
  let worker: Worker | undefined;
  let started = false;
  let stopping: Promise<void> | undefined;
  let restarts = 0;
  let failures = 0;
  let restartTimer: ReturnType<typeof setTimeout> | undefined;
  let healthyTimer: ReturnType<typeof setTimeout> | undefined;
  /** Why the last thread could not start (its own report), for the exit log line. */
  let failure = "";

  const onMessage = (msg: FromForwardThread) => {
    switch (msg.t) {
      case "report":
        for (const [name, r] of Object.entries(msg.sinks)) {
          const o = observers.get(name);
          if (!o) continue;
          if (r.delivered) o.delivered(r.delivered);
          if (r.unreachable) o.failed(r.unreachable, "unreachable");
          if (r.rejected) o.failed(r.rejected, "rejected");
          if (r.retried) o.retried(r.retried);
          if (r.parked) o.parked(r.parked);
          for (let i = 0; i < r.connectFailed; i++) o.connectFailed();
          for (const s of r.confirmSeconds) o.confirmSeconds(s);
          if (r.partitions !== undefined) o.partitions(r.partitions);
          if (r.stats) stats.set(name, r.stats);
        }
        return;
      case "log":
        logger?.[msg.level](msg.obj, msg.msg);
        return;
      case "started":
        logger?.info(
          { sinks: spec.sinks.map((s) => s.name), nice: msg.niced ? options.nice : 0, store: options.store.kind },
          "bridge: forwarding thread started",
        );
        // Running for a while: the next failure starts again after the shortest pause.
        healthyTimer = setTimeout(() => (failures = 0), 30_000);
        healthyTimer.unref();
        return;
      case "failed":
        failure = msg.error;
        return;
    }
  };

  function launch(): void {
    failure = "";
    const w = new Worker(file, { workerData: init, stdout: false, stderr: false });
    worker = w;
    w.on("message", onMessage);
    w.on("error", (err) => {
      failure = err.message;
      logger?.error({ err: err.message, stack: err.stack }, "bridge: forwarding thread failed");
    });
    w.on("exit", (code) => {
      if (healthyTimer) clearTimeout(healthyTimer);
      if (w !== worker) return;
      worker = undefined;
      for (const [name, st] of stats) {
        before.set(name, { ...(total(name) as ForwarderStats), connected: false, partitions: [] });
        stats.set(name, { ...IDLE_STATS, failing: st.failing, lastError: st.lastError });
      }
      for (const o of observers.values()) o.partitions(0);
      if (stopping) return;
      restarts++;
      failures++;
      options.onRestart?.();
      const delay = exponentialDelay(failures - 1);
      logger?.error(
        { code, ...(failure ? { err: failure } : {}), restartInMs: delay, restarts },
        "bridge: forwarding thread ended; starting it again (unsettled messages are sent again)",
      );
      restartTimer = setTimeout(() => {
        restartTimer = undefined;
        if (!stopping) launch();
      }, delay);
    });
  }

  return {
    start() {
      if (started) return;
      started = true;
      launch();
    },
    notify(sink, rows) {
      worker?.postMessage({ t: "notify", sink, rows } satisfies ToForwardThread);
    },
    stats: total,
    connected: (sink) => stats.get(sink)?.connected ?? false,
    restarts: () => restarts,
    crashForTest(how) {
      worker?.postMessage({ t: "crash", how } satisfies ToForwardThread);
    },
    stop: () =>
      (stopping ??= (async () => {
        if (restartTimer) clearTimeout(restartTimer);
        if (healthyTimer) clearTimeout(healthyTimer);
        const w = worker;
        if (!w) return;
        const exited = new Promise<void>((resolve) => w.once("exit", () => resolve()));
        w.postMessage({ t: "stop" } satisfies ToForwardThread);
        const limit = options.stopTimeoutMs ?? 30_000;
        let timer: ReturnType<typeof setTimeout> | undefined;
        const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), limit)));
        if (await Promise.race([exited.then(() => false), late])) {
          logger?.warn(
            { afterMs: limit },
            "bridge: forwarding thread did not stop in time; terminating it (unsettled messages are sent again)",
          );
          await w.terminate();
          await exited;
        }
        clearTimeout(timer);
      })()),
  };
}
