/**
 * The real thing over real HTTP/2 sockets, for both transports and every package: an independent
 * @grpc/grpc-js client decodes the answers, and an EMQX-like raw h2c client checks the gRPC framing
 * EMQX's grpc-erl relies on.
 */
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import demoProvider from "../examples/demo-provider.js";
import type { HookContext } from "../src/context.js";
import { defineProvider, type Logger } from "../src/provider.js";
import { allow, deny, drop, keep, noOpinion, rewrite } from "../src/responses.js";
import { createExHookServer, type ExHookServer } from "../src/server.js";
import { createEmqxLikeClient, type EmqxLikeClient } from "../src/testing/emqx-client.js";
import { grpcJsClient, type GrpcJsClient } from "./helpers/grpc-js.js";
import { data, Flag, FrameType, grpcFrame, grpcRequestHeaders, headerBlock, headers, rawConnect } from "./helpers/h2-frames.js";
import { until } from "./helpers/ops.js";
import { decode, encode, servicePath, type Pkg } from "./helpers/proto.js";

const PKGS = ["v1", "v2", "v3"] as const;
const authorizeRpc = (pkg: Pkg) => (pkg === "v1" ? "OnClientCheckAcl" : "OnClientAuthorize");
const meta = (pkg: Pkg) => ({
  node: `emqx-${pkg}@127.0.0.1`,
  version: pkg === "v1" ? "4.4.19" : "5.8.9",
  sysdescr: "EMQX",
  cluster_name: "c",
});

interface Snapshot {
  package: string;
  key: string;
  hook: string;
  node: string | undefined;
  version: string | undefined;
  clientId: string;
  deadline: number;
  hasSignal: boolean;
  aborted: boolean;
}

/** A provider that counts its calls and records contexts, built fresh per server. */
function testProvider() {
  const calls = { authenticate: 0, authorize: 0, publish: 0, connected: 0 };
  const contexts = new Map<string, Snapshot>();
  const snap = (ctx: HookContext): Snapshot => ({
    package: ctx.package,
    key: ctx.key,
    hook: ctx.hook,
    node: ctx.meta?.node,
    version: ctx.broker?.version,
    clientId: ctx.clientId,
    deadline: ctx.deadline,
    hasSignal: ctx.signal instanceof AbortSignal,
    aborted: ctx.signal.aborted,
  });
  const provider = defineProvider({
    onClientConnected: () => {
      calls.connected++;
    },
    onClientAuthenticate: async ({ clientinfo }, ctx) => {
      calls.authenticate++;
      const user = clientinfo?.username ?? "";
      if (user === "ctx") contexts.set(clientinfo?.clientid ?? "", snap(ctx));
      if (user === "boom") throw new Error("kaboom: secret detail");
      if (user === "nobody") return noOpinion();
      return user === "alice" || user === "ctx" ? allow() : deny();
    },
    onClientAuthorize: ({ topic }) => {
      calls.authorize++;
      if (topic.startsWith("allow/")) return allow();
      if (topic.startsWith("deny/")) return deny();
      return noOpinion();
    },
    onSessionTakenover: () => {},
    onMessagePublish: {
      topics: ["pub/#", "$share/g/shared/+"],
      handler: ({ message }) => {
        calls.publish++;
        switch (message?.topic) {
          case "pub/rewrite":
            return rewrite({ topic: "pub/rewritten", payload: "new", headers: { added: "1" } });
          case "pub/drop":
            return drop();
          default:
            return keep();
        }
      },
    },
    onMessageDelivered: { topics: ["d/#"], handler: () => {} },
  });
  return { provider, calls, contexts };
}

function hookList(pkg: Pkg) {
  return [
    { name: "client.connected", topics: [] },
    { name: "client.authenticate", topics: [] },
    { name: pkg === "v1" ? "client.check_acl" : "client.authorize", topics: [] },
    { name: pkg === "v1" ? "session.takeovered" : "session.takenover", topics: [] },
    { name: "message.publish", topics: ["pub/#", "$share/g/shared/+"] },
    { name: "message.delivered", topics: ["d/#"] },
  ];
}

