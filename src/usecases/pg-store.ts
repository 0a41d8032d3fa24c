/**
 * The PostgreSQL backend: one database shared by several ExHook server instances (one EMQX cluster,
 * several ExHook servers). Schema creation runs under an advisory lock so instances starting
 * together do not race; presence changes take a per-client-id transaction lock so two instances
 * handling the two connections of a takeover still agree.
 */
import type pg from "pg";
import { pgTransaction } from "./pg-transaction.js";
import { connectionKey, type Connection } from "../connection.js";
import { derivePresence, recordConnected, recordDisconnected, type ConnectionRecord } from "../presence.js";
import type { Logger } from "../provider.js";
import { loadOptional } from "./optional-dependency.js";
import { PG_OUTBOX_MIGRATION, pgOutboxMethods } from "./bridge/pg-outbox.js";
import {
  INVALIDATION_KEEP_MS,
  MESSAGE_COLUMNS,
  messageValues,
  scanPresence,
  scanQuery,
  type InvalidationScope,
  type MessageQuery,
  type PresenceChange,
  type PresenceState,
  type ScanRow,
  type Store,
  type StoredMessage,
  type UserRecord,
} from "./store.js";
import { hashFormatOf } from "./password.js";

/**
 * Schema migrations, applied in order; the index + 1 is the schema version. Never edit a shipped one.
 * @internal Exported for the migration tests.
 */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE exhook_users (
     username TEXT PRIMARY KEY,
     password_hash TEXT NOT NULL,
     client_ids JSONB NOT NULL DEFAULT '[]',
     created_at BIGINT NOT NULL,
     updated_at BIGINT NOT NULL
   );
   CREATE TABLE exhook_acl_rules (position INTEGER PRIMARY KEY, rule JSONB NOT NULL);
   CREATE TABLE exhook_messages (
     seq BIGSERIAL PRIMARY KEY,
     id TEXT NOT NULL UNIQUE,
     topic TEXT NOT NULL,
     payload BYTEA NOT NULL,
     qos SMALLINT NOT NULL,
     publisher TEXT NOT NULL,
     username TEXT NOT NULL,
     node TEXT NOT NULL,
     ts BIGINT NOT NULL,
     stored_at BIGINT NOT NULL,
     headers JSONB NOT NULL
   );
   CREATE INDEX exhook_messages_ts ON exhook_messages (ts, seq);
   CREATE TABLE exhook_presence (
     clientid TEXT NOT NULL,
     conn_key TEXT NOT NULL,
     node TEXT NOT NULL,
     username TEXT NOT NULL,
     peerhost TEXT NOT NULL,
     peerport INTEGER NOT NULL,
     sockport INTEGER NOT NULL,
     protocol TEXT NOT NULL,
     connected_at BIGINT,
     disconnected_at BIGINT,
     reason TEXT NOT NULL DEFAULT '',
     PRIMARY KEY (clientid, conn_key)
   );`,
  // 2: presence counts connects minus disconnects per connection identity (src/presence.ts), and the
  // identity is the one of src/connection.ts (node|peerhost|peerport|sockport, was node|peerhost:peerport).
  // Old rows: live connection = 1, ended = 0, disconnect before its connect (tombstone) = -1.
  `ALTER TABLE exhook_presence ADD COLUMN live INTEGER NOT NULL DEFAULT 0;
   UPDATE exhook_presence SET
     live = CASE WHEN disconnected_at IS NULL AND connected_at IS NOT NULL THEN 1 WHEN connected_at IS NULL THEN -1 ELSE 0 END,
     conn_key = node || '|' || peerhost || '|' || peerport || '|' || sockport;`,
  // 3: invalidation announcements (src/usecases/invalidation.ts), read by every process on the store.
  `CREATE TABLE exhook_invalidations (
     seq BIGSERIAL PRIMARY KEY,
     scope TEXT NOT NULL,
     key TEXT NOT NULL,
     at BIGINT NOT NULL
   );`,
  // 4: per-user superuser flag and the name of the hash format (rows before it are all scrypt).
  `ALTER TABLE exhook_users ADD COLUMN superuser BOOLEAN NOT NULL DEFAULT false,
     ADD COLUMN hash_format TEXT NOT NULL DEFAULT 'scrypt';`,
  // 5: the bridge outbox (src/usecases/bridge/pg-outbox.ts).
  PG_OUTBOX_MIGRATION,
  // 6: message queries in short statements: scan by time reading topics from the index, and a
  // topic index for filters without wildcards. (Building them locks inserts on a large table for
  // a while; the message writer holds messages meanwhile.)
  `CREATE INDEX IF NOT EXISTS exhook_messages_ts_topic ON exhook_messages (ts, seq) INCLUDE (topic);
   CREATE INDEX IF NOT EXISTS exhook_messages_topic ON exhook_messages (topic, ts, seq);
   DROP INDEX IF EXISTS exhook_messages_ts;`,
];

/** The NOTIFY channel of {@link Store.recordInvalidation} (payload: the record's seq). */
export const INVALIDATION_CHANNEL = "exhook_invalidation";

/** Advisory lock key serializing schema migrations across instances ("exhook" in ASCII). */
const MIGRATION_LOCK = 0x657868_6f6f6b;

/** Options of {@link openPostgresStore}. */
export interface PostgresStoreOptions {
  /** Connection URL, e.g. `postgres://user:pass@db:5432/exhook`. */
  readonly url: string;
  /** Pool size for the hooks and writes. Default 10. */
  readonly poolSize?: number;
  /** Connections for the read API's queries (a pool of their own, so reads never take the hooks' connections). Default 2. */
  readonly readPoolSize?: number;
  /** Server-side `statement_timeout` of the read pool, in ms (a backstop; queries also stop on their own `timeoutMs`). Default 30000. */
  readonly readStatementTimeoutMs?: number;
  /**
   * Client-side limit on any one query of the main pool, in ms: a server that stopped answering
   * (frozen, partitioned) fails the call instead of holding it forever, and its connection is
   * dropped. Default 30000.
   */
  readonly queryTimeoutMs?: number;
  /** Where lost connections are logged (warn). */
  readonly logger?: Logger;
}

