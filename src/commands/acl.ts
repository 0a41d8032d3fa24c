/**
 * `emqx-exhook acl list | set | check` and `emqx-exhook cache invalidate`: the ACL rules in force,
 * replacing the store's rules (validated, then announced so running servers reload them at once),
 * asking the rules a question with everything EMQX would send, and dropping cached decisions.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { ExHookConfigError } from "../errors.js";
import type { AclRequest } from "../usecases/acl.js";
import { createAuthorizer, type ClientAttrRule } from "../usecases/authorizer.js";
import type { StackConfig } from "../usecases/config.js";
import { createEmqxNotifier } from "../usecases/emqx-api.js";
import { createInvalidationHub, type Invalidation } from "../usecases/invalidation.js";
import { compileAclRules, effectiveAclRules, parseAclRules } from "../usecases/stack.js";
import type { Store } from "../usecases/store.js";
import { stringOption, UsageError, type Command, type CommandIo, type CommandOption } from "./command.js";
import { commandConfig, openCommandStore, STORE_OPTIONS, withStore } from "./store-access.js";

/** A wrong invocation (exit code 2 with the usage text). */
/** The flags `acl check` reads (each the last value given), plus the repeatable `--attr`. */
export interface AclCheckFlags {
  readonly action?: string | undefined;
  readonly topic?: string | undefined;
  readonly username?: string | undefined;
  readonly clientid?: string | undefined;
  readonly peerhost?: string | undefined;
  readonly listener?: string | undefined;
  readonly sockport?: string | undefined;
  readonly cn?: string | undefined;
  readonly dn?: string | undefined;
  readonly mountpoint?: string | undefined;
  readonly qos?: string | undefined;
  readonly retain?: string | undefined;
  /** `NAME=VALUE`, for `${client_attrs.NAME}`. */
  readonly attr?: readonly string[] | undefined;
  readonly superuser?: boolean | undefined;
}

/**
 * Announces a change to every process using the store (running servers drop cached decisions or
 * reload rules) and to EMQX when `cache.emqx` is configured. Used by `acl set`, `cache invalidate`
 * and the user commands.
 */
export async function announceChange(cfg: StackConfig, store: Store, inv: Invalidation): Promise<void> {
  const hub = createInvalidationHub({
    store,
    pollMs: 0,
    bus: false,
    ...(cfg.cache.emqx ? { emqx: createEmqxNotifier(cfg.cache.emqx) } : {}),
  });
  try {
    await hub.announce(inv);
  } finally {
    await hub.close();
  }
}

/** `acl list`. */
async function listRules(cfg: StackConfig, store: Store, io: CommandIo): Promise<void> {
  const rules = await effectiveAclRules(cfg, store);
  rules.forEach(({ source, rule }, i) => {
    io.stdout(JSON.stringify({ n: i + 1, source, ...rule }) + "\n");
  });
  io.stderr(
    `${rules.length} rule${rules.length === 1 ? "" : "s"}, first match wins; no match: ${cfg.acl.noMatch}${cfg.acl.enabled ? "" : " (acl.enabled is false: not in force)"}\n`,
  );
}

/** `acl set --file RULES`: validated (with the config's rules and listeners) before anything is stored. */
async function setRules(cfg: StackConfig, store: Store, file: string | undefined, io: CommandIo): Promise<void> {
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
  // The rule schema runs the same checks compileAcl does (topic grammar, placeholders, permission);
  // compiling with the config also checks listener ids against acl.listeners.
  const rules = parseAclRules(raw, (i) => `${file}: rule #${i + 1}`);
  compileAclRules(
    cfg,
    rules.map((rule, i) => ({ source: `${file}: rule #${i + 1}`, rule })),
  );
  await store.replaceAclRules(rules);
  await announceChange(cfg, store, { scope: "rules", key: "" });
  io.stdout(
    `stored ${rules.length} ACL rule${rules.length === 1 ? "" : "s"}${cfg.acl.useStoreRules ? "" : " (acl.useStoreRules is false: the server does not read them)"}\n`,
  );
}

