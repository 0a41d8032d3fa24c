/**
 * Per-client context: a small store that handlers of one MQTT connection share across hooks (for
 * example the tenant found at `client.authenticate`, read again at `client.authorize` and
 * `message.publish`), cleaned up at `client.disconnected` and bounded in memory.
 *
 * Turn it on by wrapping the handlers: `defineProvider(clients.wrap(handlers))`. `wrap` adds
 * `onClientConnected` and `onClientDisconnected` (chaining yours, if any), so EMQX announces and
 * sends those hooks; providers that do not use the feature pay nothing.
 *
 * Connection identity and ordering (behaviour spec §4 and §8). Calls for one connection are
 * sequential, but two connections with the same client id overlap during a takeover or a
 * discard: the new connection's `client.authenticate` and `client.connected` usually arrive
 * before the old one's `client.disconnected`. So the store keys data by connection, not only by
 * client id. A connection is identified by `connectionKey` (src/connection.ts:
 * `node|peerhost|peerport|sockport` of its `ClientInfo` / `ConnInfo`; `peerport` is 0 before EMQX
 * 5.4, then two connections from the same host and listener look alike, and the rule below falls
 * back to event order):
 * - hooks that run before a connection is accepted (`client.connect`, `client.authenticate`,
 *   `client.connack`, `session.created`, `session.resumed`) use the *oldest not yet connected*
 *   connection with that identity, creating it if needed;
 * - `client.connected` promotes that connection to connected;
 * - every later hook of the connection (`client.authorize`, `client.subscribe`, ...) uses the
 *   *newest connected* connection with that identity;
 * - `client.disconnected` removes the *oldest connected* connection with that identity (a
 *   connection that never connected, if none), so an old connection's late disconnect never wipes
 *   the new connection's data;
 * - hooks that carry no connection (`message.publish`, `message.dropped`: only `message.from`) use
 *   the newest connected connection of that client id.
 * Connections seen before `client.connected` that never connect (failed authentication) are
 * forgotten after `pendingTtlMs`; client ids are evicted least-recently-used beyond `maxClients`.
 * Pure: no I/O, no `node:` imports.
 */
import { connectionKey, type Connection, type ConnectionFields } from "./connection.js";
import { wrapLifecycle } from "./lifecycle-hooks.js";
import type { HookHandlers } from "./provider.js";

/** Options of {@link createClientContext}. */
export interface ClientContextOptions {
  /** Most client ids tracked at once; the least recently used is evicted beyond it. Default 100 000. */
  readonly maxClients?: number;
  /**
   * How long a connection seen before `client.connected` is kept if it never connects (failed
   * authentication sends no `client.disconnected`), in ms. Default 60 000.
   */
  readonly pendingTtlMs?: number;
  /**
   * Evict a client id not touched by any hook for this long, in ms (a safety net for lost
   * `client.disconnected` calls, e.g. while this server was down). Default: none.
   */
  readonly idleTtlMs?: number;
  /** Clock, for tests. Default `Date.now`. */
  readonly now?: () => number;
}

/** Where a connection is in its life. */
export type ConnectionState = "pending" | "connected";

/** One MQTT connection of a client, with the handlers' data. */
export interface ClientConnection<T extends object = Record<string, unknown>> extends Connection {
  /** Connection identity: `connectionKey` (`node|peerhost|peerport|sockport`). */
  readonly key: string;
  readonly state: ConnectionState;
  /** `Date.now()` when the store first saw the connection. */
  readonly firstSeen: number;
  /** `Date.now()` of `client.connected`; `undefined` before it. */
  readonly connectedAt: number | undefined;
  /** The handlers' data for this connection. */
  data: Partial<T>;
}

/** A lifecycle event of the store (what the presence tracker listens to). */
export type ClientLifecycleEvent<T extends object = Record<string, unknown>> =
  | { readonly type: "connected"; readonly connection: ClientConnection<T>; readonly connectedCount: number }
  | { readonly type: "disconnected"; readonly connection: ClientConnection<T>; readonly connectedCount: number; readonly reason: string }
  | { readonly type: "evicted"; readonly clientId: string; readonly connections: readonly ClientConnection<T>[] };

