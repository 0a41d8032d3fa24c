/**
 * Metrics and HTTP probes over real sockets: calls as EMQX sends them, then the Prometheus text
 * scraped from the operations port and checked value by value.
 */
import type * as http2 from "node:http2";
import { allow, allowIf, defineProvider, drop, keep, rewrite } from "../src/index.js";
import { createExHookServer, type ExHookServer } from "../src/server.js";
import { createMetrics } from "../src/ops/metrics.js";
import { checkReadiness, createOpsServer } from "../src/ops/http-probes.js";
import { decode, encode, servicePath } from "./helpers/proto.js";
import { closeSession, connect, grpcCall, httpGet, key, memoryLogger, parseMetrics, until } from "./helpers/ops.js";

let release: (() => void) | undefined;
const provider = defineProvider({
  onClientAuthenticate: async ({ clientinfo }, ctx) => {
    const user = clientinfo?.username ?? "";
    if (user === "boom") throw new Error("backend down");
    if (user === "slow") await new Promise((r) => ctx.signal.addEventListener("abort", r));
    if (user === "held") await new Promise<void>((r) => (release = r));
    return allowIf(user === "alice" || user === "held");
  },
  onMessagePublish: {
    topics: ["t/#"],
    handler: ({ message }) => (message?.topic === "t/rw" ? rewrite({ topic: "t/x" }) : message?.topic === "t/drop" ? drop() : keep()),
  },
  onClientConnected: () => {},
});

const meta = (node: string) => ({ node, version: "5.9.0", sysdescr: "EMQX", cluster_name: "c1" });
const auth = (pkg: "v2" | "v3", username: string) =>
  encode(pkg, "ClientAuthenticateRequest", {
    clientinfo: { clientid: `c-${username}`, username, password: "secret" },
    result: false,
    meta: meta("emqx@a"),
  });
const publish = (topic: string) =>
  encode("v3", "MessagePublishRequest", {
    message: { id: "1", from: "pub", topic, payload: Buffer.from("x"), qos: 1 },
    meta: meta("emqx@a"),
  });

