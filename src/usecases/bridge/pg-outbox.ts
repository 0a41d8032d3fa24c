/**
 * The bridge outbox on PostgreSQL: the `Store.outbox*` methods of the PostgreSQL backend, for
 * several instances sharing one outbox. Partitions of a sink are leased with row locks (`FOR UPDATE
 * SKIP LOCKED`) and a lease time taken from the database clock (instances' clocks may differ), so
 * each partition, and so each client's messages, is forwarded by one instance at a time. Appends
 * and settlements lock the sink's depth row, which keeps the depth exact and makes appends to one
 * sink commit in `seq` order.
 */
import type pg from "pg";
import { pgTransaction } from "../pg-transaction.js";
import type { OutboxAppendResult, OutboxEntry, OutboxStats } from "../store.js";
import { applyBound, FETCH_COLUMNS, fairShare, fetchedRows, groupBySink, type FetchedRow, type OutboxMethods } from "./outbox-shared.js";

/** The schema migration that adds the outbox (appended to the PostgreSQL store's migrations). */
export const PG_OUTBOX_MIGRATION = `
  CREATE TABLE exhook_outbox (
    seq BIGSERIAL PRIMARY KEY,
    sink TEXT NOT NULL,
    id TEXT NOT NULL,
    key TEXT NOT NULL,
    khash INTEGER NOT NULL,
    dest TEXT NOT NULL,
    payload BYTEA NOT NULL,
    headers TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    parked BOOLEAN NOT NULL DEFAULT false,
    last_error TEXT NOT NULL DEFAULT '',
    UNIQUE (sink, id)
  );
  CREATE INDEX exhook_outbox_pending ON exhook_outbox (sink, seq) WHERE NOT parked;
  CREATE INDEX exhook_outbox_parked ON exhook_outbox (sink, seq) WHERE parked;
  CREATE TABLE exhook_outbox_depth (sink TEXT PRIMARY KEY, total BIGINT NOT NULL);
  CREATE TABLE exhook_outbox_leases (sink TEXT NOT NULL, part INTEGER NOT NULL, owner TEXT, until BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (sink, part));
  CREATE TABLE exhook_outbox_members (sink TEXT NOT NULL, owner TEXT NOT NULL, until BIGINT NOT NULL, PRIMARY KEY (sink, owner));
`;

/**
 * Starts a transaction whose plans may not use bitmap scans. The outbox statements must walk an
 * index in seq order and stop at their limit. Without statistics that show the sink's backlog (a
 * table not analyzed yet, or a sink that was a small share of the rows at the last ANALYZE),
 * PostgreSQL expects a few dozen rows and picks a bitmap scan of the sink's index entries and a
 * sort instead: every fetch then reads the sink's whole backlog (measured: 11 ms instead of 0.3 ms
 * per 500 rows with 20,000 queued, and growing with the backlog). test/bridge-outbox-store.test.ts
 * counts the index entries read.
 */
const BEGIN_NO_BITMAP = "BEGIN; SET LOCAL enable_bitmapscan = off";

/** The database clock in ms: leases compare against one clock, whatever the instances' clocks say. */
const NOW = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const num = (v: unknown): number => Number(v);

