/**
 * `defineProvider`: turns a set of typed handlers into a validated, immutable provider. The hook
 * list announced to EMQX is derived from the handlers given, so what is announced and what is
 * served cannot drift.
 */
import type { HookContext } from "./context.js";
import { ExHookConfigError } from "./errors.js";
import {
  HOOKS,
  HOOK_BY_KEY,
  hookNameFor,
  WIRE_PACKAGES,
  type AccessHookKey,
  type DecisionHookKey,
  type HookDef,
  type HookKey,
  type HookRequest,
  type MessageHookKey,
  type PublishHookKey,
  type WirePackage,
} from "./hooks.js";
import type { AccessDecision, Decision, PublishDecision } from "./responses.js";
import { compileTopicFilters, topicFilterError, type TopicMatcher } from "./topic.js";

/** What a handler for hook `K` returns: a decision for the three decision hooks, nothing otherwise. */
export type HookResult<K extends HookKey> = K extends AccessHookKey ? AccessDecision : K extends PublishHookKey ? PublishDecision : void;

/** A handler for hook `K`; may be async. */
export type HookHandler<K extends HookKey> = (request: HookRequest<K>, ctx: HookContext) => HookResult<K> | Promise<HookResult<K>>;

/** What the framework answers when a decision handler throws, times out or returns nonsense. */
export type FallbackFor<K extends HookKey> = K extends AccessHookKey
  ? AccessDecision["kind"]
  : K extends PublishHookKey
    ? "keep" | "drop"
    : never;

/** A handler with per-hook settings. */
export interface HookConfig<K extends HookKey> {
  readonly handler: HookHandler<K>;
  /**
   * MQTT topic filters (message hooks only). EMQX calls the hook only for matching topics, and the
   * framework checks again before running the handler. Default: all topics.
   */
  readonly topics?: K extends MessageHookKey ? readonly string[] : never;
  /**
   * Longest time the handler may run, in ms. Default: the provider's `timeoutMs`. Always capped by
   * the call's own deadline (`grpc-timeout`) minus a safety margin.
   */
  readonly timeoutMs?: number;
  /** Answer when the handler fails or runs out of time (decision hooks only). */
  readonly fallback?: K extends DecisionHookKey ? FallbackFor<K> : never;
}

/** The handlers of a provider, keyed by the generated rpc local names. Give any subset. */
export type HookHandlers = { readonly [K in HookKey]?: HookHandler<K> | HookConfig<K> };

/** What a middleware sees of a call. */
export interface HookCall {
  readonly key: HookKey;
  /** EMQX 5.x/6.x hook name, e.g. `message.publish`. */
  readonly hook: string;
  readonly clientId: string;
  /** Message topic (message hooks) or authorize topic, else `undefined`. */
  readonly topic: string | undefined;
  readonly request: HookRequest<HookKey>;
  readonly ctx: HookContext;
}

/** Why a fallback answer was sent instead of the handler's. */
export type FallbackReason = "timeout" | "error" | "invalid";

/** The result of a call as middleware sees it. */
export interface HookOutcome {
  /** The decision sent (decision hooks), `undefined` for notification hooks. */
  readonly decision: Decision | undefined;
  /** Set when the handler did not produce the answer. */
  readonly fallback?: FallbackReason | undefined;
  /** The handler's error or a description of the invalid answer, for logs. */
  readonly error?: unknown;
}

/**
 * Hook middleware, Koa-style: runs around every handler call, outermost first, and sees the
 * outcome including fallbacks. Calling `next` twice throws. A middleware may answer without
 * calling `next` (`return { decision: allow() }`, a cache); that decision is checked like a
 * handler's, and an invalid one gets the hook's fallback (reason `invalid`).
 */
export type HookMiddleware = (call: HookCall, next: () => Promise<HookOutcome>) => Promise<HookOutcome>;

