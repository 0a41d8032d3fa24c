// Fidelity of the test kit: (1) the same client sequence gives the same outcomes and the same hook
// calls in memory and over HTTP/2, for all three packages; (2) the fake applies EMQX's rules per
// package and version (behaviour spec §5.2–5.5), checked with crafted answers.
import { create, toBinary } from "@bufbuild/protobuf";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb";
import { allow, allowIf, createClientContext, defineProvider, deny, drop, noOpinion, rewrite, type WirePackage } from "../src/index";
import { createExHookServer } from "../src/node";
import { createFakeEmqx, FakeEmqxLoadError, type ExhookTransport, type FakeEmqx, type RawAnswer } from "../src/testing/index";

const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const text = (b: Uint8Array | undefined) => new TextDecoder().decode(b);

function makeProvider() {
  const clients = createClientContext<{ role: string }>();
  return defineProvider(
    clients.wrap({
      onClientConnect: () => {},
      onClientAuthenticate: (req) => {
        if (req.clientinfo?.password !== "pw") return deny();
        clients.of(req)!.data.role = req.clientinfo.username === "admin" ? "admin" : "user";
        return allow();
      },
      // "slow" never answers: its 100 ms budget ends in the fallback, far inside EMQX's deadline
      // (5 s), so the outcome does not depend on how busy the machine is.
      onClientAuthorize: {
        timeoutMs: 100,
        handler: (req) => {
          if (req.clientinfo?.username === "slow") return new Promise<never>(() => {});
          return allowIf(!req.topic.startsWith("admin/") || clients.of(req)?.data.role === "admin");
        },
      },
      onSessionCreated: () => {},
      onSessionSubscribed: () => {},
      onMessagePublish: {
        topics: ["chat/#", "admin/#"],
        handler: (req) => (text(req.message?.payload) === "drop" ? drop() : rewrite({ payload: `${text(req.message?.payload)}!`, qos: 1 })),
      },
      onMessageDelivered: { topics: ["chat/#"], handler: () => {} },
      onMessageDropped: () => {},
      onSessionTerminated: () => {},
    }),
  );
}

async function scenario(emqx: FakeEmqx) {
  const out: unknown[] = [];
  out.push(await emqx.start());
  out.push(await emqx.connect({ clientid: "admin", username: "admin", password: "pw" }));
  out.push(await emqx.connect({ clientid: "mallory", username: "mallory", password: "guess" }));
  out.push(await emqx.connect({ clientid: "u1", username: "u1", password: "pw", peerport: 41001 }));
  out.push(await emqx.subscribe("u1", "chat/#", 1));
  out.push(await emqx.subscribe("admin", "admin/#", 2));
  out.push(await emqx.subscribe("u1", "admin/#"));
  out.push(await emqx.publish("admin", { topic: "chat/room", payload: "hi" }));
  out.push(await emqx.publish("u1", { topic: "chat/room", payload: "drop" }));
  out.push(await emqx.publish("u1", { topic: "other/x", payload: "x" }));
  out.push(await emqx.publish("u1", { topic: "admin/x", payload: "x" }));
  out.push(await emqx.connect({ clientid: "u1", username: "u1", password: "pw", peerport: 41002, cleanStart: false }));
  out.push(await emqx.publish("admin", { topic: "chat/a", payload: "again", qos: 2 }));
  out.push(await emqx.connect({ clientid: "s", username: "slow", password: "pw" }));
  out.push(await emqx.subscribe("s", "chat/#"));
  await emqx.disconnect("u1");
  await emqx.disconnect("admin", "tcp_closed");
  out.push(emqx.inbox("u1"));
  await emqx.stop();
  return { outcomes: out, calls: [...emqx.calls] };
}

const EXPECTED = [
  [
    { name: "client.connect", topics: [] },
    { name: "client.connected", topics: [] },
    { name: "client.disconnected", topics: [] },
    { name: "client.authenticate", topics: [] },
    { name: "client.authorize", topics: [] },
    { name: "session.created", topics: [] },
    { name: "session.subscribed", topics: [] },
    { name: "session.terminated", topics: [] },
    { name: "message.publish", topics: ["chat/#", "admin/#"] },
    { name: "message.delivered", topics: ["chat/#"] },
    { name: "message.dropped", topics: [] },
  ],
  { connected: true, reasonCode: "success", sessionPresent: false },
  { connected: false, reasonCode: "not_authorized" },
  { connected: true, reasonCode: "success", sessionPresent: false },
  { granted: 1 },
  { granted: 2 },
  { reasonCode: "not_authorized" },
  { delivered: true, topic: "chat/room", payload: "hi!", qos: 1 },
  { dropped: true, reason: "provider" },
  { dropped: true, reason: "no_subscribers" },
  { published: false, reasonCode: "not_authorized" },
  { connected: true, reasonCode: "success", sessionPresent: true },
  { delivered: true, topic: "chat/a", payload: "again!", qos: 1 },
  { connected: true, reasonCode: "success", sessionPresent: false },
  { reasonCode: "not_authorized" },
  [
    { topic: "chat/room", payload: "hi!", qos: 1, from: "admin" },
    { topic: "chat/a", payload: "again!", qos: 1, from: "admin" },
  ],
];

