/**
 * One forwarder draining a pre-filled outbox into an engine, as its own process (the bench pins it
 * to one core): `node bridge-forward.js <sink-json> <outbox-spec> <rows>`. Prints one JSON line:
 * rows delivered, wall seconds from the first fetch to the last confirm, CPU ms of this process
 * in that time, and the forwarder's counters. Confirms are on (JetStream acks, publisher
 * confirms, XADD replies), batches of the sink's default size.
 */
import { performance } from "node:perf_hooks";
import type { Logger } from "../src/index.js";
import {
  createForwarder,
  createNatsSink,
  createRabbitmqSink,
  createRedisSink,
  newOwnerId,
  openPostgresStore,
  openSqliteWorkerStore,
  sinkSchema,
  type Sink,
  type SinkConfig,
} from "../src/usecases/index.js";

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

async function main(): Promise<void> {
  const [sinkJson, outbox, rowsArg] = process.argv.slice(2) as [string, string, string];
  const rows = Number(rowsArg);
  const cfg = sinkSchema.parse(JSON.parse(sinkJson)) as SinkConfig;
  const store = outbox.startsWith("postgres")
    ? await openPostgresStore({ url: outbox, poolSize: 4 })
    : await openSqliteWorkerStore({ file: outbox.replace(/^sqlite:/, "") });
  const events = { status() {} };
  const sink: Sink =
    cfg.kind === "nats"
      ? createNatsSink(cfg, events)
      : cfg.kind === "rabbitmq"
        ? createRabbitmqSink(cfg, events)
        : createRedisSink(cfg, events);
  await sink.connect();
  const fwd = createForwarder({
    sink,
    store,
    owner: newOwnerId(),
    partitions: 16,
    leaseMs: 15_000,
    pollMs: 20,
    batchSize: cfg.batch.size,
    lingerMs: 0,
    retry: cfg.retry,
    logger: silent,
  });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  fwd.start();
  while (fwd.stats().delivered < rows) {
    await new Promise((r) => setTimeout(r, 5));
    if (performance.now() - t0 > 300_000) break;
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await fwd.stop();
  await sink.close();
  await store.close();
  const st = fwd.stats();
  process.stdout.write(
    JSON.stringify({
      delivered: st.delivered,
      seconds,
      cpuMs: (cpu.user + cpu.system) / 1000,
      batches: st.batches,
      unreachable: st.unreachable,
      rejected: st.rejected,
    }) + "\n",
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
