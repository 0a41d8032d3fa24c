/**
 * The HTTP read path: a small JSON API on its own port (default 127.0.0.1:9010, no authentication —
 * keep it on localhost or behind a proxy that authenticates).
 *
 * - `GET /messages?topic=<filter>&since=<ISO|ms>&until=<ISO|ms>&limit=<n>&order=asc|desc`
 * - `GET /presence?clientid=<id>&online=true|false&limit=<n>`
 * - `GET /stats` (counters of the use cases), `GET /healthz`
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
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
  if (!Number.isFinite(ms)) throw new RangeError(`${name} must be an ISO 8601 time (2024-05-01T12:00:00Z) or milliseconds since the epoch, got ${JSON.stringify(value)}`);
  return ms;
}

/** Builds a message query from string parameters (HTTP query or CLI flags); throws RangeError on a bad one. */
export function messageQueryFrom(params: { topic?: string | undefined; since?: string | undefined; until?: string | undefined; limit?: string | undefined; order?: string | undefined }): MessageQuery {
  const filter = params.topic || "#";
  const err = topicFilterError(filter);
  if (err) throw new RangeError(`topic ${JSON.stringify(filter)} is not a valid MQTT topic filter: ${err}`);
  const limit = params.limit === undefined || params.limit === "" ? 100 : Number(params.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new RangeError(`limit must be an integer from 1 to 10000, got ${JSON.stringify(params.limit)}`);
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

/** Options of {@link createReadServer}. */
export interface ReadServerOptions {
  readonly store: Store;
  /** Default "127.0.0.1". */
  readonly host?: string;
  /** Default 9010; 0 picks a free port. */
  readonly port?: number;
  /** What `GET /stats` returns. */
  readonly stats?: () => unknown;
  /** Called before a query runs, e.g. to flush queued messages so they are visible. */
  readonly beforeQuery?: () => Promise<void>;
}

/** The running read server. */
export interface ReadServer {
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
  readonly server: http.Server;
}

/** Creates the HTTP read server (call `listen()`). */
export function createReadServer(options: ReadServerOptions): ReadServer {
  const { store } = options;
  const send = (res: http.ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) });
    res.end(text);
  };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const q = (k: string) => url.searchParams.get(k) ?? undefined;
    if (req.method !== "GET") return send(res, 405, { error: "only GET" });
    void (async () => {
      try {
        if (url.pathname === "/messages") {
          const query = messageQueryFrom({ topic: q("topic"), since: q("since"), until: q("until"), limit: q("limit"), order: q("order") });
          await options.beforeQuery?.();
          send(res, 200, { messages: (await store.queryMessages(query)).map(messageJson) });
        } else if (url.pathname === "/presence") {
          const id = q("clientid");
          if (id !== undefined) {
            const p = await store.getPresence(id);
            return send(res, 200, { clients: p ? [presenceJson(p)] : [] });
          }
          const online = q("online");
          if (online !== undefined && online !== "true" && online !== "false") throw new RangeError(`online must be "true" or "false", got ${JSON.stringify(online)}`);
          const limit = q("limit") === undefined ? 1000 : Number(q("limit"));
          if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${JSON.stringify(q("limit"))}`);
          const list = await store.listPresence({ ...(online !== undefined ? { online: online === "true" } : {}), limit });
          send(res, 200, { clients: list.map(presenceJson) });
        } else if (url.pathname === "/stats") {
          send(res, 200, options.stats?.() ?? {});
        } else if (url.pathname === "/healthz") {
          send(res, 200, { ok: true });
        } else {
          send(res, 404, { error: "not found; try /messages, /presence, /stats" });
        }
      } catch (err) {
        if (err instanceof RangeError) send(res, 400, { error: err.message });
        else send(res, 500, { error: (err as Error).message });
      }
    })();
  });
  return {
    server,
    listen: () =>
      new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(options.port ?? 9010, options.host ?? "127.0.0.1", () => {
          server.off("error", reject);
          resolve(server.address() as AddressInfo);
        });
      }),
    close: () =>
      new Promise((resolve) => {
        if (!server.listening) return resolve();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
