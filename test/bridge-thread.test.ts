/**
 * The forwarding thread (`bridge.forwarding.mode: thread`, the default): forwarders, engine clients
 * and a store connection of their own in a worker thread at a lower CPU priority. What must hold:
 * a thread that dies (exit or uncaught error) is logged, counted and started again, and nothing
 * committed is lost (order per client kept, re-sends carry the same id); a thread that cannot open
 * its store is retried while the hooks keep committing; the thread runs at the configured nice
 * value; closing stops it.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { keyHash } from "../src/usecases/bridge/outbox-shared";
import { createForwardThread } from "../src/usecases/bridge/forward-thread";
import type { ForwardingSpec } from "../src/usecases/bridge/forwarding";
import { newOwnerId, openSqliteStore, sinkSchema, type ForwarderObserver, type SinkConfig } from "../src/usecases/index";
import { REDIS_URL, eventually, readRedisStream, redisClient, skipNotice, startTcpProxy, unique } from "./helpers/brokers";
import { checkOrder, memoryLogger, openTestBridge, payloadsById, type TestBridge } from "./helpers/bridge";

skipNotice("bridge-thread", { "Redis (EXHOOK_TEST_REDIS_URL)": REDIS_URL });
const redisTest = REDIS_URL ? test : test.skip;

const CLIENTS = ["c1", "c2", "c3", "c4"];

async function metric(tb: TestBridge, name: string, labels = ""): Promise<number> {
  const text = await tb.bridge.registry.metrics();
  const line = text.split("\n").find((l) => (l.startsWith(`${name}{`) || l.startsWith(`${name} `)) && l.includes(labels));
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

/** Nice values of this process's threads (Linux /proc; field 19 of stat, after the parenthesised name). */
function threadNices(): number[] {
  return readdirSync("/proc/self/task").map((tid) => {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
  });
}

function redisSink(key: string, extra: Record<string, unknown> = {}) {
  return {
    name: "rs",
    kind: "redis",
    url: REDIS_URL,
    stream: key,
    maxLen: 0,
    confirmTimeoutMs: 1000,
    batch: { size: 50, lingerMs: 2 },
    retry: { initialMs: 50, maxMs: 300 },
    ...extra,
  };
}

