/**
 * Robustness figures: the peer faults and abuse of test/peer-faults.test.ts and
 * test/abuse.test.ts, run against `emqx-exhook serve` child processes from any compiled trees and
 * both transports, reporting per case what the server did (survived or died; how long a probe on
 * another connection waited; what became of the abusive connection) and its RSS.
 *
 *   npx tsc -p bench/tsconfig.json
 *   node dist/bench-build/bench/robustness.js [label=<compiled tree> ...]
 *
 * A tree holds src/cli.js and gen/ (as `tsc -p tsconfig.build.json` or the tests' swc compile lay
 * them out); by default only this build runs. A server that dies is restarted for the next case.
 * Prints a markdown table and writes bench/results/robustness-latest.json.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as http2 from "node:http2";
import * as os from "node:os";
import * as path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import {
  continuation,
  data,
  dataFrames,
  FrameType,
  goaway,
  grpcFrame,
  grpcRequestHeaders,
  headerBlock,
  headers,
  ping,
  rawConnect,
  rstStream,
  Setting,
  type RawH2,
} from "../test/helpers/h2-frames.js";

const ROOT = path.resolve(__dirname, "..", "..", "..");
const OUT = path.join(ROOT, "bench", "results", "robustness-latest.json");
const AUTH = "/emqx.exhook.v3.HookProvider/OnClientAuthenticate";
const PUBLISH = "/emqx.exhook.v3.HookProvider/OnMessagePublish";
const MiB = 1024 * 1024;

const PROVIDER = (tree: string) => `
const { defineProvider, allow, deny, rewrite } = require(${JSON.stringify(path.join(tree, "src", "index.js"))});
module.exports = defineProvider({
  onClientAuthenticate: (req) => {
    const u = req.clientinfo?.username ?? "";
    if (u.startsWith("wait:")) {
      process.stdout.write("started " + u.slice(5) + "\\n");
      return new Promise((r) => setTimeout(r, 1000, allow()));
    }
    if (u.startsWith("spin:")) {
      process.stdout.write("spinning " + u.slice(5) + "\\n");
      const stop = Date.now() + 10000;
      while (!require("node:fs").existsSync(u.slice(5)) && Date.now() < stop) {}
      return allow();
    }
    return u === "alice" ? allow() : deny();
  },
  onMessagePublish: () => rewrite({ qos: 1 }),
}, { timeoutMs: 10000 });
`;

const auth = (username: string) =>
  grpcFrame(
    toBinary(
      v3.ClientAuthenticateRequestSchema,
      create(v3.ClientAuthenticateRequestSchema, { clientinfo: { clientid: username, username } }),
    ),
  );
const publish = (bytes: number) =>
  grpcFrame(
    toBinary(
      v3.MessagePublishRequestSchema,
      create(v3.MessagePublishRequestSchema, { message: { topic: "t/big", payload: new Uint8Array(bytes).fill(97) } }),
    ),
  );

interface Server {
  readonly child: ChildProcess;
  readonly port: number;
  stdout(): string;
  alive(): boolean;
  rss(): number;
}

function startServer(tree: string, transport: string, dir: string): Promise<Server> {
  const provider = path.join(dir, `provider-${process.hrtime.bigint()}.js`);
  fs.writeFileSync(provider, PROVIDER(tree));
  const child = spawn(
    process.execPath,
    [
      path.join(tree, "src", "cli.js"),
      "serve",
      provider,
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--transport",
      transport,
      "--log-level",
      "warn",
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NODE_PATH: path.join(ROOT, "node_modules") },
    },
  );
  let out = "";
  child.stdout?.on("data", (c: Buffer) => (out += c.toString()));
  child.stderr?.on("data", () => {});
  const alive = () => child.exitCode === null && child.signalCode === null;
  return new Promise((resolve, reject) => {
    const check = setInterval(() => {
      const m = /listening on [^:\s]+:(\d+)/.exec(out);
      if (m) {
        clearInterval(check);
        resolve({
          child,
          port: Number(m[1]),
          stdout: () => out,
          alive,
          rss: () => {
            try {
              return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${child.pid}/status`, "utf8"))?.[1] ?? 0) * 1024;
            } catch {
              return 0;
            }
          },
        });
      } else if (!alive()) {
        clearInterval(check);
        reject(new Error(`server exited: ${out}`));
      }
    }, 20);
  });
}

function waitFor(server: Server, pattern: RegExp, count: number, guardMs = 10_000): Promise<void> {
  const stop = Date.now() + guardMs;
  return new Promise((resolve) => {
    const check = setInterval(() => {
      if ([...server.stdout().matchAll(pattern)].length >= count || Date.now() > stop || !server.alive()) {
        clearInterval(check);
        resolve();
      }
    }, 10);
  });
}

/** One call on a fresh connection; the latency in ms, or a failure text. */
function probe(port: number): Promise<number | string> {
  const start = performance.now();
  return new Promise((resolve) => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    const guard = setTimeout(() => (s.destroy(), resolve("no answer in 5 s")), 5000);
    s.on("error", (e) => (clearTimeout(guard), resolve(e.message)));
    let status: string | undefined;
    const r = s.request({
      ":method": "POST",
      ":path": AUTH,
      "content-type": "application/grpc+proto",
      te: "trailers",
      "grpc-timeout": "5S",
    });
    r.on("response", (h) => (status = (h["grpc-status"] as string | undefined) ?? status));
    r.on("trailers", (t) => (status = t["grpc-status"] as string | undefined));
    r.on("data", () => {});
    r.on("error", () => {});
    r.on("close", () => {
      clearTimeout(guard);
      s.destroy();
      resolve(status === "0" ? performance.now() - start : `status ${status}`);
    });
    r.end(auth("alice"));
  });
}

