/**
 * The dispatcher: runs one provider for calls from any package, with topic-filter enforcement,
 * per-hook budgets under the call's deadline, fallbacks, middleware, and the loaded-state of
 * every EMQX node. Transport-free: the standalone server and the Connect routes both use it.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Message } from "@bufbuild/protobuf";
import { toBinary } from "@bufbuild/protobuf";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { CallContext, type BrokerRef } from "./context.js";
import type { HookDef, WirePackage } from "./hooks.js";
import type { FallbackReason, HookCall, HookMiddleware, HookOutcome, Logger, Provider, ProviderHook } from "./provider.js";
import { NEUTRAL_ACCESS, NEUTRAL_PUBLISH, type Decision } from "./responses.js";
import { topicNameError } from "./topic.js";
import {
  decodeRequest,
  EMPTY_SUCCESS,
  encodeValuedResponse,
  isLegacyEnumBroker,
  loadedResponse,
  valuedResponse,
  type RpcTarget,
} from "./wire.js";

/** Per-call facts from the transport. */
export interface CallInfo {
  /** The call's timeout from `grpc-timeout`, in ms; `undefined` when EMQX sent none. */
  readonly timeoutMs?: number | undefined;
  /** Aborted when the caller cancels the call. */
  readonly signal?: AbortSignal | undefined;
  /**
   * Alternative to `signal` for transports that learn of cancellation by callback (the native
   * transport): called at most once per hook call, when the handler first reads `ctx.signal`,
   * with the call's abort target, which the transport aborts when the caller cancels (also right
   * away if the call is already cancelled). Calls whose handler never reads the signal cost no
   * `AbortController` and no listener.
   */
  readonly bindAbort?: ((target: { abort(reason: unknown): void }) => void) | undefined;
}

/** One EMQX node that has loaded the provider. */
export interface LoadedNode {
  readonly package: WirePackage;
  readonly node: string;
  readonly version: string;
  readonly sysdescr: string;
  readonly clusterName: string;
  /** `Date.now()` of the latest `OnProviderLoaded`. */
  readonly loadedAt: number;
  /** How many times this node sent `OnProviderLoaded`. */
  readonly loads: number;
}

/**
 * What a dispatcher learned from EMQX that other processes serving the same EMQX should know too
 * (the workers of `serve --workers N`, the next run after a restart): plain data.
 */
export interface LearnedState {
  /** From the latest v1 `OnProviderLoaded`. */
  readonly v1: {
    /** Whether that broker reads `ResponsedType` with the EMQX 4.3.0–4.3.2 numbering. */
    readonly legacyNumbering: boolean;
    /** The broker (v1 requests carry no `meta` before 4.3.14/4.4.3; handlers see this one). */
    readonly broker: BrokerRef;
  };
  /** `Date.now()` when it was learned: the newest knowledge wins. */
  readonly learnedAt: number;
}

/** Options of {@link createDispatcher}. */
export interface DispatcherOptions {
  /** Where handler failures are reported. Default: one JSON line on stderr per event. */
  readonly logger?: Logger;
  /** Middleware added outside the provider's own (metrics, logging of the server). */
  readonly middleware?: readonly HookMiddleware[];
  /**
   * The event-loop delay to expect now, in ms, given the hook calls in flight (the server measures
   * the loop with `monitorEventLoopDelay` and its cost per call, src/ops/loop-delay.ts): the safety
   * margin before a call's deadline grows with it, see {@link deadlineMargin}. Called once per hook
   * call with a deadline, so it must be cheap (arithmetic on stored numbers). Default: 0.
   */
  readonly loopDelayMs?: (inFlight: number) => number;
  /**
   * Pins the `ResponsedType` numbering of v1 answers: `true` for EMQX 4.3.0–4.3.2 (IGNORE=0,
   * CONTINUE=1), `false` for every later 4.x. Default: learned from each v1 `OnProviderLoaded`
   * (its broker version), which EMQX 4.x sends only once per pool, so a restarted server that is
   * never loaded again needs this pin or a state file (`ExHookServerOptions.stateFile`).
   */
  readonly legacyResponseNumbering?: boolean;
  /** Called when a v1 `OnProviderLoaded` changed what is learned (to share or persist it). */
  readonly onLearned?: (state: LearnedState) => void;
}

/** Counts of fallbacks taken, keyed `"<handler key>:<reason>"`. */
export type FallbackCounts = Readonly<Record<string, number>>;