describe("metrics and probes on the operations port", () => {
  let server: ExHookServer;
  let session: http2.ClientHttp2Session;
  let opsPort: number;
  const scrape = async () => parseMetrics((await httpGet(opsPort, "/metrics")).body);

  beforeAll(async () => {
    server = createExHookServer({
      provider,
      port: 0,
      host: "127.0.0.1",
      metricsPort: 0,
      readyWhen: "loaded",
      readyNodes: ["emqx@a", "emqx@b"],
      logger: memoryLogger(),
    });
    const addr = await server.listen();
    opsPort = (server.opsAddress as { port: number }).port;
    session = await connect(`http://127.0.0.1:${addr.port}`);
  });
  afterAll(async () => {
    release?.();
    await closeSession(session);
    await server.close(1000);
  });

  test("/healthz is up; /readyz (loaded) waits for OnProviderLoaded from an allow-listed node, then is ready", async () => {
    expect(await httpGet(opsPort, "/healthz")).toEqual({ status: 200, body: "ok\n", contentType: "text/plain; charset=utf-8" });
    const waiting = {
      status: 503,
      body: "waiting for OnProviderLoaded from one of emqx@a, emqx@b; loaded nodes: 0\n",
      contentType: "text/plain; charset=utf-8",
    };
    expect(await httpGet(opsPort, "/readyz")).toEqual(waiting);
    // Anyone who reaches the ExHook port can send OnProviderLoaded: a name not on the list is answered, but does not make us ready.
    const stranger = await grpcCall(
      session,
      servicePath("v3", "OnProviderLoaded"),
      encode("v3", "ProviderLoadedRequest", { broker: { version: "5.9.0" }, meta: meta("mallory@x") }),
    );
    expect(stranger.grpcStatus).toBe(0);
    expect(await httpGet(opsPort, "/readyz")).toEqual(waiting);
    await grpcCall(session, servicePath("v3", "OnProviderUnloaded"), encode("v3", "ProviderUnloadedRequest", { meta: meta("mallory@x") }));
    const loaded = await grpcCall(
      session,
      servicePath("v3", "OnProviderLoaded"),
      encode("v3", "ProviderLoadedRequest", { broker: { version: "5.9.0", sysdescr: "EMQX" }, meta: meta("emqx@a") }),
    );
    expect(loaded.grpcStatus).toBe(0);
    await grpcCall(
      session,
      servicePath("v2", "OnProviderLoaded"),
      encode("v2", "ProviderLoadedRequest", {
        broker: { version: "5.8.9", sysdescr: "EMQX" },
        meta: { ...meta("emqx@b"), version: "5.8.9" },
      }),
    );
    expect(await httpGet(opsPort, "/readyz")).toEqual({
      status: 200,
      body: "ready; loaded nodes: 2\n",
      contentType: "text/plain; charset=utf-8",
    });
    expect((await httpGet(opsPort, "/nope")).status).toBe(404);
  });

  test("per hook and package: calls, decisions, fallbacks by reason, latency, loaded nodes, gRPC codes", async () => {
    const results = await Promise.all([
      grpcCall(session, servicePath("v3", "OnClientAuthenticate"), auth("v3", "alice")),
      grpcCall(session, servicePath("v3", "OnClientAuthenticate"), auth("v3", "bob")),
      grpcCall(session, servicePath("v3", "OnClientAuthenticate"), auth("v3", "slow"), "100m"),
      grpcCall(session, servicePath("v2", "OnClientAuthenticate"), auth("v2", "boom")),
      grpcCall(session, servicePath("v3", "OnMessagePublish"), publish("t/rw")),
      grpcCall(session, servicePath("v3", "OnMessagePublish"), publish("t/drop")),
      grpcCall(session, servicePath("v3", "OnMessagePublish"), publish("t/keep")),
      grpcCall(session, servicePath("v3", "OnMessagePublish"), publish("other/topic")),
      grpcCall(session, "/emqx.exhook.v3.HookProvider/OnNoSuchThing", new Uint8Array()),
    ]);
    expect(results.map((r) => r.grpcStatus)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 12]);
    expect(results.slice(0, 4).map((r) => decode("v3", "ValuedResponse", r.message as Buffer)["bool_result"])).toEqual([
      true,
      false,
      false,
      false,
    ]);

    const okKey = key("exhook_grpc_responses_total", { package: "v3", method: "OnClientAuthenticate", code: "ok" });
    // The server counts a stream when it closes, which can be just after the client has the answer.
    await until(async () => (await scrape()).get(okKey) === 3, "gRPC response counters");
    const m = await scrape();
    const pick = (name: string) => Object.fromEntries([...m].filter(([k]) => k.startsWith(`${name}{`) || k === name));
    expect(pick("exhook_hook_calls_total")).toEqual({
      [key("exhook_hook_calls_total", { hook: "client.authenticate", package: "v3" })]: 3,
      [key("exhook_hook_calls_total", { hook: "client.authenticate", package: "v2" })]: 1,
      // other/topic does not match t/#: no handler call.
      [key("exhook_hook_calls_total", { hook: "message.publish", package: "v3" })]: 3,
    });
    expect(pick("exhook_hook_decisions_total")).toEqual({
      [key("exhook_hook_decisions_total", { hook: "client.authenticate", package: "v3", decision: "allow" })]: 1,
      [key("exhook_hook_decisions_total", { hook: "client.authenticate", package: "v3", decision: "deny" })]: 2,
      [key("exhook_hook_decisions_total", { hook: "client.authenticate", package: "v2", decision: "deny" })]: 1,
      [key("exhook_hook_decisions_total", { hook: "message.publish", package: "v3", decision: "rewrite" })]: 1,
      [key("exhook_hook_decisions_total", { hook: "message.publish", package: "v3", decision: "drop" })]: 1,
      [key("exhook_hook_decisions_total", { hook: "message.publish", package: "v3", decision: "keep" })]: 1,
    });
    expect(pick("exhook_hook_fallbacks_total")).toEqual({
      [key("exhook_hook_fallbacks_total", { hook: "client.authenticate", package: "v3", reason: "timeout" })]: 1,
      [key("exhook_hook_fallbacks_total", { hook: "client.authenticate", package: "v2", reason: "error" })]: 1,
    });
    expect(m.get(key("exhook_hook_duration_seconds_count", { hook: "client.authenticate", package: "v3" }))).toBe(3);
    expect(m.get(key("exhook_hook_duration_seconds_bucket", { hook: "client.authenticate", package: "v3", le: "5" }))).toBe(3);
    expect(
      m.get(key("exhook_hook_duration_seconds_bucket", { hook: "client.authenticate", package: "v3", le: "0.0005" })),
    ).toBeLessThanOrEqual(2);
    expect(m.get(key("exhook_hook_in_flight", { hook: "client.authenticate", package: "v3" }))).toBe(0);
    expect(pick("exhook_broker_loaded")).toEqual({
      [key("exhook_broker_loaded", { package: "v3", node: "emqx@a", version: "5.9.0", cluster: "c1" })]: 1,
      [key("exhook_broker_loaded", { package: "v2", node: "emqx@b", version: "5.8.9", cluster: "c1" })]: 1,
    });
    expect(m.get("exhook_loaded_brokers")).toBe(2);
    expect(m.get(key("exhook_broker_loads", { package: "v3", node: "emqx@a" }))).toBe(1);
    expect(m.get(key("exhook_grpc_responses_total", { package: "unknown", method: "unknown", code: "unimplemented" }))).toBe(1);
    expect(m.get(key("exhook_grpc_responses_total", { package: "v3", method: "OnMessagePublish", code: "ok" }))).toBe(4);
    expect(m.get(key("exhook_grpc_responses_total", { package: "v3", method: "OnProviderLoaded", code: "ok" }))).toBe(2);
    expect([...m.keys()].some((k) => k.startsWith("exhook_process_"))).toBe(true);
  });

  test("in-flight calls are visible while a handler runs", async () => {
    const pending = grpcCall(session, servicePath("v3", "OnClientAuthenticate"), auth("v3", "held"));
    const inFlight = key("exhook_hook_in_flight", { hook: "client.authenticate", package: "v3" });
    await until(async () => (await scrape()).get(inFlight) === 1, "one call in flight");
    release?.();
    const reply = await pending;
    expect(decode("v3", "ValuedResponse", reply.message as Buffer)["bool_result"]).toBe(true);
    expect((await scrape()).get(inFlight)).toBe(0);
  });

  test("OnProviderUnloaded removes the node from the loaded gauge", async () => {
    await grpcCall(
      session,
      servicePath("v2", "OnProviderUnloaded"),
      encode("v2", "ProviderUnloadedRequest", { meta: { ...meta("emqx@b"), version: "5.8.9" } }),
    );
    const m = await scrape();
    expect(m.get("exhook_loaded_brokers")).toBe(1);
    expect(m.has(key("exhook_broker_loaded", { package: "v2", node: "emqx@b", version: "5.8.9", cluster: "c1" }))).toBe(false);
  });
});

