/**
 * The storage interface of the use cases: users, ACL rules, stored messages and presence, with two
 * backends (`openSqliteStore`, `openPostgresStore`). Everything a backend must agree on (row shapes,
 * how presence is derived from connection rows, message-query paging) lives here so the two
 * backends cannot drift.
 */
import type { Connection } from "../connection.js";
import { derivePresence, type ConnectionRecord, type PresenceState } from "../presence.js";
import { matchTopic, stripShare } from "../topic.js";

export type { PresenceState } from "../presence.js";

/** One user of the authentication use case. */
export interface UserRecord {
  readonly username: string;
  /** PHC-style scrypt hash (`$scrypt$ln=15,r=8,p=1,k=32$<salt>$<hash>`), never the password. */
  readonly passwordHash: string;
  /** Client-id patterns this user may connect with (`*` matches any run of characters); empty = any. */
  readonly clientIds: readonly string[];
  /** `Date.now()` when created. */
  readonly createdAt: number;
  /** `Date.now()` when last changed. */
  readonly updatedAt: number;
}

/** One stored MQTT message. */
export interface StoredMessage {
  /** EMQX message id (32 hex characters); unique, so a message stored twice is kept once. */
  readonly id: string;
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly qos: number;
  /** Publisher client id (`Message.from`). */
  readonly publisher: string;
  /** `headers.username` when EMQX sent it, else "". */
  readonly username: string;
  /** EMQX node that received the message. */
  readonly node: string;
  /** When EMQX received it (ms since epoch, `Message.timestamp`). */
  readonly timestamp: number;
  /** When this server queued it for storage (ms since epoch). */
  readonly storedAt: number;
  readonly headers: Readonly<Record<string, string>>;
}

/** A query over stored messages. */
export interface MessageQuery {
  /** MQTT topic filter the topic must match. Default `#` (everything not starting with `$`). */
  readonly filter?: string;
  /** Only messages with `timestamp >= since` (ms). */
  readonly since?: number;
  /** Only messages with `timestamp < until` (ms). */
  readonly until?: number;
  /** At most this many. */
  readonly limit: number;
  /** `"asc"` (oldest first) or `"desc"` (newest first, the default). */
  readonly order?: "asc" | "desc";
  /**
   * Stop with a {@link QueryTimeoutError} after this many ms. Default: no limit. A filter with
   * wildcards is answered by scanning messages by time, so a rare topic over a large table is slow:
   * the read API sets this (`http.queryTimeoutMs`).
   */
  readonly timeoutMs?: number;
  /** Stop adding messages once their payloads reach this many bytes (the last one included). Default: no limit. */
  readonly maxBytes?: number;
}

/** A query stopped by its `timeoutMs`. `code` is `"QUERY_TIMEOUT"` (it survives the SQLite thread). */
export class QueryTimeoutError extends Error {
  readonly code = "QUERY_TIMEOUT";
  constructor(timeoutMs: number, what = "query") {
    super(`${what} stopped after ${timeoutMs} ms: narrow it (a topic filter without wildcards, since/until, a smaller limit)`);
    this.name = "QueryTimeoutError";
  }
}

/** Options of `Store.listPresence`. */
export interface PresenceListOptions {
  /** Only online (`true`) or offline (`false`) clients. */
  readonly online?: boolean;
  /** At most this many clients. */
  readonly limit?: number;
  /** Stop with a {@link QueryTimeoutError} after this many ms. Default: no limit. */
  readonly timeoutMs?: number;
}

/** What a presence event changed. */
export interface PresenceChange {
  /** Whether the client was online before the event. */
  readonly wasOnline: boolean;
  /** The state after the event. */
  readonly state: PresenceState;
}

/**
 * The storage the use cases need. Both backends implement it; methods never block on each other's I/O.
 *
 * Every method is async and takes and returns plain data only (structured-clone-able: no class
 * instances, no functions), because the SQLite backend runs in worker threads behind a generic
 * proxy (`openSqliteWorkerStore`). The name says where a method runs there: `get…` and `ping` are
 * short reads (a thread of their own), `list…` and `query…` are scans (another, at low priority),
 * anything else writes (the write thread). Name a new method accordingly: a read-only connection
 * refuses a write.
 */
