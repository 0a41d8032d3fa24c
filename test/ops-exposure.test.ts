/**
 * The operations port as an attacker or a careless deployment meets it: where it listens by
 * default, the bearer token, the read API refused on an exposed port without one, metric label
 * values from the wire bounded, OnProviderLoaded floods, and readiness that a stranger's
 * OnProviderLoaded cannot turn on. Then the CLI with the use-case stack: one operations port
 * derived from the ExHook port (issue 12: `make start PORT=…` never collides), a clear error when
 * it is taken, and `--workers 2` answering metrics and readiness for the whole process tree.
 */
import * as http from "node:http";
import * as net from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { defineProvider, keep } from "../src/index.js";
import { createExHookServer, type ExHookServer } from "../src/server.js";
import { MAX_LOADED_NODES } from "../src/dispatch.js";
import { createEmqxLikeClient } from "../src/testing/emqx-client.js";
import { parseArgs } from "../src/cli.js";
import { spawnCli, type CliProcess } from "./helpers/cli-process.js";
import { COMPILED_TREE } from "./helpers/compiled-tree.js";
import { ROOT } from "./helpers/compile.js";
import { httpGet, key, memoryLogger, parseMetrics } from "./helpers/ops.js";
import { encode, servicePath } from "./helpers/proto.js";

const TOKEN = "0123456789abcdef0123456789abcdef";

/** GET with headers; resolves with status and body. */
function get(
  port: number,
  urlPath: string,
  headers: http.OutgoingHttpHeaders = {},
  host = "127.0.0.1",
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host, port, path: urlPath, headers, agent: false }, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on("error", reject);
  });
}

/** A non-loopback address of this machine, if it has one. */
function externalAddress(): string | undefined {
  for (const list of Object.values(
    require("node:os").networkInterfaces() as Record<string, Array<{ family: string; internal: boolean; address: string }>>,
  )) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return undefined;
}

const provider = defineProvider(
  { onMessagePublish: () => keep() },
  { ops: { http: async (req) => (req.path === "/data" ? { status: 200, body: { secret: "stored data" } } : undefined), paths: ["/data"] } },
);

describe("operations port exposure", () => {
  const servers: ExHookServer[] = [];
  afterAll(async () => {
    for (const s of servers) await s.close(500);
  });
  const start = async (opts: Partial<Parameters<typeof createExHookServer>[0]>) => {
    const logger = memoryLogger();
    const s = createExHookServer({ provider, port: 0, host: "0.0.0.0", metricsPort: 0, logger, ...opts });
    servers.push(s);
    await s.listen();
    return { server: s, port: s.opsAddress?.port as number, logger };
  };

  test("by default it listens on 127.0.0.1 even when the ExHook port listens on every interface", async () => {
    const { server, port } = await start({});
    expect(server.address?.address).toBe("0.0.0.0");
    expect(server.opsAddress?.address).toBe("127.0.0.1");
    const ext = externalAddress();
    if (ext) await expect(get(port, "/healthz", {}, ext)).rejects.toMatchObject({ code: "ECONNREFUSED" });
    expect((await get(port, "/data")).status).toBe(200);
  });

  test("with a token: /metrics and the provider's routes need it, the probes never do", async () => {
    const { port } = await start({ metricsToken: TOKEN });
    expect(await get(port, "/metrics")).toMatchObject({ status: 401, body: "bearer token required\n" });
    expect((await get(port, "/metrics", { authorization: "Bearer wrong-token-of-some-length" })).status).toBe(401);
    expect((await get(port, "/metrics", { authorization: `Bearer ${TOKEN}` })).status).toBe(200);
    expect((await get(port, "/data")).status).toBe(401);
    expect(await get(port, "/data", { authorization: `Bearer ${TOKEN}` })).toEqual({ status: 200, body: '{"secret":"stored data"}' });
    expect((await get(port, "/healthz")).status).toBe(200);
    expect((await get(port, "/readyz")).status).toBe(200);
  });

  test("exposed without a token: a warning at start, /metrics open, the provider's routes (stored data) refused", async () => {
    const { port, logger } = await start({ metricsHost: "0.0.0.0" });
    expect(logger.lines.find((l) => l.level === "warn")?.msg).toBe(
      "operations port is reachable from other hosts without a token: /metrics is open to them, the read API is refused (set --metrics-token-file)",
    );
    expect((await get(port, "/metrics")).status).toBe(200);
    expect(await get(port, "/data")).toEqual({
      status: 403,
      body: "/data exposes stored data: on 0.0.0.0 (not localhost) it needs a token (--metrics-token-file)\n",
    });
  });

  test("2,000 OnProviderLoaded with made-up node names: bounded metric series, bounded memory, not ready", async () => {
    const { server, port } = await start({ readyWhen: "loaded", readyNodes: ["emqx@real"] });
    const client = createEmqxLikeClient(`http://127.0.0.1:${server.address?.port}`, 4);
    try {
      const load = (node: string) =>
        client.call(
          servicePath("v3", "OnProviderLoaded"),
          encode("v3", "ProviderLoadedRequest", {
            broker: { version: "5.9.0" },
            meta: { node, version: "5.9.0", cluster_name: "x".repeat(300) },
          }),
        );
      for (let i = 0; i < 2000; i += 500) await Promise.all(Array.from({ length: 500 }, (_, j) => load(`mallory-${i + j}@x`)));
      expect(server.dispatcher.loadedNodes().length).toBe(MAX_LOADED_NODES);
      expect((await httpGet(port, "/readyz")).body).toBe("waiting for OnProviderLoaded from one of emqx@real; loaded nodes: 0\n");
      let m = parseMetrics((await httpGet(port, "/metrics")).body);
      const series = [...m.keys()].filter((k) => k.startsWith("exhook_broker_loaded{"));
      expect(series.length).toBe(33);
      expect(m.get(key("exhook_broker_loaded", { package: "v3", node: "_other", version: "_other", cluster: "_other" }))).toBe(
        MAX_LOADED_NODES - 32,
      );
      expect(series.every((k) => k.length < 400)).toBe(true);
      // The allow-listed node always gets its own label, and makes us ready.
      expect((await load("emqx@real")).grpcStatus).toBe(0);
      m = parseMetrics((await httpGet(port, "/metrics")).body);
      expect(
        m.get(key("exhook_broker_loaded", { package: "v3", node: "emqx@real", version: "5.9.0", cluster: `${"x".repeat(127)}…` })),
      ).toBe(1);
      expect((await httpGet(port, "/readyz")).status).toBe(200);
    } finally {
      await client.close();
    }
  }, 60_000);
});

