/**
 * The use-case stack against failing and busy storage (issue 13), this tree against a baseline
 * tree (default: the commit before the issue-13 work, BENCH_BASELINE_REF) in the same run, both
 * served by their own CLI (`emqx-exhook serve examples/stack-provider.js`) as child processes:
 *
 * - `outage`: publishes and presence changes at FAULT_RATE/s while PostgreSQL (a cluster of the
 *   bench's own) is stopped for FAULT_OUTAGE_S, and while SQLite's filesystem (a tmpfs, root only)
 *   is full for as long; acknowledged (the hook answered) vs stored afterwards, hook latency;
 * - `stall`: a SQLite messages table of STALL_GB; while two clients run a slow read-API query
 *   (`topic=+/nomatch`) in a loop and publishes go on, authorize and authenticate (no cache: a
 *   store read each) are measured at fixed rates for STALL_SECONDS; p50/p99/max and over 50 ms;
 * - `throughput`: h2load closed loop on OnMessagePublish (unique message ids, so every publish is
 *   a new row) with persistence on and off, server pinned to CPU 0, h2load to CPU 1, interleaved
 *   rounds, medians.
 *
 * Run: `npx tsc -p bench/tsconfig.json && node dist/bench-build/bench/store-faults.js [outage|stall|throughput]...`
 * (all three by default). Results: bench/results/store-faults-latest.json.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { transformFileSync } from "@swc/core";
import Database from "better-sqlite3";
import pg from "pg";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { createEmqxLikeClient } from "../src/testing/emqx-client.js";
import { pgBinDir, startPgCluster } from "../test/helpers/pg-cluster.js";
import { percentile, startStoreLoad, type StoreLoadResult } from "./store-load.js";

const env = process.env;
const ROOT = path.resolve(__dirname, "..", "..", "..");
const OUTAGE_S = Number(env["FAULT_OUTAGE_S"] ?? 60);
const RATE = Number(env["FAULT_RATE"] ?? 1000);
const STALL_GB = Number(env["STALL_GB"] ?? 1.6);
const STALL_SECONDS = Number(env["STALL_SECONDS"] ?? 30);
const ROUNDS = Number(env["BENCH_ROUNDS"] ?? 3);
const DURATION = Number(env["BENCH_DURATION"] ?? 5);
const WORK = env["FAULT_WORK_DIR"] ?? path.join(ROOT, "node_modules", ".cache", "store-faults");
const OUT = path.join(ROOT, "bench", "results", "store-faults-latest.json");
const log = (s: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------- trees ----------

function compileDir(src: string, rel: string, out: string): void {
  for (const name of fs.readdirSync(path.join(src, rel))) {
    const r = path.join(rel, name);
    if (fs.statSync(path.join(src, r)).isDirectory()) compileDir(src, r, out);
    else if (name.endsWith(".ts") && !name.endsWith(".d.ts")) {
      const { code } = transformFileSync(path.join(src, r), {
        jsc: { parser: { syntax: "typescript" }, target: "es2022" },
        module: { type: "commonjs", ignoreDynamic: true },
        sourceMaps: false,
      });
      fs.mkdirSync(path.join(out, rel), { recursive: true });
      fs.writeFileSync(path.join(out, r.replace(/\.ts$/, ".js")), code);
    }
  }
}

/** Compiles src, gen and examples of `ref` ("worktree" = the files on disk) into WORK/<name>. */
function buildTree(name: string, ref: string): string {
  const out = path.join(WORK, name);
  fs.rmSync(out, { recursive: true, force: true });
  let src = ROOT;
  if (ref !== "worktree") {
    src = path.join(WORK, `${name}-src`);
    fs.rmSync(src, { recursive: true, force: true });
    fs.mkdirSync(src, { recursive: true });
    execFileSync("sh", ["-c", `git -C '${ROOT}' archive '${ref}' src gen examples | tar -x -C '${src}'`]);
  }
  for (const d of ["src", "gen", "examples"]) compileDir(src, d, out);
  return out;
}

