/**
 * The embedded SQLite backend (better-sqlite3): one file under the data directory, created with its
 * schema on first open, WAL journal so readers (the CLI, the HTTP read path) never block the writer.
 * better-sqlite3 is synchronous: each call runs on the event loop, which is fine for the small
 * transactions used here (a batch of a few hundred messages takes a few milliseconds).
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { SQLITE_OUTBOX_MIGRATION, sqliteOutboxMethods } from "./bridge/sqlite-outbox.js";
import {
  derivePresence,
  groupPresence,
  pagedQuery,
  parseHeaders,
  type ConnectionInfo,
  type MessageQuery,
  type PresenceChange,
  type PresenceRow,
  type PresenceState,
  type Store,
  type StoredMessage,
  type UserRecord,
} from "./store.js";

/** Schema migrations, applied in order; the index + 1 is the schema version. Never edit a shipped one. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE users (
     username TEXT PRIMARY KEY,
     password_hash TEXT NOT NULL,
     client_ids TEXT NOT NULL DEFAULT '[]',
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   );
   CREATE TABLE acl_rules (position INTEGER PRIMARY KEY, rule TEXT NOT NULL);
   CREATE TABLE messages (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     id TEXT NOT NULL UNIQUE,
     topic TEXT NOT NULL,
     payload BLOB NOT NULL,
     qos INTEGER NOT NULL,
     publisher TEXT NOT NULL,
     username TEXT NOT NULL,
     node TEXT NOT NULL,
     ts INTEGER NOT NULL,
     stored_at INTEGER NOT NULL,
     headers TEXT NOT NULL
   );
   CREATE INDEX messages_ts ON messages (ts, seq);
   CREATE TABLE presence (
     clientid TEXT NOT NULL,
     conn_key TEXT NOT NULL,
     node TEXT NOT NULL,
     username TEXT NOT NULL,
     peerhost TEXT NOT NULL,
     peerport INTEGER NOT NULL,
     sockport INTEGER NOT NULL,
     protocol TEXT NOT NULL,
     connected_at INTEGER,
     disconnected_at INTEGER,
     reason TEXT NOT NULL DEFAULT '',
     PRIMARY KEY (clientid, conn_key)
   );`,
  // 2: the bridge outbox (src/usecases/bridge/sqlite-outbox.ts).
  SQLITE_OUTBOX_MIGRATION,
];

/** Options of {@link openSqliteStore}. */
export interface SqliteStoreOptions {
  /** Database file; its directory is created when missing. `":memory:"` for a throwaway store. */
  readonly file: string;
}

interface MessageRow {
  seq: number;
  id: string;
  topic: string;
  payload: Buffer;
  qos: number;
  publisher: string;
  username: string;
  node: string;
  ts: number;
  stored_at: number;
  headers: string;
}

interface PresenceDbRow {
  clientid: string;
  conn_key: string;
  node: string;
  username: string;
  peerhost: string;
  peerport: number;
  sockport: number;
  protocol: string;
  connected_at: number | null;
  disconnected_at: number | null;
  reason: string;
}

const toMessage = (r: MessageRow): StoredMessage & { seq: number } => ({
  seq: r.seq,
  id: r.id,
  topic: r.topic,
  payload: new Uint8Array(r.payload),
  qos: r.qos,
  publisher: r.publisher,
  username: r.username,
  node: r.node,
  timestamp: r.ts,
  storedAt: r.stored_at,
  headers: parseHeaders(r.headers),
});

const toPresenceRow = (r: PresenceDbRow): PresenceRow => ({
  clientId: r.clientid,
  connKey: r.conn_key,
  node: r.node,
  username: r.username,
  peerhost: r.peerhost,
  peerport: r.peerport,
  sockport: r.sockport,
  protocol: r.protocol,
  connectedAt: r.connected_at,
  disconnectedAt: r.disconnected_at,
  reason: r.reason,
});

