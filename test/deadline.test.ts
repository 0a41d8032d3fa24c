// Deadlines and failure policy: budgets under grpc-timeout, fallbacks, error hiding, grpc-error
// mode, invalid answers, the 4.3.0–4.3.2 enum numbering and repeated loads — through the
// dispatcher and over a real HTTP/2 socket with EMQX's headers.
import * as protobuf from "protobufjs";
import { Code, ConnectError } from "@connectrpc/connect";
import { allow, createDispatcher, defineProvider, deny, noOpinion, rewrite, type HookContext, type Logger } from "../src/index";
import { createExHookServer, type ExHookServer } from "../src/node";
import { createEmqxLikeClient, type EmqxLikeClient } from "../src/testing/index";
import { deadlineMargin } from "../src/dispatch";
import { monitorLoopDelay } from "../src/ops/loop-delay";
import { HOOK_BY_KEY, type HookDef } from "../src/hooks";
import { decode, encode, servicePath } from "./helpers/proto";

const warnings: Array<Record<string, unknown>> = [];
const logger: Logger = { debug() {}, info() {}, error() {}, warn: (obj) => warnings.push(obj as Record<string, unknown>) };

const SECRET = "db password is hunter2";
const aborts: unknown[] = [];
const budgets: number[] = [];

function hang(ctx: HookContext): Promise<never> {
  budgets.push(ctx.timeRemaining());
  ctx.signal.addEventListener("abort", () => aborts.push(ctx.signal.reason));
  return new Promise<never>(() => {});
}

const provider = defineProvider(
  {
    onClientAuthenticate: (req, ctx) => {
      switch (req.clientinfo?.username) {
        case "hang":
          return hang(ctx);
        case "throw":
          throw new Error(SECRET);
        case "reject":
          return Promise.reject(new Error(SECRET));
        case "true":
          return true as never;
        default:
          return allow();
      }
    },
    onClientAuthorize: { fallback: "no-opinion", handler: (_req, ctx) => hang(ctx) },
    onMessagePublish: {
      fallback: "drop",
      handler: (req, ctx) => {
        switch (req.message?.topic) {
          case "hang":
            return hang(ctx);
          case "bad/bool":
            return true as never;
          case "bad/qos":
            return rewrite({ qos: 3 as never });
          case "bad/topic":
            return rewrite({ topic: "a/#" });
          case "throw":
            throw new Error(SECRET);
          default:
            return rewrite({ payload: "ok" });
        }
      },
    },
  },
  { name: "deadline" },
);

const allowingFallback = defineProvider(
  { onClientAuthenticate: { timeoutMs: 30, handler: (_r, ctx) => hang(ctx) } },
  { fallback: { onClientAuthenticate: "allow" } },
);

const grpcErrors = defineProvider(
  {
    onClientAuthenticate: () => {
      throw new Error(SECRET);
    },
    onMessagePublish: () => Promise.reject(new Error(SECRET)),
  },
  { onError: "grpc-error" },
);

const meta = { node: "emqx@127.0.0.1", version: "5.9.0", sysdescr: "EMQX", cluster_name: "emqxcl" };
const authn = (username: string, pkg: "v1" | "v2" | "v3" = "v3") =>
  encode(pkg, "ClientAuthenticateRequest", {
    clientinfo: { clientid: `c-${username}`, username, peerhost: "127.0.0.1", sockport: 1883, protocol: "mqtt" },
    result: false,
    ...(pkg === "v1" ? {} : { meta }),
  });
const authz = () =>
  encode("v3", "ClientAuthorizeRequest", { clientinfo: { clientid: "c", username: "u" }, type: 0, topic: "t/1", result: true, meta });
const publish = (topic: string) =>
  encode("v3", "MessagePublishRequest", {
    message: {
      node: "emqx@127.0.0.1",
      id: "0123456789ABCDEF0123456789ABCDEF",
      qos: 1,
      from: "c",
      topic,
      payload: Buffer.from("p"),
      timestamp: 1754550000000,
      headers: { username: "u" },
    },
    meta,
  });

