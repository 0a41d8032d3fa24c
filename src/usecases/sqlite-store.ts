/**
 * The embedded SQLite backend (better-sqlite3): one file under the data directory, created with its
 * schema on first open, WAL journal so readers (the CLI, the read API) never block the writer.
 *
 * better-sqlite3 is synchronous: every call blocks the thread it runs on. `openSqliteStore` runs it
 * on the calling thread (the CLI, scripts, tests); the server uses `openSqliteWorkerStore`
 * (sqlite-worker-store.ts), which runs this same implementation in worker threads — a connection
 * for writes, read-only ones for lookups and for scans — so no SQLite call ever runs on the event
 * loop that answers EMQX. Long reads are made of short statements (see `scanQuery`) with a pause
 * between them, so a thread serving one never holds anything else up for long.
 *
 * The file (and its -wal/-shm companions, which SQLite creates with the file's mode) is 0600 and
 * its directory 0700 when created here: it holds password hashes and messages.
 */
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import type Database from "better-sqlite3";
import { connectionKey, type Connection } from "../connection.js";
import { derivePresence, recordConnected, recordDisconnected, type ConnectionRecord } from "../presence.js";
import { loadOptional } from "./optional-dependency.js";
import { SQLITE_OUTBOX_MIGRATION, sqliteOutboxMethods } from "./bridge/sqlite-outbox.js";
import {
  INVALIDATION_KEEP_MS,
  MESSAGE_COLUMNS,
  messageValues,
  parseHeaders,
  scanPresence,
  scanQuery,
  type InvalidationRecord,
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
  // 2: presence counts connects minus disconnects per connection identity (src/presence.ts), and the
  // identity is the one of src/connection.ts (node|peerhost|peerport|sockport, was node|peerhost:peerport).
  // Old rows: live connection = 1, ended = 0, disconnect before its connect (tombstone) = -1.
  `ALTER TABLE presence ADD COLUMN live INTEGER NOT NULL DEFAULT 0;
   UPDATE presence SET
     live = CASE WHEN disconnected_at IS NULL AND connected_at IS NOT NULL THEN 1 WHEN connected_at IS NULL THEN -1 ELSE 0 END,
     conn_key = node || '|' || peerhost || '|' || peerport || '|' || sockport;`,
  // 3: invalidation announcements (src/usecases/invalidation.ts), read by every process on the store.
  `CREATE TABLE invalidations (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     scope TEXT NOT NULL,
     key TEXT NOT NULL,
     at INTEGER NOT NULL
   );`,
  // 4: per-user superuser flag and the name of the hash format (rows before it are all scrypt).
  `ALTER TABLE users ADD COLUMN superuser INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE users ADD COLUMN hash_format TEXT NOT NULL DEFAULT 'scrypt';`,
  // 5: the bridge outbox (src/usecases/bridge/sqlite-outbox.ts).
  SQLITE_OUTBOX_MIGRATION,
  // 6: message queries in short statements: a covering index to scan by time and filter topics
  // without reading rows, and a topic index for filters without wildcards.
  `CREATE INDEX messages_ts_topic ON messages (ts, seq, topic);
   CREATE INDEX messages_topic ON messages (topic, ts, seq);
   DROP INDEX messages_ts;`,
];

/** Options of {@link openSqliteStore}. */
export interface SqliteStoreOptions {
  /** Database file; its directory is created when missing. `":memory:"` for a throwaway store. */
  readonly file: string;
  /**
   * Open read-only (no schema creation; writes fail with SQLITE_READONLY). The worker store's read
   * thread uses it. Default false.
   */
  readonly readonly?: boolean;
  /** How long a statement waits for another connection's write lock, in ms. Default 5000. */
  readonly busyTimeoutMs?: number;
}

/** Mode of the database file: it holds password hashes and messages. */
const FILE_MODE = 0o600;

/** Creates the file 0600 (and its directory 0700) before SQLite opens it; tightens an existing one. */
function prepareFile(file: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  if (!existsSync(file)) closeSync(openSync(file, "a", FILE_MODE));
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    try {
      chmodSync(f, FILE_MODE);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
  }
}

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve));

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

