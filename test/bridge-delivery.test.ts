/**
 * Delivery guarantees that involve the store: persist-before-route (keep() only once committed,
 * the fallback when the commit fails, is refused or runs out of time, and a capture whose budget
 * ran out before its write is withdrawn), and several instances on one PostgreSQL outbox (each
 * message forwarded by one instance at a time, order per client kept, a crashed instance's
 * partitions taken over after its lease).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { openPostgresStore, openSqliteStore, type Store } from "../src/usecases/index";
import { PG_URL, REDIS_URL, eventually, readRedisStream, redisClient, skipNotice, unique } from "./helpers/brokers";
import { checkOrder, openTestBridge, type TestBridge } from "./helpers/bridge";

skipNotice("bridge-delivery", { "PostgreSQL (EXHOOK_TEST_PG_URL)": PG_URL, "Redis (EXHOOK_TEST_REDIS_URL)": REDIS_URL });
const pgTest = PG_URL ? test : test.skip;
const pgRedisTest = PG_URL && REDIS_URL ? test : test.skip;

/** A sink whose engine is never reached (nothing listens on port 1): rows stay in the outbox. */
const OFFLINE = { name: "off", kind: "redis", url: "redis://127.0.0.1:1", retry: { initialMs: 1000, maxMs: 1000, maxAttempts: 0 } };