const valued = (bytes: Uint8Array) => {
  const d = decode("v3", "ValuedResponse", bytes);
  return d["value"] === "bool_result"
    ? { type: d["type"], bool_result: d["bool_result"] }
    : {
        type: d["type"],
        value: d["value"] ?? null,
        message: d["message"]
          ? {
              topic: d["message"].topic,
              qos: d["message"].qos,
              payload: Buffer.from(d["message"].payload).toString(),
              allow_publish: d["message"].headers.allow_publish,
            }
          : undefined,
      };
};

const AUTHN = { key: "onClientAuthenticate" } as const;

beforeEach(() => {
  warnings.length = 0;
  aborts.length = 0;
  budgets.length = 0;
});

describe("through the dispatcher", () => {
  const routeOf = (key: string) => HOOK_BY_KEY.get(key) as HookDef;

  test("a handler that never resolves gets the fallback; its signal is aborted at the budget", async () => {
    const d = createDispatcher(provider, { logger });
    const bytes = await d.handleBytes("v3", routeOf(AUTHN.key), authn("hang"), { timeoutMs: 200 });
    expect(valued(bytes)).toEqual({ type: "STOP_AND_RETURN", bool_result: false });
    expect(aborts).toHaveLength(1);
    expect(aborts[0]).toBeInstanceOf(ConnectError);
    expect((aborts[0] as ConnectError).code).toBe(Code.DeadlineExceeded);
    // budget = min(hook timeout 5000, 200 - 10% margin) = 180
    expect(budgets[0]).toBeLessThanOrEqual(180);
    expect(budgets[0]).toBeGreaterThan(0);
    expect(d.fallbackCounts()).toEqual({ "onClientAuthenticate:timeout": 1 });
    expect(warnings).toEqual([
      expect.objectContaining({ hook: "client.authenticate", clientId: "c-hang", reason: "timeout", fallback: "deny" }),
    ]);
  });

  test("a per-hook timeoutMs shorter than grpc-timeout bounds the handler; fallback allow", async () => {
    const d = createDispatcher(allowingFallback, { logger });
    const bytes = await d.handleBytes("v3", routeOf(AUTHN.key), authn("x"), { timeoutMs: 5000 });
    expect(valued(bytes)).toEqual({ type: "STOP_AND_RETURN", bool_result: true });
    expect(budgets[0]).toBeLessThanOrEqual(30);
    expect(d.fallbackCounts()).toEqual({ "onClientAuthenticate:timeout": 1 });
  });

  test("per-hook fallbacks: authorize no-opinion, publish drop", async () => {
    const d = createDispatcher(provider, { logger });
    const a = await d.handleBytes("v3", routeOf("onClientAuthorize"), authz(), { timeoutMs: 100 });
    expect(valued(a)).toEqual({ type: "IGNORE", value: null, message: undefined });
    const p = await d.handleBytes("v3", routeOf("onMessagePublish"), publish("hang"), { timeoutMs: 100 });
    expect(valued(p)).toEqual({
      type: "STOP_AND_RETURN",
      value: "message",
      message: { topic: "hang", qos: 1, payload: "p", allow_publish: "false" },
    });
    expect(d.fallbackCounts()).toEqual({ "onClientAuthorize:timeout": 1, "onMessagePublish:timeout": 1 });
  });

  test("a handler that throws (sync or async) gets the fallback, and its message goes nowhere near the answer", async () => {
    const d = createDispatcher(provider, { logger });
    for (const who of ["throw", "reject"]) {
      const bytes = (await d.handleBytes("v3", routeOf(AUTHN.key), authn(who), { timeoutMs: 1000 })) as Uint8Array;
      expect(valued(bytes)).toEqual({ type: "STOP_AND_RETURN", bool_result: false });
      expect(Buffer.from(bytes).toString("latin1")).not.toContain("hunter2");
    }
    expect(d.fallbackCounts()).toEqual({ "onClientAuthenticate:error": 2 });
    expect(warnings.map((w) => [w["reason"], w["err"]])).toEqual([
      ["error", SECRET],
      ["error", SECRET],
    ]);
  });

  test("invalid answers get the fallback with reason invalid", async () => {
    const d = createDispatcher(provider, { logger });
    const dropped = { type: "STOP_AND_RETURN", value: "message", message: expect.objectContaining({ allow_publish: "false" }) };
    for (const topic of ["bad/bool", "bad/qos", "bad/topic"]) {
      expect(valued(await d.handleBytes("v3", routeOf("onMessagePublish"), publish(topic), { timeoutMs: 1000 }))).toEqual(dropped);
    }
    expect(valued(await d.handleBytes("v3", routeOf(AUTHN.key), authn("true"), { timeoutMs: 1000 }))).toEqual({
      type: "STOP_AND_RETURN",
      bool_result: false,
    });
    expect(d.fallbackCounts()).toEqual({ "onMessagePublish:invalid": 3, "onClientAuthenticate:invalid": 1 });
    expect(warnings.map((w) => w["err"])).toEqual([
      "expected keep(), rewrite({...}) or drop(), got true",
      "rewrite qos must be 0, 1 or 2, got 3",
      expect.stringContaining('rewrite topic "a/#"'),
      "expected allow(), deny() or noOpinion(), got true",
    ]);
  });

  test("onError grpc-error: the call fails with INTERNAL 'internal error', never the handler's text", async () => {
    const d = createDispatcher(grpcErrors, { logger });
    let caught: unknown;
    try {
      await d.handleBytes("v3", routeOf(AUTHN.key), authn("x"), { timeoutMs: 1000 });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConnectError);
    expect([(caught as ConnectError).code, (caught as ConnectError).rawMessage]).toEqual([Code.Internal, "internal error"]);
  });
});

