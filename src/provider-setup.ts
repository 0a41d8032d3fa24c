/**
 * The contract between `emqx-exhook serve <module>` and a provider module: the module's default
 * export (or export `provider`) is a provider from `defineProvider()`, or a function that receives a
 * {@link ProviderSetup} and returns one (it may be async). The function form is how a module gets
 * the `--config` path and the server's logger, and registers what to close when the server stops.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ExHookConfigError, isExHookConfigError } from "./errors.js";
import type { Registry } from "prom-client";
import type { ReadinessCheck } from "./ops/http-probes.js";
import type { Logger, Provider } from "./provider.js";

/** What `emqx-exhook serve` hands a provider module's default export when that is a function. */
export interface ProviderSetup {
  /** Absolute path of `--config FILE` (or `EXHOOK_CONFIG`); `undefined` when none was given. The CLI checked that it exists. */
  readonly configPath: string | undefined;
  /** The server's logger (pino): log through it so your lines share its format, level and destination. */
  readonly logger: Logger;
  /**
   * Registers a function to run after the server stopped and drained (on SIGTERM/SIGINT), e.g. to
   * flush queues and close a database. Functions run one after another, the last registered first;
   * a failure is logged and the others still run.
   */
  onClose(fn: () => void | Promise<void>): void;
  /**
   * A prom-client registry for the module's own metrics: served on the server's `/metrics` next to
   * the hook metrics (with `--metrics-port`). The use-case stack registers its bridge metrics here.
   */
  readonly metricsRegistry?: Registry;
  /** Adds conditions to `/readyz`: it answers 503 while any check is not ok (the stack: bridged engines with `readiness: true`). */
  addReadinessCheck?(check: () => readonly ReadinessCheck[]): void;
}

/** A provider module's function form. */
export type ProviderFactory = (setup: ProviderSetup) => Provider | Promise<Provider>;

/** What loading a provider module gave. */
export interface LoadedProviderModule {
  readonly provider: Provider;
  /** Whether the module took a {@link ProviderSetup} (a function); a plain provider cannot read `--config`. */
  readonly tookSetup: boolean;
}

/** Imports a provider module and returns its provider (calling its function form with `setup`). */
export async function loadProviderModule(modulePath: string, setup: ProviderSetup): Promise<LoadedProviderModule> {
  const url = pathToFileURL(resolve(modulePath)).href;
  let ns: Record<string, unknown>;
  try {
    ns = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    if (isExHookConfigError(err)) throw err;
    throw new ExHookConfigError(`cannot load provider module ${modulePath}: ${(err as Error).message}`);
  }
  // A CommonJS module compiled from `export default` arrives as { default: { __esModule, default } }.
  const inner = ns["default"] as Record<string, unknown> | undefined;
  const mod = inner && typeof inner === "object" && "__esModule" in inner ? inner : ns;
  let candidate = mod["default"] ?? mod["provider"];
  const tookSetup = typeof candidate === "function";
  if (tookSetup) candidate = await (candidate as ProviderFactory)(setup);
  if (!candidate || typeof (candidate as Provider).hookSpecs !== "function") {
    throw new ExHookConfigError(
      `${modulePath} must export a provider from defineProvider() as default export or as "provider" (or a function returning one)`,
    );
  }
  return { provider: candidate as Provider, tookSetup };
}