export interface Store {
  readonly kind: "sqlite" | "postgres";
  /** Where the data is (file path or URL without password), for logs. */
  readonly location: string;

  getUser(username: string): Promise<UserRecord | undefined>;
  /** Creates or replaces a user. */
  putUser(user: UserRecord): Promise<void>;
  listUsers(): Promise<UserRecord[]>;
  /** Whether a user was removed. */
  removeUser(username: string): Promise<boolean>;

  /** ACL rules kept in the store, in order (plain objects, validated by the ACL use case). */
  listAclRules(): Promise<unknown[]>;
  replaceAclRules(rules: readonly unknown[]): Promise<void>;

  /** Writes a batch in one transaction; resolves with how many were new (duplicate ids are skipped). */
  insertMessages(batch: readonly StoredMessage[]): Promise<number>;
  queryMessages(query: MessageQuery): Promise<StoredMessage[]>;
  /**
   * Deletes up to `limit` of the oldest messages with `timestamp < before` (ms), in one statement;
   * resolves with how many were deleted. Retention calls it repeatedly in chunks, so a large
   * backlog never holds a long lock.
   */
  deleteMessagesBefore(before: number, limit: number): Promise<number>;

  /**
   * Records a `client.connected` (src/presence.ts `recordConnected`). Atomic per client id, whatever
   * the arrival order.
   */
  presenceConnected(conn: Connection, at: number, reorderWindowMs: number): Promise<PresenceChange>;
  /** Records a `client.disconnected` (`recordDisconnected`). Atomic per client id, whatever the arrival order. */
  presenceDisconnected(conn: Connection, at: number, reason: string): Promise<PresenceChange>;
  getPresence(clientId: string): Promise<PresenceState | undefined>;
  /** Clients by client id (ascending). */
  listPresence(options?: PresenceListOptions): Promise<PresenceState[]>;
  /**
   * Deletes records of ended connections (and disconnects still waiting for their connect) that
   * ended before `before` (ms), except the one each offline client is shown with.
   */
  prunePresence(before: number): Promise<number>;

  /** Resolves when the store answers a trivial query (readiness); rejects with the store's error. */
  ping(): Promise<void>;

  /** Closes the store (waits for nothing queued: the use cases flush before calling this). */
  close(): Promise<void>;
}

/** @internal Groups presence records (sorted by client id) into states. */
export function groupPresence(rows: readonly ConnectionRecord[], online: boolean | undefined, limit: number): PresenceState[] {
  const out: PresenceState[] = [];
  let i = 0;
  while (i < rows.length && out.length < limit) {
    const id = (rows[i] as ConnectionRecord).clientId;
    let j = i;
    while (j < rows.length && (rows[j] as ConnectionRecord).clientId === id) j++;
    const state = derivePresence(rows.slice(i, j));
    if (state && (online === undefined || state.online === online)) out.push(state);
    i = j;
  }
  return out;
}

/** @internal How a backend feeds {@link scanPresence}. */
export interface PresenceScanSource {
  /** Up to `n` distinct client ids greater than `after` (all when undefined), ascending. */
  clientIds(after: string | undefined, n: number): Promise<string[]>;
  /** Every row of the client ids from `first` to `last` inclusive, ordered by client id. */
  rows(first: string, last: string): Promise<ConnectionRecord[]>;
  yield?(): Promise<void>;
}

/** Client ids per statement of a presence listing. */
const PRESENCE_CHUNK = 500;

/** @internal Lists presence in short statements (client ids a chunk at a time), checking `timeoutMs` between them. */
export async function scanPresence(options: PresenceListOptions, src: PresenceScanSource): Promise<PresenceState[]> {
  const limit = options.limit ?? Number.MAX_SAFE_INTEGER;
  const started = Date.now();
  const timeoutMs = options.timeoutMs ?? Infinity;
  const out: PresenceState[] = [];
  let after: string | undefined;
  while (out.length < limit) {
    const ids = await src.clientIds(after, PRESENCE_CHUNK);
    if (ids.length === 0) break;
    const rows = await src.rows(ids[0] as string, ids[ids.length - 1] as string);
    out.push(...groupPresence(rows, options.online, limit - out.length));
    if (ids.length < PRESENCE_CHUNK) break;
    after = ids[ids.length - 1];
    if (Date.now() - started >= timeoutMs) throw new QueryTimeoutError(timeoutMs, "presence listing");
    await src.yield?.();
  }
  return out;
}

