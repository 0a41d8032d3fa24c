/**
 * The read API: a small JSON API served on the server's operations port (next to `/metrics` and
 * the probes; see ops/http-probes.ts for binding and the token), or standalone with
 * {@link createReadServer}.
 *
 * - `GET /messages?topic=<filter>&since=<ISO|ms>&until=<ISO|ms>&limit=<n>&order=asc|desc`
 * - `GET /presence?clientid=<id>&online=true|false&limit=<n>`
 * - `GET /stats` (counters of the use cases)
 *
 * Queries are bounded so a reader cannot starve the hooks: at most `maxConcurrentQueries` run at
 * once (more get 503 at once), each stops after `queryTimeoutMs` (503), and a `/messages` answer
 * stops adding messages once their payloads reach `maxResponseBytes` (`truncated: true`). On
 * SQLite the queries run in the store's scan thread, on PostgreSQL on a pool of their own.
 */
import type { OpsRequest, OpsResponse } from "../provider.js";
import { createOpsServer, type OpsServer } from "../ops/http-probes.js";
import { topicFilterError } from "../topic.js";
import type { MessageQuery, PresenceState, Store, StoredMessage } from "./store.js";

/** A stored message as JSON. */
export interface MessageJson {
  readonly id: string;
  readonly topic: string;
  /** The payload as UTF-8 text when it is valid UTF-8, else base64. */
  readonly payload: string;
  readonly payloadEncoding: "utf8" | "base64";
  readonly qos: number;
  readonly publisher: string;
  readonly username: string;
  readonly node: string;
  readonly timestamp: string;
  readonly storedAt: string;
  readonly headers: Readonly<Record<string, string>>;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Renders a stored message as JSON. */
export function messageJson(m: StoredMessage): MessageJson {
  let payload: string;
  let payloadEncoding: "utf8" | "base64" = "utf8";
  try {
    payload = utf8.decode(m.payload);
  } catch {
    payload = Buffer.from(m.payload).toString("base64");
    payloadEncoding = "base64";
  }
  return {
    id: m.id,
    topic: m.topic,
    payload,
    payloadEncoding,
    qos: m.qos,
    publisher: m.publisher,
    username: m.username,
    node: m.node,
    timestamp: new Date(m.timestamp).toISOString(),
    storedAt: new Date(m.storedAt).toISOString(),
    headers: m.headers,
  };
}

/** Presence as JSON (times as ISO strings). */
export function presenceJson(p: PresenceState): Record<string, unknown> {
  return { ...p, since: new Date(p.since).toISOString() };
}

/** Parses an ISO 8601 time or milliseconds since the epoch; throws naming `name`. */
export function parseTime(value: string, name: string): number {
  const ms = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isFinite(ms))
    throw new RangeError(
      `${name} must be an ISO 8601 time (2024-05-01T12:00:00Z) or milliseconds since the epoch, got ${JSON.stringify(value)}`,
    );
  return ms;
}

