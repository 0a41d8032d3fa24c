/**
 * The authentication use case: MQTT username/password checked against users in the store (scrypt,
 * or a format imported from EMQX / Mosquitto, see password.ts), optional per-user client-id
 * patterns, optional JWT authentication, and a configurable answer for unknown users.
 *
 * Built so that password checking cannot be turned against real users:
 * - **Bounded, fair hashing.** Every hash runs through a fair queue (fair-queue.ts): at most
 *   `hashing.concurrency` at once, waiting jobs served round-robin per peer address, logins of a
 *   (username, address) pair that succeeded before served first. A flood of wrong passwords waits
 *   behind itself. A job whose call is gone (`ctx.signal`) or whose budget (`ctx.deadline`) cannot
 *   be met is dropped before it runs, so no scrypt is spent on answers nobody waits for.
 * - **Failed-login throttling** per peer host and per username, with backoff (login-throttle.ts);
 *   a throttled attempt is refused without hashing, and pairs that logged in before are exempt from
 *   the host and username limits, so a stranger cannot lock a real user out.
 * - **Equal work for unknown users**: an unknown username is checked against a dummy scrypt hash
 *   made with the current parameters, and a user whose hash is much cheaper than scrypt (an
 *   imported MD5/SHA format) also pays the dummy hash; the client-id patterns are checked only after
 *   the password, so the answer's timing does not tell whether a username exists.
 * - **Bounded inputs**: usernames over `maxUsernameLength` and client ids over `maxClientIdLength`
 *   are refused at once; client-id patterns are matched by a linear glob matcher (glob.ts).
 *
 * Hot path: a small cache keeps each user's record for `cacheTtlMs` together with keyed digests
 * (HMAC-SHA256 under a per-process random key) of passwords that verified, so a reconnecting client
 * costs one HMAC instead of one scrypt. Changes made through this authenticator (`addUser`,
 * `removeUser`, `setSuperuser`) invalidate at once; changes made elsewhere (the CLI, another
 * instance) are seen within `cacheTtlMs`, or at once when the deployment calls `invalidate(username)`
 * (the seam for a shared invalidation channel).
 *
 * Per connection: a successful login records a {@link ClientAuth} (username, superuser, JWT ACL
 * rules and expiry) in the client context, so the authorization side can read it for the same
 * connection with `clientAuth(request)` / `isSuperuser(request)`.
 */
