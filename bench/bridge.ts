/**
 * The bridging benchmark (part of `make bench`, or alone: `node dist/bench-build/bench/bridge.js`):
 *
 * 1. Forwarding: an outbox pre-filled with BENCH_BRIDGE_ROWS messages (200-byte payloads, 100
 *    clients) is drained into each engine by one forwarder process pinned to BENCH_SERVER_CPU,
 *    with confirms; messages per second (wall) and per CPU-second of that process, per sink and
 *    per outbox store (SQLite file, PostgreSQL database).
 * 2. Hook latency: the message.publish hook served at BENCH_BRIDGE_RATE/s (open loop, bench/openloop.ts
 *    from BENCH_CLIENT_CPU) with bridging off (keep()) and on (Redis sink, outbox on SQLite and on
 *    PostgreSQL, forwarding in the bridge's forwarding thread of the same process; `-main`:
 *    forwarding on the serving thread; `-nofwd`: capture and outbox commit only, no forwarder),
 *    BENCH_BRIDGE_ROUNDS interleaved rounds, medians. BENCH_BRIDGE_HOOK_MODES picks the modes (default
 *    off,on-sqlite,on-postgres,on-sqlite-main).
 *
 * Forwarding runs in the bridge's forwarding thread (BENCH_BRIDGE_FORWARDING=main: on the main
 * thread, as `bridge.forwarding.mode: main`); BENCH_FORWARD_NODE_ARGS adds node options to the
 * forwarder process (`--cpu-prof --cpu-prof-dir=DIR` for profiles), BENCH_HOOK_NODE_ARGS to the
 * hook server's.
 *
 * Engines: BENCH_NATS_URL [nats://127.0.0.1:4222], BENCH_AMQP_URL [amqp://guest:guest@127.0.0.1:5672],
 * BENCH_REDIS_URL [redis://127.0.0.1:6379], BENCH_PG_URL [postgres://postgres@127.0.0.1:5432/postgres];
 * one that does not answer is skipped and reported. Names are unique per run and removed after.
 * BENCH_BRIDGE_FORWARD=0 / BENCH_BRIDGE_HOOK=0 skip a part; BENCH_BRIDGE_BATCH sets the forwarder's batch size
 * (default: the sink's, 500).
 * Writes bench/results/bridge-latest.json.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { performance } from "node:perf_hooks";
import pg from "pg";
import {
  compileTemplate,
  openPostgresStore,
  openSqliteStore,
  sinkSchema,
  type OutboxEntry,
  type SinkConfig,
  type Store,
} from "../src/usecases/index.js";
import { keyHash } from "../src/usecases/bridge/outbox-shared.js";
import { median, writeFrames, writeResults } from "./run.js";

const env = process.env;
const list = (v: string | undefined, d: string) =>
  (v?.trim() ? v : d)
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
const ROWS = Number(env["BENCH_BRIDGE_ROWS"] ?? 40_000);
/** `rabbitmq` publishes into a quorum queue (the sink's default), `rabbitmq-classic` into a classic one. */
const SINKS = list(env["BENCH_BRIDGE_SINKS"], "nats,redis,rabbitmq,rabbitmq-classic");
const STORES = list(env["BENCH_BRIDGE_STORES"], "sqlite,postgres");
const RATE = Number(env["BENCH_BRIDGE_RATE"] ?? 5000);
const FORWARDING = env["BENCH_BRIDGE_FORWARDING"] === "main" ? "main" : "thread";
const HOOK_MODES = list(env["BENCH_BRIDGE_HOOK_MODES"], "off,on-sqlite,on-postgres,on-sqlite-main");
const ROUNDS = Math.max(1, Number(env["BENCH_BRIDGE_ROUNDS"] ?? 3));
const OPEN_SECONDS = Number(env["BENCH_OPEN_SECONDS"] ?? 5);
const SERVER_CPU = env["BENCH_SERVER_CPU"] ?? "0";
/**
 * CPUs of the hook server's process (all its threads). Default: every core, as a server has them
 * in production (the forwarding, SQLite and GC threads run where the scheduler puts them); the load
 * generator stays on BENCH_CLIENT_CPU. BENCH_BRIDGE_HOOK_SERVER_CPUS=0 pins it all to one core.
 */
