/**
 * `emqx-exhook serve --workers N`: the CLI as a real process tree (node:cluster primary + workers)
 * on one port, called like EMQX with a pool of 8 connections, then stopped with SIGTERM. Also the
 * native transport's cancellation path, which the performance work changed.
 * The sources are compiled with swc into a temporary directory first (fast; no `dist` needed).
 */
import * as http2 from "node:http2";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { parseArgs } from "../src/cli.js";
import { isExHookConfigError } from "../src/errors.js";
import { allow, defineProvider } from "../src/index.js";
import { createExHookServer } from "../src/server.js";
import { createEmqxLikeClient, type EmqxLikeClient } from "../src/testing/emqx-client.js";
import { spawnCli, type CliProcess } from "./helpers/cli-process.js";
import { compileTree, ROOT } from "./helpers/compile.js";
import { until } from "./helpers/ops.js";
import { decode, encode, servicePath } from "./helpers/proto.js";

describe("parseArgs --workers", () => {
  test("absent means no cluster; a count is parsed", () => {
    expect(parseArgs(["serve", "p.js"], {}).workers).toBeUndefined();
    expect(parseArgs(["serve", "p.js", "--workers", "4"], {}).workers).toBe(4);
    expect(parseArgs(["serve", "p.js", "--workers=1"], {}).workers).toBe(1);
  });

  test.each(["0", "-2", "1.5", "many", "", "257"])("a bad --workers %j is an ExHookConfigError naming --workers", (bad) => {
    let err: unknown;
    try {
      parseArgs(["serve", "p.js", `--workers=${bad}`], {});
    } catch (e) {
      err = e;
    }
    expect(isExHookConfigError(err)).toBe(true);
    expect((err as Error).message).toBe(`--workers must be an integer from 1 to 256, got ${JSON.stringify(bad)}`);
  });
});

const LISTENING = /listening on 127\.0\.0\.1:(\d+)/g;

/** `emqx-exhook serve <provider> --workers 2` from the compiled tree in `dir`. */
function serveWorkers(dir: string, provider: string, options: { detached?: boolean } = {}): CliProcess {
  return spawnCli(
    [
      path.join(dir, "src", "cli.js"),
      "serve",
      path.join(dir, provider),
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--workers",
      "2",
      "--log-level",
      "silent",
    ],
    {
      cwd: dir,
      env: { ...process.env, NODE_PATH: path.join(ROOT, "node_modules") },
      ...options,
    },
  );
}

describe("serve --workers 2", () => {
  let dir: string;
  let cli: CliProcess;
  let port: number;
  let workerPids: number[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "exhook-workers-"));
    compileTree("src", dir);
    compileTree("gen", dir);
    // Each worker stamps its pid on the answer, so the test sees which process served a call.
    writeFileSync(
      path.join(dir, "pid-provider.js"),
      `const { defineProvider, rewrite } = require("./src/index.js");\n` +
        `module.exports = defineProvider({ onMessagePublish: () => rewrite({ headers: { worker: String(process.pid) } }) });\n`,
    );
    cli = serveWorkers(dir, "pid-provider.js");
    port = Number((await cli.waitFor(LISTENING, 2))[0]?.[1]);
  }, 20_000);

  afterAll(() => {
    cli?.kill();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the primary announces itself and both workers listen on the same port", () => {
    expect(cli.stdout()).toContain(`emqx-exhook: primary ${cli.child.pid} starting 2 workers`);
    const ports = [...cli.stdout().matchAll(LISTENING)].map((m) => Number(m[1]));
    expect(ports).toEqual([port, port]);
  });

  test("8 EMQX-like connections: every call answered, by both worker processes", async () => {
    const client = createEmqxLikeClient(`http://127.0.0.1:${port}`, 8);
    try {
      const body = encode("v3", "MessagePublishRequest", { message: { topic: "t/1", payload: Buffer.from("x"), qos: 1, from: "c1" } });
      const replies = await Promise.all(
        Array.from({ length: 32 }, (_, i) => client.call(servicePath("v3", "OnMessagePublish"), body, {}, i % 8)),
      );
      expect(replies.map((r) => r.grpcStatus)).toEqual(Array(32).fill(0));
      const pids = new Set<string>();
      for (const r of replies) {
        const res = decode("v3", "ValuedResponse", r.messages[0] as Uint8Array);
        expect(res["type"]).toBe("CONTINUE");
        expect(res["message"]["topic"]).toBe("t/1");
        pids.add(res["message"]["headers"]["worker"]);
      }
      // The cluster hands connections out round-robin: 8 connections land on both workers.
      expect(pids.size).toBe(2);
      expect(pids.has(String(cli.child.pid))).toBe(false);
      workerPids = [...pids].map(Number);
    } finally {
      await client.close();
    }
  }, 15_000);

  test("a worker that dies is replaced, and the port keeps answering", async () => {
    expect(workerPids).toHaveLength(2);
    const victim = workerPids[0] as number;
    process.kill(victim, "SIGKILL");
    // The replacement worker prints the third "listening on" line.
    await cli.waitFor(LISTENING, 3, 10_000);
    expect(cli.stderr()).toContain(`emqx-exhook: worker ${victim} died (SIGKILL); starting a new one`);
    const client = createEmqxLikeClient(`http://127.0.0.1:${port}`, 8);
    try {
      const body = encode("v3", "MessagePublishRequest", { message: { topic: "t/2", payload: Buffer.from("y"), from: "c2" } });
      const replies = await Promise.all(
        Array.from({ length: 16 }, (_, i) => client.call(servicePath("v3", "OnMessagePublish"), body, {}, i % 8)),
      );
      expect(replies.map((r) => r.grpcStatus)).toEqual(Array(16).fill(0));
      const pids = new Set(replies.map((r) => decode("v3", "ValuedResponse", r.messages[0] as Uint8Array)["message"]["headers"]["worker"]));
      expect(pids.has(String(victim))).toBe(false);
      expect(pids.size).toBe(2);
    } finally {
      await client.close();
    }
  }, 20_000);

  test("SIGTERM to the primary: workers drain and the primary exits 0", async () => {
    cli.child.kill("SIGTERM");
    expect(await cli.exited()).toEqual({ code: 0, signal: null });
  }, 20_000);
});