/** Serves one provider to any package. */
export interface Dispatcher {
  readonly provider: Provider;
  /** Answers `OnProviderLoaded`; the same answer every time for a package. */
  loaded(pkg: WirePackage, req: v3.ProviderLoadedRequest): v3.LoadedResponse;
  /** Answers `OnProviderUnloaded`. */
  unloaded(pkg: WirePackage, req: v3.ProviderUnloadedRequest): v3.EmptySuccess;
  /** Runs a hook; resolves to the v3 response. Rejects only with `ConnectError`. */
  call(pkg: WirePackage, def: HookDef, req: Message, info: CallInfo): Promise<Message> | Message;
  /** Decodes, dispatches and encodes one request body (the standalone server's path). */
  handleBytes(pkg: WirePackage, target: RpcTarget, body: Uint8Array, info: CallInfo): Promise<Uint8Array> | Uint8Array;
  /** The EMQX nodes that have loaded the provider and not unloaded it. */
  loadedNodes(): LoadedNode[];
  /** Fallbacks taken so far. */
  fallbackCounts(): FallbackCounts;
  /** What was learned from EMQX so far (`undefined` before any v1 `OnProviderLoaded`). */
  learned(): LearnedState | undefined;
  /**
   * Applies what another process (or a previous run) learned, unless this dispatcher knows
   * something newer (`learnedAt`). A pinned numbering stays pinned.
   */
  learn(state: LearnedState): void;
}

/**
 * The safety margin kept between a handler's budget and the caller's deadline, so the fallback
 * answer is written before EMQX gives up:
 * - it scales with the deadline: 10 % of it, at most 250 ms (EMQX's default 5 s keeps 250 ms);
 *   `marginMs` replaces this part;
 * - it grows with the measured event-loop delay: at least 2 × delay + 5 ms (the budget timer fires
 *   about one delay late, and writing the answer waits for the loop once more);
 * - it never takes more than 80 % of the deadline, so a handler keeps at least a fifth of it: on a
 *   loop that late, a fallback in time is worth more to EMQX than a real answer after its deadline.
 */
export function deadlineMargin(timeoutMs: number, loopDelayMs: number, marginMs?: number): number {
  const base = marginMs ?? Math.min(250, timeoutMs * 0.1);
  return Math.min(timeoutMs * 0.8, Math.max(base, loopDelayMs > 0 ? 2 * loopDelayMs + 5 : 0));
}

const consoleLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: (obj, msg) => console.error(JSON.stringify({ level: "warn", ...obj, msg })),
  error: (obj, msg) => console.error(JSON.stringify({ level: "error", ...obj, msg })),
};

/** Most EMQX nodes remembered as loaded; past it the least recently loaded is forgotten. */
export const MAX_LOADED_NODES = 1024;

