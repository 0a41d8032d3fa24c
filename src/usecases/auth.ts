/**
 * The authentication use case: MQTT username/password checked against users in the store, with
 * scrypt hashes, optional per-user client-id patterns, and a configurable answer for unknown users.
 *
 * Hot path: a small cache keeps each user's record for `cacheTtlMs` together with keyed digests
 * (HMAC-SHA256 under a per-process random key) of passwords that verified, so a reconnecting client
 * costs one HMAC instead of one scrypt. Changes made through this process (`addUser`,
 * `removeUser` on the authenticator) invalidate at once; changes made elsewhere (the CLI, another
 * instance) are seen within `cacheTtlMs`.
 */
import { createHmac, randomBytes } from "node:crypto";
import type { HookHandler, Logger } from "../provider.js";
import { allow, deny, noOpinion, type AccessDecision } from "../responses.js";
import { DEFAULT_SCRYPT, hashPassword, needsRehash, verifyPassword, type ScryptParams } from "./password.js";
import type { Store, UserRecord } from "./store.js";

/** Options of {@link createAuthenticator}. */
export interface AuthenticatorOptions {
  readonly store: Store;
  /** Answer for a username that is not in the store (and for an empty username). Default `"deny"`. */
  readonly unknownUser?: "deny" | "no-opinion";
  /** How long a user record and its verified passwords are trusted, in ms. Default 10000; 0 = no cache. */
  readonly cacheTtlMs?: number;
  /** Parameters for new hashes; older hashes are rehashed on the next good login. Default {@link DEFAULT_SCRYPT}. */
  readonly scrypt?: ScryptParams;
  /** Most users kept in the cache. Default 10000. */
  readonly cacheMaxUsers?: number;
  /** Receives one debug line per decision (username and outcome, never the password). */
  readonly logger?: Logger;
}

/** Why a login was refused or let through. */
export type AuthOutcome = "ok" | "bad-password" | "unknown-user" | "clientid-not-allowed";

/** What {@link createAuthenticator} returns. */
export interface Authenticator {
  /** Checks one login. */
  check(username: string, password: string, clientId: string): Promise<{ decision: AccessDecision; outcome: AuthOutcome }>;
  /** The `onClientAuthenticate` handler. */
  readonly handler: HookHandler<"onClientAuthenticate">;
  /** Forgets cached state of one user (or all). */
  invalidate(username?: string): void;
  /** Counts of outcomes since start. */
  stats(): Readonly<Record<AuthOutcome, number>>;
}

interface CacheEntry {
  user: UserRecord | undefined;
  fetchedAt: number;
  verified: string[];
}

/** Compiles client-id patterns (`*` = any run of characters, everything else literal). */
export function compileClientIdPatterns(patterns: readonly string[]): (clientId: string) => boolean {
  if (patterns.length === 0) return () => true;
  const res = patterns.map((p) => new RegExp(`^${p.split("*").map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`, "s"));
  return (id) => res.some((re) => re.test(id));
}

/** Creates the authenticator. */
export function createAuthenticator(options: AuthenticatorOptions): Authenticator {
  const { store, logger } = options;
  const unknown = options.unknownUser ?? "deny";
  const ttl = options.cacheTtlMs ?? 10_000;
  const maxUsers = options.cacheMaxUsers ?? 10_000;
  const params = options.scrypt ?? DEFAULT_SCRYPT;
  const key = randomBytes(32);
  const cache = new Map<string, CacheEntry>();
  const counts: Record<AuthOutcome, number> = { ok: 0, "bad-password": 0, "unknown-user": 0, "clientid-not-allowed": 0 };
  const digest = (username: string, password: string) => createHmac("sha256", key).update(username).update("\0").update(password).digest("base64");

  async function entryFor(username: string): Promise<CacheEntry> {
    const now = Date.now();
    const hit = cache.get(username);
    if (hit && now - hit.fetchedAt < ttl) return hit;
    const user = await store.getUser(username);
    // Keep verified digests only while the hash they were checked against is unchanged.
    const verified = hit && user && hit.user?.passwordHash === user.passwordHash ? hit.verified : [];
    const entry: CacheEntry = { user, fetchedAt: now, verified };
    if (ttl > 0) {
      cache.delete(username);
      cache.set(username, entry);
      if (cache.size > maxUsers) cache.delete(cache.keys().next().value as string);
    }
    return entry;
  }

  const result = (username: string, outcome: AuthOutcome, decision: AccessDecision) => {
    counts[outcome]++;
    logger?.debug({ username, outcome, decision: decision.kind }, "authenticate");
    return { decision, outcome };
  };

  async function check(username: string, password: string, clientId: string) {
    if (username === "") return result(username, "unknown-user", unknown === "deny" ? deny() : noOpinion());
    const entry = await entryFor(username);
    const user = entry.user;
    if (!user) return result(username, "unknown-user", unknown === "deny" ? deny() : noOpinion());
    if (!compileClientIdPatterns(user.clientIds)(clientId)) return result(username, "clientid-not-allowed", deny());
    const d = ttl > 0 ? digest(username, password) : "";
    if (ttl > 0 && entry.verified.includes(d)) return result(username, "ok", allow());
    if (!(await verifyPassword(password, user.passwordHash))) return result(username, "bad-password", deny());
    if (ttl > 0) {
      entry.verified.push(d);
      if (entry.verified.length > 4) entry.verified.shift();
    }
    if (needsRehash(user.passwordHash, params)) {
      // Upgrade old parameters in the background; a failure only means trying again next login.
      void hashPassword(password, params)
        .then((passwordHash) => store.putUser({ ...user, passwordHash, updatedAt: Date.now() }))
        .then(() => cache.delete(username))
        .catch((err: unknown) => logger?.warn({ username, err: (err as Error).message }, "password rehash failed"));
    }
    return result(username, "ok", allow());
  }

  return {
    check,
    handler: async ({ clientinfo }) => (await check(clientinfo?.username ?? "", clientinfo?.password ?? "", clientinfo?.clientid ?? "")).decision,
    invalidate(username) {
      if (username === undefined) cache.clear();
      else cache.delete(username);
    },
    stats: () => ({ ...counts }),
  };
}

/** Why a username cannot be stored, or `undefined` when it can. */
export function usernameError(username: string): string | undefined {
  if (username.length === 0) return "a username must not be empty";
  if (username.length > 256) return "a username must be at most 256 characters";
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this rejects
  if (/[\u0000-\u001f\u007f]/.test(username)) return "a username must not contain control characters";
  return undefined;
}

/** Creates or replaces a user with a freshly hashed password. Throws on an invalid username. */
export async function addUser(
  store: Store,
  username: string,
  password: string,
  options: { readonly clientIds?: readonly string[]; readonly scrypt?: ScryptParams } = {},
): Promise<UserRecord> {
  const err = usernameError(username);
  if (err) throw new Error(err);
  if (password.length === 0) throw new Error("a password must not be empty");
  const now = Date.now();
  const existing = await store.getUser(username);
  const user: UserRecord = {
    username,
    passwordHash: await hashPassword(password, options.scrypt ?? DEFAULT_SCRYPT),
    clientIds: [...(options.clientIds ?? [])],
    createdAt: existing?.createdAt ?? now,
    updatedAt: now,
  };
  await store.putUser(user);
  return user;
}