describe("serve --workers 2, stopped with Ctrl-C (SIGINT to the whole process group)", () => {
  test("calls in flight are answered, workers drain once and the primary exits 0", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "exhook-ctrlc-"));
    compileTree("src", dir);
    compileTree("gen", dir);
    // A slow handler keeps the workers draining while the signals arrive.
    writeFileSync(
      path.join(dir, "p.js"),
      `const { defineProvider, allow } = require("./src/index.js");\n` +
        `module.exports = defineProvider({ onClientAuthenticate: () => (process.stdout.write("handler started\\n"), new Promise((r) => setTimeout(() => r(allow()), 400))) });\n`,
    );
    // detached: the CLI leads its own process group, like a shell job that Ctrl-C signals as a whole.
    const cli = serveWorkers(dir, "p.js", { detached: true });
    try {
      const port = Number((await cli.waitFor(LISTENING, 2))[0]?.[1]);
      const client = createEmqxLikeClient(`http://127.0.0.1:${port}`, 8);
      const body = encode("v3", "ClientAuthenticateRequest", { clientinfo: { clientid: "c", username: "u" } });
      const inFlight = Array.from({ length: 8 }, (_, i) => client.call(servicePath("v3", "OnClientAuthenticate"), body, {}, i));
      // Ctrl-C once all 8 handlers run (the workers share the CLI's stdout).
      await cli.waitFor(/handler started/g, 8, 10_000);
      cli.kill("SIGINT");
      const replies = await Promise.all(inFlight);
      await client.close();
      expect(replies.map((r) => r.grpcStatus)).toEqual(Array(8).fill(0));
      expect(await cli.exited()).toEqual({ code: 0, signal: null });
      expect(cli.stderr()).toBe("");
    } finally {
      cli.kill();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});

/**
 * The native transport's cancellation path (changed for speed: no AbortController per call, the
 * handler's signal is created lazily from the call's CallContext).
 */