/** A per-client store; see the module comment for the rules. */
export interface ClientContext<T extends object = Record<string, unknown>> {
  /**
   * Returns the handlers with `onClientConnected` / `onClientDisconnected` added (yours run after
   * the connection is registered, and before it is removed, so a disconnect handler can still read
   * the data).
   */
  wrap(handlers: HookHandlers): HookHandlers;
  /**
   * The connection a request belongs to (any hook request: it uses `clientinfo`, `conninfo` or
   * `message.from`). `undefined` when the request names no client, or only `message.from` and no
   * connection of that client is known.
   */
  of(request: object): ClientConnection<T> | undefined;
  /** The newest connected (else newest) connection of a client id. */
  get(clientId: string): ClientConnection<T> | undefined;
  /** Every known connection of a client id, oldest first. */
  connections(clientId: string): readonly ClientConnection<T>[];
  /** Registers `client.connected` (what `wrap` calls). */
  connected(info: ConnectionFields): ClientConnection<T>;
  /** Registers `client.disconnected` (what `wrap` calls); returns the connection removed. */
  disconnected(info: ConnectionFields, reason?: string): ClientConnection<T> | undefined;
  /** Listens to lifecycle events; returns a function that stops listening. */
  subscribe(listener: (event: ClientLifecycleEvent<T>) => void): () => void;
  /** Number of client ids tracked. */
  readonly size: number;
  /** Forgets everything (no events). */
  clear(): void;
}

interface Conn<T extends object> extends ClientConnection<T> {
  state: ConnectionState;
  node: string;
  username: string;
  protocol: string;
  connectedAt: number | undefined;
}

interface Entry<T extends object> {
  readonly clientId: string;
  conns: Conn<T>[];
  touched: number;
}

const PRE_CONNECTED = new Set([
  "emqx.exhook.v3.ClientConnectRequest",
  "emqx.exhook.v3.ClientConnackRequest",
  "emqx.exhook.v3.ClientAuthenticateRequest",
  "emqx.exhook.v3.SessionCreatedRequest",
  "emqx.exhook.v3.SessionResumedRequest",
]);

