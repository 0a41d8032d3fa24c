/**
 * The forwarding thread's entry (started by forward-thread.ts): opens a store connection of its own
 * (SQLite on this thread, or a small PostgreSQL pool), creates the engine clients and runs the
 * forwarders of every sink here, at a lower CPU priority. It reports to the main thread: log lines,
 * and the forwarders' metric events and counters (forwarder.ts's observer) soon after each batch,
 * at most one report per 10 ms.
 */
import { parentPort, workerData } from "node:worker_threads";
import type { Logger } from "../../provider.js";
import { openPostgresStore } from "../pg-store.js";
import { openSqliteStore } from "../sqlite-store.js";
import type { Store } from "../store.js";
import { lowerThreadPriority } from "../thread-priority.js";
import type { ForwarderObserver, ForwarderStats } from "./forwarder.js";
import type { Sink } from "./sink.js";
import { createLocalForwarding, createSink, logSinkStatus, type ForwardingSpec } from "./forwarding.js";

/** How the thread opens the store: the same database the main thread's store uses, through its own connection. */
export type ForwardStoreSpec =
  | { readonly kind: "sqlite"; readonly file: string; readonly busyTimeoutMs?: number }
  | { readonly kind: "postgres"; readonly url: string; readonly poolSize?: number };

/** What `workerData` holds. */
export interface ForwardThreadInit {
  readonly spec: ForwardingSpec;
  readonly store: ForwardStoreSpec;
  /** Nice value of the thread (Linux); 0 leaves it as it is. */
  readonly nice: number;
}

/** A message from the main thread. */
export type ToForwardThread =
  | { readonly t: "notify"; readonly sink: string; readonly rows: number }
  | { readonly t: "stop" }
  /** @internal For tests of the restart path: ends this thread the way a crash would (an exit, or an uncaught error). */
  | { readonly t: "crash"; readonly how: "exit" | "throw" };

/** One sink's forwarder events since the last report, and its counters now. */
export interface SinkReport {
  delivered: number;
  unreachable: number;
  rejected: number;
  retried: number;
  parked: number;
  connectFailed: number;
  confirmSeconds: number[];
  partitions: number | undefined;
  stats: ForwarderStats | undefined;
}

type Level = "debug" | "info" | "warn" | "error";

/** A message to the main thread. */
export type FromForwardThread =
  | { readonly t: "started"; readonly niced: boolean }
  | { readonly t: "failed"; readonly error: string }
  | { readonly t: "log"; readonly level: Level; readonly obj: Record<string, unknown>; readonly msg: string }
  | { readonly t: "report"; readonly sinks: Record<string, SinkReport> };

const REPORT_MS = 10;

function emptyReport(): SinkReport {
  return {
    delivered: 0,
    unreachable: 0,
    rejected: 0,
    retried: 0,
    parked: 0,
    connectFailed: 0,
    confirmSeconds: [],
    partitions: undefined,
    stats: undefined,
  };
}

/** Only what structured cloning keeps: errors become their message. */
function plain(obj: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) out[k] = v instanceof Error ? v.message : v;
  return out;
}

async function run(): Promise<void> {
  const port = parentPort;
  if (!port) throw new Error("forward-worker.js runs as a worker thread (the bridge starts it)");
  const init = workerData as ForwardThreadInit;
  const post = (msg: FromForwardThread) => port.postMessage(msg);
  const at =
    (level: Level) =>
    (obj: object, msg?: string): void => {
      try {
        post({ t: "log", level, obj: plain(obj), msg: msg ?? "" });
      } catch {
        post({ t: "log", level, obj: {}, msg: msg ?? "" });
      }
    };
  const logger: Logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  const niced = init.nice > 0 ? lowerThreadPriority(init.nice) : false;
  /** Could not start: says why and ends the thread (the main thread logs it and starts another). */
  const giveUp = (error: string) => {
    post({ t: "failed", error });
    port.close();
  };

  let store: Store;
  try {
    store =
      init.store.kind === "sqlite"
        ? openSqliteStore({
            file: init.store.file,
            ...(init.store.busyTimeoutMs !== undefined ? { busyTimeoutMs: init.store.busyTimeoutMs } : {}),
          })
        : await openPostgresStore({ url: init.store.url, poolSize: init.store.poolSize ?? 3, readPoolSize: 1, logger });
  } catch (err) {
    giveUp(`cannot open the outbox store: ${(err as Error).message}`);
    return;
  }

  const reports = new Map<string, SinkReport>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  // Runs from timers set once the forwarders report, so `fwd` (below) exists by then.
  const flush = () => {
    timer = undefined;
    lastFlush = Date.now();
    const sinks: Record<string, SinkReport> = {};
    for (const [name, r] of reports) sinks[name] = { ...r, stats: fwd.stats(name) };
    reports.clear();
    if (Object.keys(sinks).length > 0) post({ t: "report", sinks });
  };
  let lastFlush = 0;
  // A report soon after each batch settles (its events come together), at most one per REPORT_MS:
  // a crash of the thread loses at most the counts of that window.
  const soon = () => {
    if (timer === undefined) timer = setTimeout(flush, Math.max(0, lastFlush + REPORT_MS - Date.now()));
  };
  const reportOf = (sink: string): SinkReport => {
    let r = reports.get(sink);
    if (!r) reports.set(sink, (r = emptyReport()));
    soon();
    return r;
  };
  const observer = (sink: string): ForwarderObserver => ({
    delivered: (n) => void (reportOf(sink).delivered += n),
    failed: (n, reason) => void (reportOf(sink)[reason] += n),
    retried: (n) => void (reportOf(sink).retried += n),
    parked: (n) => void (reportOf(sink).parked += n),
    confirmSeconds: (s) => void reportOf(sink).confirmSeconds.push(s),
    partitions: (n) => void (reportOf(sink).partitions = n),
    connectFailed: () => void (reportOf(sink).connectFailed += 1),
  });

  let sinks: Sink[];
  try {
    sinks = init.spec.sinks.map((cfg) => {
      const log = logSinkStatus(logger, cfg);
      return createSink(
        cfg,
        {
          status(status, detail) {
            log.status(status, detail);
            // The main thread's readiness and `sink_up` follow the connection (the report carries `connected`).
            reportOf(cfg.name);
          },
        },
        logger,
      );
    });
  } catch (err) {
    await store.close().catch(() => undefined);
    giveUp((err as Error).message);
    return;
  }
  const fwd = createLocalForwarding({ spec: init.spec, store, sinks, observer, logger });
  let stopping = false;
  port.on("message", (msg: ToForwardThread) => {
    if (msg.t === "notify") fwd.notify(msg.sink, msg.rows);
    else if (msg.t === "crash") {
      if (msg.how === "exit") process.exit(70);
      setImmediate(() => {
        throw new Error("forwarding thread crash (test)");
      });
    } else if (msg.t === "stop" && !stopping) {
      stopping = true;
      void (async () => {
        await fwd.stop();
        await store
          .close()
          .catch((err: unknown) => logger.warn({ err: (err as Error).message }, "bridge: closing the outbox store failed"));
        for (const s of init.spec.sinks) reportOf(s.name);
        if (timer !== undefined) clearTimeout(timer);
        flush();
        port.close();
      })();
    }
  });
  fwd.start();
  post({ t: "started", niced });
}

void run();