/** Creates a dispatcher for a provider. One per server; it holds the loaded state. */
export function createDispatcher(provider: Provider, options: DispatcherOptions = {}): Dispatcher {
  const logger = options.logger ?? consoleLogger;
  const middleware = [...(options.middleware ?? []), ...(provider.options.middleware ?? [])];
  const marginOpt = provider.options.marginMs;
  const loopDelayMs = options.loopDelayMs;
  /** Hook calls whose answer is not sent yet (their fallbacks may all fall due together). */
  let inFlight = 0;
  const pinnedLegacy = options.legacyResponseNumbering;
  const onLearned = options.onLearned;
  const grpcErrors = provider.options.onError === "grpc-error";
  const loadedAnswers = new Map<WirePackage, v3.LoadedResponse>();
  const loadedAnswerBytes = new Map<WirePackage, Uint8Array>();
  const nodes = new Map<string, LoadedNode>();
  const fallbacks: Record<string, number> = {};
  let v1LegacyEnum = pinnedLegacy ?? false;
  let v1Broker: BrokerRef | undefined;
  let learnedState: LearnedState | undefined;

  function learn(state: LearnedState): void {
    if (learnedState && learnedState.learnedAt > state.learnedAt) return;
    learnedState = state;
    if (pinnedLegacy === undefined) v1LegacyEnum = state.v1.legacyNumbering;
    v1Broker = state.v1.broker;
  }

  function answerFor(pkg: WirePackage): v3.LoadedResponse {
    let answer = loadedAnswers.get(pkg);
    if (!answer) {
      answer = loadedResponse(provider.hookSpecs(pkg));
      loadedAnswers.set(pkg, answer);
      loadedAnswerBytes.set(pkg, toBinary(v3.LoadedResponseSchema, answer));
    }
    return answer;
  }

  function loaded(pkg: WirePackage, req: v3.ProviderLoadedRequest): v3.LoadedResponse {
    const version = req.broker?.version || req.meta?.version || "";
    const node = req.meta?.node ?? "";
    if (pkg === "v1") {
      const broker: BrokerRef = { node, version, sysdescr: req.broker?.sysdescr ?? "", clusterName: req.meta?.clusterName ?? "" };
      const legacyNumbering = isLegacyEnumBroker(version);
      const before = learnedState?.v1;
      learn({ v1: { legacyNumbering, broker }, learnedAt: Date.now() });
      const changed = before === undefined || before.legacyNumbering !== legacyNumbering || !sameBroker(before.broker, broker);
      if (changed && onLearned) {
        try {
          onLearned(learnedState as LearnedState);
        } catch (err) {
          logger.error({ err: errorText(err) }, "onLearned callback threw");
        }
      }
    }
    const key = `${pkg}|${node}`;
    const prev = nodes.get(key);
    // Node names come from the caller: keep the map bounded, forgetting the least recently loaded.
    nodes.delete(key);
    if (nodes.size >= MAX_LOADED_NODES) nodes.delete(nodes.keys().next().value as string);
    const info: LoadedNode = {
      package: pkg,
      node,
      version,
      sysdescr: req.broker?.sysdescr || req.meta?.sysdescr || "",
      clusterName: req.meta?.clusterName ?? "",
      loadedAt: Date.now(),
      loads: (prev?.loads ?? 0) + 1,
    };
    nodes.set(key, info);
    logger.info({ package: pkg, node, version, loads: info.loads, hooks: provider.hooks.length }, "provider loaded by EMQX");
    safeNotify(provider.options.onLoaded, info);
    return answerFor(pkg);
  }

  function unloaded(pkg: WirePackage, req: v3.ProviderUnloadedRequest): v3.EmptySuccess {
    const node = req.meta?.node ?? "";
    const info = nodes.get(`${pkg}|${node}`);
    nodes.delete(`${pkg}|${node}`);
    logger.info({ package: pkg, node }, "provider unloaded by EMQX");
    safeNotify(
      provider.options.onUnloaded,
      info ?? { package: pkg, node, version: req.meta?.version ?? "", clusterName: req.meta?.clusterName ?? "" },
    );
    return EMPTY_SUCCESS;
  }

  function safeNotify<T>(fn: ((info: T) => void) | undefined, info: T): void {
    if (!fn) return;
    try {
      fn(info);
    } catch (err) {
      logger.error({ err: errorText(err) }, "onLoaded/onUnloaded callback threw");
    }
  }

  function neutral(def: HookDef, legacy: boolean): Message {
    if (def.kind === "notification") return EMPTY_SUCCESS;
    return valuedResponse(def.kind === "access" ? NEUTRAL_ACCESS : NEUTRAL_PUBLISH, undefined, legacy);
  }

  function call(pkg: WirePackage, def: HookDef, req: Message, info: CallInfo): Promise<Message> | Message {
    return run(pkg, def, req, info, asMessage);
  }

  /** Runs a hook and hands its response to `finish` (in the same microtask, no extra promise). */
  function run<T>(pkg: WirePackage, def: HookDef, req: Message, info: CallInfo, finish: (res: Message) => T): Promise<T> | T {
    const legacy = pkg === "v1" && v1LegacyEnum;
    const hook = provider.byKey.get(def.key);
    if (!hook) return finish(neutral(def, legacy));
    const r = req as unknown as RequestFields;
    const topic = topicOf(def, r);
    if (hook.matcher && !hook.matcher(topic ?? "")) return finish(neutral(def, legacy));

    const callTimeout = info.timeoutMs;
    let budget = hook.timeoutMs;
    if (callTimeout !== undefined) {
      const margin = deadlineMargin(callTimeout, loopDelayMs ? loopDelayMs(inFlight) : 0, marginOpt);
      budget = Math.max(0, Math.min(budget, callTimeout - margin));
    }
    const clientId = r.clientinfo?.clientid ?? r.conninfo?.clientid ?? r.message?.from ?? "";
    const ctx = new CallContext({
      key: def.key,
      hook: def.name,
      package: pkg,
      knownBroker: pkg === "v1" ? v1Broker : undefined,
      meta: r.meta,
      clientId,
      deadline: Date.now() + budget,
      signal: info.signal,
      bindAbort: info.bindAbort,
    });

    if (middleware.length === 0) {
      const outcome = runHandler(hook, req, ctx, budget);
      if (isPromise(outcome)) {
        inFlight++;
        return outcome.then((o) => {
          inFlight--;
          return finish(respond(def, hook, o, r, legacy));
        });
      }
      return finish(respond(def, hook, outcome, r, legacy));
    }
    const hc: HookCall = { key: def.key, hook: def.name, clientId, topic, request: req as never, ctx };
    inFlight++;
    return compose(middleware, hc, () => Promise.resolve(runHandler(hook, req, ctx, budget))).then(
      (o) => {
        inFlight--;
        return finish(respond(def, hook, o instanceof Outcome ? o : fromMiddleware(hook, o), r, legacy));
      },
      (err: unknown) => {
        inFlight--;
        return finish(respond(def, hook, fallbackOutcome(hook, "error", err), r, legacy));
      },
    );
  }

  function respond(def: HookDef, hook: ProviderHook, outcome: HookOutcome, r: RequestFields, legacy: boolean): Message {
    if (outcome.fallback !== undefined) {
      const reason = outcome.fallback;
      const k = `${def.key}:${reason}`;
      fallbacks[k] = (fallbacks[k] ?? 0) + 1;
      logger.warn(
        {
          hook: def.name,
          clientId: r.clientinfo?.clientid ?? r.conninfo?.clientid ?? r.message?.from ?? "",
          reason,
          fallback: hook.fallback ?? "empty",
          err: errorText(outcome.error),
        },
        reason === "timeout"
          ? "handler ran out of time; answered with the fallback"
          : reason === "invalid"
            ? "handler returned an invalid answer; answered with the fallback"
            : "handler failed; answered with the fallback",
      );
      if (grpcErrors && reason === "error") throw new ConnectError("internal error", Code.Internal);
    }
    if (def.kind === "notification") return EMPTY_SUCCESS;
    return valuedResponse(outcome.decision ?? (def.kind === "access" ? NEUTRAL_ACCESS : NEUTRAL_PUBLISH), r.message, legacy);
  }

  function handleBytes(pkg: WirePackage, target: RpcTarget, body: Uint8Array, info: CallInfo): Promise<Uint8Array> | Uint8Array {
    if (target === "loaded") {
      loaded(pkg, decodeRequest(pkg, target, body) as v3.ProviderLoadedRequest);
      return loadedAnswerBytes.get(pkg) as Uint8Array;
    }
    if (target === "unloaded") {
      unloaded(pkg, decodeRequest(pkg, target, body) as v3.ProviderUnloadedRequest);
      return EMPTY_BYTES;
    }
    return run(pkg, target, decodeRequest(pkg, target, body), info, encodeResponse);
  }

  return {
    provider,
    loaded,
    unloaded,
    call,
    handleBytes,
    loadedNodes: () => [...nodes.values()],
    fallbackCounts: () => ({ ...fallbacks }),
    learned: () => learnedState,
    learn,
  };
}