function connect(port: number, options: http2.ClientSessionOptions = {}): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve) => {
    const s = http2.connect(`http://127.0.0.1:${port}`, options);
    s.on("error", () => {});
    s.once("connect", () => resolve(s));
  });
}

function inFlight(session: http2.ClientHttp2Session, tag: string, n: number): http2.ClientHttp2Stream[] {
  return Array.from({ length: n }, (_, i) => {
    const r = session.request({
      ":method": "POST",
      ":path": AUTH,
      "content-type": "application/grpc+proto",
      te: "trailers",
      "grpc-timeout": "5S",
    });
    r.on("error", () => {});
    r.end(auth(`wait:${tag}-${i}`));
    return r;
  });
}

async function flood(raw: RawH2, frames: Buffer[]): Promise<void> {
  for (let i = 0; i < frames.length && !raw.socket.destroyed; i += 256) await raw.write(Buffer.concat(frames.slice(i, i + 256)));
}

/** What became of an abusive raw connection, 1 s after the flood was written. */
async function fate(raw: RawH2): Promise<string> {
  await Promise.race([raw.closed, new Promise((r) => setTimeout(r, 1000))]);
  const g = raw.received.find((f) => f.type === FrameType.GOAWAY);
  const code = g ? g.payload.readUInt32BE(4) : undefined;
  const name =
    code === undefined
      ? ""
      : ((
          { 0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 6: "FRAME_SIZE_ERROR", 11: "ENHANCE_YOUR_CALM" } as Record<
            number,
            string
          >
        )[code] ?? String(code));
  return `${g ? `GOAWAY ${name}` : "no GOAWAY"}, ${raw.socket.destroyed ? "closed" : "left open"}`;
}

let seq = 0;
type Case = (s: Server, dir: string) => Promise<string>;