interface Tree {
  readonly name: string;
  readonly dir: string;
  /** Whether the read API is served on the operations port (this tree) or a port of its own (baseline). */
  readonly opsReadApi: boolean;
}

// ---------- server processes ----------

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

interface Server {
  readonly port: number;
  readonly httpPort: number;
  readonly child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

async function startServer(tree: Tree, opts: { dataDir: string; dbUrl?: string; config?: string; pin?: string }): Promise<Server> {
  const port = await freePort();
  const httpPort = await freePort();
  const args = [
    path.join(tree.dir, "src", "cli.js"),
    "serve",
    path.join(tree.dir, "examples", "stack-provider.js"),
    "--port",
    String(port),
    "--host",
    "127.0.0.1",
    "--log-level",
    "warn",
  ];
  const e: NodeJS.ProcessEnv = { ...process.env, EXHOOK_DATA_DIR: opts.dataDir, LOG_LEVEL: "warn" };
  delete e["EXHOOK_DB_URL"];
  if (opts.dbUrl) e["EXHOOK_DB_URL"] = opts.dbUrl;
  if (opts.config) e["EXHOOK_CONFIG"] = opts.config;
  if (tree.opsReadApi) args.push("--metrics-port", String(httpPort));
  else e["EXHOOK_HTTP_PORT"] = String(httpPort);
  const argv = opts.pin ? ["taskset", ["-c", opts.pin, process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(argv[0] as string, argv[1] as string[], { env: e, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout?.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr?.on("data", (c: Buffer) => (out += c.toString()));
  const deadline = Date.now() + 600_000;
  while (!out.includes("listening on")) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${tree.name} did not start:\n${out}`);
    await sleep(50);
  }
  return {
    port,
    httpPort,
    child,
    output: () => out,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
        setTimeout(() => child.kill("SIGKILL"), 30_000).unref();
      }),
  };
}

async function stats(server: Server): Promise<Record<string, any>> {
  const r = (await (await fetch(`http://127.0.0.1:${server.httpPort}/stats`)).json()) as Record<string, any>;
  return r["workers"] ? r["workers"][0] : r;
}

/** Waits until the writer holds nothing (or gives up after `ms`). */
async function drained(server: Server, ms = 300_000): Promise<Record<string, any>> {
  const stop = Date.now() + ms;
  for (;;) {
    const s = await stats(server).catch(() => undefined);
    const p = s?.["persistence"];
    const held = s?.["presence"]?.["writes"]?.["held"] ?? 0;
    if (p && p["queued"] === 0 && p["inFlight"] === 0 && held === 0) return s as Record<string, any>;
    if (Date.now() > stop) return s ?? {};
    await sleep(200);
  }
}

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

function summary(values: readonly number[]): Record<string, number> {
  const round = (v: number) => Math.round(v * 10) / 10;
  return {
    n: values.length,
    p50: round(percentile(values, 50)),
    p99: round(percentile(values, 99)),
    max: round(values.reduce((a, b) => Math.max(a, b), 0)),
    over50ms: values.filter((v) => v > 50).length,
  };
}

// ---------- outage ----------

async function outageRun(tree: Tree, kind: "postgres" | "sqlite-full"): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "exhook-fault-"));
  let cluster: Awaited<ReturnType<typeof startPgCluster>> | undefined;
  let mounted = false;
  try {
    let dataDir = path.join(dir, "data");
    if (kind === "postgres") cluster = await startPgCluster(pgBinDir() as string);
    else {
      if (spawnSync("mount", ["-t", "tmpfs", "-o", "size=256m", "tmpfs", dir]).status !== 0)
        return { skipped: "tmpfs mount failed (needs root)" };
      mounted = true;
      dataDir = path.join(dir, "data");
    }
    const server = await startServer(tree, { dataDir, ...(cluster ? { dbUrl: cluster.url } : {}) });
    const client = createEmqxLikeClient(`http://127.0.0.1:${server.port}`, 8);
    let rssPeak = rssMb(server.child.pid as number);
    const rssTimer = setInterval(() => (rssPeak = Math.max(rssPeak, rssMb(server.child.pid as number))), 500);
    const load = startStoreLoad(client, {
      rate: RATE,
      tag: `${tree.name === "this" ? "1" : "2"}${kind === "postgres" ? "A" : "B"}`,
      presenceEvery: 10,
    });
    await sleep(3000);
    const filler = path.join(dir, "filler");
    const t0 = Date.now();
    if (cluster) cluster.stop();
    else fillUp(filler);
    log(`${tree.name} ${kind}: store down for ${OUTAGE_S} s`);
    const ackedBefore = load.sent();
    await sleep(OUTAGE_S * 1000);
    if (cluster) cluster.start();
    else fs.rmSync(filler);
    const downMs = Date.now() - t0;
    await sleep(3000);
    const result: StoreLoadResult = await load.stop();
    const after = await drained(server);
    clearInterval(rssTimer);
    // What the store holds.
    let stored: Set<string>;
    let presenceStored = 0;
    if (cluster) {
      const c = new pg.Client({ connectionString: cluster.url });
      await c.connect();
      stored = new Set((await c.query("SELECT id FROM exhook_messages")).rows.map((r) => r["id"] as string));
      presenceStored = Number((await c.query("SELECT count(DISTINCT clientid) AS n FROM exhook_presence")).rows[0]["n"]);
      await c.end();
    } else {
      const db = new Database(path.join(dataDir, "exhook.db"), { readonly: true });
      stored = new Set((db.prepare("SELECT id FROM messages").all() as Array<{ id: string }>).map((r) => r.id));
      presenceStored = (db.prepare("SELECT count(DISTINCT clientid) AS n FROM presence").get() as { n: number }).n;
      db.close();
    }
    const lost = [...result.acked].filter((id) => !stored.has(id)).length;
    await client.close();
    await server.stop();
    const out = {
      store: kind,
      outageMs: downMs,
      rate: RATE,
      publishesSent: load.sent(),
      publishesAcked: result.acked.size,
      publishesFailed: result.failed,
      lostAcked: lost,
      presenceAcked: result.presenceAcked,
      presenceClientsExpected: result.presence.size,
      presenceClientsStored: presenceStored,
      hookLatencyMs: summary(result.latencies),
      rssPeakMb: rssPeak,
      sentBeforeOutage: ackedBefore,
      writerAfter: after["persistence"],
    };
    log(`${tree.name} ${kind}: ${JSON.stringify(out)}`);
    return out;
  } finally {
    cluster?.destroy();
    if (mounted) spawnSync("umount", [dir]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function fillUp(file: string): void {
  const fd = fs.openSync(file, "w");
  const chunk = Buffer.alloc(1024 * 1024, 1);
  try {
    for (let size = chunk.length; size >= 1; size = Math.floor(size / 2)) {
      for (;;) {
        try {
          fs.writeSync(fd, chunk, 0, size);
        } catch {
          break;
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

// ---------- stall ----------

/** A SQLite file of the schema version 1 (what the baseline writes) of about STALL_GB. */
function buildBigTable(file: string): { rows: number; bytes: number; ms: number } {
  const t0 = Date.now();
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = OFF");
  db.exec(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);
    CREATE TABLE users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, client_ids TEXT NOT NULL DEFAULT '[]', created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
    CREATE TABLE acl_rules (position INTEGER PRIMARY KEY, rule TEXT NOT NULL);
    CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
      publisher TEXT NOT NULL, username TEXT NOT NULL, node TEXT NOT NULL, ts INTEGER NOT NULL, stored_at INTEGER NOT NULL, headers TEXT NOT NULL);
    CREATE INDEX messages_ts ON messages (ts, seq);
    CREATE TABLE presence (clientid TEXT NOT NULL, conn_key TEXT NOT NULL, node TEXT NOT NULL, username TEXT NOT NULL, peerhost TEXT NOT NULL, peerport INTEGER NOT NULL,
      sockport INTEGER NOT NULL, protocol TEXT NOT NULL, connected_at INTEGER, disconnected_at INTEGER, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (clientid, conn_key));`);
  const ins = db.prepare(
    "INSERT INTO messages (id, topic, payload, qos, publisher, username, node, ts, stored_at, headers) VALUES (?, ?, ?, 1, ?, 'u', 'emqx@n1', ?, ?, '{}')",
  );
  const payload = Buffer.alloc(1024, 0x61);
  const target = STALL_GB * 1e9;
  const start = Date.now() - 30 * 86_400_000;
  let rows = 0;
  const batch = db.transaction((n: number) => {
    for (let i = 0; i < n; i++, rows++)
      ins.run(
        `ID${rows.toString(16).padStart(30, "0")}`,
        `sensors/${rows % 1000}/temp`,
        payload,
        `dev-${rows % 5000}`,
        start + rows,
        start + rows,
      );
  });
  while (fs.statSync(file).size + (fs.existsSync(`${file}-wal`) ? fs.statSync(`${file}-wal`).size : 0) < target) batch(50_000);
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
  return { rows, bytes: fs.statSync(file).size, ms: Date.now() - t0 };
}

async function stallRun(tree: Tree, file: string, withQueries = true): Promise<Record<string, unknown>> {
  const dataDir = path.dirname(file);
  const config = path.join(WORK, "stall.yaml");
  // Keys both trees know: no user cache, so every login reads the store; cheap scrypt.
  fs.writeFileSync(config, "auth:\n  cacheTtlMs: 0\n  scrypt: { N: 1024, r: 8, p: 1, keylen: 32 }\n");
  const t0 = Date.now();
  log(`${tree.name} stall: starting the server on ${(fs.statSync(file).size / 1e9).toFixed(2)} GB`);
  const server = await startServer(tree, { dataDir, config });
  const startMs = Date.now() - t0;
  log(`${tree.name} stall: started in ${startMs} ms; measuring for ${STALL_SECONDS} s`);
  server.child.once("exit", (code, signal) => log(`${tree.name} stall: server exited (${signal ?? code})`));
  spawnSync(process.execPath, [path.join(tree.dir, "src", "cli.js"), "users", "add", "bench", "--password-stdin"], {
    input: "bench-secret\n",
    env: { ...process.env, EXHOOK_DATA_DIR: dataDir, EXHOOK_CONFIG: config },
  });
  const client = createEmqxLikeClient(`http://127.0.0.1:${server.port}`, 8);
  const META = { node: "emqx@10.0.0.1", version: "5.9.1", sysdescr: "EMQX", clusterName: "c" };
  const authz = toBinary(
    v3.ClientAuthorizeRequestSchema,
    create(v3.ClientAuthorizeRequestSchema, {
      clientinfo: { clientid: "bench-1", username: "bench" },
      type: v3.ClientAuthorizeRequest_AuthorizeReqType.PUBLISH,
      topic: "users/bench/x",
      result: false,
      meta: META,
    }),
  );
  const authn = toBinary(
    v3.ClientAuthenticateRequestSchema,
    create(v3.ClientAuthenticateRequestSchema, {
      clientinfo: { clientid: "bench-1", username: "bench", password: "bench-secret" },
      result: false,
      meta: META,
    }),
  );
  // EMQX gives up on a call after its request_timeout (5 s): a call unanswered after 6 s is counted
  // as failed with 6000 ms, and not waited for.
  const CALL_LIMIT_MS = 6000;
  const measure = (body: Uint8Array, rpc: string, perSecond: number, until: number, out: number[], bad: { n: number }) =>
    (async () => {
      const pending: Array<Promise<void>> = [];
      const every = 1000 / perSecond;
      for (let next = Date.now(); Date.now() < until; next += every) {
        const wait = next - Date.now();
        if (wait > 0) await sleep(wait);
        const scheduled = next;
        let done = false;
        const call = client.call(`/emqx.exhook.v3.HookProvider/${rpc}`, body).then(
          (r) => {
            if (done) return;
            done = true;
            // From the scheduled send time: a stalled event loop shows, not hides.
            out.push(Date.now() - scheduled);
            if (r.grpcStatus !== 0) bad.n++;
          },
          () => {
            if (!done) (done = true), bad.n++;
          },
        );
        const limit = sleep(CALL_LIMIT_MS).then(() => {
          if (done) return;
          done = true;
          out.push(CALL_LIMIT_MS);
          bad.n++;
        });
        pending.push(Promise.race([call, limit]));
      }
      await Promise.all(pending);
    })();
  const until = Date.now() + STALL_SECONDS * 1000;
  const queries: Array<{ status: number; ms: number }> = [];
  const slowQueries = async () => {
    while (Date.now() < until) {
      const t = Date.now();
      // Not waited for past the measurement (a baseline query runs for many seconds).
      const r = await fetch(`http://127.0.0.1:${server.httpPort}/messages?topic=%2B/nomatch&limit=10`, {
        signal: AbortSignal.timeout(Math.max(1, until - t + 1000)),
      }).catch(() => undefined);
      await r?.arrayBuffer().catch(() => undefined);
      queries.push({ status: r?.status ?? 0, ms: Date.now() - t });
    }
  };
  const authzLat: number[] = [];
  const authnLat: number[] = [];
  const authzBad = { n: 0 };
  const authnBad = { n: 0 };
  const load = startStoreLoad(client, { rate: 200, tag: tree.name === "this" ? "3C" : "4C", presenceEvery: 0 });
  await Promise.all([
    measure(authz, "OnClientAuthorize", 200, until, authzLat, authzBad),
    measure(authn, "OnClientAuthenticate", 20, until, authnLat, authnBad),
    ...(withQueries ? [slowQueries(), slowQueries()] : []),
  ]);
  log(`${tree.name} stall: measured; stopping`);
  // The server's own event-loop delay over the run (prom-client's monitor; this tree only: the
  // baseline's metrics are off): tells the server's stalls from the machine's and the client's.
  let loop: Record<string, number> | undefined;
  if (tree.opsReadApi) {
    const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`, { signal: AbortSignal.timeout(5000) }))
      .text()
      .catch(() => "");
    const pick = (name: string) =>
      Number(new RegExp(`^exhook_process_nodejs_eventloop_lag_${name}_seconds (\\S+)$`, "m").exec(text)?.[1] ?? NaN) * 1000;
    loop = { p50: pick("p50"), p99: pick("p99"), max: pick("max") };
  }
  // Publishes still in flight get 7 s (a baseline may be inside a query for much longer), then the
  // server goes and the calls it still owes end with it.
  const stopping = load.stop();
  await Promise.race([stopping, sleep(7000)]);
  server.child.kill("SIGKILL");
  const pubs = await stopping;
  // (A session whose server died never calls back from close(): do not wait on it.)
  await Promise.race([client.close(), sleep(2000)]);
  const out = {
    startMs,
    ...(loop ? { serverEventLoopDelayMs: loop } : {}),
    authorize: { ...summary(authzLat), failed: authzBad.n },
    authenticate: { ...summary(authnLat), failed: authnBad.n },
    publish: { ...summary(pubs.latencies), failed: pubs.failed },
    slowQueries: {
      n: queries.length,
      statuses: [...new Set(queries.map((q) => q.status))],
      maxMs: Math.max(...queries.map((q) => q.ms)),
      note: "status 0 = still running when the measurement ended",
    },
  };
  log(`${tree.name} stall${withQueries ? "" : " (no read queries: the machine's floor)"}: ${JSON.stringify(out)}`);
  return out;
}

// ---------- throughput ----------

function h2loadReqPerSec(port: number, frame: string, seconds: number, pinned: boolean): { reqPerSec: number; failed: number } {
  const h2 = [
    "-c",
    "8",
    "-m",
    "8",
    "-D",
    String(seconds),
    "-H",
    "content-type: application/grpc+proto",
    "-H",
    "te: trailers",
    "-H",
    "grpc-timeout: 5S",
    "-d",
    frame,
    `http://127.0.0.1:${port}/emqx.exhook.v3.HookProvider/OnMessagePublish`,
  ];
  const r = pinned
    ? spawnSync("taskset", ["-c", "1", "h2load", ...h2], { encoding: "utf8" })
    : spawnSync("h2load", h2, { encoding: "utf8" });
  const out = `${r.stdout}${r.stderr}`;
  const fin = /finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(out);
  const req = /requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored/.exec(out);
  if (!fin || !req) throw new Error(`h2load output not understood:\n${out}`);
  return { reqPerSec: Math.round(Number(fin[1])), failed: Number(req[1]) + Number(req[2]) };
}

async function throughput(trees: Tree[]): Promise<Record<string, unknown>> {
  // An empty message id: the persistence hook makes a unique one, so every publish is a new row.
  const body = toBinary(
    v3.MessagePublishRequestSchema,
    create(v3.MessagePublishRequestSchema, {
      message: {
        node: "emqx@10.0.0.1",
        id: "",
        qos: 1,
        from: "thermo-1",
        topic: "sensors/room1/temperature",
        payload: new Uint8Array(200).fill(0x61),
        timestamp: 1735689600123n,
        headers: { username: "u1" },
      },
      meta: { node: "emqx@10.0.0.1", version: "5.9.1" },
    }),
  );
  const frame = path.join(WORK, "publish.frame");
  const buf = Buffer.alloc(5 + body.length);
  buf.writeUInt32BE(body.length, 1);
  buf.set(body, 5);
  fs.writeFileSync(frame, buf);
  const off = path.join(WORK, "persistence-off.yaml");
  fs.writeFileSync(off, "persistence:\n  enabled: false\n");
  const runs: Record<string, Array<{ reqPerSec: number; failed: number; stored?: number; dropped?: number }>> = {};
  // Unpinned (default): the SQLite threads may use the other core, as on a real server. Pinned
  // (BENCH_PIN_MODES=pinned,unpinned): the server on CPU 0, h2load on CPU 1, the same CPU budget
  // for every variant; meaningless while anything else is pinned to CPU 0.
  const modes = (env["BENCH_PIN_MODES"] ?? "unpinned").split(",");
  for (let round = 0; round < ROUNDS; round++) {
    for (const mode of modes) {
      const pinned = mode === "pinned";
      for (const tree of trees) {
        for (const persistence of ["on", "off"]) {
          const dataDir = fs.mkdtempSync(path.join(WORK, "tp-"));
          const server = await startServer(tree, {
            dataDir,
            ...(pinned ? { pin: "0" } : {}),
            ...(persistence === "off" ? { config: off } : {}),
          });
          h2loadReqPerSec(server.port, frame, 1, pinned);
          let r = h2loadReqPerSec(server.port, frame, DURATION, pinned);
          // Now and then h2load starts no request at all in a run ("0 started", the server answering
          // other clients meanwhile): run it again rather than record a 0.
          for (let retry = 0; r.reqPerSec === 0 && retry < 2; retry++) {
            log(`throughput: h2load started no request; again`);
            r = h2loadReqPerSec(server.port, frame, DURATION, pinned);
          }
          const s = persistence === "on" ? await drained(server, 60_000) : {};
          await server.stop();
          const row: { reqPerSec: number; failed: number; stored?: number; dropped?: number } = { ...r };
          if (persistence === "on") {
            row.stored = s["persistence"]?.["written"];
            row.dropped = s["persistence"]?.["droppedOverflow"];
          }
          (runs[`${mode} ${tree.name} persistence ${persistence}`] ??= []).push(row);
          log(`throughput round ${round + 1} ${mode} ${tree.name} persistence ${persistence}: ${JSON.stringify(row)}`);
          fs.rmSync(dataDir, { recursive: true, force: true });
        }
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const medians = Object.fromEntries(Object.entries(runs).map(([k, rs]) => [k, median(rs.map((r) => r.reqPerSec))]));
  const ratios = Object.fromEntries(
    modes.flatMap((m) =>
      trees.map((t) => [
        `${m} ${t.name}`,
        Math.round(((medians[`${m} ${t.name} persistence on`] as number) / (medians[`${m} ${t.name} persistence off`] as number)) * 100) /
          100,
      ]),
    ),
  );
  log(`throughput medians ${JSON.stringify(medians)} on/off ${JSON.stringify(ratios)}`);
  return { rounds: ROUNDS, seconds: DURATION, runs, medians, onOffRatio: ratios };
}

// ---------- main ----------

async function main(): Promise<void> {
  const parts = process.argv.slice(2).length ? process.argv.slice(2) : ["outage", "stall", "throughput"];
  fs.mkdirSync(WORK, { recursive: true });
  const baseRef = env["BENCH_BASELINE_REF"] ?? execFileSync("git", ["-C", ROOT, "merge-base", "HEAD", "main"], { encoding: "utf8" }).trim();
  log(`building this tree and the baseline ${baseRef}`);
  const trees: Tree[] = [
    { name: "this", dir: buildTree("this", "worktree"), opsReadApi: true },
    ...(env["BENCH_NO_BASELINE"] ? [] : [{ name: "baseline", dir: buildTree("baseline", baseRef), opsReadApi: false }]),
  ];
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    baseline: baseRef,
    loadavg: os.loadavg(),
  };
  if (parts.includes("outage")) {
    const outage: Record<string, unknown> = {};
    for (const tree of trees) {
      if (pgBinDir()) outage[`${tree.name} postgres`] = await outageRun(tree, "postgres");
      outage[`${tree.name} sqlite-full`] = await outageRun(tree, "sqlite-full");
    }
    results["outage"] = outage;
  }
  if (parts.includes("stall")) {
    const file = path.join(WORK, "stall", "big", "exhook.db");
    log(`building a ${STALL_GB} GB messages table`);
    const built = buildBigTable(file);
    log(`built ${built.rows} rows, ${(built.bytes / 1e9).toFixed(2)} GB in ${built.ms} ms`);
    const stall: Record<string, unknown> = { table: built };
    for (const tree of [...trees].reverse()) {
      // The baseline runs on a copy (it leaves the schema alone); this tree migrates the original.
      const copy = tree.name === "this" ? file : path.join(WORK, "stall", "copy", "exhook.db");
      if (copy !== file) {
        fs.mkdirSync(path.dirname(copy), { recursive: true });
        fs.copyFileSync(file, copy);
      }
      stall[tree.name] = await stallRun(tree, copy);
      if (copy !== file) fs.rmSync(path.dirname(copy), { recursive: true, force: true });
    }
    // The same load without the slow queries, right after: how much of the tail is the machine's.
    stall["this, no read queries"] = await stallRun(trees[0] as Tree, file, false);
    fs.rmSync(path.join(WORK, "stall"), { recursive: true, force: true });
    results["stall"] = stall;
  }
  if (parts.includes("throughput")) results["throughput"] = await throughput(trees);
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify(results, null, 2) + "\n");
  process.stdout.write(JSON.stringify(results, null, 2) + "\n");
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
