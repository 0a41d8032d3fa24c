/**
 * The publish-hook server of the bridging benchmark: `node bridge-server.js <off|on> <engine-url> <outbox-spec> [thread|main]`.
 * Prints `READY <port>`; on SIGTERM closes (flushing the outbox writer, letting the forwarder
 * catch up, stopping it) and prints one JSON line: hook calls, CPU ms of this process from READY
 * to then (serving, committing and forwarding them), and the bridge's counters.
 *
 * - `off`: `onMessagePublish` answers keep() (what the hook costs without bridging);
 * - `on`: the bridge's message.publish handler with one Redis Streams sink and the outbox on
 *   `outbox-spec` (`sqlite:<file>` or a postgres:// URL), the SQLite store in its worker threads;
 *   forwarding in the bridge's forwarding thread (`thread`, the default, what `serve` runs), on
 *   the serving thread (`main`), or not at all (`none`: what capture and commit alone cost; the
 *   rows stay in the outbox).
 *
 * The load generator sends one fixed frame, so both modes give each message a fresh id first
 * (the outbox keeps one row per id): a counter rendered as 32 hex characters, like EMQX's.
 */
import { readFileSync } from "node:fs";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { createExHookServer } from "../src/server.js";
import { defineProvider, keep, type HookHandler, type Logger } from "../src/index.js";
import { createBridge, openPostgresStore, openSqliteWorkerStore, parseConfig, type Bridge, type Store } from "../src/usecases/index.js";

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

async function main(): Promise<void> {
  const [mode, engineUrl, outbox, forwarding = "thread"] = process.argv.slice(2) as [string, string, string, string?];
  let n = 0;
  const freshId = (req: { message?: { id: string } | undefined }) => {
    if (req.message) req.message.id = (++n).toString(16).toUpperCase().padStart(32, "0");
  };
  let bridge: Bridge | undefined;
  let store: Store | undefined;
  let handler: HookHandler<"onMessagePublish">;
  if (mode === "on") {
    store = outbox.startsWith("postgres")
      ? await openPostgresStore({ url: outbox, poolSize: 4 })
      : await openSqliteWorkerStore({ file: outbox.replace(/^sqlite:/, "") });
    const cfg = parseConfig({
      bridge: {
        enabled: true,
        forwarding: { mode: forwarding === "main" ? "main" : "thread" },
        sinks: [{ name: "bench", kind: "redis", url: engineUrl, stream: process.env["BENCH_BRIDGE_KEY"] ?? "bench:hook", maxLen: 100_000 }],
      },
    });
    const pgUrl = outbox.startsWith("postgres") ? outbox : undefined;
    bridge = createBridge({
      config: cfg.bridge,
      store,
      logger: silent,
      forwardStore: pgUrl ? { kind: "postgres", url: pgUrl } : { kind: "sqlite", file: outbox.replace(/^sqlite:/, "") },
    });
    const inner = (bridge.handlers.onMessagePublish as { handler: HookHandler<"onMessagePublish"> }).handler;
    handler = (req, ctx) => {
      freshId(req);
      return inner(req, ctx);
    };
    if (forwarding !== "none") bridge.start();
  } else {
    const k = keep();
    handler = (req) => {
      freshId(req);
      return k;
    };
  }
  const server = createExHookServer({
    provider: defineProvider({ onMessagePublish: handler }, { name: `bridge-${mode}` }),
    port: 0,
    host: "127.0.0.1",
    logger: silent,
  });
  const addr = await server.listen();
  const cpuAtReady = process.cpuUsage();
  const cpuSince = () => {
    const c = process.cpuUsage(cpuAtReady);
    return (c.user + c.system) / 1000;
  };
  // The serving (main) thread's own CPU (Linux: its task's utime + stime, in clock ticks of 10 ms).
  const mainTicks = (): number => {
    try {
      const st = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
      const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
      return Number(f[11]) + Number(f[12]);
    } catch {
      return NaN;
    }
  };
  const mainAtReady = mainTicks();
  // How long the serving thread's event loop was blocked (a call waits at least that long).
  const eld = monitorEventLoopDelay({ resolution: 1 });
  eld.enable();
  const loopDelay = () => ({ p99Ms: eld.percentile(99) / 1e6, maxMs: eld.max / 1e6 });
  const mainCpuSince = () => (mainTicks() - mainAtReady) * 10;
  process.stdout.write(`READY ${addr.port}\n`);
  process.on("SIGTERM", () => {
    void (async () => {
      await server.close(1000);
      if (bridge) {
        // Let the forwarder catch up before stopping, so the counters say whether it kept pace.
        const until = Date.now() + 10_000;
        while (Date.now() < until && ((await bridge.outboxStats())[0]?.pending ?? 0) > 0) await new Promise((r) => setTimeout(r, 50));
        await bridge.close();
        const st = bridge.stats();
        process.stdout.write(
          JSON.stringify({
            calls: n,
            cpuMs: cpuSince(),
            mainCpuMs: mainCpuSince(),
            loopDelay: loopDelay(),
            writer: st.writer,
            forwarder: st.sinks["bench"],
            outbox: await store?.outboxStats(),
          }) + "\n",
        );
        await store?.close();
      } else
        process.stdout.write(JSON.stringify({ calls: n, cpuMs: cpuSince(), mainCpuMs: mainCpuSince(), loopDelay: loopDelay() }) + "\n");
      process.exit(0);
    })();
  });
}

void main();
