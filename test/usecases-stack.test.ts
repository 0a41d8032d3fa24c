/**
 * The four use cases end to end over a real HTTP/2 socket, driven like EMQX 5.9+/6.x (v3 package)
 * drives an ExHook server: load, logins, subscribe/publish authorization, publishes, connections,
 * a takeover, and a restart of the server on the same SQLite data directory. The read API is served
 * on the server's operations port, next to the probes.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createExHookServer, type ExHookServer } from "../src/node";
import { createEmqxLikeClient, type EmqxLikeClient } from "../src/testing/emqx-client";
import { commandUsage, runCommand } from "../src/commands/index";
import { addUser, createStack, parseConfig, type Stack } from "../src/usecases/index";
import { decode, encode, servicePath } from "./helpers/proto";

const NODE = "emqx@10.0.0.1";
const meta = { node: NODE, version: "5.9.1", sysdescr: "EMQX", cluster_name: "emqxcl" };
const FAST_SCRYPT = { N: 1024, r: 8, p: 1, keylen: 32 };

let dir: string;
let stack: Stack;
let server: ExHookServer;
let client: EmqxLikeClient;

function config() {
  return parseConfig({
    dataDir: dir,
    auth: { scrypt: FAST_SCRYPT, cacheTtlMs: 0 },
    persistence: { topics: ["users/#", "sensors/#"], flushMs: 10 },
    presence: { reorderWindowMs: 60_000 },
  });
}

async function start(): Promise<void> {
  stack = await createStack(config());
  server = createExHookServer({ provider: stack.provider, port: 0, host: "127.0.0.1", metricsPort: 0 });
  const addr = await server.listen();
  client = createEmqxLikeClient(`http://127.0.0.1:${addr.port}`, 2);
}

async function stop(): Promise<void> {
  await client.close();
  await server.close(1000);
  await stack.close();
}

async function call(rpc: string, reqType: string, req: Record<string, unknown>, resType: string): Promise<Record<string, any>> {
  const reply = await client.call(servicePath("v3", rpc), encode("v3", reqType, { ...req, meta }));
  expect(reply.grpcStatus).toBe(0);
  return decode("v3", resType, reply.messages[0] as Uint8Array);
}

const clientinfo = (username: string, clientid: string, peerport = 50001, extra: Record<string, unknown> = {}) => ({
  node: NODE,
  clientid,
  username,
  peerhost: "192.0.2.7",
  peerport,
  sockport: 1883,
  protocol: "mqtt",
  ...extra,
});

const login = (username: string, password: string, clientid = `${username}-1`) =>
  call(
    "OnClientAuthenticate",
    "ClientAuthenticateRequest",
    { clientinfo: clientinfo(username, clientid, 50001, { password }), result: false },
    "ValuedResponse",
  );

const authorize = (username: string, type: "PUBLISH" | "SUBSCRIBE", topic: string) =>
  call(
    "OnClientAuthorize",
    "ClientAuthorizeRequest",
    { clientinfo: clientinfo(username, `${username}-1`), type: type === "PUBLISH" ? 0 : 1, topic, result: true },
    "ValuedResponse",
  );

const connected = (username: string, clientid: string, peerport: number) =>
  call("OnClientConnected", "ClientConnectedRequest", { clientinfo: clientinfo(username, clientid, peerport) }, "EmptySuccess");

const disconnected = (username: string, clientid: string, peerport: number, reason: string) =>
  call(
    "OnClientDisconnected",
    "ClientDisconnectedRequest",
    { clientinfo: clientinfo(username, clientid, peerport), reason },
    "EmptySuccess",
  );

async function httpGet(path: string): Promise<{ status: number; body: any }> {
  const addr = server.opsAddress;
  if (!addr) throw new Error("no operations port");
  const res = await fetch(`http://127.0.0.1:${addr.port}${path}`);
  return { status: res.status, body: await res.json() };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "exhook-stack-"));
  await start();
  const cfg = config();
  await addUser(stack.store, "alice", "alice-secret", { scrypt: cfg.auth.scrypt });
  await addUser(stack.store, "bob", "bob-secret", { scrypt: cfg.auth.scrypt, clientIds: ["bob-*"] });
});

afterAll(async () => {
  await stop();
  rmSync(dir, { recursive: true, force: true });
});

test("OnProviderLoaded announces the four use cases' hooks, publish with the persistence filters", async () => {
  const res = await call(
    "OnProviderLoaded",
    "ProviderLoadedRequest",
    { broker: { version: "5.9.1", sysdescr: "EMQX", uptime: 1000, datetime: "2024-05-01T00:00:00Z" } },
    "LoadedResponse",
  );
  expect(res.hooks.map((h: { name: string; topics: string[] }) => [h.name, h.topics])).toEqual([
    ["client.connected", []],
    ["client.disconnected", []],
    ["client.authenticate", []],
    ["client.authorize", []],
    ["message.publish", ["users/#", "sensors/#"]],
  ]);
});

test("authentication: a known user logs in, a wrong password, an unknown user and a wrong client id are refused", async () => {
  expect(await login("alice", "alice-secret")).toMatchObject({ type: "STOP_AND_RETURN", bool_result: true });
  expect(await login("alice", "alice-secreT")).toMatchObject({ type: "STOP_AND_RETURN", bool_result: false });
  expect(await login("mallory", "x")).toMatchObject({ type: "STOP_AND_RETURN", bool_result: false });
  expect(await login("", "")).toMatchObject({ type: "STOP_AND_RETURN", bool_result: false });
  expect(await login("bob", "bob-secret", "bob-phone")).toMatchObject({ type: "STOP_AND_RETURN", bool_result: true });
  expect(await login("bob", "bob-secret", "alice-1")).toMatchObject({ type: "STOP_AND_RETURN", bool_result: false });
  expect(stack.auth?.stats()).toMatchObject({
    ok: 2,
    "bad-password": 1,
    "unknown-user": 2,
    "clientid-not-allowed": 1,
    throttled: 0,
    overloaded: 0,
  });
});

test("authorization (default rules): own tree allowed, a forbidden subscribe is denied", async () => {
  expect(await authorize("alice", "SUBSCRIBE", "users/alice/#")).toMatchObject({ type: "STOP_AND_RETURN", bool_result: true });
  expect(await authorize("alice", "PUBLISH", "users/alice/temp")).toMatchObject({ bool_result: true });
  expect(await authorize("alice", "SUBSCRIBE", "users/bob/#")).toMatchObject({ type: "STOP_AND_RETURN", bool_result: false });
  expect(await authorize("alice", "SUBSCRIBE", "#")).toMatchObject({ bool_result: false });
  expect(await authorize("alice", "SUBSCRIBE", "public/#")).toMatchObject({ bool_result: true });
  expect(await authorize("alice", "PUBLISH", "public/alice/hello")).toMatchObject({ bool_result: true });
  expect(await authorize("alice", "PUBLISH", "public/bob/hello")).toMatchObject({ bool_result: false });
  expect(await authorize("alice", "PUBLISH", "public/news")).toMatchObject({ bool_result: false });
});

test("persistence: the publish is answered at once (keep) and the message can be read back over HTTP and the CLI", async () => {
  const payload = Buffer.from("21.5");
  const res = await call(
    "OnMessagePublish",
    "MessagePublishRequest",
    {
      message: {
        node: NODE,
        id: "0005F3A1B2C3D4E5F60718293A4B5C6D",
        qos: 1,
        from: "alice-1",
        topic: "users/alice/temp",
        payload,
        timestamp: 1714564800123,
        headers: { username: "alice", protocol: "mqtt", peerhost: "192.0.2.7" },
      },
    },
    "ValuedResponse",
  );
  expect(res.type).toBe("IGNORE");
  const { status, body } = await httpGet("/messages?topic=users/%2B/temp&since=2024-05-01T00:00:00Z");
  expect(status).toBe(200);
  expect(body.messages).toEqual([
    {
      id: "0005F3A1B2C3D4E5F60718293A4B5C6D",
      topic: "users/alice/temp",
      payload: "21.5",
      payloadEncoding: "utf8",
      qos: 1,
      publisher: "alice-1",
      username: "alice",
      node: NODE,
      timestamp: "2024-05-01T12:00:00.123Z",
      storedAt: expect.any(String),
      headers: { username: "alice", protocol: "mqtt", peerhost: "192.0.2.7" },
    },
  ]);
  expect((await httpGet("/messages?topic=users/alice/temp&until=2024-05-01T12:00:00.123Z")).body.messages).toEqual([]);
  expect((await httpGet("/messages?topic=sensors/%23")).body.messages).toEqual([]);
  expect(await httpGet("/messages?topic=a/%23/b")).toEqual({
    status: 400,
    body: { error: 'topic "a/#/b" is not a valid MQTT topic filter: # must be a whole level and the last one' },
  });
  expect(stack.persistence?.writer.stats()).toMatchObject({ received: 1, written: 1, droppedOverflow: 0, rejected: 0, queued: 0 });

  const out: string[] = [];
  const code = await runCommand(["messages", "query", "--topic", "users/#", "--since", "2024-05-01T12:00:00Z", "--limit", "5"], {
    stdout: (t) => out.push(t),
    stderr: (t) => out.push(`ERR ${t}`),
    readStdin: async () => "",
    env: { EXHOOK_DATA_DIR: dir },
  });
  expect(code).toBe(0);
  expect(out.map((l) => JSON.parse(l).topic)).toEqual(["users/alice/temp"]);
});

test("presence: online, a takeover keeps it online whatever the order, then offline", async () => {
  await connected("alice", "alice-1", 50001);
  expect((await httpGet("/presence?clientid=alice-1")).body.clients).toMatchObject([
    { clientId: "alice-1", online: true, peerport: 50001, node: NODE, connections: 1 },
  ]);
  // Takeover: the new connection's connected arrives before the old one's disconnected.
  await connected("alice", "alice-1", 50002);
  await disconnected("alice", "alice-1", 50001, "takenover");
  expect((await httpGet("/presence?clientid=alice-1")).body.clients).toMatchObject([{ online: true, peerport: 50002, connections: 1 }]);
  // Another takeover, events the other way round: the old one's disconnected first.
  await disconnected("alice", "alice-1", 50002, "takenover");
  await connected("alice", "alice-1", 50003);
  expect((await httpGet("/presence?clientid=alice-1")).body.clients).toMatchObject([{ online: true, peerport: 50003 }]);
  await disconnected("alice", "alice-1", 50003, "normal");
  const { body } = await httpGet("/presence?online=false");
  expect(body.clients).toMatchObject([{ clientId: "alice-1", online: false, reason: "normal", connections: 0 }]);
  expect(stack.presence?.stats()).toMatchObject({ connected: 3, disconnected: 3, transitions: 4 });
});

test("presence: a quick reconnect without a peer port (EMQX before 5.4) is online again, and a takeover from the same host stays online", async () => {
  const before = stack.presence?.stats().transitions ?? 0;
  await connected("bob", "bob-1", 0);
  await disconnected("bob", "bob-1", 0, "tcp_closed");
  await connected("bob", "bob-1", 0);
  expect((await httpGet("/presence?clientid=bob-1")).body.clients).toMatchObject([{ online: true, peerport: 0, connections: 1 }]);
  // Same host, same listener, no peer port: the new connection's connected before the old one's disconnected.
  await connected("bob", "bob-1", 0);
  await disconnected("bob", "bob-1", 0, "takenover");
  expect((await httpGet("/presence?clientid=bob-1")).body.clients).toMatchObject([{ online: true, connections: 1 }]);
  await disconnected("bob", "bob-1", 0, "normal");
  expect((await httpGet("/presence?clientid=bob-1")).body.clients).toMatchObject([{ online: false, reason: "normal", connections: 0 }]);
  expect((stack.presence?.stats().transitions ?? 0) - before).toBe(4);
});

test("restart on the same data directory loses no user and no message", async () => {
  await stop();
  await start();
  expect(await login("alice", "alice-secret")).toMatchObject({ bool_result: true });
  expect((await httpGet("/messages")).body.messages.map((m: { id: string }) => m.id)).toEqual(["0005F3A1B2C3D4E5F60718293A4B5C6D"]);
  expect((await httpGet("/presence?clientid=alice-1")).body.clients).toMatchObject([{ online: false }]);
});

test("messages prune: the CLI deletes messages older than --older-than; a bad duration is a usage error", async () => {
  // The stored message is from 2024-05-01: older than 1 day, not older than 100000 days.
  const prune = async (...args: string[]) => {
    const lines: string[] = [];
    const exit = await runCommand(["messages", "prune", ...args], {
      stdout: (t) => lines.push(t),
      stderr: (t) => lines.push(`ERR ${t}`),
      readStdin: async () => "",
      env: { EXHOOK_DATA_DIR: dir },
    });
    return { exit, lines };
  };
  expect((await prune("--older-than", "100000d")).lines[0]).toMatch(/^deleted 0 messages older than 17\d\d-/);
  expect((await prune("--older-than", "soon")).lines[0]).toBe(
    'ERR emqx-exhook: --older-than "soon" is not a duration: use e.g. 7d, 12h, 30m, 45s\n\n' + commandUsage("messages prune"),
  );
  expect((await prune()).exit).toBe(2);
  expect(await prune("--older-than", "1d")).toEqual({ exit: 0, lines: [expect.stringMatching(/^deleted 1 message older than 20\d\d-/)] });
  expect((await httpGet("/messages?topic=users/%23")).body.messages).toEqual([]);
});
