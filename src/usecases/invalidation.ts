/**
 * The invalidation hub: one place where "user X changed", "client Y changed", "the rules changed" or
 * "forget everything" is announced, and from where it reaches every process that caches decisions:
 *
 * - this process: the hub's subscribers, at once;
 * - the other workers of `serve --workers N`: the cluster bus (`src/ops/cluster-bus.ts`);
 * - other processes on the same store (other instances, the server when the CLI made the change):
 *   a row in the store's invalidation table, which every hub polls every `pollMs` (one indexed
 *   query); on PostgreSQL the row also sends `NOTIFY exhook_invalidation`, which a hub with `listen`
 *   hears at once (a dedicated connection, reconnected with backoff; a reconnect polls at once);
 * - EMQX itself, when an {@link EmqxNotifier} is given (only the announcing process calls it).
 *
 * Failure behaviour: a failed store write is logged, counted and reported to the caller (the local
 * process and the other workers are already told); a failed poll is logged and counted, and the next
 * poll reads from where the last good one stopped. A poller that could not read for longer than the
 * store keeps records (`INVALIDATION_KEEP_MS`) announces `all`, since it may have missed some.
 */
import type pg from "pg";
import { clusterBus, type ClusterBus } from "../ops/cluster-bus.js";
import type { Logger } from "../provider.js";
import type { EmqxNotifier } from "./emqx-api.js";
import { loadOptional } from "./optional-dependency.js";
import { INVALIDATION_KEEP_MS, type InvalidationScope, type Store } from "./store.js";

/** One invalidation. `key` is the username or client id ("" for `all` and `rules`). */
export interface Invalidation {
  readonly scope: InvalidationScope;
  readonly key: string;
}

/** Where a subscriber's invalidation came from. */
export type InvalidationOrigin = "local" | "worker" | "store";

/** Options of {@link createInvalidationHub}. */
export interface InvalidationHubOptions {
  /** Record announcements here and poll it for other processes' ones. */
  readonly store?: Store;
  /** Poll interval in ms; 0 = never poll (a process that only announces, like the CLI). Default 1000. */
  readonly pollMs?: number;
  /** PostgreSQL URL to LISTEN on (the store's): invalidations arrive at once instead of at the next poll. */
  readonly listenUrl?: string;
  /** The cluster bus; `false` for none. Default `clusterBus()`. */
  readonly bus?: ClusterBus | false;
  /** Tell EMQX too (only for what this process announces). */
  readonly emqx?: EmqxNotifier;
  readonly logger?: Logger;
}

/** Counters of a hub. */
export interface InvalidationHubStats {
  readonly announced: number;
  readonly fromWorkers: number;
  readonly fromStore: number;
  readonly recordFailures: number;
  readonly pollFailures: number;
  readonly listenErrors: number;
  /** Whether the LISTEN connection is up (undefined without `listenUrl`). */
  readonly listening: boolean | undefined;
}

/** What {@link createInvalidationHub} returns. */
export interface InvalidationHub {
  /**
   * Announces an invalidation: subscribers here at once, other workers, the store (other processes),
   * EMQX. Rejects only when the store could not record it (everything else has been told).
   */
  announce(inv: Invalidation): Promise<void>;
  /** Calls `fn` for every invalidation, whoever announced it; returns the unsubscribe function. */
  subscribe(fn: (inv: Invalidation, origin: InvalidationOrigin) => void): () => void;
  /** Reads the store now (also what a NOTIFY triggers). Concurrent calls share one read. */
  poll(): Promise<void>;
  /** Resolves once the hub knows where the store's records stand (it starts polling from there). */
  ready(): Promise<void>;
  stats(): InvalidationHubStats;
  close(): Promise<void>;
}

const BUS_CHANNEL = "exhook.invalidation";
/** The NOTIFY channel the PostgreSQL store sends on (`pg-store.ts` INVALIDATION_CHANNEL). */
const PG_CHANNEL = "exhook_invalidation";
/** Records re-read behind the newest seen: PostgreSQL sequence numbers may commit out of order. */
const REREAD = 64;
/** `application_name` of the LISTEN connection (find it in `pg_stat_activity`). */
export const LISTENER_APP_NAME = "exhook-invalidation-listener";
const SCOPES: ReadonlySet<string> = new Set(["all", "user", "client", "rules"]);

function isInvalidation(v: unknown): v is Invalidation {
  return typeof v === "object" && v !== null && SCOPES.has((v as Invalidation).scope) && typeof (v as Invalidation).key === "string";
}