async function withStore<T>(fn: (store: Store, dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "exhook-pbr-"));
  const store = openSqliteStore({ file: join(dir, "exhook.db") });
  try {
    return await fn(store, dir);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("persist before route", () => {
  test("keep() once committed; the configured fallback when the write fails or the outbox refuses", async () => {
    await withStore(async (store) => {
      // An outbox write that fails (injected at the store interface, as a full disk would).
      let failWrites = false;
      const flaky: Store = {
        ...store,
        outboxAppend: (e, b) =>
          failWrites ? Promise.reject(new Error("SQLITE_FULL: database or disk is full")) : store.outboxAppend(e, b),
      };
      const tb = await openTestBridge(
        {
          persistBeforeRoute: { enabled: true, timeoutMs: 3000 },
          writer: { retries: 1 },
          sinks: [{ ...OFFLINE, outbox: { maxDepth: 2, overflow: "refuse-new" } }],
        },
        ["c1"],
        { store: flaky },
      );
      try {
        expect(await tb.emqx.publish("c1", { topic: "t/1", payload: "a" })).toEqual({ dropped: true, reason: "no_subscribers" });
        expect((await store.outboxStats())[0]?.pending).toBe(1);
        failWrites = true;
        expect(await tb.emqx.publish("c1", { topic: "t/1", payload: "b" })).toEqual({ dropped: true, reason: "provider" });
        expect(tb.bridge.writer.stats()).toMatchObject({ writeFailed: 1, committed: 1 });
        expect(tb.logger.has("error", /bridge: outbox write failed; these messages are not bridged/)).toBe(true);
        failWrites = false;
        expect(await tb.emqx.publish("c1", { topic: "t/1", payload: "c" })).toEqual({ dropped: true, reason: "no_subscribers" });
        // maxDepth 2 reached: refused, so EMQX is told to drop it too.
        expect(await tb.emqx.publish("c1", { topic: "t/1", payload: "d" })).toEqual({ dropped: true, reason: "provider" });
        const text = await tb.bridge.registry.metrics();
        expect(text).toContain('exhook_bridge_lost_total{sink="off",reason="write_failed"} 1');
        expect(text).toContain('exhook_bridge_lost_total{sink="off",reason="outbox_full"} 1');
        expect((await store.outboxList("off", { parked: false, limit: 10 })).map((r) => new TextDecoder().decode(r.payload))).toEqual([
          "a",
          "c",
        ]);
      } finally {
        await tb.close();
      }
    });
  });

  test("fallback keep: a failed write still lets the message through", async () => {
    await withStore(async (store) => {
      const broken: Store = { ...store, outboxAppend: () => Promise.reject(new Error("disk I/O error")) };
      const tb = await openTestBridge(
        { persistBeforeRoute: { enabled: true, fallback: "keep" }, writer: { retries: 0 }, sinks: [OFFLINE] },
        ["c1"],
        { store: broken },
      );
      try {
        expect(await tb.emqx.publish("c1", { topic: "t/1", payload: "a" })).toEqual({ dropped: true, reason: "no_subscribers" });
        expect(tb.bridge.writer.stats().writeFailed).toBe(1);
      } finally {
        await tb.close();
      }
    });
  });

  pgTest(
    "budget exhausted (PostgreSQL lock held): drop; the write in flight lands late (counted); a capture still queued is withdrawn",
    async () => {
      const db = unique("exhook_pbr");
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${db}`);
      const u = new URL(PG_URL as string);
      u.pathname = `/${db}`;
      const store = await openPostgresStore({ url: u.toString(), poolSize: 4 });
      const locker = new pg.Client({ connectionString: u.toString() });
      await locker.connect();
      const tb = await openTestBridge({ persistBeforeRoute: { enabled: true, timeoutMs: 300 }, sinks: [OFFLINE] }, ["c1", "c2"], { store });
      try {
        await locker.query("BEGIN");
        await locker.query("LOCK TABLE exhook_outbox_depth IN ACCESS EXCLUSIVE MODE");
        const first = tb.emqx.publish("c1", { topic: "t/1", payload: "first" });
        await eventually(
          () => {
            const w = tb.bridge.writer.stats();
            return (w.enqueued === 1 && w.queued === 0) || undefined;
          },
          2000,
          "first batch taken (its write waits for the lock)",
        );
        const second = tb.emqx.publish("c2", { topic: "t/2", payload: "second" });
        expect(await first).toEqual({ dropped: true, reason: "provider" });
        expect(await second).toEqual({ dropped: true, reason: "provider" });
        await locker.query("COMMIT");
        await tb.bridge.flush();
        expect(tb.bridge.writer.stats()).toMatchObject({ lateCommits: 1, expired: 1, committed: 1 });
        expect((await store.outboxList("off", { parked: false, limit: 10 })).map((r) => new TextDecoder().decode(r.payload))).toEqual([
          "first",
        ]);
        expect(await tb.bridge.registry.metrics()).toContain('exhook_bridge_lost_total{sink="off",reason="expired"} 1');
      } finally {
        await tb.close();
        await locker.end();
        await store.close();
        await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
        await admin.end();
      }
    },
  );
});

pgRedisTest(
  "two instances on one PostgreSQL outbox: each message forwarded by one instance, order per client kept; a crashed instance's partitions are taken over",
  async () => {
    const db = unique("exhook_multi");
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${db}`);
    const u = new URL(PG_URL as string);
    u.pathname = `/${db}`;
    const key = unique("multi");
    const section = {
      partitions: 8,
      leaseMs: 1500,
      pollMs: 100,
      sinks: [
        {
          name: "rs",
          kind: "redis",
          url: REDIS_URL,
          stream: key,
          maxLen: 0,
          confirmTimeoutMs: 500,
          batch: { size: 20, lingerMs: 2 },
          retry: { initialMs: 50, maxMs: 200 },
        },
      ],
    };
    const clientsA = ["a0", "a1", "a2", "a3", "a4"];
    const clientsB = ["b0", "b1", "b2", "b3", "b4"];
    const storeA = await openPostgresStore({ url: u.toString(), poolSize: 4 });
    const storeB = await openPostgresStore({ url: u.toString(), poolSize: 4 });
    let a: TestBridge | undefined;
    let b: TestBridge | undefined;
    const r = redisClient(REDIS_URL as string);
    try {
      a = await openTestBridge(section, clientsA, { store: storeA, owner: "host-a/1/a" });
      // a forwards on its own thread (so closing storeA below takes its forwarder's store away); b
      // forwards in a forwarding thread with a PostgreSQL pool of its own, as `serve` does.
      b = await openTestBridge(section, clientsB, {
        store: storeB,
        owner: "host-b/1/b",
        forwardStore: { kind: "postgres", url: u.toString() },
      });
      expect([a.bridge.forwarding, b.bridge.forwarding]).toEqual(["main", "thread"]);
      // Wait until the partitions are shared (a gives up its extras at its next renewal).
      await eventually(
        () =>
          ((a?.bridge.stats().sinks["rs"]?.partitions.length ?? 0) === 4 &&
            (b?.bridge.stats().sinks["rs"]?.partitions.length ?? 0) === 4) ||
          undefined,
        5000,
        "4 + 4 partitions",
      );
      const all = [...clientsA, ...clientsB];
      await Promise.all([a.publishMany(clientsA, 0, 100), b.publishMany(clientsB, 0, 100)]);
      await eventually(
        async () => ((await storeA.outboxStats())[0]?.pending === 0 && (await r.xlen(key)) >= 1000) || undefined,
        15_000,
        "1000 forwarded",
      );
      const landed = await readRedisStream(REDIS_URL as string, key);
      // Forwarded by exactly one instance: no id twice (Redis keeps every XADD).
      expect(new Set(landed.map((l) => l.meta["id"])).size).toBe(landed.length);
      expect(landed.length).toBe(1000);
      expect(
        checkOrder(
          landed.map((l) => l.payload),
          all,
          100,
        ),
      ).toEqual({ missing: [], outOfOrder: [] });
      const da = a.bridge.stats().sinks["rs"]?.delivered ?? 0;
      const dbb = b.bridge.stats().sinks["rs"]?.delivered ?? 0;
      expect(da + dbb).toBe(1000);
      expect(da).toBeGreaterThan(0);
      expect(dbb).toBeGreaterThan(0);

      // Instance a crashes: its store connection goes away without giving its leases back.
      await storeA.close();
      await b.publishMany(clientsB, 100, 150);
      await eventually(
        () => b?.bridge.stats().sinks["rs"]?.partitions.length === 8 || undefined,
        10_000,
        "b holds all 8 partitions after a's leases expired",
      );
      await eventually(async () => (await storeB.outboxStats())[0]?.pending === 0 || undefined, 10_000, "drained by b");
      // The crashed side's forwarder saw its store fail: logged, and retried with backoff (a tight
      // retry loop on a store that fails at once would have starved this event loop).
      expect(a.logger.has("error", /bridge: outbox store error; retrying with backoff/)).toBe(true);
      const after = await readRedisStream(REDIS_URL as string, key);
      expect(
        checkOrder(
          after.map((l) => l.payload),
          clientsB,
          150,
        ),
      ).toEqual({ missing: [], outOfOrder: [] });
    } finally {
      await a?.bridge.close().catch(() => {});
      await b?.close();
      await storeB.close();
      await r.del(key);
      await r.quit();
      await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await admin.end();
    }
  },
  60_000,
);
