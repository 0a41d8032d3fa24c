/**
 * CLI subcommands of the use cases, run against the configured store (the same config file and
 * environment as `serve`):
 *
 *   emqx-exhook users add <name> (--password-stdin | --password X) [--clientid PATTERN]...
 *   emqx-exhook users list
 *   emqx-exhook users remove <name>
 *   emqx-exhook messages query [--topic FILTER] [--since ISO] [--until ISO] [--limit N] [--order asc|desc]
 *   emqx-exhook messages prune --older-than DURATION
 *   emqx-exhook presence list [--online | --offline] [--clientid ID]
 *   emqx-exhook acl list
 *   emqx-exhook acl set --file RULES      (YAML or JSON list of rules; "-" = stdin)
 *   emqx-exhook acl check --action publish|subscribe --topic T [--username U] [--clientid C]
 *   emqx-exhook outbox status | list | replay | purge     (src/commands/outbox.ts)
 *
 * Every command takes `--config FILE` (default `EXHOOK_CONFIG`). Messages and presence are printed as
 * JSON lines. Passwords are never printed or logged; prefer `--password-stdin` (`--password` shows
 * up in shell history and `ps`).
 */
import { addUser, usernameError } from "../usecases/auth.js";
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { ExHookConfigError } from "../errors.js";
import { loadConfig, parseDuration, type StackConfig } from "../usecases/config.js";
import { createMessageRetention } from "../usecases/persistence.js";
import { messageJson, messageQueryFrom, presenceJson } from "../usecases/http.js";
import { compileAclRules, effectiveAclRules, openStore, parseAclRules } from "../usecases/stack.js";
import type { Store } from "../usecases/store.js";
import { OUTBOX_USAGE, OutboxUsageError, runOutboxCommand } from "./outbox.js";

/** The subcommands this module runs. */
export const SUBCOMMANDS: readonly string[] = ["users", "messages", "presence", "acl", "outbox"];

/** Where a command reads and writes. */
export interface CommandIo {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Reads all of standard input. */
  readonly readStdin: () => Promise<string>;
  readonly env: NodeJS.ProcessEnv;
}

export const COMMANDS_USAGE = `usage:
  emqx-exhook users add <name> (--password-stdin | --password X) [--clientid PATTERN]... [--config FILE]
  emqx-exhook users list [--config FILE]
  emqx-exhook users remove <name> [--config FILE]
  emqx-exhook messages query [--topic FILTER] [--since ISO] [--until ISO] [--limit N] [--order asc|desc] [--config FILE]
  emqx-exhook messages prune --older-than DURATION [--config FILE]
  emqx-exhook presence list [--online | --offline] [--clientid ID] [--config FILE]
  emqx-exhook acl list [--config FILE]
  emqx-exhook acl set --file RULES [--config FILE]
  emqx-exhook acl check --action publish|subscribe --topic T [--username U] [--clientid C] [--config FILE]
${OUTBOX_USAGE}
  --clientid PATTERN  (users add; repeatable) client ids the user may connect with, * = any run of
                      characters; none = any client id
  --older-than D      (messages prune) delete messages whose EMQX timestamp is older than D:
                      e.g. 7d, 12h, 30m, 45s (persistence.retention does this on a timer)
  --file RULES        (acl set) a YAML or JSON list of rules, as in acl.rules; replaces the rules
                      kept in the store (a running server reloads them within acl.storeRefreshMs);
                      - reads standard input; an empty list removes them all
  --config FILE       YAML/JSON config (env EXHOOK_CONFIG); EXHOOK_DATA_DIR / EXHOOK_DB_URL also apply
`;

class UsageError extends Error {}

interface Parsed {
  readonly positional: string[];
  readonly flags: Map<string, string[]>;
}

const VALUE_FLAGS = new Set(["--password", "--clientid", "--config", "--topic", "--since", "--until", "--limit", "--order", "--older-than", "--file", "--action", "--username", "--sink"]);
const BOOL_FLAGS = new Set(["--password-stdin", "--online", "--offline", "--parked", "--all"]);