describe("forwarding thread", () => {
  for (const how of ["exit", "throw"] as const) {
    redisTest(
      `the thread dies mid-stream (${how}): logged, counted, started again; nothing lost, order per client kept, same ids`,
      async () => {
        const key = unique(`thread-${how}`);
        const tb = await openTestBridge({ leaseMs: 3000, pollMs: 100, sinks: [redisSink(key)] }, CLIENTS);
        try {
          expect(tb.bridge.forwarding).toBe("thread");
          await tb.publishMany(CLIENTS, 0, 150);
          await eventually(() => ((tb.bridge.stats().sinks["rs"]?.delivered ?? 0) > 0 ? true : undefined), 10_000, "first delivered");
          tb.bridge.forwardThread?.crashForTest(how);
          // Publishing goes on while the thread is down and comes back.
          await tb.publishMany(CLIENTS, 150, 300);
          await eventually(
            () => (tb.logger.has("error", /bridge: forwarding thread ended; starting it again/) ? true : undefined),
            10_000,
            "restart logged",
          );
          if (how === "throw") expect(tb.logger.has("error", /bridge: forwarding thread failed/)).toBe(true);
          const landed = await eventually(
            async () => {
              const l = await readRedisStream(REDIS_URL as string, key);
              return new Set(l.map((x) => x.payload)).size >= 1200 && (await tb.store.outboxStats())[0]?.pending === 0 ? l : undefined;
            },
            20_000,
            "all 1200 in Redis, outbox empty",
          );
          expect(
            checkOrder(
              landed.map((l) => l.payload),
              CLIENTS,
              300,
            ),
          ).toEqual({ missing: [], outOfOrder: [] });
          // A message sent twice (sent before the crash, not settled) carries the same id both times.
          const { byId, conflicts } = payloadsById(landed);
          expect(conflicts).toEqual([]);
          expect(byId.size).toBe(1200);
          expect(tb.bridge.forwardThread?.restarts()).toBe(1);
          expect(await metric(tb, "exhook_bridge_forward_thread_restarts_total")).toBe(1);
          // The new thread reports again: sink up, delivered counted (at least every message once).
          await eventually(() => (tb.bridge.stats().sinks["rs"]?.connected ? true : undefined), 5000, "connected again");
          expect(await metric(tb, "exhook_bridge_sink_up", 'sink="rs"')).toBe(1);
          // Counting goes on across the restart: the metric and the stats (since start, both threads)
          // agree. The dead thread's last ~10 ms of counts, never reported, are missing from both.
          const counted = await eventually(
            async () => {
              const m = await metric(tb, "exhook_bridge_delivered_total", 'sink="rs"');
              // At least what the new thread sent: the 600 published after the crash.
              return m >= 600 && m === tb.bridge.stats().sinks["rs"]?.delivered ? m : undefined;
            },
            5000,
            "metric = stats, >= 600",
          );
          expect(counted).toBeLessThanOrEqual(byId.size + 200);
          expect(tb.logger.has("info", /bridge: forwarding thread started/, 2)).toBe(true);
        } finally {
          await tb.close();
          const r = redisClient(REDIS_URL as string);
          await r.del(key);
          await r.quit();
        }
      },
    );
  }

  redisTest("runs at the configured nice value; close() stops it (no thread left) and gives the leases back", async () => {
    const key = unique("thread-nice");
    const before = threadNices().filter((n) => n === 7).length;
    const tb = await openTestBridge({ forwarding: { nice: 7 }, sinks: [redisSink(key)] }, CLIENTS);
    let closed = false;
    try {
      await eventually(() => (tb.logger.has("info", /bridge: forwarding thread started/) ? true : undefined), 10_000, "started");
      expect(tb.logger.lines.find((l) => /forwarding thread started/.test(l.msg))?.obj).toMatchObject({ nice: 7, store: "sqlite" });
      expect(threadNices().filter((n) => n === 7).length).toBe(before + 1);
      await tb.publishMany(CLIENTS, 0, 20);
      await eventually(() => ((tb.bridge.stats().sinks["rs"]?.delivered ?? 0) >= 80 ? true : undefined), 10_000, "80 delivered");
      const threads = readdirSync("/proc/self/task").length;
      await tb.bridge.close();
      closed = true;
      expect(readdirSync("/proc/self/task").length).toBeLessThan(threads);
      expect(threadNices().filter((n) => n === 7).length).toBe(before);
      // The leases were given back on the way out (the next instance need not wait them out).
      const leases = (await tb.store.outboxLease("rs", "next/1/x", { partitions: 16, leaseMs: 1000 })).held;
      expect(leases).toHaveLength(16);
    } finally {
      if (!closed) await tb.bridge.close();
      await tb.close();
      const r = redisClient(REDIS_URL as string);
      await r.del(key);
      await r.quit();
    }
  });

  test("a thread that cannot open its store: logged with the reason, counted, retried with growing pauses; hooks keep committing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "exhook-thread-"));
    // A path under a regular file: the thread's SQLite open fails (ENOTDIR).
    const blocker = join(dir, "not-a-dir");
    writeFileSync(blocker, "");
    const tb = await openTestBridge({ sinks: [{ name: "rs", kind: "redis", url: "redis://127.0.0.1:1", stream: "x" }] }, ["c1"], {
      forwardStore: { kind: "sqlite", file: join(blocker, "exhook.db") },
    });
    try {
      await eventually(() => (tb.bridge.forwardThread?.restarts() ?? 0) >= 3 || undefined, 10_000, "3 restarts");
      const lines = tb.logger.lines.filter((l) => /bridge: forwarding thread ended; starting it again/.test(l.msg));
      expect(lines[0]?.obj["err"]).toMatch(/cannot open the outbox store: .*(ENOTDIR|EEXIST)/);
      // Growing pauses between attempts: 100, 200, 400 ms ...
      expect(lines.slice(0, 3).map((l) => l.obj["restartInMs"])).toEqual([100, 200, 400]);
      expect(await metric(tb, "exhook_bridge_forward_thread_restarts_total")).toBeGreaterThanOrEqual(3);
      // The hooks do not depend on the thread: publishes are committed to the outbox.
      await tb.publishMany(["c1"], 0, 10);
      await tb.bridge.flush();
      expect((await tb.store.outboxStats())[0]?.pending).toBe(10);
      expect(tb.bridge.stats().sinks["rs"]).toMatchObject({ connected: false, delivered: 0 });
    } finally {
      await tb.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

redisTest(
  "a thread that cannot stop in time (a batch in flight to an engine that never answers) is terminated; its rows stay and are sent again, same ids",
  async () => {
    const dir = mkdtempSync(join(tmpdir(), "exhook-thread-stop-"));
    const file = join(dir, "outbox.db");
    const key = unique("thread-stop");
    const redisPort = Number(new URL(REDIS_URL as string).port) || 6379;
    const proxy = await startTcpProxy(redisPort);
    const logger = memoryLogger();
    const quietObserver = (): ForwarderObserver => ({
      delivered() {},
      failed() {},
      retried() {},
      parked() {},
      confirmSeconds() {},
      partitions() {},
      connectFailed() {},
    });
    const specFor = (url: string): ForwardingSpec => ({
      // A batch may wait a minute for its replies: stop() cannot wait that long.
      sinks: [sinkSchema.parse({ ...redisSink(key), url, confirmTimeoutMs: 60_000 }) as SinkConfig],
      partitions: 4,
      leaseMs: 200_000,
      pollMs: 50,
      // One owner for both threads, as in one process: the second resumes the partitions the
      // terminated one still leases (a new process would take them over from the dead pid).
      owner,
    });
    const owner = newOwnerId();
    const store = await openSqliteStore({ file });
    try {
      const t = createForwardThread({
        spec: specFor(`redis://127.0.0.1:${proxy.port}`),
        store: { kind: "sqlite", file },
        nice: 0,
        observer: quietObserver,
        logger,
        stopTimeoutMs: 300,
      });
      t.start();
      await eventually(() => (logger.has("info", /bridge: engine connected/) ? true : undefined), 10_000, "connected to Redis");
      // Redis (behind the proxy) stops answering without closing anything; then rows arrive.
      proxy.blackhole();
      const ids = Array.from({ length: 20 }, (_, i) => `ID${String(i).padStart(4, "0")}`);
      await store.outboxAppend(
        ids.map((id, i) => ({
          sink: "rs",
          id,
          key: `c${i % 4}`,
          khash: keyHash(`c${i % 4}`),
          dest: key,
          payload: new TextEncoder().encode(`p${i}`),
          headers: { hook: "message.publish" },
          createdAt: Date.now(),
        })),
        {},
      );
      t.notify("rs", ids.length);
      // The batch went out: Redis got (and will never answer) the XADDs.
      await eventually(() => (proxy.swallowed() > 0 ? true : undefined), 10_000, "the batch sent");
      await t.stop();
      expect(logger.has("warn", /bridge: forwarding thread did not stop in time; terminating it/)).toBe(true);
      // Nothing was confirmed, so nothing was deleted.
      expect((await store.outboxStats(["rs"]))[0]).toMatchObject({ sink: "rs", pending: ids.length });

      // A new thread, with Redis answering: every row lands, with its id.
      const t2 = createForwardThread({
        spec: specFor(REDIS_URL as string),
        store: { kind: "sqlite", file },
        nice: 0,
        observer: quietObserver,
        logger,
      });
      t2.start();
      const landed = await eventually(
        async () => {
          const l = await readRedisStream(REDIS_URL as string, key);
          return l.length >= ids.length ? l : undefined;
        },
        10_000,
        "all rows in Redis",
      );
      await t2.stop();
      expect(new Set(landed.map((l) => l.meta["id"]))).toEqual(new Set(ids));
      expect((await store.outboxStats(["rs"]))[0]).toMatchObject({ pending: 0 });
    } finally {
      await store.close();
      await proxy.close();
      const r = redisClient(REDIS_URL as string);
      await r.del(key);
      await r.quit();
      rmSync(dir, { recursive: true, force: true });
    }
  },
  30_000,
);
