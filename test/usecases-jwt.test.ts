/**
 * JWT authentication: secrets, PEM keys and a JWKS served by the test over HTTP (cached, refreshed,
 * bounded), time claims with skew, required claims with placeholders, the ACL and superuser claims,
 * and hostile tokens and key servers.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { aclRulesFromClaim, createAuthenticator, createJwtVerifier, openSqliteStore, parseConfig, type Store } from "../src/usecases/index";
import { authenticatorOptions } from "../src/usecases/stack";

type Jose = typeof import("jose");
let jose: Jose;
let dir: string;
let store: Store;
const SECRET = "0123456789abcdef0123456789abcdef";
const client = { username: "alice", clientid: "dev-1" };
const nowSec = () => Math.floor(Date.now() / 1000);

beforeAll(async () => {
  jose = await import("jose");
  dir = mkdtempSync(join(tmpdir(), "exhook-jwt-"));
  store = openSqliteStore({ file: join(dir, "exhook.db") });
});
afterAll(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const hs = (claims: Record<string, unknown>, secret = SECRET, alg = "HS256") =>
  new jose.SignJWT(claims).setProtectedHeader({ alg }).sign(new TextEncoder().encode(secret));

test("HS256: signature, exp/nbf/iat with clock skew, requireExp, maxAge", async () => {
  const v = createJwtVerifier({ secret: SECRET, clockSkewMs: 10_000 });
  expect(await v.verify(await hs({ sub: "alice", exp: nowSec() + 60 }), client)).toEqual({
    ok: true,
    superuser: false,
    acl: undefined,
    expiresAt: (nowSec() + 60) * 1000,
  });
  expect(await v.verify(await hs({ exp: nowSec() + 60 }, "another-secret-another-secret-xx"), client)).toMatchObject({
    ok: false,
    reason: expect.stringContaining("ERR_JWS_SIGNATURE_VERIFICATION_FAILED"),
  });
  expect(await v.verify(await hs({ exp: nowSec() - 5 }), client)).toMatchObject({ ok: true }); // within the skew
  expect(await v.verify(await hs({ exp: nowSec() - 30 }), client)).toMatchObject({
    ok: false,
    reason: expect.stringContaining("ERR_JWT_EXPIRED"),
  });
  expect(await v.verify(await hs({ nbf: nowSec() + 60 }), client)).toMatchObject({ ok: false, reason: expect.stringContaining("nbf") });
  expect(await v.verify(await hs({ iat: nowSec() + 60 }), client)).toEqual({ ok: false, reason: "iat lies in the future" });
  expect(await v.verify(await hs({}), client)).toMatchObject({ ok: true }); // no exp: accepted, as EMQX does
  const strict = createJwtVerifier({ secret: SECRET, requireExp: true, maxAgeMs: 60_000 });
  expect(await strict.verify(await hs({ iat: nowSec() }), client)).toMatchObject({ ok: false, reason: expect.stringContaining('"exp"') });
  expect(await strict.verify(await hs({ iat: nowSec() - 3600, exp: nowSec() + 60 }), client)).toMatchObject({ ok: false });
  expect(await strict.verify(await hs({ iat: nowSec(), exp: nowSec() + 60 }), client)).toMatchObject({ ok: true });
});

test("hostile tokens: alg none, HS token against a public key, garbage", async () => {
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const pem = publicKey.export({ type: "spki", format: "pem" }) as string;
  const v = createJwtVerifier({ publicKey: pem });
  const none = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from('{"sub":"alice"}').toString("base64url")}.`;
  expect(await v.verify(none, client)).toMatchObject({ ok: false });
  // Algorithm confusion: an HMAC signed with the public key's PEM text as the secret.
  expect(await v.verify(await hs({ sub: "alice" }, pem), client)).toMatchObject({
    ok: false,
    reason: expect.stringContaining("ERR_JOSE_ALG_NOT_ALLOWED"),
  });
  expect(await v.verify("eyJ.not.a-token", client)).toMatchObject({ ok: false });
  const rs = await new jose.SignJWT({ sub: "alice" }).setProtectedHeader({ alg: "RS256" }).sign(privateKey);
  expect(await v.verify(rs, client)).toMatchObject({ ok: true });
  expect(() => createJwtVerifier({ publicKey: "not a pem" })).toThrow("JWT: publicKey is not a PEM public key or certificate");
  expect(() => createJwtVerifier({ secret: SECRET, publicKey: pem })).toThrow("JWT: give exactly one of secret, publicKey, jwks");
});

test("required claims with ${username} / ${clientid}; superuser and ACL claims", async () => {
  const v = createJwtVerifier({ secret: SECRET, claims: { sub: "${username}", cid: "dev-${clientid}", aud: "mqtt" } });
  const good = { sub: "alice", cid: "dev-dev-1", aud: ["web", "mqtt"] };
  expect(await v.verify(await hs(good), client)).toMatchObject({ ok: true });
  expect(await v.verify(await hs({ ...good, sub: "bob" }), client)).toEqual({ ok: false, reason: 'claim sub is not "alice"' });
  expect(await v.verify(await hs({ ...good, cid: undefined }), client)).toEqual({ ok: false, reason: 'claim cid is not "dev-dev-1"' });
  const rules = [
    { permission: "allow", action: "publish", topic: "t/${clientid}" },
    { permission: "deny", action: "all", topic: "#" },
  ];
  const full = createJwtVerifier({ secret: SECRET });
  expect(await full.verify(await hs({ acl: rules, is_superuser: true }), client)).toEqual({
    ok: true,
    superuser: true,
    expiresAt: undefined,
    acl: [
      { permission: "allow", action: "publish", topic: "t/${clientid}" },
      { permission: "deny", action: "all", topic: "#" },
    ],
  });
  // EMQX's older form: topic lists per action, each an allow rule.
  expect(await full.verify(await hs({ acl: { pub: ["a/1"], sub: ["b/#"], all: ["c"] }, is_superuser: "false" }), client)).toMatchObject({
    superuser: false,
    acl: [
      { permission: "allow", action: "publish", topic: "a/1" },
      { permission: "allow", action: "subscribe", topic: "b/#" },
      { permission: "allow", action: "all", topic: "c" },
    ],
  });
  expect(await full.verify(await hs({ acl: [{ permission: "allow", topic: "a/+x" }] }), client)).toMatchObject({
    ok: false,
    reason: expect.stringContaining("claim acl: acl rule #1: topic"),
  });
  expect(() => aclRulesFromClaim([{ permission: "allow", topic: "x", username: "bob" }])).toThrow(
    "username/clientid conditions are not allowed in a token",
  );
  expect(() => aclRulesFromClaim({ publish: ["x"], write: ["y"] })).toThrow('acl claim: unknown key "write"');
  expect(aclRulesFromClaim([{ permission: "deny", action: "sub", topics: ["x", "y"] }])).toEqual([
    { permission: "deny", action: "subscribe", topic: "x" },
    { permission: "deny", action: "subscribe", topic: "y" },
  ]);
});

/** A JWKS endpoint the test controls. */
async function jwksServer() {
  const state: { body: string; status: number; delayMs: number; hits: number } = { body: "{}", status: 200, delayMs: 0, hits: 0 };
  const server = http.createServer((_req, res) => {
    state.hits++;
    setTimeout(() => {
      res.writeHead(state.status, { "content-type": "application/json" });
      res.end(state.body);
    }, state.delayMs);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  return { state, url, close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))) };
}