function parse(argv: readonly string[]): Parsed {
  const positional: string[] = [];
  const flags = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith("--")) {
      positional.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (BOOL_FLAGS.has(name)) {
      flags.set(name, ["true"]);
    } else if (VALUE_FLAGS.has(name)) {
      const v = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new UsageError(`${name} needs a value`);
      flags.set(name, [...(flags.get(name) ?? []), v]);
    } else throw new UsageError(`unknown option ${name}`);
  }
  return { positional, flags };
}

/** Runs one subcommand; resolves with the process exit code (0 ok, 1 failure, 2 usage error). */
export async function runCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  let store: Store | undefined;
  try {
    const { positional, flags } = parse(argv);
    const one = (f: string) => flags.get(f)?.at(-1);
    const [group, action, ...rest] = positional;
    const key = `${group} ${action}`;
    const known = ["users add", "users list", "users remove", "messages query", "messages prune", "presence list", "acl list", "acl set", "acl check", "outbox status", "outbox list", "outbox replay", "outbox purge"];
    if (!known.includes(key)) throw new UsageError(`unknown command ${JSON.stringify(positional.slice(0, 2).join(" "))}`);
    const cfg = loadConfig(one("--config"), io.env);
    if (key === "users add") {
      const name = rest[0];
      if (name === undefined || rest.length > 1) throw new UsageError("users add takes one <name>");
      const uerr = usernameError(name);
      if (uerr) throw new UsageError(uerr);
      let password = one("--password");
      if (flags.has("--password-stdin")) {
        if (password !== undefined) throw new UsageError("give --password-stdin or --password, not both");
        password = (await io.readStdin()).replace(/\r?\n$/, "");
      } else if (password === undefined) throw new UsageError("users add needs --password-stdin (recommended) or --password X");
      else io.stderr("emqx-exhook: warning: --password is visible in shell history and process lists; prefer --password-stdin\n");
      if (password.length === 0) throw new UsageError("the password is empty");
      store = await openStore(cfg);
      const existed = (await store.getUser(name)) !== undefined;
      const user = await addUser(store, name, password, { clientIds: flags.get("--clientid") ?? [], scrypt: cfg.auth.scrypt });
      io.stdout(`${existed ? "updated" : "added"} user ${user.username}${user.clientIds.length ? ` (client ids: ${user.clientIds.join(", ")})` : ""}\n`);
    } else if (key === "users list") {
      if (rest.length) throw new UsageError("users list takes no arguments");
      store = await openStore(cfg);
      const users = await store.listUsers();
      for (const u of users) io.stdout(`${u.username}\tclient ids: ${u.clientIds.length ? u.clientIds.join(", ") : "any"}\tupdated ${new Date(u.updatedAt).toISOString()}\n`);
      if (users.length === 0) io.stderr("no users\n");
    } else if (key === "users remove") {
      const name = rest[0];
      if (name === undefined || rest.length > 1) throw new UsageError("users remove takes one <name>");
      store = await openStore(cfg);
      if (!(await store.removeUser(name))) {
        io.stderr(`emqx-exhook: no user ${JSON.stringify(name)}\n`);
        return 1;
      }
      io.stdout(`removed user ${name}\n`);
    } else if (key === "messages query") {
      if (rest.length) throw new UsageError("messages query takes no positional arguments");
      let query;
      try {
        query = messageQueryFrom({ topic: one("--topic"), since: one("--since"), until: one("--until"), limit: one("--limit"), order: one("--order") });
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      store = await openStore(cfg);
      for (const m of await store.queryMessages(query)) io.stdout(JSON.stringify(messageJson(m)) + "\n");
    } else if (key === "messages prune") {
      if (rest.length) throw new UsageError("messages prune takes no positional arguments");
      const given = one("--older-than");
      if (given === undefined) throw new UsageError("messages prune needs --older-than DURATION (e.g. 7d)");
      const maxAgeMs = parseDuration(given);
      if (maxAgeMs === undefined) throw new UsageError(`--older-than ${JSON.stringify(given)} is not a duration: use e.g. 7d, 12h, 30m, 45s`);
      store = await openStore(cfg);
      const retention = createMessageRetention({ store, maxAgeMs, everyMs: 0 });
      const deleted = await retention.sweep();
      io.stdout(`deleted ${deleted} message${deleted === 1 ? "" : "s"} older than ${new Date(Date.now() - maxAgeMs).toISOString()}\n`);
    } else if (group === "outbox") {
      if (rest.length) throw new UsageError(`outbox ${action} takes no positional arguments`);
      store = await openStore(cfg);
      const values = { sink: one("--sink"), parked: flags.has("--parked"), all: flags.has("--all"), limit: one("--limit") };
      try {
        return await runOutboxCommand(action as string, values, cfg, store, io);
      } catch (err) {
        throw err instanceof OutboxUsageError ? new UsageError(err.message) : err;
      }
    } else if (group === "acl") {
      if (rest.length) throw new UsageError(`acl ${action} takes no positional arguments`);
      store = await openStore(cfg);
      await aclCommand(action as string, cfg, store, one, io);
    } else {
      if (rest.length) throw new UsageError("presence list takes no positional arguments");
      if (flags.has("--online") && flags.has("--offline")) throw new UsageError("give --online or --offline, not both");
      store = await openStore(cfg);
      const id = one("--clientid");
      let list;
      if (id !== undefined) {
        const p = await store.getPresence(id);
        list = p ? [p] : [];
      } else {
        list = await store.listPresence(flags.has("--online") ? { online: true } : flags.has("--offline") ? { online: false } : {});
      }
      for (const p of list) io.stdout(JSON.stringify(presenceJson(p)) + "\n");
    }
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`emqx-exhook: ${err.message}\n\n${COMMANDS_USAGE}`);
      return 2;
    }
    io.stderr(`emqx-exhook: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await store?.close();
  }
}

/** `acl list | set | check`. */
async function aclCommand(action: string, cfg: StackConfig, store: Store, one: (flag: string) => string | undefined, io: CommandIo): Promise<void> {
  if (action === "list") {
    const rules = await effectiveAclRules(cfg, store);
    rules.forEach(({ source, rule }, i) => io.stdout(JSON.stringify({ n: i + 1, source, ...rule }) + "\n"));
    io.stderr(`${rules.length} rule${rules.length === 1 ? "" : "s"}, first match wins; no match: ${cfg.acl.noMatch}${cfg.acl.enabled ? "" : " (acl.enabled is false: not in force)"}\n`);
    return;
  }
  if (action === "set") {
    const file = one("--file");
    if (file === undefined) throw new UsageError("acl set needs --file RULES (a YAML or JSON list of rules; - for stdin)");
    const text = file === "-" ? await io.readStdin() : readFileSync(file, "utf8");
    let raw: unknown;
    try {
      raw = parseYaml(text);
    } catch (err) {
      throw new ExHookConfigError(`${file}: not YAML or JSON: ${(err as Error).message.split("\n")[0]}`);
    }
    if (raw === null || raw === undefined) raw = [];
    if (!Array.isArray(raw)) throw new ExHookConfigError(`${file}: expected a list of rules, as in acl.rules`);
    // The rule schema runs the same checks compileAcl does (topic grammar, placeholders, permission).
    const rules = parseAclRules(raw, (i) => `${file}: rule #${i + 1}`);
    await store.replaceAclRules(rules);
    io.stdout(`stored ${rules.length} ACL rule${rules.length === 1 ? "" : "s"}${cfg.acl.useStoreRules ? "" : " (acl.useStoreRules is false: the server does not read them)"}\n`);
    return;
  }
  const act = one("--action");
  const topic = one("--topic");
  if (act !== "publish" && act !== "subscribe") throw new UsageError("acl check needs --action publish or --action subscribe");
  if (topic === undefined || topic === "") throw new UsageError("acl check needs --topic T");
  const rules = await effectiveAclRules(cfg, store);
  const acl = compileAclRules(cfg, rules);
  const result = acl.check({ action: act, topic, username: one("--username") ?? "", clientid: one("--clientid") ?? "" });
  const matched = result.rule === undefined ? undefined : rules[result.rule];
  io.stdout(
    `${result.decision.kind}: ${matched ? `rule ${(result.rule as number) + 1} (${matched.source}) ${JSON.stringify(matched.rule)}` : `no rule matched (acl.noMatch: ${cfg.acl.noMatch})`}\n`,
  );
}

/** Reads all of process.stdin as UTF-8. */
export function readProcessStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on("data", (c: Buffer) => chunks.push(c));
    process.stdin.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    process.stdin.on("error", reject);
  });
}
