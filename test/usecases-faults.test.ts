/**
 * The use cases against failing storage, over real sockets, measuring what the client saw against
 * what the store holds afterwards:
 * - a PostgreSQL cluster of the test's own is stopped under load and started again: every
 *   publish and presence change the hooks acknowledged is in the store afterwards;
 * - SQLite on a tiny tmpfs filled to the last byte (root only): the same, once space is freed;
 * - SQLite held by another process's write transaction (what `messages prune` does): logins,
 *   authorization and the read API answer while the lock is held.
 * The outage lasts EXHOOK_TEST_OUTAGE_MS (default 6000) so `make test` stays quick; bench/store-faults.ts
 * measures 60 s outages.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, openSync, rmSync, statSync, writeSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import pg from "pg";
import Database from "better-sqlite3";
import { createExHookServer, type ExHookServer } from "../src/node";
import { createEmqxLikeClient, type EmqxLikeClient } from "../src/testing/emqx-client";
import { addUser, createStack, parseConfig, type Stack } from "../src/usecases/index";
import { startStoreLoad, type StoreLoadResult } from "../bench/store-load";
import { httpGet, memoryLogger, until } from "./helpers/ops";
import { pgBinDir, startPgCluster, type PgCluster } from "./helpers/pg-cluster";
import { decode, encode, servicePath } from "./helpers/proto";

const OUTAGE_MS = Number(process.env["EXHOOK_TEST_OUTAGE_MS"] ?? 6000);
const FAST_SCRYPT = { N: 1024, r: 8, p: 1, keylen: 32 };
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Running {
  stack: Stack;
  server: ExHookServer;
  client: EmqxLikeClient;
  logger: ReturnType<typeof memoryLogger>;
  close(): Promise<void>;
}

async function serve(config: Record<string, unknown>): Promise<Running> {
  const logger = memoryLogger();
  const stack = await createStack(
    parseConfig({
      auth: { scrypt: FAST_SCRYPT, cacheTtlMs: 0 },
      persistence: { topics: ["sensors/#"], flushMs: 20, retryMaxMs: 400 },
      presence: { retryMaxMs: 400 },
      ...config,
    }),
    { logger },
  );
  const server = createExHookServer({ provider: stack.provider, port: 0, host: "127.0.0.1", metricsPort: 0, logger });
  const addr = await server.listen();
  const client = createEmqxLikeClient(`http://127.0.0.1:${addr.port}`, 4);
  return {
    stack,
    server,
    client,
    logger,
    async close() {
      await client.close();
      await server.close(1000);
      await stack.close();
    },
  };
}

/** Waits until the stack has written everything it holds. */
async function drained(stack: Stack): Promise<void> {
  await until(
    () => {
      const w = stack.persistence?.writer.stats();
      const p = stack.presence?.stats().writes;
      return !!w && !!p && w.queued === 0 && w.inFlight === 0 && p.held === 0 && p.running === 0;
    },
    "the stack to write what it holds",
    60_000,
  );
}

/** Every acknowledged message id is stored; the presence of every client is what its acknowledged events say. */
async function expectNothingLost(
  load: StoreLoadResult,
  storedIds: Set<string>,
  presence: (id: string) => Promise<boolean | undefined>,
): Promise<void> {
  const missing = [...load.acked].filter((id) => !storedIds.has(id));
  expect({ acked: load.acked.size, missing: missing.length, firstMissing: missing.slice(0, 3) }).toEqual({
    acked: load.acked.size,
    missing: 0,
    firstMissing: [],
  });
  const wrong: string[] = [];
  for (const [id, online] of load.presence) if ((await presence(id)) !== online) wrong.push(id);
  expect({ clients: load.presence.size, wrong }).toEqual({ clients: load.presence.size, wrong: [] });
}

const PG_BIN = pgBinDir();
const pgDescribe = PG_BIN ? describe : describe.skip;
if (!PG_BIN)
  console.warn(
    "usecases-faults: the PostgreSQL outage test is SKIPPED: no PostgreSQL binaries (run under scripts/with-postgres.sh, which installs them)",
  );