describe("CLI flags of the operations port", () => {
  test("--metrics-host, --metrics-token-file, --ready-nodes parse; loaded without an allow-list is refused", () => {
    expect(
      parseArgs(
        [
          "serve",
          "p.js",
          "--metrics-host",
          "0.0.0.0",
          "--metrics-token-file",
          "/t",
          "--ready-when",
          "loaded",
          "--ready-nodes",
          "emqx@a, emqx@b",
        ],
        {},
      ),
    ).toMatchObject({
      metricsHost: "0.0.0.0",
      metricsTokenFile: "/t",
      readyWhen: "loaded",
      readyNodes: ["emqx@a", "emqx@b"],
    });
    expect(parseArgs(["serve", "p.js"], { METRICS_HOST: "10.0.0.1", READY_NODES: "emqx@a" })).toMatchObject({
      metricsHost: "10.0.0.1",
      readyNodes: ["emqx@a"],
    });
    expect(() => parseArgs(["serve", "p.js", "--ready-when", "loaded"], {})).toThrow("--ready-when loaded needs --ready-nodes");
    expect(() => parseArgs(["serve", "p.js", "--metrics-port", "0x2328"], {})).toThrow(
      '--metrics-port (or METRICS_PORT) must be an integer from 0 to 65535, got "0x2328"',
    );
  });
});

/** A port p with p and p + 10 free on 127.0.0.1 (the ExHook port and its derived operations port). */
async function freePair(): Promise<number> {
  const isFree = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once("error", () => resolve(false));
      s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
    });
  for (let i = 0; i < 50; i++) {
    const p = 20_000 + Math.floor(Math.random() * 30_000);
    if ((await isFree(p)) && (await isFree(p + 10))) return p;
  }
  throw new Error("no free port pair");
}

