/**
 * How the management commands (users, messages, presence, acl) reach the store: the same config
 * file and environment as `serve`, and never a new store by accident. Run in the wrong folder, a
 * command used to create an empty `./data/exhook.db` and report "no users"; now a missing store is
 * an error unless `--create` asks for one.
 */
import { existsSync } from "node:fs";
import type pg from "pg";
import { ExHookConfigError } from "../errors.js";
import { loadConfig, resolvedStore, type StackConfig } from "../usecases/config.js";
import { loadOptional } from "../usecases/optional-dependency.js";
import { openStore } from "../usecases/stack.js";
import type { Store } from "../usecases/store.js";
import { stringOption, type CommandIo, type CommandOption, type OptionValues } from "./command.js";

/** The options of every command that uses the store. */
export const STORE_OPTIONS: Readonly<Record<string, CommandOption>> = {
  config: {
    type: "string",
    value: "FILE",
    help: "YAML/JSON config (default: env EXHOOK_CONFIG); EXHOOK_DATA_DIR and EXHOOK_DB_URL also apply",
  },
  create: { type: "boolean", help: "create the store when it does not exist yet (default: a missing store is an error)" },
};

/** The configuration a command runs with: `--config` (else `EXHOOK_CONFIG`) and the environment. */
export function commandConfig(options: OptionValues, io: CommandIo): StackConfig {
  return loadConfig(stringOption(options, "config"), io.env);
}

/** Opens the configured store; refuses to create one unless `--create` was given. */
export async function openCommandStore(cfg: StackConfig, options: OptionValues): Promise<Store> {
  if (options["create"] !== true) {
    const s = resolvedStore(cfg);
    const hint =
      "run the command where the server keeps its data, point --config / EXHOOK_DATA_DIR / EXHOOK_DB_URL at it, or pass --create";
    if (s.kind === "sqlite" && s.file !== ":memory:" && !existsSync(s.file)) {
      throw new ExHookConfigError(`no store at ${s.file} (dataDir ${cfg.dataDir}): ${hint} to create an empty one`);
    }
    if (s.kind === "postgres" && !(await postgresStoreExists(s.url))) {
      throw new ExHookConfigError(`no emqx-exhook tables in the PostgreSQL database of store.url: ${hint} to create them`);
    }
  }
  // In the command's own thread: a one-shot process, nothing else waits on its event loop.
  return openStore(cfg, { worker: false });
}

async function postgresStoreExists(url: string): Promise<boolean> {
  const { Client } = loadOptional<typeof pg>("pg", "the PostgreSQL store");
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query("SELECT to_regclass('exhook_schema_version') IS NOT NULL AS ok");
    return r.rows[0]?.["ok"] === true;
  } finally {
    await c.end();
  }
}

/** Runs `fn` on the store once `open` resolves, and closes the store whatever happens. */
export async function withStore<T>(open: Promise<Store>, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await open;
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}