function sameBroker(a: BrokerRef, b: BrokerRef): boolean {
  return a.node === b.node && a.version === b.version && a.sysdescr === b.sysdescr && a.clusterName === b.clusterName;
}

const EMPTY_BYTES = new Uint8Array(0);

const asMessage = (res: Message): Message => res;

function encodeResponse(msg: Message): Uint8Array {
  if (msg === EMPTY_SUCCESS) return EMPTY_BYTES;
  return encodeValuedResponse(msg as v3.ValuedResponse);
}

interface RequestFields {
  readonly clientinfo?: v3.ClientInfo | undefined;
  readonly conninfo?: v3.ConnInfo | undefined;
  readonly message?: v3.Message | undefined;
  readonly meta?: v3.RequestMeta | undefined;
  readonly topic?: string;
}

function topicOf(def: HookDef, r: RequestFields): string | undefined {
  if (def.topics) return r.message?.topic ?? "";
  return r.topic;
}

function isPromise<T>(v: T | Promise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === "function";
}

/** Runs the handler under its budget; never throws. */
function runHandler(hook: ProviderHook, req: Message, ctx: CallContext, budget: number): HookOutcome | Promise<HookOutcome> {
  let result: unknown;
  try {
    result = hook.handler(req as never, ctx);
  } catch (err) {
    return fallbackOutcome(hook, "error", err);
  }
  if (!isPromise(result)) return check(hook, result);
  return new Promise<HookOutcome>((resolve) => {
    let done = false;
    const timer = setTimeout(() => {
      done = true;
      const reason = new ConnectError(`handler ${hook.def.key} ran past its ${Math.round(budget)} ms budget`, Code.DeadlineExceeded);
      ctx.abort(reason);
      resolve(fallbackOutcome(hook, "timeout", reason));
    }, budget);
    result.then(
      (value) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(check(hook, value));
      },
      (err: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(fallbackOutcome(hook, "error", err));
      },
    );
  });
}