/** Opens (and creates or migrates) a SQLite store. */
export function openSqliteStore(options: SqliteStoreOptions): Store {
  if (options.file !== ":memory:") mkdirSync(dirname(options.file), { recursive: true });
  const db = new Database(options.file);
  db.pragma("journal_mode = WAL");
  // NORMAL in WAL mode: a commit survives a process kill; only an OS crash/power loss may lose the
  // last transactions. Writers wait up to 5 s for another process (e.g. the CLI) instead of failing.
  db.pragma("synchronous = NORMAL");
  db.pragma("busy_timeout = 5000");
  migrate(db);

  const getUser = db.prepare<[string], { username: string; password_hash: string; client_ids: string; created_at: number; updated_at: number }>(
    "SELECT * FROM users WHERE username = ?",
  );
  const allUsers = db.prepare<[], { username: string; password_hash: string; client_ids: string; created_at: number; updated_at: number }>(
    "SELECT * FROM users ORDER BY username",
  );
  const upsertUser = db.prepare(
    `INSERT INTO users (username, password_hash, client_ids, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, client_ids = excluded.client_ids, updated_at = excluded.updated_at`,
  );
  const deleteUser = db.prepare("DELETE FROM users WHERE username = ?");
  const insertMessage = db.prepare(
    `INSERT OR IGNORE INTO messages (id, topic, payload, qos, publisher, username, node, ts, stored_at, headers)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertBatch = db.transaction((batch: readonly StoredMessage[]) => {
    let n = 0;
    for (const m of batch) {
      n += insertMessage.run(m.id, m.topic, Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength), m.qos, m.publisher, m.username, m.node, m.timestamp, m.storedAt, JSON.stringify(m.headers)).changes;
    }
    return n;
  });
  const presenceRows = db.prepare<[string], PresenceDbRow>("SELECT * FROM presence WHERE clientid = ?");
  const connectedStmt = db.prepare(
    `INSERT INTO presence (clientid, conn_key, node, username, peerhost, peerport, sockport, protocol, connected_at, disconnected_at, reason)
     VALUES (@clientId, @connKey, @node, @username, @peerhost, @peerport, @sockport, @protocol, @at, NULL, '')
     ON CONFLICT (clientid, conn_key) DO UPDATE SET
       connected_at = CASE WHEN presence.disconnected_at IS NOT NULL AND presence.disconnected_at < @staleBefore THEN @at
                           ELSE coalesce(presence.connected_at, @at) END,
       disconnected_at = CASE WHEN presence.disconnected_at IS NOT NULL AND presence.disconnected_at < @staleBefore THEN NULL
                              ELSE presence.disconnected_at END,
       node = excluded.node, username = excluded.username, protocol = excluded.protocol, sockport = excluded.sockport`,
  );
  const disconnectedStmt = db.prepare(
    `INSERT INTO presence (clientid, conn_key, node, username, peerhost, peerport, sockport, protocol, connected_at, disconnected_at, reason)
     VALUES (@clientId, @connKey, @node, @username, @peerhost, @peerport, @sockport, @protocol, NULL, @at, @reason)
     ON CONFLICT (clientid, conn_key) DO UPDATE SET disconnected_at = @at, reason = @reason
       WHERE presence.disconnected_at IS NULL`,
  );
  const state = (clientId: string): PresenceState | undefined => derivePresence(presenceRows.all(clientId).map(toPresenceRow));
  const change = (clientId: string, write: () => void): PresenceChange =>
    db.transaction(() => {
      const wasOnline = state(clientId)?.online ?? false;
      write();
      return { wasOnline, state: state(clientId) as PresenceState };
    }).immediate();

  const toUser = (r: { username: string; password_hash: string; client_ids: string; created_at: number; updated_at: number }): UserRecord => ({
    username: r.username,
    passwordHash: r.password_hash,
    clientIds: JSON.parse(r.client_ids) as string[],
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  });

  let closed = false;
  return {
    kind: "sqlite",
    location: options.file,
    async getUser(username) {
      const r = getUser.get(username);
      return r ? toUser(r) : undefined;
    },
    async putUser(u) {
      upsertUser.run(u.username, u.passwordHash, JSON.stringify(u.clientIds), u.createdAt, u.updatedAt);
    },
    async listUsers() {
      return allUsers.all().map(toUser);
    },
    async removeUser(username) {
      return deleteUser.run(username).changes > 0;
    },
    async listAclRules() {
      return db.prepare<[], { rule: string }>("SELECT rule FROM acl_rules ORDER BY position").all().map((r) => JSON.parse(r.rule) as unknown);
    },
    async replaceAclRules(rules) {
      db.transaction(() => {
        db.prepare("DELETE FROM acl_rules").run();
        const ins = db.prepare("INSERT INTO acl_rules (position, rule) VALUES (?, ?)");
        rules.forEach((r, i) => ins.run(i + 1, JSON.stringify(r)));
      })();
    },
    async insertMessages(batch) {
      return insertBatch(batch);
    },
    async deleteMessagesBefore(before, limit) {
      return db.prepare("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE ts < ? ORDER BY ts, seq LIMIT ?)").run(before, limit).changes;
    },
    queryMessages(query: MessageQuery) {
      const desc = query.order !== "asc";
      return pagedQuery(query, async (prefix, exact, cursor, pageSize) => {
        const where: string[] = [];
        const params: unknown[] = [];
        if (exact) {
          where.push("topic = ?");
          params.push(prefix);
        } else if (prefix !== "") {
          where.push("substr(topic, 1, ?) = ?");
          params.push(prefix.length, prefix);
        }
        if (query.since !== undefined) (where.push("ts >= ?"), params.push(query.since));
        if (query.until !== undefined) (where.push("ts < ?"), params.push(query.until));
        if (cursor) {
          where.push(desc ? "(ts < ? OR (ts = ? AND seq < ?))" : "(ts > ? OR (ts = ? AND seq > ?))");
          params.push(cursor.ts, cursor.ts, cursor.seq);
        }
        const sql = `SELECT * FROM messages ${where.length ? "WHERE " + where.join(" AND ") : ""}
          ORDER BY ts ${desc ? "DESC" : "ASC"}, seq ${desc ? "DESC" : "ASC"} LIMIT ?`;
        return (db.prepare(sql).all(...params, pageSize) as MessageRow[]).map(toMessage);
      });
    },
    async presenceConnected(conn: ConnectionInfo, at: number, reorderWindowMs: number) {
      return change(conn.clientId, () => connectedStmt.run({ ...conn, at, staleBefore: at - reorderWindowMs }));
    },
    async presenceDisconnected(conn: ConnectionInfo, at: number, reason: string) {
      return change(conn.clientId, () => disconnectedStmt.run({ ...conn, at, reason }));
    },
    async getPresence(clientId) {
      return state(clientId);
    },
    async listPresence(opts = {}) {
      const rows = db.prepare<[], PresenceDbRow>("SELECT * FROM presence ORDER BY clientid").all().map(toPresenceRow);
      return groupPresence(rows, opts.online, opts.limit ?? Number.MAX_SAFE_INTEGER);
    },
    async prunePresence(before) {
      return db
        .prepare(
          `DELETE FROM presence WHERE disconnected_at IS NOT NULL AND disconnected_at < ? AND EXISTS (
             SELECT 1 FROM presence p2 WHERE p2.clientid = presence.clientid AND p2.conn_key <> presence.conn_key
               AND (p2.disconnected_at IS NULL OR p2.disconnected_at > presence.disconnected_at))`,
        )
        .run(before).changes;
    },
    ...sqliteOutboxMethods(db),
    async close() {
      if (closed) return;
      closed = true;
      db.close();
    },
  };
}

function migrate(db: Database.Database): void {
  db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
  db.transaction(() => {
    const row = db.prepare<[], { version: number }>("SELECT version FROM schema_version").get();
    const current = row?.version ?? 0;
    if (current > MIGRATIONS.length) {
      throw new Error(`the database schema is version ${current}, newer than this emqx-exhook knows (${MIGRATIONS.length}); upgrade emqx-exhook`);
    }
    for (let v = current; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v] as string);
    if (row) db.prepare("UPDATE schema_version SET version = ?").run(MIGRATIONS.length);
    else db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(MIGRATIONS.length);
  }).immediate();
}