const IN_MESSAGE = {
  node: "emqx@127.0.0.1",
  id: "0005F8F84F6F8E0EF4420000B0E40001",
  qos: 2,
  from: "pub-client",
  topic: "pub/keep",
  payload: Buffer.from("old"),
  timestamp: 1700000000123,
  headers: { peerhost: "127.0.0.1", username: "alice", proto_ver: "5" },
};
/** The message as grpc-js decodes it. */
const OUT_MESSAGE = { ...IN_MESSAGE, timestamp: "1700000000123" };

const STOP_TRUE = { type: "STOP_AND_RETURN", bool_result: true, value: "bool_result" };
const STOP_FALSE = { type: "STOP_AND_RETURN", bool_result: false, value: "bool_result" };
const IGNORE = { type: "IGNORE", value: undefined };

/** A logger that keeps what it was told. */
function memoryLogger() {
  const entries: { level: string; obj: Record<string, unknown>; msg: string | undefined }[] = [];
  const at = (level: string) => (obj: object, msg?: string) => entries.push({ level, obj: obj as Record<string, unknown>, msg });
  const logger: Logger = { warn: at("warn"), error: at("error"), info: at("info"), debug: at("debug") };
  return { logger, entries };
}

/** Drops `value: undefined` that some decoders add for unset oneofs, so answers compare exactly. */
function clean(v: Record<string, any>): Record<string, any> {
  const out: Record<string, any> = {};
  for (const [k, x] of Object.entries(v)) if (x !== undefined && x !== null) out[k] = x;
  return out;
}
const cleanExpected = (v: Record<string, any>) => clean(v);

