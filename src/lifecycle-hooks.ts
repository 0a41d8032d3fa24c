/**
 * Adds steps around a provider's `client.connected` / `client.disconnected` handlers, for the
 * modules that follow connections (the per-client context, the in-memory presence tracker). The
 * user's own handler, if any, keeps running, with its settings. Pure: no I/O.
 */
import type { HookConfig, HookHandler, HookHandlers } from "./provider.js";
import type { ConnectionFields } from "./connection.js";

/** The part of a connected/disconnected request the steps read. */
export interface LifecycleRequest {
  readonly clientinfo?: ConnectionFields | undefined;
  readonly reason?: string;
}

/** The part of the handler context the steps read (the broker only when the request names no node). */
export interface LifecycleContext {
  readonly broker?: { readonly node: string } | undefined;
}

/** A step run around a user's handler. */
export type LifecycleStep = (req: LifecycleRequest, ctx: LifecycleContext) => void;

/** What runs around the user's handlers. */
export interface LifecycleSteps {
  /** Runs before the user's `onClientConnected`. */
  readonly connected?: LifecycleStep;
  /** Runs after the user's `onClientDisconnected` settled (so it can still read per-connection data). */
  readonly disconnected?: LifecycleStep;
}

/** Returns `handlers` with `onClientConnected` and `onClientDisconnected` running `steps` too. */
export function wrapLifecycle(handlers: HookHandlers, steps: LifecycleSteps): HookHandlers {
  const out: Record<string, unknown> = { ...handlers };
  if (steps.connected) out["onClientConnected"] = chain(handlers.onClientConnected, steps.connected, undefined);
  if (steps.disconnected) out["onClientDisconnected"] = chain(handlers.onClientDisconnected, undefined, steps.disconnected);
  return out as HookHandlers;
}

/** Wraps a user's connected/disconnected handler (function or config) with a step before or after it. */
function chain<K extends "onClientConnected" | "onClientDisconnected">(
  user: HookHandler<K> | HookConfig<K> | undefined,
  before: LifecycleStep | undefined,
  after: LifecycleStep | undefined,
): HookHandler<K> | HookConfig<K> {
  const fn = typeof user === "function" ? user : user?.handler;
  const handler = ((req: LifecycleRequest, ctx: LifecycleContext) => {
    before?.(req, ctx);
    if (!fn) {
      after?.(req, ctx);
      return undefined;
    }
    let result: unknown;
    try {
      result = (fn as unknown as (r: LifecycleRequest, c: unknown) => unknown)(req, ctx);
    } catch (err) {
      after?.(req, ctx);
      throw err;
    }
    if (after && typeof (result as Promise<unknown> | undefined)?.then === "function") {
      return (result as Promise<unknown>).finally(() => after(req, ctx));
    }
    after?.(req, ctx);
    return result;
  }) as unknown as HookHandler<K>;
  if (user === undefined || typeof user === "function") return handler;
  return { ...user, handler };
}
