/**
 * A decision cache for any provider: a hook middleware that remembers `client.authorize` (and, if
 * asked, `client.authenticate`) answers, so an expensive decision (a database or HTTP lookup) is
 * made once per client, action and topic for a while, and that forgets them on demand.
 *
 * - **Key**: hook + client id + the rest of the client's identity (username, peer address, listener
 *   port, certificate CN/DN, mountpoint, node, protocol, the broker's superuser/anonymous flags and
 *   input result) + action and topic (authorize) or a keyed digest of the password (authenticate:
 *   HMAC-SHA256 under a per-process random key; the password itself is never kept).
 * - **Lifetime**: an allow lives `ttlMs`, a deny or no-opinion `negativeTtlMs`; each entry is made
 *   up to `jitter` (a fraction) shorter at random, so entries made in one burst do not expire in one
 *   burst. Fallback answers (timeouts, errors, invalid answers) are never cached.
 * - **Bound**: at most `maxEntries` entries, least recently used client evicted first (`lru-cache`).
 * - **Invalidation**: `invalidate({ scope: "all" | "user" | "client", key })`, in O(1). An answer
 *   being computed while an invalidation happens is not stored (it may predate the change). With
 *   `perConnection` (default), a client's authenticate call drops its cached authorize answers: a
 *   new connection may carry new rights (a JWT `acl` claim, a superuser flag).
 *
 * This cache is local to the process. To share invalidations across `--workers` and instances (and
 * with the CLI), feed it from an invalidation hub (`createInvalidationHub`).
 */
import { createHmac, randomBytes } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { ClientInfo } from "../../gen/emqx/exhook/v3/exhook_pb.js";
import type { HookCall, HookMiddleware, HookOutcome } from "../provider.js";
import type { AccessDecision } from "../responses.js";

/** The hooks whose answers can be cached (their answer depends only on the request). */
export type CacheableHook = "onClientAuthenticate" | "onClientAuthorize";

/** What to forget. */
export type CacheInvalidation = { readonly scope: "all" } | { readonly scope: "user" | "client"; readonly key: string };

/** Options of {@link createDecisionCache}. */
export interface DecisionCacheOptions {
  /** How long an allow is kept, in ms. Default 60 000 (EMQX's own authorization cache TTL). */
  readonly ttlMs?: number;
  /** How long a deny or no-opinion is kept, in ms. Default 5000; 0 = never. */
  readonly negativeTtlMs?: number;
  /** Each entry lives up to this fraction shorter, at random (0..1). Default 0.1. */
  readonly jitter?: number;
  /** Most entries kept. Default 100 000. */
  readonly maxEntries?: number;
  /** Most entries kept for one client id (oldest dropped first). Default 1000. */
  readonly maxPerClient?: number;
  /** Which hooks are cached. Default `["onClientAuthorize"]`. */
  readonly hooks?: readonly CacheableHook[];
  /** Extra key material your decision depends on beyond the request (e.g. a tenant from context). */
  readonly identity?: (call: HookCall) => string;
  /** Drop a client's authorize answers when it authenticates again. Default true. */
  readonly perConnection?: boolean;
  /** Clock, for tests. Default `Date.now`. */
  readonly now?: () => number;
  /** Randomness for the jitter, for tests. Default `Math.random`. */
  readonly random?: () => number;
}

/** Counters of a {@link DecisionCache}. */
export interface DecisionCacheStats {
  readonly hits: number;
  readonly misses: number;
  /** Answers stored. */
  readonly stored: number;
  /** Answers not stored: fallbacks, or an invalidation happened while they were computed. */
  readonly notStored: number;
  /** Lookups that found an entry older than an invalidation of its user or connection. */
  readonly stale: number;
  readonly invalidations: { readonly all: number; readonly user: number; readonly client: number };
  /** Entries kept now (including expired ones not yet looked at). */
  readonly entries: number;
}

/** What {@link createDecisionCache} returns. */
export interface DecisionCache {
  /** Put it in `defineProvider(handlers, { middleware: [cache.middleware] })`. */
  readonly middleware: HookMiddleware;
  /** Forgets cached answers (this process only; see the module comment). */
  invalidate(what: CacheInvalidation): void;
  stats(): DecisionCacheStats;
}

interface Entry {
  readonly outcome: HookOutcome;
  readonly expiresAt: number;
  readonly username: string;
  readonly userGen: number;
  /** The client's connection generation when stored (authorize entries only check it). */
  readonly conn: number;
  readonly authorize: boolean;
}

interface Bucket {
  readonly entries: Map<string, Entry>;
  conn: number;
}

const SEP = "\u0000";

