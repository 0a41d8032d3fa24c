/**
 * What a handler knows about the call it serves: which hook, which wire package, which broker,
 * how much time is left, and a signal that fires when the answer is no longer wanted.
 */
import { createContextValues, type ContextValues } from "@connectrpc/connect";
import type { RequestMeta } from "../gen/emqx/exhook/v3/exhook_pb.js";
import type { HookKey, WirePackage } from "./hooks.js";

/** What is known about the EMQX node that sent a call. */
export interface BrokerRef {
  /** Erlang node name, e.g. `emqx@10.0.0.1` (empty when EMQX did not say: 4.3 before 4.3.14). */
  readonly node: string;
  /** EMQX release, e.g. `5.8.9` (from `RequestMeta`, or from `OnProviderLoaded` when absent). */
  readonly version: string;
  readonly sysdescr: string;
  readonly clusterName: string;
}

/** The context passed to every handler. Read-only for handlers except `values`. */
export interface HookContext {
  /** Handler key, e.g. `onClientAuthenticate`. */
  readonly key: HookKey;
  /** Hook name as EMQX 5.x/6.x calls it, e.g. `client.authenticate`. */
  readonly hook: string;
  /** The wire package of this call: `v1` (EMQX 4.x), `v2` (5.0–5.8), `v3` (5.9+/6.x). */
  readonly package: WirePackage;
  /** The broker on the other side, when it said who it is. */
  readonly broker: BrokerRef | undefined;
  /** The request's `meta` as sent (absent on EMQX 4.3 before 4.3.14 and 4.4.0–4.4.2). */
  readonly meta: RequestMeta | undefined;
  /** Client id the call is about (`clientinfo`, `conninfo` or `message.from`), or "". */
  readonly clientId: string;
  /**
   * Aborted when the handler's budget runs out (the framework has then already answered with the
   * hook's fallback) or when EMQX cancels the call.
   */
  readonly signal: AbortSignal;
  /** When the framework stops waiting for this handler, in `Date.now()` milliseconds. */
  readonly deadline: number;
  /** Milliseconds left until {@link deadline} (never negative). */
  timeRemaining(): number;
  /** Per-call values for middleware and handlers (`createContextKey` from Connect). */
  readonly values: ContextValues;
}

/** @internal What a {@link CallContext} is made from (one object, so no argument can be misplaced). */
export interface CallContextInit {
  readonly key: HookKey;
  readonly hook: string;
  readonly package: WirePackage;
  /** The broker when the request has no `meta` (v1: from `OnProviderLoaded`). */
  readonly knownBroker: BrokerRef | undefined;
  readonly meta: RequestMeta | undefined;
  readonly clientId: string;
  /** `Date.now()` ms when the framework stops waiting for the handler. */
  readonly deadline: number;
  /** The transport's own signal (the Connect path), if it has one. */
  readonly signal?: AbortSignal | undefined;
  /** The transport's cancellation hook (`CallInfo.bindAbort`), bound when the signal is first read. */
  readonly bindAbort?: ((target: CallContext) => void) | undefined;
}

/** @internal The concrete context; the signal and values are created only when read. */
export class CallContext implements HookContext {
  readonly key: HookKey;
  readonly hook: string;
  readonly meta: RequestMeta | undefined;
  readonly clientId: string;
  readonly deadline: number;
  private readonly package_: WirePackage;
  private readonly knownBroker: BrokerRef | undefined;
  private readonly callSignal: AbortSignal | undefined;
  private readonly bindCancel: ((target: CallContext) => void) | undefined;
  private controller: AbortController | undefined;
  private valuesStore: ContextValues | undefined;
  private brokerFromMeta: BrokerRef | undefined;
  private aborted: unknown = undefined;

  constructor(init: CallContextInit) {
    this.key = init.key;
    this.hook = init.hook;
    this.package_ = init.package;
    this.knownBroker = init.knownBroker;
    this.meta = init.meta;
    this.clientId = init.clientId;
    this.deadline = init.deadline;
    this.callSignal = init.signal;
    this.bindCancel = init.bindAbort;
  }

  get package(): WirePackage {
    return this.package_;
  }

  get broker(): BrokerRef | undefined {
    const meta = this.meta;
    if (meta === undefined) return this.knownBroker;
    return (this.brokerFromMeta ??= { node: meta.node, version: meta.version, sysdescr: meta.sysdescr, clusterName: meta.clusterName });
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      const controller = new AbortController();
      this.controller = controller;
      if (this.aborted !== undefined) controller.abort(this.aborted);
      else if (this.callSignal) {
        const parent = this.callSignal;
        if (parent.aborted) controller.abort(parent.reason);
        else parent.addEventListener("abort", () => controller.abort(parent.reason), { once: true });
      }
      if (this.aborted === undefined) this.bindCancel?.(this);
    }
    return this.controller.signal;
  }

  get values(): ContextValues {
    return (this.valuesStore ??= createContextValues());
  }

  timeRemaining(): number {
    return Math.max(0, this.deadline - Date.now());
  }

  /** @internal */
  abort(reason: unknown): void {
    if (this.aborted !== undefined) return;
    this.aborted = reason;
    this.controller?.abort(reason);
  }
}
