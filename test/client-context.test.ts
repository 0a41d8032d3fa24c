// Per-client context: data shared across one connection's hooks, cleaned at disconnect, bounded,
// and correct when two connections of one client id overlap (takeover, discard, late events).
import { create } from "@bufbuild/protobuf";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb";
import { allow, allowIf, createClientContext, defineProvider, keep, rewrite } from "../src/index";
import { createFakeEmqx, fakeAuthenticateRequest, fakeAuthorizeRequest, fakeClientInfo, fakePublishRequest } from "../src/testing/index";

type Data = { tenant: string };

function tenantProvider(clients = createClientContext<Data>(), seenAtDisconnect: string[] = []) {
  const provider = defineProvider(
    clients.wrap({
      onClientAuthenticate: (req) => {
        clients.of(req)!.data.tenant = req.clientinfo?.username === "alice" ? "acme" : "globex";
        return allow();
      },
      onClientAuthorize: (req) => allowIf(req.topic.startsWith(`${clients.of(req)?.data.tenant}/`)),
      // message.publish carries only message.from: the newest connected connection is used.
      onMessagePublish: (req) =>
        rewrite({ payload: `${clients.of(req)?.data.tenant ?? "?"}:${new TextDecoder().decode(req.message?.payload)}` }),
      onClientDisconnected: (req) => {
        seenAtDisconnect.push(`${req.clientinfo?.clientid}:${clients.of(req)?.data.tenant}`);
      },
    }),
  );
  return { clients, provider, seenAtDisconnect };
}

test("wrap announces client.connected and client.disconnected; a provider without it announces neither", () => {
  const { provider } = tenantProvider();
  expect(provider.hookSpecs("v3").map((s) => s.name)).toEqual([
    "client.connected",
    "client.disconnected",
    "client.authenticate",
    "client.authorize",
    "message.publish",
  ]);
  expect(
    defineProvider({ onMessagePublish: () => keep() })
      .hookSpecs("v3")
      .map((s) => s.name),
  ).toEqual(["message.publish"]);
});

test("the tenant found at authenticate is used at authorize and publish, and is gone after disconnect", async () => {
  const { clients, provider, seenAtDisconnect } = tenantProvider();
  const emqx = createFakeEmqx({ provider });
  await emqx.start();
  await emqx.connect({ clientid: "a", username: "alice" });
  await emqx.connect({ clientid: "b", username: "bob" });
  expect(await emqx.subscribe("a", "acme/#")).toEqual({ granted: 0 });
  expect(await emqx.subscribe("b", "acme/#")).toEqual({ reasonCode: "not_authorized" });
  expect(await emqx.publish("a", { topic: "acme/1", payload: "hi" })).toEqual({
    delivered: true,
    topic: "acme/1",
    payload: "acme:hi",
    qos: 0,
  });
  expect(clients.size).toBe(2);
  await emqx.disconnect("a");
  expect(seenAtDisconnect).toEqual(["a:acme"]);
  expect(clients.get("a")).toBeUndefined();
  expect(clients.size).toBe(1);
  await emqx.stop();
});

test.each([
  ["takeover (clean start false)", false],
  ["discard (clean start true)", true],
])("%s: the old connection's late disconnect does not wipe the new connection's data", async (_name, cleanStart) => {
  const { clients, provider, seenAtDisconnect } = tenantProvider();
  const emqx = createFakeEmqx({ provider });
  await emqx.start();
  await emqx.connect({ clientid: "dev", username: "bob" });
  // The same device logs in again as alice: new connected arrives before old disconnected.
  await emqx.connect({ clientid: "dev", username: "alice", cleanStart });
  expect(seenAtDisconnect).toEqual(["dev:globex"]);
  expect(clients.connections("dev").map((c) => [c.username, c.state, c.data.tenant])).toEqual([["alice", "connected", "acme"]]);
  expect(await emqx.subscribe("dev", "acme/x")).toEqual({ granted: 0 });
  await emqx.stop();
});

// Direct use of the store, with hand-built event orders.
const ci = (clientid: string, peerport: number, username = "u") => fakeClientInfo({ clientid, peerport, username });
const authn = (info: v3.ClientInfo) => create(v3.ClientAuthenticateRequestSchema, { clientinfo: info });
const authz = (info: v3.ClientInfo) => create(v3.ClientAuthorizeRequestSchema, { clientinfo: info, topic: "t" });