describe("native transport: EMQX cancelling a call reaches ctx.signal", () => {
  let started!: () => void;
  const handlerStarted = new Promise<void>((r) => (started = r));
  let aborted!: (reason: unknown) => void;
  const abortReason = new Promise<unknown>((r) => (aborted = r));
  let answeredCtx: { signal: AbortSignal } | undefined;
  let lateStarted!: () => void;
  const lateHandlerStarted = new Promise<void>((r) => (lateStarted = r));
  let goOn!: () => void;
  const proceed = new Promise<void>((r) => (goOn = r));
  let lateSeen!: (v: unknown) => void;
  const lateReason = new Promise<unknown>((r) => (lateSeen = r));
  const provider = defineProvider(
    {
      onClientAuthenticate: (req, ctx) => {
        if (req.clientinfo?.clientid === "quick") {
          answeredCtx = ctx;
          return allow();
        }
        if (req.clientinfo?.clientid === "late-reader") {
          // Reads ctx.signal only after EMQX has reset the stream: the signal is created aborted.
          lateStarted();
          return proceed.then(() => (lateSeen(ctx.signal.aborted ? ctx.signal.reason : "not aborted"), allow()));
        }
        started();
        return new Promise((resolve) => ctx.signal.addEventListener("abort", () => (aborted(ctx.signal.reason), resolve(allow()))));
      },
    },
    { timeoutMs: 10_000 },
  );
  const server = createExHookServer({ provider, port: 0, host: "127.0.0.1", logger: { debug() {}, info() {}, warn() {}, error() {} } });
  let url = "";
  beforeAll(async () => {
    url = `http://127.0.0.1:${(await server.listen()).port}`;
  });
  afterAll(() => server.close(100));

  const frame = (clientid: string) => {
    const body = encode("v3", "ClientAuthenticateRequest", { clientinfo: { clientid, username: "u" } });
    const f = Buffer.alloc(5 + body.length);
    f.writeUInt32BE(body.length, 1);
    f.set(body, 5);
    return f;
  };

  /** Sends an authenticate call like EMQX, waits until its handler runs, then resets the stream. */
  async function callThenReset(clientid: string, running: Promise<void>): Promise<http2.ClientHttp2Session> {
    const session = http2.connect(url);
    session.on("error", () => {});
    const req = session.request({
      ":method": "POST",
      ":path": servicePath("v3", "OnClientAuthenticate"),
      "content-type": "application/grpc+proto",
      te: "trailers",
      "grpc-timeout": "5S",
    });
    req.on("error", () => {});
    req.end(frame(clientid));
    await running;
    req.close(http2.constants.NGHTTP2_CANCEL);
    return session;
  }

  test("a stream reset before the answer aborts the handler's signal with CANCELED", async () => {
    const session = await callThenReset("slow", handlerStarted);
    const reason = await abortReason;
    expect(reason).toBeInstanceOf(ConnectError);
    expect((reason as ConnectError).code).toBe(Code.Canceled);
    expect((reason as Error).message).toBe("[canceled] the call was cancelled");
    session.destroy();
  }, 10_000);

  test("a handler that first reads ctx.signal after the reset finds it already aborted", async () => {
    // The server-side stream of the next call: its close is the RST_STREAM having arrived.
    const serverSideClosed = new Promise<void>((resolve) =>
      server.http2.once("stream", (stream: http2.ServerHttp2Stream) => stream.once("close", () => resolve())),
    );
    const session = await callThenReset("late-reader", lateHandlerStarted);
    await serverSideClosed;
    goOn();
    const reason = await lateReason;
    expect(reason).toBeInstanceOf(ConnectError);
    expect((reason as ConnectError).code).toBe(Code.Canceled);
    session.destroy();
  }, 10_000);

  test("an answered call's signal is not aborted when its stream closes", async () => {
    const client = createEmqxLikeClient(url, 1);
    const reply = await client.call(servicePath("v3", "OnClientAuthenticate"), frame("quick").subarray(5));
    await client.close();
    expect(reply.grpcStatus).toBe(0);
    expect(answeredCtx?.signal.aborted).toBe(false);
  });
});

/**
 * EMQX 4.3.0–4.3.2 read `ResponsedType` with another numbering (IGNORE=0, CONTINUE=1), learned from
 * the v1 OnProviderLoaded, which EMQX sends once per pool: one connection, so one worker. What
 * that worker learns must reach the others (cluster bus), survive a restart (state file) and be
 * pinnable (--emqx-version).
 */
