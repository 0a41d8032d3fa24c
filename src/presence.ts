/**
 * Presence: who is online, since when, on which node and from where, derived from
 * `client.connected` / `client.disconnected`. One set of rules, two keepers:
 * - {@link createMemoryPresence} (here): in this process, synchronous reads, change events to
 *   listeners, sinks and async iterators;
 * - `createStoredPresence` (`emqx-exhook/usecases`): in a SQLite or PostgreSQL store shared by
 *   several ExHook instances, with a webhook.
 * Both keep one {@link ConnectionRecord} per connection identity (`connectionKey`) and apply
 * {@link recordConnected} / {@link recordDisconnected} / {@link derivePresence} below.
 *
 * The rules. EMQX sends no connection id and may deliver a connection's `disconnected` before its
 * `connected` (several gRPC connections in its pool, several ExHook instances), and before EMQX
 * 5.4 every connection of a client id from one host to one listener has the same identity. So a
 * record counts events instead of holding one connection: `live` = connects minus disconnects seen
 * for that identity. A client is online while any record has `live > 0`. This gets right:
 * - a takeover (new `connected` before or after the old `disconnected`), also from the same host
 *   and port: 1, 2, 1 stays online;
 * - a quick reconnect from the same address:port (every reconnect before EMQX 5.4): connect,
 *   disconnect, connect 2 s later = 1, 0, 1 is online;
 * - a `disconnected` that arrives before its own `connected`: -1, then 0, so the late connect does
 *   not bring the ended connection back. A debt (`live < 0`) older than the reorder window is
 *   forgotten at the next connect: its connect was lost (this server was down), not late.
 * Limit: a `disconnected` missed while this server was down leaves the client shown online until
 * the next event of that connection identity.
 *
 * Pure: no I/O, no `node:` imports.
 */
import { connectionKey, connectionOf, type Connection } from "./connection.js";
import { wrapLifecycle, type LifecycleContext, type LifecycleRequest } from "./lifecycle-hooks.js";
import type { HookHandlers } from "./provider.js";

/** The presence of one client id, with the details of its current (online) or last (offline) connection. */
export interface PresenceState extends Connection {
  readonly online: boolean;
  /** Online: when the current connection connected; offline: when the last one ended (ms since epoch). */
  readonly since: number;
  /** Live connections (more than 1 only while a takeover is in flight). */
  readonly connections: number;
  /** Offline: the disconnect reason EMQX gave. */
  readonly reason?: string;
}

/** A presence change: the client came online or went offline. */
export interface PresenceEvent {
  readonly type: "online" | "offline";
  readonly clientId: string;
  /** When the event that changed it was seen (ms since epoch). */
  readonly at: number;
  /** The state after the change (`state.reason` says why it went offline). */
  readonly state: PresenceState;
}

/** What a keeper stores per connection identity of a client id. */
export interface ConnectionRecord extends Connection {
  /** `connectionKey` of the connection. */
  readonly key: string;
  /** Connects minus disconnects seen: > 0 live, < 0 a disconnect still waiting for its own connect. */
  readonly live: number;
  /** Time of the last connect seen, `null` before the first one. */
  readonly connectedAt: number | null;
  /** Time of the last disconnect seen, `null` before the first one. */
  readonly disconnectedAt: number | null;
  /** Reason of the last disconnect ("" before one). */
  readonly reason: string;
}

/** Default time a disconnect waits for its own late connect, in ms. */
export const DEFAULT_REORDER_WINDOW_MS = 30_000;

/** The record after a `client.connected` of `conn` at `at` (`prev`: the record of that identity, if any). */
export function recordConnected(
  prev: ConnectionRecord | undefined,
  conn: Connection,
  at: number,
  reorderWindowMs: number,
): ConnectionRecord {
  let base = prev?.live ?? 0;
  // A debt older than the window is a lost connect, not a late one.
  if (base < 0 && (prev?.disconnectedAt ?? at) < at - reorderWindowMs) base = 0;
  return {
    ...conn,
    key: connectionKey(conn),
    live: base + 1,
    connectedAt: at,
    disconnectedAt: prev?.disconnectedAt ?? null,
    reason: prev?.reason ?? "",
  };
}

/** The record after a `client.disconnected` of `conn` at `at` with EMQX's `reason`. */
export function recordDisconnected(prev: ConnectionRecord | undefined, conn: Connection, at: number, reason: string): ConnectionRecord {
  return {
    ...(prev ?? conn),
    key: connectionKey(conn),
    live: (prev?.live ?? 0) - 1,
    connectedAt: prev?.connectedAt ?? null,
    disconnectedAt: at,
    reason,
  };
}