describe("operations server options", () => {
  test("readyWhen: listening (default) is ready without any OnProviderLoaded, never while not serving or while the provider's check fails", async () => {
    let serving = true;
    let providerNotReady: string | undefined;
    const readiness = async () =>
      checkReadiness({ serving, loadedNodes: [], readyWhen: "listening", readyNodes: undefined, providerNotReady });
    const ops = createOpsServer({ port: 0, source: { readiness } });
    const { port, address } = await ops.listen();
    try {
      expect(address).toBe("127.0.0.1");
      expect((await httpGet(port, "/readyz")).status).toBe(200);
      providerNotReady = "store unreachable: connect ECONNREFUSED";
      expect(await httpGet(port, "/readyz")).toMatchObject({
        status: 503,
        body: "store unreachable: connect ECONNREFUSED; loaded nodes: 0\n",
      });
      serving = false;
      expect(await httpGet(port, "/readyz")).toMatchObject({
        status: 503,
        body: "not serving (starting or draining); store unreachable: connect ECONNREFUSED; loaded nodes: 0\n",
      });
      // No metrics given: /metrics is not there.
      expect((await httpGet(port, "/metrics")).status).toBe(404);
    } finally {
      await ops.close();
    }
  });

  test("no metricsPort: no operations server, no metrics middleware", () => {
    const server = createExHookServer({ provider, port: 0, host: "127.0.0.1" });
    expect(server.metrics).toBeUndefined();
    expect(server.opsAddress).toBeUndefined();
  });

  test("bad readyWhen, a loaded rule without an allow-list, a bad port and a short token are refused with what to fix", () => {
    expect(() => createExHookServer({ provider, port: 0, readyWhen: "soon" as never })).toThrow(
      'readyWhen must be "loaded" or "listening", got "soon"',
    );
    expect(() => createExHookServer({ provider, port: 0, readyWhen: "loaded" })).toThrow(
      'readyWhen "loaded" needs the EMQX node names that count (readyNodes / --ready-nodes',
    );
    const readiness = async () => ({ ready: true, reasons: [], loadedNodes: 0 });
    expect(() => createOpsServer({ port: 70000, source: { readiness } })).toThrow(
      "metrics port must be an integer from 0 to 65535, got 70000",
    );
    expect(() => createOpsServer({ port: 0, token: "short", source: { readiness } })).toThrow(
      "the operations port token must be at least 16 characters",
    );
  });

  test("metrics middleware alone (no server): a custom prefix and an error thrown inside counts as an error fallback", async () => {
    const metrics = createMetrics({ prefix: "x_", processMetrics: false });
    const call = {
      key: "onClientAuthenticate",
      hook: "client.authenticate",
      clientId: "c",
      topic: undefined,
      request: {},
      ctx: { package: "v1" },
    } as never;
    await expect(metrics.middleware(call, () => Promise.reject(new Error("inner")))).rejects.toThrow("inner");
    await metrics.middleware(call, () => Promise.resolve({ decision: allow() }));
    const m = parseMetrics(await metrics.text());
    expect(m.get(key("x_hook_calls_total", { hook: "client.authenticate", package: "v1" }))).toBe(2);
    expect(m.get(key("x_hook_fallbacks_total", { hook: "client.authenticate", package: "v1", reason: "error" }))).toBe(1);
    expect(m.get(key("x_hook_decisions_total", { hook: "client.authenticate", package: "v1", decision: "allow" }))).toBe(1);
    expect([...m.keys()].some((k) => k.startsWith("x_process_"))).toBe(false);
  });
});
