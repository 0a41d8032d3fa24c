/**
 * `emqx-exhook serve` in a child process, for tests where the server must be able to die without
 * taking jest with it (peer faults, floods): a crash shows as a failed assertion with the child's
 * stderr. The sources are compiled with swc into a temporary directory (compileTree).
 *
 * `EXHOOK_TEST_BUILD=<dir>` runs the child from another compiled tree instead (e.g. an older
 * commit compiled with the same layout), to check that a test fails on code before a fix.
 */
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { spawnCli, type CliProcess } from "./cli-process.js";
import { compileTree, ROOT } from "./compile.js";
import { httpGet, parseMetrics } from "./ops.js";

/** A compiled tree (src/, gen/) in a temporary directory, with extra files written next to it. */
export interface CompiledTree {
  readonly dir: string;
  /** Writes `name` (relative to the tree) and returns its absolute path. */
  write(name: string, content: string): string;
  cleanup(): void;
}

export function compiledTree(prefix = "exhook-child-"): CompiledTree {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  const other = process.env["EXHOOK_TEST_BUILD"];
  if (other) {
    // src/ and gen/ of the other build, reached through symlinks so provider files can sit beside them.
    symlinkSync(path.join(other, "src"), path.join(dir, "src"));
    symlinkSync(path.join(other, "gen"), path.join(dir, "gen"));
  } else {
    compileTree("src", dir);
    compileTree("gen", dir);
  }
  return {
    dir,
    write(name, content) {
      const file = path.join(dir, name);
      writeFileSync(file, content);
      return file;
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** A running server child. */
export interface ServerChild {
  readonly cli: CliProcess;
  readonly port: number;
  readonly metricsPort: number;
  readonly pid: number;
  /** The child's resident set size now, from /proc (bytes). */
  rss(): number;
  /** Whether the process still runs. */
  alive(): boolean;
  /** The child's /metrics, parsed. */
  metrics(): Promise<Map<string, number>>;
  /** Kills the child (SIGKILL) and waits for its exit. */
  stop(): Promise<void>;
}

/** Starts `serve <provider> --port 0 --metrics-port 0` from `tree` and waits until it listens. */
export async function startServerChild(
  tree: CompiledTree,
  provider: string,
  args: readonly string[] = [],
  env: Record<string, string> = {},
): Promise<ServerChild> {
  const cli = spawnCli(
    [path.join(tree.dir, "src", "cli.js"), "serve", provider, "--port", "0", "--host", "127.0.0.1", "--metrics-port", "0", ...args],
    {
      cwd: tree.dir,
      env: { ...process.env, NODE_PATH: path.join(ROOT, "node_modules"), LOG_LEVEL: "warn", ...env },
    },
  );
  const [m] = await cli.waitFor(/listening on 127\.0\.0\.1:(\d+)/g);
  const [mm] = await cli.waitFor(/metrics and probes on http:\/\/127\.0\.0\.1:(\d+)/g);
  const pid = cli.child.pid as number;
  return {
    cli,
    port: Number(m?.[1]),
    metricsPort: Number(mm?.[1]),
    pid,
    rss: () => rssOf(pid),
    alive: () => cli.child.exitCode === null && cli.child.signalCode === null,
    metrics: async () => parseMetrics((await httpGet(Number(mm?.[1]), "/metrics")).body),
    stop: async () => {
      cli.kill("SIGKILL");
      await cli.exit;
    },
  };
}

/** VmRSS of a process in bytes. */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0) * 1024;
}

/**
 * One authenticate call on a fresh connection; resolves with the gRPC status and how long the
 * whole thing took (connect included), or rejects after `guardMs`.
 */
export function freshCall(
  port: number,
  body: Uint8Array,
  servicePath = "/emqx.exhook.v3.HookProvider/OnClientAuthenticate",
  guardMs = 5000,
): Promise<{ status: number; ms: number; message: Buffer | undefined }> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    const guard = setTimeout(() => {
      session.destroy();
      reject(new Error(`no answer on a fresh connection within ${guardMs} ms`));
    }, guardMs);
    session.on("error", (err) => {
      clearTimeout(guard);
      reject(err);
    });
    const req = session.request({
      ":method": "POST",
      ":path": servicePath,
      "content-type": "application/grpc+proto",
      te: "trailers",
      "grpc-timeout": "5S",
    });
    let head: http2.IncomingHttpHeaders | undefined;
    let trailers: http2.IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    req.on("response", (h) => (head = h));
    req.on("trailers", (t) => (trailers = t));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("error", () => {});
    req.on("close", () => {
      clearTimeout(guard);
      const ms = performance.now() - start;
      session.destroy();
      const src = head?.["grpc-status"] !== undefined ? head : trailers;
      const data = Buffer.concat(chunks);
      if (src?.["grpc-status"] === undefined) reject(new Error(`no gRPC status (rst code ${req.rstCode})`));
      else resolve({ status: Number(src["grpc-status"]), ms, message: data.length >= 5 ? data.subarray(5) : undefined });
    });
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    frame.set(body, 5);
    req.end(frame);
  });
}

/** A server child shared by the cases of one `describe`, replaced after a case that killed it. */
export interface CaseServer {
  readonly child: ServerChild;
  /** The child's RSS after warm-up (bytes). */
  readonly idleRss: number;
  /** How many cases left the server dead or unable to answer. */
  readonly crashes: number;
  /** The compiled tree the server runs from (the provider file sits in it). */
  readonly dir: string;
}

/**
 * Registers beforeAll/beforeEach/afterAll that run `serve <providerSource>` (written into a
 * compiled tree as `providerFile`) with `args`, warmed up by 20 calls of `body` on fresh
 * connections before its idle RSS is taken. Before each case the server must answer `body` with
 * status 0; if it does not (a previous case killed it), it counts as a crash and a new server
 * starts, so each case stands alone.
 */
export function serverForEachCase(options: {
  prefix: string;
  providerFile: string;
  providerSource: string;
  args: readonly string[];
  body: Uint8Array;
}): CaseServer {
  let tree: CompiledTree;
  let provider = "";
  const state: { child: ServerChild; idleRss: number; crashes: number; dir: string } = {
    child: undefined as unknown as ServerChild,
    idleRss: 0,
    crashes: 0,
    dir: "",
  };
  async function start(): Promise<void> {
    state.child = await startServerChild(tree, provider, options.args, { LOG_LEVEL: "warn" });
    for (let i = 0; i < 20; i++) await freshCall(state.child.port, options.body);
    state.idleRss = state.child.rss();
  }
  beforeAll(async () => {
    tree = compiledTree(options.prefix);
    state.dir = tree.dir;
    provider = tree.write(options.providerFile, options.providerSource);
    await start();
  }, 30_000);
  beforeEach(async () => {
    const healthy =
      state.child.alive() &&
      (await freshCall(state.child.port, options.body).then(
        (r) => r.status === 0,
        () => false,
      ));
    if (!healthy) {
      state.crashes++;
      await state.child.stop();
      await start();
    }
  }, 30_000);
  afterAll(async () => {
    await state.child?.stop();
    tree?.cleanup();
  });
  return state;
}