pgDescribe("PostgreSQL stopped under load, then started again", () => {
  let cluster: PgCluster;
  let run: Running;
  beforeAll(async () => {
    cluster = await startPgCluster(PG_BIN as string);
    run = await serve({ store: { url: cluster.url, poolSize: 4 } });
  }, 60_000);
  afterAll(async () => {
    await run?.close();
    cluster?.destroy();
  }, 60_000);

  test(`a ${OUTAGE_MS} ms outage loses no acknowledged publish or presence change; hooks keep answering; the outage is logged`, async () => {
    const load = startStoreLoad(run.client, { rate: 400, tag: "0A0A", presenceEvery: 8 });
    await until(() => (run.stack.persistence?.writer.stats().written ?? 0) > 100, "writes before the outage");
    cluster.stop();
    await until(() => (run.stack.persistence?.writer.stats().storeDownForMs ?? 0) > 0, "the writer to notice the outage");
    await pause(OUTAGE_MS);
    const during = run.stack.persistence?.writer.stats();
    // Readiness says why it is not ready (the store); the probe answers at once.
    const opsPort = run.server.opsAddress?.port as number;
    await until(async () => (await httpGet(opsPort, "/readyz")).status === 503, "readiness to see the store down");
    expect((await httpGet(opsPort, "/readyz")).body).toMatch(/^store unreachable: .*; loaded nodes: 0\n$/);
    cluster.start();
    await pause(500);
    const result = await load.stop();
    await drained(run.stack);
    await until(async () => (await httpGet(opsPort, "/readyz")).status === 200, "readiness to see the store back");

    // The client saw every hook answered: publishes and presence changes during the outage too.
    expect(result.failed).toBe(0);
    expect(result.presenceAcked).toBe(result.presenceSent);
    expect(result.acked.size).toBe(load.sent());
    expect(during?.queued).toBeGreaterThan(400);

    const c = new pg.Client({ connectionString: cluster.url });
    await c.connect();
    try {
      const ids = new Set((await c.query("SELECT id FROM exhook_messages")).rows.map((r) => r["id"] as string));
      await expectNothingLost(result, ids, async (id) => (await run.stack.store.getPresence(id))?.online);
    } finally {
      await c.end();
    }
    const w = run.stack.persistence?.writer.stats();
    expect(w).toMatchObject({ droppedOverflow: 0, rejected: 0, lostOnClose: 0, outages: 1 });
    expect(w?.failedAttempts).toBeGreaterThan(2);
    expect(run.stack.presence?.stats().writes).toMatchObject({ droppedOverflow: 0, rejected: 0, outages: 1 });
    const msgs = run.logger.lines.map((l) => `${l.level} ${l.msg}`);
    expect(msgs).toEqual(
      expect.arrayContaining([
        "error persistence: store write failed; holding the data and retrying until the store is back",
        "warn persistence: store writes succeed again",
        "error presence: store write failed; holding the data and retrying until the store is back",
        "warn presence: store writes succeed again",
      ]),
    );
  }, 120_000);
});