const CASES: ReadonlyArray<readonly [string, Case]> = [
  [
    "TCP RST, 5 calls in flight",
    async (s) => {
      const c = await connect(s.port);
      const tag = `rst${seq++}`;
      inFlight(c, tag, 5);
      await waitFor(s, new RegExp(`started ${tag}-`, "g"), 5);
      c.socket.resetAndDestroy();
      return "";
    },
  ],
  [
    "FIN, 5 calls in flight",
    async (s) => {
      const raw = await rawConnect(s.port);
      const tag = `fin${seq++}`;
      const block = headerBlock(grpcRequestHeaders(AUTH));
      for (let i = 0; i < 5; i++) raw.socket.write(Buffer.concat([headers(1 + 2 * i, block), data(1 + 2 * i, auth(`wait:${tag}-${i}`))]));
      await waitFor(s, new RegExp(`started ${tag}-`, "g"), 5);
      raw.socket.end();
      return "";
    },
  ],
  [
    "RST_STREAM codes 0..13 on in-flight calls",
    async (s) => {
      const c = await connect(s.port);
      const tag = `code${seq++}`;
      const streams = inFlight(c, tag, 14);
      await waitFor(s, new RegExp(`started ${tag}-`, "g"), 14);
      for (const [code, st] of streams.entries()) st.close(code);
      return "";
    },
  ],
  [
    "GOAWAY(PROTOCOL_ERROR) on 16 connections, 4 calls each in flight",
    async (s) => {
      const cs = await Promise.all(Array.from({ length: 16 }, () => connect(s.port)));
      const tag = `ga${seq++}`;
      cs.forEach((c, i) => void inFlight(c, `${tag}x${i}`, 4));
      await waitFor(s, new RegExp(`started ${tag}x`, "g"), 64);
      for (const c of cs) {
        c.goaway(http2.constants.NGHTTP2_PROTOCOL_ERROR);
        c.destroy();
      }
      return "";
    },
  ],
  [
    "64 answers of 256 KiB owed on a zero window, then TCP RST",
    async (s) => {
      const c = await connect(s.port, { settings: { initialWindowSize: 0 } });
      await Promise.all(
        Array.from({ length: 64 }, () => {
          const r = c.request({
            ":method": "POST",
            ":path": PUBLISH,
            "content-type": "application/grpc+proto",
            te: "trailers",
            "grpc-timeout": "5S",
          });
          r.on("error", () => {});
          r.end(publish(256 * 1024));
          return new Promise((res) => r.once("response", res));
        }),
      );
      c.socket.resetAndDestroy();
      return "";
    },
  ],
  [
    "a client that never reads: 200 calls of 128 KiB",
    async (s) => {
      const raw = await rawConnect(s.port, { read: false, settings: [[Setting.INITIAL_WINDOW_SIZE, 16 * MiB - 1]] });
      const block = headerBlock(grpcRequestHeaders(PUBLISH));
      for (let i = 0; i < 200; i++)
        raw.socket.write(Buffer.concat([headers(1 + 2 * i, block), dataFrames(1 + 2 * i, publish(128 * 1024))]));
      await new Promise((r) => setTimeout(r, 1000));
      raw.socket.destroy();
      return "";
    },
  ],
  [
    "deadline 100m passes, peer resets, then the late answer",
    async (s, dir) => {
      const marker = path.join(dir, `marker-${seq++}`);
      const raw = await rawConnect(s.port);
      raw.socket.write(Buffer.concat([headers(1, headerBlock(grpcRequestHeaders(AUTH, "100m"))), data(1, auth(`spin:${marker}`))]));
      await waitFor(s, new RegExp(`spinning ${marker}`, "g"), 1);
      await new Promise((r) => setTimeout(r, 150));
      raw.socket.resetAndDestroy();
      await raw.closed;
      fs.writeFileSync(marker, "");
      return "";
    },
  ],
  [
    "rapid reset: 10,000 HEADERS+DATA+RST_STREAM on one connection",
    async (s) => {
      const raw = await rawConnect(s.port);
      const block = headerBlock(grpcRequestHeaders(AUTH));
      const body = data(0, auth("alice")).subarray(9);
      await flood(
        raw,
        Array.from({ length: 10_000 }, (_, i) =>
          Buffer.concat([headers(1 + 2 * i, block), data(1 + 2 * i, body), rstStream(1 + 2 * i, 8)]),
        ),
      );
      const f = await fate(raw);
      raw.socket.destroy();
      return f;
    },
  ],
  [
    "CONTINUATION flood: 10,000 frames of 4 KiB, never END_HEADERS",
    async (s) => {
      const raw = await rawConnect(s.port);
      const filler = headerBlock([["x-flood", "a".repeat(4000)]]);
      await flood(raw, [
        headers(1, headerBlock(grpcRequestHeaders(AUTH)), 0),
        ...Array.from({ length: 10_000 }, () => continuation(1, filler)),
      ]);
      const f = await fate(raw);
      raw.socket.destroy();
      return f;
    },
  ],
  [
    "PING flood: 100,000 PINGs, ACKs never read",
    async (s) => {
      const raw = await rawConnect(s.port, { read: false });
      await Promise.race([
        flood(
          raw,
          Array.from({ length: 100_000 }, (_, i) => ping(i)),
        ),
        new Promise((r) => setTimeout(r, 3000)),
      ]);
      await Promise.race([raw.closed, new Promise((r) => setTimeout(r, 1000))]);
      const f = raw.socket.destroyed ? "closed" : "left open";
      raw.socket.destroy();
      return f;
    },
  ],
  [
    "GOAWAY flood: 10,000 GOAWAYs on one connection",
    async (s) => {
      const raw = await rawConnect(s.port);
      await flood(
        raw,
        Array.from({ length: 10_000 }, (_, i) => goaway(0, i % 14)),
      );
      const f = await fate(raw);
      raw.socket.destroy();
      return f;
    },
  ],
  [
    "64 connections x 100 concurrent streams, 5 s",
    async (s) => {
      const load = spawn(
        process.execPath,
        [path.join(ROOT, "test", "fixtures", "h2-load.js"), String(s.port), "64", "100", "5", AUTH, auth("alice").toString("hex")],
        { stdio: ["ignore", "pipe", "ignore"] },
      );
      let out = "";
      load.stdout?.on("data", (c: Buffer) => (out += c.toString()));
      await new Promise((r) => load.on("close", r));
      const r = JSON.parse(out || "{}") as { done?: number; statuses?: Record<string, number> };
      return `${r.done ?? 0} answered OK${Object.entries(r.statuses ?? {})
        .filter(([k]) => k !== "0")
        .map(([k, v]) => `, ${v} status ${k}`)
        .join("")}`;
    },
  ],
];

