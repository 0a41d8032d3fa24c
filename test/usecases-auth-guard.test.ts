/**
 * Password checking cannot be turned against real users: the fair hashing queue, failed-login
 * throttling, abandoned work, equal work for unknown users, bounded inputs, and what a login
 * records for the connection (superuser).
 */
import { create } from "@bufbuild/protobuf";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb";
import type { HookContext } from "../src/index";
import {
  addUser,
  createAuthenticator,
  createFairQueue,
  createLoginThrottle,
  emqxSimpleHash,
  openSqliteStore,
  QueueRefusedError,
  type Store,
} from "../src/usecases/index";

const FAST = { N: 1024, r: 8, p: 1, keylen: 32 };
let dir: string;
let store: Store;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "exhook-guard-"));
  store = openSqliteStore({ file: join(dir, "exhook.db") });
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A job that runs until released. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, job: (log: string[], name: string) => async () => (log.push(name), await opened, name) };
}

describe("fair queue", () => {
  test("at most `concurrency` at once; the key that used least goes first, equal keys take turns; priority 0 first", async () => {
    // A clock that stands still: usage scores charged a millisecond apart would otherwise differ
    // by their decay, and equal keys would not take turns exactly.
    const q = createFairQueue({ concurrency: 1, now: () => 1_000_000 });
    const g = gate();
    const log: string[] = [];
    const quick = (name: string) => async () => (log.push(name), name);
    const all = [q.run("flood", g.job(log, "F1"))];
    for (let i = 2; i <= 4; i++) all.push(q.run("flood", quick(`F${i}`)));
    all.push(q.run("alice", quick("A1")));
    all.push(q.run("known", quick("K1"), { priority: 0 }));
    expect(q.stats()).toMatchObject({ running: 1, queued: 5 });
    g.open();
    await Promise.all(all);
    // alice has used nothing, the flood one job: alice goes before the flood's second job.
    expect(log).toEqual(["F1", "K1", "A1", "F2", "F3", "F4"]);
    const turns: string[] = [];
    const g2 = gate();
    const all2: Promise<unknown>[] = [q.run("x", g2.job(turns, "x0"))];
    for (const k of ["x", "y", "z"]) for (let i = 1; i <= 2; i++) all2.push(q.run(k, async () => void turns.push(`${k}${i}`)));
    g2.open();
    await Promise.all(all2);
    // x asked for three, y and z for two each: y and z take turns, x waits for them.
    expect(turns).toEqual(["x0", "y1", "z1", "y2", "z2", "x1", "x2"]);
  });

  test("a full queue makes room for a light key by refusing the heaviest key's newest job", async () => {
    const q = createFairQueue({ concurrency: 1, maxQueued: 4, maxQueuedPerKey: 10 });
    const g = gate();
    const log: string[] = [];
    const running = q.run("flood", g.job(log, "f0"));
    const flood = [1, 2, 3, 4].map((i) => q.run("flood", async () => void log.push(`f${i}`)));
    const newcomer = q.run("alice", async () => void log.push("alice"));
    await expect(flood[3]).rejects.toMatchObject({ reason: "full" });
    // A second flood job is refused outright: the flood is the heaviest key.
    await expect(q.run("flood", async () => undefined)).rejects.toMatchObject({ reason: "full" });
    g.open();
    await Promise.all([running, newcomer, ...flood.slice(0, 3)]);
    expect(log).toEqual(["f0", "alice", "f1", "f2", "f3"]);
    expect(q.stats().refusedFull).toBe(2);
  });

  test("an express slot lets a newcomer start while the flood's job runs; the flood never gets it", async () => {
    const q = createFairQueue({ concurrency: 1, expressSlots: 1 });
    const g = gate();
    const log: string[] = [];
    const flood = [
      q.run("flood", g.job(log, "f0")),
      q.run("flood", async () => void log.push("f1")),
      q.run("flood", async () => void log.push("f2")),
    ];
    expect(q.stats()).toMatchObject({ running: 1, queued: 2 });
    const newcomer = q.run("alice", async () => (log.push("alice"), "in"));
    await expect(newcomer).resolves.toBe("in");
    expect(log).toEqual(["f0", "alice"]);
    // alice again right away is no newcomer: she waits like everyone else.
    const again = q.run("alice", async () => void log.push("alice again"));
    expect(q.stats()).toMatchObject({ running: 1, queued: 3 });
    g.open();
    await Promise.all([...flood, again]);
    expect(log).toEqual(["f0", "alice", "alice again", "f1", "f2"]);
  });

  test("a waiting job whose caller left is removed at once and never runs", async () => {
    const q = createFairQueue({ concurrency: 1 });
    const g = gate();
    const log: string[] = [];
    const first = q.run("a", g.job(log, "1"));
    const ac = new AbortController();
    const second = q.run("b", async () => (log.push("2"), "2"), { signal: ac.signal });
    ac.abort();
    await expect(second).rejects.toEqual(new QueueRefusedError("abandoned"));
    expect(q.stats()).toMatchObject({ queued: 0, abandoned: 1 });
    g.open();
    await first;
    expect(log).toEqual(["1"]);
    // Already aborted: refused without queueing.
    await expect(q.run("c", async () => 1, { signal: AbortSignal.abort() })).rejects.toMatchObject({ reason: "abandoned" });
  });

  test("a job that cannot finish before its deadline is dropped when its turn comes", async () => {
    let t = 1000;
    const q = createFairQueue({ concurrency: 1, now: () => t });
    const g = gate();
    const log: string[] = [];
    const first = q.run("a", g.job(log, "1"));
    const late = q.run("b", async () => (log.push("late"), 1), { deadline: 1500 });
    const fine = q.run("c", async () => (log.push("fine"), 2), { deadline: 5000 });
    t = 1600;
    g.open();
    await first;
    await expect(late).rejects.toMatchObject({ reason: "abandoned" });
    await expect(fine).resolves.toBe(2);
    expect(log).toEqual(["1", "fine"]);
  });

  test("bounds: per key and in all; close refuses the waiting jobs", async () => {
    const q = createFairQueue({ concurrency: 1, maxQueued: 3, maxQueuedPerKey: 2 });
    const g = gate();
    const log: string[] = [];
    const running = q.run("a", g.job(log, "r"));
    const w = [q.run("a", async () => 1), q.run("a", async () => 2)];
    await expect(q.run("a", async () => 3)).rejects.toMatchObject({ reason: "full" });
    w.push(q.run("b", async () => 4));
    // Full: "c" and then "b" take the places of the newest jobs of "a", which asked for more ...
    const c = q.run("c", async () => 5);
    const b2 = q.run("b", async () => 6);
    await expect(w[1]).rejects.toMatchObject({ reason: "full" });
    await expect(w[0]).rejects.toMatchObject({ reason: "full" });
    // ... "d" (one request) displaces the newest of "b" (two) ...
    const d = q.run("d", async () => 7);
    await expect(b2).rejects.toMatchObject({ reason: "full" });
    // ... and "b", now the heaviest, finds nobody heavier to displace.
    await expect(q.run("b", async () => 8)).rejects.toMatchObject({ reason: "full" });
    expect(q.stats()).toMatchObject({ queued: 3, refusedFull: 5 });
    q.close();
    for (const p of [w[2], c, d]) await expect(p).rejects.toMatchObject({ reason: "closed" });
    g.open();
    await expect(running).resolves.toBe("r");
    await expect(q.run("d", async () => 6)).rejects.toMatchObject({ reason: "closed" });
  });
});

