// The example of docs/testing.md, kept runnable: a provider tested through the fake EMQX.
import { allow, allowIf, createClientContext, defineProvider, deny, drop, rewrite } from "../src/index";
import { createExHookServer } from "../src/server";
import { createFakeEmqx, createMemoryClient, fakeAuthenticateRequest, type FakeEmqx } from "../src/testing/index";
import { startTcpProxy } from "./helpers/brokers";

// --- the provider under test -------------------------------------------------------------
const USERS: Record<string, { password: string; tenant: string }> = {
  alice: { password: "wonderland", tenant: "acme" },
  bob: { password: "builder", tenant: "globex" },
};

// Per-connection data: the tenant found at login, read again at authorize time.
const clients = createClientContext<{ tenant: string }>();

const provider = defineProvider(
  clients.wrap({
    onClientAuthenticate: (req) => {
      const user = USERS[req.clientinfo?.username ?? ""];
      if (!user || user.password !== req.clientinfo?.password) return deny();
      clients.of(req)!.data.tenant = user.tenant;
      return allow();
    },
    // Each tenant may only use topics under its own name.
    onClientAuthorize: (req) => allowIf(req.topic.startsWith(`${clients.of(req)?.data.tenant}/`)),
    onMessagePublish: {
      topics: ["+/alerts/#"],
      handler: (req) => {
        const text = new TextDecoder().decode(req.message?.payload);
        if (text === "") return drop();
        return rewrite({ payload: text.toUpperCase(), qos: 1 });
      },
    },
  }),
);

// --- the tests ---------------------------------------------------------------------------
describe("a tenant-aware provider, tested with the fake EMQX", () => {
  let emqx: FakeEmqx;
  beforeEach(async () => {
    emqx = createFakeEmqx({ provider, package: "v3", version: "5.9.0", failedAction: "deny" });
    await emqx.start();
  });
  afterEach(() => emqx.stop());

  test("a wrong password is refused", async () => {
    expect(await emqx.connect({ clientid: "c1", username: "alice", password: "nope" })).toEqual({
      connected: false,
      reasonCode: "not_authorized",
    });
  });

  test("a message to the tenant's alerts is delivered upper-cased at QoS 1", async () => {
    expect(await emqx.connect({ clientid: "pub", username: "alice", password: "wonderland" })).toEqual({
      connected: true,
      reasonCode: "success",
      sessionPresent: false,
    });
    await emqx.connect({ clientid: "sub", username: "alice", password: "wonderland" });
    expect(await emqx.subscribe("sub", "acme/alerts/#", 1)).toEqual({ granted: 1 });

    expect(await emqx.publish("pub", { topic: "acme/alerts/fire", payload: "fire!", qos: 1 })).toEqual({
      delivered: true,
      topic: "acme/alerts/fire",
      payload: "FIRE!",
      qos: 1,
    });
    expect(emqx.inbox("sub")).toEqual([{ topic: "acme/alerts/fire", payload: "FIRE!", qos: 1, from: "pub" }]);
  });

  test("another tenant's topic is not authorized, an empty alert is dropped", async () => {
    await emqx.connect({ clientid: "b", username: "bob", password: "builder" });
    expect(await emqx.subscribe("b", "acme/#")).toEqual({ reasonCode: "not_authorized" });
    expect(await emqx.publish("b", { topic: "acme/alerts/x", payload: "hi" })).toEqual({ published: false, reasonCode: "not_authorized" });
    expect(await emqx.publish("b", { topic: "globex/alerts/x", payload: "" })).toEqual({ dropped: true, reason: "provider" });
    expect(await emqx.publish("b", { topic: "globex/news", payload: "hi" })).toEqual({ dropped: true, reason: "no_subscribers" });
  });

  test("the hooks run in EMQX's order", async () => {
    await emqx.connect({ clientid: "c2", username: "bob", password: "builder" });
    await emqx.disconnect("c2");
    expect(emqx.calls.map((c) => c.hook)).toEqual(["client.authenticate", "client.connected", "client.disconnected"]);
  });
});

test("a slow handler: the provider's fallback (deny) answers before EMQX's request_timeout", async () => {
  const slow = defineProvider({ onClientAuthenticate: () => new Promise<never>(() => {}) });
  const emqx = createFakeEmqx({ provider: slow, requestTimeoutMs: 300, logger: quiet });
  await emqx.start();
  expect(await emqx.connect({ clientid: "c", username: "u" })).toEqual({ connected: false, reasonCode: "not_authorized" });
  expect(emqx.calls).toEqual([{ hook: "client.authenticate", clientid: "c", result: "ok" }]);
  expect(emqx.dispatcher?.fallbackCounts()).toEqual({ "onClientAuthenticate:timeout": 1 });
  await emqx.stop();
});

test("one hook, called directly with the in-memory client", async () => {
  const client = createMemoryClient(provider, { package: "v2" });
  expect(await client.load()).toEqual([
    { name: "client.connected", topics: [] },
    { name: "client.disconnected", topics: [] },
    { name: "client.authenticate", topics: [] },
    { name: "client.authorize", topics: [] },
    { name: "message.publish", topics: ["+/alerts/#"] },
  ]);
  const reply = await client.valued("onClientAuthenticate", fakeAuthenticateRequest({ username: "bob", password: "builder" }));
  expect(reply.status).toBe(0);
  expect(reply.response?.value).toEqual({ case: "boolResult", value: true });
});

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

// The server's end of every connection is gone (a crash, kill -9, a reset on the way), or no byte
// passes any more and no connection closes (a host that lost power, a partition). Either way EMQX
// gets the failure it would get (the failed action, deny), and stop() returns: OnProviderUnloaded
// waits its fixed 5 s, then a connection that cannot close is cut.
test.each([
  ["died under it (connections reset)", "cut"],
  ["stopped answering without closing its connections", "blackhole"],
] as const)(
  "the fake EMQX over a socket: stop() returns when the server %s",
  async (_what, fault) => {
    const server = createExHookServer({ provider, port: 0, host: "127.0.0.1" });
    const { port } = await server.listen();
    const proxy = await startTcpProxy(port);
    const emqx = createFakeEmqx({ url: `http://127.0.0.1:${proxy.port}`, requestTimeoutMs: 500 });
    try {
      await emqx.start();
      expect((await emqx.connect({ clientid: "c1", username: "alice", password: "wonderland" })).connected).toBe(true);
      proxy[fault]();
      expect(await emqx.connect({ clientid: "c2", username: "alice", password: "wonderland" })).toEqual({
        connected: false,
        reasonCode: "not_authorized",
      });
      expect(emqx.calls.at(-1)).toMatchObject({ hook: "client.authenticate", result: "failed" });
      await emqx.stop();
    } finally {
      await proxy.close();
      await server.close(500);
    }
  },
  20_000,
);