describe.each(["native", "connect"] as const)("%s transport", (transport) => {
  const main = testProvider();
  const log = memoryLogger();
  let server: ExHookServer;
  let emptyServer: ExHookServer;
  let demoServer: ExHookServer;
  let addr: AddressInfo;
  let emptyAddr: AddressInfo;
  let demoAddr: AddressInfo;

  beforeAll(async () => {
    server = createExHookServer({ provider: main.provider, port: 0, host: "127.0.0.1", transport, logger: log.logger });
    emptyServer = createExHookServer({
      provider: defineProvider({ onSessionCreated: () => {} }),
      port: 0,
      host: "127.0.0.1",
      transport,
      logger: log.logger,
    });
    demoServer = createExHookServer({ provider: demoProvider, port: 0, host: "127.0.0.1", transport, logger: log.logger });
    [addr, emptyAddr, demoAddr] = await Promise.all([server.listen(), emptyServer.listen(), demoServer.listen()]);
  });
  afterAll(async () => {
    await Promise.all([server.close(500), emptyServer.close(500), demoServer.close(500)]);
  });

  describe.each(PKGS)("%s with @grpc/grpc-js", (pkg) => {
    let client: GrpcJsClient;
    let empty: GrpcJsClient;
    beforeAll(() => {
      client = grpcJsClient(pkg, `127.0.0.1:${addr.port}`);
      empty = grpcJsClient(pkg, `127.0.0.1:${emptyAddr.port}`);
    });
    afterAll(() => {
      client.close();
      empty.close();
    });

    const loadedRequest = () => ({
      broker: {
        version: meta(pkg).version,
        sysdescr: "EMQX",
        uptime: pkg === "v1" ? "1 hours, 2 minutes, 3 seconds" : 3723000,
        datetime: "2024-01-01",
      },
      meta: meta(pkg),
    });
    const auth = (username: string, password = "", clientid = `c-${username}`) =>
      client.call("OnClientAuthenticate", { clientinfo: { clientid, username, password }, result: false, meta: meta(pkg) });
    const authorize = (topic: string) =>
      client.call(authorizeRpc(pkg), {
        clientinfo: { clientid: "c1", username: "alice" },
        type: "PUBLISH",
        topic,
        result: false,
        meta: meta(pkg),
      });
    const publish = (message: Record<string, unknown>, c = client) => c.call("OnMessagePublish", { message, meta: meta(pkg) });

    test("OnProviderLoaded: exactly the provider's hooks with this package's names; a re-send gets the same list", async () => {
      const first = await client.call("OnProviderLoaded", loadedRequest());
      expect(first).toEqual({ hooks: hookList(pkg) });
      const again = await client.call("OnProviderLoaded", loadedRequest());
      expect(again).toEqual(first);
      const node = server.dispatcher.loadedNodes().find((n) => n.package === pkg);
      expect(node).toMatchObject({ package: pkg, node: meta(pkg).node, version: meta(pkg).version });
      expect(node?.loads).toBeGreaterThanOrEqual(2);
    });

    test("authenticate: allow, deny, noOpinion", async () => {
      expect(clean(await auth("alice"))).toEqual(STOP_TRUE);
      expect(clean(await auth("eve"))).toEqual(STOP_FALSE);
      expect(clean(await auth("nobody"))).toEqual(cleanExpected(IGNORE));
    });

    test(`authorize (${authorizeRpc(pkg)}): allow, deny, noOpinion`, async () => {
      expect(clean(await authorize("allow/x"))).toEqual(STOP_TRUE);
      expect(clean(await authorize("deny/x"))).toEqual(STOP_FALSE);
      expect(clean(await authorize("other/x"))).toEqual(cleanExpected(IGNORE));
    });

    test("publish: keep", async () => {
      expect(clean(await publish(IN_MESSAGE))).toEqual(cleanExpected(IGNORE));
    });

    test("publish: rewrite keeps QoS 2, id, from, timestamp, node and the headers", async () => {
      expect(clean(await publish({ ...IN_MESSAGE, topic: "pub/rewrite" }))).toEqual({
        type: "CONTINUE",
        value: "message",
        message: { ...OUT_MESSAGE, topic: "pub/rewritten", payload: Buffer.from("new"), headers: { ...IN_MESSAGE.headers, added: "1" } },
      });
    });

    test("publish: drop sets allow_publish=false and keeps the rest", async () => {
      expect(clean(await publish({ ...IN_MESSAGE, topic: "pub/drop" }))).toEqual({
        type: "STOP_AND_RETURN",
        value: "message",
        message: { ...OUT_MESSAGE, topic: "pub/drop", headers: { ...IN_MESSAGE.headers, allow_publish: "false" } },
      });
    });

    test("publish on a topic outside the filters: IGNORE, and the handler does not run", async () => {
      const before = main.calls.publish;
      expect(clean(await publish({ ...IN_MESSAGE, topic: "other/x" }))).toEqual(cleanExpected(IGNORE));
      expect(clean(await publish({ ...IN_MESSAGE, topic: "$SYS/pub" }))).toEqual(cleanExpected(IGNORE));
      expect(main.calls.publish).toBe(before);
      // A topic matching the shared filter's plain part does run it.
      expect(clean(await publish({ ...IN_MESSAGE, topic: "shared/1" }))).toEqual(cleanExpected(IGNORE));
      expect(main.calls.publish).toBe(before + 1);
    });

    test("hooks without a handler: IGNORE for decision hooks, EmptySuccess for notifications", async () => {
      expect(clean(await empty.call("OnClientAuthenticate", { clientinfo: { username: "alice" } }))).toEqual(cleanExpected(IGNORE));
      expect(clean(await empty.call(authorizeRpc(pkg), { clientinfo: { username: "alice" }, topic: "a" }))).toEqual(cleanExpected(IGNORE));
      expect(clean(await empty.call("OnMessagePublish", { message: IN_MESSAGE }))).toEqual(cleanExpected(IGNORE));
      expect(await client.call("OnClientConnack", { conninfo: { clientid: "c1" }, result_code: "success" })).toEqual({});
      expect(await client.call("OnSessionCreated", { clientinfo: { clientid: "c1" } })).toEqual({});
      const before = main.calls.connected;
      expect(await client.call("OnClientConnected", { clientinfo: { clientid: "c1" } })).toEqual({});
      expect(main.calls.connected).toBe(before + 1);
      expect(await client.call(pkg === "v1" ? "OnSessionTakeovered" : "OnSessionTakenover", { clientinfo: { clientid: "c1" } })).toEqual(
        {},
      );
    });

    test("a handler that throws: the fallback (deny), logged, nothing leaked to EMQX", async () => {
      const warnings = log.entries.length;
      expect(clean(await auth("boom"))).toEqual(STOP_FALSE);
      const logged = log.entries.slice(warnings).filter((e) => e.level === "warn");
      expect(logged).toEqual([
        {
          level: "warn",
          obj: { hook: "client.authenticate", clientId: "c-boom", reason: "error", fallback: "deny", err: "kaboom: secret detail" },
          msg: "handler failed; answered with the fallback",
        },
      ]);
    });

    test("handler context: package, meta node, broker version, deadline within the call's budget, signal", async () => {
      const start = Date.now();
      expect(clean(await auth("ctx", "", `ctx-${pkg}`))).toEqual(STOP_TRUE);
      const ctx = main.contexts.get(`ctx-${pkg}`);
      expect(ctx).toEqual({
        package: pkg,
        key: "onClientAuthenticate",
        hook: "client.authenticate",
        node: meta(pkg).node,
        version: meta(pkg).version,
        clientId: `ctx-${pkg}`,
        deadline: expect.any(Number),
        hasSignal: true,
        aborted: false,
      });
      expect(ctx?.deadline).toBeGreaterThan(start);
      expect(ctx?.deadline).toBeLessThanOrEqual(start + 5000);
    });

    test("OnProviderUnloaded: EmptySuccess, and the node is forgotten", async () => {
      await client.call("OnProviderLoaded", loadedRequest());
      expect(await client.call("OnProviderUnloaded", { meta: meta(pkg) })).toEqual({});
      expect(server.dispatcher.loadedNodes().some((n) => n.package === pkg && n.node === meta(pkg).node)).toBe(false);
      // EMQX may load again later.
      expect(await client.call("OnProviderLoaded", loadedRequest())).toEqual({ hooks: hookList(pkg) });
    });
  });

  describe("EMQX-like raw h2c client", () => {
    let emqx: EmqxLikeClient;
    beforeAll(() => {
      emqx = createEmqxLikeClient(`http://127.0.0.1:${addr.port}`, 8);
    });
    afterAll(() => emqx.close());

    const authBody = (pkg: Pkg, username: string) =>
      encode(pkg, "ClientAuthenticateRequest", { clientinfo: { clientid: `c-${username}`, username } });

    test.each(PKGS)("%s: application/grpc+proto, exactly one uncompressed message, grpc-status 0 in trailers", async (pkg) => {
      const reply = await emqx.call(servicePath(pkg, "OnClientAuthenticate"), authBody(pkg, "alice"), {
        messageType: `emqx.exhook.${pkg}.ClientAuthenticateRequest`,
      });
      expect({
        httpStatus: reply.httpStatus,
        contentType: reply.headers["content-type"],
        trailersOnly: reply.trailersOnly,
        grpcStatus: reply.grpcStatus,
        grpcMessage: reply.grpcMessage,
        compressed: reply.compressed,
        messages: reply.messages.map((m) => decode(pkg, "ValuedResponse", m)),
      }).toEqual({
        httpStatus: 200,
        contentType: "application/grpc+proto",
        trailersOnly: false,
        grpcStatus: 0,
        grpcMessage: "",
        compressed: [false],
        messages: [STOP_TRUE],
      });
    });

    test.each([
      ["v1 rpc that v1 does not have", servicePath("v1", "OnClientAuthorize")],
      ["v2 rpc that does not exist", servicePath("v2", "OnClientCheckAcl")],
      ["v3 rpc that does not exist", servicePath("v3", "OnNothing")],
      ["a service that is not ours", "/foo.Bar/Baz"],
      ["a package that does not exist", "/emqx.exhook.v9.HookProvider/OnProviderLoaded"],
    ])("%s: HTTP 200 + grpc-status 12 UNIMPLEMENTED, Trailers-Only, no message", async (_name, path) => {
      const reply = await emqx.call(path, authBody("v3", "alice"));
      expect({
        httpStatus: reply.httpStatus,
        grpcStatus: reply.grpcStatus,
        trailersOnly: reply.trailersOnly,
        messages: reply.messages.length,
      }).toEqual({
        httpStatus: 200,
        grpcStatus: 12,
        trailersOnly: true,
        messages: 0,
      });
    });

    test.each([
      ["an unknown method of ours", servicePath("v3", "OnNothing")],
      ["an unknown service", "/foo.Bar/Baz"],
    ])("%s, on the wire: exactly one HEADERS frame with END_STREAM, no DATA, no RST_STREAM", async (_name, path) => {
      const raw = await rawConnect(addr.port);
      try {
        await raw.write(Buffer.concat([headers(1, headerBlock(grpcRequestHeaders(path))), data(1, grpcFrame(authBody("v3", "alice")))]));
        // A known call behind it: once its answer is complete, everything for stream 1 has arrived.
        await raw.write(
          Buffer.concat([
            headers(3, headerBlock(grpcRequestHeaders(servicePath("v3", "OnClientAuthenticate")))),
            data(3, grpcFrame(authBody("v3", "alice"))),
          ]),
        );
        await until(() => raw.received.some((f) => f.streamId === 3 && (f.flags & Flag.END_STREAM) !== 0), "the second call's answer");
        const stream1 = raw.received
          .filter((f) => f.streamId === 1)
          .map((f) => ({ type: f.type, endStream: (f.flags & Flag.END_STREAM) !== 0 }));
        expect(stream1).toEqual([{ type: FrameType.HEADERS, endStream: true }]);
      } finally {
        raw.socket.destroy();
      }
    });

    test("an unknown method: @grpc/grpc-js sees UNIMPLEMENTED with our message (not 'UNKNOWN: Stream removed')", async () => {
      const client = new grpc.Client(`127.0.0.1:${addr.port}`, grpc.credentials.createInsecure());
      try {
        const err = await new Promise<grpc.ServiceError | null>((resolve) =>
          client.makeUnaryRequest(
            "/emqx.exhook.v3.HookProvider/OnNothing",
            (b: Buffer) => b,
            (b: Buffer) => b,
            Buffer.alloc(0),
            (e) => resolve(e),
          ),
        );
        expect({ code: err?.code, details: err?.details }).toEqual({
          code: grpc.status.UNIMPLEMENTED,
          details: "unknown method /emqx.exhook.v3.HookProvider/OnNothing",
        });
      } finally {
        client.close();
      }
    });

    test("a malformed protobuf body: a gRPC error with no message; the next call on the same connection succeeds", async () => {
      // Field 1 (clientinfo), length-delimited, says 10 bytes but 1 follows.
      const bad = await emqx.call(servicePath("v3", "OnClientAuthenticate"), new Uint8Array([0x0a, 0x0a, 0x01]), {}, 3);
      expect({ httpStatus: bad.httpStatus, messages: bad.messages.length, trailersOnly: bad.trailersOnly }).toEqual({
        httpStatus: 200,
        messages: 0,
        trailersOnly: transport === "native",
      });
      // Native: INVALID_ARGUMENT with a short cause, chosen by the error's type (RequestDecodeError).
      // Connect parses the body itself, before our code runs, and answers INTERNAL "parse binary: ...".
      expect({ status: bad.grpcStatus, message: bad.grpcMessage }).toEqual(
        transport === "native"
          ? { status: 3, message: "invalid ClientAuthenticateRequest: illegal tag: field no 0 wire type 1" }
          : { status: 13, message: "parse binary: illegal tag: field no 0 wire type 1" },
      );
      const next = await emqx.call(servicePath("v3", "OnClientAuthenticate"), authBody("v3", "alice"), {}, 3);
      expect({ grpcStatus: next.grpcStatus, messages: next.messages.map((m) => decode("v3", "ValuedResponse", m)) }).toEqual({
        grpcStatus: 0,
        messages: [STOP_TRUE],
      });
    });

    test("an incomplete frame: a gRPC error with no message", async () => {
      // The 5-byte prefix promises 10 bytes; 2 follow.
      const reply = await emqx.call(
        servicePath("v3", "OnClientAuthenticate"),
        new Uint8Array(0),
        { rawBody: new Uint8Array([0, 0, 0, 0, 10, 1, 2]) },
        4,
      );
      // INVALID_ARGUMENT: a protocol error of the caller.
      expect({ httpStatus: reply.httpStatus, messages: reply.messages.length, grpcStatus: reply.grpcStatus }).toEqual({
        httpStatus: 200,
        messages: 0,
        grpcStatus: 3,
      });
      const next = await emqx.call(servicePath("v3", "OnClientAuthenticate"), authBody("v3", "eve"), {}, 4);
      expect(next.messages.map((m) => decode("v3", "ValuedResponse", m))).toEqual([STOP_FALSE]);
    });

    test("an invalid grpc-timeout: INVALID_ARGUMENT, every time (also when the value was seen before); valid units are accepted", async () => {
      for (const timeout of ["5X", "5X", "S", "123456789S", "5000000000n"]) {
        const reply = await emqx.call(servicePath("v3", "OnClientAuthenticate"), authBody("v3", "alice"), { timeout }, 5);
        expect({ timeout, grpcStatus: reply.grpcStatus, messages: reply.messages.length }).toEqual({ timeout, grpcStatus: 3, messages: 0 });
      }
      for (const timeout of ["15000m", "15000m", "1M", "5000000u", "90000000n", "1H"]) {
        const reply = await emqx.call(servicePath("v3", "OnClientAuthenticate"), authBody("v3", "alice"), { timeout }, 5);
        expect({ timeout, grpcStatus: reply.grpcStatus, messages: reply.messages.map((m) => decode("v3", "ValuedResponse", m)) }).toEqual({
          timeout,
          grpcStatus: 0,
          messages: [STOP_TRUE],
        });
      }
    });

    test("a handler that throws: grpc-status 0 with the fallback, no grpc-message", async () => {
      const reply = await emqx.call(servicePath("v2", "OnClientAuthenticate"), authBody("v2", "boom"));
      expect({
        grpcStatus: reply.grpcStatus,
        grpcMessage: reply.grpcMessage,
        messages: reply.messages.map((m) => decode("v2", "ValuedResponse", m)),
      }).toEqual({
        grpcStatus: 0,
        grpcMessage: "",
        messages: [STOP_FALSE],
      });
    });

    test("8 connections x 50 concurrent streams of mixed authenticate/publish calls, all answered correctly", async () => {
      const calls: Promise<{ expected: unknown; got: unknown }>[] = [];
      for (let worker = 0; worker < 8; worker++) {
        for (let i = 0; i < 50; i++) {
          const pkg = PKGS[(worker + i) % 3] as Pkg;
          let path: string;
          let body: Uint8Array;
          let expected: unknown;
          switch (i % 4) {
            case 0:
              path = servicePath(pkg, "OnClientAuthenticate");
              body = authBody(pkg, "alice");
              expected = STOP_TRUE;
              break;
            case 1:
              path = servicePath(pkg, "OnClientAuthenticate");
              body = authBody(pkg, `eve${worker}-${i}`);
              expected = STOP_FALSE;
              break;
            case 2:
              path = servicePath(pkg, "OnMessagePublish");
              body = encode(pkg, "MessagePublishRequest", { message: { ...IN_MESSAGE, topic: "pub/drop", id: `m-${worker}-${i}` } });
              expected = {
                type: "STOP_AND_RETURN",
                value: "message",
                message: {
                  ...OUT_MESSAGE,
                  id: `m-${worker}-${i}`,
                  topic: "pub/drop",
                  headers: { ...IN_MESSAGE.headers, allow_publish: "false" },
                },
              };
              break;
            default:
              path = servicePath(pkg, "OnMessagePublish");
              body = encode(pkg, "MessagePublishRequest", { message: { ...IN_MESSAGE, topic: `pub/keep/${i}` } });
              expected = { type: "IGNORE" };
          }
          calls.push(
            emqx.call(path, body, {}, worker).then((r) => ({
              expected: { status: 0, messages: [expected] },
              got: { status: r.grpcStatus, messages: r.messages.map((m) => decode(pkg, "ValuedResponse", m)) },
            })),
          );
        }
      }
      const results = await Promise.all(calls);
      expect(results.length).toBe(400);
      expect(results.map((r) => r.got)).toEqual(results.map((r) => r.expected));
    });
  });

  describe("the demo provider", () => {
    let client: GrpcJsClient;
    let v1client: GrpcJsClient;
    beforeAll(() => {
      client = grpcJsClient("v3", `127.0.0.1:${demoAddr.port}`);
      v1client = grpcJsClient("v1", `127.0.0.1:${demoAddr.port}`);
    });
    afterAll(() => {
      client.close();
      v1client.close();
    });
    const auth = (c: GrpcJsClient, username: string, password: string) =>
      c.call("OnClientAuthenticate", { clientinfo: { clientid: "d1", username, password } });
    const publish = (topic: string, payload: string) =>
      client.call("OnMessagePublish", { message: { ...IN_MESSAGE, topic, payload: Buffer.from(payload) } });

    test("hook list", async () => {
      expect(await client.call("OnProviderLoaded", { broker: { version: "5.8.9" } })).toEqual({
        hooks: [
          { name: "client.connected", topics: [] },
          { name: "client.disconnected", topics: [] },
          { name: "client.authenticate", topics: [] },
          { name: "client.authorize", topics: [] },
          { name: "message.publish", topics: ["legacy/#", "chat/#", "blocked/#"] },
        ],
      });
      expect((await v1client.call("OnProviderLoaded", { broker: { version: "4.4.19", uptime: "3 seconds" } })).hooks[3]).toEqual({
        name: "client.check_acl",
        topics: [],
      });
    });

    test("authentication: alice/alice-pass allowed, a wrong password and an unknown user denied (v3 and v1)", async () => {
      for (const c of [client, v1client]) {
        expect(clean(await auth(c, "alice", "alice-pass"))).toEqual(STOP_TRUE);
        expect(clean(await auth(c, "alice", "bob-pass"))).toEqual(STOP_FALSE);
        expect(clean(await auth(c, "mallory", "alice-pass"))).toEqual(STOP_FALSE);
        expect(clean(await auth(c, "", ""))).toEqual(STOP_FALSE);
      }
    });

    test("authorization by topic rules", async () => {
      const az = (username: string, type: "PUBLISH" | "SUBSCRIBE", topic: string) =>
        client.call("OnClientAuthorize", { clientinfo: { clientid: "d1", username }, type, topic }).then(clean);
      expect(await az("alice", "PUBLISH", "users/alice/x")).toEqual(STOP_TRUE);
      expect(await az("alice", "PUBLISH", "users/bob/x")).toEqual(STOP_FALSE);
      expect(await az("alice", "PUBLISH", "public/x")).toEqual(STOP_FALSE);
      expect(await az("alice", "SUBSCRIBE", "public/x")).toEqual(STOP_TRUE);
      expect(await az("admin", "PUBLISH", "anything")).toEqual(STOP_TRUE);
      expect(
        await v1client.call("OnClientCheckAcl", { clientinfo: { username: "bob" }, type: "SUBSCRIBE", topic: "chat/r" }).then(clean),
      ).toEqual(STOP_TRUE);
    });

    test("legacy/x is moved to v2/x at QoS 1, everything else kept", async () => {
      expect(clean(await publish("legacy/x", "p"))).toEqual({
        type: "CONTINUE",
        value: "message",
        message: { ...OUT_MESSAGE, topic: "v2/x", qos: 1, payload: Buffer.from("p") },
      });
    });

    test("blocked/x is dropped", async () => {
      expect(clean(await publish("blocked/x", "p"))).toEqual({
        type: "STOP_AND_RETURN",
        value: "message",
        message: {
          ...OUT_MESSAGE,
          topic: "blocked/x",
          payload: Buffer.from("p"),
          headers: { ...IN_MESSAGE.headers, allow_publish: "false" },
        },
      });
    });

    test("chat messages: banned words masked, clean ones kept", async () => {
      expect(clean(await publish("chat/room1", "oh darn it"))).toEqual({
        type: "CONTINUE",
        value: "message",
        message: { ...OUT_MESSAGE, topic: "chat/room1", payload: Buffer.from("oh **** it") },
      });
      expect(clean(await publish("chat/room1", "hello"))).toEqual({ type: "IGNORE" });
    });
  });
});
