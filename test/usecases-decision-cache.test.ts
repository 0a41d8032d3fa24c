/**
 * The decision cache as middleware of an ordinary provider (not the stack), driven through the
 * dispatcher like EMQX drives it: hits and misses, separate TTLs with jitter, fallbacks never
 * cached, the size bound, the key (identity, action, topic, password digest), invalidation by user /
 * client / all, answers computed across an invalidation, and a new connection's authenticate.
 */
import { allow, defineProvider, deny, type Logger } from "../src/index";
import { createMemoryClient, fakeAuthenticateRequest, fakeAuthorizeRequest } from "../src/testing/index";
import { createDecisionCache, type DecisionCacheOptions } from "../src/usecases/decision-cache";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** A provider whose answers come from a table the test changes, counting how often it is asked. */
function setup(options: DecisionCacheOptions = {}, table = new Map<string, "allow" | "deny">()) {
  const asked: string[] = [];
  let hold: Promise<void> | undefined;
  const cache = createDecisionCache(options);
  const provider = defineProvider(
    {
      onClientAuthorize: async (req) => {
        asked.push(`${req.clientinfo?.clientid}:${req.type}:${req.topic}`);
        if (hold) await hold;
        if (req.topic === "boom") throw new Error("store down");
        if (req.topic === "slow") await new Promise((r) => setTimeout(r, 200));
        return table.get(`${req.clientinfo?.username}:${req.topic}`) === "allow" ? allow() : deny();
      },
      onClientAuthenticate: (req) => {
        asked.push(`auth:${req.clientinfo?.username}:${req.clientinfo?.password}`);
        return req.clientinfo?.password === "good" ? allow() : deny();
      },
    },
    { middleware: [cache.middleware] },
  );
  const client = createMemoryClient(provider, { logger: quiet });
  const authorize = async (
    topic: string,
    who: { clientid?: string; username?: string; peerhost?: string } = {},
    type: "PUBLISH" | "SUBSCRIBE" = "PUBLISH",
    timeoutMs?: number,
  ) => {
    const r = await client.valued(
      "onClientAuthorize",
      fakeAuthorizeRequest(topic, type, { clientid: "c1", username: "alice", ...who }),
      timeoutMs ? { timeoutMs } : undefined,
    );
    return r.response?.value.case === "boolResult" ? (r.response.value.value ? "allow" : "deny") : "none";
  };
  const authenticate = async (username: string, password: string, clientid = "c1") => {
    const r = await client.valued("onClientAuthenticate", fakeAuthenticateRequest({ clientid, username, password }));
    return r.response?.value.case === "boolResult" ? (r.response.value.value ? "allow" : "deny") : "none";
  };
  return { cache, asked, table, authorize, authenticate, holdWith: (p: Promise<void> | undefined) => (hold = p) };
}

test("a repeated question is answered from the cache; any part of the key that differs is a miss", async () => {
  const t = setup();
  t.table.set("alice:a/1", "allow");
  expect(await t.authorize("a/1")).toBe("allow");
  expect(await t.authorize("a/1")).toBe("allow");
  expect(t.asked).toEqual(["c1:0:a/1"]);
  await t.authorize("a/1", {}, "SUBSCRIBE"); // action
  await t.authorize("a/2"); // topic
  await t.authorize("a/1", { clientid: "c2" }); // client id
  await t.authorize("a/1", { username: "bob" }); // username
  await t.authorize("a/1", { peerhost: "10.0.0.9" }); // peer address
  expect(t.asked).toHaveLength(6);
  expect(t.cache.stats()).toMatchObject({ hits: 1, misses: 6, stored: 6 });
});

test("allow lives ttlMs, deny negativeTtlMs, both shortened by the jitter", async () => {
  let now = 1_000_000;
  const t = setup({ ttlMs: 60_000, negativeTtlMs: 5_000, jitter: 0.5, now: () => now, random: () => 1 });
  t.table.set("alice:yes", "allow");
  await t.authorize("yes");
  await t.authorize("no");
  now += 2_499; // deny: 5000 * (1 - 0.5) = 2500
  await t.authorize("yes");
  await t.authorize("no");
  expect(t.asked).toEqual(["c1:0:yes", "c1:0:no"]);
  now += 1;
  await t.authorize("no");
  expect(t.asked).toEqual(["c1:0:yes", "c1:0:no", "c1:0:no"]);
  now += 27_499; // allow: 60000 * 0.5 = 30000 after the first store
  await t.authorize("yes");
  expect(t.asked).toHaveLength(3);
  now += 1;
  await t.authorize("yes");
  expect(t.asked).toHaveLength(4);
});

test("negativeTtlMs 0 never keeps a deny (the refused user that was then added is let in at once)", async () => {
  const t = setup({ negativeTtlMs: 0 });
  expect(await t.authorize("x")).toBe("deny");
  t.table.set("alice:x", "allow");
  expect(await t.authorize("x")).toBe("allow");
});