/** The outbox methods of a PostgreSQL store on `pool` (its schema already migrated). */
export function pgOutboxMethods(pool: pg.Pool): OutboxMethods {
  const tx = <T>(fn: (c: pg.PoolClient) => Promise<T>, begin?: string): Promise<T> => pgTransaction(pool, fn, begin);

  /** Locks the sink's depth row (creating it) and returns the depth. */
  async function lockDepth(c: pg.PoolClient, sink: string): Promise<number> {
    await c.query("INSERT INTO exhook_outbox_depth (sink, total) VALUES ($1, 0) ON CONFLICT (sink) DO NOTHING", [sink]);
    const r = await c.query("SELECT total FROM exhook_outbox_depth WHERE sink = $1 FOR UPDATE", [sink]);
    return num(r.rows[0]?.["total"] ?? 0);
  }

  /**
   * Deletes delivered rows and lowers the depth, in one statement that locks the depth row first
   * (as appends do, so the two cannot deadlock). Undefined when the sink has no depth row (never
   * the case after an append; {@link lockDepth} creates it). The rows are found by primary key
   * only: `(sink = $1) IS TRUE` checks the sink but is no index condition. A plain `sink = $1`
   * lets the planner AND a bitmap of the sink's whole backlog (from the (sink, id) index) with the
   * seqs when its statistics understate the backlog (measured with 40,000 rows queued: 13 ms per
   * 500 rows instead of 0.8 ms; a join with unnest() got a hash join over the backlog: 64 ms).
   */
  async function deleteDelivered(q: pg.Pool | pg.PoolClient, sink: string, seqs: readonly number[]): Promise<number | undefined> {
    const r = await q.query(
      `WITH l AS (SELECT total FROM exhook_outbox_depth WHERE sink = $1 FOR UPDATE),
         d AS (DELETE FROM exhook_outbox WHERE seq = ANY($2::bigint[]) AND (sink = $1) IS TRUE AND EXISTS (SELECT 1 FROM l) RETURNING 1),
         n AS (SELECT count(*) AS deleted FROM d)
       UPDATE exhook_outbox_depth SET total = greatest(0, total - n.deleted) FROM n WHERE sink = $1 RETURNING n.deleted`,
      [sink, seqs],
    );
    return r.rows.length > 0 ? num(r.rows[0]?.["deleted"]) : undefined;
  }

  const addDepth = (c: pg.PoolClient, sink: string, delta: number) =>
    c.query("UPDATE exhook_outbox_depth SET total = greatest(0, total + $2) WHERE sink = $1", [sink, delta]);

  return {
    async outboxAppend(entries: readonly OutboxEntry[], bounds) {
      if (entries.length === 0) return { refused: [], perSink: {} };
      return tx(async (c) => {
        const result: OutboxAppendResult = { refused: [], perSink: {} };
        for (const [sink, group] of groupBySink(entries)) {
          const depth = await lockDepth(c, sink);
          const { evict, refuseNewest, refuseOldest } = applyBound(depth, group.length, bounds[sink]);
          const evicted =
            evict > 0
              ? // The oldest of the pending and of the parked rows, each walked in order on its
                // partial index, merged (`WHERE sink = $1 ORDER BY seq` sorts the whole backlog).
                ((
                  await c.query(
                    `DELETE FROM exhook_outbox WHERE seq = ANY(ARRAY(
                       SELECT seq FROM ((SELECT seq FROM exhook_outbox WHERE sink = $1 AND NOT parked ORDER BY seq LIMIT $2)
                         UNION ALL (SELECT seq FROM exhook_outbox WHERE sink = $1 AND parked ORDER BY seq LIMIT $2)) o
                       ORDER BY seq LIMIT $2))`,
                    [sink, evict],
                  )
                ).rowCount ?? 0)
              : 0;
          const cols: unknown[][] = [[], [], [], [], [], [], []];
          const keepTo = group.length - refuseNewest;
          for (let i = 0; i < group.length; i++) {
            const { entry: e, index } = group[i] as { entry: OutboxEntry; index: number };
            if (i < refuseOldest || i >= keepTo) {
              result.refused.push(index);
              continue;
            }
            const p = e.payload;
            (cols[0] as unknown[]).push(e.id);
            (cols[1] as unknown[]).push(e.key);
            (cols[2] as unknown[]).push(e.khash);
            (cols[3] as unknown[]).push(e.dest);
            (cols[4] as unknown[]).push(Buffer.from(p.buffer, p.byteOffset, p.byteLength));
            (cols[5] as unknown[]).push(JSON.stringify(e.headers));
            (cols[6] as unknown[]).push(e.createdAt);
          }
          const kept = (cols[0] as unknown[]).length;
          let appended = 0;
          if (kept > 0) {
            // One statement per batch: unnest() of one array per column (one round trip, one plan).
            const r = await c.query(
              `INSERT INTO exhook_outbox (sink, id, key, khash, dest, payload, headers, created_at)
               SELECT $1, id, key, khash, dest, payload, headers, created_at
               FROM unnest($2::text[], $3::text[], $4::int[], $5::text[], $6::bytea[], $7::text[], $8::bigint[])
                 WITH ORDINALITY AS t(id, key, khash, dest, payload, headers, created_at, n)
               ORDER BY n
               ON CONFLICT (sink, id) DO NOTHING`,
              [sink, ...cols],
            );
            appended = r.rowCount ?? 0;
          }
          if (appended - evicted !== 0) await addDepth(c, sink, appended - evicted);
          // drop-oldest: the batch's own oldest entries, dropped when it alone exceeds the bound, count as evicted.
          result.perSink[sink] = { appended, duplicates: kept - appended, evicted: evicted + refuseOldest, refused: refuseNewest };
        }
        result.refused.sort((a, b) => a - b);
        return result;
      }, BEGIN_NO_BITMAP);
    },

    async outboxLease(sink, owner, options) {
      const { partitions, leaseMs } = options;
      const expire = (options.expireOwners ?? []).filter((o) => o !== owner);
      return tx(async (c) => {
        const now = num((await c.query(`SELECT ${NOW} AS now`)).rows[0]?.["now"]);
        const until = now + leaseMs;
        await c.query(
          "INSERT INTO exhook_outbox_members (sink, owner, until) VALUES ($1, $2, $3) ON CONFLICT (sink, owner) DO UPDATE SET until = excluded.until",
          [sink, owner, until],
        );
        await c.query("DELETE FROM exhook_outbox_members WHERE sink = $1 AND (until < $2 OR owner = ANY($3::text[]))", [sink, now, expire]);
        if (expire.length > 0)
          await c.query("UPDATE exhook_outbox_leases SET owner = NULL, until = 0 WHERE sink = $1 AND owner = ANY($2::text[])", [
            sink,
            expire,
          ]);
        await c.query(
          "INSERT INTO exhook_outbox_leases (sink, part, owner, until) SELECT $1, g, NULL, 0 FROM generate_series(0, $2::int - 1) g ON CONFLICT (sink, part) DO NOTHING",
          [sink, partitions],
        );
        await c.query("DELETE FROM exhook_outbox_leases WHERE sink = $1 AND part >= $2", [sink, partitions]);
        const live = (
          await c.query("SELECT owner FROM exhook_outbox_members WHERE sink = $1 AND until >= $2 ORDER BY owner", [sink, now])
        ).rows.map((r) => r["owner"] as string);
        const share = fairShare(partitions, live.length);
        const held = (
          await c.query("UPDATE exhook_outbox_leases SET until = $3 WHERE sink = $1 AND owner = $2 AND until >= $4 RETURNING part", [
            sink,
            owner,
            until,
            now,
          ])
        ).rows
          .map((r) => num(r["part"]))
          .sort((a, b) => a - b);
        if (held.length > share) {
          const extra = held.splice(share);
          await c.query(
            "UPDATE exhook_outbox_leases SET owner = NULL, until = 0 WHERE sink = $1 AND owner = $2 AND part = ANY($3::int[])",
            [sink, owner, extra],
          );
        } else if (held.length < share) {
          const claimed = await c.query(
            `UPDATE exhook_outbox_leases SET owner = $2, until = $3 WHERE sink = $1 AND part IN (
               SELECT part FROM exhook_outbox_leases WHERE sink = $1 AND (owner IS NULL OR until < $4) ORDER BY part LIMIT $5 FOR UPDATE SKIP LOCKED)
             RETURNING part`,
            [sink, owner, until, now, share - held.length],
          );
          for (const r of claimed.rows) held.push(num(r["part"]));
          held.sort((a, b) => a - b);
        }
        return { held, others: live.filter((o) => o !== owner) };
      });
    },

    async outboxFetch(sink, partitions, held, limit, afterSeq = 0) {
      if (held.length === 0) return [];
      const all = held.length >= partitions;
      const r = await tx(
        (c) =>
          c.query<FetchedRow>({
            text: `SELECT ${FETCH_COLUMNS} FROM exhook_outbox WHERE sink = $1 AND NOT parked AND seq > $3${all ? "" : " AND (khash % $4) = ANY($5::int[])"} ORDER BY seq LIMIT $2`,
            values: all ? [sink, limit, afterSeq] : [sink, limit, afterSeq, partitions, held],
            rowMode: "array",
          }),
        BEGIN_NO_BITMAP,
      );
      return fetchedRows(sink, false, r.rows);
    },

    async outboxSettle(sink, s) {
      // The common case (no refusals) in one statement: one round trip, its own transaction.
      if (s.rejected.length === 0 && s.delivered.length > 0) {
        const deleted = await deleteDelivered(pool, sink, s.delivered);
        if (deleted !== undefined) return { deleted, parked: 0 };
      }
      return tx(async (c) => {
        let deleted = 0;
        let parked = 0;
        if (s.delivered.length > 0) {
          // (Creates the depth row when missing, which the statement needs.)
          await lockDepth(c, sink);
          deleted = (await deleteDelivered(c, sink, s.delivered)) ?? 0;
        }
        if (s.rejected.length > 0) {
          const r = await c.query(
            `UPDATE exhook_outbox o SET attempts = o.attempts + 1, last_error = r.err, parked = ($3::int > 0 AND o.attempts + 1 >= $3::int)
             FROM unnest($2::bigint[], $4::text[]) AS r(seq, err) WHERE o.seq = r.seq AND (o.sink = $1) IS TRUE AND NOT o.parked RETURNING o.parked`,
            [sink, s.rejected.map((x) => x.seq), s.maxAttempts, s.rejected.map((x) => x.error.slice(0, 1000))],
          );
          parked = r.rows.filter((x) => x["parked"] === true).length;
        }
        return { deleted, parked };
      });
    },

    async outboxStats(sinks = []) {
      const r = await pool.query(
        `SELECT s.sink, coalesce(d.total, 0) AS total,
           (SELECT count(*) FROM exhook_outbox o WHERE o.sink = s.sink AND o.parked) AS parked,
           (SELECT created_at FROM exhook_outbox o WHERE o.sink = s.sink AND NOT o.parked ORDER BY seq LIMIT 1) AS oldest
         FROM (SELECT sink FROM exhook_outbox_depth UNION SELECT unnest($1::text[])) s
         LEFT JOIN exhook_outbox_depth d ON d.sink = s.sink ORDER BY s.sink COLLATE "C"`,
        [sinks],
      );
      return r.rows.map((x): OutboxStats => {
        const parked = num(x["parked"]);
        return {
          sink: x["sink"] as string,
          pending: Math.max(0, num(x["total"]) - parked),
          parked,
          oldestCreatedAt: x["oldest"] === null ? null : num(x["oldest"]),
        };
      });
    },

    async outboxList(sink, options) {
      const r = await pool.query<FetchedRow>({
        text: `SELECT ${FETCH_COLUMNS} FROM exhook_outbox WHERE sink = $1 AND parked = $2 ORDER BY seq LIMIT $3`,
        values: [sink, options.parked, options.limit],
        rowMode: "array",
      });
      return fetchedRows(sink, options.parked, r.rows);
    },

    async outboxPurge(sink, options) {
      return tx(async (c) => {
        await lockDepth(c, sink);
        const n =
          (await c.query(`DELETE FROM exhook_outbox WHERE sink = $1${options.parkedOnly ? " AND parked" : ""}`, [sink])).rowCount ?? 0;
        if (n > 0) await addDepth(c, sink, -n);
        return n;
      });
    },

    async outboxReplay(sink) {
      return (await pool.query("UPDATE exhook_outbox SET parked = false, attempts = 0 WHERE sink = $1 AND parked", [sink])).rowCount ?? 0;
    },

    async outboxRelease(sink, owner) {
      await tx(async (c) => {
        await c.query("DELETE FROM exhook_outbox_members WHERE sink = $1 AND owner = $2", [sink, owner]);
        await c.query("UPDATE exhook_outbox_leases SET owner = NULL, until = 0 WHERE sink = $1 AND owner = $2", [sink, owner]);
      });
    },
  };
}
