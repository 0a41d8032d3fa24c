/**
 * The users part of the store on both backends: superuser and hash format are stored, and a
 * database written by the first release (schema 1: no such columns) is migrated on open, its users
 * kept (as scrypt, not superusers). PostgreSQL runs when EXHOOK_TEST_PG_URL is set (make test).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { addUser, openPostgresStore, openSqliteStore, verifyPassword, type Store } from "../src/usecases/index";

const PG_URL = process.env["EXHOOK_TEST_PG_URL"];

// The users table and version row exactly as release 0.1.0 (schema 1) created them.
const V1_SQLITE = `CREATE TABLE users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, client_ids TEXT NOT NULL DEFAULT '[]',
   created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
 CREATE TABLE acl_rules (position INTEGER PRIMARY KEY, rule TEXT NOT NULL);
 CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, payload BLOB NOT NULL,
   qos INTEGER NOT NULL, publisher TEXT NOT NULL, username TEXT NOT NULL, node TEXT NOT NULL, ts INTEGER NOT NULL,
   stored_at INTEGER NOT NULL, headers TEXT NOT NULL);
 CREATE INDEX messages_ts ON messages (ts, seq);
 CREATE TABLE presence (clientid TEXT NOT NULL, conn_key TEXT NOT NULL, node TEXT NOT NULL, username TEXT NOT NULL,
   peerhost TEXT NOT NULL, peerport INTEGER NOT NULL, sockport INTEGER NOT NULL, protocol TEXT NOT NULL, connected_at INTEGER,
   disconnected_at INTEGER, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (clientid, conn_key));
 CREATE TABLE schema_version (version INTEGER NOT NULL);
 INSERT INTO schema_version (version) VALUES (1);`;

const V1_PG = `CREATE TABLE exhook_users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, client_ids JSONB NOT NULL DEFAULT '[]',
   created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
 CREATE TABLE exhook_acl_rules (position INTEGER PRIMARY KEY, rule JSONB NOT NULL);
 CREATE TABLE exhook_messages (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, payload BYTEA NOT NULL,
   qos SMALLINT NOT NULL, publisher TEXT NOT NULL, username TEXT NOT NULL, node TEXT NOT NULL, ts BIGINT NOT NULL,
   stored_at BIGINT NOT NULL, headers JSONB NOT NULL);
 CREATE INDEX exhook_messages_ts ON exhook_messages (ts, seq);
 CREATE TABLE exhook_presence (clientid TEXT NOT NULL, conn_key TEXT NOT NULL, node TEXT NOT NULL, username TEXT NOT NULL,
   peerhost TEXT NOT NULL, peerport INTEGER NOT NULL, sockport INTEGER NOT NULL, protocol TEXT NOT NULL, connected_at BIGINT,
   disconnected_at BIGINT, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (clientid, conn_key));
 CREATE TABLE exhook_schema_version (version INTEGER NOT NULL);
 INSERT INTO exhook_schema_version (version) VALUES (1);`;

const FAST = { N: 1024, r: 8, p: 1, keylen: 32 };
const OLD_HASH = "$scrypt$ln=10,r=8,p=1,k=32$AAAAAAAAAAAAAAAAAAAAAA==$" + "A".repeat(43) + "=";

interface Backend {
  /** A database holding release 0.1.0's schema with one user, "old". */
  createV1(): Promise<void>;
  open(): Promise<Store>;
  version(): Promise<number>;
  cleanup(): Promise<void>;
}

