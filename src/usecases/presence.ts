/**
 * Stored presence, the presence use case: online/offline per client id from `client.connected` and
 * `client.disconnected`, kept in the store so every instance sharing it agrees. The rules are those
 * of the in-memory tracker (src/presence.ts: one record per connection identity counting connects
 * minus disconnects, so takeovers, quick reconnects from the same address and out-of-order events
 * come out right); the store applies them in one transaction per client id.
 *
 * Store failures: a change the store cannot take (down, busy, full) is held and retried in order,
 * with backoff and jitter, until the store is back (see `held-writes.ts`); the hook answers at once
 * either way. What is held is bounded (`maxQueueBytes`); beyond it changes are dropped, counted and
 * logged. A change applied late keeps the time it happened, so the outcome is the same as if it had
 * been applied at once; its webhook event is sent when it is applied.
 *
 * Change events: optional webhook (HTTP POST of JSON) on every online/offline transition. Publishing
 * to an MQTT topic instead would need an MQTT client, which this package does not include; point the
 * webhook at EMQX's HTTP publish API if you want the event on a topic.
 */
import { connectionOf } from "../connection.js";
import { DEFAULT_REORDER_WINDOW_MS, type PresenceEvent } from "../presence.js";
import type { HookHandler, Logger } from "../provider.js";
import type { Connection } from "../connection.js";
import { createHeldWrites, type HeldWritesStats } from "./held-writes.js";
import type { Store } from "./store.js";

/** Options of {@link createStoredPresence}. */
export interface StoredPresenceOptions {
  readonly store: Store;
  /** How long a disconnect waits for its own late connect, in ms. Default 30000. */
  readonly reorderWindowMs?: number;
  /**
   * Webhook for change events: a POST of `{ "event": "online"|"offline", "clientId", "at" (ISO 8601),
   * "state" }`. Default: none.
   */
  readonly webhook?: {
    readonly url: string;
    /** Per-request timeout in ms. Default 2000. */
    readonly timeoutMs?: number;
    /** Extra headers (e.g. an authorization header). */
    readonly headers?: Readonly<Record<string, string>> | undefined;
  };
  /** Called on every transition (in addition to the webhook). */
  readonly onChange?: (event: PresenceEvent) => void;
  /** Most bytes of changes held while the store fails. Default 16 MiB (about 50,000 changes). */
  readonly maxQueueBytes?: number;
  /** Longest pause between attempts while the store fails, in ms. Default 5000. */
  readonly retryMaxMs?: number;
  /** How long `close()` keeps trying to write held changes to a failing store, in ms. Default 10000. */
  readonly closeTimeoutMs?: number;
  /** How often ended connection rows are pruned, in ms (0 = never). Default 60000. */
  readonly pruneEveryMs?: number;
  readonly logger?: Logger;
  /** Clock, for tests. Default `Date.now`. */
  readonly now?: () => number;
}

/** Counters of the presence use case. */
export interface StoredPresenceStats {
  readonly connected: number;
  readonly disconnected: number;
  readonly transitions: number;
  readonly webhookSent: number;
  readonly webhookFailed: number;
  /** Store writes of the changes: applied, held during an outage, lost (see {@link HeldWritesStats}). */
  readonly writes: HeldWritesStats;
}

/** The presence use case: two hook handlers for a provider, and its lifecycle. */
export interface StoredPresence {
  readonly onClientConnected: HookHandler<"onClientConnected">;
  readonly onClientDisconnected: HookHandler<"onClientDisconnected">;
  /** Writes held changes (waiting up to `closeTimeoutMs`), waits for webhook requests in flight, stops pruning. */
  close(): Promise<void>;
  stats(): StoredPresenceStats;
}

/** Creates the presence use case on a store. */
export function createStoredPresence(options: StoredPresenceOptions): StoredPresence {
  const { store, logger, webhook } = options;
  const now = options.now ?? Date.now;
  const window = options.reorderWindowMs ?? DEFAULT_REORDER_WINDOW_MS;
  const s = { connected: 0, disconnected: 0, transitions: 0, webhookSent: 0, webhookFailed: 0 };
  const inflight = new Set<Promise<void>>();

  function emit(event: PresenceEvent): void {
    s.transitions++;
    try {
      options.onChange?.(event);
    } catch (err) {
      logger?.warn({ err: (err as Error).message }, "presence onChange threw");
    }
    if (!webhook) return;
    const p = fetch(webhook.url, {
      method: "POST",
      headers: { "content-type": "application/json", ...webhook.headers },
      body: JSON.stringify({ event: event.type, clientId: event.clientId, at: new Date(event.at).toISOString(), state: event.state }),
      signal: AbortSignal.timeout(webhook.timeoutMs ?? 2000),
    })
      .then(async (res) => {
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) s.webhookSent++;
        else {
          s.webhookFailed++;
          logger?.warn({ status: res.status, clientId: event.clientId }, "presence webhook answered an error");
        }
      })
      .catch((err: unknown) => {
        s.webhookFailed++;
        logger?.warn({ err: (err as Error).message, clientId: event.clientId }, "presence webhook failed");
      })
      .finally(() => inflight.delete(p));
    inflight.add(p);
  }

  type Change = { readonly kind: "connected" | "disconnected"; readonly conn: Connection; readonly at: number; readonly reason: string };
  const writes = createHeldWrites<Change>({
    what: "presence",
    logger,
    maxBytes: options.maxQueueBytes ?? 16 * 1024 * 1024,
    ...(options.retryMaxMs !== undefined ? { retryMaxMs: options.retryMaxMs } : {}),
    ...(options.closeTimeoutMs !== undefined ? { closeTimeoutMs: options.closeTimeoutMs } : {}),
    sizeOf: (c) =>
      256 +
      2 *
        (c.conn.clientId.length +
          c.conn.node.length +
          c.conn.username.length +
          c.conn.peerhost.length +
          c.conn.protocol.length +
          c.reason.length),
    async apply({ kind, conn, at, reason }) {
      if (kind === "connected") {
        const { wasOnline, state } = await store.presenceConnected(conn, at, window);
        if (!wasOnline && state.online) emit({ type: "online", clientId: conn.clientId, at, state });
      } else {
        const { wasOnline, state } = await store.presenceDisconnected(conn, at, reason);
        if (wasOnline && !state.online) emit({ type: "offline", clientId: conn.clientId, at, state });
      }
    },
  });

  const pruneEvery = options.pruneEveryMs ?? 60_000;
  const pruner =
    pruneEvery > 0
      ? setInterval(() => {
          store
            .prunePresence(now() - Math.max(window * 2, 60_000))
            .catch((err: unknown) => logger?.warn({ err: (err as Error).message }, "presence prune failed"));
        }, pruneEvery)
      : undefined;
  pruner?.unref();

  return {
    async onClientConnected({ clientinfo }, ctx) {
      const conn = connectionOf(clientinfo, clientinfo?.node ? "" : ctx.broker?.node);
      if (conn.clientId === "") return;
      s.connected++;
      await writes.submit({ kind: "connected", conn, at: now(), reason: "" });
    },
    async onClientDisconnected({ clientinfo, reason }, ctx) {
      const conn = connectionOf(clientinfo, clientinfo?.node ? "" : ctx.broker?.node);
      if (conn.clientId === "") return;
      s.disconnected++;
      await writes.submit({ kind: "disconnected", conn, at: now(), reason });
    },
    async close() {
      if (pruner) clearInterval(pruner);
      await writes.close();
      await Promise.allSettled([...inflight]);
    },
    stats: () => ({ ...s, writes: writes.stats() }),
  };
}
