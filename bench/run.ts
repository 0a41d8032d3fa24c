/**
 * `make bench`: runs every benchmark server (bench/server.ts) in its own process pinned to CPU 0,
 * drives it from CPU 1 like EMQX does (h2c, 8 connections, EMQX's headers), and prints a table of
 * closed-loop req/s (h2load), open-loop latency at fixed rates (bench/openloop.ts), RSS, and the
 * ratios of ours to every other server. Writes the same as JSON to bench/results/latest.json.
 *
 * Env (defaults in brackets): BENCH_SERVERS [native,connect,connect-bare,grpc-js,floor,embedded,grpcio-python],
 * BENCH_DURATION seconds per h2load measurement [4], BENCH_WARMUP seconds [1], BENCH_CONNS [8],
 * BENCH_STREAMS per connection [8], BENCH_RATES open-loop req/s [2000,5000], BENCH_OPEN_SECONDS [5],
 * BENCH_SERVER_CPU [0], BENCH_CLIENT_CPU [1], BENCH_OUT [bench/results/latest.json],
 * BENCH_ROUNDS interleaved closed-loop rounds, medians reported [3],
 * BENCH_PROFILE=1 (last round's servers run with --cpu-prof into bench/results/profiles/).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fromBinary, toBinary, type DescMessage, type Message } from "@bufbuild/protobuf";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { createEmqxLikeClient } from "../src/testing/emqx-client.js";
import { authenticateRequest, publishRequest } from "./logic.js";

const env = process.env;
const list = (v: string | undefined, d: string) =>
  (v?.trim() ? v : d)
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
const SERVERS = list(env["BENCH_SERVERS"], "native,connect,connect-bare,grpc-js,floor,embedded,grpcio-python");
const DURATION = Number(env["BENCH_DURATION"] ?? 4);
const WARMUP = Number(env["BENCH_WARMUP"] ?? 1);
export const CONNS = Number(env["BENCH_CONNS"] ?? 8);
export const STREAMS = Number(env["BENCH_STREAMS"] ?? 8);
const RATES = list(env["BENCH_RATES"], "2000,5000").map(Number);
const OPEN_SECONDS = Number(env["BENCH_OPEN_SECONDS"] ?? 5);
const ROUNDS = Math.max(1, Number(env["BENCH_ROUNDS"] ?? 3));
const SERVER_CPU = env["BENCH_SERVER_CPU"] ?? "0";
const CLIENT_CPU = env["BENCH_CLIENT_CPU"] ?? "1";
const PROFILE = env["BENCH_PROFILE"] === "1";
const ROOT = path.resolve(__dirname, "..", "..", "..");
const OUT = path.resolve(ROOT, env["BENCH_OUT"] ?? "bench/results/latest.json");
const BUILD = __dirname;

/** The two calls measured. */
export const RPCS = [
  {
    name: "publish",
    path: "/emqx.exhook.v3.HookProvider/OnMessagePublish",
    schema: v3.MessagePublishRequestSchema as DescMessage,
    message: publishRequest() as Message,
  },
  {
    name: "authenticate",
    path: "/emqx.exhook.v3.HookProvider/OnClientAuthenticate",
    schema: v3.ClientAuthenticateRequestSchema as DescMessage,
    message: authenticateRequest() as Message,
  },
] as const;

/** Writes the gRPC-framed request of each rpc to a file; returns the file paths by rpc name. */
export function writeFrames(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rpc of RPCS) {
    const bytes = toBinary(rpc.schema, rpc.message);
    const frame = Buffer.alloc(bytes.length + 5);
    frame.writeUInt32BE(bytes.length, 1);
    frame.set(bytes, 5);
    const file = path.join(dir, `${rpc.name}.frame`);
    fs.writeFileSync(file, frame);
    out[rpc.name] = file;
  }
  return out;
}

