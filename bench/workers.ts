/**
 * `make bench-workers`: scaling of `emqx-exhook serve --workers N` on this machine. For N = 1 and
 * N = 2 (default `BENCH_WORKER_COUNTS=1,2`), the real CLI serves the benchmark provider
 * (bench/provider.ts) and h2load drives it like EMQX (8 connections × 8 streams, EMQX's headers).
 * Nothing is pinned: with 2 cores, the load generator shares them with the workers, which is the
 * form of scaling this machine allows. Prints req/s and server CPU per request (all processes of
 * the tree) per round, medians, and the ratio of each N to N = 1; writes
 * bench/results/workers-latest.json.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { CONNS, cpuMs, ensureH2load, h2load, median, RPCS, STREAMS, writeFrames, writeResults } from "./run.js";

const env = process.env;
const COUNTS = (env["BENCH_WORKER_COUNTS"] ?? "1,2").split(",").map(Number);
const ROUNDS = Math.max(1, Number(env["BENCH_ROUNDS"] ?? 3));
const ROOT = path.resolve(__dirname, "..", "..", "..");
const BUILD = path.resolve(__dirname, "..");
const OUT = path.resolve(ROOT, env["BENCH_OUT"] ?? "bench/results/workers-latest.json");

/** CPU ms (user + system) used so far by a process and all its descendants. */
function treeCpuMs(pid: number): number {
  let total = 0;
  const visit = (p: number) => {
    try {
      total += cpuMs(p);
      for (const child of fs.readFileSync(`/proc/${p}/task/${p}/children`, "utf8").trim().split(/\s+/).filter(Boolean))
        visit(Number(child));
    } catch {
      // the process ended between the reads
    }
  };
  visit(pid);
  return total;
}

function startCli(workers: number): Promise<{ child: ChildProcess; port: number }> {
  const args = [
    path.join(BUILD, "src", "cli.js"),
    "serve",
    path.join(BUILD, "bench", "provider.js"),
    "--port",
    "0",
    "--host",
    "127.0.0.1",
    "--workers",
    String(workers),
    "--log-level",
    "silent",
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"], cwd: ROOT });
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      const ports = [...out.matchAll(/listening on 127\.0\.0\.1:(\d+)/g)];
      if (ports.length === workers) resolve({ child, port: Number(ports[0]?.[1]) });
    });
    child.on("exit", (code) => reject(new Error(`cli exited with ${code} before listening:\n${out}`)));
  });
}

async function main(): Promise<void> {
  ensureH2load();
  const frames = writeFrames(path.join(BUILD, "bench"));
  const rounds: Record<string, Record<string, Array<{ reqPerSec: number; cpuUsPerReq: number; failed: number }>>> = {};
  for (let round = 1; round <= ROUNDS; round++) {
    for (const n of COUNTS) {
      const { child, port } = await startCli(n);
      try {
        for (const rpc of RPCS) {
          // Not pinned: the load generator shares the cores with the workers.
          const r = h2load(() => treeCpuMs(child.pid as number), port, rpc, frames[rpc.name] as string, undefined);
          ((rounds[String(n)] ??= {})[rpc.name] ??= []).push({
            reqPerSec: r.reqPerSec,
            cpuUsPerReq: r.cpuUsPerReq,
            failed: r.failed + r.errored,
          });
          process.stderr.write(`round ${round} workers=${n} ${rpc.name}: ${r.reqPerSec} req/s, ${r.cpuUsPerReq} µs CPU/req\n`);
        }
      } finally {
        const exited = new Promise((r) => child.on("exit", r));
        child.kill("SIGTERM");
        await exited;
      }
    }
  }
  const base = rounds[String(COUNTS[0])] ?? {};
  const rows = COUNTS.map((n) => {
    const byRpc = rounds[String(n)] ?? {};
    const m = (rpc: string, k: "reqPerSec" | "cpuUsPerReq") => median((byRpc[rpc] ?? []).map((r) => r[k]));
    const ratio = (rpc: string) => Math.round((m(rpc, "reqPerSec") / median((base[rpc] ?? []).map((r) => r.reqPerSec))) * 100) / 100;
    return {
      workers: n,
      publishReqPerSec: m("publish", "reqPerSec"),
      authenticateReqPerSec: m("authenticate", "reqPerSec"),
      publishCpuUsPerReq: m("publish", "cpuUsPerReq"),
      authenticateCpuUsPerReq: m("authenticate", "cpuUsPerReq"),
      toFirst: { publish: ratio("publish"), authenticate: ratio("authenticate") },
      failed: Object.values(byRpc)
        .flat()
        .reduce((a, r) => a + r.failed, 0),
    };
  });
  const lines = [
    `| --workers | publish req/s | auth req/s | CPU µs/req (publish, auth; all processes) | req/s ÷ --workers ${COUNTS[0]} (publish, auth) |`,
    "|---|---|---|---|---|",
    ...rows.map(
      (r) =>
        `| ${r.workers} | ${r.publishReqPerSec} | ${r.authenticateReqPerSec} | ${r.publishCpuUsPerReq}, ${r.authenticateCpuUsPerReq} | ${r.toFirst.publish}×, ${r.toFirst.authenticate}× |`,
    ),
  ];
  const table = lines.join("\n");
  process.stdout.write(`\n${table}\n`);
  writeResults(OUT, ROOT, {
    params: { counts: COUNTS, rounds: ROUNDS, connections: CONNS, streamsPerConnection: STREAMS, pinned: false },
    rows,
    rounds,
    table,
  });
  if (rows.some((r) => r.failed > 0)) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
