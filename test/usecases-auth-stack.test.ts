/**
 * Authentication wired into the stack, as EMQX drives it (the fake EMQX over the real dispatcher):
 * a superuser may do what no rule allows, a JWT's ACL claim and expiry govern that connection, and
 * a user added with the CLI is seen at once by a running stack (the invalidation announced by the
 * command reaches the authenticator's cache).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCommand } from "../src/commands/index";
import { createFakeEmqx } from "../src/testing/index";
import { addUser, createStack, parseConfig, type Stack } from "../src/usecases/index";

const SECRET = "0123456789abcdef0123456789abcdef";
const FAST = { N: 1024, r: 8, p: 1, keylen: 32 };
let dir: string;
let stack: Stack;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "exhook-auth-stack-"));
  const cfg = parseConfig({
    dataDir: dir,
    // No throttling here: the retries below would count as failed logins of "newbie".
    auth: { scrypt: FAST, cacheTtlMs: 600_000, jwt: { secret: SECRET }, throttle: { enabled: false } },
    cache: { pollInterval: 50 },
    persistence: { enabled: false },
    presence: { enabled: false },
    http: { enabled: false },
  });
  stack = await createStack(cfg);
  await addUser(stack.store, "root", "root-pw", { superuser: true, scrypt: FAST });
  await addUser(stack.store, "bob", "bob-pw", { scrypt: FAST });
});
afterAll(async () => {
  await stack.close();
  rmSync(dir, { recursive: true, force: true });
});

test("a superuser may publish and subscribe where no rule allows; a plain user may not", async () => {
  const emqx = createFakeEmqx({ provider: stack.provider, version: "5.9.0" });
  await emqx.start();
  try {
    expect(await emqx.connect({ clientid: "r1", username: "root", password: "root-pw" })).toMatchObject({ connected: true });
    expect(await emqx.connect({ clientid: "b1", username: "bob", password: "bob-pw" })).toMatchObject({ connected: true });
    expect(await emqx.subscribe("r1", "secret/#")).toEqual({ granted: 0 });
    expect(await emqx.subscribe("b1", "secret/#")).toEqual({ reasonCode: "not_authorized" });
    // The record goes with the connection: reconnected as a plain user, no longer a superuser.
    await emqx.disconnect("r1");
    expect(await emqx.connect({ clientid: "r1", username: "bob", password: "bob-pw" })).toMatchObject({ connected: true });
    expect(await emqx.subscribe("r1", "secret/#")).toEqual({ reasonCode: "not_authorized" });
  } finally {
    await emqx.stop();
  }
});

test("a JWT's ACL claim governs its connection; after exp everything is denied", async () => {
  const jose = await import("jose");
  const sign = (claims: Record<string, unknown>) =>
    new jose.SignJWT(claims).setProtectedHeader({ alg: "HS256" }).sign(new TextEncoder().encode(SECRET));
  const emqx = createFakeEmqx({ provider: stack.provider, version: "5.9.0" });
  await emqx.start();
  try {
    const now = Math.floor(Date.now() / 1000);
    const token = await sign({ acl: [{ permission: "allow", action: "subscribe", topic: "fleet/${clientid}/#" }], exp: now + 600 });
    expect(await emqx.connect({ clientid: "truck7", username: "jwt-user", password: token })).toMatchObject({ connected: true });
    expect(await emqx.subscribe("truck7", "fleet/truck7/#")).toEqual({ granted: 0 });
    expect(await emqx.subscribe("truck7", "fleet/truck8/#")).toEqual({ reasonCode: "not_authorized" });
    // Expired within the clock skew: still logs in, but the connection's every action is denied.
    const expiring = await sign({ acl: { sub: ["fleet/#"] }, exp: now - 5 });
    expect(await emqx.connect({ clientid: "truck9", username: "jwt-user", password: expiring })).toMatchObject({ connected: true });
    expect(await emqx.subscribe("truck9", "fleet/x")).toEqual({ reasonCode: "not_authorized" });
    expect(await emqx.connect({ clientid: "truck10", username: "jwt-user", password: `${token}x` })).toMatchObject({ connected: false });
  } finally {
    await emqx.stop();
  }
});

test("a user added with the CLI is seen at once by the running stack (no wait for the auth cache)", async () => {
  const emqx = createFakeEmqx({ provider: stack.provider, version: "5.9.0" });
  await emqx.start();
  try {
    // Cached as unknown (auth.cacheTtlMs is 10 minutes here).
    expect(await emqx.connect({ clientid: "n1", username: "newbie", password: "n-pw" })).toMatchObject({ connected: false });
    const io = { stdout: () => {}, stderr: () => {}, readStdin: async () => "n-pw\n", env: { EXHOOK_DATA_DIR: dir } };
    expect(await runCommand(["users", "add", "newbie", "--password-stdin"], io)).toBe(0);
    let connected = false;
    for (let i = 0; i < 100 && !connected; i++) {
      connected = (await emqx.connect({ clientid: `n${i + 2}`, username: "newbie", password: "n-pw" })).connected;
      if (!connected) await new Promise((r) => setTimeout(r, 20));
    }
    expect(connected).toBe(true);
  } finally {
    await emqx.stop();
  }
});