/** Installs h2load from Debian's nghttp2-client when it is missing. */
export function ensureH2load(): void {
  if (spawnSync("h2load", ["--version"]).status === 0) return;
  process.stderr.write("h2load missing: apt-get install -y nghttp2-client\n");
  const r = spawnSync("sh", ["-c", "apt-get install -y nghttp2-client || (apt-get update && apt-get install -y nghttp2-client)"], {
    stdio: "inherit",
  });
  if (r.status !== 0) throw new Error("could not install h2load (nghttp2-client)");
}

interface Running {
  child: ChildProcess;
  port: number;
}

const PYTHON = "/usr/bin/python3";
const PYTHON_PACKAGES = "python3-grpcio python3-protobuf protobuf-compiler";
/** Where protoc's Python output for the v3 proto goes (set by preparePython). */
let pythonGenDir = "";

/**
 * Readies the `grpcio-python` server (bench/grpcio_server.py, EMQX's official example stack):
 * installs Debian's packages when missing and generates the messages with protoc.
 */
export function preparePython(): void {
  const ready = () =>
    spawnSync(PYTHON, ["-c", "import grpc, google.protobuf"]).status === 0 && spawnSync("protoc", ["--version"]).status === 0;
  if (!ready()) {
    process.stderr.write(`grpcio-python: apt-get install -y ${PYTHON_PACKAGES}\n`);
    spawnSync("sh", ["-c", `apt-get install -y ${PYTHON_PACKAGES} || (apt-get update && apt-get install -y ${PYTHON_PACKAGES})`], {
      stdio: "inherit",
    });
    if (!ready()) throw new Error(`could not install ${PYTHON_PACKAGES}`);
  }
  pythonGenDir = path.join(BUILD, "python");
  fs.mkdirSync(pythonGenDir, { recursive: true });
  const r = spawnSync(
    "protoc",
    [`--python_out=${pythonGenDir}`, "-I", path.join(ROOT, "proto"), path.join(ROOT, "proto", "emqx", "exhook", "v3", "exhook.proto")],
    { encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`protoc --python_out failed: ${r.stderr}`);
}

/** Starts one benchmark server pinned to SERVER_CPU; resolves once it prints READY. */
export function startServer(kind: string, extraNodeArgs: string[] = []): Promise<Running> {
  const args =
    kind === "grpcio-python"
      ? ["-c", SERVER_CPU, PYTHON, path.join(ROOT, "bench", "grpcio_server.py"), pythonGenDir, "0"]
      : ["-c", SERVER_CPU, process.execPath, ...extraNodeArgs, path.join(BUILD, "server.js"), kind, "0"];
  const child = spawn("taskset", args, { stdio: ["ignore", "pipe", "inherit"], cwd: ROOT });
  return new Promise((resolve, reject) => {
    let buf = "";
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      const m = /READY (\d+)/.exec(buf);
      if (m) resolve({ child, port: Number(m[1]) });
    });
    child.once("exit", (code) => reject(new Error(`${kind} server exited with ${code} before READY`)));
  });
}

/** Stops a server and waits for its exit. */
export function stopServer(r: Running): Promise<void> {
  return new Promise((resolve) => {
    if (r.child.exitCode !== null) return resolve();
    r.child.once("exit", () => resolve());
    r.child.kill("SIGTERM");
  });
}

/** Resident set size of a process in MB (from /proc). */
export function rssMb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Math.round(Number(m[1]) / 102.4) / 10 : NaN;
}