interface UserRow {
  username: string;
  password_hash: string;
  hash_format: string;
  client_ids: string;
  superuser: number;
  created_at: number;
  updated_at: number;
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
  live: number;
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

const toRecord = (r: PresenceDbRow): ConnectionRecord => ({
  clientId: r.clientid,
  key: r.conn_key,
  node: r.node,
  username: r.username,
  peerhost: r.peerhost,
  peerport: r.peerport,
  sockport: r.sockport,
  protocol: r.protocol,
  live: r.live,
  connectedAt: r.connected_at,
  disconnectedAt: r.disconnected_at,
  reason: r.reason,
});

/**
 * Opens (and creates or migrates) a SQLite store. Needs the optional package better-sqlite3 (an
 * ExHookConfigError says what to install when it is missing).
 */
export function openSqliteStore(options: SqliteStoreOptions): Store {
  const Sqlite = loadOptional<typeof Database>("better-sqlite3", "the SQLite store");
  const readonly = options.readonly ?? false;
  if (options.file !== ":memory:" && !readonly) prepareFile(options.file);
  const db = new Sqlite(options.file, { readonly, fileMustExist: readonly });
  // Statements wait up to busyTimeoutMs for another connection's lock (the CLI's prune, the other
  // thread) instead of failing at once; in the worker store they wait off the event loop.
  db.pragma(`busy_timeout = ${options.busyTimeoutMs ?? 5000}`);
  if (readonly) checkVersion(db);
  else {
    db.pragma("journal_mode = WAL");
    // NORMAL in WAL mode: a commit survives a process kill; only an OS crash/power loss may lose
    // the last transactions.
    db.pragma("synchronous = NORMAL");
    migrate(db);
  }

  const getUser = db.prepare<[string], UserRow>("SELECT * FROM users WHERE username = ?");
  const allUsers = db.prepare<[], UserRow>("SELECT * FROM users ORDER BY username");
  const upsertUser = db.prepare(
    `INSERT INTO users (username, password_hash, hash_format, client_ids, superuser, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, hash_format = excluded.hash_format,
       client_ids = excluded.client_ids, superuser = excluded.superuser, updated_at = excluded.updated_at`,
  );
  const deleteUser = db.prepare("DELETE FROM users WHERE username = ?");
  const insertMessage = db.prepare(`INSERT OR IGNORE INTO messages (${MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  const insertBatch = db.transaction((batch: readonly StoredMessage[]) => {
    let n = 0;
    for (const m of batch) {
      n += insertMessage.run(...messageValues(m)).changes;
    }
    return n;
  });
  const presenceRows = db.prepare<[string], PresenceDbRow>("SELECT * FROM presence WHERE clientid = ?");
  const firstClientIds = db.prepare<[number], { clientid: string }>("SELECT DISTINCT clientid FROM presence ORDER BY clientid LIMIT ?");
  const nextClientIds = db.prepare<[string, number], { clientid: string }>(
    "SELECT DISTINCT clientid FROM presence WHERE clientid > ? ORDER BY clientid LIMIT ?",
  );
  const presenceRange = db.prepare<[string, string], PresenceDbRow>(
    "SELECT * FROM presence WHERE clientid >= ? AND clientid <= ? ORDER BY clientid",
  );
  const upsertPresence = db.prepare(
    `INSERT INTO presence (clientid, conn_key, node, username, peerhost, peerport, sockport, protocol, live, connected_at, disconnected_at, reason)
     VALUES (@clientId, @key, @node, @username, @peerhost, @peerport, @sockport, @protocol, @live, @connectedAt, @disconnectedAt, @reason)
     ON CONFLICT (clientid, conn_key) DO UPDATE SET node = excluded.node, username = excluded.username, protocol = excluded.protocol,
       live = excluded.live, connected_at = excluded.connected_at, disconnected_at = excluded.disconnected_at, reason = excluded.reason`,
  );
  const insertInvalidation = db.prepare<[string, string, number], { seq: number }>(
    "INSERT INTO invalidations (scope, key, at) VALUES (?, ?, ?) RETURNING seq",
  );
  const pruneInvalidations = db.prepare<[number]>("DELETE FROM invalidations WHERE at < ?");
  const invalidationsAfter = db.prepare<[number, number], InvalidationRecord>(
    "SELECT seq, scope, key, at FROM invalidations WHERE seq > ? ORDER BY seq LIMIT ?",
  );
  const latestInvalidation = db.prepare<[], { seq: number | null }>("SELECT max(seq) AS seq FROM invalidations");
  const state = (clientId: string): PresenceState | undefined => derivePresence(presenceRows.all(clientId).map(toRecord));
  // One transaction per event: read the client's records, apply the rule, write the one record.
  const change = (conn: Connection, next: (prev: ConnectionRecord | undefined) => ConnectionRecord): PresenceChange =>
    db
      .transaction(() => {
        const records = presenceRows.all(conn.clientId).map(toRecord);
        const wasOnline = derivePresence(records)?.online ?? false;
        const key = connectionKey(conn);
        const i = records.findIndex((r) => r.key === key);
        const rec = next(records[i]);
        const { clientId, key: k, node, username, peerhost, peerport, sockport, protocol, live, connectedAt, disconnectedAt, reason } = rec;
        upsertPresence.run({
          clientId,
          key: k,
          node,
          username,
          peerhost,
          peerport,
          sockport,
          protocol,
          live,
          connectedAt,
          disconnectedAt,
          reason,
        });
        if (i >= 0) records[i] = rec;
        else records.push(rec);
        return { wasOnline, state: derivePresence(records) as PresenceState };
      })
      .immediate();

  const toUser = (r: UserRow): UserRecord => ({
    username: r.username,
    passwordHash: r.password_hash,
    hashFormat: r.hash_format,
    clientIds: JSON.parse(r.client_ids) as string[],
    superuser: r.superuser !== 0,
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
      const format = u.hashFormat ?? hashFormatOf(u.passwordHash);
      upsertUser.run(u.username, u.passwordHash, format, JSON.stringify(u.clientIds), u.superuser ? 1 : 0, u.createdAt, u.updatedAt);
    },
    async listUsers() {
      return allUsers.all().map(toUser);
    },
    async removeUser(username) {
      return deleteUser.run(username).changes > 0;
    },
    async listAclRules() {
      return db
        .prepare<[], { rule: string }>("SELECT rule FROM acl_rules ORDER BY position")
        .all()
        .map((r) => JSON.parse(r.rule) as unknown);
    },
    async replaceAclRules(rules) {
      db.transaction(() => {
        db.prepare("DELETE FROM acl_rules").run();
        const ins = db.prepare("INSERT INTO acl_rules (position, rule) VALUES (?, ?)");
        for (const [i, r] of rules.entries()) ins.run(i + 1, JSON.stringify(r));
      })();
    },
    async insertMessages(batch) {
      return insertBatch(batch);
    },
    async deleteMessagesBefore(before, limit) {
      return db
        .prepare("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE ts < ? ORDER BY ts, seq LIMIT ?)")
        .run(before, limit).changes;
    },
    queryMessages(query: MessageQuery) {
      const desc = query.order !== "asc";
      const dir = desc ? "DESC" : "ASC";
      const cmp = desc ? "<" : ">";
      const range = `${query.since !== undefined ? "AND ts >= @since " : ""}${query.until !== undefined ? "AND ts < @until " : ""}`;
      // Scan by time on the covering index (no row reads), or look a topic up on its index.
      const scan = (topic: boolean, cursor: boolean) =>
        db.prepare<Record<string, unknown>, ScanRow>(
          `SELECT seq, ts, topic FROM messages INDEXED BY ${topic ? "messages_topic" : "messages_ts_topic"}
           WHERE 1 ${topic ? "AND topic = @topic " : ""}${range}${cursor ? `AND (ts, seq) ${cmp} (@cts, @cseq) ` : ""}
           ORDER BY ts ${dir}, seq ${dir} LIMIT @n`,
        );
      const stmts = new Map<string, Database.Statement<Record<string, unknown>, ScanRow>>();
      const bySeq = db.prepare<[number], MessageRow>("SELECT * FROM messages WHERE seq = ?");
      return scanQuery(query, {
        async candidates(topic, cursor, n) {
          const key = `${topic !== undefined}|${cursor !== undefined}`;
          let st = stmts.get(key);
          if (!st) stmts.set(key, (st = scan(topic !== undefined, cursor !== undefined)));
          return st.all({ topic, since: query.since, until: query.until, cts: cursor?.ts, cseq: cursor?.seq, n });
        },
        async fetch(seqs) {
          const out: StoredMessage[] = [];
          for (const seq of seqs) {
            const r = bySeq.get(seq);
            if (r) out.push(toMessage(r));
          }
          return out;
        },
        yield: nextTick,
      });
    },
    async presenceConnected(conn: Connection, at: number, reorderWindowMs: number) {
      return change(conn, (prev) => recordConnected(prev, conn, at, reorderWindowMs));
    },
    async presenceDisconnected(conn: Connection, at: number, reason: string) {
      return change(conn, (prev) => recordDisconnected(prev, conn, at, reason));
    },
    async getPresence(clientId) {
      return state(clientId);
    },
    listPresence(opts = {}) {
      return scanPresence(opts, {
        clientIds: async (after, n) => (after === undefined ? firstClientIds.all(n) : nextClientIds.all(after, n)).map((r) => r.clientid),
        rows: async (first, last) => presenceRange.all(first, last).map(toRecord),
        yield: nextTick,
      });
    },
    async prunePresence(before) {
      return db
        .prepare(
          `DELETE FROM presence WHERE live <= 0 AND disconnected_at IS NOT NULL AND disconnected_at < ? AND EXISTS (
             SELECT 1 FROM presence p2 WHERE p2.clientid = presence.clientid AND p2.conn_key <> presence.conn_key
               AND (p2.live > 0 OR p2.disconnected_at > presence.disconnected_at))`,
        )
        .run(before).changes;
    },
    async ping() {
      db.prepare("SELECT 1").get();
    },
    async recordInvalidation(scope, key) {
      const now = Date.now();
      pruneInvalidations.run(now - INVALIDATION_KEEP_MS);
      return (insertInvalidation.get(scope, key, now) as { seq: number }).seq;
    },
    async invalidationsAfter(after, limit) {
      const latest = latestInvalidation.get()?.seq ?? 0;
      return { latest, records: after < 0 ? [] : invalidationsAfter.all(after, limit) };
    },
    ...sqliteOutboxMethods(db),
    async close() {
      if (closed) return;
      closed = true;
      db.close();
    },
  };
}

/** Refuses a database written by a newer release (the read-only connection cannot migrate). */
function checkVersion(db: Database.Database): void {
  const row = db.prepare<[], { version: number }>("SELECT version FROM schema_version").get();
  const current = row?.version ?? 0;
  if (current !== MIGRATIONS.length) {
    throw new Error(
      `the database schema is version ${current}, this emqx-exhook needs ${MIGRATIONS.length}: open it once read-write to migrate, or upgrade emqx-exhook`,
    );
  }
}

function migrate(db: Database.Database): void {
  db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
  db.transaction(() => {
    const row = db.prepare<[], { version: number }>("SELECT version FROM schema_version").get();
    const current = row?.version ?? 0;
    if (current > MIGRATIONS.length) {
      throw new Error(
        `the database schema is version ${current}, newer than this emqx-exhook knows (${MIGRATIONS.length}); upgrade emqx-exhook`,
      );
    }
    for (let v = current; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v] as string);
    if (row) db.prepare("UPDATE schema_version SET version = ?").run(MIGRATIONS.length);
    else db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(MIGRATIONS.length);
  }).immediate();
}
