/**
 * The bridge outbox on SQLite: the `Store.outbox*` methods of the SQLite backend. One table of
 * rows (one per message and sink), a depth counter per sink (so the bound is checked without a
 * count over the table), and lease/member tables so several processes on one file (`serve
 * --workers N`) share the partitions. Every write runs in an IMMEDIATE transaction: SQLite
 * serializes them across processes, which is the row locking this backend needs.
 */
import type Database from "better-sqlite3";
import type { OutboxAppendResult, OutboxEntry, OutboxStats } from "../store.js";
import { applyBound, FETCH_COLUMNS, fairShare, fetchedRows, groupBySink, type FetchedRow, type OutboxMethods } from "./outbox-shared.js";

/**
 * The statements whose cost must not grow with the backlog (test/bridge-outbox-store.test.ts
 * checks their plans): each walks an index in order, or looks rows up by seq.
 */
export const SQLITE_OUTBOX_SQL = {
  /**
   * The delivered seqs (a JSON array) by primary key. `+sink` checks the sink without using it as
   * an index key: with `sink = ?` SQLite walked every index entry of the sink (4.7 ms instead of
   * 0.95 ms per 500 rows with 40,000 queued).
   */
  deleteDelivered: "DELETE FROM outbox WHERE +sink = ? AND seq IN (SELECT value FROM json_each(?))",
  /**
   * The sink's `n` oldest rows, pending or parked: the oldest `n` of each, walked in order on the
   * (sink, parked, seq) index, merged. `WHERE sink = ? ORDER BY seq` sorted all the sink's rows
   * (11 ms instead of 2.5 ms per 500 rows with 200,000 queued, at every append at the bound).
   */
  evictOldest: `DELETE FROM outbox WHERE seq IN (
      SELECT seq FROM (SELECT seq FROM outbox WHERE sink = @sink AND parked = 0 ORDER BY seq LIMIT @n)
      UNION ALL SELECT seq FROM (SELECT seq FROM outbox WHERE sink = @sink AND parked = 1 ORDER BY seq LIMIT @n)
      ORDER BY seq LIMIT @n)`,
} as const;

/** The schema migration that adds the outbox (appended to the SQLite store's migrations). */
export const SQLITE_OUTBOX_MIGRATION = `
  CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    khash INTEGER NOT NULL,
    dest TEXT NOT NULL,
    payload BLOB NOT NULL,
    headers TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    parked INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT ''
  );
  CREATE UNIQUE INDEX outbox_sink_id ON outbox (sink, id);
  CREATE INDEX outbox_sink_parked_seq ON outbox (sink, parked, seq);
  CREATE TABLE outbox_depth (sink TEXT PRIMARY KEY, total INTEGER NOT NULL);
  CREATE TABLE outbox_leases (sink TEXT NOT NULL, part INTEGER NOT NULL, owner TEXT, until INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sink, part));
  CREATE TABLE outbox_members (sink TEXT NOT NULL, owner TEXT NOT NULL, until INTEGER NOT NULL, PRIMARY KEY (sink, owner));
`;

const intList = (xs: readonly number[]): string => xs.map((x) => String(Math.trunc(x))).join(",");