describe("over HTTP/2 with EMQX's headers", () => {
  let server: ExHookServer;
  let errServer: ExHookServer;
  let client: EmqxLikeClient;
  let errClient: EmqxLikeClient;

  beforeAll(async () => {
    server = createExHookServer({ provider, port: 0, host: "127.0.0.1", logger });
    errServer = createExHookServer({ provider: grpcErrors, port: 0, host: "127.0.0.1", logger });
    const a = await server.listen();
    const b = await errServer.listen();
    client = createEmqxLikeClient(`http://127.0.0.1:${a.port}`, 2);
    errClient = createEmqxLikeClient(`http://127.0.0.1:${b.port}`, 1);
  });
  afterAll(async () => {
    await client.close();
    await errClient.close();
    await server.close(100);
    await errServer.close(100);
  });

  test("never-resolving handlers get their fallbacks before EMQX's deadline (1S and 800m)", async () => {
    const [a, b, c] = await Promise.all([
      client.call(servicePath("v3", "OnClientAuthenticate"), authn("hang"), { timeout: "1S" }),
      client.call(servicePath("v3", "OnClientAuthorize"), authz(), { timeout: "800m" }),
      client.call(servicePath("v3", "OnMessagePublish"), publish("hang"), { timeout: "800m" }),
    ]);
    for (const r of [a, b, c]) {
      expect([r.grpcStatus, r.messages.length, r.compressed]).toEqual([0, 1, [false]]);
    }
    expect(valued(a.messages[0]!)).toEqual({ type: "STOP_AND_RETURN", bool_result: false });
    expect(valued(b.messages[0]!)).toEqual({ type: "IGNORE", value: null, message: undefined });
    expect(valued(c.messages[0]!)).toEqual({
      type: "STOP_AND_RETURN",
      value: "message",
      message: { topic: "hang", qos: 1, payload: "p", allow_publish: "false" },
    });
    expect(aborts).toHaveLength(3);
    expect(Math.max(...budgets)).toBeLessThanOrEqual(900);
  });

  test("a throwing handler: status 0, the fallback, no trace of its message anywhere in the reply", async () => {
    const r = await client.call(servicePath("v3", "OnClientAuthenticate"), authn("throw"), { timeout: "1S" });
    expect([r.grpcStatus, r.grpcMessage]).toEqual([0, ""]);
    expect(valued(r.messages[0]!)).toEqual({ type: "STOP_AND_RETURN", bool_result: false });
    expect(JSON.stringify(r.headers)).not.toContain("hunter2");
    expect(Buffer.from(r.messages[0]!).toString("latin1")).not.toContain("hunter2");
  });

  test("invalid publish answers over the wire: fallback drop", async () => {
    const r = await client.call(servicePath("v3", "OnMessagePublish"), publish("bad/qos"), { timeout: "1S" });
    expect(valued(r.messages[0]!)).toEqual({
      type: "STOP_AND_RETURN",
      value: "message",
      message: { topic: "bad/qos", qos: 1, payload: "p", allow_publish: "false" },
    });
  });

  test("onError grpc-error: Trailers-Only status 13 'internal error' with no message frame", async () => {
    for (const [rpc, body] of [
      ["OnClientAuthenticate", authn("x")],
      ["OnMessagePublish", publish("t")],
    ] as const) {
      const r = await errClient.call(servicePath("v3", rpc), body, { timeout: "1S" });
      expect({ status: r.grpcStatus, message: r.grpcMessage, trailersOnly: r.trailersOnly, frames: r.messages.length }).toEqual({
        status: 13,
        message: "internal error",
        trailersOnly: true,
        frames: 0,
      });
    }
  });

  test("EMQX 4.3.0–4.3.2 numbering: learned from v1 OnProviderLoaded, undone by a later load", async () => {
    const legacy = defineProvider({
      onClientAuthenticate: (req) =>
        req.clientinfo?.username === "yes" ? allow() : req.clientinfo?.username === "no" ? deny() : noOpinion(),
    });
    const s = createExHookServer({ provider: legacy, port: 0, host: "127.0.0.1", logger });
    const { port } = await s.listen();
    const c = createEmqxLikeClient(`http://127.0.0.1:${port}`, 1);
    try {
      const load = (version: string) =>
        c.call(
          servicePath("v1", "OnProviderLoaded"),
          encode("v1", "ProviderLoadedRequest", {
            broker: { version, sysdescr: "EMQX", uptime: "5 seconds", datetime: "2021-03-01 10:00:00" },
          }),
        );
      const ask = async (username: string) => {
        const r = await c.call(servicePath("v1", "OnClientAuthenticate"), authn(username, "v1"));
        expect(r.grpcStatus).toBe(0);
        const old = LEGACY.decode(r.messages[0]!) as unknown as { type: number; bool_result?: boolean };
        const modern = decode("v1", "ValuedResponse", r.messages[0]!);
        return {
          old: LEGACY_ENUM.valuesById[old.type],
          modern: modern["type"],
          value: modern["value"] === "bool_result" ? modern["bool_result"] : null,
        };
      };
      expect((await load("4.3.1")).grpcStatus).toBe(0);
      expect(await ask("none")).toEqual({ old: "IGNORE", modern: "CONTINUE", value: null });
      expect(await ask("yes")).toEqual({ old: "STOP_AND_RETURN", modern: "STOP_AND_RETURN", value: true });
      expect(await ask("no")).toEqual({ old: "STOP_AND_RETURN", modern: "STOP_AND_RETURN", value: false });
      expect((await load("4.4.19")).grpcStatus).toBe(0);
      expect(await ask("none")).toEqual({ old: "CONTINUE", modern: "IGNORE", value: null });
    } finally {
      await c.close();
      await s.close(100);
    }
  });

  test("a re-sent OnProviderLoaded gets the identical answer; loaded state per node and package", async () => {
    const loadReq = (pkg: "v2" | "v3", node: string) =>
      encode(pkg, "ProviderLoadedRequest", {
        broker: { version: "5.9.0", sysdescr: "EMQX", uptime: 1000, datetime: "2026-01-01T00:00:00.000000000+00:00" },
        meta: { ...meta, node },
      });
    const first = await client.call(servicePath("v3", "OnProviderLoaded"), loadReq("v3", "emqx@a"));
    const again = await client.call(servicePath("v3", "OnProviderLoaded"), loadReq("v3", "emqx@a"));
    await client.call(servicePath("v2", "OnProviderLoaded"), loadReq("v2", "emqx@b"));
    expect(Buffer.from(again.messages[0]!)).toEqual(Buffer.from(first.messages[0]!));
    expect(decode("v3", "LoadedResponse", first.messages[0]!)["hooks"].map((h: { name: string }) => h.name)).toEqual([
      "client.authenticate",
      "client.authorize",
      "message.publish",
    ]);
    const view = () =>
      server.dispatcher
        .loadedNodes()
        .map((n) => [n.package, n.node, n.version, n.loads])
        .sort();
    expect(view()).toEqual([
      ["v2", "emqx@b", "5.9.0", 1],
      ["v3", "emqx@a", "5.9.0", 2],
    ]);
    const unload = await client.call(
      servicePath("v3", "OnProviderUnloaded"),
      encode("v3", "ProviderUnloadedRequest", { meta: { ...meta, node: "emqx@a" } }),
    );
    expect(unload.grpcStatus).toBe(0);
    expect(view()).toEqual([["v2", "emqx@b", "5.9.0", 1]]);
  });
});