interface Row {
  readonly tree: string;
  readonly transport: string;
  readonly case: string;
  readonly survived: boolean;
  readonly note: string;
  /** Slowest probe on a fresh connection while the case ran (ms), or the failure. */
  readonly worstProbe: number | string;
  readonly freshAfterMs: number | string;
  readonly peakRssGrowthMiB: number;
}

async function runCase(s: Server, dir: string, name: string, fn: Case, idle: number, tree: string, transport: string): Promise<Row> {
  let peak = idle;
  const sampler = setInterval(() => (peak = Math.max(peak, s.rss())), 25);
  let running = true;
  let worst: number | string = 0;
  const prober = (async () => {
    while (running) {
      const p = await probe(s.port);
      if (typeof p === "string") worst = p;
      else if (typeof worst === "number") worst = Math.max(worst, p);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  let note = "";
  try {
    note = await fn(s, dir);
  } catch (err) {
    note = `case failed: ${(err as Error).message}`;
  }
  // Let the server see the end of what was done (calls in flight finish after 1 s).
  await new Promise((r) => setTimeout(r, 1200));
  running = false;
  await prober;
  clearInterval(sampler);
  const fresh = s.alive() ? await probe(s.port) : "dead";
  const survived = s.alive();
  return {
    tree,
    transport,
    case: name,
    survived,
    note,
    worstProbe: typeof worst === "number" ? Math.round(worst) : worst,
    freshAfterMs: typeof fresh === "number" ? Math.round(fresh) : fresh,
    peakRssGrowthMiB: Math.round((peak - idle) / MiB),
  };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const trees =
    args.length === 0
      ? [{ label: "this build", dir: path.resolve(__dirname, "..") }]
      : args.map((a) => ({ label: a.slice(0, a.indexOf("=")), dir: path.resolve(a.slice(a.indexOf("=") + 1)) }));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "exhook-robustness-"));
  const rows: Row[] = [];
  try {
    for (const transport of ["native", "connect"]) {
      for (const tree of trees) {
        let server = await startServer(tree.dir, transport, dir);
        for (const [name, fn] of CASES) {
          if (!server.alive()) server = await startServer(tree.dir, transport, dir);
          for (let i = 0; i < 10; i++) await probe(server.port);
          const idle = server.rss();
          const row = await runCase(server, dir, name, fn, idle, tree.label, transport);
          rows.push(row);
          process.stderr.write(`${tree.label} ${transport} ${name}: ${row.survived ? "survived" : "DIED"} ${JSON.stringify(row)}\n`);
        }
        server.child.kill("SIGKILL");
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const cell = (r: Row | undefined) =>
    !r
      ? ""
      : r.survived
        ? `survived; probes ≤ ${r.worstProbe}${typeof r.worstProbe === "number" ? " ms" : ""}; RSS +${r.peakRssGrowthMiB} MiB${r.note ? `; ${r.note}` : ""}`
        : `**died**${r.note ? ` (${r.note})` : ""}`;
  const columns = ["native", "connect"].flatMap((t) => trees.map((tr) => ({ t, tr: tr.label })));
  let table = `| case | ${columns.map((c) => `${c.tr}, ${c.t}`).join(" | ")} |\n|---|${columns.map(() => "---").join("|")}|\n`;
  for (const [name] of CASES)
    table += `| ${name} | ${columns.map((c) => cell(rows.find((r) => r.case === name && r.transport === c.t && r.tree === c.tr))).join(" | ")} |\n`;
  process.stdout.write(table);
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, `${JSON.stringify({ when: new Date().toISOString(), loadavg: os.loadavg(), rows }, null, 2)}\n`);
}

void main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
