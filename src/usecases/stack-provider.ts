/**
 * The use-case stack as a provider module for `emqx-exhook serve` (what `make start` serves):
 * authentication, authorization, message persistence and presence on an embedded SQLite store in
 * `./data` (EXHOOK_DATA_DIR); its read API (/messages, /presence, /stats) is served on the server's
 * operations port, next to /metrics and the probes (127.0.0.1, the ExHook port + 10 unless
 * `--metrics-port` says otherwise). Serve it from a one-line module of your own:
 *
 * ```js
 * // stack.mjs, then: npx emqx-exhook serve stack.mjs --config exhook.yaml
 * export { stackProvider as default } from "emqx-exhook/usecases";
 * ```
 *
 * `--config FILE` (or EXHOOK_CONFIG) applies a YAML/JSON config; EXHOOK_DB_URL switches to
 * PostgreSQL. Defaults (docs/usecases.md): unknown users and wrong passwords are refused (add users
 * with `emqx-exhook users add <name> --password-stdin`); users may publish and subscribe under
 * `users/<own username>/#`, subscribe to `public/#`, publish under `public/<own username>/#`,
 * nothing else; every message reaching the hook is stored; presence of every client is kept.
 */
import type { Provider } from "../provider.js";
import type { ProviderSetup } from "../provider-setup.js";
import { loadConfig } from "./config.js";
import { createStack } from "./stack.js";

/** Builds the stack from `setup.configPath`, logs through the server's logger and closes with the server. */
export async function stackProvider(setup: ProviderSetup): Promise<Provider> {
  const cfg = loadConfig(setup.configPath);
  const stack = await createStack(cfg, { logger: setup.logger, ...(setup.metricsRegistry ? { registry: setup.metricsRegistry } : {}) });
  setup.onClose(() => stack.close());
  const bridge = stack.bridge;
  if (bridge) setup.addReadinessCheck?.(() => bridge.readiness());
  const users = await stack.store.listUsers();
  setup.logger.info(
    {
      store: stack.store.kind,
      location: stack.store.location,
      users: users.length,
      aclRules: stack.acl()?.size ?? 0,
      aclNoMatch: cfg.acl.noMatch,
      persisting: cfg.persistence.enabled ? cfg.persistence.topics : [],
      ...(bridge ? { bridging: cfg.bridge.sinks.map((s) => `${s.name} (${s.kind})`), forwarding: bridge.forwarding } : {}),
      ...(stack.readApi ? { readApi: `${stack.readApi.paths.join(", ")} on the operations port` } : {}),
    },
    users.length === 0
      ? "use-case stack ready; no users yet (add one: emqx-exhook users add <name> --password-stdin)"
      : "use-case stack ready",
  );
  return stack.provider;
}