// ValuedResponse as EMQX 4.3.0–4.3.2 decode it: IGNORE=0, CONTINUE=1, STOP_AND_RETURN=2.
const LEGACY_ENUM = new protobuf.Enum("ResponsedType", { IGNORE: 0, CONTINUE: 1, STOP_AND_RETURN: 2 });
const LEGACY = new protobuf.Type("ValuedResponse")
  .add(LEGACY_ENUM)
  .add(new protobuf.Field("type", 1, "ResponsedType"))
  .add(new protobuf.OneOf("value", ["bool_result", "message"]))
  .add(new protobuf.Field("bool_result", 3, "bool"))
  .add(new protobuf.Field("message", 4, "bytes"));
new protobuf.Root().define("legacy").add(LEGACY);
LEGACY.resolveAll();

describe("the safety margin scales with the deadline and the measured event-loop delay", () => {
  test("deadlineMargin: 10% of the deadline (at most 250 ms), at least 2 x loop delay + 5 ms, never more than 80% of the deadline", () => {
    expect(deadlineMargin(100, 0)).toBe(10);
    expect(deadlineMargin(5000, 0)).toBe(250);
    expect(deadlineMargin(60_000, 0)).toBe(250);
    expect(deadlineMargin(100, 10)).toBe(25);
    expect(deadlineMargin(5000, 200)).toBe(405);
    expect(deadlineMargin(100, 30)).toBe(65);
    expect(deadlineMargin(100, 80)).toBe(80);
    // An explicit marginMs replaces the proportional part; the loop delay still counts.
    expect(deadlineMargin(5000, 0, 30)).toBe(30);
    expect(deadlineMargin(5000, 50, 30)).toBe(105);
    expect(deadlineMargin(1000, 0, 0)).toBe(0);
  });

  test("the dispatcher asks for the loop delay on each call with a deadline and shortens the budget", async () => {
    let delay = 0;
    const seen: number[] = [];
    const p = defineProvider({ onClientAuthenticate: (_req, ctx) => (seen.push(ctx.timeRemaining()), allow()) });
    const d = createDispatcher(p, { logger, loopDelayMs: () => delay });
    const route = HOOK_BY_KEY.get("onClientAuthenticate") as HookDef;
    await d.handleBytes("v3", route, authn("x"), { timeoutMs: 1000 });
    delay = 200;
    await d.handleBytes("v3", route, authn("x"), { timeoutMs: 1000 });
    // budget = 1000 - 100 (10%), then 1000 - 405 (2 x 200 + 5)
    expect(seen[0]).toBeGreaterThan(850);
    expect(seen[0]).toBeLessThanOrEqual(900);
    expect(seen[1]).toBeGreaterThan(545);
    expect(seen[1]).toBeLessThanOrEqual(595);
  });
});

