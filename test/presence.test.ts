// Presence: online/offline transitions from connected/disconnected, stable under takeover and
// late events, forwarded to sinks, listeners and async iterators.
import { allowIf, createClientContext, createPresence, defineProvider, type PresenceEvent, type PresenceRecord, type PresenceSink } from "../src/index";
import { createFakeEmqx, fakeClientInfo } from "../src/testing/index";

const brief = (e: PresenceEvent) => (e.type === "online" ? `online:${e.clientId}` : `offline:${e.clientId}:${e.reason}`);

function setup(sinks: PresenceSink[] = [], onSinkError?: (err: unknown) => void) {
  const presence = createPresence({ sinks, ...(onSinkError ? { onSinkError } : {}) });
  const events: PresenceEvent[] = [];
  presence.onChange((e) => events.push(e));
  const provider = defineProvider(presence.wrap({ onClientAuthenticate: (req) => allowIf(req.clientinfo?.password === "pw") }));
  const emqx = createFakeEmqx({ provider });
  return { presence, events, emqx };
}

test("connect makes a client online with its connection details; disconnect makes it offline with the reason", async () => {
  const { presence, events, emqx } = setup();
  await emqx.start();
  const before = Date.now();
  await emqx.connect({ clientid: "s1", username: "sensor", password: "pw", peerhost: "10.0.0.7", peerport: 50001 });
  expect(presence.isOnline("s1")).toBe(true);
  const rec = presence.get("s1") as PresenceRecord;
  expect({ ...rec, since: undefined, connectedAt: undefined }).toEqual({
    clientId: "s1",
    username: "sensor",
    node: "emqx@127.0.0.1",
    peerhost: "10.0.0.7",
    peerport: 50001,
    sockport: 1883,
    protocol: "mqtt",
    since: undefined,
    connectedAt: undefined,
    connections: 1,
  });
  expect(rec.since).toBeGreaterThanOrEqual(before);
  expect(rec.connectedAt).toBe(rec.since);
  expect(presence.count).toBe(1);
  await emqx.disconnect("s1", "tcp_closed");
  expect(presence.isOnline("s1")).toBe(false);
  expect(presence.list()).toEqual([]);
  expect(events.map(brief)).toEqual(["online:s1", "offline:s1:tcp_closed"]);
  await emqx.stop();
});

test("a failed login never shows up", async () => {
  const { presence, events, emqx } = setup();
  await emqx.start();
  expect(await emqx.connect({ clientid: "bad", password: "wrong" })).toEqual({ connected: false, reasonCode: "not_authorized" });
  expect([presence.isOnline("bad"), events.length, presence.clients.size]).toEqual([false, 0, 0]);
  await emqx.stop();
});

test.each([[false], [true]])("takeover/discard (cleanStart %p): stays online, no offline event, record moves to the new connection", async (cleanStart) => {
  const { presence, events, emqx } = setup();
  await emqx.start();
  await emqx.connect({ clientid: "car", password: "pw", peerport: 1 });
  const since = presence.get("car")?.since;
  await emqx.connect({ clientid: "car", password: "pw", peerport: 2, cleanStart });
  expect(events.map(brief)).toEqual(["online:car"]);
  expect([presence.get("car")?.peerport, presence.get("car")?.connections, presence.get("car")?.since]).toEqual([2, 1, since]);
  await emqx.disconnect("car");
  expect(events.map(brief)).toEqual(["online:car", "offline:car:normal"]);
  await emqx.stop();
});

test("late events: while two connections overlap the client stays online; the old disconnect first gives offline then online", () => {
  const presence = createPresence();
  const events: string[] = [];
  presence.onChange((e) => events.push(brief(e)));
  const A = fakeClientInfo({ clientid: "x", peerport: 1 });
  const B = fakeClientInfo({ clientid: "x", peerport: 2 });
  presence.clients.connected(A);
  presence.clients.connected(B);
  expect(presence.get("x")?.connections).toBe(2);
  presence.clients.disconnected(A, "takenover");
  expect([presence.get("x")?.peerport, presence.get("x")?.connections]).toEqual([2, 1]);
  presence.clients.disconnected(B, "normal");
  // Old one's disconnect arrives before the new connected: the client really was offline between.
  presence.clients.connected(A);
  presence.clients.disconnected(A, "takenover");
  presence.clients.connected(B);
  // A disconnect of a connection never seen changes nothing.
  presence.clients.disconnected(fakeClientInfo({ clientid: "x", peerport: 99 }), "normal");
  expect(events).toEqual(["online:x", "offline:x:normal", "online:x", "offline:x:takenover", "online:x"]);
});

test("sinks get every change; a failing sink is reported and does not break the hook", async () => {
  const calls: string[] = [];
  const errors: string[] = [];
  const sink: PresenceSink = {
    online: (r) => void calls.push(`on:${r.clientId}`),
    offline: async (r, reason) => {
      calls.push(`off:${r.clientId}:${reason}`);
      throw new Error("storage down");
    },
  };
  const { emqx } = setup([sink], (err) => errors.push((err as Error).message));
  await emqx.start();
  await emqx.connect({ clientid: "z", password: "pw" });
  await emqx.disconnect("z");
  await new Promise((r) => setImmediate(r));
  expect(calls).toEqual(["on:z", "off:z:normal"]);
  expect(errors).toEqual(["storage down"]);
  expect(emqx.calls.map((c) => c.result)).toEqual(["ok", "ok", "ok"]);
  await emqx.stop();
});

test("events() is an async iterator of changes, stopped by an AbortSignal", async () => {
  const { presence, emqx } = setup();
  await emqx.start();
  const ac = new AbortController();
  const seen: string[] = [];
  const reader = (async () => {
    for await (const e of presence.events(ac.signal)) seen.push(brief(e));
  })();
  await emqx.connect({ clientid: "i1", password: "pw" });
  await emqx.connect({ clientid: "i2", password: "pw" });
  await emqx.disconnect("i1", "kicked");
  await new Promise((r) => setImmediate(r));
  ac.abort();
  await reader;
  expect(seen).toEqual(["online:i1", "online:i2", "offline:i1:kicked"]);
  await emqx.stop();
});

test("presence shares a client context with handler data; eviction reports offline", () => {
  const clients = createClientContext<{ tenant: string }>({ maxClients: 1 });
  const presence = createPresence({ clients });
  const events: string[] = [];
  presence.onChange((e) => events.push(brief(e)));
  clients.connected(fakeClientInfo({ clientid: "p", peerport: 1 })).data.tenant = "acme";
  clients.connected(fakeClientInfo({ clientid: "q", peerport: 2 }));
  expect(events).toEqual(["online:p", "offline:p:evicted", "online:q"]);
  expect(presence.list().map((r) => r.clientId)).toEqual(["q"]);
});
