/**
 * Invalidations between processes: the store's invalidation records on SQLite and PostgreSQL, the
 * hub that polls them (SQLite, and PostgreSQL as a safety net) and LISTENs (PostgreSQL), the cluster
 * bus between workers, and every failure path (store down while recording or polling, the LISTEN
 * connection killed). PostgreSQL runs when EXHOOK_TEST_PG_URL is set (`make test` sets it).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import type { ClusterBus } from "../src/ops/cluster-bus";
import type { Logger } from "../src/provider";
import {
  createInvalidationHub,
  LISTENER_APP_NAME,
  type Invalidation,
  type InvalidationHub,
  type InvalidationOrigin,
} from "../src/usecases/invalidation";
import { openPostgresStore, openSqliteStore, type Store } from "../src/usecases/index";

const PG_URL = process.env["EXHOOK_TEST_PG_URL"];
if (!PG_URL)
  console.warn("usecases-invalidation: PostgreSQL tests SKIPPED: EXHOOK_TEST_PG_URL is not set (run under scripts/with-postgres.sh)");

/** A logger that keeps what it was told. */
function recordingLogger() {
  const lines: Array<{ level: string; msg: string; obj: object }> = [];
  const at = (level: string) => (obj: object, msg?: string) => void lines.push({ level, msg: msg ?? "", obj });
  const logger: Logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  return { logger, lines };
}

