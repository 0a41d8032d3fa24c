/**
 * The use-case stack: authentication, authorization, message persistence and presence on one store,
 * assembled from a validated configuration into one provider (what `make start` serves).
 */
import type { Registry } from "prom-client";
import { defineProvider, type HookHandlers, type Logger, type Provider } from "../provider.js";
import type { ReadinessCheck } from "../ops/http-probes.js";
import { compileAcl, type Acl, type AclRule } from "./acl.js";
import { createAuthenticator, type Authenticator } from "./auth.js";
import { createBridge, mergeHookHandlers, type Bridge } from "./bridge/bridge.js";
import { DEFAULT_ACL_RULES, configSchema, resolvedStore, type StackConfig } from "./config.js";
import { createReadServer, type ReadServer } from "./http.js";
import { createPersistence, type Persistence } from "./persistence.js";
import { openPostgresStore } from "./pg-store.js";
import { createPresence, type Presence } from "./presence.js";
import { openSqliteStore } from "./sqlite-store.js";
import type { Store } from "./store.js";
import { ExHookConfigError } from "../errors.js";

/** Opens the store the configuration names (creating the schema on first start). */
export async function openStore(cfg: StackConfig): Promise<Store> {
  const s = resolvedStore(cfg);
  if (s.kind === "sqlite") return openSqliteStore({ file: s.file });
  return openPostgresStore({ url: s.url, poolSize: s.poolSize });
}

/**
 * A provider that also owns resources; the CLI calls `close()` after the server stopped. With the
 * bridge on, it also carries the bridge's metrics (`metricsRegistry`, served on the server's
 * /metrics) and readiness checks (`readiness`, part of /readyz).
 */
export type ClosableProvider = Provider & {
  close(): Promise<void>;
  readonly metricsRegistry?: Registry;
  readiness?(): ReadinessCheck[];
};

/** The assembled stack. */
export interface Stack {
  readonly provider: ClosableProvider;
  readonly store: Store;
  readonly config: StackConfig;
  readonly auth: Authenticator | undefined;
  /** The rule set in use (config rules, then store rules); changes when store rules are re-read. */
  acl(): Acl | undefined;
  readonly persistence: Persistence | undefined;
  readonly presence: Presence | undefined;
  /** The bridge to NATS JetStream / RabbitMQ / Redis Streams, when enabled. */
  readonly bridge: Bridge | undefined;
  /** The HTTP read server, listening, when enabled. */
  readonly http: ReadServer | undefined;
  /** Counters of every use case. */
  stats(): Record<string, unknown>;
  /** Flushes queued messages, stops the HTTP server and timers, closes the store. Idempotent. */
  close(): Promise<void>;
}

/** Options of {@link createStack}. */
export interface StackOptions {
  readonly logger?: Logger;
  /** Use this store instead of opening the configured one (closed with the stack unless `ownStore` is false). */
  readonly store?: Store;
  readonly ownStore?: boolean;
  /** Registry for the bridge's metrics. Default: a registry of its own (`provider.metricsRegistry`). */
  readonly registry?: Registry;
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

/** Builds the stack from a configuration (see `loadConfig`). Starts the HTTP read server when enabled. */
export async function createStack(cfg: StackConfig, options: StackOptions = {}): Promise<Stack> {
  const { logger } = options;
  const store = options.store ?? (await openStore(cfg));
  const ownStore = options.store === undefined || options.ownStore !== false;
  const handlers: { -readonly [K in keyof HookHandlers]: HookHandlers[K] } = {};
  let auth: Authenticator | undefined;
  let acl: Acl | undefined;
  let persistence: Persistence | undefined;
  let presence: Presence | undefined;
  let bridge: Bridge | undefined;
  let http: ReadServer | undefined;
  let refresh: ReturnType<typeof setInterval> | undefined;
  try {
    if (cfg.auth.enabled) {
      auth = createAuthenticator({
        store,
        unknownUser: cfg.auth.unknownUser,
        cacheTtlMs: cfg.auth.cacheTtlMs,
        scrypt: cfg.auth.scrypt,
        ...(logger ? { logger } : {}),
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
            (err: unknown) => logger?.error({ err: (err as Error).message }, "ACL store rules not reloaded; keeping the previous rules"),
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
        ...(logger ? { logger } : {}),
      });
      handlers.onMessagePublish = persistence.hook;
    }
    if (cfg.presence.enabled) {
      presence = createPresence({
        store,
        reorderWindowMs: cfg.presence.reorderWindowMs,
        ...(cfg.presence.webhook ? { webhook: cfg.presence.webhook } : {}),
        ...(logger ? { logger } : {}),
      });
      handlers.onClientConnected = presence.onClientConnected;
      handlers.onClientDisconnected = presence.onClientDisconnected;
    }
    if (cfg.bridge.enabled) {
      bridge = createBridge({ config: cfg.bridge, store, ...(logger ? { logger } : {}), ...(options.registry ? { registry: options.registry } : {}) });
      Object.assign(handlers, mergeHookHandlers(handlers, bridge.handlers));
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
    ...(bridge ? { bridge: bridge.stats() } : {}),
  });

  if (cfg.http.enabled) {
    http = createReadServer({
      store,
      host: cfg.http.host,
      port: cfg.http.port,
      stats,
      // Make messages accepted so far visible to the reader that asks.
      ...(persistence ? { beforeQuery: () => (persistence as Persistence).writer.flush() } : {}),
    });
    try {
      await http.listen();
    } catch (err) {
      if (refresh) clearInterval(refresh);
      if (ownStore) await store.close();
      throw new ExHookConfigError(`cannot start the HTTP read path on ${cfg.http.host}:${cfg.http.port}: ${(err as Error).message} (set http.port / EXHOOK_HTTP_PORT, or http.enabled: false)`);
    }
  }

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      if (refresh) clearInterval(refresh);
      await http?.close();
      await persistence?.close();
      await presence?.close();
      await bridge?.close();
      if (ownStore) await store.close();
    })());

  let provider: Provider;
  try {
    provider = defineProvider(handlers, { name: "emqx-exhook-stack" });
  } catch (err) {
    await close();
    throw err;
  }
  bridge?.start();
  const b = bridge;
  return {
    provider: Object.freeze({ ...provider, close, ...(b ? { metricsRegistry: b.registry, readiness: () => b.readiness() } : {}) }),
    store,
    config: cfg,
    auth,
    acl: () => acl,
    persistence,
    presence,
    bridge,
    http,
    stats,
    close,
  };
}
