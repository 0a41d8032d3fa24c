/**
 * The use-case stack as a provider module (`make start`): authentication, authorization, message
 * persistence and presence on an embedded SQLite store in `./data` (EXHOOK_DATA_DIR). No config
 * needed; `emqx-exhook serve <this> --config FILE` (or EXHOOK_CONFIG) applies a YAML/JSON config,
 * EXHOOK_DB_URL switches to PostgreSQL. The read API (/messages, /presence, /stats) is served on the
 * server's operations port, next to /metrics and the probes: 127.0.0.1, the ExHook port + 10 unless
 * `--metrics-port` says otherwise.
 *
 * Defaults (docs/usecases.md): unknown users and wrong passwords are refused (add users with
 * `emqx-exhook users add <name> --password-stdin`); users may publish and subscribe under
 * `users/<own username>/#`, subscribe to `public/#`, publish under `public/<own username>/#`,
 * nothing else; every message reaching the hook is stored; presence of every client is kept.
 */
import { createLogger } from "../src/ops/logger.js";
import { createStack, loadConfig } from "../src/usecases/index.js";

export default async function stackProvider() {
  const cfg = loadConfig();
  // Every failure of the use cases (store outages, lost messages, webhook failures) is logged here.
  const logger = createLogger({ level: process.env["LOG_LEVEL"] || "info" });
  const stack = await createStack(cfg, { logger });
  const users = await stack.store.listUsers();
  process.stdout.write(
    `emqx-exhook stack: store ${stack.store.kind} at ${stack.store.location}; ` +
      `${users.length} user(s)${users.length === 0 ? " (add one: emqx-exhook users add <name> --password-stdin)" : ""}; ` +
      `ACL ${stack.acl()?.size ?? 0} rule(s), no match = ${cfg.acl.noMatch}; ` +
      `storing ${cfg.persistence.enabled ? cfg.persistence.topics.join(", ") : "nothing"}` +
      (stack.readApi ? `; read API ${stack.readApi.paths.join(", ")} on the operations port` : "") +
      "\n",
  );
  return stack.provider;
}
