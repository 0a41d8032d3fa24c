/**
 * The outbox part of the storage contract, on both backends (SQLite always, PostgreSQL when
 * EXHOOK_TEST_PG_URL is set): bounds and their policies, deduplication, commit order, partition
 * leases shared by several owners (one owner per partition at a time, fair shares, expiry and
 * dead-owner takeover), settlement and parking, stats, purge, replay, reopen.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { keyHash } from "../src/usecases/bridge/outbox-shared";
import { SQLITE_OUTBOX_MIGRATION, SQLITE_OUTBOX_SQL } from "../src/usecases/bridge/sqlite-outbox";
import { openPostgresStore, openSqliteStore, type OutboxEntry, type Store } from "../src/usecases/index";

const PG_URL = process.env["EXHOOK_TEST_PG_URL"];
if (!PG_URL)
  console.warn("bridge-outbox-store: PostgreSQL backend tests SKIPPED: EXHOOK_TEST_PG_URL is not set (run under scripts/with-postgres.sh)");

interface Backend {
  open(): Promise<Store>;
  cleanup(): Promise<void>;
}

function sqliteBackend(): Backend {
  const dir = mkdtempSync(join(tmpdir(), "exhook-outbox-"));
  return {
    open: async () => openSqliteStore({ file: join(dir, "exhook.db") }),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

function pgBackend(): Backend & { url: string } {
  const name = `exhook_outbox_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  let created = false;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  const u = new URL(PG_URL ?? "postgres://x");
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    async open() {
      if (!created) {
        await admin(`CREATE DATABASE ${name}`);
        created = true;
      }
      return openPostgresStore({ url: u.toString(), poolSize: 6 });
    },
    async cleanup() {
      if (created) await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}

let n = 0;
function entry(sink: string, key: string, over: Partial<OutboxEntry> = {}): OutboxEntry {
  n++;
  return {
    sink,
    id: `id-${n}`,
    key,
    khash: keyHash(key),
    dest: `mqtt.t.${key}`,
    payload: new TextEncoder().encode(`p${n}`),
    headers: { topic: `t/${key}`, qos: "1" },
    createdAt: 1_700_000_000_000 + n,
    ...over,
  };
}

const backends: Array<[string, () => Backend]> = [
  ["sqlite", sqliteBackend],
  ...(PG_URL ? ([["postgres", pgBackend]] as Array<[string, () => Backend]>) : []),
];

describe.each(backends)("outbox on %s", (_name, make) => {
  let backend: Backend;
  let store: Store;
  beforeEach(async () => {
    backend = make();
    store = await backend.open();
  });
  afterEach(async () => {
    await store.close();
    await backend.cleanup();
  });

  test("append keeps commit order, skips an id already there, and returns rows with their data", async () => {
    const a = [entry("s", "c1"), entry("s", "c2"), entry("s", "c1")];
    const r = await store.outboxAppend(a, {});
    expect(r).toEqual({ refused: [], perSink: { s: { appended: 3, duplicates: 0, evicted: 0, refused: 0 } } });
    const again = await store.outboxAppend([a[1] as OutboxEntry, entry("s", "c3")], {});
    expect(again.perSink["s"]).toEqual({ appended: 1, duplicates: 1, evicted: 0, refused: 0 });
    await store.outboxLease("s", "o1", { partitions: 4, leaseMs: 10_000 });
    const rows = await store.outboxFetch("s", 4, [0, 1, 2, 3], 100);
    expect(rows.map((x) => x.id)).toEqual([a[0]?.id, a[1]?.id, a[2]?.id, `id-${n}`]);
    expect(rows[0]).toMatchObject({
      sink: "s",
      key: "c1",
      khash: keyHash("c1"),
      dest: "mqtt.t.c1",
      headers: { topic: "t/c1", qos: "1" },
      attempts: 0,
      parked: false,
      lastError: "",
    });
    expect(new TextDecoder().decode(rows[0]?.payload)).toBe(a[0] && new TextDecoder().decode(a[0].payload));
    expect(rows.map((x) => x.seq)).toEqual([...rows.map((x) => x.seq)].sort((x, y) => x - y));
    // A cursor: the rows after a seq (the forwarder fetches the next batch while one is in flight).
    expect((await store.outboxFetch("s", 4, [0, 1, 2, 3], 2, rows[1]?.seq)).map((x) => x.id)).toEqual([a[2]?.id, `id-${n}`]);
    expect(await store.outboxStats(["other"])).toEqual([
      { sink: "other", pending: 0, parked: 0, oldestCreatedAt: null },
      { sink: "s", pending: 4, parked: 0, oldestCreatedAt: a[0]?.createdAt },
    ]);
  });

  test("refuse-new: a full outbox refuses the newest entries of the batch and counts them", async () => {
    const bound = { s: { maxDepth: 5, overflow: "refuse-new" as const } };
    expect((await store.outboxAppend([entry("s", "a"), entry("s", "a"), entry("s", "a")], bound)).refused).toEqual([]);
    const batch = [entry("s", "a"), entry("t", "x"), entry("s", "a"), entry("s", "a"), entry("s", "a")];
    const r = await store.outboxAppend(batch, bound);
    // Sink s had 3, may take 2 more: the batch's first two s entries go in, the last two are refused.
    expect(r.refused).toEqual([3, 4]);
    expect(r.perSink).toEqual({
      s: { appended: 2, duplicates: 0, evicted: 0, refused: 2 },
      t: { appended: 1, duplicates: 0, evicted: 0, refused: 0 },
    });
    const st = await store.outboxStats();
    expect(st.find((x) => x.sink === "s")?.pending).toBe(5);
  });

  test("drop-oldest: a full outbox evicts its oldest rows to take the new ones", async () => {
    const bound = { s: { maxDepth: 3, overflow: "drop-oldest" as const } };
    const first = [entry("s", "a"), entry("s", "b"), entry("s", "c")];
    await store.outboxAppend(first, bound);
    const next = [entry("s", "d"), entry("s", "e")];
    const r = await store.outboxAppend(next, bound);
    expect(r).toEqual({ refused: [], perSink: { s: { appended: 2, duplicates: 0, evicted: 2, refused: 0 } } });
    await store.outboxLease("s", "o", { partitions: 1, leaseMs: 10_000 });
    expect((await store.outboxFetch("s", 1, [0], 10)).map((x) => x.id)).toEqual([first[2]?.id, next[0]?.id, next[1]?.id]);
    // A batch larger than the bound on its own: its oldest entries are refused.
    const big = [entry("s", "f"), entry("s", "g"), entry("s", "h"), entry("s", "i")];
    const r2 = await store.outboxAppend(big, bound);
    expect(r2.refused).toEqual([0]);
    expect(r2.perSink["s"]).toEqual({ appended: 3, duplicates: 0, evicted: 4, refused: 0 });
    expect((await store.outboxStats()).find((x) => x.sink === "s")?.pending).toBe(3);
  });

  test("drop-oldest evicts the oldest rows in seq order, parked or pending", async () => {
    const bound = { s: { maxDepth: 4, overflow: "drop-oldest" as const } };
    const es = [entry("s", "a"), entry("s", "b"), entry("s", "c"), entry("s", "d")];
    await store.outboxAppend(es, bound);
    await store.outboxLease("s", "o", { partitions: 1, leaseMs: 10_000 });
    const rows = await store.outboxFetch("s", 1, [0], 10);
    const rejected = [rows[1], rows[3]].map((r) => ({ seq: r?.seq as number, error: "refused" }));
    expect(await store.outboxSettle("s", { delivered: [], rejected, maxAttempts: 1 })).toEqual({ deleted: 0, parked: 2 });
    const more = [entry("s", "e"), entry("s", "f"), entry("s", "g")];
    const r = await store.outboxAppend(more, bound);
    expect(r.perSink["s"]).toEqual({ appended: 3, duplicates: 0, evicted: 3, refused: 0 });
    // Evicted: a (pending), b (parked), c (pending). Left: d (parked) and the new ones.
    expect((await store.outboxFetch("s", 1, [0], 10)).map((x) => x.id)).toEqual(more.map((x) => x.id));
    expect((await store.outboxList("s", { parked: true, limit: 10 })).map((x) => x.id)).toEqual([es[3]?.id]);
  });

  test("partitions: owners share them fairly, one owner per partition; fetch returns only held partitions", async () => {
    const P = 8;
    const a = await store.outboxLease("s", "h/1/a", { partitions: P, leaseMs: 10_000 });
    expect(a.held).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    const b1 = await store.outboxLease("s", "h/2/b", { partitions: P, leaseMs: 10_000 });
    expect(b1.held).toEqual([]); // all taken; a releases its extras at its next renewal
    expect(b1.others).toEqual(["h/1/a"]);
    const a2 = await store.outboxLease("s", "h/1/a", { partitions: P, leaseMs: 10_000 });
    expect(a2.held).toEqual([0, 1, 2, 3]);
    const b2 = await store.outboxLease("s", "h/2/b", { partitions: P, leaseMs: 10_000 });
    expect(b2.held).toEqual([4, 5, 6, 7]);
    const keys = Array.from({ length: 40 }, (_, i) => `client-${i}`);
    await store.outboxAppend(
      keys.map((k) => entry("s", k)),
      {},
    );
    const ra = await store.outboxFetch("s", P, a2.held, 100);
    const rb = await store.outboxFetch("s", P, b2.held, 100);
    expect(ra.length + rb.length).toBe(40);
    for (const r of ra) expect(a2.held).toContain(r.khash % P);
    for (const r of rb) expect(b2.held).toContain(r.khash % P);
    // A clean stop hands everything back at the next renewal of the other owner.
    await store.outboxRelease("s", "h/1/a");
    expect((await store.outboxLease("s", "h/2/b", { partitions: P, leaseMs: 10_000 })).held).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  test("concurrent lease calls of many owners never give one partition to two owners", async () => {
    const owners = Array.from({ length: 5 }, (_, i) => `h/${100 + i}/x`);
    for (let round = 0; round < 4; round++) {
      const results = await Promise.all(owners.map((o) => store.outboxLease("s", o, { partitions: 16, leaseMs: 10_000 })));
      const all = results.flatMap((r) => r.held);
      expect(new Set(all).size).toBe(all.length);
    }
    const final = await Promise.all(owners.map((o) => store.outboxLease("s", o, { partitions: 16, leaseMs: 10_000 })));
    expect(final.flatMap((r) => r.held).sort((x, y) => x - y)).toEqual(Array.from({ length: 16 }, (_, i) => i));
    for (const r of final) expect(r.held.length).toBeLessThanOrEqual(Math.ceil(16 / 5));
  });

  test("an expired lease is taken over; a dead owner named in expireOwners is taken over at once", async () => {
    await store.outboxLease("s", "h/1/a", { partitions: 2, leaseMs: 1000 });
    expect((await store.outboxLease("s", "h/2/b", { partitions: 2, leaseMs: 1000 })).held).toEqual([]);
    expect((await store.outboxLease("s", "h/2/b", { partitions: 2, leaseMs: 1000, expireOwners: ["h/1/a"] })).held).toEqual([0, 1]);
    await store.outboxLease("s", "h/3/c", { partitions: 2, leaseMs: 10_000 });
    await new Promise((r) => setTimeout(r, 1100));
    // b's leases (1 s) have expired; c may now hold its fair share of what b held.
    const c = await store.outboxLease("s", "h/3/c", { partitions: 2, leaseMs: 10_000 });
    expect(c.held).toEqual([0, 1]);
  });

  test("settle deletes confirmed rows and parks a row after maxAttempts refusals; replay and purge", async () => {
    const es = [entry("s", "a"), entry("s", "a"), entry("s", "b")];
    await store.outboxAppend(es, {});
    await store.outboxLease("s", "o", { partitions: 1, leaseMs: 10_000 });
    let rows = await store.outboxFetch("s", 1, [0], 10);
    const [r0, r1, r2] = rows as [(typeof rows)[0], (typeof rows)[0], (typeof rows)[0]];
    expect(await store.outboxSettle("s", { delivered: [r0.seq], rejected: [{ seq: r1.seq, error: "no stream" }], maxAttempts: 2 })).toEqual(
      { deleted: 1, parked: 0 },
    );
    rows = await store.outboxFetch("s", 1, [0], 10);
    expect(rows.map((x) => [x.id, x.attempts, x.lastError])).toEqual([
      [r1.id, 1, "no stream"],
      [r2.id, 0, ""],
    ]);
    expect(await store.outboxSettle("s", { delivered: [], rejected: [{ seq: r1.seq, error: "still no stream" }], maxAttempts: 2 })).toEqual(
      { deleted: 0, parked: 1 },
    );
    expect((await store.outboxFetch("s", 1, [0], 10)).map((x) => x.id)).toEqual([r2.id]);
    expect(await store.outboxStats()).toEqual([{ sink: "s", pending: 1, parked: 1, oldestCreatedAt: r2.createdAt }]);
    const parked = await store.outboxList("s", { parked: true, limit: 10 });
    expect(parked.map((x) => [x.id, x.parked, x.attempts, x.lastError])).toEqual([[r1.id, true, 2, "still no stream"]]);
    expect(await store.outboxReplay("s")).toBe(1);
    expect((await store.outboxFetch("s", 1, [0], 10)).map((x) => [x.id, x.attempts])).toEqual([
      [r1.id, 0],
      [r2.id, 0],
    ]);
    await store.outboxSettle("s", { delivered: [], rejected: [{ seq: r1.seq, error: "x" }], maxAttempts: 1 });
    expect(await store.outboxPurge("s", { parkedOnly: true })).toBe(1);
    expect(await store.outboxStats()).toEqual([{ sink: "s", pending: 1, parked: 0, oldestCreatedAt: r2.createdAt }]);
    expect(await store.outboxPurge("s", { parkedOnly: false })).toBe(1);
    expect(await store.outboxStats()).toEqual([{ sink: "s", pending: 0, parked: 0, oldestCreatedAt: null }]);
    // maxAttempts 0 never parks.
    const e = entry("s", "z");
    await store.outboxAppend([e], {});
    const [rz] = await store.outboxFetch("s", 1, [0], 10);
    for (let i = 0; i < 3; i++)
      expect(await store.outboxSettle("s", { delivered: [], rejected: [{ seq: rz?.seq as number, error: "x" }], maxAttempts: 0 })).toEqual({
        deleted: 0,
        parked: 0,
      });
  });

  test("committed rows survive closing and reopening the store", async () => {
    const es = [entry("s", "a"), entry("s", "b")];
    await store.outboxAppend(es, {});
    await store.close();
    store = await backend.open();
    await store.outboxLease("s", "o2", { partitions: 1, leaseMs: 10_000 });
    expect((await store.outboxFetch("s", 1, [0], 10)).map((x) => x.id)).toEqual(es.map((x) => x.id));
  });
});

(PG_URL ? test : test.skip)(
  "postgres: fetching, settling, refusing and evicting 500 rows read about 500 index entries each, not the sink's backlog, on a table without statistics",
  async () => {
    const backend = pgBackend();
    let store = await backend.open();
    try {
      await store.close();
      // The database's own connection: no statistics for the planner (no ANALYZE, no autovacuum).
      const q = new pg.Client({ connectionString: backend.url });
      await q.connect();
      try {
        await q.query("ALTER TABLE exhook_outbox SET (autovacuum_enabled = false)");
        store = await backend.open();
        // A backlog of 20,000 rows in another sink and 20,000 in this one.
        for (const sink of ["other", "s"])
          for (let i = 0; i < 20_000; i += 2000)
            await store.outboxAppend(
              Array.from({ length: 2000 }, (_, k) => entry(sink, `c${k % 50}`)),
              {},
            );
        await store.close(); // (backends flush their statistics counters when they end)
        const reads = async () => {
          const r = await q.query("SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes WHERE relname = 'exhook_outbox'");
          return Object.fromEntries(r.rows.map((x) => [x["indexrelname"] as string, Number(x["idx_tup_read"])]));
        };
        await q.query("SELECT pg_stat_clear_snapshot()");
        const before = await reads();
        expect(
          (await q.query("SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables WHERE relname = 'exhook_outbox'")).rows[0],
        ).toEqual({
          last_analyze: null,
          last_autoanalyze: null,
        });

        store = await backend.open();
        await store.outboxLease("s", "o", { partitions: 1, leaseMs: 10_000 });
        const first = await store.outboxFetch("s", 1, [0], 500);
        await store.outboxSettle("s", { delivered: first.map((r) => r.seq), rejected: [], maxAttempts: 0 });
        const next = await store.outboxFetch("s", 1, [0], 500, first[first.length - 1]?.seq);
        expect([first.length, next.length]).toEqual([500, 500]);
        // The engine refuses a batch: 500 rows counted and kept.
        const refused = next.map((r) => ({ seq: r.seq, error: "no stream" }));
        expect(await store.outboxSettle("s", { delivered: [], rejected: refused, maxAttempts: 5 })).toEqual({ deleted: 0, parked: 0 });
        // At the bound with drop-oldest: 500 new rows evict the 500 oldest.
        const evicting = await store.outboxAppend(
          Array.from({ length: 500 }, (_, k) => entry("s", `c${k % 50}`)),
          { s: { maxDepth: 19_500, overflow: "drop-oldest" } },
        );
        expect(evicting.perSink["s"]).toEqual({ appended: 500, duplicates: 0, evicted: 500, refused: 0 });
        await store.close();
        // The counters of the ended backends may land a moment later: wait for the 2,000 rows read.
        let read: Record<string, number> = {};
        for (let i = 0; i < 50; i++) {
          await q.query("SELECT pg_stat_clear_snapshot()");
          const after = await reads();
          read = Object.fromEntries(Object.keys(after).map((k) => [k, (after[k] ?? 0) - (before[k] ?? 0)]));
          if ((read["exhook_outbox_pending"] ?? 0) + (read["exhook_outbox_pkey"] ?? 0) >= 2000) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        // Before: each fetch read the sink's 20,000 entries of the pending index (a bitmap scan and
        // a sort), the settle its 20,000 entries of the (sink, id) index, the eviction as many.
        const total = Object.values(read).reduce((a, b) => a + b, 0);
        expect({ read, total: total <= 4000 }).toEqual({ read, total: true });
        expect(read["exhook_outbox_sink_id_key"] ?? 0).toBeLessThan(100);
      } finally {
        await q.end();
      }
    } finally {
      await store.close().catch(() => {});
      await backend.cleanup();
    }
  },
  60_000,
);

test("sqlite: deleting delivered rows and evicting the oldest walk an index or the primary key, never the sink's whole backlog", () => {
  const dir = mkdtempSync(join(tmpdir(), "exhook-outbox-plan-"));
  const db = new Database(join(dir, "plan.db"));
  try {
    db.exec(SQLITE_OUTBOX_MIGRATION);
    const plan = (sql: string, ...params: unknown[]) =>
      db
        .prepare(`EXPLAIN QUERY PLAN ${sql}`)
        .all(...params)
        .map((r) => (r as { detail: string }).detail);
    expect(plan(SQLITE_OUTBOX_SQL.deleteDelivered, "s", "[1,2]")).toEqual([
      "SEARCH outbox USING INTEGER PRIMARY KEY (rowid=?)",
      "LIST SUBQUERY 1",
      "SCAN json_each VIRTUAL TABLE INDEX 1:",
    ]);
    const evict = plan(SQLITE_OUTBOX_SQL.evictOldest, { sink: "s", n: 500 });
    expect(evict[0]).toBe("SEARCH outbox USING INTEGER PRIMARY KEY (rowid=?)");
    // Each half walks (sink, parked, seq) for one parked value, in seq order; only the merged ≤ 2n rows are sorted.
    expect(evict.filter((d) => d.includes("outbox_sink_parked_seq"))).toEqual([
      "SEARCH outbox USING COVERING INDEX outbox_sink_parked_seq (sink=? AND parked=?)",
      "SEARCH outbox USING COVERING INDEX outbox_sink_parked_seq (sink=? AND parked=?)",
    ]);
    expect(evict.some((d) => /SCAN outbox\b/.test(d))).toBe(false);
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