test("JWKS over HTTP: fetched once and cached, key rotation refetches, an outage keeps the last good keys, bounds hold", async () => {
  const srv = await jwksServer();
  const k1 = await jose.generateKeyPair("ES256");
  const k2 = await jose.generateKeyPair("ES256");
  const jwk = async (k: CryptoKey, kid: string) => ({ ...(await jose.exportJWK(k)), kid, alg: "ES256", use: "sig" });
  srv.state.body = JSON.stringify({ keys: [await jwk(k1.publicKey, "one")] });
  const es = (k: CryptoKey, kid: string) => new jose.SignJWT({ sub: "alice" }).setProtectedHeader({ alg: "ES256", kid }).sign(k);
  const warnings: string[] = [];
  const logger = { debug() {}, info() {}, error() {}, warn: (o: object, m?: string) => void warnings.push(`${m} ${JSON.stringify(o)}`) };
  const v = createJwtVerifier({ jwks: { url: srv.url, cooldownMs: 0, refreshMs: 3_600_000, timeoutMs: 300, maxBytes: 4096 }, logger });
  try {
    for (let i = 0; i < 5; i++) expect(await v.verify(await es(k1.privateKey, "one"), client)).toMatchObject({ ok: true });
    expect(srv.state.hits).toBe(1);
    // Rotation: a token with a key id not in the set triggers one fetch.
    srv.state.body = JSON.stringify({ keys: [await jwk(k1.publicKey, "one"), await jwk(k2.publicKey, "two")] });
    expect(await v.verify(await es(k2.privateKey, "two"), client)).toMatchObject({ ok: true });
    expect(srv.state.hits).toBe(2);
    // An unknown key that is in no set: refused (not an outage).
    const k3 = await jose.generateKeyPair("ES256");
    expect(await v.verify(await es(k3.privateKey, "three"), client)).toMatchObject({
      ok: false,
      reason: expect.stringContaining("ERR_JWKS_NO_MATCHING_KEY"),
    });
    // The key server fails (500, then an oversized body, then too slow): the last good set still verifies.
    srv.state.status = 500;
    expect(await v.verify(await es(k3.privateKey, "four"), client)).toMatchObject({ ok: false });
    srv.state.status = 200;
    srv.state.body = JSON.stringify({ keys: [await jwk(k3.publicKey, "five")], pad: "x".repeat(10_000) });
    expect(await v.verify(await es(k3.privateKey, "five"), client)).toMatchObject({ ok: false });
    srv.state.body = JSON.stringify({ keys: [await jwk(k3.publicKey, "five")] });
    srv.state.delayMs = 2000;
    const t0 = Date.now();
    expect(await v.verify(await es(k3.privateKey, "five"), client)).toMatchObject({ ok: false });
    expect(Date.now() - t0).toBeLessThan(1800); // the 300 ms fetch timeout, not the server's 2 s
    expect(await v.verify(await es(k2.privateKey, "two"), client)).toMatchObject({ ok: true });
    expect(v.stats().jwks).toMatchObject({ failures: 3, keys: 2 });
    expect(warnings.map((w) => w.split(" {")[0])).toEqual(["JWKS fetch failed", "JWKS fetch failed", "JWKS fetch failed"]);
    expect(warnings[0]).toContain('"err":"HTTP 500"');
    expect(warnings[1]).toContain("larger than the limit of 4096");
    expect(warnings[2]).toContain("no answer within 300 ms");
  } finally {
    v.close();
    await srv.close();
  }
});

