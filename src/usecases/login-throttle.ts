/**
 * Failed-login rate limiting with exponential backoff, per peer host and per username, built so a
 * stranger cannot lock a real user out:
 *
 * - Every failed login counts against its peer host, its username and the pair. After `freeFailures`
 *   failures a key is blocked for `baseDelayMs`, doubling with each further failure up to
 *   `maxDelayMs`. A blocked attempt is refused at once, without a password hash, and does not count
 *   (so it does not extend the block). A key's failures are forgotten `forgetAfterMs` after its last
 *   failure.
 * - A pair (username, peer host) that logged in successfully within `trustTtlMs` is *trusted*: the
 *   host and username limits do not apply to it, only the pair's own limit (a success resets it).
 *   So an attack on alice's name from elsewhere, or a misconfigured device behind alice's NAT,
 *   never blocks alice on the address she logs in from; at worst it delays alice's first login from
 *   a new address, and only while the attack goes on plus at most `maxDelayMs`.
 *
 * Memory is bounded (`maxKeys` per table, least recently failed evicted). State is per process:
 * with `serve --workers N` each worker counts its own connections (EMQX sends all calls of one
 * client over one connection, so one client's attempts meet one worker).
 */

/** Limits of one kind of key. */
export interface ThrottleLimit {
  /** Failures allowed before the first block. */
  readonly freeFailures: number;
  /** First block, in ms; doubles with every further failure. */
  readonly baseDelayMs: number;
  /** Longest block, in ms. */
  readonly maxDelayMs: number;
}

/** Options of {@link createLoginThrottle}. */
export interface LoginThrottleOptions {
  /** Per peer host (any username). `false` = off (e.g. behind a proxy that hides client addresses). */
  readonly perHost: ThrottleLimit | false;
  /** Per username, from hosts not trusted for it. `false` = off. */
  readonly perUser: ThrottleLimit | false;
  /** Per (username, host) pair, trusted or not. */
  readonly perPair: ThrottleLimit;
  /** Failures of a key are forgotten this long after its last failure, in ms. */
  readonly forgetAfterMs: number;
  /** How long a successful (username, host) pair stays trusted, in ms. */
  readonly trustTtlMs: number;
  /** Most keys per table. */
  readonly maxKeys: number;
  /** Clock, for tests. Default `Date.now`. */
  readonly now?: () => number;
  /** Called when a key becomes blocked (not for every refused attempt), e.g. to log it. */
  readonly onBlock?: (info: {
    readonly kind: "host" | "user" | "pair";
    readonly key: string;
    readonly failures: number;
    readonly forMs: number;
  }) => void;
}

/** The answer of {@link LoginThrottle.check}. */
export type ThrottleVerdict =
  | { readonly allowed: true; readonly trusted: boolean }
  | { readonly allowed: false; readonly by: "host" | "user" | "pair"; readonly retryAfterMs: number };

/** What {@link createLoginThrottle} returns. */
export interface LoginThrottle {
  /** Whether an attempt may be checked now. `host` "" = unknown (no host limit). */
  check(username: string, host: string): ThrottleVerdict;
  /** Records a failed attempt. */
  failure(username: string, host: string): void;
  /** Records a successful attempt: the pair becomes trusted and its own failures are forgotten. */
  success(username: string, host: string): void;
  /** Whether the pair is trusted (a recent success). */
  trusted(username: string, host: string): boolean;
  /** Forgets everything about a username (e.g. after an operator reset its password). */
  forgetUser(username: string): void;
  stats(): { readonly blockedHosts: number; readonly blockedUsers: number; readonly blockedPairs: number; readonly trustedPairs: number };
}

interface Counter {
  failures: number;
  last: number;
  blockedUntil: number;
}

const pairKey = (username: string, host: string) => `${host}\u0000${username}`;

/** Creates a login throttle. */
export function createLoginThrottle(options: LoginThrottleOptions): LoginThrottle {
  const now = options.now ?? Date.now;
  const hosts = new Map<string, Counter>();
  const users = new Map<string, Counter>();
  const pairs = new Map<string, Counter>();
  const trust = new Map<string, number>();

  const live = (table: Map<string, Counter>, key: string, t: number): Counter | undefined => {
    const c = table.get(key);
    if (c && t - c.last > options.forgetAfterMs) {
      table.delete(key);
      return undefined;
    }
    return c;
  };

  function bump(table: Map<string, Counter>, key: string, limit: ThrottleLimit, kind: "host" | "user" | "pair", t: number): void {
    let c = live(table, key, t);
    if (c) table.delete(key);
    else c = { failures: 0, last: t, blockedUntil: 0 };
    c.failures++;
    c.last = t;
    table.set(key, c);
    if (table.size > options.maxKeys) table.delete(table.keys().next().value as string);
    if (c.failures > limit.freeFailures) {
      const forMs = Math.min(limit.baseDelayMs * 2 ** Math.min(c.failures - limit.freeFailures - 1, 30), limit.maxDelayMs);
      const wasBlocked = c.blockedUntil > t;
      c.blockedUntil = t + forMs;
      if (!wasBlocked) options.onBlock?.({ kind, key, failures: c.failures, forMs });
    }
  }

  const blocked = (table: Map<string, Counter>, key: string, t: number): number => {
    const c = live(table, key, t);
    return c && c.blockedUntil > t ? c.blockedUntil - t : 0;
  };

  function isTrusted(username: string, host: string, t: number): boolean {
    const at = trust.get(pairKey(username, host));
    if (at === undefined) return false;
    if (t - at > options.trustTtlMs) {
      trust.delete(pairKey(username, host));
      return false;
    }
    return true;
  }

  const countBlocked = (table: Map<string, Counter>) => {
    const t = now();
    let n = 0;
    for (const c of table.values()) if (c.blockedUntil > t) n++;
    return n;
  };

  return {
    check(username, host) {
      const t = now();
      let wait = blocked(pairs, pairKey(username, host), t);
      if (wait > 0) return { allowed: false, by: "pair", retryAfterMs: wait };
      const trusted = isTrusted(username, host, t);
      if (trusted) return { allowed: true, trusted };
      if (options.perHost && host !== "" && (wait = blocked(hosts, host, t)) > 0) return { allowed: false, by: "host", retryAfterMs: wait };
      if (options.perUser && (wait = blocked(users, username, t)) > 0) return { allowed: false, by: "user", retryAfterMs: wait };
      return { allowed: true, trusted };
    },
    failure(username, host) {
      const t = now();
      bump(pairs, pairKey(username, host), options.perPair, "pair", t);
      if (options.perHost && host !== "") bump(hosts, host, options.perHost, "host", t);
      if (options.perUser) bump(users, username, options.perUser, "user", t);
    },
    success(username, host) {
      const key = pairKey(username, host);
      pairs.delete(key);
      trust.delete(key);
      trust.set(key, now());
      if (trust.size > options.maxKeys) trust.delete(trust.keys().next().value as string);
    },
    trusted: (username, host) => isTrusted(username, host, now()),
    forgetUser(username) {
      users.delete(username);
      const suffix = `\u0000${username}`;
      for (const k of [...pairs.keys()]) if (k.endsWith(suffix)) pairs.delete(k);
      for (const k of [...trust.keys()]) if (k.endsWith(suffix)) trust.delete(k);
    },
    stats: () => ({
      blockedHosts: countBlocked(hosts),
      blockedUsers: countBlocked(users),
      blockedPairs: countBlocked(pairs),
      trustedPairs: trust.size,
    }),
  };
}