const HOOK_SERVER_CPUS = env["BENCH_BRIDGE_HOOK_SERVER_CPUS"] ?? `0-${os.cpus().length - 1}`;
const CLIENT_CPU = env["BENCH_CLIENT_CPU"] ?? "1";
const URLS: Record<string, string> = {
  nats: env["BENCH_NATS_URL"] ?? "nats://127.0.0.1:4222",
  rabbitmq: env["BENCH_AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5672",
  redis: env["BENCH_REDIS_URL"] ?? "redis://127.0.0.1:6379",
};
const PG_URL = env["BENCH_PG_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres";
const BUILD = __dirname;
const ROOT = path.resolve(BUILD, "..", "..", "..");
const OUT = path.resolve(ROOT, env["BENCH_BRIDGE_OUT"] ?? "bench/results/bridge-latest.json");
const RUN = `${process.pid}_${Math.random().toString(36).slice(2, 6)}`;

function reachable(url: string): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect(
      Number(u.port) || { nats: 4222, amqp: 5672, redis: 6379, postgres: 5432 }[u.protocol.replace(/s?:$/, "")] || 0,
      u.hostname,
    );
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
    s.setTimeout(2000, () => (s.destroy(), resolve(false)));
  });
}

/** A fresh outbox: a SQLite file or a PostgreSQL database; `drop` removes it. */
async function freshOutbox(kind: string, n: number): Promise<{ spec: string; open: () => Promise<Store>; drop: () => Promise<void> }> {
  if (kind === "sqlite") {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "exhook-bench-bridge-"));
    const file = path.join(dir, "outbox.db");
    return {
      spec: `sqlite:${file}`,
      open: async () => openSqliteStore({ file }),
      drop: async () => fs.rmSync(dir, { recursive: true, force: true }),
    };
  }
  const db = `bench_bridge_${RUN}_${n}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${db}`);
  await admin.end();
  const u = new URL(PG_URL);
  u.pathname = `/${db}`;
  return {
    spec: u.toString(),
    open: () => openPostgresStore({ url: u.toString(), poolSize: 4 }),
    async drop() {
      const a = new pg.Client({ connectionString: PG_URL });
      await a.connect();
      await a.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await a.end();
    },
  };
}

/** The sink under test, with names unique to this run, and how to remove what it created. */
function sinkFor(kind: string, n: number): { cfg: SinkConfig; cleanup: () => Promise<void> } {
  const id = `benchbr_${RUN}_${n}`;
  if (kind === "nats") {
    const cfg = sinkSchema.parse({
      name: "bench",
      kind,
      servers: [URLS["nats"]],
      subject: `${id}.\${topic}`,
      stream: { name: id.toUpperCase(), subjects: [`${id}.>`], storage: "file" },
    }) as SinkConfig;
    return {
      cfg,
      async cleanup() {
        const t = require("@nats-io/transport-node") as { connect(o: object): Promise<{ close(): Promise<void> }> };
        const j = require("@nats-io/jetstream") as {
          jetstreamManager(nc: unknown): Promise<{ streams: { delete(n: string): Promise<boolean> } }>;
        };
        const nc = await t.connect({ servers: [URLS["nats"]] });
        await (await j.jetstreamManager(nc)).streams.delete(id.toUpperCase()).catch(() => false);
        await nc.close();
      },
    };
  }
  if (kind === "rabbitmq" || kind === "rabbitmq-classic") {
    const cfg = sinkSchema.parse({
      name: "bench",
      kind: "rabbitmq",
      url: URLS["rabbitmq"],
      exchange: id,
      queue: { name: id, bindingKey: "#", type: kind === "rabbitmq" ? "quorum" : "classic" },
    }) as SinkConfig;
    return {
      cfg,
      async cleanup() {
        const amqp = require("amqplib") as {
          connect(u: string): Promise<{
            createChannel(): Promise<{ deleteQueue(q: string): Promise<unknown>; deleteExchange(e: string): Promise<unknown> }>;
            close(): Promise<void>;
          }>;
        };
        const c = await amqp.connect(URLS["rabbitmq"] as string);
        const ch = await c.createChannel();
        await ch.deleteQueue(id);
        await ch.deleteExchange(id);
        await c.close();
      },
    };
  }
  const cfg = sinkSchema.parse({ name: "bench", kind, url: URLS["redis"], stream: id, maxLen: 100_000 }) as SinkConfig;
  return {
    cfg,
    async cleanup() {
      const { Redis } = require("ioredis") as { Redis: new (u: string) => { del(k: string): Promise<number>; quit(): Promise<unknown> } };
      const r = new Redis(URLS["redis"] as string);
      await r.del(id);
      await r.quit();
    },
  };
}

