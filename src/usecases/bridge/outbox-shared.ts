/**
 * What the two outbox backends (SQLite, PostgreSQL) share: the columns a fetch reads and the rows
 * made of them, the partition of an ordering key, the fair share of partitions per live owner, and
 * how a bound turns into evictions and refusals.
 */
import type { OutboxRow, Store } from "../store.js";

/** The Store methods an outbox implementation (SQLite, PostgreSQL) provides. */
export type OutboxMethods = Pick<
  Store,
  | "outboxAppend"
  | "outboxLease"
  | "outboxFetch"
  | "outboxSettle"
  | "outboxStats"
  | "outboxList"
  | "outboxPurge"
  | "outboxReplay"
  | "outboxRelease"
>;

/** Default number of partitions of a sink's outbox (the most instances that forward in parallel). */
export const DEFAULT_OUTBOX_PARTITIONS = 16;

/**
 * What a fetch or a listing reads, in this order, as raw arrays (no driver object per row; see
 * {@link fetchedRow}). Both backends use it.
 */
export const FETCH_COLUMNS = "seq, id, key, khash, dest, payload, headers, created_at, attempts, last_error";
/** A row read with {@link FETCH_COLUMNS}; PostgreSQL returns its BIGINT columns as strings. */
export type FetchedRow = [number | string, string, string, number, string, Uint8Array, string, number | string, number, string];

/** A row of `sink` read with {@link FETCH_COLUMNS} (the query selected it by sink and parked state). */
const fetchedRow = (sink: string, parked: boolean, r: FetchedRow): OutboxRow => ({
  seq: Number(r[0]),
  sink,
  id: r[1],
  key: r[2],
  khash: r[3],
  dest: r[4],
  payload: new Uint8Array(r[5].buffer, r[5].byteOffset, r[5].byteLength),
  headers: JSON.parse(r[6]) as Record<string, string>,
  createdAt: Number(r[7]),
  attempts: r[8],
  parked,
  lastError: r[9],
});

/** The rows of `sink` a fetch or a listing read with {@link FETCH_COLUMNS}. */
export function fetchedRows(sink: string, parked: boolean, rows: readonly FetchedRow[]): OutboxRow[] {
  const out: OutboxRow[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) out[i] = fetchedRow(sink, parked, rows[i] as FetchedRow);
  return out;
}

/**
 * 31-bit FNV-1a hash of an ordering key (the client id). Stored with each row, so the partition
 * (`khash % partitions`) can be computed in SQL for any partition count.
 */
export function keyHash(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) & 0x7fffffff;
}

/** How many partitions one of `owners` live owners should hold (at least 1 owner: the caller). */
export function fairShare(partitions: number, owners: number): number {
  return Math.ceil(partitions / Math.max(1, owners));
}

/**
 * What a bound does to a batch of `incoming` entries for a sink holding `depth` rows: how many of
 * the oldest rows to evict, and how many of the batch to refuse — the newest ones with
 * `refuse-new`, the oldest ones of the batch with `drop-oldest` (only when the batch alone exceeds
 * the bound).
 */
export function applyBound(
  depth: number,
  incoming: number,
  bound: { readonly maxDepth: number; readonly overflow: "drop-oldest" | "refuse-new" } | undefined,
): { evict: number; refuseNewest: number; refuseOldest: number } {
  if (!bound) return { evict: 0, refuseNewest: 0, refuseOldest: 0 };
  const over = depth + incoming - bound.maxDepth;
  if (over <= 0) return { evict: 0, refuseNewest: 0, refuseOldest: 0 };
  if (bound.overflow === "refuse-new") return { evict: 0, refuseNewest: Math.min(over, incoming), refuseOldest: 0 };
  const evict = Math.min(over, depth);
  return { evict, refuseNewest: 0, refuseOldest: Math.min(over - evict, incoming) };
}

/** Groups a batch by sink, keeping each entry's index in the batch. */
export function groupBySink<T extends { readonly sink: string }>(entries: readonly T[]): Map<string, Array<{ entry: T; index: number }>> {
  const groups = new Map<string, Array<{ entry: T; index: number }>>();
  entries.forEach((entry, index) => {
    let g = groups.get(entry.sink);
    if (!g) groups.set(entry.sink, (g = []));
    g.push({ entry, index });
  });
  return groups;
}

/** Owner ids look like `host/pid/random`: the host and pid, to tell a dead local owner. */
export function parseOwner(owner: string): { host: string; pid: number } | undefined {
  const parts = owner.split("/");
  if (parts.length < 3) return undefined;
  const pid = Number(parts[parts.length - 2]);
  return Number.isInteger(pid) && pid > 0 ? { host: parts.slice(0, -2).join("/"), pid } : undefined;
}