/** Creates a decision cache. */
export function createDecisionCache(options: DecisionCacheOptions = {}): DecisionCache {
  const ttl = options.ttlMs ?? 60_000;
  const negTtl = options.negativeTtlMs ?? 5_000;
  const jitter = Math.min(1, Math.max(0, options.jitter ?? 0.1));
  const maxEntries = options.maxEntries ?? 100_000;
  const maxPerClient = options.maxPerClient ?? 1000;
  const hooks = new Set<string>(options.hooks ?? ["onClientAuthorize"]);
  const perConnection = options.perConnection ?? true;
  const identity = options.identity;
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  for (const [name, v] of [
    ["ttlMs", ttl],
    ["negativeTtlMs", negTtl],
    ["maxEntries", maxEntries],
    ["maxPerClient", maxPerClient],
  ] as const) {
    if (!Number.isFinite(v) || v < 0) throw new Error(`createDecisionCache: ${name} must be a non-negative number, got ${v}`);
  }
  for (const h of hooks) {
    if (h !== "onClientAuthenticate" && h !== "onClientAuthorize")
      throw new Error(`createDecisionCache: hooks: ${JSON.stringify(h)} cannot be cached (onClientAuthenticate, onClientAuthorize)`);
  }
  const digestKey = randomBytes(32);
  const buckets = new LRUCache<string, Bucket>({ maxSize: Math.max(1, maxEntries), sizeCalculation: (b) => Math.max(1, b.entries.size) });
  /** Usernames invalidated since the last `all`, with their generation. */
  const userGens = new Map<string, number>();
  /** Bumped by every invalidation: an answer computed across one is not stored. */
  let epoch = 0;
  const counts = { hits: 0, misses: 0, stored: 0, notStored: 0, stale: 0 };
  const inv = { all: 0, user: 0, client: 0 };

  function keyOf(call: HookCall, ci: ClientInfo | undefined, authorize: boolean): string {
    const r = call.request as { clientinfo?: ClientInfo; type?: number; topic?: string; result?: boolean };
    let k =
      (authorize ? "z" : "n") +
      SEP +
      (ci?.username ?? "") +
      SEP +
      (ci?.peerhost ?? "") +
      SEP +
      (ci?.sockport ?? 0) +
      SEP +
      (ci?.cn ?? "") +
      SEP +
      (ci?.dn ?? "") +
      SEP +
      (ci?.mountpoint ?? "") +
      SEP +
      (ci?.node ?? "") +
      SEP +
      (ci?.protocol ?? "") +
      SEP +
      (ci?.isSuperuser ? 1 : 0) +
      (ci?.anonymous ? 1 : 0) +
      (r.result ? 1 : 0);
    if (authorize) k += SEP + (r.type ?? 0) + SEP + (r.topic ?? "");
    else
      k +=
        SEP +
        createHmac("sha256", digestKey)
          .update(ci?.password ?? "")
          .digest("base64");
    if (identity) k += SEP + identity(call);
    return k;
  }

  function lookup(bucket: Bucket | undefined, key: string, username: string): Entry | undefined {
    const e = bucket?.entries.get(key);
    if (!e) return undefined;
    if (e.expiresAt <= now()) {
      (bucket as Bucket).entries.delete(key);
      return undefined;
    }
    if (e.userGen !== (userGens.get(username) ?? 0) || (e.authorize && e.conn !== (bucket as Bucket).conn)) {
      (bucket as Bucket).entries.delete(key);
      counts.stale++;
      return undefined;
    }
    return e;
  }

  function store(
    clientId: string,
    key: string,
    outcome: HookOutcome,
    username: string,
    userGen: number,
    conn: number,
    authorize: boolean,
  ): void {
    const d = outcome.decision as AccessDecision | undefined;
    const life = d?.kind === "allow" ? ttl : negTtl;
    if (outcome.fallback !== undefined || d === undefined || life <= 0) {
      counts.notStored++;
      return;
    }
    let bucket = buckets.get(clientId);
    if (!bucket) bucket = { entries: new Map(), conn };
    if (bucket.entries.size >= maxPerClient) bucket.entries.delete(bucket.entries.keys().next().value as string);
    bucket.entries.set(key, {
      outcome: { decision: d },
      expiresAt: now() + life * (1 - jitter * random()),
      username,
      userGen,
      conn,
      authorize,
    });
    // Re-insert so the LRU re-measures the bucket (it does not when the same object is set again).
    buckets.delete(clientId);
    buckets.set(clientId, bucket);
    counts.stored++;
  }

  const middleware: HookMiddleware = (call, next) => {
    const authorize = call.key === "onClientAuthorize";
    const ci = (call.request as { clientinfo?: ClientInfo }).clientinfo;
    const clientId = call.clientId;
    if (!authorize && call.key === "onClientAuthenticate" && perConnection && hooks.has("onClientAuthorize")) {
      const b = buckets.peek(clientId);
      // A new bucket too: an authorize of the old connection still being answered must not be stored.
      if (b) b.conn++;
      else buckets.set(clientId, { entries: new Map(), conn: 1 });
    }
    if (!hooks.has(call.key)) return next();
    const username = ci?.username ?? "";
    const key = keyOf(call, ci, authorize);
    const bucket = buckets.get(clientId);
    const hit = lookup(bucket, key, username);
    if (hit) {
      counts.hits++;
      return Promise.resolve(hit.outcome);
    }
    counts.misses++;
    const startEpoch = epoch;
    const userGen = userGens.get(username) ?? 0;
    const conn = bucket?.conn ?? 0;
    return next().then((outcome) => {
      const b = buckets.peek(clientId);
      // Not stored when an invalidation (or the client's new authenticate) happened meanwhile.
      if (epoch !== startEpoch || (b !== undefined && b.conn !== conn) || (b === undefined && bucket !== undefined)) counts.notStored++;
      else store(clientId, key, outcome, username, userGen, conn, authorize);
      return outcome;
    });
  };

  return {
    middleware,
    invalidate(what) {
      epoch++;
      if (what.scope === "all" || (what.scope === "user" && userGens.size >= maxEntries)) {
        inv.all++;
        buckets.clear();
        userGens.clear();
      } else if (what.scope === "user") {
        inv.user++;
        userGens.set(what.key, (userGens.get(what.key) ?? 0) + 1);
      } else if (what.scope === "client") {
        inv.client++;
        buckets.delete(what.key);
      } else {
        throw new Error(`DecisionCache.invalidate: unknown scope ${JSON.stringify((what as { scope: unknown }).scope)}`);
      }
    },
    stats: () => ({ ...counts, invalidations: { ...inv }, entries: buckets.calculatedSize }),
  };
}
