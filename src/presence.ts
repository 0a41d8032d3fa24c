/**
 * Presence: who is online, since when, from which node and address, with `online` / `offline`
 * change events a provider can forward (webhook, queue, database). Built on the per-client
 * context, so it follows the same connection rules: a client is online while at least one of its
 * connections is connected. A session takeover or discard therefore keeps the client online
 * (the new connection's `client.connected` arrives before the old one's `client.disconnected`),
 * and a late `client.disconnected` of an old connection does not take it offline.
 *
 * In memory and pure (no `node:`). To keep presence elsewhere (a database, Redis), implement
 * {@link PresenceSink} and pass it in `sinks`: every transition is forwarded to it.
 */
import {
  createClientContext,
  type ClientConnection,
  type ClientContext,
  type ClientContextOptions,
  type ClientLifecycleEvent,
} from "./client-context.js";
import type { HookHandlers } from "./provider.js";

/** What is known about an online client. */
export interface PresenceRecord {
  readonly clientId: string;
  readonly username: string;
  /** EMQX node of the current connection. */
  readonly node: string;
  readonly peerhost: string;
  /** 0 before EMQX 5.4. */
  readonly peerport: number;
  /** Listener port. */
  readonly sockport: number;
  /** `mqtt`, `mqtt-sn`, ... */
  readonly protocol: string;
  /** `Date.now()` when the client came online (kept across takeovers). */
  readonly since: number;
  /** `Date.now()` when the current connection connected. */
  readonly connectedAt: number;
  /** Connected connections right now (2 while a takeover is in flight). */
  readonly connections: number;
}

/** A presence change. */
export type PresenceEvent =
  | { readonly type: "online"; readonly clientId: string; readonly at: number; readonly record: PresenceRecord }
  | { readonly type: "offline"; readonly clientId: string; readonly at: number; readonly record: PresenceRecord; readonly reason: string };

/**
 * Where presence changes go. Implement it to persist presence (the storage-backed tracker plugs
 * in here). Calls are not awaited: a slow sink never delays EMQX; a failing one is reported to
 * `onSinkError`.
 */
export interface PresenceSink {
  online(record: PresenceRecord): void | Promise<void>;
  offline(record: PresenceRecord, reason: string): void | Promise<void>;
}

/** Options of {@link createPresence}. */
export interface PresenceOptions extends ClientContextOptions {
  /** Share an existing client context (default: a new one made with these options). */
  readonly clients?: ClientContext<any>;
  /** Sinks told about every change. */
  readonly sinks?: readonly PresenceSink[];
  /** Called when a sink throws or rejects. Default: ignored. */
  readonly onSinkError?: (err: unknown, event: PresenceEvent) => void;
  /** Events buffered per `events()` iterator before the oldest are dropped. Default 1000. */
  readonly bufferSize?: number;
}

/** The presence tracker. */
export interface Presence {
  /** The client context it listens to. */
  readonly clients: ClientContext<any>;
  /** Adds the connected/disconnected hooks to a provider's handlers (same as `clients.wrap`). */
  wrap(handlers: HookHandlers): HookHandlers;
  isOnline(clientId: string): boolean;
  get(clientId: string): PresenceRecord | undefined;
  /** Every online client. */
  list(): PresenceRecord[];
  /** Number of online clients. */
  readonly count: number;
  /** Calls `listener` on every change; returns a function that stops it. */
  onChange(listener: (event: PresenceEvent) => void): () => void;
  /** The changes as an async iterator (from now on); `return()` or `signal` stops it. */
  events(signal?: AbortSignal): AsyncIterableIterator<PresenceEvent>;
}

interface Online {
  since: number;
  record: PresenceRecord;
}

/** Creates a presence tracker. Add it to a provider with `defineProvider(presence.wrap(handlers))`. */
export function createPresence(options: PresenceOptions = {}): Presence {
  const clients = options.clients ?? createClientContext(options);
  const sinks = options.sinks ?? [];
  const bufferSize = options.bufferSize ?? 1000;
  const online = new Map<string, Online>();
  const listeners = new Set<(event: PresenceEvent) => void>();

  function recordOf(conn: ClientConnection<any>, since: number, connections: number): PresenceRecord {
    return Object.freeze({
      clientId: conn.clientId,
      username: conn.username,
      node: conn.node,
      peerhost: conn.peerhost,
      peerport: conn.peerport,
      sockport: conn.sockport,
      protocol: conn.protocol,
      since,
      connectedAt: conn.connectedAt ?? since,
      connections,
    });
  }

  function publish(event: PresenceEvent): void {
    for (const sink of sinks) {
      try {
        const r = event.type === "online" ? sink.online(event.record) : sink.offline(event.record, event.reason);
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

  clients.subscribe((e: ClientLifecycleEvent<any>) => {
    if (e.type === "connected") {
      const cur = online.get(e.connection.clientId);
      const at = e.connection.connectedAt ?? Date.now();
      if (cur) {
        // Takeover/discard in flight: still online, now at the new connection.
        cur.record = recordOf(e.connection, cur.since, e.connectedCount);
        return;
      }
      const record = recordOf(e.connection, at, e.connectedCount);
      online.set(e.connection.clientId, { since: at, record });
      publish({ type: "online", clientId: record.clientId, at, record });
    } else if (e.type === "disconnected") {
      const cur = online.get(e.connection.clientId);
      if (!cur) return;
      if (e.connectedCount > 0) {
        const remaining = clients.get(e.connection.clientId);
        if (remaining) cur.record = recordOf(remaining, cur.since, e.connectedCount);
        return;
      }
      online.delete(e.connection.clientId);
      const record = recordOf(e.connection, cur.since, 0);
      publish({ type: "offline", clientId: record.clientId, at: Date.now(), record, reason: e.reason });
    } else {
      const cur = online.get(e.clientId);
      if (!cur) return;
      online.delete(e.clientId);
      const record = { ...cur.record, connections: 0 };
      publish({ type: "offline", clientId: e.clientId, at: Date.now(), record, reason: "evicted" });
    }
  });

  return {
    clients,
    wrap: (handlers) => clients.wrap(handlers),
    isOnline: (id) => online.has(id),
    get: (id) => online.get(id)?.record,
    list: () => [...online.values()].map((o) => o.record),
    get count() {
      return online.size;
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
      const off = this.onChange((e) => {
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
}
