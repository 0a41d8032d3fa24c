/**
 * `make soak`: our standalone server (native transport, the benchmark provider) under a fixed
 * open-loop rate for a long run, sampling its RSS every few seconds. Passes when every sample after
 * the warm-up is within ±10% of the median of those samples (memory flat: no leak per call).
 *
 * Env (defaults in brackets): SOAK_SECONDS [600], SOAK_RATE req/s [2000], SOAK_SAMPLE_SECONDS [10],
 * SOAK_WARMUP_SECONDS [a fifth of SOAK_SECONDS, at least 30, at most 60], SOAK_TOLERANCE [0.10].
 * Writes bench/results/soak-latest.json.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { rssMb, startServer, stopServer, writeFrames } from "./run.js";

const env = process.env;
const SECONDS = Number(env["SOAK_SECONDS"] ?? 600);
const RATE = Number(env["SOAK_RATE"] ?? 2000);
const SAMPLE = Number(env["SOAK_SAMPLE_SECONDS"] ?? 10);
const WARMUP = Number(env["SOAK_WARMUP_SECONDS"] ?? Math.min(60, Math.max(30, Math.round(SECONDS / 5))));
const TOLERANCE = Number(env["SOAK_TOLERANCE"] ?? 0.1);
const ROOT = path.resolve(__dirname, "..", "..", "..");

async function main(): Promise<void> {
  const frames = writeFrames(__dirname);
  const server = await startServer("native");
  const pid = server.child.pid as number;
  const samples: Array<{ t: number; rssMb: number }> = [];
  const started = Date.now();
  const sample = () => {
    const s = { t: Math.round((Date.now() - started) / 1000), rssMb: rssMb(pid) };
    samples.push(s);
    process.stderr.write(`t=${s.t}s rss=${s.rssMb} MB\n`);
  };
  sample();
  const timer = setInterval(sample, SAMPLE * 1000);
  const url = `http://127.0.0.1:${server.port}`;
  const load = spawn(
    "taskset",
    [
      "-c",
      env["BENCH_CLIENT_CPU"] ?? "1",
      process.execPath,
      path.join(__dirname, "openloop.js"),
      url,
      "/emqx.exhook.v3.HookProvider/OnMessagePublish",
      frames["publish"] as string,
      String(RATE),
      String(SECONDS),
      "0",
      "8",
    ],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  let out = "";
  load.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => load.on("exit", resolve));
  clearInterval(timer);
  sample();
  await stopServer(server);
  const latency = out.trim() ? (JSON.parse(out.trim().split("\n").pop() as string) as Record<string, number>) : undefined;
  const after = samples.filter((s) => s.t >= WARMUP).map((s) => s.rssMb);
  const sorted = [...after].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] ?? NaN;
  const min = sorted[0] ?? NaN;
  const max = sorted[sorted.length - 1] ?? NaN;
  const flat = after.length >= 2 && min >= median * (1 - TOLERANCE) && max <= median * (1 + TOLERANCE);
  const failedCalls = latency ? (latency["failed"] ?? 0) : NaN;
  const pass = code === 0 && flat && failedCalls === 0;
  const result = {
    date: new Date().toISOString(),
    params: { seconds: SECONDS, rate: RATE, sampleSeconds: SAMPLE, warmupSeconds: WARMUP, tolerance: TOLERANCE },
    latency,
    rssAfterWarmupMb: {
      median,
      min,
      max,
      minPct: Math.round((min / median - 1) * 1000) / 10,
      maxPct: Math.round((max / median - 1) * 1000) / 10,
    },
    samples,
    pass,
  };
  const file = path.join(ROOT, "bench", "results", "soak-latest.json");
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(result, null, 2) + "\n");
  process.stdout.write(
    `soak ${SECONDS}s at ${RATE} req/s: ${latency?.["ok"]} ok, ${failedCalls} failed; p50/p99/p99.9 ${latency?.["p50Ms"]}/${latency?.["p99Ms"]}/${latency?.["p999Ms"]} ms\n` +
      `RSS after ${WARMUP}s warm-up: median ${median} MB, min ${result.rssAfterWarmupMb.minPct}%, max +${result.rssAfterWarmupMb.maxPct}% (allowed ±${TOLERANCE * 100}%) -> ${pass ? "PASS" : "FAIL"}\n` +
      `written to ${path.relative(ROOT, file)}\n`,
  );
  process.exitCode = pass ? 0 : 1;
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