/** Fills the outbox with ROWS entries for the sink; resolves with rows appended per second (this process, unpinned). */
async function prefill(store: Store, cfg: SinkConfig): Promise<number> {
  const style = cfg.kind === "nats" ? "nats" : cfg.kind === "rabbitmq" ? "amqp" : "raw";
  const tpl = compileTemplate(cfg.kind === "nats" ? cfg.subject : cfg.kind === "rabbitmq" ? cfg.routingKey : cfg.stream, style, "bench");
  const payload = new Uint8Array(200).fill(120);
  const t0 = performance.now();
  for (let i = 0; i < ROWS; i += 1000) {
    const batch: OutboxEntry[] = [];
    for (let j = i; j < Math.min(ROWS, i + 1000); j++) {
      const client = `dev-${j % 100}`;
      const topic = `sensors/${client}/temperature`;
      batch.push({
        sink: "bench",
        id: j.toString(16).toUpperCase().padStart(32, "0"),
        key: client,
        khash: keyHash(client),
        dest: tpl({ topic, clientid: client, username: "u", node: "emqx@10.0.0.1", hook: "message.publish", qos: "1" }),
        payload,
        headers: {
          id: String(j),
          hook: "message.publish",
          topic,
          qos: "1",
          clientid: client,
          username: "u",
          node: "emqx@10.0.0.1",
          timestamp: String(Date.now()),
          "message-id": String(j),
        },
        createdAt: Date.now(),
      });
    }
    await store.outboxAppend(batch, {});
  }
  return ROWS / ((performance.now() - t0) / 1000);
}

interface ForwardResult {
  sink: string;
  store: string;
  delivered: number;
  seconds: number;
  cpuMs: number;
  perSecond: number;
  perCpuSecond: number;
  prefillPerSecond: number;
}

async function forwardRun(sinkKind: string, storeKind: string, n: number): Promise<ForwardResult | string> {
  const outbox = await freshOutbox(storeKind, n);
  const { cfg, cleanup } = sinkFor(sinkKind, n);
  try {
    const store = await outbox.open();
    const prefillPerSecond = await prefill(store, cfg);
    await store.close();
    const r = spawnSync(
      "taskset",
      [
        "-c",
        SERVER_CPU,
        process.execPath,
        // e.g. BENCH_FORWARD_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" (a profile per thread)
        ...list(env["BENCH_FORWARD_NODE_ARGS"]?.replace(/ +/g, ","), ""),
        path.join(BUILD, "bridge-forward.js"),
        JSON.stringify(cfg),
        outbox.spec,
        String(ROWS),
        FORWARDING,
      ],
      { encoding: "utf8", cwd: ROOT, timeout: 400_000 },
    );
    if (r.status !== 0) return `forwarder failed: ${r.stderr.slice(-500)}`;
    const out = JSON.parse(r.stdout.trim().split("\n").pop() as string) as { delivered: number; seconds: number; cpuMs: number };
    return {
      sink: sinkKind,
      store: storeKind,
      ...out,
      perSecond: Math.round(out.delivered / out.seconds),
      perCpuSecond: Math.round(out.delivered / (out.cpuMs / 1000)),
      prefillPerSecond: Math.round(prefillPerSecond),
    };
  } finally {
    await cleanup().catch(() => {});
    await outbox.drop().catch(() => {});
  }
}