describe("learned state (the v1 numbering): learn, pin, share", () => {
  const ignoreType = (bytes: Uint8Array) => (bytes.length >= 2 && bytes[0] === 0x08 ? bytes[1] : 0);
  const noop = defineProvider({ onClientAuthenticate: () => noOpinion() });
  const route = HOOK_BY_KEY.get("onClientAuthenticate") as HookDef;
  const load = (d: ReturnType<typeof createDispatcher>, version: string) =>
    d.handleBytes(
      "v1",
      "loaded",
      encode("v1", "ProviderLoadedRequest", { broker: { version, sysdescr: "EMQX", uptime: "1 seconds", datetime: "" } }),
      {},
    );
  const ask = async (d: ReturnType<typeof createDispatcher>) => ignoreType(await d.handleBytes("v1", route, authn("x", "v1"), {}));

  test("a v1 load teaches the numbering and tells onLearned once per change", async () => {
    const learned: unknown[] = [];
    const d = createDispatcher(noop, { logger, onLearned: (s) => learned.push(s) });
    expect(await ask(d)).toBe(1);
    await load(d, "4.3.1");
    await load(d, "4.3.1");
    expect(await ask(d)).toBe(0);
    expect(learned).toEqual([
      {
        v1: { legacyNumbering: true, broker: { node: "", version: "4.3.1", sysdescr: "EMQX", clusterName: "" } },
        learnedAt: expect.any(Number),
      },
    ]);
    await load(d, "4.4.19");
    expect(await ask(d)).toBe(1);
    expect(learned).toHaveLength(2);
  });

  test("learn() applies what another process learned, unless this one knows something newer", async () => {
    const d = createDispatcher(noop, { logger });
    const broker = { node: "", version: "4.3.0", sysdescr: "EMQX", clusterName: "" };
    d.learn({ v1: { legacyNumbering: true, broker }, learnedAt: 1000 });
    expect(await ask(d)).toBe(0);
    d.learn({ v1: { legacyNumbering: false, broker: { ...broker, version: "4.4.0" } }, learnedAt: 500 });
    expect(await ask(d)).toBe(0);
    expect(d.learned()?.learnedAt).toBe(1000);
    await load(d, "4.4.19");
    expect(await ask(d)).toBe(1);
  });

  test("legacyResponseNumbering pins it against loads and learn()", async () => {
    const d = createDispatcher(noop, { logger, legacyResponseNumbering: true });
    expect(await ask(d)).toBe(0);
    await load(d, "4.4.19");
    d.learn({
      v1: { legacyNumbering: false, broker: { node: "", version: "4.4.19", sysdescr: "", clusterName: "" } },
      learnedAt: Date.now() + 1000,
    });
    expect(await ask(d)).toBe(0);
  });
});

describe("monitorLoopDelay (what the server feeds the dispatcher)", () => {
  test("a stall of the event loop shows up as the current delay; it is 0 on a fresh monitor", async () => {
    const monitor = monitorLoopDelay({ resolutionMs: 5, windowMs: 200 });
    try {
      expect(monitor.ms()).toBe(0);
      // (The histogram needs one sample of its own before it can measure the next interval.)
      await new Promise((r) => setTimeout(r, 60));
      const until = Date.now() + 120;
      while (Date.now() < until) {
        // a handler blocking the loop for 120 ms
      }
      // A window's read reports it (a calm loop then lowers it by a quarter per window, so the
      // value is caught when it appears rather than after a fixed wait).
      const stop = Date.now() + 5000;
      while (monitor.ms() < 60 && Date.now() < stop) await new Promise((r) => setTimeout(r, 5));
      expect(monitor.ms()).toBeGreaterThanOrEqual(60);
    } finally {
      monitor.stop();
    }
  });
});