/**
 * The presence of a client from its records: online while any is live, shown with the live one that
 * connected last; offline, with the one that ended last. `undefined` when nothing ended or lives.
 */
export function derivePresence(records: Iterable<ConnectionRecord>): PresenceState | undefined {
  let current: ConnectionRecord | undefined;
  let connections = 0;
  let last: ConnectionRecord | undefined;
  for (const r of records) {
    if (r.live > 0) {
      connections += r.live;
      const at = r.connectedAt ?? 0;
      const cur = current?.connectedAt ?? 0;
      if (!current || at > cur || (at === cur && r.key > current.key)) current = r;
    } else if (r.disconnectedAt !== null && (!last || r.disconnectedAt > (last.disconnectedAt as number))) {
      last = r;
    }
  }
  const row = current ?? last;
  if (!row) return undefined;
  const base = {
    clientId: row.clientId,
    node: row.node,
    username: row.username,
    peerhost: row.peerhost,
    peerport: row.peerport,
    sockport: row.sockport,
    protocol: row.protocol,
    online: current !== undefined,
    since: current ? (current.connectedAt as number) : (row.disconnectedAt as number),
    connections,
  };
  return current ? base : { ...base, reason: row.reason };
}

/**
 * Where changes of the in-memory tracker go, e.g. a database or a queue. Calls are not awaited: a
 * slow sink never delays EMQX; a failing one is reported to `onSinkError`.
 */
export interface PresenceSink {
  online(state: PresenceState): void | Promise<void>;
  offline(state: PresenceState): void | Promise<void>;
}

/** Options of {@link createMemoryPresence}. */
export interface MemoryPresenceOptions {
  /** Sinks told about every change. Default: none. */
  readonly sinks?: readonly PresenceSink[];
  /** Called when a sink throws or rejects. Default: ignored. */
  readonly onSinkError?: (err: unknown, event: PresenceEvent) => void;
  /** Events buffered per `events()` iterator before the oldest are dropped. Default 1000. */
  readonly bufferSize?: number;
  /** How long a disconnect waits for its own late connect, in ms. Default 30 000. */
  readonly reorderWindowMs?: number;
  /**
   * Most client ids tracked at once; beyond it the least recently changed is forgotten (and, when
   * online, reported offline with reason `evicted`). Default 100 000.
   */
  readonly maxClients?: number;
  /** Clock, for tests. Default `Date.now`. */
  readonly now?: () => number;
}

/** The in-memory presence tracker. */
export interface MemoryPresence {
  /** Adds the connected/disconnected hooks to a provider's handlers (yours keep running). */
  wrap(handlers: HookHandlers): HookHandlers;
  /** Records a `client.connected` (what `wrap` calls); `node` is used when `clientinfo.node` is empty. */
  connected(clientinfo: LifecycleRequest["clientinfo"], node?: string): void;
  /** Records a `client.disconnected` (what `wrap` calls). */
  disconnected(clientinfo: LifecycleRequest["clientinfo"], reason?: string, node?: string): void;
  isOnline(clientId: string): boolean;
  /** The state of an online client; `undefined` when it is offline or unknown. */
  get(clientId: string): PresenceState | undefined;
  /** Every online client. */
  list(): PresenceState[];
  /** Number of online clients. */
  readonly count: number;
  /** Calls `listener` on every change; returns a function that stops it. */
  onChange(listener: (event: PresenceEvent) => void): () => void;
  /** The changes as an async iterator (from now on); `return()` or `signal` stops it. */
  events(signal?: AbortSignal): AsyncIterableIterator<PresenceEvent>;
}

interface Client {
  readonly records: Map<string, ConnectionRecord>;
  state: PresenceState | undefined;
}