/** The outbox methods of a SQLite store on `db` (its schema already migrated). */
export function sqliteOutboxMethods(db: Database.Database): OutboxMethods {
  const insert = db.prepare(
    `INSERT OR IGNORE INTO outbox (sink, id, key, khash, dest, payload, headers, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const depthOf = db.prepare<[string], { total: number }>("SELECT total FROM outbox_depth WHERE sink = ?");
  const ensureDepth = db.prepare("INSERT OR IGNORE INTO outbox_depth (sink, total) VALUES (?, 0)");
  const updateDepth = db.prepare("UPDATE outbox_depth SET total = max(0, total + ?) WHERE sink = ?");
  const addDepth = { run: (sink: string, delta: number) => (ensureDepth.run(sink), updateDepth.run(delta, sink)) };
  const evictOldest = db.prepare<{ sink: string; n: number }>(SQLITE_OUTBOX_SQL.evictOldest);
  // One statement per settled batch: the delivered seqs as a JSON array.
  const deleteSeqs = db.prepare(SQLITE_OUTBOX_SQL.deleteDelivered);
  const reject = db.prepare<[string, number, number, number, string, number], { parked: number }>(
    `UPDATE outbox SET attempts = attempts + 1, last_error = ?,
       parked = CASE WHEN ? > 0 AND attempts + 1 >= ? THEN 1 ELSE 0 END
     WHERE seq = ? AND sink = ? AND parked = ? RETURNING parked`,
  );
  const upsertMember = db.prepare(
    "INSERT INTO outbox_members (sink, owner, until) VALUES (?, ?, ?) ON CONFLICT (sink, owner) DO UPDATE SET until = excluded.until",
  );
  const dropMembers = db.prepare("DELETE FROM outbox_members WHERE sink = ? AND until < ?");
  const dropMember = db.prepare("DELETE FROM outbox_members WHERE sink = ? AND owner = ?");
  const freeLeases = db.prepare("UPDATE outbox_leases SET owner = NULL, until = 0 WHERE sink = ? AND owner = ?");
  const ensureLease = db.prepare("INSERT OR IGNORE INTO outbox_leases (sink, part, owner, until) VALUES (?, ?, NULL, 0)");
  const dropExtraParts = db.prepare("DELETE FROM outbox_leases WHERE sink = ? AND part >= ?");
  const liveMembers = db.prepare<[string, number], { owner: string }>(
    "SELECT owner FROM outbox_members WHERE sink = ? AND until >= ? ORDER BY owner",
  );
  const mine = db.prepare<[string, string, number], { part: number }>(
    "SELECT part FROM outbox_leases WHERE sink = ? AND owner = ? AND until >= ? ORDER BY part",
  );
  const renew = db.prepare("UPDATE outbox_leases SET until = ? WHERE sink = ? AND owner = ? AND until >= ?");
  const release = db.prepare("UPDATE outbox_leases SET owner = NULL, until = 0 WHERE sink = ? AND part = ? AND owner = ?");
  const free = db.prepare<[string, number, number], { part: number }>(
    "SELECT part FROM outbox_leases WHERE sink = ? AND (owner IS NULL OR until < ?) ORDER BY part LIMIT ?",
  );
  const claim = db.prepare("UPDATE outbox_leases SET owner = ?, until = ? WHERE sink = ? AND part = ?");
  const parkedCount = db.prepare<[string], { n: number }>("SELECT count(*) AS n FROM outbox WHERE sink = ? AND parked = 1");
  const oldest = db.prepare<[string], { created_at: number }>(
    "SELECT created_at FROM outbox WHERE sink = ? AND parked = 0 ORDER BY seq LIMIT 1",
  );
  const fetchStatements = new Map<string, Database.Statement<[string, number, number], FetchedRow>>();
  const sinksWithRows = db.prepare<[], { sink: string }>("SELECT sink FROM outbox_depth ORDER BY sink");

  const append = db.transaction(
    (entries: readonly OutboxEntry[], bounds: Readonly<Record<string, { maxDepth: number; overflow: "drop-oldest" | "refuse-new" }>>) => {
      const result: OutboxAppendResult = { refused: [], perSink: {} };
      for (const [sink, group] of groupBySink(entries)) {
        const depth = depthOf.get(sink)?.total ?? 0;
        const { evict, refuseNewest, refuseOldest } = applyBound(depth, group.length, bounds[sink]);
        const evicted = evict > 0 ? evictOldest.run({ sink, n: evict }).changes : 0;
        let appended = 0;
        let duplicates = 0;
        const keepFrom = refuseOldest;
        const keepTo = group.length - refuseNewest;
        for (let i = 0; i < group.length; i++) {
          const { entry: e, index } = group[i] as { entry: OutboxEntry; index: number };
          if (i < keepFrom || i >= keepTo) {
            result.refused.push(index);
            continue;
          }
          const p = e.payload;
          const changes = insert.run(
            e.sink,
            e.id,
            e.key,
            e.khash,
            e.dest,
            Buffer.from(p.buffer, p.byteOffset, p.byteLength),
            JSON.stringify(e.headers),
            e.createdAt,
          ).changes;
          if (changes > 0) appended++;
          else duplicates++;
        }
        addDepth.run(sink, appended - evicted);
        // drop-oldest: the batch's own oldest entries, dropped when it alone exceeds the bound, count as evicted.
        result.perSink[sink] = { appended, duplicates, evicted: evicted + refuseOldest, refused: refuseNewest };
      }
      result.refused.sort((a, b) => a - b);
      return result;
    },
  );

  const lease = db.transaction((sink: string, owner: string, partitions: number, leaseMs: number, expire: readonly string[]) => {
    const now = Date.now();
    const until = now + leaseMs;
    upsertMember.run(sink, owner, until);
    dropMembers.run(sink, now);
    for (const dead of expire) {
      if (dead === owner) continue;
      dropMember.run(sink, dead);
      freeLeases.run(sink, dead);
    }
    for (let p = 0; p < partitions; p++) ensureLease.run(sink, p);
    dropExtraParts.run(sink, partitions);
    const live = liveMembers.all(sink, now).map((r) => r.owner);
    const share = fairShare(partitions, live.length);
    const held = mine.all(sink, owner, now).map((r) => r.part);
    renew.run(until, sink, owner, now);
    while (held.length > share) release.run(sink, held.pop() as number, owner);
    if (held.length < share) {
      for (const { part } of free.all(sink, now, share - held.length)) {
        claim.run(owner, until, sink, part);
        held.push(part);
      }
    }
    held.sort((a, b) => a - b);
    return { held, others: live.filter((o) => o !== owner) };
  });

  const settle = db.transaction(
    (sink: string, delivered: readonly number[], rejected: ReadonlyArray<{ seq: number; error: string }>, maxAttempts: number) => {
      let deleted = 0;
      if (delivered.length > 0) deleted = deleteSeqs.run(sink, JSON.stringify(delivered)).changes;
      let parked = 0;
      for (const r of rejected) {
        const row = reject.get(r.error.slice(0, 1000), maxAttempts, maxAttempts, r.seq, sink, 0);
        if (row?.parked === 1) parked++;
      }
      if (deleted > 0) addDepth.run(sink, -deleted);
      return { deleted, parked };
    },
  );

  const purge = db.transaction((sink: string, parkedOnly: boolean) => {
    const n = db.prepare(`DELETE FROM outbox WHERE sink = ?${parkedOnly ? " AND parked = 1" : ""}`).run(sink).changes;
    if (n > 0) addDepth.run(sink, -n);
    return n;
  });

  return {
    async outboxAppend(entries, bounds) {
      if (entries.length === 0) return { refused: [], perSink: {} };
      return append.immediate(entries, bounds);
    },
    async outboxLease(sink, owner, options) {
      return lease.immediate(sink, owner, options.partitions, options.leaseMs, options.expireOwners ?? []);
    },
    async outboxFetch(sink, partitions, held, limit, afterSeq = 0) {
      if (held.length === 0) return [];
      const filter = held.length >= partitions ? "" : ` AND (khash % ${Math.trunc(partitions)}) IN (${intList(held)})`;
      let stmt = fetchStatements.get(filter);
      if (!stmt) {
        // One prepared statement per partition set (few: they change only when leases move).
        if (fetchStatements.size > 64) fetchStatements.clear();
        stmt = db
          .prepare<[string, number, number], FetchedRow>(
            `SELECT ${FETCH_COLUMNS} FROM outbox WHERE sink = ? AND parked = 0 AND seq > ?${filter} ORDER BY seq LIMIT ?`,
          )
          .raw(true);
        fetchStatements.set(filter, stmt);
      }
      return fetchedRows(sink, false, stmt.all(sink, afterSeq, limit));
    },
    async outboxSettle(sink, s) {
      return settle.immediate(sink, s.delivered, s.rejected, s.maxAttempts);
    },
    async outboxStats(sinks = []) {
      const names = new Set([...sinksWithRows.all().map((r) => r.sink), ...sinks]);
      const out: OutboxStats[] = [];
      for (const sink of [...names].sort()) {
        const total = depthOf.get(sink)?.total ?? 0;
        const parked = parkedCount.get(sink)?.n ?? 0;
        out.push({ sink, pending: Math.max(0, total - parked), parked, oldestCreatedAt: oldest.get(sink)?.created_at ?? null });
      }
      return out;
    },
    async outboxList(sink, options) {
      const rows = db
        .prepare<[string, number, number], FetchedRow>(
          `SELECT ${FETCH_COLUMNS} FROM outbox WHERE sink = ? AND parked = ? ORDER BY seq LIMIT ?`,
        )
        .raw(true)
        .all(sink, options.parked ? 1 : 0, options.limit);
      return fetchedRows(sink, options.parked, rows);
    },
    async outboxPurge(sink, options) {
      return purge.immediate(sink, options.parkedOnly);
    },
    async outboxReplay(sink) {
      return db.prepare("UPDATE outbox SET parked = 0, attempts = 0 WHERE sink = ? AND parked = 1").run(sink).changes;
    },
    async outboxRelease(sink, owner) {
      db.transaction(() => {
        dropMember.run(sink, owner);
        freeLeases.run(sink, owner);
      }).immediate();
    },
  };
}