/** Checks one real call per rpc: grpc-status 0 and the expected answer (h2load only checks :status). */
async function sampleCheck(port: number): Promise<string[]> {
  const client = createEmqxLikeClient(`http://127.0.0.1:${port}`, 1);
  const problems: string[] = [];
  try {
    for (const rpc of RPCS) {
      const reply = await client.call(rpc.path, toBinary(rpc.schema, rpc.message));
      if (reply.grpcStatus !== 0 || reply.messages.length !== 1) {
        problems.push(`${rpc.name}: grpc-status ${reply.grpcStatus} ${reply.grpcMessage}`);
        continue;
      }
      const res = fromBinary(v3.ValuedResponseSchema, reply.messages[0] as Uint8Array);
      if (rpc.name === "publish") {
        const m = res.value.case === "message" ? res.value.value : undefined;
        const text = m ? new TextDecoder().decode(m.payload) : "";
        if (
          res.type !== v3.ValuedResponse_ResponsedType.CONTINUE ||
          m?.topic !== "processed/room1/temperature" ||
          !text.startsWith("v1|{") ||
          m.headers["username"] !== "user42"
        ) {
          problems.push(`publish: unexpected answer ${JSON.stringify({ type: res.type, topic: m?.topic, payload: text.slice(0, 8) })}`);
        }
      } else if (
        res.type !== v3.ValuedResponse_ResponsedType.STOP_AND_RETURN ||
        res.value.case !== "boolResult" ||
        res.value.value !== true
      ) {
        problems.push(`authenticate: unexpected answer type=${res.type} ${res.value.case}=${String(res.value.value)}`);
      }
    }
  } finally {
    await client.close();
  }
  return problems;
}

/** Closed-loop result of one h2load run. */
export interface ClosedLoop {
  reqPerSec: number;
  succeeded: number;
  failed: number;
  errored: number;
  meanMs: number;
  /** Server CPU time per request in µs (less sensitive to other load on the machine than req/s). */
  cpuUsPerReq: number;
}

/** CPU time (user + system) a process has used so far, in ms (from /proc; 10 ms resolution). */
export function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** One h2load run; pinned to `pin` with taskset, or unpinned when `pin` is undefined. */
function h2loadOnce(port: number, rpc: (typeof RPCS)[number], frame: string, seconds: number, pin: string | undefined): string {
  const args = [
    "-c",
    String(CONNS),
    "-m",
    String(STREAMS),
    "-D",
    String(seconds),
    "-H",
    "content-type: application/grpc+proto",
    "-H",
    "te: trailers",
    "-H",
    "grpc-timeout: 5S",
    "-H",
    "user-agent: grpc-erlang/0.1.0",
    "-d",
    frame,
    `http://127.0.0.1:${port}${rpc.path}`,
  ];
  const r =
    pin === undefined
      ? spawnSync("h2load", args, { encoding: "utf8" })
      : spawnSync("taskset", ["-c", pin, "h2load", ...args], { encoding: "utf8" });
  return (r.stdout ?? "") + (r.stderr ?? "");
}

/**
 * A warm-up h2load run (discarded), then the measured one; the server's CPU (`serverCpuMs()`, e.g.
 * `() => cpuMs(pid)`) is read around the latter. The load generator runs on `pin` (default
 * BENCH_CLIENT_CPU; undefined = not pinned).
 */
export function h2load(
  serverCpuMs: () => number,
  port: number,
  rpc: (typeof RPCS)[number],
  frame: string,
  pin: string | undefined = CLIENT_CPU,
): ClosedLoop {
  if (WARMUP > 0) h2loadOnce(port, rpc, frame, WARMUP, pin);
  const cpu0 = serverCpuMs();
  const out = h2loadOnce(port, rpc, frame, DURATION, pin);
  const cpu = serverCpuMs() - cpu0;
  const fin = /finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(out);
  const req = /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const lat = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(out);
  if (!fin || !req) throw new Error(`h2load output not understood:\n${out}`);
  const toMs = (v: string, u: string) => Number(v) * (u === "us" ? 0.001 : u === "s" ? 1000 : 1);
  const done = Number(req[1]);
  return {
    reqPerSec: Math.round(Number(fin[1])),
    succeeded: Number(req[2]),
    failed: Number(req[3]),
    errored: Number(req[4]),
    meanMs: lat ? toMs(lat[5] as string, lat[6] as string) : NaN,
    cpuUsPerReq: done > 0 ? Math.round((cpu * 1000 * 10) / done) / 10 : NaN,
  };
}

