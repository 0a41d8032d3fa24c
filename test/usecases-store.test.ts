/**
 * The storage contract, run against both backends: SQLite always, PostgreSQL when
 * EXHOOK_TEST_PG_URL is set (scripts/with-postgres.sh sets it; without it the PostgreSQL half is
 * skipped with a message saying so).
 */
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { connectionOf, type Connection } from "../src/connection";
import {
  openPostgresStore,
  openSqliteStore,
  openSqliteWorkerStore,
  SCAN_CHUNK,
  type Store,
  type StoredMessage,
} from "../src/usecases/index";
import { MIGRATIONS as PG_MIGRATIONS } from "../src/usecases/pg-store";
import { MIGRATIONS as SQLITE_MIGRATIONS } from "../src/usecases/sqlite-store";
import { caseConnection, PRESENCE_CASES, REORDER_WINDOW_MS } from "./helpers/presence-cases";
import { ROOT } from "./helpers/compile";
import { compiledTree } from "./helpers/server-child";

const PG_URL = process.env["EXHOOK_TEST_PG_URL"];
if (!PG_URL) {
  console.warn(
    "usecases-store: PostgreSQL backend tests SKIPPED: EXHOOK_TEST_PG_URL is not set (run under scripts/with-postgres.sh to include them)",
  );
}

interface Backend {
  open(): Promise<Store>;
  cleanup(): Promise<void>;
  /** Runs raw SQL on the backend's database (`$1`-style parameters), before or after `open`. */
  exec(sql: string, params?: unknown[]): Promise<void>;
}

function sqliteBackend(): Backend {
  const dir = mkdtempSync(join(tmpdir(), "exhook-store-"));
  const file = join(dir, "sub", "exhook.db");
  return {
    open: async () => openSqliteStore({ file }),
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
    async exec(sql, params = []) {
      mkdirSync(join(dir, "sub"), { recursive: true });
      const db = new Database(file);
      try {
        if (params.length) db.prepare(sql.replace(/\$\d+/g, "?")).run(...params);
        else db.exec(sql);
      } finally {
        db.close();
      }
    },
  };
}

/** The same file through the worker-thread store (raw SQL still runs here, on its own connection). */
function sqliteWorkerBackend(): Backend {
  const direct = sqliteBackend();
  let file: string | undefined;
  return {
    ...direct,
    async open() {
      // The direct backend knows the file: open it once to learn the path, then hand it to the threads.
      const s = await direct.open();
      file = s.location;
      await s.close();
      return openSqliteWorkerStore({ file });
    },
  };
}

