/**
 * The use-case stack: authentication, authorization, message persistence and presence on one store,
 * assembled from a validated configuration into one provider (what `make start` serves).
 */
import { readFileSync } from "node:fs";
import type { Registry } from "prom-client";
import { defineProvider, type HookHandlers, type Logger, type Provider } from "../provider.js";
import { compileAcl, type Acl, type AclRule } from "./acl.js";
import { createAuthenticator, type Authenticator, type AuthenticatorOptions } from "./auth.js";
import { createBridge, mergeHookHandlers, type Bridge } from "./bridge/bridge.js";
import {
  createAuthorizer,
  type Authorizer,
  type ClientAttrRule,
  type ClientAttrsLookup,
  type ClientRulesLookup,
  type SuperuserCheck,
} from "./authorizer.js";
import { createDecisionCache, type DecisionCache } from "./decision-cache.js";
import { createEmqxNotifier, type EmqxNotifier } from "./emqx-api.js";
import { createInvalidationHub, type Invalidation, type InvalidationHub } from "./invalidation.js";
import type { ClusterBus } from "../ops/cluster-bus.js";
import { DEFAULT_ACL_RULES, configSchema, resolvedStore, type StackConfig } from "./config.js";
import { createReadApi, type ReadApi } from "./http.js";
import { createPersistence, type Persistence } from "./persistence.js";
import { openPostgresStore } from "./pg-store.js";
import { createStoredPresence, type StoredPresence } from "./presence.js";
import { openSqliteStore } from "./sqlite-store.js";
import { openSqliteWorkerStore } from "./sqlite-worker-store.js";
import type { Store } from "./store.js";
import { errorText, stderrLogger } from "./store-retry.js";
import { ExHookConfigError } from "../errors.js";

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /**
   * SQLite only: run it in worker threads (`openSqliteWorkerStore`), off the calling thread's event
   * loop. Default true; the CLI's one-shot commands use false (nothing else waits on them).
   */
  readonly worker?: boolean;
  readonly logger?: Logger;
}

/** Opens the store the configuration names (creating the schema on first start). */
export async function openStore(cfg: StackConfig, options: OpenStoreOptions = {}): Promise<Store> {
  const s = resolvedStore(cfg);
  if (s.kind === "sqlite") {
    if (options.worker === false) return openSqliteStore({ file: s.file });
    return openSqliteWorkerStore({ file: s.file, ...(options.logger ? { logger: options.logger } : {}) });
  }
  return openPostgresStore({ url: s.url, poolSize: s.poolSize, ...(options.logger ? { logger: options.logger } : {}) });
}