describe.each<WirePackage>(["v1", "v2", "v3"])("package %s", (pkg) => {
  test("in memory and over HTTP/2: same outcomes, same hook calls", async () => {
    const server = createExHookServer({ provider: makeProvider(), port: 0, host: "127.0.0.1", logger: quiet });
    const { port } = await server.listen();
    try {
      const common = { package: pkg } as const;
      const mem = createFakeEmqx({ ...common, provider: makeProvider(), logger: quiet });
      const net = createFakeEmqx({ ...common, url: `http://127.0.0.1:${port}` });
      const [a, b] = await Promise.all([scenario(mem), scenario(net)]);
      expect(a.outcomes).toEqual(EXPECTED);
      expect(b.outcomes).toEqual(a.outcomes);
      expect(b.calls).toEqual(a.calls);
      expect(a.calls.every((c) => c.result === "ok")).toBe(true);
      expect(
        a.calls
          .filter((c) => c.clientid === "u1")
          .map((c) => c.hook)
          .slice(-5),
      ).toEqual([
        // takeover: the new connection is connected before the old one's disconnect arrives
        "client.connected",
        "client.disconnected",
        "message.delivered",
        "client.disconnected",
        "session.terminated",
      ]);
      expect(mem.dispatcher?.fallbackCounts()).toEqual({ "onClientAuthorize:timeout": 1 });
      expect(server.dispatcher.fallbackCounts()).toEqual({ "onClientAuthorize:timeout": 1 });
    } finally {
      await server.close(100);
    }
  });
});

// --- the fake's rules, with crafted answers ----------------------------------------------
type Answer = { loaded?: string[]; authn?: v3.ValuedResponse | "fail"; publish?: v3.ValuedResponse };

function crafted(a: Answer): ExhookTransport {
  const ok = (msg: Uint8Array): RawAnswer => ({ status: 0, message: "", body: msg });
  return {
    async call(_pkg, rpc) {
      if (rpc === "OnProviderLoaded") {
        const names = a.loaded ?? ["client.authenticate", "message.publish"];
        return ok(toBinary(v3.LoadedResponseSchema, create(v3.LoadedResponseSchema, { hooks: names.map((name) => ({ name })) })));
      }
      if (rpc === "OnClientAuthenticate") {
        if (a.authn === "fail" || !a.authn) return { status: 14, message: "unavailable", body: undefined };
        return ok(toBinary(v3.ValuedResponseSchema, a.authn));
      }
      if (rpc === "OnMessagePublish" && a.publish) return ok(toBinary(v3.ValuedResponseSchema, a.publish));
      return ok(new Uint8Array(0));
    },
    close: async () => {},
  };
}
const T = v3.ValuedResponse_ResponsedType;
const vr = (type: number, value: v3.ValuedResponse["value"] | { case: undefined } = { case: undefined }) =>
  create(v3.ValuedResponseSchema, { type, value } as never);
const connectOutcome = async (opts: Parameters<typeof createFakeEmqx>[0]) => {
  const emqx = createFakeEmqx(opts);
  await emqx.start();
  return (await emqx.connect({ clientid: "c" })).connected;
};

test("authenticate: IGNORE keeps EMQX's own result, which depends on the version", async () => {
  const ignore = defineProvider({ onClientAuthenticate: () => noOpinion() });
  expect(await connectOutcome({ provider: ignore, package: "v2", version: "5.8.9" })).toBe(false);
  expect(await connectOutcome({ provider: ignore, package: "v3", version: "5.9.0" })).toBe(true);
  expect(await connectOutcome({ provider: ignore, package: "v1", version: "4.4.19" })).toBe(true);
  expect(await connectOutcome({ provider: ignore, package: "v1", version: "4.3.1" })).toBe(true);
  expect(await connectOutcome({ provider: ignore, package: "v3", version: "5.9.0", authnResult: false })).toBe(false);
});

test("authenticate: wrong oneof or unknown type is IGNORE even with STOP_AND_RETURN; the right oneof decides", async () => {
  const msg = { case: "message" as const, value: create(v3.MessageSchema) };
  expect(await connectOutcome({ transport: crafted({ authn: vr(T.STOP_AND_RETURN, msg) }), authnResult: false })).toBe(false);
  expect(await connectOutcome({ transport: crafted({ authn: vr(T.STOP_AND_RETURN, msg) }), authnResult: true })).toBe(true);
  expect(await connectOutcome({ transport: crafted({ authn: vr(3, { case: "boolResult", value: false }) }) })).toBe(true);
  expect(await connectOutcome({ transport: crafted({ authn: vr(T.CONTINUE, { case: "boolResult", value: false }) }) })).toBe(false);
  expect(
    await connectOutcome({ transport: crafted({ authn: vr(T.STOP_AND_RETURN, { case: "boolResult", value: true }) }), authnResult: false }),
  ).toBe(true);
  // 4.3.0–4.3.2 read 1 as CONTINUE: "type 1 + false" refuses there, and is IGNORE (true stands) on 4.4.
  expect(
    await connectOutcome({ transport: crafted({ authn: vr(1, { case: "boolResult", value: false }) }), package: "v1", version: "4.3.1" }),
  ).toBe(false);
  expect(
    await connectOutcome({ transport: crafted({ authn: vr(1, { case: "boolResult", value: false }) }), package: "v1", version: "4.4.19" }),
  ).toBe(true);
});