/** Creates an in-memory presence tracker. Add it to a provider with `defineProvider(presence.wrap(handlers))`. */
export function createMemoryPresence(options: MemoryPresenceOptions = {}): MemoryPresence {
  const sinks = options.sinks ?? [];
  const bufferSize = options.bufferSize ?? 1000;
  const window = options.reorderWindowMs ?? DEFAULT_REORDER_WINDOW_MS;
  const maxClients = options.maxClients ?? 100_000;
  if (!(maxClients > 0)) throw new TypeError(`presence: maxClients must be a positive number, got ${JSON.stringify(maxClients)}`);
  const now = options.now ?? Date.now;
  // Insertion order = least recently changed first (a change = delete + set).
  const clients = new Map<string, Client>();
  let online = 0;
  const listeners = new Set<(event: PresenceEvent) => void>();

  function publish(event: PresenceEvent): void {
    for (const sink of sinks) {
      try {
        const r = event.type === "online" ? sink.online(event.state) : sink.offline(event.state);
        if (r && typeof r.then === "function") r.then(undefined, (err: unknown) => options.onSinkError?.(err, event));
      } catch (err) {
        options.onSinkError?.(err, event);
      }
    }
    for (const l of listeners) {
      try {
        l(event);
      } catch {
        // Listener failures must not break the hook call.
      }
    }
  }

  function apply(conn: Connection, at: number, update: (prev: ConnectionRecord | undefined) => ConnectionRecord): void {
    if (conn.clientId === "") return;
    const client = clients.get(conn.clientId) ?? { records: new Map<string, ConnectionRecord>(), state: undefined };
    clients.delete(conn.clientId);
    const key = connectionKey(conn);
    const next = update(client.records.get(key));
    client.records.set(key, next);
    const wasOnline = client.state?.online ?? false;
    const state = derivePresence(client.records.values());
    client.state = state?.online ? state : undefined;
    // Only live connections and disconnects still waiting for their connect are worth keeping.
    for (const [k, r] of client.records) {
      if (r.live === 0 || (r.live < 0 && (r.disconnectedAt as number) < at - window)) client.records.delete(k);
    }
    if (client.records.size > 0) clients.set(conn.clientId, client);
    if (state && state.online !== wasOnline) {
      online += state.online ? 1 : -1;
      publish({ type: state.online ? "online" : "offline", clientId: conn.clientId, at, state });
    }
    while (clients.size > maxClients) {
      const [id, oldest] = clients.entries().next().value as [string, Client];
      clients.delete(id);
      if (oldest.state) {
        online--;
        const state: PresenceState = { ...oldest.state, online: false, since: at, connections: 0, reason: "evicted" };
        publish({ type: "offline", clientId: id, at, state });
      }
    }
  }

  const api: MemoryPresence = {
    wrap: (handlers) =>
      wrapLifecycle(handlers, {
        connected: (req: LifecycleRequest, ctx: LifecycleContext) =>
          api.connected(req.clientinfo, req.clientinfo?.node || ctx.broker?.node),
        disconnected: (req: LifecycleRequest, ctx: LifecycleContext) =>
          api.disconnected(req.clientinfo, req.reason, req.clientinfo?.node || ctx.broker?.node),
      }),
    connected(clientinfo, node) {
      const conn = connectionOf(clientinfo, node);
      const at = now();
      apply(conn, at, (prev) => recordConnected(prev, conn, at, window));
    },
    disconnected(clientinfo, reason = "", node) {
      const conn = connectionOf(clientinfo, node);
      const at = now();
      apply(conn, at, (prev) => recordDisconnected(prev, conn, at, reason));
    },
    isOnline: (id) => clients.get(id)?.state !== undefined,
    get: (id) => clients.get(id)?.state,
    list: () => {
      const out: PresenceState[] = [];
      for (const c of clients.values()) if (c.state) out.push(c.state);
      return out;
    },
    get count() {
      return online;
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    events(signal) {
      const queue: PresenceEvent[] = [];
      let wake: ((r: IteratorResult<PresenceEvent>) => void) | undefined;
      let done = false;
      const stop = (): void => {
        if (done) return;
        done = true;
        off();
        signal?.removeEventListener("abort", stop);
        wake?.({ value: undefined, done: true });
        wake = undefined;
      };
      const off = api.onChange((e) => {
        if (wake) {
          const w = wake;
          wake = undefined;
          w({ value: e, done: false });
          return;
        }
        queue.push(e);
        if (queue.length > bufferSize) queue.shift();
      });
      if (signal?.aborted) stop();
      else signal?.addEventListener("abort", stop, { once: true });
      const it: AsyncIterableIterator<PresenceEvent> = {
        next() {
          const e = queue.shift();
          if (e) return Promise.resolve({ value: e, done: false });
          if (done) return Promise.resolve({ value: undefined, done: true });
          return new Promise((resolve) => (wake = resolve));
        },
        return() {
          stop();
          return Promise.resolve({ value: undefined, done: true });
        },
        [Symbol.asyncIterator]() {
          return it;
        },
      };
      return it;
    },
  };
  return api;
}