test("fallback answers (handler error, timeout) are never cached", async () => {
  const t = setup();
  expect(await t.authorize("boom")).toBe("deny");
  expect(await t.authorize("boom")).toBe("deny");
  expect(await t.authorize("slow", {}, "PUBLISH", 100)).toBe("deny");
  expect(t.asked).toEqual(["c1:0:boom", "c1:0:boom", "c1:0:slow"]);
  expect(t.cache.stats()).toMatchObject({ hits: 0, stored: 0, notStored: 3 });
});

test("invalidate by user drops that user's answers only; by client that client's; all everything", async () => {
  const t = setup();
  for (const [c, u] of [
    ["c1", "alice"],
    ["c2", "alice"],
    ["c3", "bob"],
  ] as const)
    await t.authorize("t", { clientid: c, username: u });
  const again = async () => {
    t.asked.length = 0;
    for (const [c, u] of [
      ["c1", "alice"],
      ["c2", "alice"],
      ["c3", "bob"],
    ] as const)
      await t.authorize("t", { clientid: c, username: u });
    return [...t.asked];
  };
  expect(await again()).toEqual([]);
  t.cache.invalidate({ scope: "user", key: "alice" });
  expect(await again()).toEqual(["c1:0:t", "c2:0:t"]);
  t.cache.invalidate({ scope: "client", key: "c3" });
  expect(await again()).toEqual(["c3:0:t"]);
  t.cache.invalidate({ scope: "all" });
  expect(await again()).toEqual(["c1:0:t", "c2:0:t", "c3:0:t"]);
  expect(t.cache.stats().invalidations).toEqual({ all: 1, user: 1, client: 1 });
});

test("an answer computed while an invalidation happens is not stored (it may predate the change)", async () => {
  const t = setup();
  let release!: () => void;
  t.holdWith(new Promise<void>((r) => (release = r)));
  const pending = t.authorize("t");
  while (t.asked.length === 0) await new Promise((r) => setImmediate(r));
  t.cache.invalidate({ scope: "user", key: "alice" });
  release();
  t.holdWith(undefined);
  expect(await pending).toBe("deny");
  t.table.set("alice:t", "allow");
  expect(await t.authorize("t")).toBe("allow");
  expect(t.cache.stats()).toMatchObject({ notStored: 1, hits: 0 });
});

test("a client's new authenticate drops its cached authorize answers (new connection, maybe new rights)", async () => {
  const t = setup();
  await t.authorize("t");
  await t.authorize("t");
  expect(t.asked).toEqual(["c1:0:t"]);
  expect(await t.authenticate("alice", "good")).toBe("allow");
  await t.authorize("t");
  expect(t.asked).toEqual(["c1:0:t", "auth:alice:good", "c1:0:t"]);
  expect(t.cache.stats().stale).toBe(1);
  const off = setup({ perConnection: false });
  await off.authorize("t");
  await off.authenticate("alice", "good");
  await off.authorize("t");
  expect(off.asked).toEqual(["c1:0:t", "auth:alice:good"]);
});

test("authenticate caching (opt-in) keys on a digest of the password: a wrong password never hits an allow", async () => {
  const t = setup({ hooks: ["onClientAuthenticate"], negativeTtlMs: 60_000 });
  expect(await t.authenticate("alice", "good")).toBe("allow");
  expect(await t.authenticate("alice", "good")).toBe("allow");
  expect(await t.authenticate("alice", "bad")).toBe("deny");
  expect(await t.authenticate("alice", "bad")).toBe("deny");
  expect(t.asked).toEqual(["auth:alice:good", "auth:alice:bad"]);
  t.cache.invalidate({ scope: "user", key: "alice" });
  expect(await t.authenticate("alice", "bad")).toBe("deny");
  expect(t.asked).toEqual(["auth:alice:good", "auth:alice:bad", "auth:alice:bad"]);
});

test("the size bound evicts the least recently used client", async () => {
  const t = setup({ maxEntries: 3 });
  for (const c of ["c1", "c2", "c3"]) await t.authorize("t", { clientid: c });
  await t.authorize("t", { clientid: "c1" }); // c1 is now the most recent
  await t.authorize("t", { clientid: "c4" }); // evicts c2
  t.asked.length = 0;
  for (const c of ["c1", "c3", "c4", "c2"]) await t.authorize("t", { clientid: c });
  expect(t.asked).toEqual(["c2:0:t"]);
  expect(t.cache.stats().entries).toBeLessThanOrEqual(3);
});

test("bad options are refused", () => {
  expect(() => createDecisionCache({ ttlMs: -1 })).toThrow("ttlMs must be a non-negative number");
  expect(() => createDecisionCache({ hooks: ["onMessagePublish" as never] })).toThrow('"onMessagePublish" cannot be cached');
  expect(() => createDecisionCache().invalidate({ scope: "rules" as never, key: "" } as never)).toThrow("unknown scope");
});