function openLoopRun(port: number, rpc: (typeof RPCS)[number], frame: string, rate: number): Record<string, number> {
  const args = [
    "-c",
    CLIENT_CPU,
    process.execPath,
    path.join(BUILD, "openloop.js"),
    `http://127.0.0.1:${port}`,
    rpc.path,
    frame,
    String(rate),
    String(OPEN_SECONDS),
    String(Math.min(2, WARMUP)),
    String(CONNS),
  ];
  const r = spawnSync("taskset", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`openloop failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop() as string) as Record<string, number>;
}

/** Everything measured for one server. */
export interface ServerResult {
  server: string;
  check: string[];
  /** Closed-loop results by rpc, one per round. */
  rounds: Record<string, ClosedLoop[]>;
  /** Medians over the rounds. */
  closed: Record<string, { reqPerSec: number; cpuUsPerReq: number; meanMs: number }>;
  /** Open-loop latency by rate: medians over the rounds of p50, p99, p99.9 and max. */
  open: Record<string, Record<string, number> | "saturated">;
  /** Open-loop results by rate, one per round. */
  openRounds: Record<string, Array<Record<string, number> | "saturated">>;
  rssMb: number;
}

const LABELS: Record<string, string> = {
  native: "ours, native transport (standalone)",
  connect: "ours, transport connect",
  "connect-bare": "bare connect-node (generated service)",
  "grpc-js": "@grpc/grpc-js + proto-loader",
  floor: "hand-written node:http2 floor",
  embedded: "ours embedded (exhookRoutes in connectNodeAdapter)",
  "grpcio-python": "Python grpcio (EMQX's official example stack)",
};

/** The median (NaN for none). */
export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0
    ? NaN
    : s.length % 2
      ? (s[(s.length - 1) / 2] as number)
      : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

/** Medians over rounds of each open-loop number; "saturated" when most rounds were. */
function medianOpen(rounds: Array<Record<string, number> | "saturated">): Record<string, number> | "saturated" {
  const ran = rounds.filter((r): r is Record<string, number> => r !== "saturated");
  if (ran.length === 0 || ran.length * 2 < rounds.length) return "saturated";
  const keys = ["p50Ms", "p99Ms", "p999Ms", "maxMs", "failed", "skipped", "achieved"];
  return { ...Object.fromEntries(keys.map((k) => [k, median(ran.map((r) => r[k] ?? NaN))])), rounds: ran.length };
}

/**
 * Writes a benchmark's results as JSON to `out`, after what was measured on (date, Node.js, CPU,
 * load average at the end), and says where (relative to `root`).
 */
export function writeResults(out: string, root: string, results: Record<string, unknown>): void {
  const machine = {
    date: new Date().toISOString(),
    node: process.version,
    cpu: `${os.cpus()[0]?.model ?? "?"} × ${os.cpus().length}`,
    loadAverageAtEnd: os.loadavg(),
  };
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ ...machine, ...results }, null, 2) + "\n");
  process.stdout.write(`\nwritten to ${path.relative(root, out)}\n`);
}

async function main(): Promise<void> {
  ensureH2load();
  if (os.cpus().length < 2) process.stderr.write("warning: fewer than 2 CPUs; server and load generator share a core\n");
  const frames = writeFrames(BUILD);
  let servers = SERVERS;
  if (servers.includes("grpcio-python")) {
    try {
      preparePython();
    } catch (err) {
      process.stderr.write(`warning: grpcio-python left out: ${(err as Error).message}\n`);
      servers = servers.filter((k) => k !== "grpcio-python");
    }
  }
  const results = new Map<string, ServerResult>(
    servers.map((k) => [k, { server: k, check: [], rounds: {}, closed: {}, open: {}, openRounds: {}, rssMb: NaN }]),
  );
  const profDir = path.join(ROOT, "bench", "results", "profiles");
  if (PROFILE) fs.mkdirSync(profDir, { recursive: true });
  // Rounds interleave the servers, so a burst of other load on the machine hits all of them alike;
  // the table shows medians, also of the open-loop percentiles: one 5 s open-loop run's p99 is
  // decided by the one or two old-generation GC pauses (10-45 ms, in every node:http2 server)
  // that fall into it. RSS comes from the last round.
  for (let round = 1; round <= ROUNDS; round++) {
    const last = round === ROUNDS;
    for (const kind of servers) {
      const res = results.get(kind) as ServerResult;
      const profArgs = PROFILE && last ? ["--cpu-prof", `--cpu-prof-dir=${profDir}`, `--cpu-prof-name=${kind}.cpuprofile`] : [];
      const running = await startServer(kind, profArgs);
      try {
        res.check.push(...(await sampleCheck(running.port)));
        for (const rpc of RPCS)
          (res.rounds[rpc.name] ??= []).push(
            h2load(() => cpuMs(running.child.pid as number), running.port, rpc, frames[rpc.name] as string),
          );
        const capacity = res.rounds["publish"]?.at(-1)?.reqPerSec ?? 0;
        for (const rate of RATES) {
          (res.openRounds[String(rate)] ??= []).push(
            rate > capacity * 0.9 ? "saturated" : openLoopRun(running.port, RPCS[0], frames["publish"] as string, rate),
          );
        }
        if (last) {
          for (const rpc of RPCS) {
            const rs = res.rounds[rpc.name] as ClosedLoop[];
            res.closed[rpc.name] = {
              reqPerSec: Math.round(median(rs.map((r) => r.reqPerSec))),
              cpuUsPerReq: Math.round(median(rs.map((r) => r.cpuUsPerReq)) * 10) / 10,
              meanMs: median(rs.map((r) => r.meanMs)),
            };
          }
          for (const rate of RATES) res.open[String(rate)] = medianOpen(res.openRounds[String(rate)] ?? []);
          res.rssMb = rssMb(running.child.pid as number);
        }
        res.check.push(...(await sampleCheck(running.port)).map((p) => `after load: ${p}`));
        process.stderr.write(
          `round ${round} ${kind}: ${RPCS.map((r) => `${r.name} ${res.rounds[r.name]?.at(-1)?.reqPerSec} req/s ${res.rounds[r.name]?.at(-1)?.cpuUsPerReq} µs/req`).join(", ")}\n`,
        );
      } finally {
        await stopServer(running);
      }
    }
  }
  const all = [...results.values()];
  const ours = results.get("native");
  const embedded = results.get("embedded");
  const ratio = (a: number | undefined, b: number | undefined) => (a && b ? Math.round((a / b) * 100) / 100 : undefined);
  const fmt = (o: Record<string, number> | "saturated" | undefined) =>
    o === undefined
      ? "-"
      : o === "saturated"
        ? "saturated"
        : `${o["p50Ms"]?.toFixed(2)} / ${o["p99Ms"]?.toFixed(2)} / ${o["p999Ms"]?.toFixed(2)}${o["failed"] || o["skipped"] ? ` (!${o["failed"]} failed, ${o["skipped"]} skipped)` : ""}`;
  const rows = all.map((r) => ({
    server: r.server,
    label: LABELS[r.server] ?? r.server,
    publishReqPerSec: r.closed["publish"]?.reqPerSec,
    authenticateReqPerSec: r.closed["authenticate"]?.reqPerSec,
    publishCpuUsPerReq: r.closed["publish"]?.cpuUsPerReq,
    authenticateCpuUsPerReq: r.closed["authenticate"]?.cpuUsPerReq,
    latencyMs: Object.fromEntries(RATES.map((rate) => [String(rate), r.open[String(rate)]])),
    latencyRounds: r.openRounds,
    rssMb: r.rssMb,
    /** ours req/s ÷ this server's req/s (median rounds). */
    oursToThis: {
      publish: ratio(ours?.closed["publish"]?.reqPerSec, r.closed["publish"]?.reqPerSec),
      authenticate: ratio(ours?.closed["authenticate"]?.reqPerSec, r.closed["authenticate"]?.reqPerSec),
    },
    /** this server's CPU per request ÷ ours (>1: ours does the same work with less CPU). */
    cpuThisToOurs: {
      publish: ratio(r.closed["publish"]?.cpuUsPerReq, ours?.closed["publish"]?.cpuUsPerReq),
      authenticate: ratio(r.closed["authenticate"]?.cpuUsPerReq, ours?.closed["authenticate"]?.cpuUsPerReq),
    },
    embeddedToThis: {
      publish: ratio(embedded?.closed["publish"]?.reqPerSec, r.closed["publish"]?.reqPerSec),
      authenticate: ratio(embedded?.closed["authenticate"]?.reqPerSec, r.closed["authenticate"]?.reqPerSec),
    },
    rounds: r.rounds,
    failures: r.check.concat(
      Object.entries(r.rounds).flatMap(([n, cs]) =>
        cs.flatMap((c) => (c.failed || c.errored ? [`${n}: h2load ${c.failed} failed, ${c.errored} errored`] : [])),
      ),
    ),
  }));
  const header = `| server | publish req/s | auth req/s | CPU µs/req (publish, auth) | ${RATES.map((r) => `publish p50 / p99 / p99.9 ms @${r}/s (median of rounds)`).join(" | ")} | RSS MB | ours ÷ this req/s (publish, auth) | this ÷ ours CPU/req (publish, auth) |`;
  const lines = [header, "|" + "---|".repeat(7 + RATES.length)];
  for (const row of rows) {
    lines.push(
      `| ${row.label} | ${row.publishReqPerSec} | ${row.authenticateReqPerSec} | ${row.publishCpuUsPerReq}, ${row.authenticateCpuUsPerReq} | ${RATES.map((r) => fmt(row.latencyMs[String(r)])).join(" | ")} | ${row.rssMb} | ${row.oursToThis.publish}×, ${row.oursToThis.authenticate}× | ${row.cpuThisToOurs.publish}×, ${row.cpuThisToOurs.authenticate}× |`,
    );
  }
  const bareRow = rows.find((r) => r.server === "connect-bare");
  if (embedded && bareRow)
    lines.push(
      "",
      `embedded ÷ bare connect-node req/s: publish ${bareRow.embeddedToThis.publish}×, authenticate ${bareRow.embeddedToThis.authenticate}×`,
    );
  const failures = rows.flatMap((r) => r.failures.map((f) => `${r.server}: ${f}`));
  if (failures.length) lines.push("", "FAILURES (numbers of these servers are not trustworthy):", ...failures);
  const table = lines.join("\n");
  process.stdout.write(`\n${table}\n`);
  const command = `taskset -c ${CLIENT_CPU} h2load -c ${CONNS} -m ${STREAMS} -D ${DURATION} -H 'content-type: application/grpc+proto' -H 'te: trailers' -H 'grpc-timeout: 5S' -H 'user-agent: grpc-erlang/0.1.0' -d <rpc>.frame http://127.0.0.1:PORT/emqx.exhook.v3.HookProvider/<Rpc>  (after a ${WARMUP} s warm-up run; ${ROUNDS} interleaved rounds, medians)`;
  writeResults(OUT, ROOT, {
    params: {
      servers,
      rounds: ROUNDS,
      durationS: DURATION,
      warmupS: WARMUP,
      connections: CONNS,
      streamsPerConnection: STREAMS,
      rates: RATES,
      openSeconds: OPEN_SECONDS,
      serverCpu: SERVER_CPU,
      clientCpu: CLIENT_CPU,
    },
    command,
    frameBytes: Object.fromEntries(Object.entries(frames).map(([k, f]) => [k, fs.statSync(f).size])),
    rows,
    table,
  });
  if (failures.length) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