/** Creates a per-client context store. `T` is the shape of the data handlers keep per connection. */
export function createClientContext<T extends object = Record<string, unknown>>(options: ClientContextOptions = {}): ClientContext<T> {
  const maxClients = positive(options.maxClients, 100_000, "maxClients");
  const pendingTtl = positive(options.pendingTtlMs, 60_000, "pendingTtlMs");
  const idleTtl = options.idleTtlMs === undefined ? undefined : positive(options.idleTtlMs, 0, "idleTtlMs");
  const now = options.now ?? Date.now;
  // Insertion order = least recently used first (touch = delete + set).
  const entries = new Map<string, Entry<T>>();
  // Pending connections in creation order, for the TTL sweep.
  const pending = new Map<Conn<T>, Entry<T>>();
  const listeners = new Set<(event: ClientLifecycleEvent<T>) => void>();

  function emit(event: ClientLifecycleEvent<T>): void {
    for (const l of listeners) {
      try {
        l(event);
      } catch {
        // A listener's failure must not break the hook that triggered it.
      }
    }
  }

  function touch(clientId: string, create: boolean): Entry<T> | undefined {
    const t = now();
    sweep(t);
    let entry = entries.get(clientId);
    if (entry) {
      entries.delete(clientId);
      entries.set(clientId, entry);
      entry.touched = t;
      return entry;
    }
    if (!create) return undefined;
    entry = { clientId, conns: [], touched: t };
    entries.set(clientId, entry);
    while (entries.size > maxClients) {
      const oldest = entries.values().next().value as Entry<T>;
      evict(oldest);
    }
    return entry;
  }

  function evict(entry: Entry<T>): void {
    entries.delete(entry.clientId);
    for (const c of entry.conns) pending.delete(c);
    emit({ type: "evicted", clientId: entry.clientId, connections: entry.conns });
  }

  function sweep(t: number): void {
    for (const [conn, entry] of pending) {
      if (conn.state === "pending" && t - conn.firstSeen < pendingTtl) break;
      pending.delete(conn);
      if (conn.state === "pending") removeConn(entry, conn);
    }
    if (idleTtl !== undefined) {
      for (const entry of entries.values()) {
        if (t - entry.touched < idleTtl) break;
        evict(entry);
      }
    }
  }

  function removeConn(entry: Entry<T>, conn: Conn<T>): void {
    const i = entry.conns.indexOf(conn);
    if (i >= 0) entry.conns.splice(i, 1);
    pending.delete(conn);
    if (entry.conns.length === 0 && entries.get(entry.clientId) === entry) entries.delete(entry.clientId);
  }

  function newConn(entry: Entry<T>, info: ConnectionFields, state: ConnectionState): Conn<T> {
    const conn: Conn<T> = {
      clientId: entry.clientId,
      key: connectionKey(info),
      state,
      node: info.node ?? "",
      username: info.username ?? "",
      peerhost: info.peerhost ?? "",
      peerport: info.peerport ?? 0,
      sockport: info.sockport ?? 0,
      protocol: info.protocol ?? "",
      firstSeen: now(),
      connectedAt: undefined,
      data: {},
    };
    entry.conns.push(conn);
    if (state === "pending") pending.set(conn, entry);
    return conn;
  }

  const find = (entry: Entry<T>, key: string, state: ConnectionState, newest: boolean): Conn<T> | undefined => {
    const list = entry.conns;
    if (newest) {
      for (let i = list.length - 1; i >= 0; i--) {
        const c = list[i] as Conn<T>;
        if (c.key === key && c.state === state) return c;
      }
    } else {
      for (const c of list) if (c.key === key && c.state === state) return c;
    }
    return undefined;
  };

  const connectedCount = (entry: Entry<T>): number => entry.conns.reduce((n, c) => n + (c.state === "connected" ? 1 : 0), 0);

  function newestConnected(entry: Entry<T>): Conn<T> | undefined {
    for (let i = entry.conns.length - 1; i >= 0; i--) if ((entry.conns[i] as Conn<T>).state === "connected") return entry.conns[i];
    return entry.conns[entry.conns.length - 1];
  }

  const api: ClientContext<T> = {
    wrap(handlers) {
      return wrapLifecycle(handlers, {
        connected: (req) => void (req.clientinfo && api.connected(req.clientinfo)),
        disconnected: (req) => void (req.clientinfo && api.disconnected(req.clientinfo, req.reason)),
      });
    },
    of(request) {
      const r = request as { $typeName?: string; clientinfo?: ConnectionFields; conninfo?: ConnectionFields; message?: { from?: string } };
      const info = r.clientinfo ?? r.conninfo;
      if (info && info.clientid !== "") {
        const entry = touch(info.clientid, true) as Entry<T>;
        const key = connectionKey(info);
        if (r.$typeName !== undefined && PRE_CONNECTED.has(r.$typeName)) {
          const conn = find(entry, key, "pending", false) ?? newConn(entry, info, "pending");
          if (info.protocol) conn.protocol = info.protocol;
          return conn;
        }
        // A connection met only after it connected (this server restarted, or the store
        // evicted it) is adopted as connected, without a lifecycle event.
        return find(entry, key, "connected", true) ?? find(entry, key, "pending", true) ?? newConn(entry, info, "connected");
      }
      const from = r.message?.from;
      if (!from) return undefined;
      const entry = touch(from, false);
      return entry ? newestConnected(entry) : undefined;
    },
    get(clientId) {
      const entry = entries.get(clientId);
      return entry ? newestConnected(entry) : undefined;
    },
    connections: (clientId) => [...(entries.get(clientId)?.conns ?? [])],
    connected(info) {
      const entry = touch(info.clientid, true) as Entry<T>;
      const key = connectionKey(info);
      const conn = find(entry, key, "pending", false) ?? newConn(entry, info, "connected");
      pending.delete(conn);
      conn.state = "connected";
      conn.connectedAt = now();
      if (info.node) conn.node = info.node;
      if (info.username !== undefined) conn.username = info.username;
      if (info.protocol) conn.protocol = info.protocol;
      emit({ type: "connected", connection: conn, connectedCount: connectedCount(entry) });
      return conn;
    },
    disconnected(info, reason = "") {
      const entry = touch(info.clientid, false);
      if (!entry) return undefined;
      const key = connectionKey(info);
      const conn = find(entry, key, "connected", false) ?? find(entry, key, "pending", false);
      if (!conn) return undefined;
      const wasConnected = conn.state === "connected";
      removeConn(entry, conn);
      if (wasConnected) emit({ type: "disconnected", connection: conn, connectedCount: connectedCount(entry), reason });
      return conn;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    get size() {
      return entries.size;
    },
    clear() {
      entries.clear();
      pending.clear();
    },
  };
  return api;
}

function positive(value: number | undefined, dflt: number, name: string): number {
  if (value === undefined) return dflt;
  if (typeof value !== "number" || !(value > 0))
    throw new TypeError(`client context: ${name} must be a positive number, got ${JSON.stringify(value)}`);
  return value;
}