/** The assembled stack. */
export interface Stack {
  /** The provider to serve; close the stack (`close()`) after the server stopped. */
  readonly provider: Provider;
  readonly store: Store;
  readonly config: StackConfig;
  readonly auth: Authenticator | undefined;
  /** The rule set in use (config rules, then store rules); changes when store rules are re-read. */
  acl(): Acl | undefined;
  /** The authorize answer (superusers, per-client rules, global rules), when `acl.enabled`. */
  readonly authorizer: Authorizer | undefined;
  /** Re-reads the store's rules now; resolves with whether they changed (cached decisions are then dropped). */
  reloadAcl(): Promise<boolean>;
  /** The decision cache, when `cache.enabled`. */
  readonly cache: DecisionCache | undefined;
  /** Where invalidations are announced and heard (other workers, other instances, the CLI, EMQX). */
  readonly invalidations: InvalidationHub;
  /**
   * Announces a change: a user's password, rights or superuser flag changed or it was removed
   * (`{ scope: "user", key }`), a client's (`client`), the rules (`rules`), or anything (`all`).
   * Every worker and instance drops what it cached about it; EMQX too when `cache.emqx` is set.
   */
  invalidate(inv: Invalidation): Promise<void>;
  readonly persistence: Persistence | undefined;
  readonly presence: StoredPresence | undefined;
  /** The bridge to NATS JetStream / RabbitMQ / Redis Streams, when enabled. */
  readonly bridge: Bridge | undefined;
  /** The read API (`http.enabled`), served on the server's operations port through `provider.options.ops`. */
  readonly readApi: ReadApi | undefined;
  /** Counters of every use case. */
  stats(): Record<string, unknown>;
  /** Flushes queued messages, stops the HTTP server and timers, closes the store. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link createStack}. */
export interface StackOptions {
  /** Where every failure of the use cases is logged. Default: warnings and errors as JSON lines on stderr. */
  readonly logger?: Logger;
  /** Use this store instead of opening the configured one (closed with the stack unless `ownStore` is false). */
  readonly store?: Store;
  readonly ownStore?: boolean;
  /** Registry for the bridge's metrics (`ProviderSetup.metricsRegistry` under `serve`). Default: one of its own (`stack.bridge.registry`). */
  readonly registry?: Registry;
  /** Superusers are allowed everything without rules (the authentication side knows who they are). */
  readonly isSuperuser?: SuperuserCheck;
  /** A connection's own rules (e.g. a JWT `acl` claim), checked before the global rules. */
  readonly clientRules?: ClientRulesLookup;
  /** A connection's client attributes for `${client_attrs.NAME}` (e.g. from JWT claims). */
  readonly clientAttrs?: ClientAttrsLookup;
  /** Cluster bus for invalidations across `--workers`; `false` for none. Default: the process's bus. */
  readonly bus?: ClusterBus | false;
}

/**
 * Validates ACL rules that did not come through the config file (the store, `acl set`): each must
 * be a rule as in `acl.rules`. Throws an ExHookConfigError naming the first bad rule (`where(i)`)
 * and field.
 */
export function parseAclRules(raw: readonly unknown[], where: (i: number) => string = (i) => `store ACL rule #${i + 1}`): AclRule[] {
  return raw.map((r, i) => {
    const parsed = configSchema.shape.acl.unwrap().shape.rules.unwrap().element.safeParse(r);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ExHookConfigError(`${where(i)}: ${issue?.path.join(".") || "(rule)"}: ${issue?.message}`);
    }
    return parsed.data as AclRule;
  });
}

/** The rules in force, in order, with where each comes from: the config (or the defaults), then the store. */
export async function effectiveAclRules(
  cfg: StackConfig,
  store: Store,
): Promise<Array<{ readonly source: string; readonly rule: AclRule }>> {
  const fileRules = (cfg.acl.rules ?? DEFAULT_ACL_RULES) as AclRule[];
  const fileSource = cfg.acl.rules ? (i: number) => `acl.rules[${i}]` : (i: number) => `default rule #${i + 1}`;
  const storeRules = cfg.acl.useStoreRules ? parseAclRules(await store.listAclRules()) : [];
  return [
    ...fileRules.map((rule, i) => ({ source: fileSource(i), rule })),
    ...storeRules.map((rule, i) => ({ source: `store ACL rule #${i + 1}`, rule })),
  ];
}

/** Compiles rules read by {@link effectiveAclRules}; an error names the rule by its source. */
export function compileAclRules(cfg: StackConfig, rules: ReadonlyArray<{ readonly source: string; readonly rule: AclRule }>): Acl {
  try {
    return compileAcl(
      rules.map((r) => r.rule),
      cfg.acl.noMatch,
      (i) => rules[i]?.source ?? `rule #${i + 1}`,
      { listeners: cfg.acl.listeners, denyOverlap: cfg.acl.denyOverlap },
    );
  } catch (err) {
    throw new ExHookConfigError((err as Error).message);
  }
}

/** Compiles config rules followed by store rules; errors name the file rule or store rule. */
export async function loadAcl(cfg: StackConfig, store: Store): Promise<Acl> {
  return compileAclRules(cfg, await effectiveAclRules(cfg, store));
}

/** The authorizer's superuser check from what the authenticator recorded for the connection. */
export function superuserOf(auth: Authenticator): SuperuserCheck {
  return (clientinfo) => auth.isSuperuser({ clientinfo });
}

/** The authorizer's per-client rules from the connection's JWT ACL claim (and its expiry). */
export function clientRulesOf(auth: Authenticator): ClientRulesLookup {
  const none: readonly AclRule[] = [];
  return (clientinfo) => {
    const a = auth.clientAuth({ clientinfo });
    // A token's expiry applies with or without an ACL claim (as EMQX's JWT authorizer: denied after exp).
    if (!a || (a.acl === undefined && a.expiresAt === undefined)) return undefined;
    return a.expiresAt !== undefined ? { rules: a.acl ?? none, expiresAt: a.expiresAt } : { rules: a.acl ?? none };
  };
}