/** One open-loop round against a freshly started hook server; returns its percentiles and the bridge's counters. */
async function hookRound(mode: string, outboxKind: string, forwarding: string, n: number, frame: string): Promise<Record<string, unknown>> {
  const outbox = mode === "on" ? await freshOutbox(outboxKind, 1000 + n) : undefined;
  const key = `benchbr_hook_${RUN}_${n}`;
  const child = spawn(
    "taskset",
    [
      "-c",
      SERVER_CPU,
      process.execPath,
      // e.g. BENCH_HOOK_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" (a profile per thread)
      ...list(env["BENCH_HOOK_NODE_ARGS"]?.replace(/ +/g, ","), ""),
      path.join(BUILD, "bridge-server.js"),
      mode,
      URLS["redis"] as string,
      outbox?.spec ?? "-",
      forwarding,
    ],
    {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...env, BENCH_BRIDGE_KEY: key },
    },
  );
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const t = setInterval(() => {
      const m = /READY (\d+)/.exec(out);
      if (m) clearInterval(t), resolve(Number(m[1]));
    }, 20);
    child.once("exit", (code) => (clearInterval(t), reject(new Error(`bridge-server ${mode} exited with ${code}`))));
  });
  const r = spawnSync(
    "taskset",
    [
      "-c",
      CLIENT_CPU,
      process.execPath,
      path.join(BUILD, "openloop.js"),
      `http://127.0.0.1:${port}`,
      "/emqx.exhook.v3.HookProvider/OnMessagePublish",
      frame,
      String(RATE),
      String(OPEN_SECONDS),
      "2",
      "8",
    ],
    { encoding: "utf8" },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  await exited;
  const counters = JSON.parse(out.trim().split("\n").pop() as string) as Record<string, unknown>;
  if (mode === "on") {
    const { Redis } = require("ioredis") as { Redis: new (u: string) => { del(k: string): Promise<number>; quit(): Promise<unknown> } };
    const redis = new Redis(URLS["redis"] as string);
    await redis.del(key);
    await redis.quit();
    await outbox?.drop();
  }
  if (r.status !== 0) throw new Error(`openloop failed: ${r.stderr}`);
  return { ...(JSON.parse(r.stdout.trim().split("\n").pop() as string) as Record<string, number>), counters };
}

