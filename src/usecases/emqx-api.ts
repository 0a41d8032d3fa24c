/**
 * Tells EMQX about access changes through its REST API (5.x/6.x, `/api/v5`), so its own
 * per-connection authorization cache (1 minute by default) does not keep answering with what this
 * server said before:
 *
 * - rules changed, or everything invalidated: `DELETE /api/v5/authorization/cache` (every client's
 *   authorization cache, cluster-wide);
 * - one client: `DELETE /api/v5/clients/{clientid}/authorization/cache`, or with `kick`
 *   `DELETE /api/v5/clients/{clientid}` (disconnects it: it must log in again);
 * - one user: the same for each of its clients, found with `GET /api/v5/clients?username=...`.
 *
 * Authentication: an EMQX API key and secret (Dashboard > System > API Keys) as HTTP Basic. A 404
 * (client already gone) counts as done. Every other failure (status, network, timeout) is logged
 * and counted, never retried: EMQX's cache expires by itself within its TTL.
 */
import type { Logger } from "../provider.js";
import type { InvalidationScope } from "./store.js";

/** Options of {@link createEmqxNotifier}. */
export interface EmqxNotifierOptions {
  /** EMQX's HTTP API base, e.g. `http://emqx:18083` (`/api/v5/...` is appended). */
  readonly url: string;
  readonly apiKey: string;
  readonly apiSecret: string;
  /** What to do with a changed user's (or client's) connections. Default `"clear-cache"`. */
  readonly onUserChange?: "clear-cache" | "kick";
  /** Per request, in ms. Default 2000. */
  readonly timeoutMs?: number;
  readonly logger?: Logger;
}

/** Counters of a notifier. */
export interface EmqxNotifierStats {
  readonly requests: number;
  readonly failures: number;
}

/** What {@link createEmqxNotifier} returns. */
export interface EmqxNotifier {
  /** Tells EMQX; never rejects (failures are logged and counted). */
  notify(scope: InvalidationScope, key: string): Promise<void>;
  stats(): EmqxNotifierStats;
}

/** Most clients of one user handled per change (pages of 1000). */
const MAX_USER_CLIENTS = 10_000;

/** Creates a notifier for one EMQX cluster. */
export function createEmqxNotifier(options: EmqxNotifierOptions): EmqxNotifier {
  const base = options.url.replace(/\/+$/, "") + "/api/v5";
  const auth = "Basic " + Buffer.from(`${options.apiKey}:${options.apiSecret}`).toString("base64");
  const timeoutMs = options.timeoutMs ?? 2000;
  const kick = options.onUserChange === "kick";
  const { logger } = options;
  const counts = { requests: 0, failures: 0 };

  async function request(method: "GET" | "DELETE", path: string): Promise<unknown> {
    counts.requests++;
    let res: Response;
    try {
      res = await fetch(base + path, {
        method,
        headers: { authorization: auth, accept: "application/json" },
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      counts.failures++;
      logger?.warn({ method, path, err: (err as Error).message }, "EMQX API request failed; its authorization cache expires by itself");
      return undefined;
    }
    if (res.status === 404 && method === "DELETE") return null;
    if (!res.ok) {
      counts.failures++;
      const body = (await res.text().catch(() => "")).slice(0, 200);
      logger?.warn({ method, path, status: res.status, body }, "EMQX API refused the request; its authorization cache expires by itself");
      return undefined;
    }
    return method === "GET" ? res.json().catch(() => undefined) : null;
  }

  const forClient = (clientId: string) =>
    request("DELETE", `/clients/${encodeURIComponent(clientId)}${kick ? "" : "/authorization/cache"}`);

  async function clientsOf(username: string): Promise<string[]> {
    const ids: string[] = [];
    for (let page = 1; ids.length < MAX_USER_CLIENTS; page++) {
      const body = (await request("GET", `/clients?username=${encodeURIComponent(username)}&limit=1000&page=${page}`)) as
        | { data?: Array<{ clientid?: unknown }>; meta?: { hasnext?: boolean } }
        | undefined;
      if (!body || !Array.isArray(body.data)) break;
      for (const c of body.data) if (typeof c.clientid === "string") ids.push(c.clientid);
      if (!body.meta?.hasnext || body.data.length === 0) break;
    }
    return ids;
  }

  return {
    async notify(scope, key) {
      if (scope === "all" || scope === "rules") await request("DELETE", "/authorization/cache");
      else if (scope === "client") await forClient(key);
      else for (const id of await clientsOf(key)) await forClient(id);
    },
    stats: () => ({ ...counts }),
  };
}