const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v));
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function toMessage(r: Record<string, unknown>): StoredMessage & { seq: number } {
  const payload = r["payload"] as Buffer;
  return {
    seq: num(r["seq"]),
    id: r["id"] as string,
    topic: r["topic"] as string,
    payload: new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength),
    qos: num(r["qos"]),
    publisher: r["publisher"] as string,
    username: r["username"] as string,
    node: r["node"] as string,
    timestamp: num(r["ts"]),
    storedAt: num(r["stored_at"]),
    headers: (r["headers"] ?? {}) as Record<string, string>,
  };
}

function toRecord(r: Record<string, unknown>): ConnectionRecord {
  return {
    clientId: r["clientid"] as string,
    key: r["conn_key"] as string,
    node: r["node"] as string,
    username: r["username"] as string,
    peerhost: r["peerhost"] as string,
    peerport: num(r["peerport"]),
    sockport: num(r["sockport"]),
    protocol: r["protocol"] as string,
    live: num(r["live"]),
    connectedAt: numOrNull(r["connected_at"]),
    disconnectedAt: numOrNull(r["disconnected_at"]),
    reason: r["reason"] as string,
  };
}

function toUser(r: Record<string, unknown>): UserRecord {
  return {
    username: r["username"] as string,
    passwordHash: r["password_hash"] as string,
    hashFormat: r["hash_format"] as string,
    clientIds: r["client_ids"] as string[],
    superuser: r["superuser"] === true,
    createdAt: num(r["created_at"]),
    updatedAt: num(r["updated_at"]),
  };
}

