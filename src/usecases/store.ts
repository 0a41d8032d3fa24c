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
  /**
   * Self-describing password hash, never the password: the project's scrypt
   * (`$scrypt$ln=15,r=8,p=1,k=32$<salt>$<hash>`) or an imported format (see password.ts).
   */
  readonly passwordHash: string;
  /** Name of the hash format (`scrypt`, `bcrypt`, `sha256`, ...: `hashFormatOf(passwordHash)`), for listing and stats. */
  readonly hashFormat: string;
  /** Client-id patterns this user may connect with (`*` matches any run of characters); empty = any. */
  readonly clientIds: readonly string[];
  /** A superuser is allowed everything by the authorization side, without rules. */
  readonly superuser: boolean;
  /** `Date.now()` when created. */
  readonly createdAt: number;
  /** `Date.now()` when last changed. */
  readonly updatedAt: number;
}

/**
 * What `putUser` takes: a {@link UserRecord} whose `superuser` (default false) and `hashFormat`
 * (default: read from the hash) may be left out.
 */
export type UserInput = Omit<UserRecord, "hashFormat" | "superuser"> & { readonly hashFormat?: string; readonly superuser?: boolean };

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

/** The message table's columns as both stores insert them, in the order of {@link messageValues}. */
export const MESSAGE_COLUMNS = "id, topic, payload, qos, publisher, username, node, ts, stored_at, headers";

/** A message's values for {@link MESSAGE_COLUMNS} (the payload as a Buffer over the same bytes). */
export function messageValues(m: StoredMessage): unknown[] {
  return [
    m.id,
    m.topic,
    Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength),
    m.qos,
    m.publisher,
    m.username,
    m.node,
    m.timestamp,
    m.storedAt,
    JSON.stringify(m.headers),
  ];
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
 * One message (or event) waiting in the bridge outbox for one sink. Everything is plain data so it
 * crosses a worker thread as is.
 */
export interface OutboxEntry {
  /** Name of the sink (`bridge.sinks[].name`) it goes to. */
  readonly sink: string;
  /** Stable id the engine can deduplicate on (JetStream `Nats-Msg-Id`, AMQP `message_id`, a stream field). */
  readonly id: string;
  /** Ordering key (the client id): messages with the same key are forwarded in commit order. */
  readonly key: string;
  /** 31-bit hash of `key`; `khash % partitions` is the partition an instance leases. */
  readonly khash: number;
  /** Subject, routing key or stream, already rendered from the sink's template. */
  readonly dest: string;
  readonly payload: Uint8Array;
  /** MQTT metadata (topic, qos, clientid, ...) sent as headers or fields. */
  readonly headers: Readonly<Record<string, string>>;
  /** `Date.now()` when the hook saw it. */
  readonly createdAt: number;
}

/** An outbox entry as stored, with its position and delivery attempts. */
export interface OutboxRow extends OutboxEntry {
  /** Commit order (increasing). */
  readonly seq: number;
  /** Times the engine refused it (not counting attempts while the engine was unreachable). */
  readonly attempts: number;
  /** Parked after `maxAttempts` refusals: kept, not forwarded until replayed. */
  readonly parked: boolean;
  /** The engine's last refusal, "" when none. */
  readonly lastError: string;
}

/** The bound of one sink's outbox. */
export interface OutboxBound {
  /** Most rows (pending + parked) kept for the sink. */
  readonly maxDepth: number;
  /** When full: evict the oldest rows, or refuse the new ones. */
  readonly overflow: "drop-oldest" | "refuse-new";
}

/** What {@link Store.outboxAppend} did. */
export interface OutboxAppendResult {
  /**
   * Indices (into the batch) of the entries not stored because of a bound: the newest ones with
   * `refuse-new`; with `drop-oldest`, the batch's oldest ones when the batch alone exceeds the bound.
   */
  readonly refused: number[];
  /**
   * Per sink: rows added, entries already there (same sink + id), entries lost to `drop-oldest`
   * (old rows deleted plus the batch's own oldest entries), entries refused by `refuse-new`.
   */
  readonly perSink: Record<string, { appended: number; duplicates: number; evicted: number; refused: number }>;
}

/** Options of {@link Store.outboxLease}. */
export interface OutboxLeaseOptions {
  /** Partitions of the sink's outbox (the same on every instance). */
  readonly partitions: number;
  /** How long a lease (and a membership) lasts without renewal, in ms. */
  readonly leaseMs: number;
  /** Owners known to be dead (a process of this host that no longer exists): their leases are freed now. */
  readonly expireOwners?: readonly string[];
}

