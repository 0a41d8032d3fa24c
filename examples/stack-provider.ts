/**
 * The use-case stack as a provider module (`make start`): authentication, authorization, message
 * persistence and presence on an embedded SQLite store in `./data`. The factory lives in
 * src/usecases/stack-provider.ts (`stackProvider` from `emqx-exhook/usecases`), so an installed
 * package serves it the same way:
 *
 *   // stack.mjs
 *   export { stackProvider as default } from "emqx-exhook/usecases";
 *
 * `emqx-exhook serve` calls it with { configPath, logger, onClose }: the `--config` file, the
 * server's logger, and where to register the stack's close (run after the server drained).
 */
export { stackProvider as default } from "../src/usecases/index.js";
