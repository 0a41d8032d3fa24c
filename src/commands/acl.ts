/** `acl list | set | check`: the rules in force, the rules kept in the store, and a dry run of a request. */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { ExHookConfigError } from "../errors.js";
import { compileAclRules, effectiveAclRules, parseAclRules } from "../usecases/stack.js";
import { stringOption, UsageError, type Command } from "./command.js";
import { commandConfig, openCommandStore, STORE_OPTIONS, withStore } from "./store-access.js";

export const aclList: Command = {
  name: "acl list",
  summary: "list the rules in force, in order, with their source (config, defaults, store)",
  options: STORE_OPTIONS,
  async run({ options }, io) {
    const cfg = commandConfig(options, io);
    return withStore(openCommandStore(cfg, options), async (store) => {
      const rules = await effectiveAclRules(cfg, store);
      rules.forEach(({ source, rule }, i) => {
        io.stdout(JSON.stringify({ n: i + 1, source, ...rule }) + "\n");
      });
      io.stderr(`${rules.length} rule${rules.length === 1 ? "" : "s"}, first match wins; no match: ${cfg.acl.noMatch}${cfg.acl.enabled ? "" : " (acl.enabled is false: not in force)"}\n`);
      return 0;
    });
  },
};

export const aclSet: Command = {
  name: "acl set",
  summary: "replace the rules kept in the store (a running server reloads them within acl.storeRefreshMs)",
  options: {
    file: { type: "string", value: "RULES", help: "a YAML or JSON list of rules, as in acl.rules; - reads standard input;\nan empty list removes them all" },
    ...STORE_OPTIONS,
  },
  async run({ options }, io) {
    const file = stringOption(options, "file");
    if (file === undefined) throw new UsageError("acl set needs --file RULES (a YAML or JSON list of rules; - for stdin)");
    const cfg = commandConfig(options, io);
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
    return withStore(openCommandStore(cfg, options), async (store) => {
      await store.replaceAclRules(rules);
      io.stdout(`stored ${rules.length} ACL rule${rules.length === 1 ? "" : "s"}${cfg.acl.useStoreRules ? "" : " (acl.useStoreRules is false: the server does not read them)"}\n`);
      return 0;
    });
  },
};

export const aclCheck: Command = {
  name: "acl check",
  summary: "print the decision for a request and the rule that made it",
  options: {
    action: { type: "string", value: "publish|subscribe", help: "the request's action" },
    topic: { type: "string", value: "T", help: "the topic (publish) or topic filter (subscribe)" },
    username: { type: "string", value: "U", help: "the client's username (default empty)" },
    clientid: { type: "string", value: "C", help: "the client id (default empty)" },
    ...STORE_OPTIONS,
  },
  async run({ options }, io) {
    const act = stringOption(options, "action");
    const topic = stringOption(options, "topic");
    if (act !== "publish" && act !== "subscribe") throw new UsageError("acl check needs --action publish or --action subscribe");
    if (topic === undefined || topic === "") throw new UsageError("acl check needs --topic T");
    const cfg = commandConfig(options, io);
    return withStore(openCommandStore(cfg, options), async (store) => {
      const rules = await effectiveAclRules(cfg, store);
      const acl = compileAclRules(cfg, rules);
      const result = acl.check({ action: act, topic, username: stringOption(options, "username") ?? "", clientid: stringOption(options, "clientid") ?? "" });
      const matched = result.rule === undefined ? undefined : rules[result.rule];
      io.stdout(
        `${result.decision.kind}: ${matched ? `rule ${(result.rule as number) + 1} (${matched.source}) ${JSON.stringify(matched.rule)}` : `no rule matched (acl.noMatch: ${cfg.acl.noMatch})`}\n`,
      );
      return 0;
    });
  },
};