/** The partitions an instance holds after {@link Store.outboxLease}, and who else is there. */
export interface OutboxLease {
  /** Partitions held by the caller, ascending. */
  readonly held: number[];
  /** Other live owners (members whose heartbeat has not expired). */
  readonly others: string[];
}

/** What the engine said about a forwarded batch, for {@link Store.outboxSettle}. */
export interface OutboxSettlement {
  /** Rows the engine confirmed: deleted. */
  readonly delivered: readonly number[];
  /** Rows the engine refused (seq + reason): attempts + 1, parked at `maxAttempts` (0 = never). */
  readonly rejected: ReadonlyArray<{ readonly seq: number; readonly error: string }>;
  readonly maxAttempts: number;
}

/** Depth of one sink's outbox. */
export interface OutboxStats {
  readonly sink: string;
  /** Rows waiting to be forwarded. */
  readonly pending: number;
  /** Rows parked after too many refusals. */
  readonly parked: number;
  /** `createdAt` of the oldest pending row, or null when none is pending. */
  readonly oldestCreatedAt: number | null;
}

/** What an invalidation is about: everything, one username, one client id, or the ACL rules (reload them, then everything). */
export type InvalidationScope = "all" | "user" | "client" | "rules";

/** One invalidation recorded in the store, for the other processes using it (`invalidationsAfter`). */
export interface InvalidationRecord {
  /** Increasing; gaps are possible (PostgreSQL sequences) and read as "maybe missed: drop everything". */
  readonly seq: number;
  readonly scope: InvalidationScope;
  /** The username or client id; "" for `all` and `rules`. */
  readonly key: string;
  /** `Date.now()` when recorded. */
  readonly at: number;
}

/** How long invalidation records are kept (a reader asleep for longer drops everything instead). */
export const INVALIDATION_KEEP_MS = 24 * 3_600_000;

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
  /** Creates or replaces a user (the creation time of an existing user is kept). */
  putUser(user: UserInput): Promise<void>;
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

  /**
   * Bridge outbox: appends a batch in one transaction, applying each sink's bound (`bounds[sink]`;
   * no bound = unbounded). Entries already there (same sink + id) are skipped.
   */
  outboxAppend(entries: readonly OutboxEntry[], bounds: Readonly<Record<string, OutboxBound>>): Promise<OutboxAppendResult>;
  /**
   * Heartbeat of `owner` for `sink`, then renews its partition leases, claims free or expired ones
   * up to its fair share (partitions / live owners) and releases what it holds above that share.
   * Row locks (PostgreSQL `FOR UPDATE SKIP LOCKED`) make each partition leased by one owner at a time.
   */
  outboxLease(sink: string, owner: string, options: OutboxLeaseOptions): Promise<OutboxLease>;
  /** The oldest pending rows (commit order) of the given partitions with `seq > afterSeq` (default 0), at most `limit`. */
  outboxFetch(sink: string, partitions: number, held: readonly number[], limit: number, afterSeq?: number): Promise<OutboxRow[]>;
  /** Deletes delivered rows and counts refusals (parking at `maxAttempts`), in one transaction. */
  outboxSettle(sink: string, settlement: OutboxSettlement): Promise<{ deleted: number; parked: number }>;
  /** Depth per sink (every sink with rows, plus the ones named). */
  outboxStats(sinks?: readonly string[]): Promise<OutboxStats[]>;
  /** Rows of a sink, oldest first, for inspection (`parked`: only parked rows, else only pending ones). */
  outboxList(sink: string, options: { readonly parked: boolean; readonly limit: number }): Promise<OutboxRow[]>;
  /** Deletes a sink's rows (all of them, or only parked ones); resolves with how many. */
  outboxPurge(sink: string, options: { readonly parkedOnly: boolean }): Promise<number>;
  /** Puts a sink's parked rows back in line (attempts reset); resolves with how many. */
  outboxReplay(sink: string): Promise<number>;
  /** Gives up `owner`'s leases and membership (a clean stop), so others take over at once. */
  outboxRelease(sink: string, owner: string): Promise<void>;

  /**
   * Records an invalidation for the other processes using this store (another instance, the server
   * when the CLI made a change); resolves with its `seq`. PostgreSQL also sends
   * `NOTIFY exhook_invalidation, '<seq>'`. Records older than {@link INVALIDATION_KEEP_MS} are deleted.
   */
  recordInvalidation(scope: InvalidationScope, key: string): Promise<number>;
  /**
   * Invalidations with `seq > after`, oldest first, at most `limit`, and the newest `seq` there is
   * (0 when none). `after < 0` reads only `latest` (where a new reader starts).
   */
  invalidationsAfter(after: number, limit: number): Promise<{ latest: number; records: InvalidationRecord[] }>;

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
