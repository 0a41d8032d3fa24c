/**
 * The use-case stack as a provider module (`make start`): authentication, authorization, message
 * persistence and presence on an embedded SQLite store in `./data` (EXHOOK_DATA_DIR), with the HTTP
 * read path on 127.0.0.1:9010. No config needed; `emqx-exhook serve <this> --config FILE` (or
 * EXHOOK_CONFIG) applies a YAML/JSON config, EXHOOK_DB_URL switches to PostgreSQL.
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
  // The use cases log their failure paths (bridge engine down, outbox full, ...) through it.
  const stack = await createStack(cfg, { logger: createLogger({ level: process.env["LOG_LEVEL"] || "info" }) });
  const users = await stack.store.listUsers();
  const http = stack.http?.server.address();
  process.stdout.write(
    `emqx-exhook stack: store ${stack.store.kind} at ${stack.store.location}; ` +
      `${users.length} user(s)${users.length === 0 ? " (add one: emqx-exhook users add <name> --password-stdin)" : ""}; ` +
      `ACL ${stack.acl()?.size ?? 0} rule(s), no match = ${cfg.acl.noMatch}; ` +
      `storing ${cfg.persistence.enabled ? cfg.persistence.topics.join(", ") : "nothing"}` +
      (stack.bridge ? `; bridging to ${stack.bridge.sinks.map((s) => `${s.name} (${s.kind})`).join(", ")}` : "") +
      (http && typeof http === "object" ? `; read API http://${http.address}:${http.port}/messages, /presence` : "") +
      "\n",
  );
  return stack.provider;
}