/** Waits until `cond()` holds, checking on every macrotask; fails after `ms` (generous: a busy 2-core machine). */
async function until(cond: () => boolean | Promise<boolean>, ms = 10_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Two ends of an in-memory cluster bus (what node:cluster's relay does between two workers). */
function busPair(): [ClusterBus, ClusterBus] {
  type End = ClusterBus & { deliver(channel: string, data: unknown): void; peer: End | undefined };
  const make = (): End => {
    const subs = new Map<string, Set<(d: unknown) => void>>();
    const end: End = {
      clustered: true,
      peer: undefined,
      publish(channel, data) {
        end.peer?.deliver(channel, structuredClone(data));
      },
      subscribe(channel, fn) {
        if (!subs.has(channel)) subs.set(channel, new Set());
        subs.get(channel)?.add(fn);
        return () => void subs.get(channel)?.delete(fn);
      },
      deliver(channel, data) {
        for (const fn of subs.get(channel) ?? []) fn(data);
      },
    };
    return end;
  };
  const a = make();
  const b = make();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

interface Backend {
  readonly name: string;
  open(): Promise<Store>;
  readonly pgUrl?: () => string;
  cleanup(): Promise<void>;
}

function sqlite(): Backend {
  const dir = mkdtempSync(join(tmpdir(), "exhook-inv-"));
  return {
    name: "sqlite",
    open: async () => openSqliteStore({ file: join(dir, "exhook.db") }),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

function postgres(): Backend {
  const db = `exhook_inv_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const url = () => {
    const u = new URL(PG_URL as string);
    u.pathname = `/${db}`;
    return u.toString();
  };
  let created = false;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    try {
      return await c.query(sql);
    } finally {
      await c.end();
    }
  };
  return {
    name: "postgres",
    pgUrl: url,
    async open() {
      if (!created) {
        await admin(`CREATE DATABASE ${db}`);
        created = true;
      }
      return openPostgresStore({ url: url(), poolSize: 3 });
    },
    async cleanup() {
      if (created) await admin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    },
  };
}

const backends: Array<() => Backend> = [sqlite, ...(PG_URL ? [postgres] : [])];

describe.each(backends.map((b) => [b().name, b] as const))("%s", (_name, make) => {
  let backend: Backend;
  const stores: Store[] = [];
  const hubs: InvalidationHub[] = [];
  const open = async () => {
    const s = await backend.open();
    stores.push(s);
    return s;
  };
  const hub = (opts: Parameters<typeof createInvalidationHub>[0]) => {
    const h = createInvalidationHub({ bus: false, ...opts });
    hubs.push(h);
    return h;
  };
  const heard = (h: InvalidationHub) => {
    const got: Array<[Invalidation, InvalidationOrigin]> = [];
    h.subscribe((inv, origin) => got.push([inv, origin]));
    return got;
  };

  beforeEach(() => {
    backend = make();
  });
  afterEach(async () => {
    for (const h of hubs.splice(0)) await h.close();
    for (const s of stores.splice(0)) await s.close().catch(() => {});
    await backend.cleanup();
  });

  test("store: records are numbered in order, read after a seq, bounded by limit", async () => {
    const s = await open();
    expect(await s.invalidationsAfter(-1, 10)).toEqual({ latest: 0, records: [] });
    const a = await s.recordInvalidation("user", "alice");
    const b = await s.recordInvalidation("rules", "");
    const c = await s.recordInvalidation("client", "c/1");
    expect(a < b && b < c).toBe(true);
    expect(await s.invalidationsAfter(-1, 10)).toEqual({ latest: c, records: [] });
    const { latest, records } = await s.invalidationsAfter(a, 10);
    expect(latest).toBe(c);
    expect(records.map((r) => [r.seq, r.scope, r.key])).toEqual([
      [b, "rules", ""],
      [c, "client", "c/1"],
    ]);
    expect(typeof records[0]?.at).toBe("number");
    expect((await s.invalidationsAfter(0, 1)).records.map((r) => r.key)).toEqual(["alice"]);
  });

  test("another process on the same store hears an announcement (and not what was recorded before it started)", async () => {
    const sa = await open();
    const sb = await open();
    await sa.recordInvalidation("user", "before-start");
    const cli = hub({ store: sa, pollMs: 0 });
    const server = hub({ store: sb, pollMs: 20 });
    await server.ready();
    const gotServer = heard(server);
    const gotCli = heard(cli);
    await cli.announce({ scope: "user", key: "alice" });
    await until(() => gotServer.length > 0, 10_000, "the server's poll");
    expect(gotServer).toEqual([[{ scope: "user", key: "alice" }, "store"]]);
    expect(gotCli).toEqual([[{ scope: "user", key: "alice" }, "local"]]);
    await cli.poll();
    expect(gotCli).toHaveLength(1); // its own record is not applied twice
    expect(server.stats()).toMatchObject({ fromStore: 1, pollFailures: 0 });
  });

  test("the other workers hear it over the cluster bus at once", async () => {
    const s = await open();
    const [busA, busB] = busPair();
    const w1 = hub({ store: s, pollMs: 0, bus: busA });
    const w2 = hub({ store: s, pollMs: 0, bus: busB });
    const got = heard(w2);
    await w1.announce({ scope: "client", key: "c1" });
    expect(got).toEqual([[{ scope: "client", key: "c1" }, "worker"]]);
    expect(w2.stats().fromWorkers).toBe(1);
  });

  test("store down: announcing still tells this process, then rejects, logged and counted; a failed poll is logged and counted (the next poll tries again from the same place)", async () => {
    const s = await open();
    const { logger, lines } = recordingLogger();
    const h = hub({ store: s, pollMs: 0, logger });
    await h.ready();
    const got = heard(h);
    await s.close();
    await expect(h.announce({ scope: "user", key: "bob" })).rejects.toThrow();
    expect(got).toEqual([[{ scope: "user", key: "bob" }, "local"]]);
    expect(h.stats().recordFailures).toBe(1);
    expect(lines.filter((l) => l.level === "error").map((l) => l.msg)).toEqual([
      "invalidation not recorded in the store: other instances keep cached decisions until they expire",
    ]);
    await h.poll();
    expect(h.stats().pollFailures).toBe(1);
    expect(lines.some((l) => l.level === "warn" && l.msg.startsWith("reading invalidations from the store failed"))).toBe(true);
  });

  if (make === postgres) {
    test("PostgreSQL: LISTEN/NOTIFY delivers without polling; a killed LISTEN connection is logged, reconnected, and catches up", async () => {
      const sa = await open();
      const sb = await open();
      const { logger, lines } = recordingLogger();
      const a = hub({ store: sa, pollMs: 0 });
      const b = hub({ store: sb, pollMs: 0, listenUrl: (backend.pgUrl as () => string)(), logger });
      await b.ready();
      await until(() => b.stats().listening === true, 10_000, "LISTEN");
      const got = heard(b);
      await a.announce({ scope: "user", key: "alice" });
      await until(() => got.length === 1, 10_000, "the NOTIFY");
      expect(got[0]).toEqual([{ scope: "user", key: "alice" }, "store"]);

      // Kill the listener's backend; announce while it is down: the reconnect reads what it missed.
      const admin = new pg.Client({ connectionString: (backend.pgUrl as () => string)() });
      await admin.connect();
      try {
        const killed = await admin.query(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
          [LISTENER_APP_NAME],
        );
        expect(killed.rowCount).toBe(1);
      } finally {
        await admin.end();
      }
      await until(() => b.stats().listenErrors >= 1, 10_000, "the lost LISTEN to be noticed");
      await a.announce({ scope: "client", key: "c9" });
      await until(() => got.length === 2, 15_000, "the catch-up after reconnecting");
      expect(got[1]).toEqual([{ scope: "client", key: "c9" }, "store"]);
      await until(() => b.stats().listening === true, 10_000, "LISTEN again");
      expect(lines.some((l) => l.level === "warn" && l.msg.startsWith("LISTEN for invalidations lost"))).toBe(true);
    });
  }
});

test("bad announcements are refused", async () => {
  const h = createInvalidationHub({ bus: false });
  await expect(h.announce({ scope: "everything", key: "" } as never)).rejects.toThrow("expected { scope: all|user|client|rules, key }");
  await h.close();
});