/** The authenticator's options from `auth.*` (throws an ExHookConfigError when the JWT public key file cannot be read). */
export function authenticatorOptions(cfg: StackConfig, store: Store, logger?: Logger): AuthenticatorOptions {
  const a = cfg.auth;
  const t = a.throttle;
  const j = a.jwt?.enabled ? a.jwt : undefined;
  let publicKey = j?.publicKey;
  if (publicKey !== undefined && !publicKey.trimStart().startsWith("-----BEGIN")) {
    try {
      publicKey = readFileSync(publicKey, "utf8");
    } catch (err) {
      throw new ExHookConfigError(`auth.jwt.publicKey: not PEM text, and not a readable file: ${(err as Error).message}`);
    }
  }
  return {
    store,
    unknownUser: a.unknownUser,
    cacheTtlMs: a.cacheTtlMs,
    scrypt: a.scrypt,
    rehash: a.rehash,
    maxClientIdLength: a.maxClientIdLength,
    hashing: a.hashing,
    throttle: t.enabled
      ? {
          perHost: t.perHost,
          perUser: t.perUser,
          perPair: t.perPair,
          forgetAfterMs: t.forgetAfterMs,
          trustTtlMs: t.trustTtlMs,
          maxKeys: t.maxKeys,
        }
      : false,
    ...(j
      ? {
          jwt: {
            from: j.from,
            ...(j.secret !== undefined ? { secret: j.secret, secretBase64: j.secretBase64 } : {}),
            ...(publicKey !== undefined ? { publicKey } : {}),
            ...(j.jwksUrl !== undefined ? { jwks: { url: j.jwksUrl, ...j.jwks } } : {}),
            ...(j.algorithms ? { algorithms: j.algorithms } : {}),
            clockSkewMs: j.clockSkewMs,
            requireExp: j.requireExp,
            ...(j.maxAgeMs !== undefined ? { maxAgeMs: j.maxAgeMs } : {}),
            claims: j.claims,
            aclClaim: j.aclClaim,
            superuserClaim: j.superuserClaim,
            maxTokenLength: j.maxTokenLength,
          },
        }
      : {}),
    ...(logger ? { logger } : {}),
  };
}

/** How long a readiness answer about the store is reused, and how long a ping may take, in ms. */
const PING_FRESH_MS = 1000;
const PING_TIMEOUT_MS = 2000;

/**
 * Builds the stack from a configuration (see `loadConfig`). The provider it returns carries the
 * read API and a readiness check (the store answers) for the server's operations port.
 */
