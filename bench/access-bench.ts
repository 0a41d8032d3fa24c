/**
 * Authorization and its decision cache, in one invocation (ratios are what to read; the machine
 * is shared):
 *
 * 1. authorize calls/s through the dispatcher (request decoding, handler, answer encoding; no
 *    sockets), warm decision cache vs none, for two providers:
 *    - "stack ACL": the stack's authorizer over 10,000 in-memory rules (a cheap decision);
 *    - "store lookup": a provider that reads the client's rights from the store on every call (a
 *      SQLite query; PostgreSQL too when EXHOOK_BENCH_PG_URL is set) — the case a cache is for.
 * 2. invalidation latency between two instances on one PostgreSQL (EXHOOK_BENCH_PG_URL): instance A
 *    announces, instance B's subscriber hears it; LISTEN/NOTIFY vs polling only (1 s).
 *
 * Run: `npx tsc -p bench/tsconfig.json && EXHOOK_BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres \
 *   node dist/bench-build/bench/access-bench.js [calls]`
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { toBinary } from "@bufbuild/protobuf";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { createDispatcher } from "../src/dispatch.js";
import { allow, deny, defineProvider, type Logger, type Provider } from "../src/index.js";
import { fakeAuthorizeRequest } from "../src/testing/index.js";
import { compileAcl, type AclRule } from "../src/usecases/acl.js";
import { createAuthorizer } from "../src/usecases/authorizer.js";
import { createDecisionCache } from "../src/usecases/decision-cache.js";
import { createInvalidationHub } from "../src/usecases/invalidation.js";
import { openPostgresStore, openSqliteStore, type Store } from "../src/usecases/index.js";

const CALLS = Number(process.argv[2] ?? 200_000);
const PG_URL = process.env["EXHOOK_BENCH_PG_URL"];
const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** 1,000 clients x 8 topics, asked round-robin (a warm cache hits every time after the first pass). */
function requests(): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let c = 0; c < 1000; c++) {
    for (let t = 0; t < 8; t++) {
      const req = fakeAuthorizeRequest(`t${c % 500}/users/u${c}/d${t}/temp`, t % 2 ? "SUBSCRIBE" : "PUBLISH", {
        clientid: `c${c}`,
        username: `u${c}`,
        peerhost: "10.1.2.3",
      });
      out.push(toBinary(v3.ClientAuthorizeRequestSchema, req));
    }
  }
  return out;
}

function tenantRules(): AclRule[] {
  const rules: AclRule[] = [];
  for (let t = 0; t < 500; t++) {
    for (let k = 0; k < 20; k++) {
      const topic =
        k % 4 === 0
          ? `t${t}/users/\${username}/d${k % 8}/#`
          : k % 4 === 1
            ? `t${t}/devices/\${clientid}/c${k}`
            : k % 4 === 2
              ? `t${t}/+/s${k}/#`
              : `t${t}/shared/x${k}`;
      rules.push({ permission: k % 5 === 0 ? "deny" : "allow", topic, ...(k === 3 ? { peerhost: "10.0.0.0/8" } : {}) });
    }
  }
  return rules;
}