/**
 * Opens a PostgreSQL store, creating or migrating its tables (prefixed `exhook_`). Needs the optional
 * package pg (an ExHookConfigError says what to install when it is missing).
 */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<Store> {
  const { Pool } = loadOptional<typeof pg>("pg", "the PostgreSQL store");
  const common = { connectionString: options.url, connectionTimeoutMillis: 10_000, keepAlive: true, keepAliveInitialDelayMillis: 10_000 };
  const pool = new Pool({ ...common, max: options.poolSize ?? 10, query_timeout: options.queryTimeoutMs ?? 30_000 });
  const readPool = new Pool({ ...common, max: options.readPoolSize ?? 2, statement_timeout: options.readStatementTimeoutMs ?? 30_000 });
  // An idle client losing its connection must not crash the process; the next query reconnects.
  const lost = (which: string) => (err: Error) =>
    options.logger?.warn(
      { err: err.message, code: (err as { code?: string }).code, pool: which },
      "PostgreSQL connection lost; the next query reconnects",
    );
  pool.on("error", lost("main"));
  readPool.on("error", lost("read"));
  try {
    await migrate(pool);
  } catch (err) {
    await Promise.all([pool.end(), readPool.end()]);
    throw err;
  }
  let location = options.url;
  try {
    const u = new URL(options.url);
    if (u.password) u.password = "***";
    location = u.toString();
  } catch {
    location = "postgres";
  }

  const rowsOf = async (q: pg.Pool | pg.PoolClient, clientId: string): Promise<ConnectionRecord[]> =>
    (await q.query("SELECT * FROM exhook_presence WHERE clientid = $1", [clientId])).rows.map(toRecord);

  const transaction = <T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> => pgTransaction(pool, fn);

  // One transaction per event, under a per-client-id lock: read the client's records, apply the rule, write the one record.
  function change(conn: Connection, next: (prev: ConnectionRecord | undefined) => ConnectionRecord): Promise<PresenceChange> {
    return transaction(async (c) => {
      await c.query("SELECT pg_advisory_xact_lock(hashtext($1))", [conn.clientId]);
      const records = await rowsOf(c, conn.clientId);
      const wasOnline = derivePresence(records)?.online ?? false;
      const key = connectionKey(conn);
      const i = records.findIndex((r) => r.key === key);
      const r = next(records[i]);
      await c.query(
        `INSERT INTO exhook_presence AS p (clientid, conn_key, node, username, peerhost, peerport, sockport, protocol, live, connected_at, disconnected_at, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (clientid, conn_key) DO UPDATE SET node = excluded.node, username = excluded.username, protocol = excluded.protocol,
           live = excluded.live, connected_at = excluded.connected_at, disconnected_at = excluded.disconnected_at, reason = excluded.reason`,
        [
          r.clientId,
          r.key,
          r.node,
          r.username,
          r.peerhost,
          r.peerport,
          r.sockport,
          r.protocol,
          r.live,
          r.connectedAt,
          r.disconnectedAt,
          r.reason,
        ],
      );
      if (i >= 0) records[i] = r;
      else records.push(r);
      return { wasOnline, state: derivePresence(records) as PresenceState };
    });
  }

  let closed = false;
  return {
    kind: "postgres",
    location,
    async getUser(username) {
      const r = await pool.query("SELECT * FROM exhook_users WHERE username = $1", [username]);
      return r.rows[0] ? toUser(r.rows[0]) : undefined;
    },
    async putUser(u) {
      await pool.query(
        `INSERT INTO exhook_users (username, password_hash, hash_format, client_ids, superuser, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, hash_format = excluded.hash_format,
           client_ids = excluded.client_ids, superuser = excluded.superuser, updated_at = excluded.updated_at`,
        [
          u.username,
          u.passwordHash,
          u.hashFormat ?? hashFormatOf(u.passwordHash),
          JSON.stringify(u.clientIds),
          u.superuser === true,
          u.createdAt,
          u.updatedAt,
        ],
      );
    },
    async listUsers() {
      return (await pool.query('SELECT * FROM exhook_users ORDER BY username COLLATE "C"')).rows.map(toUser);
    },
    async removeUser(username) {
      return ((await pool.query("DELETE FROM exhook_users WHERE username = $1", [username])).rowCount ?? 0) > 0;
    },
    async listAclRules() {
      return (await pool.query("SELECT rule FROM exhook_acl_rules ORDER BY position")).rows.map((r) => r["rule"] as unknown);
    },
    async replaceAclRules(rules) {
      await transaction(async (c) => {
        await c.query("DELETE FROM exhook_acl_rules");
        for (let i = 0; i < rules.length; i++)
          await c.query("INSERT INTO exhook_acl_rules (position, rule) VALUES ($1, $2)", [i + 1, JSON.stringify(rules[i])]);
      });
    },
    async insertMessages(batch) {
      if (batch.length === 0) return 0;
      // One multi-row INSERT per batch: one round trip, one transaction.
      const values: string[] = [];
      const params: unknown[] = [];
      for (const m of batch) {
        const b = params.length;
        values.push(`($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6}, $${b + 7}, $${b + 8}, $${b + 9}, $${b + 10})`);
        params.push(...messageValues(m));
      }
      const r = await pool.query(
        `INSERT INTO exhook_messages (${MESSAGE_COLUMNS}) VALUES ${values.join(", ")} ON CONFLICT (id) DO NOTHING`,
        params,
      );
      return r.rowCount ?? 0;
    },
    async deleteMessagesBefore(before, limit) {
      const r = await pool.query(
        "DELETE FROM exhook_messages WHERE seq IN (SELECT seq FROM exhook_messages WHERE ts < $1 ORDER BY ts, seq LIMIT $2)",
        [before, limit],
      );
      return r.rowCount ?? 0;
    },
    queryMessages(query: MessageQuery) {
      const dir = query.order !== "asc" ? "DESC" : "ASC";
      const cmp = query.order !== "asc" ? "<" : ">";
      return scanQuery(query, {
        async candidates(topic, cursor, n) {
          const where: string[] = [];
          const params: unknown[] = [];
          const p = (v: unknown) => (params.push(v), `$${params.length}`);
          if (topic !== undefined) where.push(`topic = ${p(topic)}`);
          if (query.since !== undefined) where.push(`ts >= ${p(query.since)}`);
          if (query.until !== undefined) where.push(`ts < ${p(query.until)}`);
          if (cursor) where.push(`(ts, seq) ${cmp} (${p(cursor.ts)}, ${p(cursor.seq)})`);
          const sql = `SELECT seq, ts, topic FROM exhook_messages ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY ts ${dir}, seq ${dir} LIMIT ${p(n)}`;
          return (await readPool.query(sql, params)).rows.map(
            (r): ScanRow => ({ seq: num(r["seq"]), ts: num(r["ts"]), topic: r["topic"] as string }),
          );
        },
        async fetch(seqs) {
          return (await readPool.query("SELECT * FROM exhook_messages WHERE seq = ANY($1::bigint[])", [seqs])).rows.map(toMessage);
        },
      });
    },
    presenceConnected(conn, at, reorderWindowMs) {
      return change(conn, (prev) => recordConnected(prev, conn, at, reorderWindowMs));
    },
    presenceDisconnected(conn, at, reason) {
      return change(conn, (prev) => recordDisconnected(prev, conn, at, reason));
    },
    async getPresence(clientId) {
      return derivePresence(await rowsOf(pool, clientId));
    },
    listPresence(opts = {}) {
      return scanPresence(opts, {
        async clientIds(after, n) {
          const r =
            after === undefined
              ? await readPool.query('SELECT DISTINCT clientid COLLATE "C" AS clientid FROM exhook_presence ORDER BY 1 LIMIT $1', [n])
              : await readPool.query(
                  'SELECT DISTINCT clientid COLLATE "C" AS clientid FROM exhook_presence WHERE clientid COLLATE "C" > $1 ORDER BY 1 LIMIT $2',
                  [after, n],
                );
          return r.rows.map((row) => row["clientid"] as string);
        },
        async rows(first, last) {
          const r = await readPool.query(
            'SELECT * FROM exhook_presence WHERE clientid COLLATE "C" >= $1 AND clientid COLLATE "C" <= $2 ORDER BY clientid COLLATE "C"',
            [first, last],
          );
          return r.rows.map(toRecord);
        },
      });
    },
    async prunePresence(before) {
      const r = await pool.query(
        `DELETE FROM exhook_presence p WHERE live <= 0 AND disconnected_at IS NOT NULL AND disconnected_at < $1 AND EXISTS (
           SELECT 1 FROM exhook_presence p2 WHERE p2.clientid = p.clientid AND p2.conn_key <> p.conn_key
             AND (p2.live > 0 OR p2.disconnected_at > p.disconnected_at))`,
        [before],
      );
      return r.rowCount ?? 0;
    },
    async ping() {
      await pool.query("SELECT 1");
    },
    async recordInvalidation(scope, key) {
      const now = Date.now();
      await pool.query("DELETE FROM exhook_invalidations WHERE at < $1", [now - INVALIDATION_KEEP_MS]);
      // One statement: the row and the notification commit together (NOTIFY is sent at commit).
      const r = await pool.query(
        `WITH ins AS (INSERT INTO exhook_invalidations (scope, key, at) VALUES ($1, $2, $3) RETURNING seq)
         SELECT seq, pg_notify('${INVALIDATION_CHANNEL}', seq::text) FROM ins`,
        [scope, key, now],
      );
      return num(r.rows[0]?.["seq"]);
    },
    async invalidationsAfter(after, limit) {
      const latest = num((await pool.query("SELECT max(seq) AS seq FROM exhook_invalidations")).rows[0]?.["seq"]);
      if (after < 0) return { latest, records: [] };
      const r = await pool.query("SELECT seq, scope, key, at FROM exhook_invalidations WHERE seq > $1 ORDER BY seq LIMIT $2", [
        after,
        limit,
      ]);
      return {
        latest,
        records: r.rows.map((row) => ({
          seq: num(row["seq"]),
          scope: row["scope"] as InvalidationScope,
          key: row["key"] as string,
          at: num(row["at"]),
        })),
      };
    },
    ...pgOutboxMethods(pool),
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all([pool.end(), readPool.end()]);
    },
  };
}