/** Builds a message query from string parameters (HTTP query or CLI flags); throws RangeError on a bad one. */
export function messageQueryFrom(params: {
  topic?: string | undefined;
  since?: string | undefined;
  until?: string | undefined;
  limit?: string | undefined;
  order?: string | undefined;
}): MessageQuery {
  const filter = params.topic || "#";
  const err = topicFilterError(filter);
  if (err) throw new RangeError(`topic ${JSON.stringify(filter)} is not a valid MQTT topic filter: ${err}`);
  const limit = params.limit === undefined || params.limit === "" ? 100 : Number(params.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
    throw new RangeError(`limit must be an integer from 1 to 10000, got ${JSON.stringify(params.limit)}`);
  if (params.order !== undefined && params.order !== "" && params.order !== "asc" && params.order !== "desc") {
    throw new RangeError(`order must be "asc" or "desc", got ${JSON.stringify(params.order)}`);
  }
  return {
    filter,
    limit,
    ...(params.since ? { since: parseTime(params.since, "since") } : {}),
    ...(params.until ? { until: parseTime(params.until, "until") } : {}),
    ...(params.order ? { order: params.order as "asc" | "desc" } : {}),
  };
}

/** Options of {@link createReadApi}. */
export interface ReadApiOptions {
  readonly store: Store;
  /** What `GET /stats` returns. */
  readonly stats?: () => unknown;
  /** Called before a message query runs, e.g. to flush queued messages so they are visible. */
  readonly beforeQuery?: () => Promise<void>;
  /** A query running longer is stopped and answered 503, in ms. Default 5000. */
  readonly queryTimeoutMs?: number;
  /** Queries running at once; more are answered 503 at once. Default 2. */
  readonly maxConcurrentQueries?: number;
  /** A `/messages` answer stops adding messages once their payloads reach this many bytes. Default 16 MiB. */
  readonly maxResponseBytes?: number;
}

/** The read API as routes of the operations port. */
export interface ReadApi {
  readonly http: (req: OpsRequest) => Promise<OpsResponse | undefined>;
  readonly paths: readonly string[];
}

/** The paths the read API answers. */
export const READ_API_PATHS: readonly string[] = ["/messages", "/presence", "/stats"];

/** Creates the read API's request handler. */
export function createReadApi(options: ReadApiOptions): ReadApi {
  const { store } = options;
  const timeoutMs = options.queryTimeoutMs ?? 5000;
  const maxConcurrent = options.maxConcurrentQueries ?? 2;
  const maxBytes = options.maxResponseBytes ?? 16 * 1024 * 1024;
  let running = 0;
  const ok = (body: unknown): OpsResponse => ({ status: 200, body });

  async function answer(req: OpsRequest): Promise<OpsResponse | undefined> {
    const q = (k: string) => req.query[k];
    if (req.path === "/stats") return ok(options.stats?.() ?? {});
    if (req.path !== "/messages" && req.path !== "/presence") return undefined;
    if (running >= maxConcurrent) {
      return { status: 503, body: { error: `busy: ${running} queries are running (http.maxConcurrentQueries); retry shortly` } };
    }
    running++;
    try {
      if (req.path === "/messages") {
        const query = {
          ...messageQueryFrom({ topic: q("topic"), since: q("since"), until: q("until"), limit: q("limit"), order: q("order") }),
          timeoutMs,
          maxBytes,
        };
        // Make messages accepted so far visible, without waiting on a store that is failing.
        await options.beforeQuery?.();
        const messages = await store.queryMessages(query);
        const bytes = messages.reduce((n, m) => n + m.payload.byteLength, 0);
        return ok({
          messages: messages.map(messageJson),
          ...(bytes >= maxBytes && messages.length < query.limit ? { truncated: true } : {}),
        });
      }
      const id = q("clientid");
      if (id !== undefined) {
        const p = await store.getPresence(id);
        return ok({ clients: p ? [presenceJson(p)] : [] });
      }
      const online = q("online");
      if (online !== undefined && online !== "true" && online !== "false")
        throw new RangeError(`online must be "true" or "false", got ${JSON.stringify(online)}`);
      const limit = q("limit") === undefined ? 1000 : Number(q("limit"));
      if (!Number.isInteger(limit) || limit < 1 || limit > 100_000)
        throw new RangeError(`limit must be an integer from 1 to 100000, got ${JSON.stringify(q("limit"))}`);
      const list = await store.listPresence({ ...(online !== undefined ? { online: online === "true" } : {}), limit, timeoutMs });
      return ok({ clients: list.map(presenceJson) });
    } finally {
      running--;
    }
  }

  return {
    paths: READ_API_PATHS,
    http: (req) =>
      answer(req).catch((err: unknown): OpsResponse => {
        if (err instanceof RangeError) return { status: 400, body: { error: err.message } };
        // A query past its time, or a store that is down or busy: the client may retry.
        return {
          status: 503,
          body: {
            error: (err as Error).message,
            ...((err as { code?: unknown }).code === "QUERY_TIMEOUT" ? { code: "QUERY_TIMEOUT" } : {}),
          },
        };
      }),
  };
}

/** Options of {@link createReadServer}. */
export interface ReadServerOptions extends ReadApiOptions {
  /** Default "127.0.0.1". */
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Bearer token required (needed when `host` is not loopback). */
  readonly token?: string;
}

/** A running standalone read server: an operations server serving the read API. */
export type ReadServer = OpsServer;

/**
 * The read API on a port of its own (with `/healthz` and `/readyz`), for programs that assemble
 * the use cases themselves. The stack serves it on the server's operations port instead.
 */
export function createReadServer(options: ReadServerOptions): ReadServer {
  const api = createReadApi(options);
  return createOpsServer({
    port: options.port,
    ...(options.host !== undefined ? { host: options.host } : {}),
    ...(options.token !== undefined ? { token: options.token } : {}),
    source: { readiness: async () => ({ ready: true, reasons: [], loadedNodes: 0 }), http: api.http, paths: api.paths },
  });
}
