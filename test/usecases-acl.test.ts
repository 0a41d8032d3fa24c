/** Authorization rules: semantics, validation with the failing line, the config loader. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCommand } from "../src/commands/index";
import { compileAcl, DEFAULT_ACL_RULES, loadConfig, parseConfig, type AclRequest, type AclRule } from "../src/usecases/index";

const req = (
  action: "publish" | "subscribe",
  topic: string,
  username = "alice",
  clientid = "alice-1",
  extra: Partial<AclRequest> = {},
): AclRequest => ({
  action,
  topic,
  username,
  clientid,
  ...extra,
});

describe("rule semantics", () => {
  const rules: AclRule[] = [
    { permission: "deny", action: "all", topic: "users/${username}/secret/#" },
    { permission: "allow", action: "all", topic: "users/${username}/#" },
    { permission: "allow", action: "subscribe", topic: "eq sensors/#" },
    { permission: "allow", action: "publish", topic: "devices/${clientid}/+/state" },
    { permission: "allow", action: "publish", topic: "telemetry/#", qos: [0, 1] },
    { permission: "deny", action: "publish", topic: "alerts/#", retain: true },
    { permission: "allow", action: "publish", topic: "alerts/#" },
    { permission: "allow", action: "all", topic: "#", username: "admin" },
    { permission: "allow", action: "subscribe", topic: "+/broadcast" },
  ];
  const acl = compileAcl(rules, "deny");
  const check = (r: AclRequest) => [acl.check(r).decision.kind, acl.check(r).rule];

  test("first match wins, placeholders take the client's own values", () => {
    expect(check(req("publish", "users/alice/secret/x"))).toEqual(["deny", 0]);
    expect(check(req("publish", "users/alice/x"))).toEqual(["allow", 1]);
    expect(check(req("subscribe", "users/alice"))).toEqual(["allow", 1]);
    expect(check(req("publish", "users/bob/x"))).toEqual(["deny", undefined]);
    expect(check(req("publish", "devices/alice-1/lamp/state"))).toEqual(["allow", 3]);
    expect(check(req("publish", "devices/alice-2/lamp/state"))).toEqual(["deny", undefined]);
    expect(check(req("subscribe", "devices/alice-1/lamp/state"))).toEqual(["deny", undefined]);
  });

  test("placeholder values cannot widen a rule; an empty one never matches", () => {
    expect(check(req("subscribe", "users/+/#", "+"))).toEqual(["deny", undefined]);
    expect(check(req("publish", "users/a/b/x", "a/b"))).toEqual(["deny", undefined]);
    expect(check(req("publish", "users//x", ""))).toEqual(["deny", undefined]);
  });

  test("wildcard subscriptions: eq matches literally, # is covered only by #", () => {
    expect(check(req("subscribe", "sensors/#"))).toEqual(["allow", 2]);
    expect(check(req("subscribe", "sensors/1"))).toEqual(["deny", undefined]);
    expect(check(req("subscribe", "users/alice/x/+"))).toEqual(["allow", 1]);
    expect(check(req("subscribe", "x/broadcast"))).toEqual(["allow", 8]);
    expect(check(req("subscribe", "+/broadcast"))).toEqual(["allow", 8]);
    expect(check(req("subscribe", "#"))).toEqual(["deny", 0]); // overlaps the deny of users/alice/secret/#
  });

  test("qos/retain conditions: checked when known, read strictly when not", () => {
    expect(check(req("publish", "telemetry/a", "alice", "c", { qos: 1 }))).toEqual(["allow", 4]);
    expect(check(req("publish", "telemetry/a", "alice", "c", { qos: 2 }))).toEqual(["deny", undefined]);
    // client.authorize does not carry QoS: the allow rule with a QoS condition does not match.
    expect(check(req("publish", "telemetry/a"))).toEqual(["deny", undefined]);
    // ... and a deny rule with a retain condition does.
    expect(check(req("publish", "alerts/x"))).toEqual(["deny", 5]);
    expect(check(req("publish", "alerts/x", "alice", "c", { retain: false }))).toEqual(["allow", 6]);
  });

  test("username/clientid conditions and $ topics", () => {
    expect(check(req("publish", "anything/at/all", "admin"))).toEqual(["allow", 7]);
    expect(check(req("subscribe", "$SYS/brokers", "admin"))).toEqual(["deny", undefined]);
    expect(check(req("subscribe", "$share/g/users/alice/x"))).toEqual(["allow", 1]);
  });

  test("no-match result is configurable", () => {
    expect(compileAcl([], "allow").check(req("publish", "x")).decision.kind).toBe("allow");
    expect(compileAcl([], "no-opinion").check(req("publish", "x")).decision.kind).toBe("no-opinion");
  });

  test("the index gives the same answers as a linear scan", () => {
    const many: AclRule[] = [];
    for (let i = 0; i < 500; i++) {
      many.push({
        permission: i % 3 ? "allow" : "deny",
        action: i % 2 ? "publish" : "all",
        topic: i % 7 === 0 ? `+/t${i % 5}/#` : `top${i % 20}/${i % 5 === 0 ? "${username}" : "+"}/t${i % 5}`,
      });
    }
    const indexed = compileAcl(many, "no-opinion");
    const linear = (r: AclRequest) => {
      for (let i = 0; i < many.length; i++) {
        const single = compileAcl([many[i] as AclRule], "no-opinion").check(r);
        if (single.rule !== undefined) return [single.decision.kind, i];
      }
      return ["no-opinion", undefined];
    };
    for (let k = 0; k < 300; k++) {
      const r = req(k % 2 ? "publish" : "subscribe", `top${k % 23}/${k % 3 ? "alice" : "x"}/t${k % 6}`);
      const got = indexed.check(r);
      expect([got.decision.kind, got.rule]).toEqual(linear(r));
    }
  });
});

describe("validation", () => {
  test("a bad topic fails naming the rule", () => {
    expect(() => compileAcl([{ permission: "allow", topic: "a/#/b" }])).toThrow(
      'rule #1: "a/#/b" is not a valid MQTT topic filter: # must be a whole level and the last one',
    );
    expect(() =>
      compileAcl([
        { permission: "allow", topic: "ok" },
        { permission: "allow", topic: "u/${user}" },
      ]),
    ).toThrow(
      "rule #2: unknown placeholder ${user} (allowed: ${username}, ${clientid}, ${peerhost}, ${cert_common_name}, ${cert_subject}, ${mountpoint}, ${client_attrs.NAME})",
    );
  });

  test("config file: a wrong rule fails with file, line, key and what is allowed", () => {
    const dir = mkdtempSync(join(tmpdir(), "exhook-cfg-"));
    try {
      const file = join(dir, "exhook.yaml");
      writeFileSync(
        file,
        [
          "acl:",
          "  noMatch: deny",
          "  rules:",
          "    - permission: allow",
          "      topic: users/${username}/#",
          "    - permission: allow",
          "      topic: sensors/+x",
          "    - permission: maybe",
          "      topic: a",
          "persistence:",
          "  overflow: drop-everything",
          "  colour: blue",
        ].join("\n"),
      );
      let message = "";
      try {
        loadConfig(file, {});
      } catch (err) {
        message = (err as Error).message;
      }
      expect(message.split("\n")).toEqual([
        "invalid configuration:",
        `  ${file}:7: acl.rules[1].topic: "sensors/+x" is not a valid MQTT topic filter: + must be a whole level (got "sensors/+x")`,
        `  ${file}:8: acl.rules[2].permission: Invalid option: expected one of "allow"|"deny" (got "maybe")`,
        `  ${file}:11: persistence.overflow: Invalid option: expected one of "drop-new"|"drop-oldest" (got "drop-everything")`,
        `  ${file}:12: persistence.colour: unknown setting (allowed here: enabled, topics, maxQueueBytes, batchSize, flushMs, overflow, retryMaxMs, closeTimeoutMs, retention, retentionSweep)`,
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('persistence.retention: a duration ("7d", "12h", ms); anything else names the key and the accepted forms', () => {
    expect(parseConfig({ persistence: { retention: "7d", retentionSweep: "15m" } }, {}).persistence).toMatchObject({
      retention: 604_800_000,
      retentionSweep: 900_000,
    });
    expect(parseConfig({ persistence: { retention: 1500 } }, {}).persistence.retention).toBe(1500);
    expect(parseConfig({ persistence: { retention: "36h" } }, {}).persistence.retention).toBe(129_600_000);
    expect(parseConfig({}, {}).persistence.retention).toBeUndefined();
    expect(() => parseConfig({ persistence: { retention: "7 days" } }, {})).toThrow(
      'persistence.retention: "7 days" is not a duration: use a positive number of ms or e.g. "7d", "12h", "30m", "45s", "500ms"',
    );
    expect(() => parseConfig({ persistence: { retention: 0 } }, {})).toThrow("persistence.retention");
  });

  test("environment overrides are validated and named", () => {
    // The read API moved to the server's operations port: an old variable fails the start instead of being ignored.
    expect(() => parseConfig({}, { EXHOOK_HTTP_PORT: "9010" })).toThrow(
      "EXHOOK_HTTP_PORT is no longer read: the read API is served on the server's operations port: use --metrics-port",
    );
    expect(() => parseConfig({}, { EXHOOK_DB_URL: "mysql://x" })).toThrow(
      "store.url (from EXHOOK_DB_URL): must be a postgres:// or postgresql:// URL",
    );
  });

  test("config.example.yaml is valid and spells out exactly the defaults", () => {
    const example = loadConfig(join(__dirname, "..", "config.example.yaml"), {});
    const defaults = parseConfig({}, {});
    expect(example).toEqual({ ...defaults, acl: { ...defaults.acl, rules: DEFAULT_ACL_RULES } });
  });

  test("no config at all gives the documented defaults", () => {
    const cfg = parseConfig({}, {});
    expect(cfg).toEqual({
      dataDir: "./data",
      store: { poolSize: 10 },
      auth: {
        enabled: true,
        unknownUser: "deny",
        cacheTtlMs: 10000,
        scrypt: { N: 32768, r: 8, p: 1, keylen: 32 },
        rehash: true,
        maxClientIdLength: 1024,
        hashing: { concurrency: 0, maxQueued: 1000, maxQueuedPerPeer: 32 },
        throttle: {
          enabled: true,
          perHost: { freeFailures: 20, baseDelayMs: 1000, maxDelayMs: 60000 },
          perUser: { freeFailures: 5, baseDelayMs: 1000, maxDelayMs: 30000 },
          perPair: { freeFailures: 5, baseDelayMs: 1000, maxDelayMs: 60000 },
          forgetAfterMs: 900000,
          trustTtlMs: 604800000,
          maxKeys: 100000,
        },
      },
      acl: {
        enabled: true,
        noMatch: "deny",
        useStoreRules: true,
        storeRefreshMs: 10000,
        denyOverlap: true,
        listeners: { "tcp:default": 1883, "ssl:default": 8883, "ws:default": 8083, "wss:default": 8084 },
        clientAttrs: [],
      },
      cache: {
        enabled: false,
        hooks: ["onClientAuthorize"],
        ttl: 60000,
        negativeTtl: 5000,
        jitter: 0.1,
        maxEntries: 100000,
        pollInterval: 1000,
      },
      persistence: {
        enabled: true,
        topics: ["#"],
        maxQueueBytes: 128 * 1024 * 1024,
        batchSize: 500,
        flushMs: 200,
        overflow: "drop-new",
        retryMaxMs: 5000,
        closeTimeoutMs: 10000,
        retentionSweep: 600000,
      },
      presence: { enabled: true, reorderWindowMs: 30000, maxQueueBytes: 16 * 1024 * 1024, retryMaxMs: 5000, closeTimeoutMs: 10000 },
      http: { enabled: true, queryTimeoutMs: 5000, maxConcurrentQueries: 2, maxResponseBytes: 16 * 1024 * 1024 },
      bridge: {
        enabled: false,
        partitions: 16,
        leaseMs: 15000,
        pollMs: 1000,
        forwarding: { mode: "thread", nice: 10 },
        writer: { maxQueue: 20000, batchSize: 500, lingerMs: 5, retries: 5 },
        persistBeforeRoute: { enabled: false, timeoutMs: 2000, fallback: "drop" },
        sinks: [],
      },
    });
  });
});

describe("acl CLI: list, set (validated), check", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "exhook-acl-cli-"));
    writeFileSync(
      join(dir, "exhook.yaml"),
      [
        "dataDir: " + JSON.stringify(join(dir, "data")),
        "acl:",
        "  noMatch: deny",
        "  rules:",
        '    - { permission: allow, action: all, topic: "#", username: admin }',
        '    - { permission: deny, topic: "users/${username}/secret/#" }',
      ].join("\n") + "\n",
    );
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const run = async (args: string[], stdin = "") => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCommand(["acl", ...args, "--config", join(dir, "exhook.yaml"), "--create"], {
      stdout: (t) => out.push(t),
      stderr: (t) => err.push(t),
      readStdin: async () => stdin,
      env: {},
    });
    return { code, out: out.join(""), err: err.join("") };
  };

  test("set rejects a bad rule by number and field, stores nothing; a good list is stored and listed after the config rules", async () => {
    const bad = await run(["set", "--file", "-"], '- { permission: allow, topic: "devices/#" }\n- { permission: allow, topic: "a/#/b" }\n');
    expect(bad).toEqual({
      code: 1,
      out: "",
      err: 'emqx-exhook: -: rule #2: topic: "a/#/b" is not a valid MQTT topic filter: # must be a whole level and the last one\n',
    });
    const typo = await run(["set", "--file", "-"], '[{ "permission": "alow", "topic": "x" }]');
    expect(typo.err).toBe('emqx-exhook: -: rule #1: permission: Invalid option: expected one of "allow"|"deny"\n');
    expect(await run(["set", "--file", "-"], "permission: allow\n")).toEqual({
      code: 1,
      out: "",
      err: "emqx-exhook: -: expected a list of rules, as in acl.rules\n",
    });
    writeFileSync(
      join(dir, "rules.yaml"),
      '- { permission: allow, action: publish, topic: "devices/${clientid}/#" }\n- { permission: allow, action: subscribe, topic: "eq sensors/#" }\n',
    );
    expect(await run(["set", "--file", join(dir, "rules.yaml")])).toEqual({ code: 0, out: "stored 2 ACL rules\n", err: "" });
    const list = await run(["list"]);
    expect(list.code).toBe(0);
    expect(
      list.out
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l)),
    ).toEqual([
      { n: 1, source: "acl.rules[0]", permission: "allow", action: "all", topic: "#", username: "admin" },
      { n: 2, source: "acl.rules[1]", permission: "deny", action: "all", topic: "users/${username}/secret/#" },
      { n: 3, source: "store ACL rule #1", permission: "allow", action: "publish", topic: "devices/${clientid}/#" },
      { n: 4, source: "store ACL rule #2", permission: "allow", action: "subscribe", topic: "eq sensors/#" },
    ]);
    expect(list.err).toBe("4 rules, first match wins; no match: deny\n");
  });

  test("check prints the decision and the rule that made it", async () => {
    expect((await run(["check", "--action", "publish", "--topic", "devices/d1/temp", "--clientid", "d1", "--username", "bob"])).out).toBe(
      'allow: rule 3 (store ACL rule #1) {"permission":"allow","action":"publish","topic":"devices/${clientid}/#"}\n',
    );
    expect((await run(["check", "--action", "publish", "--topic", "devices/d2/temp", "--clientid", "d1", "--username", "bob"])).out).toBe(
      "deny: no rule matched (acl.noMatch: deny)\n",
    );
    expect((await run(["check", "--action", "subscribe", "--topic", "users/admin/secret/x", "--username", "admin"])).out).toMatch(
      /^allow: rule 1 \(acl\.rules\[0\]\)/,
    );
    expect((await run(["check", "--action", "subscribe", "--topic", "users/eve/secret/x", "--username", "eve"])).out).toMatch(
      /^deny: rule 2 \(acl\.rules\[1\]\)/,
    );
    const usage = await run(["check", "--topic", "x"]);
    expect(usage.code).toBe(2);
    expect(usage.err).toContain("acl check needs --action publish or --action subscribe");
  });

  test("an empty list removes the stored rules", async () => {
    expect(await run(["set", "--file", "-"], "[]\n")).toEqual({ code: 0, out: "stored 0 ACL rules\n", err: "" });
    expect((await run(["list"])).err).toBe("2 rules, first match wins; no match: deny\n");
  });
});