/** @internal A row of a message scan: enough to order, filter and page without the payload. */
export interface ScanRow {
  readonly seq: number;
  readonly ts: number;
  readonly topic: string;
}

/** @internal How a backend feeds {@link scanQuery}. */
export interface ScanSource {
  /**
   * Up to `n` rows in the query's order (time, then seq), strictly after `cursor`, within
   * `since`/`until`; only rows whose topic is exactly `topic` when it is given (an index lookup),
   * else every row (a scan by time). Each call must be short: one bounded statement.
   */
  candidates(topic: string | undefined, cursor: { ts: number; seq: number } | undefined, n: number): Promise<ScanRow[]>;
  /** The full messages of these seqs, in any order (a few at a time: payloads may be large). */
  fetch(seqs: readonly number[]): Promise<StoredMessage[]>;
  /** Lets other work of the same thread run between statements (the SQLite threads). Default: none. */
  yield?(): Promise<void>;
}

/** Rows examined per statement of a scan. */
export const SCAN_CHUNK = 2000;
/** Full messages fetched per statement. */
const FETCH_GROUP = 10;

/**
 * @internal Runs a message query in short statements: candidate rows (seq, time, topic) in order,
 * a topic index lookup when the filter has no wildcard, else a scan by time filtered with the exact
 * MQTT match; then the full messages of the matches, a few at a time, until `limit` (or `maxBytes`
 * of payload) is reached. `timeoutMs` is checked between statements, so no statement runs long.
 */
export async function scanQuery(query: MessageQuery, src: ScanSource): Promise<StoredMessage[]> {
  const filter = query.filter ?? "#";
  const literal = stripShare(filter);
  const exact = !/(^|\/)[+#](\/|$)/.test(literal);
  const started = Date.now();
  const timeoutMs = query.timeoutMs ?? Infinity;
  const maxBytes = query.maxBytes ?? Infinity;
  const out: StoredMessage[] = [];
  let bytes = 0;
  let cursor: { ts: number; seq: number } | undefined;
  const check = () => {
    if (Date.now() - started >= timeoutMs) throw new QueryTimeoutError(timeoutMs, "message query");
  };
  for (;;) {
    const want = query.limit - out.length;
    const n = exact ? Math.min(Math.max(want, 50), SCAN_CHUNK) : SCAN_CHUNK;
    const rows = await src.candidates(exact ? literal : undefined, cursor, n);
    const matched: number[] = [];
    let examined = 0;
    while (examined < rows.length && matched.length < want) {
      const r = rows[examined++] as ScanRow;
      if (exact || matchTopic(filter, r.topic)) matched.push(r.seq);
    }
    for (let i = 0; i < matched.length && out.length < query.limit && bytes < maxBytes; i += FETCH_GROUP) {
      check();
      const group = matched.slice(i, i + FETCH_GROUP);
      const got = new Map((await src.fetch(group)).map((m) => [(m as StoredMessage & { seq?: number }).seq ?? -1, m]));
      for (const seq of group) {
        const m = got.get(seq);
        // Deleted meanwhile (retention): skip it.
        if (!m) continue;
        const { seq: _seq, ...msg } = m as StoredMessage & { seq?: number };
        out.push(msg);
        bytes += msg.payload.byteLength;
        if (out.length >= query.limit || bytes >= maxBytes) break;
      }
    }
    if (out.length >= query.limit || bytes >= maxBytes || (rows.length < n && examined === rows.length)) return out;
    const last = rows[examined - 1] as ScanRow;
    cursor = { ts: last.ts, seq: last.seq };
    check();
    await src.yield?.();
  }
}

/** @internal Parses a JSON column that must hold an object of strings. */
export function parseHeaders(text: string): Record<string, string> {
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === "object" ? (v as Record<string, string>) : {};
  } catch {
    return {};
  }
}