import { createHmac, randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import { createClientContext, type ClientContext } from "../client-context.js";
import type { HookHandler, Logger } from "../provider.js";
import { allow, deny, noOpinion, type AccessDecision } from "../responses.js";
import type { AclRule } from "./acl.js";
import { createFairQueue, QueueRefusedError, type FairQueue } from "./fair-queue.js";
import { compileGlobs, type GlobMatcher } from "./glob.js";
import { createJwtVerifier, looksLikeJwt, type JwtVerifier, type JwtVerifierOptions } from "./jwt.js";
import { createLoginThrottle, type LoginThrottle, type LoginThrottleOptions, type ThrottleLimit } from "./login-throttle.js";
import { DEFAULT_SCRYPT, hashFormatOf, hashPassword, isCheapHash, needsRehash, verifyPassword, type ScryptParams } from "./password.js";
import type { Store, UserRecord } from "./store.js";

/** What authentication recorded for one connection (read by the authorization side). */
export interface ClientAuth {
  readonly username: string;
  /** Allowed everything without rules. */
  readonly superuser: boolean;
  /** How the client authenticated. */
  readonly via: "password" | "jwt";
  /** ACL rules from the token's ACL claim (JWT only), plain objects validated like configured rules. */
  readonly acl: readonly AclRule[] | undefined;
  /** When the token expires (JWT with `exp`), ms since the epoch. */
  readonly expiresAt: number | undefined;
}

/** The per-connection data the authenticator keeps in a client context. */
export interface AuthClientData {
  auth: ClientAuth;
}

/** Failed-login throttling settings (see login-throttle.ts); each limit `false` = off. */
export interface AuthThrottleOptions {
  readonly perHost?: ThrottleLimit | false;
  readonly perUser?: ThrottleLimit | false;
  readonly perPair?: ThrottleLimit;
  readonly forgetAfterMs?: number;
  readonly trustTtlMs?: number;
  readonly maxKeys?: number;
}

/** Defaults of {@link AuthThrottleOptions}. */
export const DEFAULT_THROTTLE: Readonly<Omit<LoginThrottleOptions, "now" | "onBlock">> = Object.freeze({
  perHost: { freeFailures: 20, baseDelayMs: 1000, maxDelayMs: 60_000 },
  perUser: { freeFailures: 5, baseDelayMs: 1000, maxDelayMs: 30_000 },
  perPair: { freeFailures: 5, baseDelayMs: 1000, maxDelayMs: 60_000 },
  forgetAfterMs: 15 * 60_000,
  trustTtlMs: 7 * 24 * 3_600_000,
  maxKeys: 100_000,
});

/** Options of {@link createAuthenticator}. */
export interface AuthenticatorOptions {
  readonly store: Store;
  /** Answer for a username that is not in the store (and for an empty username). Default `"deny"`. */
  readonly unknownUser?: "deny" | "no-opinion";
  /** How long a user record and its verified passwords are trusted, in ms. Default 10000; 0 = no cache. */
  readonly cacheTtlMs?: number;
  /** Parameters for new hashes. Default {@link DEFAULT_SCRYPT}. */
  readonly scrypt?: ScryptParams;
  /**
   * Rehash on the next good login a hash that is not scrypt with the current parameters (older
   * parameters, or an imported format). Default true. Turn it off to keep imported hashes as they
   * are (e.g. to move users back to EMQX with `users export`).
   */
  readonly rehash?: boolean;
  /** Most users kept in the cache. Default 10000. */
  readonly cacheMaxUsers?: number;
  /** Longest accepted username; longer ones are refused without a lookup. Default 256 (the longest a user can have). */
  readonly maxUsernameLength?: number;
  /** Longest accepted client id; longer ones are refused. Default 1024. */
  readonly maxClientIdLength?: number;
  /** Hash jobs at once, waiting-job bounds. Default concurrency: {@link defaultHashConcurrency}. */
  readonly hashing?: { readonly concurrency?: number; readonly maxQueued?: number; readonly maxQueuedPerPeer?: number };
  /** Failed-login throttling; `false` turns it off. Default {@link DEFAULT_THROTTLE}. */
  readonly throttle?: AuthThrottleOptions | false;
  /** JWT authentication: tokens (`eyJ...`) in the password (or username) are verified instead of the store. */
  readonly jwt?:
    | (JwtVerifierOptions & {
        /** Where the token is. Default `"password"` (EMQX's default). */
        readonly from?: "password" | "username";
        /** Longer tokens are refused without a check. Default 16384. */
        readonly maxTokenLength?: number;
      })
    | undefined;
  /** Where per-connection results are kept. Default: a context of its own (wrap your handlers with `clients.wrap`). */
  readonly clients?: ClientContext<AuthClientData>;
  /**
   * Called after this authenticator removed a user, changed its password or its superuser flag
   * (the invalidation seam: a decision cache or another instance can subscribe through it).
   */
  readonly onUserChanged?: (username: string) => void;
  /** Receives one debug line per decision (username and outcome, never the password) and every failure path. */
  readonly logger?: Logger;
}

/** Why a login was refused or let through. */
export type AuthOutcome =
  | "ok"
  | "bad-password"
  | "unknown-user"
  | "clientid-not-allowed"
  /** Refused without a check: too many recent failures for this host, username or pair. */
  | "throttled"
  /** Refused without a check: too many hash jobs waiting. */
  | "overloaded"
  /** The call was gone or out of time before its hash could run. */
  | "abandoned"
  /** Username or client id longer than the limits. */
  | "invalid-input"
  /** An invalid JWT (signature, expiry, claims). */
  | "bad-token";

/** The result of one check. */
export interface AuthResult {
  readonly decision: AccessDecision;
  readonly outcome: AuthOutcome;
  /** Set when the login succeeded. */
  readonly client?: ClientAuth;
}

/** Per-check options. */
export interface AuthCheckOptions {
  /** The client's address (`ClientInfo.peerhost`): the key of fair queuing and host throttling. */
  readonly peerhost?: string;
  /** Aborted when nobody waits for the answer any more (`ctx.signal`). */
  readonly signal?: AbortSignal | undefined;
  /** When the answer stops being useful (`ctx.deadline`, `Date.now()` ms). */
  readonly deadline?: number | undefined;
}

/** What {@link createAuthenticator} returns. */
export interface Authenticator {
  /** Checks one login. */
  check(username: string, password: string, clientId: string, options?: AuthCheckOptions): Promise<AuthResult>;
  /** The `onClientAuthenticate` handler (records the result in `clients` for the connection). */
  readonly handler: HookHandler<"onClientAuthenticate">;
  /** The per-connection context the handler records into. */
  readonly clients: ClientContext<AuthClientData>;
  /** What authentication recorded for the connection of any hook request (`clientinfo`/`conninfo`). */
  clientAuth(request: object): ClientAuth | undefined;
  /** Whether the connection of a hook request logged in as a superuser. */
  isSuperuser(request: object): boolean;
  /** Forgets cached state of one user (or all): call it when a user changed elsewhere. */
  invalidate(username?: string): void;
  /** Creates or replaces a user (see {@link addUser}), invalidates and reports the change. */
  addUser(username: string, password: string, options?: AddUserOptions): Promise<UserRecord>;
  /** Removes a user, invalidates and reports the change. */
  removeUser(username: string): Promise<boolean>;
  /** Counts of outcomes since start, and the hashing queue, throttle and JWKS counters. */
  stats(): AuthStats;
  /** Refuses waiting hash jobs and stops timers (the JWKS refresh). */
  close(): void;
}

/** Counters of an authenticator. */
export interface AuthStats extends Readonly<Record<AuthOutcome, number>> {
  readonly hashing: ReturnType<FairQueue["stats"]>;
  readonly throttle: ReturnType<LoginThrottle["stats"]> | undefined;
  readonly jwt: ReturnType<JwtVerifier["stats"]> | undefined;
  readonly rehashed: number;
}

interface CacheEntry {
  user: UserRecord | undefined;
  clientIds: GlobMatcher;
  fetchedAt: number;
  verified: string[];
}

/** Compiles client-id patterns (`*` = any run of characters, everything else literal); linear time (glob.ts). */
export function compileClientIdPatterns(patterns: readonly string[]): (clientId: string) => boolean {
  return compileGlobs(patterns);
}

const OUTCOMES: readonly AuthOutcome[] = [
  "ok",
  "bad-password",
  "unknown-user",
  "clientid-not-allowed",
  "throttled",
  "overloaded",
  "abandoned",
  "invalid-input",
  "bad-token",
];

/**
 * Hash jobs at once by default: one per core but one (that core stays free for the event loop, which
 * answers every other hook: hashing on all cores made answers miss EMQX's deadline), at least 1,
 * at most 3 (libuv's default pool has 4 threads, and file and DNS work needs one too).
 */
export function defaultHashConcurrency(): number {
  return Math.max(1, Math.min(3, availableParallelism() - 1));
}

/** Creates the authenticator. */
export function createAuthenticator(options: AuthenticatorOptions): Authenticator {
  const { store, logger } = options;
  const unknown = options.unknownUser ?? "deny";
  const ttl = options.cacheTtlMs ?? 10_000;
  const maxUsers = options.cacheMaxUsers ?? 10_000;
  const params = options.scrypt ?? DEFAULT_SCRYPT;
  const rehash = options.rehash ?? true;
  const maxUsername = options.maxUsernameLength ?? 256;
  const maxClientId = options.maxClientIdLength ?? 1024;
  const key = randomBytes(32);
  const cache = new Map<string, CacheEntry>();
  const counts = Object.fromEntries(OUTCOMES.map((o) => [o, 0])) as Record<AuthOutcome, number>;
  let rehashed = 0;
  const digest = (username: string, password: string) =>
    createHmac("sha256", key).update(username).update("\0").update(password).digest("base64");
  const clients = options.clients ?? createClientContext<AuthClientData>();
  const queue = createFairQueue({
    concurrency: options.hashing?.concurrency || defaultHashConcurrency(),
    maxQueued: options.hashing?.maxQueued ?? 1000,
    maxQueuedPerKey: options.hashing?.maxQueuedPerPeer ?? 32,
    // A first login from an address not seen lately does not wait for a running hash of a flood.
    expressSlots: 1,
  });
  const throttle =
    options.throttle === false
      ? undefined
      : createLoginThrottle({
          ...DEFAULT_THROTTLE,
          ...options.throttle,
          onBlock: ({ kind, key: k, failures, forMs }) =>
            logger?.warn(
              { [kind]: kind === "pair" ? k.replace("\u0000", " / ") : k, failures, blockedForMs: forMs },
              "failed logins: throttling",
            ),
        });
  const jwt = options.jwt ? createJwtVerifier({ ...options.jwt, ...(logger ? { logger } : {}) }) : undefined;
  const jwtFrom = options.jwt?.from ?? "password";
  const maxToken = options.jwt?.maxTokenLength ?? 16_384;
  // The dummy hash for unknown users: made once, with the current parameters (same cost as a real one).
  const dummy = hashPassword(randomBytes(16).toString("hex"), params);
  dummy.catch(() => {});
  let lastOverloadLog = 0;

  async function entryFor(username: string): Promise<CacheEntry> {
    const now = Date.now();
    const hit = cache.get(username);
    if (hit && now - hit.fetchedAt < ttl) return hit;
    const user = await store.getUser(username);
    // Keep verified digests only while the hash they were checked against is unchanged.
    const verified = hit && user && hit.user?.passwordHash === user.passwordHash ? hit.verified : [];
    const entry: CacheEntry = { user, clientIds: compileGlobs(user?.clientIds ?? []), fetchedAt: now, verified };
    if (ttl > 0) {
      cache.delete(username);
      cache.set(username, entry);
      if (cache.size > maxUsers) cache.delete(cache.keys().next().value as string);
    }
    return entry;
  }

  const result = (username: string, outcome: AuthOutcome, decision: AccessDecision, client?: ClientAuth): AuthResult => {
    counts[outcome]++;
    logger?.debug({ username, outcome, decision: decision.kind }, "authenticate");
    return client ? { decision, outcome, client } : { decision, outcome };
  };
  const unknownAnswer = () => (unknown === "deny" ? deny() : noOpinion());

  /** Runs one password verification in the fair queue; `undefined` when the queue refused it. */
  async function verifyQueued(
    username: string,
    password: string,
    hash: string | undefined,
    host: string,
    priority: 0 | 1,
    opts: AuthCheckOptions,
  ): Promise<boolean | QueueRefusedError> {
    try {
      return await queue.run(
        host || `user:${username}`,
        async () => {
          if (hash === undefined) {
            await verifyPassword(password, await dummy);
            return false;
          }
          const ok = await verifyPassword(password, hash);
          // A hash much cheaper than scrypt would tell by its speed that the user exists.
          if (isCheapHash(hash)) await verifyPassword(password, await dummy);
          return ok;
        },
        { priority, signal: opts.signal, deadline: opts.deadline },
      );
    } catch (err) {
      if (err instanceof QueueRefusedError) return err;
      throw err;
    }
  }

  function refused(username: string, err: QueueRefusedError): AuthResult {
    if (err.reason === "full") {
      const now = Date.now();
      if (now - lastOverloadLog > 10_000) {
        lastOverloadLog = now;
        logger?.warn({ username, ...queue.stats() }, "password hashing queue full: refusing logins until it drains");
      }
      return result(username, "overloaded", deny());
    }
    return result(username, "abandoned", deny());
  }

  async function checkJwt(username: string, token: string, clientId: string, host: string): Promise<AuthResult> {
    const r = await (jwt as JwtVerifier).verify(token, { username, clientid: clientId });
    if (!r.ok) {
      throttle?.failure(username, host);
      logger?.debug({ username, clientId, reason: r.reason }, "JWT refused");
      return result(username, "bad-token", deny());
    }
    throttle?.success(username, host);
    return result(username, "ok", allow(), { username, superuser: r.superuser, via: "jwt", acl: r.acl, expiresAt: r.expiresAt });
  }

  async function check(username: string, password: string, clientId: string, opts: AuthCheckOptions = {}): Promise<AuthResult> {
    const token = jwtFrom === "password" ? password : username;
    const useJwt = jwt !== undefined && token.length <= maxToken && looksLikeJwt(token);
    if (clientId.length > maxClientId || (username.length > maxUsername && !(useJwt && jwtFrom === "username"))) {
      return result(username.slice(0, 64), "invalid-input", deny());
    }
    const host = opts.peerhost ?? "";
    if (!useJwt && username === "") return result(username, "unknown-user", unknownAnswer());
    const verdict = throttle?.check(username, host);
    if (verdict && !verdict.allowed) return result(username, "throttled", deny());
    if (useJwt) return checkJwt(username, token, clientId, host);

    const entry = await entryFor(username);
    const user = entry.user;
    if (!user && unknown === "no-opinion") return result(username, "unknown-user", noOpinion());
    const d = ttl > 0 && user ? digest(username, password) : "";
    let ok: boolean;
    if (user && ttl > 0 && entry.verified.includes(d)) ok = true;
    else {
      const v = await verifyQueued(username, password, user?.passwordHash, host, verdict?.trusted ? 0 : 1, opts);
      if (v instanceof QueueRefusedError) return refused(username, v);
      ok = v;
    }
    if (!user) {
      throttle?.failure(username, host);
      return result(username, "unknown-user", deny());
    }
    if (!ok) {
      throttle?.failure(username, host);
      return result(username, "bad-password", deny());
    }
    // Checked after the password, so a refusal here does not tell an unknown caller the user exists.
    if (!entry.clientIds(clientId)) {
      throttle?.failure(username, host);
      return result(username, "clientid-not-allowed", deny());
    }
    throttle?.success(username, host);
    if (ttl > 0 && !entry.verified.includes(d)) {
      entry.verified.push(d);
      if (entry.verified.length > 4) entry.verified.shift();
    }
    if (rehash && needsRehash(user.passwordHash, params)) rehashInBackground(user, password);
    return result(username, "ok", allow(), { username, superuser: user.superuser, via: "password", acl: undefined, expiresAt: undefined });
  }

  function rehashInBackground(user: UserRecord, password: string): void {
    // Through the queue (lowest priority, one key) so upgrades never crowd out logins; a failure or a
    // refusal only means trying again at the next login.
    queue
      .run("\u0000rehash", () => hashPassword(password, params))
      .then(async (passwordHash) => {
        // Only if nobody changed the user meanwhile.
        const current = await store.getUser(user.username);
        if (!current || current.passwordHash !== user.passwordHash) return;
        await store.putUser({ ...current, passwordHash, hashFormat: "scrypt", updatedAt: Date.now() });
        rehashed++;
        cache.delete(user.username);
        logger?.info({ username: user.username, from: user.hashFormat }, "password rehashed with scrypt");
      })
      .catch((err: unknown) => {
        if (!(err instanceof QueueRefusedError))
          logger?.warn({ username: user.username, err: (err as Error).message }, "password rehash failed");
      });
  }

  const changed = (username: string) => {
    cache.delete(username);
    throttle?.forgetUser(username);
    try {
      options.onUserChanged?.(username);
    } catch (err) {
      logger?.error({ username, err: (err as Error).message }, "onUserChanged listener threw");
    }
  };

  const clientAuth = (request: object): ClientAuth | undefined => clients.of(request)?.data.auth;

  return {
    check,
    clients,
    handler: async (req, ctx) => {
      const ci = req.clientinfo;
      // The signal is read only if the check has to wait for a hash (reading it allocates).
      const opts: AuthCheckOptions = {
        peerhost: ci?.peerhost ?? "",
        deadline: ctx.deadline,
        get signal() {
          return ctx.signal;
        },
      };
      const r = await check(ci?.username ?? "", ci?.password ?? "", ci?.clientid ?? "", opts);
      if (r.client && ci) {
        const conn = clients.of(req);
        if (conn) conn.data.auth = r.client;
      }
      return r.decision;
    },
    clientAuth,
    isSuperuser: (request) => clientAuth(request)?.superuser === true,
    invalidate(username) {
      if (username === undefined) cache.clear();
      else cache.delete(username);
    },
    async addUser(username, password, opts = {}) {
      const user = await addUser(store, username, password, { scrypt: params, ...opts });
      changed(username);
      return user;
    },
    async removeUser(username) {
      const removed = await store.removeUser(username);
      if (removed) changed(username);
      return removed;
    },
    stats: () => ({ ...counts, hashing: queue.stats(), throttle: throttle?.stats(), jwt: jwt?.stats(), rehashed }),
    close() {
      queue.close();
      jwt?.close();
    },
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

/** Options of {@link addUser}. */
export interface AddUserOptions {
  /** Client-id patterns; default: keep the existing user's, none for a new user. */
  readonly clientIds?: readonly string[];
  /** Default: keep the existing user's flag, false for a new user. */
  readonly superuser?: boolean;
  readonly scrypt?: ScryptParams;
}

/** Creates or replaces a user with a freshly hashed password. Throws on an invalid username. */
export async function addUser(store: Store, username: string, password: string, options: AddUserOptions = {}): Promise<UserRecord> {
  const err = usernameError(username);
  if (err) throw new Error(err);
  if (password.length === 0) throw new Error("a password must not be empty");
  const now = Date.now();
  const existing = await store.getUser(username);
  const passwordHash = await hashPassword(password, options.scrypt ?? DEFAULT_SCRYPT);
  const user: UserRecord = {
    username,
    passwordHash,
    hashFormat: hashFormatOf(passwordHash),
    clientIds: [...(options.clientIds ?? existing?.clientIds ?? [])],
    superuser: options.superuser ?? existing?.superuser ?? false,
    createdAt: existing?.createdAt ?? now,
    updatedAt: now,
  };
  await store.putUser(user);
  return user;
}
