/**
 * Deadlines under load: the share of hook calls answered too late for EMQX (`grpc-timeout: 100m`,
 * a handler that never answers, so the answer is the fallback the framework must send before the
 * deadline) while the server shares its CPU core with a busy-looping process.
 *
 *   npx tsc -p bench/tsconfig.json
 *   node dist/bench-build/bench/deadline.js [label=<compiled tree> ...]
 *
 * Each argument names a compiled tree holding src/cli.js and gen/ (e.g. an older commit built with
 * `tsc -p tsconfig.build.json --outDir dist/before`, whose layout is dist/before/src/cli.js); by
 * default only this build runs. For every tree and both transports: the server pinned to CPU
 * `DEADLINE_SERVER_CPU` (0) together with a spinner (`node -e "for(;;){}"`), the client in this
 * process (run it pinned elsewhere: `taskset -c 1 node …`), 8 connections like EMQX's pool, then
 * - sequential: `DEADLINE_SEQUENTIAL` (200) calls one after the other;
 * - concurrent: `DEADLINE_BURSTS` (20) bursts of `DEADLINE_BURST` (50) calls at once.
 * A call is late when no answer with grpc-status 0 arrived within 100 ms of sending it (what EMQX
 * sees: it has applied its failed_action by then). Five bursts before the measured calls warm up
 * connections and JIT (a cold Connect path on a shared core takes over a second for its first burst). Prints a table; writes bench/results/deadline-latest.json.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as http2 from "node:http2";
import * as os from "node:os";
import * as path from "node:path";

const env = process.env;
const SERVER_CPU = env["DEADLINE_SERVER_CPU"] ?? "0";
const SEQUENTIAL = Number(env["DEADLINE_SEQUENTIAL"] ?? 200);
const BURSTS = Number(env["DEADLINE_BURSTS"] ?? 20);
const BURST = Number(env["DEADLINE_BURST"] ?? 50);
const DEADLINE_MS = 100;
const ROOT = path.resolve(__dirname, "..", "..", "..");
const OUT = path.join(ROOT, "bench", "results", "deadline-latest.json");

interface Tree {
  readonly label: string;
  readonly dir: string;
}

function trees(): Tree[] {
  const args = process.argv.slice(2);
  if (args.length === 0) return [{ label: "this build", dir: path.resolve(__dirname, "..") }];
  return args.map((a) => {
    const i = a.indexOf("=");
    if (i < 0) throw new Error(`expected label=<compiled tree>, got ${a}`);
    return { label: a.slice(0, i), dir: path.resolve(a.slice(i + 1)) };
  });
}

interface Running {
  readonly child: ChildProcess;
  readonly port: number;
}

function startServer(tree: Tree, transport: string, tmp: string): Promise<Running> {
  const provider = path.join(tmp, `hang-${tree.label.replace(/\W/g, "_")}.js`);
  // Never answers: every answer is the fallback (deny), sent when the budget under the deadline ends.
  fs.writeFileSync(
    provider,
    `const { defineProvider } = require(${JSON.stringify(path.join(tree.dir, "src", "index.js"))});\nmodule.exports = defineProvider({ onClientAuthenticate: () => new Promise(() => {}) });\n`,
  );
  const child = spawn(
    "taskset",
    [
      "-c",
      SERVER_CPU,
      process.execPath,
      path.join(tree.dir, "src", "cli.js"),
      "serve",
      provider,
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--transport",
      transport,
      "--log-level",
      "silent",
    ],
    {
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...env, NODE_PATH: path.join(ROOT, "node_modules") },
    },
  );
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      const m = /listening on [^:\s]+:(\d+)/.exec(out);
      if (m) resolve({ child, port: Number(m[1]) });
    });
    child.once("exit", (code) => reject(new Error(`server exited (${code}): ${out}`)));
  });
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

/** One authenticate call; resolves with the latency (ms), whether it was answered OK, and its status. */
function call(session: http2.ClientHttp2Session, frame: Buffer): Promise<{ ms: number; ok: boolean; status: string }> {
  const start = performance.now();
  return new Promise((resolve) => {
    let status: string | undefined;
    const req = session.request({
      ":method": "POST",
      ":path": "/emqx.exhook.v3.HookProvider/OnClientAuthenticate",
      "content-type": "application/grpc+proto",
      te: "trailers",
      "grpc-timeout": `${DEADLINE_MS}m`,
    });
    req.on("response", (h) => (status = (h["grpc-status"] as string | undefined) ?? status));
    req.on("trailers", (t) => (status = t["grpc-status"] as string | undefined));
    req.on("data", () => {});
    req.on("error", () => {});
    req.on("close", () => resolve({ ms: performance.now() - start, ok: status === "0", status: status ?? `rst${req.rstCode}` }));
    req.end(frame);
  });
}