describe("serve the use-case stack from the CLI: one operations port, derived from the ExHook port", () => {
  let dir: string;
  const procs: CliProcess[] = [];
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), "exhook-opsport-"));
  });
  afterAll(async () => {
    for (const p of procs) p.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  });
  const serve = (args: string[], env: Record<string, string> = {}) => {
    const p = spawnCli(
      [
        path.join(COMPILED_TREE, "src", "cli.js"),
        "serve",
        path.join(COMPILED_TREE, "examples", "stack-provider.js"),
        "--host",
        "127.0.0.1",
        "--log-level",
        "silent",
        ...args,
      ],
      {
        cwd: dir,
        env: { ...process.env, EXHOOK_DATA_DIR: path.join(dir, "data"), NODE_PATH: path.join(ROOT, "node_modules"), ...env },
      },
    );
    procs.push(p);
    return p;
  };

  test("--port P serves the read API, metrics and probes on 127.0.0.1:P+10; the banner says so", async () => {
    const port = await freePair();
    const cli = serve(["--port", String(port)]);
    await cli.waitFor(/listening on/g);
    expect(cli.stdout()).toContain(
      `metrics and probes on http://127.0.0.1:${port + 10}/metrics, /healthz, /readyz, /messages, /presence, /stats\n`,
    );
    expect((await httpGet(port + 10, "/readyz")).status).toBe(200);
    expect(JSON.parse((await httpGet(port + 10, "/messages")).body)).toEqual({ messages: [] });
    expect((await httpGet(port + 10, "/metrics")).body).toContain("exhook_hook_calls_total");
    cli.kill("SIGTERM");
    expect((await cli.exited()).code).toBe(0);
  });

  test("a taken operations port fails the start, naming the flag that moves it", async () => {
    const port = await freePair();
    const squatter = net.createServer().listen(port + 10, "127.0.0.1");
    await new Promise((r) => squatter.once("listening", r));
    try {
      const cli = serve(["--port", String(port)]);
      const { code } = await cli.exited();
      expect(code).toBe(1);
      expect(cli.stderr()).toBe(
        `emqx-exhook: the operations port 127.0.0.1:${port + 10} is in use: move it with --metrics-port N (or METRICS_PORT), or move the ExHook port (the default is the ExHook port + 10)\n`,
      );
      // --metrics-port moves it.
      const moved = serve(["--port", String(port), "--metrics-port", "0"]);
      await moved.waitFor(/metrics and probes on http:\/\/127\.0\.0\.1:\d+/g);
      moved.kill("SIGTERM");
      await moved.exited();
    } finally {
      squatter.close();
    }
  });

  test("--workers 2: the primary serves the operations port: metrics summed over the workers, readiness of all, /stats per worker", async () => {
    const tokenFile = path.join(dir, "token");
    writeFileSync(tokenFile, `${TOKEN}\n`);
    const cli = serve(["--port", "0", "--workers", "2", "--metrics-port", "0", "--metrics-token-file", tokenFile], {
      EXHOOK_DATA_DIR: path.join(dir, "data-w"),
    });
    const [m] = await cli.waitFor(/primary metrics and probes on http:\/\/127\.0\.0\.1:(\d+)\//g, 1, 30_000);
    const opsPort = Number(m?.[1]);
    const exPort = Number((await cli.waitFor(/listening on 127\.0\.0\.1:(\d+)/g, 2))[0]?.[1]);
    const auth = { authorization: `Bearer ${TOKEN}` };
    const client = createEmqxLikeClient(`http://127.0.0.1:${exPort}`, 8);
    try {
      const calls = 200;
      const body = encode("v3", "MessagePublishRequest", {
        message: { node: "emqx@a", id: "00", from: "c", topic: "t/1", payload: Buffer.from("x") },
        meta: { node: "emqx@a" },
      });
      const replies = await Promise.all(
        Array.from({ length: calls }, (_, i) => client.call(servicePath("v3", "OnMessagePublish"), body, {}, i)),
      );
      expect(replies.every((r) => r.grpcStatus === 0)).toBe(true);
      // Every scrape sees the whole server: the same total, however the connections were spread.
      for (let i = 0; i < 4; i++) {
        const scraped = parseMetrics((await get(opsPort, "/metrics", auth)).body);
        expect(scraped.get(key("exhook_hook_calls_total", { hook: "message.publish", package: "v3" }))).toBe(calls);
      }
      expect((await get(opsPort, "/metrics")).status).toBe(401);
      expect(await get(opsPort, "/readyz")).toEqual({ status: 200, body: "ready; loaded nodes: 0\n" });
      const stats = JSON.parse((await get(opsPort, "/stats", auth)).body) as {
        workers: Array<{ pid: number; persistence: { received: number } }>;
      };
      expect(stats.workers.length).toBe(2);
      // Both workers served some of the calls: one worker's counters alone would not add up.
      expect(stats.workers.every((w) => w.persistence.received > 0)).toBe(true);
      expect(stats.workers.reduce((n, w) => n + w.persistence.received, 0)).toBe(calls);
      expect(JSON.parse((await get(opsPort, "/messages?topic=t/1&limit=1", auth)).body).messages.length).toBeLessThanOrEqual(1);
    } finally {
      await client.close();
    }
    cli.kill("SIGTERM");
    expect((await cli.exited(30_000)).code).toBe(0);
  }, 60_000);
});
