/**
 * The bridge's configuration and operations surface without engines: config validation messages
 * (each says what to fix), destination templates per engine, a missing engine client package, and
 * the `outbox` CLI commands on a real SQLite store.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCommand } from "../src/commands/index";
import { keyHash } from "../src/usecases/bridge/outbox-shared";
import { createFakeEmqx } from "../src/testing/index";
import { compileTemplate, createBridge, createStack, openSqliteStore, parseConfig, type OutboxEntry } from "../src/usecases/index";
import { memoryLogger } from "./helpers/bridge";
import { compileTree, ROOT } from "./helpers/compile";

const values = { topic: "a/b.c/ /*", clientid: "dev.1", username: "", node: "emqx@10.0.0.1", hook: "message.publish", qos: "1" };

describe("destination templates", () => {
  test("NATS: topic levels become tokens, unsafe characters are percent-encoded, empty values become _", () => {
    expect(compileTemplate("mqtt.${topic}", "nats", "x")(values)).toBe("mqtt.a.b%2Ec.%20.%2A");
    expect(compileTemplate("u.${username}.${clientid}.${node}.${qos}", "nats", "x")(values)).toBe("u._.dev%2E1.emqx@10%2E0%2E0%2E1.1");
    expect(compileTemplate("ev.${hook}", "nats", "x")({ ...values, hook: "client.connected" })).toBe("ev.client.connected");
  });
  test("AMQP: / and . swap in the topic (RabbitMQ's MQTT convention); Redis keeps values as they are", () => {
    expect(compileTemplate("mqtt.${topic}", "amqp", "x")(values)).toBe("mqtt.a.b/c. .*");
    expect(compileTemplate("s:${clientid}:${topic}", "raw", "x")(values)).toBe("s:dev.1:a/b.c/ /*");
  });
  test("bad templates fail at start, naming the setting", () => {
    expect(() => compileTemplate("mqtt.${topik}", "nats", "bridge.sinks[0].subject")).toThrow(
      'bridge.sinks[0].subject: unknown placeholder ${topik} in "mqtt.${topik}" (allowed: ${topic}, ${clientid}, ${username}, ${node}, ${hook}, ${qos})',
    );
    expect(() => compileTemplate("mqtt..${topic}", "nats", "s")).toThrow(
      's: "mqtt..${topic}" cannot make a valid destination: a NATS subject cannot have an empty token',
    );
    expect(() => compileTemplate("mqtt.>", "nats", "s")).toThrow("cannot contain the wildcards");
    expect(() => compileTemplate("x".repeat(300), "amqp", "s")).toThrow("an AMQP routing key is at most 255 bytes");
  });
});

describe("bridge config", () => {
  const sink = { name: "s1", kind: "nats" };
  test("defaults of a sink", () => {
    const cfg = parseConfig({ bridge: { enabled: true, sinks: [sink] } });
    expect(cfg.bridge.sinks[0]).toEqual({
      name: "s1",
      kind: "nats",
      hooks: ["message.publish"],
      topics: ["#"],
      batch: { size: 500, lingerMs: 5 },
      outbox: { maxDepth: 1_000_000, overflow: "refuse-new" },
      retry: { initialMs: 200, maxMs: 30_000, maxAttempts: 10 },
      confirmTimeoutMs: 5000,
      readiness: false,
      servers: ["nats://127.0.0.1:4222"],
      subject: "mqtt.${topic}",
      eventSubject: "mqtt_events.${hook}",
    });
  });
  test("wrong values name the key, what was given and what is allowed", () => {
    const bad = (bridge: unknown) => () => parseConfig({ bridge });
    expect(bad({ sinks: [{ ...sink, subjet: "x" }] })).toThrow(
      "config: bridge.sinks[0].subjet: unknown setting (allowed here: kind, name, hooks, topics, batch, outbox, retry, confirmTimeoutMs, readiness, tls, servers, subject, eventSubject, user, password, token, credsFile, stream)",
    );
    expect(bad({ sinks: [{ name: "r", kind: "redis", exchange: "x" }] })).toThrow(
      "bridge.sinks[0].exchange: unknown setting (allowed here: kind, name, hooks, topics, batch, outbox, retry, confirmTimeoutMs, readiness, tls, url, username, password, stream, eventStream, maxLen)",
    );
    expect(bad({ sinks: [{ name: "k", kind: "kafka" }] })).toThrow("bridge.sinks[0].kind");
    expect(bad({ sinks: [{ ...sink, hooks: ["client.authenticate"] }] })).toThrow("bridge.sinks[0].hooks[0]");
    expect(bad({ sinks: [{ ...sink, topics: ["a/+b"] }] })).toThrow("bridge.sinks[0].topics[0]: not a valid MQTT topic filter");
    expect(bad({ sinks: [sink, sink] })).toThrow('bridge.sinks[1].name: duplicate sink name "s1"');
    expect(bad({ leaseMs: 6000, sinks: [{ ...sink, confirmTimeoutMs: 5000 }] })).toThrow(
      "bridge.sinks[0].confirmTimeoutMs: must be at most a third of bridge.leaseMs (6000)",
    );
    expect(bad({ enabled: true })).toThrow("bridge.sinks: bridge.enabled is true but no sink is configured");
    expect(bad({ sinks: [{ ...sink, outbox: { overflow: "drop-new" } }] })).toThrow(
      'bridge.sinks[0].outbox.overflow: Invalid option: expected one of "refuse-new"|"drop-oldest"',
    );
  });
  test("${env:NAME} credentials are read at start; a missing variable stops the start naming it", () => {
    const dir = mkdtempSync(join(tmpdir(), "exhook-bcfg-"));
    const store = openSqliteStore({ file: join(dir, "x.db") });
    try {
      const cfg = parseConfig({
        bridge: { enabled: true, sinks: [{ name: "r", kind: "redis", url: "redis://u:${env:EXHOOK_T_PW}@127.0.0.1:1" }] },
      });
      expect(() => createBridge({ config: cfg.bridge, store, env: {} })).toThrow(
        "bridge.sinks[0].url: environment variable EXHOOK_T_PW is not set",
      );
    } finally {
      void store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
  test("a sink whose client package is not installed fails at start naming the package", () => {
    // A real child process on the compiled sources, in which @nats-io/transport-node cannot be resolved.
    const out = mkdtempSync(join(tmpdir(), "exhook-nopkg-"));
    try {
      compileTree("src", out);
      compileTree("gen", out);
      const r = spawnSync(
        process.execPath,
        [
          "-e",
          `const Module = require("module"); const resolve = Module._resolveFilename;
           Module._resolveFilename = function (req, ...rest) {
             if (req === "@nats-io/transport-node") { const e = new Error("Cannot find module '" + req + "'"); e.code = "MODULE_NOT_FOUND"; throw e; }
             return resolve.call(this, req, ...rest);
           };
           const { createNatsSink, sinkSchema } = require("./src/usecases/index.js");
           try { createNatsSink(sinkSchema.parse({ name: "n", kind: "nats" }), { status() {} }); console.log("loaded"); } catch (e) { console.log(e.name + ": " + e.message); }`,
        ],
        { cwd: out, encoding: "utf8", timeout: 60_000, env: { ...process.env, NODE_PATH: join(ROOT, "node_modules") } },
      );
      expect(r.stderr).toBe("");
      expect(r.stdout.trim()).toBe(
        'ExHookConfigError: a bridge sink of kind nats needs the package @nats-io/transport-node, which is not installed: run npm install @nats-io/transport-node@"^3.3.1"',
      );
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("emqx-exhook outbox", () => {
  let dir: string;
  let configFile: string;
  const run = async (...argv: string[]) => {
    let out = "";
    let err = "";
    const code = await runCommand([...argv, "--config", configFile], {
      stdout: (t) => (out += t),
      stderr: (t) => (err += t),
      readStdin: async () => "",
      env: {},
    });
    return { code, out, err };
  };
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "exhook-outbox-cli-"));
    configFile = join(dir, "exhook.yaml");
    writeFileSync(configFile, `dataDir: ${dir}\nbridge:\n  sinks:\n    - { name: js, kind: nats }\n    - { name: rs, kind: redis }\n`);
    const store = openSqliteStore({ file: join(dir, "exhook.db") });
    const e = (i: number): OutboxEntry => ({
      sink: "js",
      id: `m${i}`,
      key: "c1",
      khash: keyHash("c1"),
      dest: `mqtt.t.${i}`,
      payload: new Uint8Array(3),
      headers: { topic: `t/${i}` },
      createdAt: Date.UTC(2026, 0, 1, 0, 0, i),
    });
    await store.outboxAppend([e(1), e(2), e(3)], {});
    await store.outboxLease("js", "cli-test", { partitions: 1, leaseMs: 1000 });
    const rows = await store.outboxFetch("js", 1, [0], 10);
    await store.outboxSettle("js", { delivered: [], rejected: [{ seq: rows[0]?.seq as number, error: "no stream" }], maxAttempts: 1 });
    await store.close();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("status, list, replay, purge", async () => {
    const st = await run("outbox", "status");
    expect(st.code).toBe(0);
    const lines = st.out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l["sink"], l["kind"], l["configured"], l["pending"], l["parked"], l["oldestPending"]])).toEqual([
      ["js", "nats", true, 2, 1, "2026-01-01T00:00:02.000Z"],
      ["rs", "redis", true, 0, 0, null],
    ]);
    const parked = await run("outbox", "list", "--sink", "js", "--parked");
    expect(
      parked.out
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    ).toEqual([
      expect.objectContaining({
        id: "m1",
        dest: "mqtt.t.1",
        attempts: 1,
        parked: true,
        lastError: "no stream",
        bytes: 3,
        headers: { topic: "t/1" },
      }),
    ]);
    expect(
      (await run("outbox", "list", "--sink", "js", "--limit", "1")).out
        .trim()
        .split("\n")
        .map((l) => (JSON.parse(l) as { id: string }).id),
    ).toEqual(["m2"]);
    expect(await run("outbox", "replay", "--sink", "js")).toMatchObject({
      code: 0,
      out: "1 parked message of sink js back in line; a running server forwards them within bridge.pollMs\n",
    });
    expect((await run("outbox", "list", "--sink", "js", "--parked")).out).toBe("");
    const purgeNoFlag = await run("outbox", "purge", "--sink", "js");
    expect(purgeNoFlag.code).toBe(2);
    expect(purgeNoFlag.err).toContain("outbox purge needs exactly one of --parked (parked rows only) or --all (every row of the sink)");
    expect(await run("outbox", "purge", "--sink", "js", "--parked")).toMatchObject({
      code: 0,
      out: "deleted 0 parked messages of sink js from the outbox (not bridged)\n",
    });
    expect(await run("outbox", "purge", "--sink", "js", "--all")).toMatchObject({
      code: 0,
      out: "deleted 3 messages of sink js from the outbox (not bridged)\n",
    });
    const unknown = await run("outbox", "replay", "--sink", "nope");
    expect(unknown).toMatchObject({ code: 1, err: 'emqx-exhook: no sink "nope" in the config or the outbox (known: js, rs)\n' });
    expect((await run("outbox", "list")).code).toBe(2);
  });
});

describe("the stack with the bridge next to persistence and presence", () => {
  test("one provider serves all three: each hook reaches both use cases; the bridge's metrics and readiness", async () => {
    const dir = mkdtempSync(join(tmpdir(), "exhook-bstack-"));
    const logger = memoryLogger();
    const stack = await createStack(
      parseConfig({
        dataDir: dir,
        auth: { enabled: false },
        acl: { enabled: false },
        http: { enabled: false },
        persistence: { topics: ["sensors/#"], flushMs: 5 },
        bridge: {
          enabled: true,
          persistBeforeRoute: { enabled: true },
          sinks: [
            {
              name: "off",
              kind: "redis",
              url: "redis://127.0.0.1:1",
              hooks: ["message.publish", "client.connected"],
              topics: ["alarms/#"],
              readiness: true,
            },
          ],
        },
      }),
      { logger },
    );
    const emqx = createFakeEmqx({ provider: stack.provider, logger: memoryLogger() });
    try {
      const mounted = await emqx.start();
      expect(mounted.find((h) => h.name === "message.publish")?.topics.sort()).toEqual(["alarms/#", "sensors/#"]);
      await emqx.connect({ clientid: "c1", username: "u1" });
      expect(await emqx.publish("c1", { topic: "sensors/1", payload: "s" })).toEqual({ dropped: true, reason: "no_subscribers" });
      expect(await emqx.publish("c1", { topic: "alarms/1", payload: "a" })).toEqual({ dropped: true, reason: "no_subscribers" });
      await stack.persistence?.writer.flush();
      await stack.bridge?.flush();
      expect((await stack.store.queryMessages({ limit: 10, order: "asc" })).map((m) => m.topic)).toEqual(["sensors/1"]);
      expect((await stack.store.getPresence("c1"))?.online).toBe(true);
      const rows = await stack.store.outboxList("off", { parked: false, limit: 10 });
      expect(rows.map((r) => [r.headers["hook"], r.headers["topic"] ?? ""])).toEqual([
        ["client.connected", ""],
        ["message.publish", "alarms/1"],
      ]);
      expect(stack.stats()["bridge"]).toMatchObject({ writer: { committed: 2 } });
      expect(await stack.bridge?.registry.metrics()).toContain('exhook_bridge_committed_total{sink="off"} 2');
      expect(stack.bridge?.readiness()).toEqual([
        { name: "bridge sink off (redis)", ok: false, detail: expect.stringMatching(/^not connected/) as string },
      ]);
    } finally {
      await emqx.stop();
      await stack.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