interface Result {
  /** Answers by gRPC status (late ones included). */
  readonly statuses: Record<string, number>;
  readonly calls: number;
  readonly late: number;
  readonly lateShare: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

function summarize(samples: Array<{ ms: number; ok: boolean; status: string }>): Result {
  const ms = samples.map((s) => s.ms).sort((a, b) => a - b);
  const statuses: Record<string, number> = {};
  for (const s of samples) statuses[s.status] = (statuses[s.status] ?? 0) + 1;
  const late = samples.filter((s) => !s.ok || s.ms > DEADLINE_MS).length;
  const q = (p: number) => Math.round((ms[Math.min(ms.length - 1, Math.floor(p * ms.length))] ?? 0) * 10) / 10;
  return {
    statuses,
    calls: samples.length,
    late,
    lateShare: Math.round((late / samples.length) * 1000) / 10,
    p50: q(0.5),
    p99: q(0.99),
    max: Math.round((ms[ms.length - 1] ?? 0) * 10) / 10,
  };
}

async function measure(port: number): Promise<{ sequential: Result; concurrent: Result }> {
  const sessions = Array.from({ length: 8 }, () => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    s.on("error", () => {});
    return s;
  });
  // ClientAuthenticateRequest { clientinfo { username: "bob" } }, framed.
  const body = Buffer.from([0x0a, 0x05, 0x1a, 0x03, 0x62, 0x6f, 0x62]);
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  // Warm-up (connections, JIT of both the one-call and the burst paths), not counted.
  await Promise.all(sessions.map((s) => call(s, frame)));
  for (let b = 0; b < 5; b++)
    await Promise.all(Array.from({ length: BURST }, (_, i) => call(sessions[i % 8] as http2.ClientHttp2Session, frame)));
  const seq: Array<{ ms: number; ok: boolean; status: string }> = [];
  for (let i = 0; i < SEQUENTIAL; i++) seq.push(await call(sessions[i % 8] as http2.ClientHttp2Session, frame));
  const conc: Array<{ ms: number; ok: boolean; status: string }> = [];
  for (let b = 0; b < BURSTS; b++) {
    conc.push(...(await Promise.all(Array.from({ length: BURST }, (_, i) => call(sessions[i % 8] as http2.ClientHttp2Session, frame)))));
    await new Promise((r) => setTimeout(r, 50));
  }
  for (const s of sessions) s.destroy();
  return { sequential: summarize(seq), concurrent: summarize(conc) };
}

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "exhook-deadline-"));
  const spinner = spawn("taskset", ["-c", SERVER_CPU, process.execPath, "-e", "for(;;){}"], { stdio: "ignore" });
  const rows: Array<{ build: string; transport: string; sequential: Result; concurrent: Result }> = [];
  try {
    for (const transport of ["native", "connect"]) {
      for (const tree of trees()) {
        const server = await startServer(tree, transport, tmp);
        try {
          rows.push({ build: tree.label, transport, ...(await measure(server.port)) });
        } finally {
          await stop(server.child);
        }
      }
    }
  } finally {
    await stop(spinner);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const when = new Date().toISOString();
  process.stdout.write(
    `deadline 100 ms, server on CPU ${SERVER_CPU} with a spinner, ${os.loadavg()[0]?.toFixed(1)} load average at the end\n`,
  );
  process.stdout.write(
    "| build | transport | sequential late | p50 / p99 / max ms | concurrent (bursts of " +
      BURST +
      ") late | p50 / p99 / max ms |\n|---|---|---|---|---|---|\n",
  );
  for (const r of rows) {
    process.stdout.write(
      `| ${r.build} | ${r.transport} | ${r.sequential.lateShare}% (${r.sequential.late}/${r.sequential.calls}) | ${r.sequential.p50} / ${r.sequential.p99} / ${r.sequential.max} | ` +
        `${r.concurrent.lateShare}% (${r.concurrent.late}/${r.concurrent.calls}) | ${r.concurrent.p50} / ${r.concurrent.p99} / ${r.concurrent.max} |\n`,
    );
  }
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(
    OUT,
    `${JSON.stringify({ when, deadlineMs: DEADLINE_MS, serverCpu: SERVER_CPU, loadavg: os.loadavg(), rows }, null, 2)}\n`,
  );
}

void main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
