/**
 * The bridge against dying engines. Each test runs its own engine so it can take it away: a
 * throwaway nats-server or redis-server killed with SIGKILL and started again on the same port and
 * data, and RabbitMQ (too slow to restart inside a test) behind a TCP proxy that is cut and
 * restored. What must hold: nothing committed is lost, each client's messages arrive in order
 * (first arrival of each id; re-sends carry the same id), the failures are counted and logged, the
 * outbox bound applies its policy and counts it, repeated refusals are parked and replayable, and
 * /readyz follows a sink that asks for it.
 */
import { checkReadiness, createOpsServer } from "../src/ops/http-probes";
import type { EngineProcess, TcpProxy } from "./helpers/brokers";
import {
  AMQP_URL,
  NATS_BIN,
  REDIS_BIN,
  amqpAdmin,
  drainAmqpQueue,
  eventually,
  natsAdmin,
  readNatsStream,
  readRedisStream,
  skipNotice,
  startNats,
  startRedis,
  startTcpProxy,
  unique,
} from "./helpers/brokers";
import { checkOrder, openTestBridge, payloadsById, type TestBridge } from "./helpers/bridge";

skipNotice("bridge-faults", {
  "nats-server (EXHOOK_TEST_NATS_BIN)": NATS_BIN,
  "redis-server (EXHOOK_TEST_REDIS_BIN)": REDIS_BIN,
  "RabbitMQ (EXHOOK_TEST_AMQP_URL)": AMQP_URL,
});
const natsTest = NATS_BIN ? test : test.skip;
const redisTest = REDIS_BIN ? test : test.skip;
const amqpTest = AMQP_URL ? test : test.skip;

const CLIENTS = ["c1", "c2", "c3", "c4"];
const FAST = { retry: { initialMs: 50, maxMs: 400, maxAttempts: 5 }, confirmTimeoutMs: 1000, batch: { size: 50, lingerMs: 2 } };
const BRIDGE = { leaseMs: 3000, pollMs: 200 };

