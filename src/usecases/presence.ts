/**
 * The presence use case: online/offline per client id, from `client.connected` and
 * `client.disconnected`, kept in the store so every instance sharing it agrees.
 *
 * A connection is identified by client id + node + peerhost:peerport. The store keeps one row per
 * connection; a client is online while any of its connections has connected and not disconnected,
 * and the newest such connection is shown. This makes the outcome independent of arrival order:
 * - takeover: the old connection's `disconnected` (reason `takenover` or `discarded`) arriving after
 *   the new connection's `connected` leaves the client online with the new connection;
 * - a `disconnected` that arrives before its own `connected` leaves a tombstone, so the late
 *   `connected` does not mark an ended connection online. A tombstone older than `reorderWindowMs`
 *   no longer blocks, because the same peer address and port may be reused by a new connection.
 * Limits (documented): before EMQX 5.4 `peerport` is not sent, so two connections from one host to
 * one node look the same; a disconnect missed while this server was down leaves the client shown
 * online until its next connect/disconnect.
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
import type { ClientInfo } from "../../gen/emqx/exhook/v3/exhook_pb.js";
import type { HookHandler, Logger } from "../provider.js";
import { createHeldWrites, type HeldWritesStats } from "./held-writes.js";
import type { ConnectionInfo, PresenceState, Store } from "./store.js";

/** What a webhook receives (JSON body of a POST). */
export interface PresenceEvent {
  readonly event: "online" | "offline";
  readonly clientId: string;
  readonly at: string;
  readonly state: PresenceState;
}

/** Options of {@link createPresence}. */
export interface PresenceOptions {
  readonly store: Store;
  /** How long an out-of-order disconnect blocks its own late connect, in ms. Default 30000. */
  readonly reorderWindowMs?: number;
  /** Webhook for change events. Default: none. */
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
export interface PresenceStats {
  readonly connected: number;
  readonly disconnected: number;
  readonly transitions: number;
  readonly webhookSent: number;
  readonly webhookFailed: number;
  /** Store writes of the changes: applied, held during an outage, lost (see {@link HeldWritesStats}). */
  readonly writes: HeldWritesStats;
}

/** The presence use case. */
export interface Presence {
  readonly onClientConnected: HookHandler<"onClientConnected">;
  readonly onClientDisconnected: HookHandler<"onClientDisconnected">;
  /** Writes held changes (waiting up to `closeTimeoutMs`), waits for webhook requests in flight, stops pruning. */
  close(): Promise<void>;
  stats(): PresenceStats;
}

/** A stored connection: its details plus the store's identity key `node|peerhost:peerport`. */
function storedConnection(c: Omit<ConnectionInfo, "connKey">): ConnectionInfo {
  return { ...c, connKey: `${c.node}|${c.peerhost}:${c.peerport}` };
}

/** The connection identity and details of a `ClientInfo`. */
export function connectionOf(ci: ClientInfo | undefined, metaNode = ""): ConnectionInfo {
  return storedConnection({
    clientId: ci?.clientid ?? "",
    node: ci?.node || metaNode,
    username: ci?.username ?? "",
    peerhost: ci?.peerhost ?? "",
    peerport: ci?.peerport ?? 0,
    sockport: ci?.sockport ?? 0,
    protocol: ci?.protocol ?? "",
  });
}

/** Creates the presence use case. */
export function createPresence(options: PresenceOptions): Presence {
  const { store, logger, webhook } = options;
  const now = options.now ?? Date.now;
  const window = options.reorderWindowMs ?? 30_000;
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
      body: JSON.stringify(event),
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

  type Change = { readonly kind: "connected" | "disconnected"; readonly conn: ConnectionInfo; readonly at: number; readonly reason: string };
  const writes = createHeldWrites<Change>({
    what: "presence",
    logger,
    maxBytes: options.maxQueueBytes ?? 16 * 1024 * 1024,
    ...(options.retryMaxMs !== undefined ? { retryMaxMs: options.retryMaxMs } : {}),
    ...(options.closeTimeoutMs !== undefined ? { closeTimeoutMs: options.closeTimeoutMs } : {}),
    sizeOf: (c) => 256 + 2 * (c.conn.clientId.length + c.conn.connKey.length + c.conn.node.length + c.conn.username.length + c.conn.peerhost.length + c.reason.length),
    async apply({ kind, conn, at, reason }) {
      if (kind === "connected") {
        const { wasOnline, state } = await store.presenceConnected(conn, at, window);
        if (!wasOnline && state.online) emit({ event: "online", clientId: conn.clientId, at: new Date(at).toISOString(), state });
      } else {
        const { wasOnline, state } = await store.presenceDisconnected(conn, at, reason);
        if (wasOnline && !state.online) emit({ event: "offline", clientId: conn.clientId, at: new Date(at).toISOString(), state });
      }
    },
  });

  const pruneEvery = options.pruneEveryMs ?? 60_000;
  const pruner =
    pruneEvery > 0
      ? setInterval(() => {
          store.prunePresence(now() - Math.max(window * 2, 60_000)).catch((err: unknown) => logger?.warn({ err: (err as Error).message }, "presence prune failed"));
        }, pruneEvery)
      : undefined;
  pruner?.unref();

  return {
    async onClientConnected({ clientinfo }, ctx) {
      const conn = connectionOf(clientinfo, ctx.broker?.node);
      if (conn.clientId === "") return;
      s.connected++;
      await writes.submit({ kind: "connected", conn, at: now(), reason: "" });
    },
    async onClientDisconnected({ clientinfo, reason }, ctx) {
      const conn = connectionOf(clientinfo, ctx.broker?.node);
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

/**
 * A sink for the in-memory presence tracker of `src/presence.ts` (`createPresence({ sinks: [...] })`
 * from the main entry) that records its transitions in a store. Use it when you run that tracker
 * anyway and one ExHook instance sees every event; for several instances behind one URL use
 * {@link createPresence} above, which writes every event (not only transitions) so instances agree.
 */
export function presenceStoreSink(store: Store, reorderWindowMs = 30_000): import("../presence.js").PresenceSink {
  const conn = (r: import("../presence.js").PresenceRecord): ConnectionInfo =>
    storedConnection({ clientId: r.clientId, node: r.node, username: r.username, peerhost: r.peerhost, peerport: r.peerport, sockport: r.sockport, protocol: r.protocol });
  return {
    online: async (r) => void (await store.presenceConnected(conn(r), r.connectedAt, reorderWindowMs)),
    offline: async (r, reason) => void (await store.presenceDisconnected(conn(r), Date.now(), reason)),
  };
}