function pgBackend(): Backend {
  const name = `exhook_test_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = () => new pg.Client({ connectionString: PG_URL });
  let created = false;
  const url = () => {
    const u = new URL(PG_URL as string);
    u.pathname = `/${name}`;
    return u.toString();
  };
  const create = async () => {
    if (created) return;
    const c = admin();
    await c.connect();
    await c.query(`CREATE DATABASE ${name}`);
    await c.end();
    created = true;
  };
  return {
    async open() {
      await create();
      return openPostgresStore({ url: url(), poolSize: 4 });
    },
    async exec(sql, params = []) {
      await create();
      const c = new pg.Client({ connectionString: url() });
      await c.connect();
      try {
        await c.query(sql, params);
      } finally {
        await c.end();
      }
    },
    async cleanup() {
      if (!created) return;
      const c = admin();
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

const conn = (clientId: string, peerport: number, node = "emqx@n1"): Connection =>
  connectionOf({ clientid: clientId, node, username: "u", peerhost: "10.0.0.9", peerport, sockport: 1883, protocol: "mqtt" });

const msg = (i: number, topic: string, extra: Partial<StoredMessage> = {}): StoredMessage => ({
  id: `ID${String(i).padStart(30, "0")}`,
  topic,
  payload: new Uint8Array([i & 255, 0, 255]),
  qos: i % 3,
  publisher: `c${i}`,
  username: "u",
  node: "emqx@n1",
  timestamp: 1_700_000_000_000 + i,
  storedAt: 1_700_000_000_500 + i,
  headers: { username: "u" },
  ...extra,
});

const contract = (label: string, make: () => Backend) =>
  describe(`store contract: ${label}`, () => {
    let backend: Backend;
    let store: Store;
    beforeAll(async () => {
      backend = make();
      store = await backend.open();
    });
    afterAll(async () => {
      await store.close();
      await backend.cleanup();
    });

    test("users: create, replace, list, remove", async () => {
      const u = { hashFormat: "scrypt", superuser: false };
      await store.putUser({ ...u, username: "zed", passwordHash: "$h1", clientIds: [], createdAt: 1, updatedAt: 1 });
      await store.putUser({ ...u, username: "amy", passwordHash: "$h2", clientIds: ["amy-*", "x"], createdAt: 2, updatedAt: 2 });
      await store.putUser({
        username: "zed",
        passwordHash: "$2b$h3",
        hashFormat: "bcrypt",
        superuser: true,
        clientIds: ["z"],
        createdAt: 9,
        updatedAt: 3,
      });
      expect(await store.listUsers()).toEqual([
        {
          username: "amy",
          passwordHash: "$h2",
          hashFormat: "scrypt",
          superuser: false,
          clientIds: ["amy-*", "x"],
          createdAt: 2,
          updatedAt: 2,
        },
        { username: "zed", passwordHash: "$2b$h3", hashFormat: "bcrypt", superuser: true, clientIds: ["z"], createdAt: 1, updatedAt: 3 },
      ]);
      expect(await store.removeUser("zed")).toBe(true);
      expect(await store.removeUser("zed")).toBe(false);
      expect(await store.getUser("zed")).toBeUndefined();
      expect((await store.getUser("amy"))?.passwordHash).toBe("$h2");
    });

    test("ACL rules keep their order", async () => {
      const rules = [
        { permission: "deny", topic: "a/#" },
        { permission: "allow", action: "publish", topic: "b/${username}" },
      ];
      await store.replaceAclRules(rules);
      expect(await store.listAclRules()).toEqual(rules);
      await store.replaceAclRules([rules[1]]);
      expect(await store.listAclRules()).toEqual([rules[1]]);
    });

    test("messages: batch insert skips duplicate ids; query by filter, time range, order, limit, across pages", async () => {
      const batch: StoredMessage[] = [];
      for (let i = 0; i < 300; i++) batch.push(msg(i, i % 2 === 0 ? `s/${i % 10}/t` : `other/${i}`));
      batch.push(msg(1000, "$SYS/x"), msg(1001, "s"), msg(1002, "sx/1/t"));
      expect(await store.insertMessages(batch)).toBe(303);
      expect(await store.insertMessages([msg(0, "s/0/t"), msg(5000, "s/new/t")])).toBe(1);
      const even = await store.queryMessages({ filter: "s/+/t", limit: 1000, order: "asc" });
      expect(even.length).toBe(151);
      expect(even.slice(0, 2).map((m) => m.id)).toEqual([msg(0, "").id, msg(2, "").id]);
      expect(even[0]).toEqual(msg(0, "s/0/t"));
      const newest = await store.queryMessages({ filter: "s/#", limit: 3 });
      expect(newest.map((m) => m.topic)).toEqual(["s/new/t", "s", "s/8/t"]);
      const range = await store.queryMessages({
        filter: "s/4/t",
        since: 1_700_000_000_100,
        until: 1_700_000_000_200,
        limit: 100,
        order: "asc",
      });
      expect(range.map((m) => m.timestamp - 1_700_000_000_000)).toEqual([104, 114, 124, 134, 144, 154, 164, 174, 184, 194]);
      const all = await store.queryMessages({ limit: 10_000 });
      expect(all.length).toBe(304 - 1);
      expect(all.some((m) => m.topic.startsWith("$"))).toBe(false);
      expect((await store.queryMessages({ filter: "$SYS/#", limit: 5 })).map((m) => m.topic)).toEqual(["$SYS/x"]);
      // Paged scan: 150 matches of an exact topic wanted from interleaved rows.
      const paged = await store.queryMessages({ filter: "#", limit: 250, order: "asc" });
      expect(paged.length).toBe(250);
      expect(new Set(paged.map((m) => m.id)).size).toBe(250);
    });

    test("presence: takeover in either order stays online; disconnect before its own connect stays offline", async () => {
      let r = await store.presenceConnected(conn("c1", 1), 1000, 30_000);
      expect([r.wasOnline, r.state.online, r.state.peerport, r.state.since]).toEqual([false, true, 1, 1000]);
      r = await store.presenceConnected(conn("c1", 2), 2000, 30_000);
      expect([r.wasOnline, r.state.online, r.state.peerport, r.state.connections]).toEqual([true, true, 2, 2]);
      r = await store.presenceDisconnected(conn("c1", 1), 2001, "takenover");
      expect([r.wasOnline, r.state.online, r.state.peerport, r.state.connections]).toEqual([true, true, 2, 1]);
      // Duplicate disconnect of the old connection changes nothing.
      r = await store.presenceDisconnected(conn("c1", 1), 2500, "again");
      expect([r.state.online, r.state.peerport]).toEqual([true, 2]);
      r = await store.presenceDisconnected(conn("c1", 2), 3000, "normal");
      expect(r.state).toEqual({
        clientId: "c1",
        online: false,
        since: 3000,
        node: "emqx@n1",
        username: "u",
        peerhost: "10.0.0.9",
        peerport: 2,
        sockport: 1883,
        protocol: "mqtt",
        connections: 0,
        reason: "normal",
      });
      expect(r.wasOnline).toBe(true);

      // Out of order: the disconnect of connection 3 arrives before its connect.
      r = await store.presenceDisconnected(conn("c2", 3), 5000, "tcp_closed");
      expect([r.wasOnline, r.state.online]).toEqual([false, false]);
      r = await store.presenceConnected(conn("c2", 3), 5001, 30_000);
      expect([r.wasOnline, r.state.online]).toEqual([false, false]);
      // The same address reused after the reorder window is a new connection.
      r = await store.presenceConnected(conn("c2", 3), 40_000, 30_000);
      expect([r.wasOnline, r.state.online, r.state.since]).toEqual([false, true, 40_000]);

      expect((await store.listPresence()).map((p) => [p.clientId, p.online])).toEqual([
        ["c1", false],
        ["c2", true],
      ]);
      expect((await store.listPresence({ online: true })).map((p) => p.clientId)).toEqual(["c2"]);
      expect(await store.getPresence("nobody")).toBeUndefined();
      // Pruning keeps each client's latest row, so offline clients still say since when.
      expect(await store.prunePresence(10_000)).toBe(1);
      expect((await store.getPresence("c1"))?.since).toBe(3000);
    });

    test("presence events of one takeover written concurrently through two store handles end online", async () => {
      const other = await backend.open();
      try {
        await store.presenceConnected(conn("c3", 1), 1000, 30_000);
        await Promise.all([
          store.presenceDisconnected(conn("c3", 1), 2000, "takenover"),
          other.presenceConnected(conn("c3", 2, "emqx@n2"), 2000, 30_000),
        ]);
        expect(await other.getPresence("c3")).toMatchObject({ online: true, node: "emqx@n2", peerport: 2, connections: 1 });
      } finally {
        await other.close();
      }
    });

    describe.each([
      ["with peer ports (EMQX >= 5.4)", true],
      ["without peer ports (EMQX < 5.4)", false],
    ])("presence event orders, %s", (tag, withPeerport) => {
      test.each(PRESENCE_CASES.map((c, i) => [c.name, c, i] as const))("%s", async (_n, c, i) => {
        const id = `order-${withPeerport ? "p" : "n"}-${i}`;
        const seen: Array<[boolean, number]> = [];
        const want: Array<[boolean, number]> = [];
        for (const s of c.steps) {
          const cn = caseConnection(id, s.conn, withPeerport);
          const r =
            s.ev === "C"
              ? await store.presenceConnected(cn, s.at, REORDER_WINDOW_MS)
              : await store.presenceDisconnected(cn, s.at, "normal");
          const stored = await store.getPresence(id);
          expect(stored).toEqual(r.state);
          seen.push([r.state.online, s.connections === undefined ? -1 : r.state.connections]);
          want.push([s.online, s.connections ?? -1]);
        }
        expect({ tag, seen }).toEqual({ tag, seen: want });
      });
    });

    test("messages: deleteMessagesBefore removes the oldest first, at most `limit` per call, nothing at or after `before`", async () => {
      const old = [0, 1, 2, 3].map((i) => msg(90_000 + i, "old/t", { timestamp: 1_000 + i }));
      expect(await store.insertMessages(old)).toBe(4);
      const countAll = async () => (await store.queryMessages({ limit: 100_000 })).length;
      const before = await countAll();
      expect(await store.deleteMessagesBefore(1_003, 2)).toBe(2);
      expect((await store.queryMessages({ filter: "old/t", limit: 10, order: "asc" })).map((m) => m.timestamp)).toEqual([1_002, 1_003]);
      expect(await store.deleteMessagesBefore(1_003, 100)).toBe(1);
      expect(await store.deleteMessagesBefore(1_003, 100)).toBe(0);
      expect((await store.queryMessages({ filter: "old/t", limit: 10 })).map((m) => m.timestamp)).toEqual([1_003]);
      expect(await countAll()).toBe(before - 3);
      expect(await store.deleteMessagesBefore(1_004, 100)).toBe(1);
    });

    test("ping answers; read queries are bounded by time and bytes, in short statements", async () => {
      await expect(store.ping()).resolves.toBeUndefined();
      const many: StoredMessage[] = [];
      for (let i = 0; i < SCAN_CHUNK * 2 + 10; i++)
        many.push(msg(200_000 + i, `bulk/${i % 7}`, { payload: new Uint8Array(100).fill(i & 255), timestamp: 1_800_000_000_000 + i }));
      for (let i = 0; i < many.length; i += 1000) await store.insertMessages(many.slice(i, i + 1000));
      // A wildcard filter matching nothing scans by time; with no time left it stops after one statement.
      const err = await store.queryMessages({ filter: "+/nomatch", limit: 10, timeoutMs: 0 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "QUERY_TIMEOUT", message: expect.stringContaining("message query stopped after 0 ms") });
      // Given time, the same scan runs through every chunk and finds nothing.
      expect(await store.queryMessages({ filter: "+/nomatch", limit: 10, timeoutMs: 60_000 })).toEqual([]);
      // Exact topics use the topic index: the newest of one topic, across the chunk boundary.
      const exact = await store.queryMessages({ filter: "bulk/3", limit: 700, since: 1_800_000_000_000 });
      expect(exact.length).toBe(Math.ceil((SCAN_CHUNK * 2 + 10 - 3) / 7));
      expect(exact[0]?.timestamp).toBeGreaterThan(exact[1]?.timestamp as number);
      // maxBytes: stops once the payloads reach it (the last one included).
      expect((await store.queryMessages({ filter: "bulk/#", limit: 1000, maxBytes: 250 })).length).toBe(3);
      // A presence listing past its time stops too (between chunks of 500 client ids).
      for (let i = 0; i < 510; i++) await store.presenceConnected(conn(`many-${String(i).padStart(4, "0")}`, 1), 1000, 30_000);
      expect(await store.listPresence({ timeoutMs: 0 }).catch((e: unknown) => e)).toMatchObject({ code: "QUERY_TIMEOUT" });
      expect((await store.listPresence({ online: true, limit: 600 })).filter((p) => p.clientId.startsWith("many-")).length).toBe(510);
    });

    test("opening a schema-1 database migrates presence rows to the counted records and the new connection key", async () => {
      const old = make();
      try {
        const kind = store.kind;
        const t = kind === "sqlite" ? "presence" : "exhook_presence";
        await old.exec((kind === "sqlite" ? SQLITE_MIGRATIONS : PG_MIGRATIONS)[0] as string);
        await old.exec(
          kind === "sqlite"
            ? "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1)"
            : "CREATE TABLE exhook_schema_version (version INTEGER NOT NULL); INSERT INTO exhook_schema_version VALUES (1)",
        );
        // Rows as version 1 wrote them: key node|peerhost:peerport; live / ended / tombstone (disconnect before connect).
        const row = (id: string, peerport: number, connectedAt: number | null, disconnectedAt: number | null, reason: string) =>
          old.exec(
            `INSERT INTO ${t} (clientid, conn_key, node, username, peerhost, peerport, sockport, protocol, connected_at, disconnected_at, reason)
             VALUES ($1, $2, 'emqx@n1', 'u', '10.0.0.9', $3, 1883, 'mqtt', $4, $5, $6)`,
            [id, `emqx@n1|10.0.0.9:${peerport}`, peerport, connectedAt, disconnectedAt, reason],
          );
        await row("m-live", 0, 1000, null, "");
        await row("m-ended", 7, 1000, 2000, "normal");
        await row("m-tomb", 8, null, 5000, "tcp_closed");
        const migrated = await old.open();
        try {
          expect(await migrated.getPresence("m-live")).toMatchObject({ online: true, since: 1000, connections: 1, peerport: 0 });
          expect(await migrated.getPresence("m-ended")).toMatchObject({ online: false, since: 2000, reason: "normal" });
          expect(await migrated.getPresence("m-tomb")).toMatchObject({ online: false, since: 5000, reason: "tcp_closed" });
          // The migrated key is the one new events use: the live connection's disconnect ends it, a quick reconnect is online.
          expect((await migrated.presenceDisconnected(conn("m-live", 0), 3000, "tcp_closed")).state).toMatchObject({
            online: false,
            connections: 0,
          });
          expect((await migrated.presenceConnected(conn("m-live", 0), 5000, 30_000)).state).toMatchObject({
            online: true,
            since: 5000,
            connections: 1,
          });
          // The tombstone still holds back its late connect; the ended connection's port may connect again.
          expect((await migrated.presenceConnected(conn("m-tomb", 8), 5001, 30_000)).state.online).toBe(false);
          expect((await migrated.presenceConnected(conn("m-ended", 7), 6000, 30_000)).state.online).toBe(true);
          expect((await migrated.listPresence()).filter((p) => p.clientId.startsWith("m-")).map((p) => [p.clientId, p.online])).toEqual([
            ["m-ended", true],
            ["m-live", true],
            ["m-tomb", false],
          ]);
        } finally {
          await migrated.close();
        }
      } finally {
        await old.cleanup();
      }
    });

    test("reopening the store keeps users and messages", async () => {
      await store.close();
      store = await backend.open();
      expect((await store.getUser("amy"))?.clientIds).toEqual(["amy-*", "x"]);
      expect((await store.queryMessages({ filter: "s/new/t", limit: 5 })).map((m) => m.publisher)).toEqual(["c5000"]);
    });
  });

describe("SQLite file permissions", () => {
  test("a new database (and its -wal, -shm) is 0600 in a 0700 directory; an existing 0644 one is tightened", async () => {
    const dir = mkdtempSync(join(tmpdir(), "exhook-store-mode-"));
    try {
      const file = join(dir, "data", "exhook.db");
      const store = openSqliteStore({ file });
      await store.putUser({ username: "u", passwordHash: "$h", clientIds: [], createdAt: 1, updatedAt: 1 });
      const mode = (f: string) => statSync(f).mode & 0o777;
      expect([file, `${file}-wal`, `${file}-shm`].map(mode)).toEqual([0o600, 0o600, 0o600]);
      expect(mode(join(dir, "data"))).toBe(0o700);
      await store.close();
      // A file left world-readable by an older release is tightened when opened.
      const old = join(dir, "old.db");
      writeFileSync(old, "");
      chmodSync(old, 0o644);
      await (await openSqliteWorkerStore({ file: old })).close();
      expect(mode(old)).toBe(0o600);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("SQLite worker threads", () => {
  test("a thread that dies fails its calls with a transient error, is started again, and the store carries on", async () => {
    const dir = mkdtempSync(join(tmpdir(), "exhook-store-crash-"));
    const lines: Array<{ obj: object; msg: string | undefined }> = [];
    const logger = { debug() {}, info() {}, warn() {}, error: (obj: object, msg?: string) => void lines.push({ obj, msg }) };
    const store = await openSqliteWorkerStore({ file: join(dir, "exhook.db"), logger });
    try {
      expect(await store.insertMessages([msg(1, "a/b")])).toBe(1);
      const crash = (store as unknown as { __exitThread(): Promise<void> }).__exitThread();
      await expect(crash).rejects.toMatchObject({ code: "STORE_WORKER_EXITED", message: "the SQLite writer thread exited (code 1)" });
      expect(lines[0]).toEqual({
        obj: { thread: "writer", code: 1, failedCalls: 1, restartInMs: 200 },
        msg: "SQLite store thread exited; starting a new one",
      });
      // Calls made meanwhile wait for the new thread; reads never stopped.
      expect(await store.insertMessages([msg(2, "a/b")])).toBe(1);
      expect((await store.queryMessages({ filter: "a/b", limit: 10 })).map((m) => m.id)).toEqual([msg(2, "").id, msg(1, "").id]);
      // A method the store does not have is an error, not a hang.
      await expect((store as unknown as { nope(): Promise<void> }).nope()).rejects.toThrow('the SQLite store has no method "nope"');
    } finally {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("close() returns in a script with nothing else running (the threads stay referenced until they exit)", () => {
    // In jest other handles keep the loop alive; a script's last `await store.close()` has none.
    const tree = compiledTree("exhook-store-close-");
    try {
      const script = tree.write(
        "close.js",
        `const { openSqliteWorkerStore } = require("./src/usecases/sqlite-worker-store.js");
(async () => {
  const store = await openSqliteWorkerStore({ file: ${JSON.stringify(join(tree.dir, "exhook.db"))} });
  await store.insertMessages([]);
  await store.close();
  process.stdout.write("closed\\n");
})();`,
      );
      const r = spawnSync(process.execPath, [script], {
        encoding: "utf8",
        timeout: 20_000,
        env: { ...process.env, NODE_PATH: join(ROOT, "node_modules") },
      });
      expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({ status: 0, stdout: "closed\n", stderr: "" });
    } finally {
      tree.cleanup();
    }
  }, 30_000);
});

contract("SQLite", sqliteBackend);
contract("SQLite in worker threads", sqliteWorkerBackend);
if (PG_URL) contract("PostgreSQL", pgBackend);
else describe.skip("store contract: PostgreSQL (EXHOOK_TEST_PG_URL not set)", () => test.skip("skipped", () => undefined));