describe("login throttle", () => {
  const limits = {
    perHost: { freeFailures: 3, baseDelayMs: 1000, maxDelayMs: 8000 },
    perUser: { freeFailures: 2, baseDelayMs: 1000, maxDelayMs: 4000 },
    perPair: { freeFailures: 2, baseDelayMs: 1000, maxDelayMs: 60_000 },
    forgetAfterMs: 600_000,
    trustTtlMs: 3_600_000,
    maxKeys: 1000,
  };

  test("backoff per host doubles up to the maximum; refused attempts do not count; failures are forgotten", () => {
    let t = 0;
    const blocks: unknown[] = [];
    const th = createLoginThrottle({ ...limits, perUser: false, now: () => t, onBlock: (b) => blocks.push(b) });
    for (let i = 0; i < 3; i++) th.failure(`u${i}`, "10.0.0.66");
    expect(th.check("x", "10.0.0.66")).toEqual({ allowed: true, trusted: false });
    th.failure("u3", "10.0.0.66");
    expect(th.check("x", "10.0.0.66")).toEqual({ allowed: false, by: "host", retryAfterMs: 1000 });
    expect(th.check("x", "10.0.0.67")).toEqual({ allowed: true, trusted: false });
    t += 1000;
    th.failure("u4", "10.0.0.66");
    expect(th.check("x", "10.0.0.66")).toMatchObject({ allowed: false, retryAfterMs: 2000 });
    for (let i = 0; i < 10; i++) {
      t += 60_000;
      th.failure("u", "10.0.0.66");
    }
    expect(th.check("x", "10.0.0.66")).toMatchObject({ allowed: false, retryAfterMs: 8000 });
    // While blocked, attempts are refused and do not extend the block.
    for (let i = 0; i < 100; i++) th.check("x", "10.0.0.66");
    t += 8000;
    expect(th.check("x", "10.0.0.66")).toEqual({ allowed: true, trusted: false });
    t += 600_001;
    th.failure("u", "10.0.0.66");
    expect(th.check("x", "10.0.0.66")).toEqual({ allowed: true, trusted: false }); // counting starts again
    expect(blocks[0]).toEqual({ kind: "host", key: "10.0.0.66", failures: 4, forMs: 1000 });
  });

  test("a stranger cannot lock a real user out: trusted pairs are exempt, new addresses wait at most maxDelay after the attack", () => {
    let t = 0;
    const th = createLoginThrottle({ ...limits, now: () => t });
    th.success("alice", "192.0.2.10"); // alice's usual address
    // An attacker hammers alice's name from many addresses.
    for (let i = 0; i < 1000; i++) th.failure("alice", `198.51.100.${i % 200}`);
    expect(th.check("alice", "192.0.2.10")).toEqual({ allowed: true, trusted: true });
    const elsewhere = th.check("alice", "203.0.113.5");
    expect(elsewhere).toMatchObject({ allowed: false, by: "user" });
    // The attack stops: at most maxDelayMs (4 s) later alice gets in from anywhere.
    t += 4000;
    expect(th.check("alice", "203.0.113.5")).toEqual({ allowed: true, trusted: false });
    // A trusted pair still has its own limit (a guesser sharing alice's NAT address).
    for (let i = 0; i < 3; i++) th.failure("alice", "192.0.2.10");
    expect(th.check("alice", "192.0.2.10")).toMatchObject({ allowed: false, by: "pair" });
    expect(th.stats()).toMatchObject({ trustedPairs: 1, blockedPairs: 1 });
  });
});

