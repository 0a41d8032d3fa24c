// The in-memory presence tracker: online/offline transitions from connected/disconnected, stable
// under takeover, quick reconnects and late events (the shared cases of test/helpers/presence-cases,
// also run against both store backends), forwarded to sinks, listeners and async iterators.
import {
  allowIf,
  createClientContext,
  createMemoryPresence,
  defineProvider,
  type PresenceEvent,
  type PresenceSink,
  type PresenceState,
} from "../src/index";
import { createFakeEmqx, fakeClientInfo } from "../src/testing/index";
import { caseConnection, PRESENCE_CASES, REORDER_WINDOW_MS } from "./helpers/presence-cases";

const brief = (e: PresenceEvent) => (e.type === "online" ? `online:${e.clientId}` : `offline:${e.clientId}:${e.state.reason}`);

function setup(sinks: PresenceSink[] = [], onSinkError?: (err: unknown) => void) {
  const presence = createMemoryPresence({ sinks, ...(onSinkError ? { onSinkError } : {}) });
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
  const rec = presence.get("s1") as PresenceState;
  expect({ ...rec, since: undefined }).toEqual({
    clientId: "s1",
    online: true,
    username: "sensor",
    node: "emqx@127.0.0.1",
    peerhost: "10.0.0.7",
    peerport: 50001,
    sockport: 1883,
    protocol: "mqtt",
    since: undefined,
    connections: 1,
  });
  expect(rec.since).toBeGreaterThanOrEqual(before);
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
  expect([presence.isOnline("bad"), events.length, presence.count, presence.list()]).toEqual([false, 0, 0, []]);
  await emqx.stop();
});

test.each([[false], [true]])(
  "takeover/discard (cleanStart %p): stays online, no offline event, record moves to the new connection",
  async (cleanStart) => {
    const { presence, events, emqx } = setup();
    await emqx.start();
    await emqx.connect({ clientid: "car", password: "pw", peerport: 1 });
    await emqx.connect({ clientid: "car", password: "pw", peerport: 2, cleanStart });
    expect(events.map(brief)).toEqual(["online:car"]);
    expect([presence.get("car")?.peerport, presence.get("car")?.connections]).toEqual([2, 1]);
    await emqx.disconnect("car");
    expect(events.map(brief)).toEqual(["online:car", "offline:car:normal"]);
    await emqx.stop();
  },
);

test("late events: while two connections overlap the client stays online; the old disconnect first gives offline then online", () => {
  const presence = createMemoryPresence();
  const events: string[] = [];
  presence.onChange((e) => events.push(brief(e)));
  const A = fakeClientInfo({ clientid: "x", peerport: 1 });
  const B = fakeClientInfo({ clientid: "x", peerport: 2 });
  presence.connected(A);
  presence.connected(B);
  expect(presence.get("x")?.connections).toBe(2);
  presence.disconnected(A, "takenover");
  expect([presence.get("x")?.peerport, presence.get("x")?.connections]).toEqual([2, 1]);
  presence.disconnected(B, "normal");
  // Old one's disconnect arrives before the new connected: the client really was offline between.
  presence.connected(A);
  presence.disconnected(A, "takenover");
  presence.connected(B);
  // A disconnect of a connection never seen changes nothing.
  presence.disconnected(fakeClientInfo({ clientid: "x", peerport: 99 }), "normal");
  expect(events).toEqual(["online:x", "offline:x:normal", "online:x", "offline:x:takenover", "online:x"]);
});

describe.each([
  ["with peer ports (EMQX >= 5.4)", true],
  ["without peer ports (EMQX < 5.4)", false],
])("event orders, %s", (_name, withPeerport) => {
  test.each(PRESENCE_CASES.map((c) => [c.name, c] as const))("%s", (_n, c) => {
    let t = 0;
    const presence = createMemoryPresence({ now: () => t, reorderWindowMs: REORDER_WINDOW_MS });
    const seen: Array<[boolean, number]> = [];
    const want: Array<[boolean, number]> = [];
    for (const s of c.steps) {
      t = s.at;
      const conn = caseConnection("dev", s.conn, withPeerport);
      const info = {
        clientid: conn.clientId,
        node: conn.node,
        username: conn.username,
        peerhost: conn.peerhost,
        peerport: conn.peerport,
        sockport: conn.sockport,
        protocol: "mqtt",
      };
      if (s.ev === "C") presence.connected(info);
      else presence.disconnected(info, "normal");
      seen.push([presence.isOnline("dev"), s.connections === undefined ? -1 : (presence.get("dev")?.connections ?? 0)]);
      want.push([s.online, s.connections ?? -1]);
    }
    expect(seen).toEqual(want);
  });
});

test("a quick reconnect through the fake EMQX without peer ports (as before EMQX 5.4) is online", async () => {
  const presence = createMemoryPresence();
  const provider = defineProvider(presence.wrap({}));
  const emqx = createFakeEmqx({ provider });
  await emqx.start();
  await emqx.connect({ clientid: "q", peerport: 0 });
  await emqx.disconnect("q", "tcp_closed");
  await emqx.connect({ clientid: "q", peerport: 0 });
  expect([presence.isOnline("q"), presence.get("q")?.connections, presence.get("q")?.peerport]).toEqual([true, 1, 0]);
  await emqx.stop();
});

test("sinks get every change; a failing sink is reported and does not break the hook", async () => {
  const calls: string[] = [];
  const errors: string[] = [];
  const sink: PresenceSink = {
    online: (r) => void calls.push(`on:${r.clientId}`),
    offline: async (r) => {
      calls.push(`off:${r.clientId}:${r.reason}`);
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

test("presence and a client context wrap the same handlers; beyond maxClients the oldest is reported offline (evicted)", async () => {
  const clients = createClientContext<{ tenant: string }>();
  const presence = createMemoryPresence({ maxClients: 1 });
  const events: string[] = [];
  presence.onChange((e) => events.push(brief(e)));
  const provider = defineProvider(
    presence.wrap(
      clients.wrap({
        onClientAuthenticate: (req) => {
          clients.of(req)!.data.tenant = "acme";
          return allowIf(true);
        },
      }),
    ),
  );
  const emqx = createFakeEmqx({ provider });
  await emqx.start();
  await emqx.connect({ clientid: "p" });
  expect(clients.get("p")?.data.tenant).toBe("acme");
  await emqx.connect({ clientid: "q" });
  expect(events).toEqual(["online:p", "online:q", "offline:p:evicted"]);
  expect(presence.list().map((r) => r.clientId)).toEqual(["q"]);
  expect(presence.count).toBe(1);
  await emqx.stop();
});
