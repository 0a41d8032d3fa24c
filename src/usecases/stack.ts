/**
 * The use-case stack: authentication, authorization, message persistence and presence on one store,
 * assembled from a validated configuration into one provider (what `make start` serves).
 */
import { defineProvider, type HookHandlers, type Logger, type Provider } from "../provider.js";
import { compileAcl, type Acl, type AclRule } from "./acl.js";
import { createAuthenticator, type Authenticator } from "./auth.js";
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
  readonly persistence: Persistence | undefined;
  readonly presence: StoredPresence | undefined;
  /** The read API (`http.enabled`), served on the server's operations port through `provider.options.ops`. */
  readonly readApi: ReadApi | undefined;
  /** Counters of every use case. */
  stats(): Record<string, unknown>;
  /** Flushes queued messages and presence changes, stops timers, closes the store. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link createStack}. */
export interface StackOptions {
  /** Where every failure of the use cases is logged. Default: warnings and errors as JSON lines on stderr. */
  readonly logger?: Logger;
  /** Use this store instead of opening the configured one (closed with the stack unless `ownStore` is false). */
  readonly store?: Store;
  readonly ownStore?: boolean;
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
export async function effectiveAclRules(cfg: StackConfig, store: Store): Promise<Array<{ readonly source: string; readonly rule: AclRule }>> {
  const fileRules = (cfg.acl.rules ?? DEFAULT_ACL_RULES) as AclRule[];
  const fileSource = cfg.acl.rules ? (i: number) => `acl.rules[${i}]` : (i: number) => `default rule #${i + 1}`;
  const storeRules = cfg.acl.useStoreRules ? parseAclRules(await store.listAclRules()) : [];
  return [...fileRules.map((rule, i) => ({ source: fileSource(i), rule })), ...storeRules.map((rule, i) => ({ source: `store ACL rule #${i + 1}`, rule }))];
}

/** Compiles rules read by {@link effectiveAclRules}; an error names the rule by its source. */
export function compileAclRules(cfg: StackConfig, rules: ReadonlyArray<{ readonly source: string; readonly rule: AclRule }>): Acl {
  try {
    return compileAcl(
      rules.map((r) => r.rule),
      cfg.acl.noMatch,
      (i) => rules[i]?.source ?? `rule #${i + 1}`,
    );
  } catch (err) {
    throw new ExHookConfigError((err as Error).message);
  }
}

/** Compiles config rules followed by store rules; errors name the file rule or store rule. */
export async function loadAcl(cfg: StackConfig, store: Store): Promise<Acl> {
  return compileAclRules(cfg, await effectiveAclRules(cfg, store));
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
  let persistence: Persistence | undefined;
  let presence: StoredPresence | undefined;
  let refresh: ReturnType<typeof setInterval> | undefined;
  try {
    if (cfg.auth.enabled) {
      auth = createAuthenticator({
        store,
        unknownUser: cfg.auth.unknownUser,
        cacheTtlMs: cfg.auth.cacheTtlMs,
        scrypt: cfg.auth.scrypt,
        logger,
      });
      handlers.onClientAuthenticate = auth.handler;
    }
    if (cfg.acl.enabled) {
      acl = await loadAcl(cfg, store);
      handlers.onClientAuthorize = (req, ctx) => (acl as Acl).handler(req, ctx);
      if (cfg.acl.useStoreRules && cfg.acl.storeRefreshMs > 0) {
        refresh = setInterval(() => {
          loadAcl(cfg, store).then(
            (a) => (acl = a),
            (err: unknown) => logger.error({ err: errorText(err) }, "ACL store rules not reloaded; keeping the previous rules"),
          );
        }, cfg.acl.storeRefreshMs);
        refresh.unref();
      }
    }
    if (cfg.persistence.enabled) {
      const { enabled: _e, retention, retentionSweep, ...p } = cfg.persistence;
      persistence = createPersistence({
        store,
        ...p,
        ...(retention !== undefined ? { retentionMs: retention, retentionSweepMs: retentionSweep } : {}),
        logger,
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
        logger,
      });
      handlers.onClientConnected = presence.onClientConnected;
      handlers.onClientDisconnected = presence.onClientDisconnected;
    }
  } catch (err) {
    if (refresh) clearInterval(refresh);
    if (ownStore) await store.close();
    throw err;
  }

  const stats = (): Record<string, unknown> => ({
    store: { kind: store.kind },
    ...(auth ? { auth: auth.stats() } : {}),
    ...(acl ? { acl: { rules: acl.size } } : {}),
    ...(persistence ? { persistence: { ...persistence.writer.stats(), ...(persistence.retention ? { retention: persistence.retention.stats() } : {}) } } : {}),
    ...(presence ? { presence: presence.stats() } : {}),
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
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${PING_TIMEOUT_MS} ms`)), PING_TIMEOUT_MS).unref()),
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
      await persistence?.close();
      await presence?.close();
      if (ownStore) await store.close();
    })());

  const provider = defineProvider(handlers, {
    name: "emqx-exhook-stack",
    ops: { notReady, ...(readApi ? { http: readApi.http, paths: readApi.paths, perWorkerPaths: ["/stats"] } : {}) },
  });
  return {
    provider,
    store,
    config: cfg,
    auth,
    acl: () => acl,
    persistence,
    presence,
    readApi,
    stats,
    close,
  };
}