test("a failed call applies failed_action: deny refuses, ignore keeps EMQX's result", async () => {
  expect(await connectOutcome({ transport: crafted({ authn: "fail" }), failedAction: "deny" })).toBe(false);
  expect(await connectOutcome({ transport: crafted({ authn: "fail" }), failedAction: "ignore" })).toBe(true);
  const failing = defineProvider(
    {
      onClientAuthenticate: () => {
        throw new Error("x");
      },
    },
    { onError: "grpc-error" },
  );
  expect(await connectOutcome({ provider: failing, failedAction: "deny", logger: quiet })).toBe(false);
  expect(await connectOutcome({ provider: failing, failedAction: "ignore", logger: quiet })).toBe(true);
});

test("publish: only qos, topic and payload are copied; allow_publish 'false' drops; bool_result is ignored", async () => {
  const run = async (publish: v3.ValuedResponse) => {
    const emqx = createFakeEmqx({ transport: crafted({ publish, authn: vr(T.STOP_AND_RETURN, { case: "boolResult", value: true }) }) });
    await emqx.start();
    await emqx.connect({ clientid: "p" });
    await emqx.connect({ clientid: "s" });
    await emqx.subscribe("s", "#", 2);
    return emqx.publish("p", { topic: "in", payload: "orig", qos: 2 });
  };
  const answer = create(v3.MessageSchema, {
    topic: "out",
    payload: new TextEncoder().encode("new"),
    qos: 0,
    from: "someone-else",
    headers: { username: "x" },
  });
  expect(await run(vr(T.CONTINUE, { case: "message", value: answer }))).toEqual({ delivered: true, topic: "out", payload: "new", qos: 0 });
  // The proto3 trap: a message with only the header set empties topic and payload.
  const dropOnly = create(v3.MessageSchema, { headers: { allow_publish: "false" } });
  expect(await run(vr(T.STOP_AND_RETURN, { case: "message", value: dropOnly }))).toEqual({ dropped: true, reason: "provider" });
  expect(await run(vr(T.STOP_AND_RETURN, { case: "boolResult", value: false }))).toEqual({
    delivered: true,
    topic: "in",
    payload: "orig",
    qos: 2,
  });
  expect(await run(vr(T.IGNORE))).toEqual({ delivered: true, topic: "in", payload: "orig", qos: 2 });
});

test("load: an unknown hook name for the package makes the whole load fail; the first duplicate wins", async () => {
  await expect(createFakeEmqx({ transport: crafted({ loaded: ["client.authenticate", "client.check_acl"] }) }).start()).rejects.toThrow(
    FakeEmqxLoadError,
  );
  await expect(createFakeEmqx({ transport: crafted({ loaded: ["client.authorize"] }), package: "v1" }).start()).rejects.toThrow(
    'unknown_hookpoint: "client.authorize" is not a hook of EMQX 4.4.19',
  );
  await expect(createFakeEmqx({ transport: crafted({ loaded: [""] }) }).start()).rejects.toThrow(FakeEmqxLoadError);
  expect(
    await createFakeEmqx({ transport: crafted({ loaded: ["client.check_acl", "session.takeovered"] }), package: "v1" }).start(),
  ).toEqual([
    { name: "client.authorize", topics: [] },
    { name: "session.takenover", topics: [] },
  ]);
  expect(await createFakeEmqx({ transport: crafted({ loaded: [] }) }).start()).toEqual([]);
});

test("topic filters: message hooks are called only for matching topics; $SYS/ never reaches message.publish", async () => {
  let seen: string[] = [];
  const provider = defineProvider({
    onMessagePublish: { topics: ["a/+"], handler: (req) => (seen.push(req.message?.topic ?? ""), rewrite({ payload: "x" })) },
  });
  const emqx = createFakeEmqx({ provider });
  await emqx.start();
  await emqx.connect({ clientid: "p" });
  await emqx.connect({ clientid: "s" });
  await emqx.subscribe("s", "#");
  await emqx.subscribe("s", "$SYS/#");
  expect(await emqx.publish("p", { topic: "a/1", payload: "o" })).toEqual({ delivered: true, topic: "a/1", payload: "x", qos: 0 });
  expect(await emqx.publish("p", { topic: "b/1", payload: "o" })).toEqual({ delivered: true, topic: "b/1", payload: "o", qos: 0 });
  expect(await emqx.publish("p", { topic: "$SYS/a", payload: "o" })).toEqual({ delivered: true, topic: "$SYS/a", payload: "o", qos: 0 });
  expect(seen).toEqual(["a/1"]);
  seen = [];
});