/** Where the framework reports what went wrong in a handler. Compatible with pino. */
export interface Logger {
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/** Options of {@link defineProvider}. */
export interface ProviderOptions {
  /** A name for logs. Default `"provider"`. */
  readonly name?: string;
  /** Middleware around every handler call, outermost first. */
  readonly middleware?: readonly HookMiddleware[];
  /**
   * Default handler budget in ms when the hook sets none. Default 5000 (EMQX's default
   * `request_timeout`); the call's own deadline minus the safety margin always wins when shorter.
   */
  readonly timeoutMs?: number;
  /**
   * Safety margin in ms kept between a handler's budget and EMQX's deadline, so the fallback
   * reaches EMQX before it gives up. Default: 10% of the call's timeout, at most 250 ms.
   */
  readonly marginMs?: number;
  /** Default fallbacks. Defaults: authenticate `deny`, authorize `deny`, publish `keep`. */
  readonly fallback?: {
    readonly onClientAuthenticate?: FallbackFor<"onClientAuthenticate">;
    readonly onClientAuthorize?: FallbackFor<"onClientAuthorize">;
    readonly onMessagePublish?: FallbackFor<"onMessagePublish">;
  };
  /**
   * `"fallback"` (default): a handler that throws gets the hook's fallback answer. `"grpc-error"`:
   * the call fails with gRPC `INTERNAL` instead (EMQX then applies its `failed_action`).
   */
  readonly onError?: "fallback" | "grpc-error";
  /** Called when an EMQX node loads the provider (also on re-loads). */
  readonly onLoaded?: (info: LoadedInfo) => void;
  /** Called when an EMQX node unloads the provider. */
  readonly onUnloaded?: (info: LoadedInfo) => void;
  /** Routes and readiness the provider adds to the server's operations HTTP port (`--metrics-port`). */
  readonly ops?: ProviderOps;
}

/**
 * A request to the operations HTTP port for a path the server does not answer itself. Plain data,
 * so that with `--workers` the primary can hand it to a worker.
 */
export interface OpsRequest {
  /** `"GET"` or `"HEAD"` (other methods are refused before they get here). */
  readonly method: string;
  /** The path, e.g. `"/messages"`. */
  readonly path: string;
  /** Query parameters (the first value of each). */
  readonly query: Readonly<Record<string, string>>;
}

/** The answer to an {@link OpsRequest}: a status and a JSON body. */
export interface OpsResponse {
  readonly status: number;
  readonly body: unknown;
}

/** What a provider adds to the operations HTTP port (the use-case stack adds its read API). */
export interface ProviderOps {
  /**
   * Answers requests for paths other than `/metrics`, `/healthz` and `/readyz`; `undefined` = 404.
   * These paths may expose data: when the port is not on localhost they need the port's token.
   */
  readonly http?: (req: OpsRequest) => Promise<OpsResponse | undefined>;
  /** The paths `http` answers, for the 404 text and the start banner. */
  readonly paths?: readonly string[];
  /** Paths every worker answers under `--workers` (the primary returns `{ workers: [...] }`); others go to one worker. */
  readonly perWorkerPaths?: readonly string[];
  /** Part of `/readyz`: resolves to `undefined` when ready, else why not (e.g. the store is unreachable). */
  readonly notReady?: () => Promise<string | undefined>;
}

/** What `onLoaded` / `onUnloaded` receive. */
export interface LoadedInfo {
  readonly package: WirePackage;
  readonly node: string;
  readonly version: string;
  readonly clusterName: string;
}

/** @internal One registered hook, ready for dispatch. */
export interface ProviderHook {
  readonly def: HookDef;
  readonly handler: (request: never, ctx: HookContext) => unknown;
  readonly topics: readonly string[];
  readonly matcher: TopicMatcher | undefined;
  readonly timeoutMs: number;
  readonly fallback: Decision["kind"] | undefined;
}

/** A validated provider. Serve it with `createExHookServer` or mount it with `exhookRoutes`. */
export interface Provider {
  readonly name: string;
  /** The hooks this provider handles, in service order. */
  readonly hooks: readonly ProviderHook[];
  readonly options: ProviderOptions;
  /** The `HookSpec` list announced to EMQX for a package (hook names differ in v1). */
  hookSpecs(pkg: WirePackage): ReadonlyArray<{ readonly name: string; readonly topics: readonly string[] }>;
  /** @internal Fast lookup by handler key. */
  readonly byKey: ReadonlyMap<HookKey, ProviderHook>;
}

const DEFAULT_FALLBACK: Readonly<Record<DecisionHookKey, Decision["kind"]>> = {
  onClientAuthenticate: "deny",
  onClientAuthorize: "deny",
  onMessagePublish: "keep",
};

const ACCESS_KINDS = ["allow", "deny", "no-opinion"];
const PUBLISH_FALLBACKS = ["keep", "drop"];

/**
 * Defines a provider from typed handlers. Throws {@link ExHookConfigError} on an unknown hook key,
 * a non-function handler, an invalid topic filter, a bad timeout or an unknown fallback.
 *
 * ```ts
 * export default defineProvider({
 *   onClientAuthenticate: ({ clientinfo }) => allowIf(clientinfo?.username === "alice"),
 *   onMessagePublish: { topics: ["sensors/#"], handler: (req) => rewrite({ qos: 1 }) },
 * });
 * ```
 */
export function defineProvider(handlers: HookHandlers, options: ProviderOptions = {}): Provider {
  if (typeof handlers !== "object" || handlers === null) {
    throw new ExHookConfigError("defineProvider: handlers must be an object of hook handlers");
  }
  const name = options.name ?? "provider";
  const defaultTimeout = checkTimeout(options.timeoutMs, "options.timeoutMs") ?? 5000;
  if (options.marginMs !== undefined) checkTimeout(options.marginMs, "options.marginMs", true);
  if (options.onError !== undefined && options.onError !== "fallback" && options.onError !== "grpc-error") {
    throw new ExHookConfigError(`options.onError must be "fallback" or "grpc-error", got ${JSON.stringify(options.onError)}`);
  }
  for (const [key, value] of Object.entries(options.fallback ?? {})) {
    const def = HOOK_BY_KEY.get(key);
    if (!def || def.kind === "notification") {
      throw new ExHookConfigError(
        `options.fallback.${key}: fallbacks exist only for onClientAuthenticate, onClientAuthorize and onMessagePublish`,
      );
    }
    checkFallback(def, value, `options.fallback.${key}`);
  }
  for (const key of Object.keys(handlers)) {
    if (!HOOK_BY_KEY.has(key)) {
      throw new ExHookConfigError(`unknown hook ${JSON.stringify(key)}${suggest(key)}; known hooks: ${HOOKS.map((h) => h.key).join(", ")}`);
    }
  }
  const hooks: ProviderHook[] = [];
  for (const def of HOOKS) {
    const entry = (handlers as Record<string, unknown>)[def.key];
    if (entry === undefined) continue;
    hooks.push(compileHook(def, entry, defaultTimeout, options));
  }
  const specs = new Map<WirePackage, ReadonlyArray<{ name: string; topics: readonly string[] }>>();
  for (const pkg of WIRE_PACKAGES) {
    specs.set(pkg, Object.freeze(hooks.map((h) => Object.freeze({ name: hookNameFor(h.def, pkg), topics: h.topics }))));
  }
  const byKey = new Map(hooks.map((h) => [h.def.key, h]));
  return Object.freeze({
    name,
    hooks: Object.freeze(hooks),
    options,
    byKey,
    hookSpecs: (pkg: WirePackage) => specs.get(pkg) ?? [],
  });
}

function compileHook(def: HookDef, entry: unknown, defaultTimeout: number, options: ProviderOptions): ProviderHook {
  const where = `hook ${def.key}`;
  let handler: unknown;
  let topics: readonly string[] = [];
  let timeoutMs: number | undefined;
  let fallback: string | undefined;
  if (typeof entry === "function") {
    handler = entry;
  } else if (typeof entry === "object" && entry !== null) {
    const cfg = entry as Record<string, unknown>;
    for (const k of Object.keys(cfg)) {
      if (!["handler", "topics", "timeoutMs", "fallback"].includes(k)) {
        throw new ExHookConfigError(`${where}: unknown setting ${JSON.stringify(k)} (allowed: handler, topics, timeoutMs, fallback)`);
      }
    }
    handler = cfg["handler"];
    if (cfg["topics"] !== undefined) {
      if (!def.topics) {
        throw new ExHookConfigError(
          `${where}: topic filters are only honoured on message hooks (onMessagePublish, onMessageDelivered, onMessageDropped, onMessageAcked)`,
        );
      }
      if (!Array.isArray(cfg["topics"])) throw new ExHookConfigError(`${where}: topics must be an array of MQTT topic filters`);
      topics = Object.freeze(
        [...(cfg["topics"] as unknown[])].map((t, i) => {
          const err = typeof t === "string" ? topicFilterError(t) : "a topic filter must be a string";
          if (err) throw new ExHookConfigError(`${where}: topics[${i}] ${JSON.stringify(t)} is not a valid MQTT topic filter: ${err}`);
          return t as string;
        }),
      );
    }
    timeoutMs = checkTimeout(cfg["timeoutMs"], `${where}: timeoutMs`);
    if (cfg["fallback"] !== undefined) {
      if (def.kind === "notification") throw new ExHookConfigError(`${where}: fallback applies only to decision hooks`);
      fallback = checkFallback(def, cfg["fallback"], `${where}: fallback`);
    }
  } else {
    throw new ExHookConfigError(`${where}: expected a function or { handler, topics?, timeoutMs?, fallback? }`);
  }
  if (typeof handler !== "function") throw new ExHookConfigError(`${where}: handler must be a function`);
  if (def.kind !== "notification" && fallback === undefined) {
    fallback = (options.fallback as Record<string, string> | undefined)?.[def.key] ?? DEFAULT_FALLBACK[def.key as DecisionHookKey];
  }
  return Object.freeze({
    def,
    handler: handler as ProviderHook["handler"],
    topics,
    matcher: topics.length > 0 ? compileTopicFilters(topics) : undefined,
    timeoutMs: timeoutMs ?? defaultTimeout,
    fallback: fallback as Decision["kind"] | undefined,
  });
}

function checkTimeout(value: unknown, where: string, allowZero = false): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    // String() for numbers: JSON.stringify shows NaN and Infinity as "null".
    const shown = typeof value === "number" ? String(value) : JSON.stringify(value);
    throw new ExHookConfigError(`${where} must be a ${allowZero ? "non-negative" : "positive"} number of milliseconds, got ${shown}`);
  }
  return value;
}

function checkFallback(def: HookDef, value: unknown, where: string): string {
  const allowed = def.kind === "access" ? ACCESS_KINDS : PUBLISH_FALLBACKS;
  if (typeof value !== "string" || !allowed.includes(value)) {
    throw new ExHookConfigError(
      `${where} must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")}, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function suggest(key: string): string {
  const lower = key.toLowerCase();
  const hit = HOOKS.find((h) => h.key.toLowerCase() === lower) ?? HOOKS.find((h) => h.key.toLowerCase().startsWith(lower.slice(0, 10)));
  if (key === "onClientCheckAcl") return " (use onClientAuthorize; it is served to EMQX 4.x as client.check_acl)";
  if (key === "onSessionTakeovered") return " (use onSessionTakenover; it is served to EMQX 4.x as session.takeovered)";
  return hit ? ` (did you mean ${hit.key}?)` : "";
}