async function callsPerSecond(provider: Provider, reqs: readonly Uint8Array[], calls: number): Promise<number> {
  const d = createDispatcher(provider, { logger: quiet });
  const target = d.provider.byKey.get("onClientAuthorize")?.def;
  if (!target) throw new Error("no authorize hook");
  const one = (i: number) => d.handleBytes("v3", target, reqs[i % reqs.length] as Uint8Array, { timeoutMs: 5000 });
  // Warm-up: fills the cache (every request once) and the JIT.
  for (let i = 0; i < Math.max(reqs.length, 20_000); i++) await one(i);
  const t0 = process.hrtime.bigint();
  // 64 calls in flight, as EMQX's pool keeps several per connection.
  let next = 0;
  const worker = async () => {
    while (next < calls) await one(next++);
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  return calls / (Number(process.hrtime.bigint() - t0) / 1e9);
}

async function storeProvider(store: Store, withCache: boolean): Promise<Provider> {
  // Rights kept as one store row per user (a user record is what both backends have): the provider
  // reads it on every call, as a provider backed by a database would.
  for (let c = 0; c < 1000; c++) {
    await store.putUser({
      username: `u${c}`,
      passwordHash: "$scrypt$x",
      clientIds: [`t${c % 500}/users/u${c}/#`],
      createdAt: 0,
      updatedAt: 0,
    });
  }
  const cache = withCache ? createDecisionCache({ ttlMs: 3_600_000, negativeTtlMs: 3_600_000 }) : undefined;
  return defineProvider(
    {
      onClientAuthorize: async (req) => {
        const u = await store.getUser(req.clientinfo?.username ?? "");
        const prefix = u?.clientIds[0]?.slice(0, -1) ?? "\u0000";
        return req.topic.startsWith(prefix) ? allow() : deny();
      },
    },
    cache ? { middleware: [cache.middleware] } : {},
  );
}

function stackAclProvider(withCache: boolean): Provider {
  const acl = compileAcl(tenantRules(), "deny");
  const authorizer = createAuthorizer({ acl: () => acl, compile: (r) => compileAcl(r, "no-opinion") });
  const cache = withCache ? createDecisionCache({ ttlMs: 3_600_000 }) : undefined;
  return defineProvider({ onClientAuthorize: authorizer.handler }, cache ? { middleware: [cache.middleware] } : {});
}

async function invalidationLatency(url: string, listen: boolean, n: number): Promise<number[]> {
  const a = await openPostgresStore({ url, poolSize: 2 });
  const b = await openPostgresStore({ url, poolSize: 2 });
  const hubA = createInvalidationHub({ store: a, pollMs: 0, bus: false });
  const hubB = createInvalidationHub({ store: b, pollMs: 1000, bus: false, ...(listen ? { listenUrl: url } : {}) });
  await hubB.ready();
  if (listen) while (hubB.stats().listening !== true) await new Promise((r) => setTimeout(r, 10));
  const lat: number[] = [];
  let pending: { key: string; t0: bigint; done: () => void } | undefined;
  hubB.subscribe((inv) => {
    if (pending && inv.key === pending.key) {
      lat.push(Number(process.hrtime.bigint() - pending.t0) / 1e6);
      pending.done();
    }
  });
  for (let i = 0; i < n; i++) {
    const key = `u${i}`;
    const heard = new Promise<void>((done) => (pending = { key, t0: process.hrtime.bigint(), done }));
    await hubA.announce({ scope: "user", key });
    await heard;
    // Announce at a random point of the poll period, so polling latency is sampled fairly.
    if (!listen) await new Promise((r) => setTimeout(r, Math.random() * 1000));
  }
  await hubA.close();
  await hubB.close();
  await a.close();
  await b.close();
  return lat.sort((x, y) => x - y);
}

const pct = (s: readonly number[], p: number) => s[Math.min(s.length - 1, Math.floor((s.length * p) / 100))] as number;

async function main(): Promise<void> {
  const reqs = requests();
  console.log(`authorize calls/s through the dispatcher (${CALLS} calls, 64 in flight, 8,000 distinct questions)`);
  const rows: Array<[string, () => Promise<Provider>, number]> = [
    ["stack ACL (10,000 rules)", async () => stackAclProvider(false), CALLS],
    ["stack ACL (10,000 rules) + cache", async () => stackAclProvider(true), CALLS],
  ];
  const dir = mkdtempSync(join(tmpdir(), "exhook-bench-"));
  const stores: Store[] = [];
  const sqlite = () => {
    const s = openSqliteStore({ file: join(dir, `b${stores.length}.db`) });
    stores.push(s);
    return s;
  };
  rows.push(["store lookup (SQLite)", () => storeProvider(sqlite(), false), CALLS / 4]);
  rows.push(["store lookup (SQLite) + cache", () => storeProvider(sqlite(), true), CALLS]);
  let pgDb: string | undefined;
  let pgUrl: string | undefined;
  if (PG_URL) {
    pgDb = `exhook_bench_${process.pid}`;
    const admin = new pg.Client({ connectionString: PG_URL });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${pgDb}`);
    await admin.end();
    const u = new URL(PG_URL);
    u.pathname = `/${pgDb}`;
    pgUrl = u.toString();
    const pgStore = async () => {
      const s = await openPostgresStore({ url: pgUrl as string, poolSize: 8 });
      stores.push(s);
      return s;
    };
    rows.push(["store lookup (PostgreSQL)", async () => storeProvider(await pgStore(), false), Math.min(CALLS / 10, 20_000)]);
    rows.push(["store lookup (PostgreSQL) + cache", async () => storeProvider(await pgStore(), true), CALLS]);
  }
  try {
    let baseline = 0;
    for (const [label, make, calls] of rows) {
      const rate = await callsPerSecond(await make(), reqs, calls);
      const cached = label.endsWith("+ cache");
      console.log(
        `  ${label.padEnd(36)} ${Math.round(rate).toString().padStart(9)} calls/s${cached ? `  (x${(rate / baseline).toFixed(2)} vs no cache)` : ""}`,
      );
      if (!cached) baseline = rate;
    }
    if (pgUrl) {
      console.log("invalidation latency, instance A announces -> instance B hears (one PostgreSQL)");
      for (const listen of [true, false]) {
        const lat = await invalidationLatency(pgUrl, listen, listen ? 300 : 30);
        console.log(
          `  ${(listen ? "LISTEN/NOTIFY (+ 1 s poll)" : "1 s poll only").padEnd(28)} p50 ${pct(lat, 50).toFixed(2)} ms  p99 ${pct(lat, 99).toFixed(2)} ms  max ${(lat.at(-1) as number).toFixed(2)} ms  (${lat.length} announcements)`,
        );
      }
    } else {
      console.log("(set EXHOOK_BENCH_PG_URL for the PostgreSQL rows and the invalidation latency)");
    }
  } finally {
    for (const s of stores) await s.close();
    rmSync(dir, { recursive: true, force: true });
    if (pgDb) {
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      await admin.query(`DROP DATABASE IF EXISTS ${pgDb} WITH (FORCE)`);
      await admin.end();
    }
  }
}

void main();