describe("serve --workers 2: the EMQX 4.3.0-4.3.2 numbering is shared, kept and pinnable", () => {
  let dir: string;
  let stateFile: string;
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), "exhook-numbering-"));
    compileTree("src", dir);
    compileTree("gen", dir);
    stateFile = path.join(dir, "state", "exhook-state.json");
    writeFileSync(
      path.join(dir, "numbering-provider.js"),
      `const { defineProvider, noOpinion, rewrite } = require("./src/index.js");\n` +
        `module.exports = defineProvider({ onClientAuthenticate: () => noOpinion(), onMessagePublish: () => rewrite({ headers: { worker: String(process.pid) } }) });\n`,
    );
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function serve(extra: string[] = []): CliProcess {
    return spawnCli(
      [
        path.join(dir, "src", "cli.js"),
        "serve",
        path.join(dir, "numbering-provider.js"),
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--workers",
        "2",
        "--log-level",
        "silent",
        ...extra,
      ],
      {
        cwd: dir,
        env: { ...process.env, NODE_PATH: path.join(ROOT, "node_modules") },
      },
    );
  }

  const authBody = encode("v1", "ClientAuthenticateRequest", { clientinfo: { clientid: "c", username: "u" } });
  /** The raw ResponsedType number of noOpinion() (IGNORE) on each of the pool's 8 connections. */
  const ignoreNumbers = async (client: EmqxLikeClient): Promise<number[]> => {
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_, i) => client.call(servicePath("v1", "OnClientAuthenticate"), authBody, {}, i)),
    );
    // Field 1 (type) is a varint; absent means 0.
    return replies.map((r) => {
      const m = r.messages[0] as Uint8Array;
      return m.length >= 2 && m[0] === 0x08 ? (m[1] as number) : 0;
    });
  };
  const workersOf = async (client: EmqxLikeClient): Promise<Set<string>> => {
    const body = encode("v1", "MessagePublishRequest", { message: { topic: "t", payload: Buffer.from("x") } });
    const replies = await Promise.all(Array.from({ length: 8 }, (_, i) => client.call(servicePath("v1", "OnMessagePublish"), body, {}, i)));
    return new Set(
      replies.map((r) => decode("v1", "ValuedResponse", r.messages[0] as Uint8Array)["message"]["headers"]["worker"] as string),
    );
  };
  const LEGACY = Array(8).fill(0);
  const MODERN = Array(8).fill(1);

  test("learned by one worker, answered by both; replayed to a replacement worker; written to the state file", async () => {
    const cli = serve(["--state-file", stateFile]);
    try {
      const port = Number((await cli.waitFor(LISTENING, 2))[0]?.[1]);
      const client = createEmqxLikeClient(`http://127.0.0.1:${port}`, 8);
      try {
        expect((await workersOf(client)).size).toBe(2);
        expect(await ignoreNumbers(client)).toEqual(MODERN);
        // EMQX 4.3.1 loads the provider on one connection of its pool.
        const load = encode("v1", "ProviderLoadedRequest", {
          broker: { version: "4.3.1", sysdescr: "EMQ X Broker", uptime: "5 seconds", datetime: "2021-03-01 10:00:00" },
        });
        expect((await client.call(servicePath("v1", "OnProviderLoaded"), load, {}, 0)).grpcStatus).toBe(0);
        // The other worker learns it through the primary (a message away): wait for it.
        await until(
          async () => JSON.stringify(await ignoreNumbers(client)) === JSON.stringify(LEGACY),
          "the legacy numbering on all 8 connections",
        );
        expect(JSON.parse(readFileSync(stateFile, "utf8"))).toEqual({
          format: 1,
          learned: {
            v1: { legacyNumbering: true, broker: { node: "", version: "4.3.1", sysdescr: "EMQ X Broker", clusterName: "" } },
            learnedAt: expect.any(Number),
          },
        });
        // A worker that dies is replaced; the new one learns it from the primary's replay.
        const victim = Number([...(await workersOf(client))][0]);
        process.kill(victim, "SIGKILL");
        await cli.waitFor(LISTENING, 3, 10_000);
      } finally {
        await client.close();
      }
      const fresh = createEmqxLikeClient(`http://127.0.0.1:${port}`, 8);
      try {
        expect((await workersOf(fresh)).size).toBe(2);
        expect(await ignoreNumbers(fresh)).toEqual(LEGACY);
      } finally {
        await fresh.close();
      }
    } finally {
      cli.child.kill("SIGTERM");
      await cli.exited();
    }
  }, 40_000);

  test("after a restart (EMQX 4.x does not load again) the state file still says so", async () => {
    const cli = serve(["--state-file", stateFile]);
    try {
      const port = Number((await cli.waitFor(LISTENING, 2))[0]?.[1]);
      const client = createEmqxLikeClient(`http://127.0.0.1:${port}`, 8);
      try {
        expect((await workersOf(client)).size).toBe(2);
        expect(await ignoreNumbers(client)).toEqual(LEGACY);
      } finally {
        await client.close();
      }
    } finally {
      cli.child.kill("SIGTERM");
      await cli.exited();
    }
  }, 30_000);

  test("--emqx-version pins it: 4.4.19 over what the state file says, 4.3.2 without any load", async () => {
    for (const [version, expected] of [
      ["4.4.19", MODERN],
      ["4.3.2", LEGACY],
    ] as const) {
      const cli = serve(version === "4.4.19" ? ["--state-file", stateFile, "--emqx-version", version] : ["--emqx-version", version]);
      try {
        const port = Number((await cli.waitFor(LISTENING, 2))[0]?.[1]);
        const client = createEmqxLikeClient(`http://127.0.0.1:${port}`, 8);
        try {
          expect({ version, numbers: await ignoreNumbers(client) }).toEqual({ version, numbers: expected });
        } finally {
          await client.close();
        }
      } finally {
        cli.child.kill("SIGTERM");
        await cli.exited();
      }
    }
  }, 40_000);
});
