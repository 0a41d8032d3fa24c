/** Authentication: hashing, client-id rules, unknown users, the cache, rehashing, the users CLI. */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCommand } from "../src/commands/index";
import {
  addUser,
  createAuthenticator,
  hashPassword,
  needsRehash,
  openSqliteStore,
  parseHash,
  verifyPassword,
  type Store,
} from "../src/usecases/index";

const FAST = { N: 1024, r: 8, p: 1, keylen: 32 };
let dir: string;
let store: Store;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "exhook-auth-"));
  store = openSqliteStore({ file: join(dir, "exhook.db") });
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

test("hashes carry their parameters and a random salt; verification is exact", async () => {
  const a = await hashPassword("pw", FAST);
  const b = await hashPassword("pw", FAST);
  expect(a).toMatch(/^\$scrypt\$ln=10,r=8,p=1,k=32\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}$/);
  expect(a).not.toBe(b);
  expect(await verifyPassword("pw", a)).toBe(true);
  expect(await verifyPassword("pW", a)).toBe(false);
  expect(await verifyPassword("pw", "plain")).toBe(false);
  expect(parseHash(a)?.params).toEqual(FAST);
  expect(needsRehash(a, FAST)).toBe(false);
  expect(needsRehash(a, { ...FAST, N: 2048 })).toBe(true);
});

test("unknown users: deny or no opinion; client-id patterns", async () => {
  await addUser(store, "dev", "dev-pw", { clientIds: ["sensor-*", "gw"], scrypt: FAST });
  const deny = createAuthenticator({ store, scrypt: FAST });
  const neutral = createAuthenticator({ store, scrypt: FAST, unknownUser: "no-opinion" });
  expect((await deny.check("ghost", "x", "c")).decision.kind).toBe("deny");
  expect((await neutral.check("ghost", "x", "c")).decision.kind).toBe("no-opinion");
  const client = { username: "dev", superuser: false, via: "password", acl: undefined, expiresAt: undefined };
  expect(await neutral.check("dev", "dev-pw", "sensor-17")).toEqual({ decision: { kind: "allow" }, outcome: "ok", client });
  expect(await neutral.check("dev", "dev-pw", "gw")).toEqual({ decision: { kind: "allow" }, outcome: "ok", client });
  expect(await neutral.check("dev", "dev-pw", "gw2")).toEqual({ decision: { kind: "deny" }, outcome: "clientid-not-allowed" });
  expect(await neutral.check("dev", "nope", "gw")).toEqual({ decision: { kind: "deny" }, outcome: "bad-password" });
});

test("cache: a password change through another handle is seen after the TTL, at once after invalidate()", async () => {
  await addUser(store, "carol", "old", { scrypt: FAST });
  const auth = createAuthenticator({ store, scrypt: FAST, cacheTtlMs: 60_000 });
  expect((await auth.check("carol", "old", "c")).outcome).toBe("ok");
  await addUser(store, "carol", "new", { scrypt: FAST });
  // Within the TTL the cached record still answers (documented behaviour).
  expect((await auth.check("carol", "old", "c")).outcome).toBe("ok");
  auth.invalidate("carol");
  expect((await auth.check("carol", "old", "c")).outcome).toBe("bad-password");
  expect((await auth.check("carol", "new", "c")).outcome).toBe("ok");
  const noCache = createAuthenticator({ store, scrypt: FAST, cacheTtlMs: 0 });
  await store.removeUser("carol");
  expect((await noCache.check("carol", "new", "c")).outcome).toBe("unknown-user");
});

test("a good login with old parameters rehashes with the current ones", async () => {
  await addUser(store, "dave", "pw", { scrypt: FAST });
  const stronger = { ...FAST, N: 2048 };
  const auth = createAuthenticator({ store, scrypt: stronger, cacheTtlMs: 0 });
  expect((await auth.check("dave", "pw", "c")).outcome).toBe("ok");
  for (let i = 0; i < 100 && needsRehash((await store.getUser("dave"))?.passwordHash ?? "", stronger); i++)
    await new Promise((r) => setTimeout(r, 10));
  expect(parseHash((await store.getUser("dave"))?.passwordHash ?? "")?.params).toEqual(stronger);
  expect((await auth.check("dave", "pw", "c")).outcome).toBe("ok");
});

test("users CLI: add from stdin, list, remove; the password is never printed", async () => {
  const run = async (args: string[], stdin = "") => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runCommand(args, {
      stdout: (t) => out.push(t),
      stderr: (t) => err.push(t),
      readStdin: async () => stdin,
      env: { EXHOOK_DATA_DIR: join(dir, "cli") },
    });
    return { code, out: out.join(""), err: err.join("") };
  };
  // No store yet: refused, nothing created, unless --create asks for it.
  const refused = await run(["users", "list"]);
  expect(refused.code).toBe(1);
  expect(refused.err).toBe(
    `emqx-exhook: no store at ${join(dir, "cli", "exhook.db")} (dataDir ${join(dir, "cli")}): run the command where the server keeps its data, point --config / EXHOOK_DATA_DIR / EXHOOK_DB_URL at it, or pass --create to create an empty one\n`,
  );
  expect(existsSync(join(dir, "cli"))).toBe(false);
  expect((await run(["users", "add", "erin", "--password-stdin"], "pw\n")).code).toBe(1);
  expect(existsSync(join(dir, "cli"))).toBe(false);
  expect(await run(["users", "add", "erin", "--password-stdin", "--clientid", "erin-*", "--create"], "s3cret-pw\n")).toEqual({
    code: 0,
    out: "added user erin (client ids: erin-*)\n",
    err: "",
  });
  const byFlag = await run(["users", "add", "frank", "--password", "s3cret-pw"]);
  expect(byFlag.code).toBe(0);
  expect(byFlag.err).toContain("prefer --password-stdin");
  const list = await run(["users", "list"]);
  expect(list.code).toBe(0);
  expect(list.out.split("\n").map((l) => l.split("\t").slice(0, 2).join(" | "))).toEqual([
    "erin | client ids: erin-*",
    "frank | client ids: any",
    "",
  ]);
  expect(list.out + byFlag.out).not.toContain("s3cret-pw");
  expect(await run(["users", "remove", "frank"])).toEqual({ code: 0, out: "removed user frank\n", err: "" });
  expect(await run(["users", "remove", "frank"])).toEqual({ code: 1, out: "", err: 'emqx-exhook: no user "frank"\n' });
  const missing = await run(["users", "add", "gina"]);
  expect(missing.code).toBe(2);
  expect(missing.err).toContain("users add needs --password-stdin (recommended) or --password X");
  // The stored hash verifies the password given on stdin (without its newline).
  const cliStore = openSqliteStore({ file: join(dir, "cli", "exhook.db") });
  try {
    expect(await verifyPassword("s3cret-pw", (await cliStore.getUser("erin"))?.passwordHash ?? "")).toBe(true);
  } finally {
    await cliStore.close();
  }
});