async function metric(tb: TestBridge, name: string, labels: string): Promise<number> {
  const text = await tb.bridge.registry.metrics();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

const failing = (tb: TestBridge, sink: string) =>
  eventually(
    () => {
      const st = tb.bridge.stats().sinks[sink];
      return st && st.failing > 0 && !st.connected ? st : undefined;
    },
    15_000,
    `${sink} failing`,
  );

natsTest(
  "NATS JetStream stopped (SIGKILL) mid-stream, then restarted: nothing lost, order per client kept, retries counted, disconnect/connect logged",
  async () => {
    const nats: EngineProcess = await startNats();
    const stream = unique("F");
    const tb = await openTestBridge(
      {
        ...BRIDGE,
        sinks: [
          {
            name: "js",
            kind: "nats",
            servers: [nats.url],
            subject: "f.${clientid}.${topic}",
            stream: { name: stream, subjects: ["f.>"] },
            readiness: true,
            ...FAST,
          },
        ],
      },
      CLIENTS,
    );
    const readiness = async () =>
      checkReadiness({
        serving: true,
        loadedNodes: ["emqx@n1"],
        readyWhen: "listening",
        readyNodes: undefined,
        providerNotReady: undefined,
        checks: tb.bridge.readiness(),
      });
    const ops = createOpsServer({ port: 0, host: "127.0.0.1", source: { readiness } });
    const readyz = async () => {
      const r = await fetch(`http://127.0.0.1:${ops.address?.port}/readyz`);
      return { status: r.status, body: await r.text() };
    };
    await ops.listen();
    try {
      await tb.publishMany(CLIENTS, 0, 100);
      await eventually(() => (tb.bridge.stats().sinks["js"]?.delivered ?? 0) >= 400 || undefined, 10_000, "first 400 delivered");
      expect(await readyz()).toEqual({ status: 200, body: "ready; loaded nodes: 1\n" });
      await nats.kill();
      await tb.publishMany(CLIENTS, 100, 200);
      const st = await failing(tb, "js");
      expect(st.delivered).toBeLessThan(800);
      expect((await tb.store.outboxStats())[0]?.pending).toBeGreaterThan(0);
      const down = await readyz();
      expect(down.status).toBe(503);
      expect(down.body).toMatch(/^bridge sink js \(nats\): not connected/);
      expect(tb.logger.has("warn", /bridge: engine disconnected/)).toBe(true);
      // Down a while: the forwarder keeps retrying with backoff (and renewing its lease).
      await new Promise((r) => setTimeout(r, 1200));
      await nats.start();
      await tb.publishMany(CLIENTS, 200, 300);
      await eventually(
        async () =>
          ((await tb.store.outboxStats())[0]?.pending === 0 && (tb.bridge.stats().sinks["js"]?.delivered ?? 0) >= 1200) || undefined,
        20_000,
        "outbox drained",
      );
      const landed = await readNatsStream(nats.url, stream);
      const { missing, outOfOrder } = checkOrder(
        landed.map((l) => l.payload),
        CLIENTS,
        300,
      );
      expect(missing).toEqual([]);
      expect(outOfOrder).toEqual([]);
      // JetStream dropped re-sends by Nats-Msg-Id: each message once.
      expect(new Set(landed.map((l) => l.meta["id"])).size).toBe(landed.length);
      expect(landed.length).toBe(1200);
      expect(await metric(tb, "exhook_bridge_failed_total", 'reason="unreachable"')).toBeGreaterThan(0);
      expect(await metric(tb, "exhook_bridge_delivered_total", 'sink="js"')).toBe(tb.bridge.stats().sinks["js"]?.delivered);
      expect(await metric(tb, "exhook_bridge_outbox_depth", 'state="pending"')).toBe(0);
      expect(tb.logger.has("info", /bridge: engine connected/, 2)).toBe(true);
      expect(tb.logger.has("info", /bridge: engine confirms again/)).toBe(true);
      expect(await readyz()).toEqual({ status: 200, body: "ready; loaded nodes: 1\n" });
    } finally {
      await ops.close();
      await tb.close();
      await nats.dispose();
    }
  },
  60_000,
);

redisTest(
  "Redis killed mid-stream, then restarted: nothing lost, order per client kept, duplicates carry the same id",
  async () => {
    const redis: EngineProcess = await startRedis();
    const key = unique("f");
    const tb = await openTestBridge(
      { ...BRIDGE, sinks: [{ name: "rs", kind: "redis", url: redis.url, stream: key, maxLen: 0, ...FAST }] },
      CLIENTS,
    );
    try {
      await tb.publishMany(CLIENTS, 0, 100);
      await redis.kill();
      await tb.publishMany(CLIENTS, 100, 200);
      await failing(tb, "rs");
      await new Promise((r) => setTimeout(r, 800));
      await redis.start();
      await tb.publishMany(CLIENTS, 200, 300);
      await eventually(
        async () => ((await tb.store.outboxStats())[0]?.pending === 0 && tb.bridge.writer.stats().queued === 0) || undefined,
        20_000,
        "outbox drained",
      );
      const landed = await readRedisStream(redis.url, key);
      const { missing, outOfOrder } = checkOrder(
        landed.map((l) => l.payload),
        CLIENTS,
        300,
      );
      expect(missing).toEqual([]);
      expect(outOfOrder).toEqual([]);
      // Redis has no dedup: an entry seen twice is the same message (same id, same payload).
      const { byId, conflicts } = payloadsById(landed);
      expect(conflicts).toEqual([]);
      expect(byId.size).toBe(1200);
      // Down: connection attempts fail (counted) and nothing is sent until one succeeds.
      expect(await metric(tb, "exhook_bridge_connect_failures_total", 'sink="rs"')).toBeGreaterThan(0);
      expect(tb.logger.has("warn", /bridge: cannot connect to the engine/)).toBe(true);
    } finally {
      await tb.close();
      await redis.dispose();
    }
  },
  60_000,
);

amqpTest(
  "RabbitMQ connection cut (TCP proxy) and restored: the sink reconnects, nothing lost, order per client kept",
  async () => {
    const exchange = unique("fex");
    const queue = unique("fq");
    const port = Number(new URL(AMQP_URL as string).port || 5672);
    const proxy: TcpProxy = await startTcpProxy(port);
    const url = new URL(AMQP_URL as string);
    url.port = String(proxy.port);
    url.hostname = "127.0.0.1";
    const tb = await openTestBridge(
      {
        ...BRIDGE,
        sinks: [{ name: "rb", kind: "rabbitmq", url: url.toString(), exchange, queue: { name: queue, bindingKey: "#" }, ...FAST }],
      },
      CLIENTS,
    );
    try {
      await tb.publishMany(CLIENTS, 0, 100);
      await eventually(() => (tb.bridge.stats().sinks["rb"]?.delivered ?? 0) >= 400 || undefined, 10_000, "first 400 delivered");
      proxy.cut();
      await tb.publishMany(CLIENTS, 100, 200);
      await failing(tb, "rb");
      proxy.restore();
      await tb.publishMany(CLIENTS, 200, 300);
      await eventually(
        async () => ((await tb.store.outboxStats())[0]?.pending === 0 && tb.bridge.writer.stats().queued === 0) || undefined,
        20_000,
        "outbox drained",
      );
      const landed = await drainAmqpQueue(AMQP_URL as string, queue);
      const { missing, outOfOrder } = checkOrder(
        landed.map((l) => l.payload),
        CLIENTS,
        300,
      );
      expect(missing).toEqual([]);
      expect(outOfOrder).toEqual([]);
      expect(tb.logger.has("warn", /bridge: engine disconnected/)).toBe(true);
      expect(tb.logger.has("info", /bridge: engine connected/, 2)).toBe(true);
    } finally {
      await tb.close();
      await proxy.close();
      const admin = await amqpAdmin(AMQP_URL as string);
      await admin.ch.deleteQueue(queue).catch(() => {});
      await admin.ch.deleteExchange(exchange).catch(() => {});
      await admin.close();
    }
  },
  60_000,
);

redisTest(
  "outbox bound reached while the engine is down: refuse-new refuses and counts; drop-oldest evicts the oldest and counts; the rest is delivered later",
  async () => {
    const redis: EngineProcess = await startRedis();
    await redis.kill();
    const kNew = unique("bn");
    const kOld = unique("bo");
    const tb = await openTestBridge(
      {
        ...BRIDGE,
        sinks: [
          { name: "refuse", kind: "redis", url: redis.url, stream: kNew, outbox: { maxDepth: 50, overflow: "refuse-new" }, ...FAST },
          { name: "evict", kind: "redis", url: redis.url, stream: kOld, outbox: { maxDepth: 50, overflow: "drop-oldest" }, ...FAST },
        ],
      },
      ["c1"],
    );
    try {
      await tb.publishMany(["c1"], 0, 80);
      await tb.bridge.flush();
      const st = await tb.store.outboxStats();
      expect(st.map((s) => [s.sink, s.pending])).toEqual([
        ["evict", 50],
        ["refuse", 50],
      ]);
      expect(tb.bridge.writer.stats()).toMatchObject({ refusedOutboxFull: 30, evicted: 30 });
      expect(await metric(tb, "exhook_bridge_lost_total", 'sink="refuse",reason="outbox_full"')).toBe(30);
      expect(await metric(tb, "exhook_bridge_lost_total", 'sink="evict",reason="evicted"')).toBe(30);
      expect(tb.logger.has("warn", /bridge: outbox full/)).toBe(true);
      await redis.start();
      await eventually(
        async () => (await tb.store.outboxStats()).every((s) => s.pending === 0) || undefined,
        20_000,
        "both outboxes drained",
      );
      // refuse-new kept the first 50, drop-oldest the last 50.
      expect((await readRedisStream(redis.url, kNew)).map((l) => l.payload)).toEqual(Array.from({ length: 50 }, (_, i) => `c1-${i}`));
      expect((await readRedisStream(redis.url, kOld)).map((l) => l.payload)).toEqual(Array.from({ length: 50 }, (_, i) => `c1-${i + 30}`));
    } finally {
      await tb.close();
      await redis.dispose();
    }
  },
  60_000,
);

natsTest(
  "a subject no stream takes: refused, retried, parked after maxAttempts (counted, logged); replay sends it once a stream exists",
  async () => {
    const nats: EngineProcess = await startNats();
    const tb = await openTestBridge(
      {
        ...BRIDGE,
        sinks: [
          {
            name: "js",
            kind: "nats",
            servers: [nats.url],
            subject: "p.${topic}",
            ...FAST,
            retry: { initialMs: 20, maxMs: 100, maxAttempts: 3 },
          },
        ],
      },
      ["c1"],
    );
    try {
      await tb.publishMany(["c1"], 0, 5);
      await eventually(async () => (await tb.store.outboxStats())[0]?.parked === 5 || undefined, 15_000, "5 parked");
      // The counters come from the forwarding thread's reports (after each batch): wait for the one after parking.
      await eventually(() => (tb.bridge.stats().sinks["js"]?.parked === 5 ? true : undefined), 5_000, "parking reported");
      expect(tb.bridge.stats().sinks["js"]).toMatchObject({ parked: 5, rejected: 15, delivered: 0 });
      expect(await metric(tb, "exhook_bridge_parked_total", 'sink="js"')).toBe(5);
      expect(await metric(tb, "exhook_bridge_failed_total", 'sink="js",reason="rejected"')).toBe(15);
      expect(await metric(tb, "exhook_bridge_outbox_depth", 'sink="js",state="parked"')).toBe(5);
      expect(tb.logger.has("error", /bridge: messages parked after repeated refusals/)).toBe(true);
      const admin = await natsAdmin(nats.url);
      await admin.jsm.streams.add({ name: "P", subjects: ["p.>"], storage: "memory" });
      await admin.close();
      expect(await tb.store.outboxReplay("js")).toBe(5);
      await eventually(
        async () =>
          ((await tb.store.outboxStats())[0]?.pending === 0 && (tb.bridge.stats().sinks["js"]?.delivered ?? 0) === 5) || undefined,
        10_000,
        "replayed",
      );
      expect((await readNatsStream(nats.url, "P")).map((l) => l.payload)).toEqual(["c1-0", "c1-1", "c1-2", "c1-3", "c1-4"]);
    } finally {
      await tb.close();
      await nats.dispose();
    }
  },
  60_000,
);