async function migrate(pool: pg.Pool): Promise<void> {
  const c = await pool.connect();
  const onError = () => {};
  c.on("error", onError);
  try {
    await c.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
    try {
      await c.query("CREATE TABLE IF NOT EXISTS exhook_schema_version (version INTEGER NOT NULL)");
      const r = await c.query("SELECT version FROM exhook_schema_version");
      const current = r.rows[0] ? Number(r.rows[0]["version"]) : 0;
      if (current > MIGRATIONS.length) {
        throw new Error(
          `the database schema is version ${current}, newer than this emqx-exhook knows (${MIGRATIONS.length}); upgrade emqx-exhook`,
        );
      }
      if (current < MIGRATIONS.length) {
        await c.query("BEGIN");
        for (let v = current; v < MIGRATIONS.length; v++) await c.query(MIGRATIONS[v] as string);
        if (r.rows[0]) await c.query("UPDATE exhook_schema_version SET version = $1", [MIGRATIONS.length]);
        else await c.query("INSERT INTO exhook_schema_version (version) VALUES ($1)", [MIGRATIONS.length]);
        await c.query("COMMIT");
      }
    } catch (err) {
      await c.query("ROLLBACK").catch(() => {});
      throw err;
    } finally {
      await c.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]).catch(() => {});
    }
  } finally {
    c.off("error", onError);
    c.release();
  }
}