/** An outcome the framework made (validated handler answer or fallback): trusted as is. */
class Outcome implements HookOutcome {
  constructor(
    readonly decision: Decision | undefined,
    readonly fallback?: FallbackReason,
    readonly error?: unknown,
  ) {}
}

/**
 * An outcome a middleware made itself instead of passing on `next()`'s: its decision is checked
 * like a handler's answer, so a middleware cannot send EMQX an answer the hook does not accept.
 */
function fromMiddleware(hook: ProviderHook, o: unknown): HookOutcome {
  // Notification hooks always answer EmptySuccess: nothing to check (a middleware that forgot to
  // return next()'s outcome there changes nothing, so it is not reported either).
  if (hook.def.kind === "notification") return typeof o === "object" && o !== null ? (o as HookOutcome) : NOTIFIED;
  if (typeof o !== "object" || o === null || !("decision" in o)) {
    return fallbackOutcome(hook, "invalid", `a middleware returned ${describe(o)} instead of an outcome ({ decision })`);
  }
  const out = o as HookOutcome;
  const checked = check(hook, out.decision);
  if (checked.fallback !== undefined) return fallbackOutcome(hook, "invalid", `a middleware's ${String(checked.error)}`);
  return out.fallback === undefined ? checked : new Outcome(checked.decision, out.fallback, out.error);
}

const ACCESS = new Set(["allow", "deny", "no-opinion"]);

/** Validates what a handler returned against what its hook accepts. */
function check(hook: ProviderHook, value: unknown): HookOutcome {
  const kind = hook.def.kind;
  if (kind === "notification") return NOTIFIED;
  const d = value as Decision | undefined;
  const k = typeof d === "object" && d !== null ? d.kind : undefined;
  if (kind === "access") {
    if (k !== undefined && ACCESS.has(k)) return new Outcome(d);
    return fallbackOutcome(hook, "invalid", `expected allow(), deny() or noOpinion(), got ${describe(value)}`);
  }
  if (k === "keep" || k === "drop") return new Outcome(d);
  if (k === "rewrite") {
    const rw = d as Extract<Decision, { kind: "rewrite" }>;
    const problem = rw.topic !== undefined ? topicNameError(rw.topic) : undefined;
    if (problem) return fallbackOutcome(hook, "invalid", `rewrite topic ${JSON.stringify(rw.topic)}: ${problem}`);
    if (rw.qos !== undefined && rw.qos !== 0 && rw.qos !== 1 && rw.qos !== 2) {
      return fallbackOutcome(hook, "invalid", `rewrite qos must be 0, 1 or 2, got ${describe(rw.qos)}`);
    }
    if (rw.payload !== undefined && typeof rw.payload !== "string" && !(rw.payload instanceof Uint8Array)) {
      return fallbackOutcome(hook, "invalid", `rewrite payload must be a string or Uint8Array, got ${describe(rw.payload)}`);
    }
    if (rw.headers !== undefined && (typeof rw.headers !== "object" || Object.values(rw.headers).some((v) => typeof v !== "string"))) {
      return fallbackOutcome(hook, "invalid", "rewrite headers must map strings to strings");
    }
    return new Outcome(d);
  }
  return fallbackOutcome(hook, "invalid", `expected keep(), rewrite({...}) or drop(), got ${describe(value)}`);
}

const NOTIFIED: HookOutcome = Object.freeze(new Outcome(undefined));

function fallbackOutcome(hook: ProviderHook, reason: FallbackReason, error: unknown): HookOutcome {
  const kind = hook.fallback;
  const decision = kind === undefined ? undefined : ({ kind } as Decision);
  return new Outcome(decision, reason, error);
}

function describe(v: unknown): string {
  if (v === undefined) return "undefined";
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

function errorText(err: unknown): string | undefined {
  if (err === undefined) return undefined;
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Runs the middleware chain (Koa-style); a middleware that throws synchronously rejects. */
function compose(mws: readonly HookMiddleware[], call: HookCall, inner: () => Promise<HookOutcome>): Promise<HookOutcome> {
  let index = -1;
  const run = (i: number): Promise<HookOutcome> => {
    if (i <= index) return Promise.reject(new Error("hook middleware called next() more than once"));
    index = i;
    const mw = mws[i];
    if (!mw) return inner();
    try {
      return Promise.resolve(mw(call, () => run(i + 1)));
    } catch (err) {
      return Promise.reject(err);
    }
  };
  return run(0);
}
