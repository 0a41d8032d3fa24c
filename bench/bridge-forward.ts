/**
 * One forwarder draining a pre-filled outbox into an engine, as its own process (the bench pins it
 * to one core): `node bridge-forward.js <sink-json> <outbox-spec> <rows> [thread|main]`. Prints one
 * JSON line: rows delivered, wall seconds from the first fetch to the last confirm, CPU ms of this
 * process (all its threads) in that time, and the forwarder's counters. Confirms are on (JetStream
 * acks, publisher confirms, XADD replies), batches of the sink's default size.
 *
 * - `thread` (default; what `serve` runs): the forwarding thread of the bridge (forward-thread.ts),
 *   with its own store connection (SQLite opened on that thread, or a PostgreSQL pool);
 * - `main`: the forwarder on this process's main thread, the SQLite store in its worker threads
 *   (`bridge.forwarding.mode: main`).
 */
import { performance } from "node:perf_hooks";
import type { Logger } from "../src/index.js";
import { createForwardThread } from "../src/usecases/bridge/forward-thread.js";
import { createLocalForwarding, createSink, type ForwardingSpec } from "../src/usecases/bridge/forwarding.js";
import {
  newOwnerId,
  openPostgresStore,
  openSqliteWorkerStore,
  sinkSchema,
  type ForwarderObserver,
  type SinkConfig,
} from "../src/usecases/index.js";

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

async function main(): Promise<void> {
  const [sinkJson, outbox, rowsArg, mode = "thread"] = process.argv.slice(2) as [string, string, string, string?];
  const rows = Number(rowsArg);
  const cfg = sinkSchema.parse(JSON.parse(sinkJson)) as SinkConfig;
  const pgUrl = outbox.startsWith("postgres") ? outbox : undefined;
  const file = outbox.replace(/^sqlite:/, "");
  let delivered = 0;
  let batches = 0;
  let failed = 0;
  let stop: () => Promise<void>;
  let begin: () => void;
  const counting: ForwarderObserver = {
    delivered: (k) => void (delivered += k),
    failed: (k) => void (failed += k),
    retried() {},
    parked() {},
    confirmSeconds: () => void batches++,
    partitions() {},
    connectFailed() {},
  };
  // Every row is already there: no linger, a short poll.
  const spec: ForwardingSpec = {
    sinks: [
      {
        ...cfg,
        batch: {
          ...cfg.batch,
          lingerMs: 0,
          ...(process.env["BENCH_BRIDGE_BATCH"] ? { size: Number(process.env["BENCH_BRIDGE_BATCH"]) } : {}),
        },
      },
    ],
    partitions: 16,
    leaseMs: 15_000,
    pollMs: 20,
    owner: newOwnerId(),
  };
  if (mode === "thread") {
    const t = createForwardThread({
      spec,
      store: pgUrl ? { kind: "postgres", url: pgUrl } : { kind: "sqlite", file },
      nice: 0,
      observer: () => counting,
      // The clock starts when the thread has opened its store and started its forwarder (as the
      // main mode's starts with the store open and the engine connected).
      logger: { ...silent, info: (_o: object, msg?: string) => (msg === "bridge: forwarding thread started" ? mark() : undefined) },
    });
    begin = () => t.start();
    stop = () => t.stop();
  } else {
    const store = pgUrl ? await openPostgresStore({ url: pgUrl, poolSize: 4 }) : await openSqliteWorkerStore({ file });
    const sink = createSink(spec.sinks[0] as SinkConfig, { status() {} }, silent);
    await sink.connect();
    const fwd = createLocalForwarding({ spec, store, sinks: [sink], observer: () => counting, logger: silent });
    begin = () => fwd.start();
    stop = async () => {
      await fwd.stop();
      await store.close();
    };
  }
  let cpu0 = process.cpuUsage();
  let t0 = performance.now();
  function mark(): void {
    cpu0 = process.cpuUsage();
    t0 = performance.now();
  }
  begin();
  while (delivered < rows) {
    await new Promise((r) => setTimeout(r, 5));
    if (performance.now() - t0 > 300_000) break;
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await stop();
  process.stdout.write(JSON.stringify({ mode, delivered, seconds, cpuMs: (cpu.user + cpu.system) / 1000, batches, failed }) + "\n");
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