/** Creates a hub; it starts polling (and listening) at once. */
export function createInvalidationHub(options: InvalidationHubOptions = {}): InvalidationHub {
  const { store, logger, emqx } = options;
  const pollMs = options.pollMs ?? 1000;
  const bus = options.bus === undefined ? clusterBus() : options.bus;
  const subscribers = new Set<(inv: Invalidation, origin: InvalidationOrigin) => void>();
  const counts = { announced: 0, fromWorkers: 0, fromStore: 0, recordFailures: 0, pollFailures: 0, listenErrors: 0 };
  /** Seqs already applied (ours included), newer than `last - REREAD`. */
  const seen = new Set<number>();
  let last = -1;
  /** The newest seq when the hub started: older records are history, not news. */
  let floor = 0;
  let lastGoodPoll = Date.now();
  let polling: Promise<void> | undefined;
  let closed = false;
  let timer: ReturnType<typeof setInterval> | undefined;
  let listener: PgListener | undefined;

  const deliver = (inv: Invalidation, origin: InvalidationOrigin) => {
    for (const fn of subscribers) {
      try {
        fn(inv, origin);
      } catch (err) {
        logger?.error({ scope: inv.scope, key: inv.key, err: (err as Error).message }, "an invalidation subscriber failed");
      }
    }
  };

  const unsubscribeBus = bus
    ? bus.subscribe(BUS_CHANNEL, (data) => {
        if (!isInvalidation(data)) return;
        counts.fromWorkers++;
        deliver(data, "worker");
      })
    : undefined;

  async function readOnce(): Promise<void> {
    if (!store || closed) return;
    try {
      if (last < 0) {
        last = floor = (await store.invalidationsAfter(-1, 0)).latest;
        lastGoodPoll = Date.now();
        return;
      }
      if (Date.now() - lastGoodPoll > INVALIDATION_KEEP_MS / 2) {
        logger?.warn({ sinceMs: Date.now() - lastGoodPoll }, "invalidations not read for too long; dropping every cached decision");
        deliver({ scope: "all", key: "" }, "store");
      }
      const { records } = await store.invalidationsAfter(Math.max(0, last - REREAD), 1000);
      lastGoodPoll = Date.now();
      for (const r of records) {
        if (r.seq <= floor || seen.has(r.seq)) continue;
        seen.add(r.seq);
        if (r.seq > last) last = r.seq;
        counts.fromStore++;
        deliver({ scope: r.scope, key: r.key }, "store");
      }
      for (const s of seen) if (s <= last - REREAD) seen.delete(s);
    } catch (err) {
      counts.pollFailures++;
      logger?.warn({ err: (err as Error).message }, "reading invalidations from the store failed; retrying at the next poll");
    }
  }

  const poll = (): Promise<void> => {
    if (polling) return polling;
    polling = readOnce().finally(() => (polling = undefined));
    return polling;
  };

  const started = poll();
  if (store && pollMs > 0) {
    timer = setInterval(() => void poll(), pollMs);
    timer.unref();
  }
  if (options.listenUrl) listener = listenPg(options.listenUrl, () => void poll(), counts, logger);

  return {
    async announce(inv) {
      if (!isInvalidation(inv))
        throw new Error(`invalid invalidation ${JSON.stringify(inv)}: expected { scope: all|user|client|rules, key }`);
      counts.announced++;
      deliver(inv, "local");
      if (bus) bus.publish(BUS_CHANNEL, { scope: inv.scope, key: inv.key });
      const told = emqx?.notify(inv.scope, inv.key);
      try {
        if (store) {
          const seq = await store.recordInvalidation(inv.scope, inv.key);
          seen.add(seq);
        }
      } catch (err) {
        counts.recordFailures++;
        logger?.error(
          { scope: inv.scope, key: inv.key, err: (err as Error).message },
          "invalidation not recorded in the store: other instances keep cached decisions until they expire",
        );
        throw err;
      } finally {
        await told;
      }
    },
    subscribe(fn) {
      subscribers.add(fn);
      return () => subscribers.delete(fn);
    },
    poll,
    ready: () => started,
    stats: () => ({ ...counts, listening: listener?.up() }),
    async close() {
      if (closed) return;
      await polling;
      closed = true;
      if (timer) clearInterval(timer);
      unsubscribeBus?.();
      await listener?.close();
    },
  };
}

interface PgListener {
  up(): boolean;
  close(): Promise<void>;
}

/** A dedicated PostgreSQL connection LISTENing for invalidations; reconnects with backoff (0.5 s doubling to 30 s). */
function listenPg(url: string, onNotify: () => void, counts: { listenErrors: number }, logger: Logger | undefined): PgListener {
  const { Client } = loadOptional<typeof pg>("pg", "LISTEN for invalidations on the PostgreSQL store");
  let client: pg.Client | undefined;
  let connected = false;
  let closed = false;
  let delay = 500;
  let retry: ReturnType<typeof setTimeout> | undefined;

  const scheduleReconnect = (err: unknown) => {
    if (closed) return;
    counts.listenErrors++;
    connected = false;
    logger?.warn({ err: (err as Error)?.message, retryInMs: delay }, "LISTEN for invalidations lost; polling continues, reconnecting");
    const c = client;
    client = undefined;
    c?.end().catch(() => {});
    retry = setTimeout(connect, delay);
    retry.unref();
    delay = Math.min(delay * 2, 30_000);
  };

  function connect(): void {
    if (closed) return;
    const c = new Client({ connectionString: url, application_name: LISTENER_APP_NAME });
    client = c;
    c.on("error", (err) => {
      if (client === c) scheduleReconnect(err);
    });
    c.on("end", () => {
      if (client === c) scheduleReconnect(new Error("connection ended"));
    });
    c.on("notification", (msg) => {
      if (msg.channel === PG_CHANNEL) onNotify();
    });
    c.connect()
      .then(() => c.query(`LISTEN ${PG_CHANNEL}`))
      .then(() => {
        if (client !== c) return;
        connected = true;
        delay = 500;
        // Whatever was announced while we were not listening.
        onNotify();
      })
      .catch((err: unknown) => {
        if (client === c) scheduleReconnect(err);
      });
  }
  connect();
  return {
    up: () => connected,
    async close() {
      closed = true;
      if (retry) clearTimeout(retry);
      const c = client;
      client = undefined;
      await c?.end().catch(() => {});
    },
  };
}