test("no keys at all (JWKS unreachable from the start): the check throws, so the hook answers its fallback", async () => {
  const srv = await jwksServer();
  srv.state.status = 503;
  const auth = createAuthenticator({ store, throttle: false, jwt: { jwks: { url: srv.url, timeoutMs: 500 } } });
  try {
    const k = await jose.generateKeyPair("ES256");
    const token = await new jose.SignJWT({ sub: "alice" }).setProtectedHeader({ alg: "ES256", kid: "k" }).sign(k.privateKey);
    await expect(auth.check("alice", token, "c")).rejects.toThrow(`JWKS ${srv.url}: HTTP 503`);
    // An HMAC token is refused before any key is looked up (a JWKS holds public keys only).
    expect((await auth.check("alice", await hs({ sub: "alice" }), "c")).outcome).toBe("bad-token");
  } finally {
    auth.close();
    await srv.close();
  }
});

test("through the authenticator: token in the password or the username, recorded for the connection; other passwords use the store", async () => {
  const cfg = parseConfig({ auth: { jwt: { secret: SECRET, claims: { sub: "${username}" } } } });
  const auth = createAuthenticator({ ...authenticatorOptions(cfg, store), throttle: false });
  const token = await hs({ sub: "alice", is_superuser: true, acl: { pub: ["x/1"] }, exp: nowSec() + 600 });
  expect(await auth.check("alice", token, "c1")).toEqual({
    decision: { kind: "allow" },
    outcome: "ok",
    client: {
      username: "alice",
      superuser: true,
      via: "jwt",
      acl: [{ permission: "allow", action: "publish", topic: "x/1" }],
      expiresAt: (nowSec() + 600) * 1000,
    },
  });
  expect((await auth.check("mallory", token, "c1")).outcome).toBe("bad-token");
  expect((await auth.check("alice", "not-a-token", "c1")).outcome).toBe("unknown-user");
  expect(auth.stats()).toMatchObject({ ok: 1, "bad-token": 1, "unknown-user": 1 });
  auth.close();
  const byName = createAuthenticator({ store, throttle: false, jwt: { secret: SECRET, from: "username", maxTokenLength: 2000 } });
  const long = await hs({ sub: "x", pad: "p".repeat(400) }); // longer than any stored username
  expect((await byName.check(long, "", "c1")).outcome).toBe("ok");
  expect((await byName.check(await hs({ pad: "p".repeat(3000) }), "", "c1")).outcome).toBe("invalid-input");
  byName.close();
  expect(() => parseConfig({ auth: { jwt: { secret: "a", jwksUrl: "http://x" } } })).toThrow(
    "auth.jwt: give exactly one of secret, publicKey, jwksUrl",
  );
  expect(() => parseConfig({ auth: { jwt: { secret: "a", claims: { sub: "${peerhost}" } } } })).toThrow("unknown placeholder ${peerhost}");
});