export async function createStack(cfg: StackConfig, options: StackOptions = {}): Promise<Stack> {
  const logger = options.logger ?? stderrLogger;
  const store = options.store ?? (await openStore(cfg, { logger }));
  const ownStore = options.store === undefined || options.ownStore !== false;
  const handlers: { -readonly [K in keyof HookHandlers]: HookHandlers[K] } = {};
  let auth: Authenticator | undefined;
  let acl: Acl | undefined;
  let aclText = "";
  let authorizer: Authorizer | undefined;
  let cache: DecisionCache | undefined;
  let emqx: EmqxNotifier | undefined;
  let hub: InvalidationHub | undefined;
  let persistence: Persistence | undefined;
  let presence: StoredPresence | undefined;
  let bridge: Bridge | undefined;
  let refresh: ReturnType<typeof setInterval> | undefined;
  try {
    if (cfg.auth.enabled) {
      auth = createAuthenticator({
        ...authenticatorOptions(cfg, store, logger),
        // Changes made through the authenticator reach the decision cache, the other workers and instances.
        onUserChanged: (username) =>
          void hub
            ?.announce({ scope: "user", key: username })
            .catch((err: unknown) => logger?.error({ username, err: (err as Error).message }, "user change not announced")),
      });
      handlers.onClientAuthenticate = auth.handler;
    }
    if (cfg.cache.enabled) {
      cache = createDecisionCache({
        ttlMs: cfg.cache.ttl,
        negativeTtlMs: cfg.cache.negativeTtl,
        jitter: cfg.cache.jitter,
        maxEntries: cfg.cache.maxEntries,
        hooks: cfg.cache.hooks,
      });
    }
    if (cfg.cache.emqx) emqx = createEmqxNotifier({ ...cfg.cache.emqx, ...(logger ? { logger } : {}) });
    const storeCfg = resolvedStore(cfg);
    hub = createInvalidationHub({
      store,
      pollMs: cfg.cache.pollInterval,
      ...(storeCfg.kind === "postgres" && store.kind === "postgres" ? { listenUrl: storeCfg.url } : {}),
      ...(options.bus !== undefined ? { bus: options.bus } : {}),
      ...(emqx ? { emqx } : {}),
      ...(logger ? { logger } : {}),
    });
    if (cfg.acl.enabled) {
      const rules = await effectiveAclRules(cfg, store);
      acl = compileAclRules(cfg, rules);
      aclText = JSON.stringify(rules);
      authorizer = createAuthorizer({
        acl: () => acl as Acl,
        compile: (own) =>
          compileAcl(own, "no-opinion", (i) => `per-client rule #${i + 1}`, {
            listeners: cfg.acl.listeners,
            denyOverlap: cfg.acl.denyOverlap,
          }),
        attrRules: cfg.acl.clientAttrs as ClientAttrRule[],
        // Superuser and a JWT's ACL claim: what the authenticator recorded for the connection, unless given.
        ...(options.isSuperuser ? { isSuperuser: options.isSuperuser } : auth ? { isSuperuser: superuserOf(auth) } : {}),
        ...(options.clientRules ? { clientRules: options.clientRules } : auth ? { clientRules: clientRulesOf(auth) } : {}),
        ...(options.clientAttrs ? { clientAttrs: options.clientAttrs } : {}),
        ...(logger ? { logger } : {}),
      });
      handlers.onClientAuthorize = authorizer.handler;
      if (cfg.acl.useStoreRules && cfg.acl.storeRefreshMs > 0) {
        refresh = setInterval(() => {
          reloadAcl().then(
            // Changed behind our back (not announced): EMQX's cache does not know either.
            (changed) => (changed ? emqx?.notify("rules", "") : undefined),
            (err: unknown) => logger.error({ err: errorText(err) }, "ACL store rules not reloaded; keeping the previous rules"),
          );
        }, cfg.acl.storeRefreshMs);
        refresh.unref();
      }
    }
    hub.subscribe((inv) => {
      if (inv.scope === "rules") {
        reloadAcl().then(
          (changed) => (changed ? undefined : cache?.invalidate({ scope: "all" })),
          (err: unknown) =>
            logger?.error(
              { err: (err as Error).message },
              "ACL store rules not reloaded after a change was announced; keeping the previous rules",
            ),
        );
        return;
      }
      cache?.invalidate(inv.scope === "all" ? { scope: "all" } : { scope: inv.scope, key: inv.key });
      if (inv.scope === "all") auth?.invalidate();
      else if (inv.scope === "user") auth?.invalidate(inv.key);
    });
    if (cfg.persistence.enabled) {
      const { enabled: _e, retention, retentionSweep, ...p } = cfg.persistence;
      persistence = createPersistence({
        store,
        ...p,
        ...(retention !== undefined ? { retentionMs: retention, retentionSweepMs: retentionSweep } : {}),
        ...(logger ? { logger } : {}),
      });
      handlers.onMessagePublish = persistence.hook;
    }
    if (cfg.presence.enabled) {
      presence = createStoredPresence({
        store,
        reorderWindowMs: cfg.presence.reorderWindowMs,
        maxQueueBytes: cfg.presence.maxQueueBytes,
        retryMaxMs: cfg.presence.retryMaxMs,
        closeTimeoutMs: cfg.presence.closeTimeoutMs,
        ...(cfg.presence.webhook ? { webhook: cfg.presence.webhook } : {}),
        ...(logger ? { logger } : {}),
      });
      handlers.onClientConnected = presence.onClientConnected;
      handlers.onClientDisconnected = presence.onClientDisconnected;
    }
    if (cfg.bridge.enabled) {
      // The forwarding thread opens the same database again: only for a store opened here from the
      // configuration (a store handed in may be one the thread cannot reach, such as a memory one).
      const fromConfig = options.store === undefined && (storeCfg.kind === "postgres" || storeCfg.file !== ":memory:");
      bridge = createBridge({
        config: cfg.bridge,
        store,
        ...(fromConfig
          ? { forwardStore: storeCfg.kind === "sqlite" ? { kind: "sqlite", file: storeCfg.file } : { kind: "postgres", url: storeCfg.url } }
          : {}),
        ...(logger ? { logger } : {}),
        ...(options.registry ? { registry: options.registry } : {}),
      });
      Object.assign(handlers, mergeHookHandlers(handlers, bridge.handlers));
    }
  } catch (err) {
    if (refresh) clearInterval(refresh);
    auth?.close();
    await hub?.close();
    if (ownStore) await store.close();
    throw err;
  }

  /** Re-reads the rules; swaps them in (and drops cached decisions) only when they changed. */
  async function reloadAcl(): Promise<boolean> {
    if (!cfg.acl.enabled) return false;
    const rules = await effectiveAclRules(cfg, store);
    const text = JSON.stringify(rules);
    if (text === aclText) return false;
    acl = compileAclRules(cfg, rules);
    aclText = text;
    cache?.invalidate({ scope: "all" });
    logger?.info({ rules: acl.size }, "ACL rules changed; reloaded");
    return true;
  }

  const stats = (): Record<string, unknown> => ({
    store: { kind: store.kind },
    ...(auth ? { auth: auth.stats() } : {}),
    ...(acl ? { acl: { rules: acl.size, ...(authorizer ? { answers: authorizer.stats() } : {}) } } : {}),
    ...(cache ? { cache: cache.stats() } : {}),
    invalidations: { ...(hub as InvalidationHub).stats(), ...(emqx ? { emqx: emqx.stats() } : {}) },
    ...(persistence
      ? { persistence: { ...persistence.writer.stats(), ...(persistence.retention ? { retention: persistence.retention.stats() } : {}) } }
      : {}),
    ...(presence ? { presence: presence.stats() } : {}),
    ...(bridge ? { bridge: bridge.stats() } : {}),
  });

  const readApi = cfg.http.enabled
    ? createReadApi({
        store,
        stats,
        queryTimeoutMs: cfg.http.queryTimeoutMs,
        maxConcurrentQueries: cfg.http.maxConcurrentQueries,
        maxResponseBytes: cfg.http.maxResponseBytes,
        // Make messages accepted so far visible to the reader that asks (without waiting out an outage).
        ...(persistence ? { beforeQuery: () => (persistence as Persistence).writer.flush(1000) } : {}),
      })
    : undefined;

  // Readiness: the store answers a trivial query. Answers are reused for a second, and a probe
  // that finds a stale answer gets it while a fresh ping runs, so /readyz never waits on a slow store
  // (except the very first time).
  let pinged: { at: number; reason: string | undefined } | undefined;
  let pinging: Promise<void> | undefined;
  const ping = () =>
    (pinging ??= Promise.race([
      store.ping(),
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`no answer within ${PING_TIMEOUT_MS} ms`)), PING_TIMEOUT_MS).unref(),
      ),
    ])
      .then(
        () => void (pinged = { at: Date.now(), reason: undefined }),
        (err: unknown) => void (pinged = { at: Date.now(), reason: `store unreachable: ${errorText(err)}` }),
      )
      .finally(() => (pinging = undefined)));
  const notReady = async (): Promise<string | undefined> => {
    if (!pinged) await ping();
    else if (Date.now() - pinged.at > PING_FRESH_MS) void ping();
    return pinged?.reason;
  };

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      if (refresh) clearInterval(refresh);
      auth?.close();
      await (hub as InvalidationHub).close();
      await persistence?.close();
      await presence?.close();
      await bridge?.close();
      if (ownStore) await store.close();
    })());

  // The authenticator records each connection's login (superuser, JWT rules) in its client
  // context; wrapping registers connected/disconnected so the record lives as long as the connection.
  const provider = defineProvider(auth ? auth.clients.wrap(handlers) : handlers, {
    name: "emqx-exhook-stack",
    ...(cache ? { middleware: [cache.middleware] } : {}),
    ops: { notReady, ...(readApi ? { http: readApi.http, paths: readApi.paths, perWorkerPaths: ["/stats"] } : {}) },
  });
  const invalidations = hub as InvalidationHub;
  bridge?.start();
  return {
    provider,
    store,
    config: cfg,
    auth,
    acl: () => acl,
    authorizer,
    reloadAcl,
    cache,
    invalidations,
    invalidate: (inv) => invalidations.announce(inv),
    persistence,
    presence,
    bridge,
    readApi,
    stats,
    close,
  };
}