function sqlite(): Backend {
  const dir = mkdtempSync(join(tmpdir(), "exhook-users-"));
  const file = join(dir, "exhook.db");
  return {
    async createV1() {
      const db = new Database(file);
      db.exec(V1_SQLITE);
      db.prepare("INSERT INTO users VALUES (?, ?, ?, ?, ?)").run("old", OLD_HASH, '["old-*"]', 5, 6);
      db.close();
    },
    open: async () => openSqliteStore({ file }),
    async version() {
      const db = new Database(file, { readonly: true });
      try {
        return (db.prepare("SELECT version FROM schema_version").get() as { version: number }).version;
      } finally {
        db.close();
      }
    },
    cleanup: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

function postgres(): Backend {
  const name = `exhook_users_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const url = () => {
    const u = new URL(PG_URL as string);
    u.pathname = `/${name}`;
    return u.toString();
  };
  const run = async (connectionString: string, sql: string, params: unknown[] = []) => {
    const c = new pg.Client({ connectionString });
    await c.connect();
    try {
      return await c.query(sql, params);
    } finally {
      await c.end();
    }
  };
  return {
    async createV1() {
      await run(PG_URL as string, `CREATE DATABASE ${name}`);
      await run(url(), V1_PG);
      await run(url(), "INSERT INTO exhook_users VALUES ($1, $2, $3, $4, $5)", ["old", OLD_HASH, '["old-*"]', 5, 6]);
    },
    open: () => openPostgresStore({ url: url(), poolSize: 2 }),
    version: async () => Number((await run(url(), "SELECT version FROM exhook_schema_version")).rows[0].version),
    cleanup: async () => void (await run(PG_URL as string, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)),
  };
}

const suite = (label: string, make: () => Backend) =>
  describe(`users in the store: ${label}`, () => {
    let backend: Backend;
    let store: Store;
    beforeAll(async () => {
      backend = make();
      await backend.createV1();
      store = await backend.open();
    });
    afterAll(async () => {
      await store?.close();
      await backend.cleanup();
    });

    test("a schema-1 database is migrated on open: its users stay, as scrypt, not superusers", async () => {
      expect(await backend.version()).toBeGreaterThanOrEqual(2);
      expect(await store.getUser("old")).toEqual({
        username: "old",
        passwordHash: OLD_HASH,
        hashFormat: "scrypt",
        clientIds: ["old-*"],
        superuser: false,
        createdAt: 5,
        updatedAt: 6,
      });
      // Opening again does not migrate twice.
      await store.close();
      store = await backend.open();
      expect((await store.listUsers()).map((u) => u.username)).toEqual(["old"]);
    });

    test("superuser and hash format are stored and replaced", async () => {
      await addUser(store, "root", "pw", { superuser: true, scrypt: FAST });
      expect(await store.getUser("root")).toMatchObject({ superuser: true, hashFormat: "scrypt", clientIds: [] });
      // Changing the password keeps the flag and client ids unless given.
      await store.putUser({ ...(await store.getUser("root"))!, clientIds: ["r1"] });
      const changed = await addUser(store, "root", "pw2", { scrypt: FAST });
      expect(changed).toMatchObject({ superuser: true, clientIds: ["r1"] });
      expect(await verifyPassword("pw2", (await store.getUser("root"))!.passwordHash)).toBe(true);
      await store.putUser({ ...(await store.getUser("root"))!, superuser: false, passwordHash: "$2b$04$x", hashFormat: "bcrypt" });
      expect(await store.getUser("root")).toMatchObject({ superuser: false, hashFormat: "bcrypt", passwordHash: "$2b$04$x" });
      expect((await store.listUsers()).map((u) => [u.username, u.superuser, u.hashFormat])).toEqual([
        ["old", false, "scrypt"],
        ["root", false, "bcrypt"],
      ]);
      // Written without the new fields (code from before them): not a superuser, format read from the hash.
      const bcrypt = "$2b$04$G3us/Dj34oNjejo/jbWOIOI8xEyR8VWNRmv1elYTyDIax7VbFJV8W";
      await store.putUser({ username: "legacy", passwordHash: bcrypt, clientIds: [], createdAt: 1, updatedAt: 1 });
      expect(await store.getUser("legacy")).toMatchObject({ superuser: false, hashFormat: "bcrypt" });
    });
  });

suite("SQLite", sqlite);
if (PG_URL) suite("PostgreSQL", postgres);
else describe.skip("users in the store: PostgreSQL (EXHOOK_TEST_PG_URL not set)", () => test.skip("skipped", () => undefined));