async function main(): Promise<void> {
  const skipped: string[] = [];
  const up: Record<string, boolean> = {};
  for (const k of Object.keys(URLS)) up[k] = await reachable(URLS[k] as string);
  up["postgres"] = await reachable(PG_URL);
  const forward: Array<ForwardResult | { sink: string; store: string; error: string }> = [];
  let n = 0;
  for (const storeKind of env["BENCH_BRIDGE_FORWARD"] === "0" ? [] : STORES) {
    if (storeKind === "postgres" && !up["postgres"]) {
      skipped.push(`PostgreSQL at ${PG_URL} not reachable: no PostgreSQL rows`);
      continue;
    }
    for (const sinkKind of SINKS) {
      const engine = sinkKind.replace(/-classic$/, "");
      if (!up[engine]) {
        skipped.push(`${sinkKind} at ${URLS[engine]} not reachable`);
        continue;
      }
      process.stderr.write(`bridge bench: forwarding ${ROWS} rows to ${sinkKind}, outbox on ${storeKind}...\n`);
      const r = await forwardRun(sinkKind, storeKind, n++);
      forward.push(typeof r === "string" ? { sink: sinkKind, store: storeKind, error: r } : r);
    }
  }

  const hook: Record<
    string,
    { rounds: Array<Record<string, unknown>>; p50Ms: number; p99Ms: number; p999Ms: number; cpuUsPerCall: number; mainCpuUsPerCall: number }
  > = {};
  if (env["BENCH_BRIDGE_HOOK"] === "0") skipped.push("hook latency rows (BENCH_BRIDGE_HOOK=0)");
  else if (up["redis"]) {
    const frames = writeFrames(fs.mkdtempSync(path.join(os.tmpdir(), "exhook-bench-frames-")));
    const modes = HOOK_MODES.flatMap((label): Array<[string, string, string, string]> => {
      if (label === "off") return [["off", "off", "-", "-"]];
      const m = /^on-(sqlite|postgres)(-main|-nofwd)?$/.exec(label);
      if (!m) throw new Error(`BENCH_BRIDGE_HOOK_MODES: unknown mode ${label} (off, on-sqlite, on-postgres, either with -main or -nofwd)`);
      if (m[1] === "postgres" && !(up["postgres"] && STORES.includes("postgres"))) return [];
      return [[label, "on", m[1] as string, m[2] === "-main" ? "main" : m[2] === "-nofwd" ? "none" : "thread"]];
    });
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, mode, outboxKind, forwarding] of modes) {
        process.stderr.write(`bridge bench: hook at ${RATE}/s, bridging ${label}, round ${round + 1}/${ROUNDS}...\n`);
        const r = await hookRound(mode, outboxKind, forwarding, n++, frames["publish"] as string);
        (hook[label] ??= { rounds: [], p50Ms: NaN, p99Ms: NaN, p999Ms: NaN, cpuUsPerCall: NaN, mainCpuUsPerCall: NaN }).rounds.push(r);
      }
    }
    for (const h of Object.values(hook)) {
      h.p50Ms = median(h.rounds.map((r) => r["p50Ms"] as number));
      h.p99Ms = median(h.rounds.map((r) => r["p99Ms"] as number));
      h.p999Ms = median(h.rounds.map((r) => r["p999Ms"] as number));
      h.cpuUsPerCall = median(
        h.rounds.map((r) => {
          const c = r["counters"] as { calls: number; cpuMs: number };
          return Math.round((c.cpuMs * 1000 * 10) / c.calls) / 10;
        }),
      );
      h.mainCpuUsPerCall = median(
        h.rounds.map((r) => {
          const c = r["counters"] as { calls: number; mainCpuMs: number };
          return Math.round((c.mainCpuMs * 1000 * 10) / c.calls) / 10;
        }),
      );
    }
  } else skipped.push("Redis not reachable: no hook latency rows");

  const lines = [
    "",
    "| sink | outbox | forwarded msg/s (1 core, confirms) | msg per CPU-second | outbox append rows/s (prefill) |",
    "|---|---|---|---|---|",
  ];
  for (const f of forward) {
    if ("error" in f) lines.push(`| ${f.sink} | ${f.store} | error: ${f.error} | | |`);
    else lines.push(`| ${f.sink} | ${f.store} | ${f.perSecond} | ${f.perCpuSecond} | ${f.prefillPerSecond} |`);
  }
  lines.push(
    "",
    `| publish hook at ${RATE}/s | p50 ms | p99 ms | p99.9 ms | p99 − off | server CPU µs per call (all threads: incl. commit + forward) | serving thread CPU µs per call |`,
    "|---|---|---|---|---|---|---|",
  );
  const off = hook["off"]?.p99Ms ?? NaN;
  for (const [label, h] of Object.entries(hook)) {
    const diff = label === "off" ? "" : `${h.p99Ms - off >= 0 ? "+" : ""}${(h.p99Ms - off).toFixed(2)} ms`;
    lines.push(
      `| bridging ${label} | ${h.p50Ms.toFixed(2)} | ${h.p99Ms.toFixed(2)} | ${h.p999Ms.toFixed(2)} | ${diff} | ${h.cpuUsPerCall} | ${h.mainCpuUsPerCall} |`,
    );
  }
  for (const s of skipped) lines.push(`skipped: ${s}`);
  process.stdout.write(lines.join("\n") + "\n");
  writeResults(OUT, ROOT, {
    params: {
      rows: ROWS,
      rate: RATE,
      rounds: ROUNDS,
      openSeconds: OPEN_SECONDS,
      serverCpu: SERVER_CPU,
      hookServerCpus: HOOK_SERVER_CPUS,
      forwarding: FORWARDING,
      hookModes: HOOK_MODES,
      clientCpu: CLIENT_CPU,
      urls: URLS,
      pg: PG_URL.replace(/:[^:@/]*@/, ":***@"),
    },
    forward,
    hook,
    skipped,
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
