/**
 * `make bench-workers`: scaling of `emqx-exhook serve --workers N` on this machine. For N = 1 and
 * N = 2 (default `BENCH_WORKER_COUNTS=1,2`), the real CLI serves the benchmark provider
 * (bench/provider.ts) and h2load drives it like EMQX (8 connections × 8 streams, EMQX's headers).
 * Nothing is pinned: with 2 cores, the load generator shares them with the workers, which is the
 * form of scaling this machine allows. Prints req/s and server CPU per request (all processes of
 * the tree) per round, medians, and the ratio of each N to N = 1; writes
 * bench/results/workers-latest.json.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ensureH2load, RPCS, writeFrames } from "./run.js";

const env = process.env;
const COUNTS = (env["BENCH_WORKER_COUNTS"] ?? "1,2").split(",").map(Number);
const ROUNDS = Math.max(1, Number(env["BENCH_ROUNDS"] ?? 3));
const DURATION = Number(env["BENCH_DURATION"] ?? 4);
const ROOT = path.resolve(__dirname, "..", "..", "..");
const BUILD = path.resolve(__dirname, "..");
const OUT = path.resolve(ROOT, env["BENCH_OUT"] ?? "bench/results/workers-latest.json");

/** CPU ms (user + system) used so far by a process and all its descendants. */
function treeCpuMs(pid: number): number {
  let total = 0;
  const visit = (p: number) => {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      total += (Number(f[11]) + Number(f[12])) * 10;
      for (const child of fs.readFileSync(`/proc/${p}/task/${p}/children`, "utf8").trim().split(/\s+/).filter(Boolean)) visit(Number(child));
    } catch {
      // the process ended between the reads
    }
  };
  visit(pid);
  return total;
}

function startCli(workers: number): Promise<{ child: ChildProcess; port: number }> {
  const args = [path.join(BUILD, "src", "cli.js"), "serve", path.join(BUILD, "bench", "provider.js"), "--port", "0", "--host", "127.0.0.1", "--workers", String(workers), "--log-level", "silent"];
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

function h2load(port: number, rpc: (typeof RPCS)[number], frame: string, seconds: number): { reqPerSec: number; done: number; failed: number } {
  const r = spawnSync(
    "h2load",
    ["-c", "8", "-m", "8", "-D", String(seconds), "-H", "content-type: application/grpc+proto", "-H", "te: trailers", "-H", "grpc-timeout: 5S", "-H", "user-agent: grpc-erlang/0.1.0", "-d", frame, `http://127.0.0.1:${port}${rpc.path}`],
    { encoding: "utf8" },
  );
  const out = r.stdout + r.stderr;
  const fin = /finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(out);
  const req = /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(out);
  if (!fin || !req) throw new Error(`h2load output not understood:\n${out}`);
  return { reqPerSec: Math.round(Number(fin[1])), done: Number(req[1]), failed: Number(req[3]) };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};

async function main(): Promise<void> {
  ensureH2load();
  const frames = writeFrames(path.join(BUILD, "bench"));
  const rounds: Record<string, Record<string, Array<{ reqPerSec: number; cpuUsPerReq: number; failed: number }>>> = {};
  for (let round = 1; round <= ROUNDS; round++) {
    for (const n of COUNTS) {
      const { child, port } = await startCli(n);
      try {
        for (const rpc of RPCS) {
          h2load(port, rpc, frames[rpc.name] as string, 1);
          const cpu0 = treeCpuMs(child.pid as number);
          const r = h2load(port, rpc, frames[rpc.name] as string, DURATION);
          const cpu = treeCpuMs(child.pid as number) - cpu0;
          ((rounds[String(n)] ??= {})[rpc.name] ??= []).push({ reqPerSec: r.reqPerSec, cpuUsPerReq: Math.round(((cpu * 1000) / r.done) * 10) / 10, failed: r.failed });
          process.stderr.write(`round ${round} workers=${n} ${rpc.name}: ${r.reqPerSec} req/s, ${Math.round(((cpu * 1000) / r.done) * 10) / 10} µs CPU/req\n`);
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
    return { workers: n, publishReqPerSec: m("publish", "reqPerSec"), authenticateReqPerSec: m("authenticate", "reqPerSec"), publishCpuUsPerReq: m("publish", "cpuUsPerReq"), authenticateCpuUsPerReq: m("authenticate", "cpuUsPerReq"), toFirst: { publish: ratio("publish"), authenticate: ratio("authenticate") }, failed: Object.values(byRpc).flat().reduce((a, r) => a + r.failed, 0) };
  });
  const lines = [
    `| --workers | publish req/s | auth req/s | CPU µs/req (publish, auth; all processes) | req/s ÷ --workers ${COUNTS[0]} (publish, auth) |`,
    "|---|---|---|---|---|",
    ...rows.map((r) => `| ${r.workers} | ${r.publishReqPerSec} | ${r.authenticateReqPerSec} | ${r.publishCpuUsPerReq}, ${r.authenticateCpuUsPerReq} | ${r.toFirst.publish}×, ${r.toFirst.authenticate}× |`),
  ];
  const table = lines.join("\n");
  process.stdout.write(`\n${table}\n`);
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpu: `${os.cpus()[0]?.model ?? "?"} × ${os.cpus().length}`, loadAverageAtEnd: os.loadavg(), params: { counts: COUNTS, rounds: ROUNDS, durationS: DURATION, connections: 8, streamsPerConnection: 8, pinned: false }, rows, rounds, table }, null, 2) + "\n");
  process.stdout.write(`\nwritten to ${path.relative(ROOT, OUT)}\n`);
  if (rows.some((r) => r.failed > 0)) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