/** `acl check`: the answer the server would give, and the rule that made it. */
async function checkRequest(cfg: StackConfig, store: Store, f: AclCheckFlags, io: CommandIo): Promise<void> {
  if (f.action !== "publish" && f.action !== "subscribe") throw new UsageError("acl check needs --action publish or --action subscribe");
  if (f.topic === undefined || f.topic === "") throw new UsageError("acl check needs --topic T");
  const num = (name: string, v: string | undefined, max: number): number | undefined => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || Number(v) > max) throw new UsageError(`--${name} must be a number from 0 to ${max}, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  if (f.retain !== undefined && f.retain !== "true" && f.retain !== "false")
    throw new UsageError(`--retain must be true or false, got ${JSON.stringify(f.retain)}`);
  const attrs: Record<string, string> = {};
  for (const a of f.attr ?? []) {
    const eq = a.indexOf("=");
    if (eq <= 0) throw new UsageError(`--attr must be NAME=VALUE, got ${JSON.stringify(a)}`);
    attrs[a.slice(0, eq)] = a.slice(eq + 1);
  }
  const qos = num("qos", f.qos, 2);
  const sockport = num("sockport", f.sockport, 65535);
  const req: AclRequest = {
    action: f.action,
    topic: f.topic,
    username: f.username ?? "",
    clientid: f.clientid ?? "",
    ...(f.peerhost !== undefined ? { peerhost: f.peerhost } : {}),
    ...(f.listener !== undefined ? { listener: f.listener } : {}),
    ...(sockport !== undefined ? { sockport } : {}),
    ...(f.cn !== undefined ? { cn: f.cn } : {}),
    ...(f.dn !== undefined ? { dn: f.dn } : {}),
    ...(f.mountpoint !== undefined ? { mountpoint: f.mountpoint } : {}),
    ...(qos !== undefined ? { qos } : {}),
    ...(f.retain !== undefined ? { retain: f.retain === "true" } : {}),
    ...(f.attr?.length ? { clientAttrs: attrs } : {}),
  };
  const rules = await effectiveAclRules(cfg, store);
  const acl = compileAclRules(cfg, rules);
  const authorizer = createAuthorizer({ acl: () => acl, compile: () => acl, attrRules: cfg.acl.clientAttrs as ClientAttrRule[] });
  const result = authorizer.check(req, { superuser: f.superuser ?? false });
  if (result.source === "superuser") {
    io.stdout("allow: superuser (no rule looked at)\n");
    return;
  }
  const matched = result.rule === undefined ? undefined : rules[result.rule];
  io.stdout(
    `${result.decision.kind}: ${matched ? `rule ${(result.rule as number) + 1} (${matched.source}) ${JSON.stringify(matched.rule)}` : `no rule matched (acl.noMatch: ${cfg.acl.noMatch})`}\n`,
  );
}

/** `cache invalidate (--all | --user U | --client C)`. */
async function invalidateCache(
  cfg: StackConfig,
  store: Store,
  f: { all?: boolean; user?: string | undefined; client?: string | undefined },
  io: CommandIo,
): Promise<void> {
  const given = [f.all ? "all" : undefined, f.user, f.client].filter((v) => v !== undefined);
  if (given.length !== 1) throw new UsageError("cache invalidate needs exactly one of --all, --user U, --client C");
  const inv: Invalidation = f.all
    ? { scope: "all", key: "" }
    : f.user !== undefined
      ? { scope: "user", key: f.user }
      : { scope: "client", key: f.client as string };
  await announceChange(cfg, store, inv);
  io.stdout(
    `invalidated ${inv.scope === "all" ? "every cached decision" : `cached decisions of ${inv.scope} ${JSON.stringify(inv.key)}`}${cfg.cache.emqx ? " (and told EMQX)" : ""}\n`,
  );
}

export const aclList: Command = {
  name: "acl list",
  summary: "list the rules in force, in order, with their source (config, defaults, store)",
  options: STORE_OPTIONS,
  async run({ options }, io) {
    const cfg = commandConfig(options, io);
    return withStore(openCommandStore(cfg, options), async (store) => {
      await listRules(cfg, store, io);
      return 0;
    });
  },
};

export const aclSet: Command = {
  name: "acl set",
  summary: "replace the rules kept in the store; running servers reload them at once (announced), else within acl.storeRefreshMs",
  options: {
    file: {
      type: "string",
      value: "RULES",
      help: "a YAML or JSON list of rules, as in acl.rules; - reads standard input;\nan empty list removes them all",
    },
    ...STORE_OPTIONS,
  },
  async run({ options }, io) {
    const cfg = commandConfig(options, io);
    const file = stringOption(options, "file");
    if (file === undefined) throw new UsageError("acl set needs --file RULES (a YAML or JSON list of rules; - for stdin)");
    return withStore(openCommandStore(cfg, options), async (store) => {
      await setRules(cfg, store, file, io);
      return 0;
    });
  },
};

const CHECK_OPTIONS: Readonly<Record<string, CommandOption>> = {
  action: { type: "string", value: "publish|subscribe", help: "the request's action" },
  topic: { type: "string", value: "T", help: "the topic (publish) or topic filter (subscribe)" },
  username: { type: "string", value: "U", help: "the client's username (default empty)" },
  clientid: { type: "string", value: "C", help: "the client id (default empty)" },
  peerhost: { type: "string", value: "IP", help: "the client's address (for peerhost rules and ${peerhost})" },
  listener: { type: "string", value: "ID", help: "the listener, e.g. tcp:default (for listener rules)" },
  sockport: { type: "string", value: "N", help: "the listener's port (mapped to a listener through acl.listeners)" },
  cn: { type: "string", value: "CN", help: "the client certificate's common name (${cert_common_name})" },
  dn: { type: "string", value: "DN", help: "the client certificate's subject (${cert_subject})" },
  mountpoint: { type: "string", value: "M", help: "the listener's mountpoint (${mountpoint})" },
  qos: { type: "string", value: "N", help: "the QoS (EMQX never sends it to authorize: unknown reads strictly)" },
  retain: { type: "string", value: "true|false", help: "the retain flag (EMQX never sends it to authorize)" },
  attr: { type: "string", value: "NAME=VALUE", multiple: true, help: "a client attribute (${client_attrs.NAME}); repeatable" },
  superuser: { type: "boolean", help: "ask as a superuser (allowed without rules)" },
  ...STORE_OPTIONS,
};

export const aclCheck: Command = {
  name: "acl check",
  summary: "print the decision for a request and the rule that made it",
  options: CHECK_OPTIONS,
  async run({ options }, io) {
    const s = (name: string) => stringOption(options, name);
    const attr = options["attr"];
    const flags: AclCheckFlags = {
      action: s("action"),
      topic: s("topic"),
      username: s("username"),
      clientid: s("clientid"),
      peerhost: s("peerhost"),
      listener: s("listener"),
      sockport: s("sockport"),
      cn: s("cn"),
      dn: s("dn"),
      mountpoint: s("mountpoint"),
      qos: s("qos"),
      retain: s("retain"),
      attr: Array.isArray(attr) ? attr : undefined,
      superuser: options["superuser"] === true,
    };
    if (flags.action !== "publish" && flags.action !== "subscribe")
      throw new UsageError("acl check needs --action publish or --action subscribe");
    if (flags.topic === undefined || flags.topic === "") throw new UsageError("acl check needs --topic T");
    const cfg = commandConfig(options, io);
    return withStore(openCommandStore(cfg, options), async (store) => {
      await checkRequest(cfg, store, flags, io);
      return 0;
    });
  },
};

export const cacheInvalidate: Command = {
  name: "cache invalidate",
  summary: "make running servers (every worker and instance on this store) drop cached decisions; EMQX too with cache.emqx",
  options: {
    all: { type: "boolean", help: "everyone's cached decisions" },
    user: { type: "string", value: "U", help: "the cached decisions of one username" },
    client: { type: "string", value: "C", help: "the cached decisions of one client id" },
    ...STORE_OPTIONS,
  },
  async run({ options }, io) {
    const cfg = commandConfig(options, io);
    const f = { all: options["all"] === true, user: stringOption(options, "user"), client: stringOption(options, "client") };
    if ([f.all ? "all" : undefined, f.user, f.client].filter((v) => v !== undefined).length !== 1) {
      throw new UsageError("cache invalidate needs exactly one of --all, --user U, --client C");
    }
    return withStore(openCommandStore(cfg, options), async (store) => {
      await invalidateCache(cfg, store, f, io);
      return 0;
    });
  },
};