describe("authenticator", () => {
  const decide = async (auth: ReturnType<typeof createAuthenticator>, u: string, p: string, c = "c", peerhost = "10.1.1.1") =>
    (await auth.check(u, p, c, { peerhost })).outcome;

  test("unknown users, wrong passwords and cheap imported hashes cost the same (one scrypt-priced job each)", async () => {
    const params = { N: 2 ** 13, r: 8, p: 1, keylen: 32 };
    await addUser(store, "eve", "right", { scrypt: params });
    // md5, EMQX format: far cheaper than scrypt on its own.
    await store.putUser({
      username: "md5user",
      passwordHash: emqxSimpleHash("md5", "disable", "", "33e1b232a4e6fa0028a6670753749a17"),
      hashFormat: "md5",
      clientIds: [],
      superuser: false,
      createdAt: 1,
      updatedAt: 1,
    });
    const auth = createAuthenticator({ store, scrypt: params, throttle: false, cacheTtlMs: 0, rehash: false });
    expect(await decide(auth, "nobody", "x")).toBe("unknown-user"); // warms the dummy hash
    const sample = async (u: string, p: string) => {
      const t0 = process.hrtime.bigint();
      await auth.check(u, p, "c");
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    const unknown: number[] = [];
    const wrong: number[] = [];
    const cheap: number[] = [];
    const started = auth.stats().hashing.started;
    for (let i = 0; i < 25; i++) {
      unknown.push(await sample(`ghost${i}`, "guess"));
      wrong.push(await sample("eve", "guess"));
      cheap.push(await sample("md5user", "guess"));
    }
    // Equal work: every one of the 75 checks ran exactly one hash job.
    expect(auth.stats().hashing.started - started).toBe(75);
    const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] as number;
    // Generous bounds (a loaded machine shifts both alike); before the dummy hash the medians
    // differed ~80x (1.1 ms vs 90 ms).
    for (const other of [wrong, cheap]) {
      const ratio = median(unknown) / median(other);
      expect(ratio).toBeGreaterThan(0.4);
      expect(ratio).toBeLessThan(2.5);
    }
    expect(auth.stats()).toMatchObject({ "unknown-user": 26, "bad-password": 50 });
  });

  test("client-id patterns are checked after the password, so a refusal does not reveal the user", async () => {
    await addUser(store, "dev", "dev-pw", { clientIds: ["dev-*"], scrypt: FAST });
    const auth = createAuthenticator({ store, scrypt: FAST, throttle: false });
    expect(await decide(auth, "dev", "wrong", "other")).toBe("bad-password");
    expect(await decide(auth, "dev", "dev-pw", "other")).toBe("clientid-not-allowed");
    expect(await decide(auth, "dev", "dev-pw", "dev-1")).toBe("ok");
  });

  test("over-long client ids and usernames are refused without a lookup or a hash", async () => {
    const auth = createAuthenticator({ store, scrypt: FAST, throttle: false, maxClientIdLength: 100 });
    expect(await decide(auth, "dev", "dev-pw", "x".repeat(101))).toBe("invalid-input");
    expect(await decide(auth, "u".repeat(257), "pw")).toBe("invalid-input");
    expect(await decide(auth, "u".repeat(65_535), "pw", "y".repeat(65_535))).toBe("invalid-input");
    expect(auth.stats().hashing.started).toBe(0);
  });

  test("throttling: after the free failures a pair is refused without hashing, even with the right password", async () => {
    await addUser(store, "tom", "tom-pw", { scrypt: FAST });
    const auth = createAuthenticator({
      store,
      scrypt: FAST,
      throttle: { perPair: { freeFailures: 2, baseDelayMs: 60_000, maxDelayMs: 60_000 } },
    });
    for (let i = 0; i < 3; i++) expect(await decide(auth, "tom", "nope", "c", "10.9.9.9")).toBe("bad-password");
    const hashed = auth.stats().hashing.started;
    expect(await decide(auth, "tom", "tom-pw", "c", "10.9.9.9")).toBe("throttled");
    expect(auth.stats().hashing.started).toBe(hashed);
    // Another address is not blocked by this pair.
    expect(await decide(auth, "tom", "tom-pw", "c", "10.9.9.10")).toBe("ok");
    expect(auth.stats().throttled).toBe(1);
  });

  test("work is abandoned when its call is gone or out of time: queued hashes never run", async () => {
    const slow = { N: 2 ** 15, r: 8, p: 1, keylen: 32 };
    await addUser(store, "sam", "sam-pw", { scrypt: FAST });
    const auth = createAuthenticator({ store, scrypt: slow, throttle: false, hashing: { concurrency: 1, maxQueuedPerPeer: 100 } });
    await auth.check("nobody", "x", "c"); // the dummy hash exists
    const before = auth.stats().hashing.started;
    // 30 logins with 100 ms left: at most a few hashes fit; the rest must not run.
    const deadline = Date.now() + 100;
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => auth.check(`ghost${i}`, "x", "c", { deadline })));
    const ran = auth.stats().hashing.started - before;
    expect(results.filter((r) => r.outcome === "abandoned").length).toBe(30 - ran);
    expect(ran).toBeLessThan(10);
    // A signal that fires while the hashes wait: they are removed at once.
    const ac = new AbortController();
    const pending = Array.from({ length: 10 }, (_, i) => auth.check(`ghost-b${i}`, "x", "c", { signal: ac.signal }));
    ac.abort();
    const outcomes = (await Promise.all(pending)).map((r) => r.outcome);
    expect(outcomes.filter((o) => o === "abandoned").length).toBeGreaterThanOrEqual(9);
    // close() refuses what still waits.
    const waiting = Array.from({ length: 5 }, (_, i) => auth.check(`ghost-c${i}`, "x", "c"));
    auth.close();
    expect((await Promise.all(waiting)).filter((r) => r.outcome === "abandoned").length).toBeGreaterThanOrEqual(4);
  });

  test("a full queue refuses at once (overloaded), counted and logged once", async () => {
    const lines: string[] = [];
    const logger = { debug() {}, info() {}, error() {}, warn: (_o: object, m?: string) => void lines.push(m ?? "") };
    const auth = createAuthenticator({
      store,
      scrypt: { N: 2 ** 14, r: 8, p: 1, keylen: 32 },
      throttle: false,
      logger,
      hashing: { concurrency: 1, maxQueued: 3 },
    });
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => auth.check(`ghost${i}`, "x", "c", { peerhost: `10.0.0.${i}` })));
    // 1 running, 1 in the express slot (each address is new), 3 waiting: 5 refused.
    expect(results.filter((r) => r.outcome === "overloaded").length).toBe(5);
    expect(lines.filter((l) => l.startsWith("password hashing queue full"))).toHaveLength(1);
    expect(auth.stats().hashing.refusedFull).toBe(5);
  });

  test("the handler records the login for the connection: superuser, readable by the authorize side", async () => {
    await addUser(store, "admin", "admin-pw", { superuser: true, scrypt: FAST });
    await addUser(store, "plain", "plain-pw", { scrypt: FAST });
    const auth = createAuthenticator({ store, scrypt: FAST, throttle: false });
    const ctx = { deadline: Date.now() + 5000, signal: new AbortController().signal } as unknown as HookContext;
    const info = (username: string, clientid: string) =>
      create(v3.ClientInfoSchema, { username, clientid, password: `${username}-pw`, peerhost: "10.0.0.1", peerport: 1234, node: "n1" });
    for (const [user, cid] of [
      ["admin", "a1"],
      ["plain", "p1"],
    ] as const) {
      const ci = info(user, cid);
      expect(await auth.handler(create(v3.ClientAuthenticateRequestSchema, { clientinfo: ci }), ctx)).toEqual({ kind: "allow" });
      auth.clients.connected(ci);
    }
    const authz = (ci: v3.ClientInfo) => create(v3.ClientAuthorizeRequestSchema, { clientinfo: ci, topic: "t" });
    expect(auth.isSuperuser(authz(info("admin", "a1")))).toBe(true);
    expect(auth.clientAuth(authz(info("admin", "a1")))).toEqual({
      username: "admin",
      superuser: true,
      via: "password",
      acl: undefined,
      expiresAt: undefined,
    });
    expect(auth.isSuperuser(authz(info("plain", "p1")))).toBe(false);
    // Gone with the connection.
    auth.clients.disconnected(info("admin", "a1"));
    expect(auth.isSuperuser(authz(info("admin", "a1")))).toBe(false);
  });

  test("changes through the authenticator invalidate at once and are reported to onUserChanged", async () => {
    const changed: string[] = [];
    const auth = createAuthenticator({ store, scrypt: FAST, throttle: false, cacheTtlMs: 60_000, onUserChanged: (u) => changed.push(u) });
    await auth.addUser("kim", "one");
    expect(await decide(auth, "kim", "one")).toBe("ok");
    await auth.addUser("kim", "two");
    expect(await decide(auth, "kim", "one")).toBe("bad-password");
    expect(await auth.removeUser("kim")).toBe(true);
    expect(await auth.removeUser("kim")).toBe(false);
    expect(await decide(auth, "kim", "two")).toBe("unknown-user");
    expect(changed).toEqual(["kim", "kim", "kim"]);
  });

  test("imported hashes are rehashed with scrypt on the next good login (unless rehash is off)", async () => {
    const md5 = emqxSimpleHash("md5", "disable", "", "33e1b232a4e6fa0028a6670753749a17"); // "s3cret"
    for (const name of ["legacy", "keep"])
      await store.putUser({
        username: name,
        passwordHash: md5,
        hashFormat: "md5",
        clientIds: [],
        superuser: true,
        createdAt: 1,
        updatedAt: 1,
      });
    const auth = createAuthenticator({ store, scrypt: FAST, throttle: false, cacheTtlMs: 0 });
    expect(await decide(auth, "legacy", "s3cret")).toBe("ok");
    for (let i = 0; i < 200 && (await store.getUser("legacy"))?.hashFormat !== "scrypt"; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await store.getUser("legacy")).toMatchObject({ hashFormat: "scrypt", superuser: true });
    expect(await decide(auth, "legacy", "s3cret")).toBe("ok");
    expect(auth.stats().rehashed).toBe(1);
    const keep = createAuthenticator({ store, scrypt: FAST, throttle: false, cacheTtlMs: 0, rehash: false });
    expect(await decide(keep, "keep", "s3cret")).toBe("ok");
    await new Promise((r) => setTimeout(r, 100));
    expect((await store.getUser("keep"))?.passwordHash).toBe(md5);
  });
});