/** Mounts a tmpfs of `size` at a new directory (root only); undefined when it cannot. */
function mountTmpfs(size: string): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const dir = mkdtempSync(path.join(tmpdir(), "exhook-full-"));
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${size},mode=0700`, "tmpfs", dir], { encoding: "utf8" });
  if (r.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
  return dir;
}

/** Fills the filesystem of `dir` to the last byte with one file; returns its path. */
function fill(dir: string): string {
  const file = path.join(dir, "filler");
  const fd = openSync(file, "w");
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (let size = chunk.length; size >= 1; size = Math.floor(size / 2)) {
      for (;;) {
        try {
          writeSync(fd, chunk, 0, size);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "ENOSPC") break;
          throw err;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
  return file;
}

const FULL = mountTmpfs("16m");
const fullDescribe = FULL ? describe : describe.skip;
if (!FULL) console.warn("usecases-faults: the full-disk test is SKIPPED: it mounts a tmpfs, which needs root");

fullDescribe("SQLite on a full disk", () => {
  let run: Running;
  afterAll(async () => {
    await run?.close();
    if (FULL) {
      spawnSync("umount", [FULL]);
      rmSync(FULL, { recursive: true, force: true });
    }
  }, 60_000);

  test(`${OUTAGE_MS} ms of a full disk lose no acknowledged publish or presence change; the file is 0600`, async () => {
    const dataDir = path.join(FULL as string, "data");
    run = await serve({ dataDir });
    const file = path.join(dataDir, "exhook.db");
    const load = startStoreLoad(run.client, { rate: 300, tag: "0B0B", presenceEvery: 8, payloadBytes: 300 });
    await until(() => (run.stack.persistence?.writer.stats().written ?? 0) > 100, "writes before the disk fills");
    const filler = fill(FULL as string);
    await until(() => (run.stack.persistence?.writer.stats().storeDownForMs ?? 0) > 0, "the writer to hit the full disk", 30_000);
    await pause(OUTAGE_MS);
    rmSync(filler);
    await pause(500);
    const result = await load.stop();
    await drained(run.stack);

    expect(result.failed).toBe(0);
    expect(result.acked.size).toBe(load.sent());
    const w = run.stack.persistence?.writer.stats();
    expect(w).toMatchObject({ droppedOverflow: 0, rejected: 0, lostOnClose: 0 });
    expect(w?.failedAttempts).toBeGreaterThan(2);
    expect(run.logger.lines.find((l) => l.msg?.startsWith("persistence: store write failed"))?.obj).toMatchObject({
      err: expect.stringContaining("SQLITE_FULL"),
    });

    const db = new Database(file, { readonly: true });
    try {
      const ids = new Set((db.prepare("SELECT id FROM messages").all() as Array<{ id: string }>).map((r) => r.id));
      await expectNothingLost(result, ids, async (id) => (await run.stack.store.getPresence(id))?.online);
    } finally {
      db.close();
    }
    // It holds password hashes: readable by its owner only, and so are the WAL and shared-memory files.
    for (const f of [file, `${file}-wal`, `${file}-shm`]) expect({ f, mode: statSync(f).mode & 0o777 }).toEqual({ f, mode: 0o600 });
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
  }, 120_000);
});

describe("SQLite busy: another process holds the write lock (as `messages prune` does)", () => {
  let dir: string;
  let run: Running;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "exhook-busy-"));
    run = await serve({ dataDir: dir });
    await addUser(run.stack.store, "alice", "alice-secret", { scrypt: FAST_SCRYPT });
  });
  afterAll(async () => {
    await run?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const meta = { node: "emqx@10.0.0.1", version: "5.9.1", sysdescr: "EMQX", cluster_name: "c" };
  const call = async (rpc: string, req: string, body: Record<string, unknown>, res: string) => {
    const r = await run.client.call(servicePath("v3", rpc), encode("v3", req, { ...body, meta }));
    expect(r.grpcStatus).toBe(0);
    return decode("v3", res, r.messages[0] as Uint8Array);
  };

  test("logins, authorization, presence and the read API answer while the lock is held; held writes land after", async () => {
    const file = path.join(dir, "exhook.db");
    // A second process takes the write lock and holds it until told to let go.
    const holder = spawn(
      process.execPath,
      [
        "-e",
        `const D=require("better-sqlite3");const db=new D(${JSON.stringify(file)});db.pragma("busy_timeout=5000");db.exec("BEGIN IMMEDIATE");db.prepare("DELETE FROM messages WHERE ts < 0").run();process.stdout.write("locked\\n");process.stdin.once("data",()=>{db.exec("COMMIT");process.stdout.write("released\\n");process.exit(0)});`,
      ],
      { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, NODE_PATH: path.join(__dirname, "..", "node_modules") } },
    );
    let out = "";
    holder.stdout.on("data", (c: Buffer) => (out += c.toString()));
    await until(() => out.includes("locked"), "the other process to hold the lock");

    // Writes queue behind the lock, in the store's write thread.
    const pub = await call(
      "OnMessagePublish",
      "MessagePublishRequest",
      {
        message: {
          node: "emqx@10.0.0.1",
          id: "0C0C0000000000000000000000000001",
          qos: 1,
          from: "alice-1",
          topic: "sensors/a/t",
          payload: Buffer.from("x"),
          timestamp: Date.now(),
        },
      },
      "ValuedResponse",
    );
    expect(pub["type"]).toBe("IGNORE");
    const presence = call(
      "OnClientConnected",
      "ClientConnectedRequest",
      { clientinfo: { node: "emqx@10.0.0.1", clientid: "alice-1", username: "alice", peerhost: "10.0.0.5", peerport: 5000 } },
      "EmptySuccess",
    );
    // A login needs the user from the store (no cache): the read thread answers while the writer waits.
    const login = await call(
      "OnClientAuthenticate",
      "ClientAuthenticateRequest",
      { clientinfo: { clientid: "alice-1", username: "alice", password: "alice-secret" }, result: false },
      "ValuedResponse",
    );
    expect(login).toMatchObject({ type: "STOP_AND_RETURN", bool_result: true });
    const authz = await call(
      "OnClientAuthorize",
      "ClientAuthorizeRequest",
      { clientinfo: { clientid: "alice-1", username: "alice" }, type: 0, topic: "users/alice/x", result: false },
      "ValuedResponse",
    );
    expect(authz).toMatchObject({ bool_result: true });
    const res = await fetch(`http://127.0.0.1:${run.server.opsAddress?.port}/messages?topic=sensors/%23`);
    expect(res.status).toBe(200);
    // All of that happened while the other process still held the lock.
    expect(out).toBe("locked\n");
    expect(run.stack.persistence?.writer.stats()).toMatchObject({ written: 0 });

    holder.stdin.write("go\n");
    await until(() => out.includes("released"), "the lock to be released");
    await presence;
    await run.stack.persistence?.writer.flush();
    expect(run.stack.persistence?.writer.stats()).toMatchObject({ written: 1, droppedOverflow: 0 });
    await until(async () => (await run.stack.store.getPresence("alice-1"))?.online === true, "the held presence change");
    expect(existsSync(file)).toBe(true);
  }, 60_000);
});