test("out of order: old disconnected before or after the new connected — the new data survives either way", () => {
  for (const oldFirst of [true, false]) {
    const clients = createClientContext<Data>();
    const A = ci("x", 1001);
    const B = ci("x", 1002);
    clients.of(authn(A))!.data.tenant = "old";
    clients.connected(A);
    clients.of(authn(B))!.data.tenant = "new";
    if (oldFirst) clients.disconnected(A, "takenover");
    clients.connected(B);
    if (!oldFirst) clients.disconnected(A, "takenover");
    expect(clients.of(authz(B))?.data.tenant).toBe("new");
    expect(clients.get("x")?.data.tenant).toBe("new");
    expect(clients.connections("x").map((c) => c.peerport)).toEqual([1002]);
  }
});

test("identical connection identity (no peerport, same host): event order decides", () => {
  const clients = createClientContext<Data>();
  const A = ci("x", 0);
  const B = ci("x", 0);
  clients.of(authn(A))!.data.tenant = "old";
  clients.connected(A);
  // New login while the old one is connected: before-connected hooks get a fresh connection.
  clients.of(authn(B))!.data.tenant = "new";
  expect(clients.of(authz(A))?.data.tenant).toBe("old");
  clients.connected(B);
  // After connected, later hooks see the newest connection; the late disconnect removes the oldest.
  expect(clients.of(authz(B))?.data.tenant).toBe("new");
  clients.disconnected(A);
  expect(clients.connections("x").map((c) => [c.state, c.data.tenant])).toEqual([["connected", "new"]]);
  clients.disconnected(B);
  expect(clients.size).toBe(0);
});

test("message hooks find the client by message.from; unknown publishers give undefined", () => {
  const clients = createClientContext<Data>();
  const A = ci("pub", 2001);
  clients.of(authn(A))!.data.tenant = "acme";
  clients.connected(A);
  expect(clients.of(fakePublishRequest({ from: "pub" }))?.data.tenant).toBe("acme");
  expect(clients.of(fakePublishRequest({ from: "ghost" }))).toBeUndefined();
  expect(clients.of({})).toBeUndefined();
});

test("failed logins (no connected, no disconnected) are forgotten after pendingTtlMs", () => {
  let t = 1_000;
  const clients = createClientContext<Data>({ pendingTtlMs: 100, now: () => t });
  clients.of(fakeAuthenticateRequest({ clientid: "f1", peerport: 1 }));
  clients.of(fakeAuthenticateRequest({ clientid: "f2", peerport: 2 }));
  expect(clients.size).toBe(2);
  t += 150;
  clients.of(fakeAuthorizeRequest("t", "PUBLISH", { clientid: "ok", peerport: 3 }));
  expect(clients.connections("f1")).toEqual([]);
  expect(clients.size).toBe(1);
});

test("bounded: beyond maxClients the least recently used client id is evicted (with an event)", () => {
  const clients = createClientContext<Data>({ maxClients: 3 });
  const evicted: string[] = [];
  clients.subscribe((e) => e.type === "evicted" && evicted.push(e.clientId));
  for (const id of ["a", "b", "c"]) clients.connected(ci(id, 10));
  clients.of(authz(ci("a", 10))); // a is now the most recently used
  clients.connected(ci("d", 10));
  expect(evicted).toEqual(["b"]);
  expect(["a", "b", "c", "d"].map((id) => clients.get(id) !== undefined)).toEqual([true, false, true, true]);
});

test("idleTtlMs evicts clients no hook touched for that long", () => {
  let t = 0;
  const clients = createClientContext<Data>({ idleTtlMs: 1000, now: () => t });
  clients.connected(ci("quiet", 1));
  t = 500;
  clients.connected(ci("busy", 2));
  t = 1200;
  clients.of(authz(ci("busy", 2)));
  expect([clients.get("quiet"), clients.get("busy")?.clientId]).toEqual([undefined, "busy"]);
});

test("bad options are refused", () => {
  expect(() => createClientContext({ maxClients: 0 })).toThrow("client context: maxClients must be a positive number, got 0");
});
