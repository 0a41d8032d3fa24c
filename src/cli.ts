#!/usr/bin/env node
/**
 * The `emqx-exhook` command. `emqx-exhook --help` lists the commands, `emqx-exhook <command> --help`
 * their options, `--version` the version. `serve <provider-module>` (the default command) serves a
 * provider module on h2c and prints the EMQX configuration to paste; the management commands
 * (users, messages, presence, acl) live in src/commands. Every command line goes through Node's
 * `util.parseArgs` in strict mode (src/commands/command.ts).
 */
import cluster, { type Worker } from "node:cluster";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { readProcessStdin, runCommand, SUBCOMMANDS, commandSummaries } from "./commands/index.js";
import { optionLines } from "./commands/command.js";
import { parseServeArgs, SERVE_COMMAND, type CliArgs } from "./commands/serve.js";
import { ExHookConfigError, isExHookConfigError } from "./errors.js";
import { Registry } from "prom-client";
import { relayClusterBus } from "./ops/cluster-bus.js";
import { clusterOpsSource, serveOpsToPrimary, workerOpsInfo } from "./ops/cluster-ops.js";
import { checkReadyOptions, createOpsServer, type ReadinessCheck } from "./ops/http-probes.js";
import { createLogger } from "./ops/logger.js";
import { DEFAULT_HEAP_GROWTH_PERCENT, setHeapGrowthPercent } from "./ops/heap.js";
import { createMetrics } from "./ops/metrics.js";
import { ownDir } from "./own-location.js";
import { loadProviderModule, type ProviderSetup } from "./provider-setup.js";
import { createExHookServer } from "./server.js";
import { ignoreBrokenStdio, installShutdown } from "./ops/shutdown.js";
import { isLegacyEnumBroker } from "./wire.js";

export type { CliArgs } from "./commands/serve.js";

/** Parses the `serve` command line (the word `serve` is optional) and the environment; throws ExHookConfigError with what to fix. */
export function parseArgs(argv: readonly string[], env: NodeJS.ProcessEnv): CliArgs {
  return parseServeArgs(argv, env);
}

/** The version of this package (its package.json, found above the running module). */
export function packageVersion(): string {
  for (let dir = ownDir; ; dir = dirname(dir)) {
    const file = join(dir, "package.json");
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version?: string };
      if (pkg.name === "emqx-exhook" && pkg.version) return pkg.version;
    }
    if (dirname(dir) === dir) return "unknown";
  }
}

/** `emqx-exhook --help`: every command, one line each. */
export function mainHelp(): string {
  const rows: Array<[string, string]> = [
    [`${SERVE_COMMAND.name} ${SERVE_COMMAND.args}`, `${SERVE_COMMAND.summary} (the default command)`],
    ...commandSummaries(),
    ["help [command]", "this help, or a command's options (same as <command> --help)"],
  ];
  const width = Math.max(...rows.map(([c]) => c.length)) + 2;
  return (
    `usage: emqx-exhook <command> [options]\n\n` +
    `Typed EMQX ExHook servers: serve a provider to EMQX 4.3 to 6.x, and manage the use cases' store.\n\n` +
    `commands:\n${rows.map(([c, h]) => `  ${c.padEnd(width)}${h}\n`).join("")}\n` +
    `options:\n${optionLines({ help: { type: "boolean", short: "h", help: "this help" }, version: { type: "boolean", short: "v", help: "print the version" } }).join("\n")}\n\n` +
    `emqx-exhook <command> --help shows a command's options. The management commands read the same\n` +
    `config as serve: --config FILE (env EXHOOK_CONFIG), EXHOOK_DATA_DIR, EXHOOK_DB_URL.\n`
  );
}

/** `emqx-exhook serve --help`. */
export function serveHelp(): string {
  return (
    `usage: emqx-exhook serve ${SERVE_COMMAND.args} [options]\n\n${SERVE_COMMAND.summary}\n\n${SERVE_COMMAND.details}\n\n` +
    `options:\n${optionLines({ ...SERVE_COMMAND.options, help: { type: "boolean", short: "h", help: "show this help" } }).join("\n")}\n`
  );
}

/**
 * The operations port when none is given: the ExHook port + 10 for a provider that serves routes
 * there (the use-case stack's read API: 9010 next to 9000, 9110 with PORT=9100), so two servers
 * started with different ports never collide; a free one with port 0; none otherwise.
 */
export function derivedOpsPort(port: number, providerHasRoutes: boolean): number | undefined {
  if (!providerHasRoutes) return undefined;
  if (port === 0) return 0;
  if (port + 10 > 65535)
    throw new ExHookConfigError(`cannot derive the operations port from port ${port} (+10 > 65535): set --metrics-port`);
  return port + 10;
}

/** Reads the operations port's token from a file (trimmed); throws an ExHookConfigError saying what is wrong. */
export function readTokenFile(file: string): string {
  let token: string;
  try {
    token = readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new ExHookConfigError(`cannot read --metrics-token-file ${file}: ${(err as Error).message}`);
  }
  if (token.length < 16)
    throw new ExHookConfigError(
      `--metrics-token-file ${file}: the token must be at least 16 characters (e.g. openssl rand -hex 32 > ${file})`,
    );
  return token;
}

/** An EADDRINUSE on the operations port, said in terms of the flag that moves it. */
function opsListenError(err: unknown, host: string, port: number | undefined): unknown {
  if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE") return err;
  return new ExHookConfigError(
    `the operations port ${host}:${port} is in use: move it with --metrics-port N (or METRICS_PORT), or move the ExHook port (the default is the ExHook port + 10)`,
  );
}

/** How the start banner shows the operations port. */
function opsBanner(host: string, port: number, paths: readonly string[], token: boolean): string {
  const shown = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  const where =
    host === "0.0.0.0" || host === "::"
      ? ` (listening on all interfaces${token ? ", token required" : ""})`
      : token
        ? " (token required)"
        : "";
  return `metrics and probes on http://${shown}:${port}/metrics, /healthz, /readyz${paths.map((p) => `, ${p}`).join("")}${where}\n`;
}

/** The EMQX configuration snippets for a server at `url`. */
export function emqxConfig(url: string): string {
  return `EMQX 5.x / 6.x (emqx.conf, or Dashboard > Management > ExHook):
  exhook.servers = [
    { name = "exhook_ts", enable = true, url = "${url}",
      request_timeout = "5s", failed_action = deny, auto_reconnect = "60s", pool_size = 8 }
  ]
EMQX 4.4 (etc/plugins/emqx_exhook.conf, then: emqx_ctl plugins load emqx_exhook):
  exhook.server.exhook_ts.url = ${url}
  exhook.request_timeout = 5s
  exhook.request_failed_action = deny`;
}

async function main(): Promise<void> {
  // A closed stdout/stderr pipe (`serve … | head -1`) must not end or hang the process.
  ignoreBrokenStdio();
  const argv = process.argv.slice(2);
  const first = argv[0];
  if (first === undefined) {
    process.stderr.write(mainHelp());
    process.exitCode = 2;
    return;
  }
  if (first === "--help" || first === "-h" || (first === "help" && argv.length === 1)) {
    process.stdout.write(mainHelp());
    return;
  }
  if (first === "--version" || first === "-v" || first === "version") {
    process.stdout.write(`${packageVersion()}\n`);
    return;
  }
  // `help <command>` is `<command> --help`.
  const words = first === "help" ? [...argv.slice(1), "--help"] : argv;
  if (SUBCOMMANDS.includes(words[0] as string)) {
    const io = {
      stdout: (t: string) => process.stdout.write(t),
      stderr: (t: string) => process.stderr.write(t),
      readStdin: readProcessStdin,
      env: process.env,
    };
    process.exitCode = await runCommand(words, io);
    return;
  }
  if (
    words[0] !== "serve" &&
    !existsSync(words[0] as string) &&
    !(words[0] as string).startsWith("-") &&
    !/[./\\]/.test(words[0] as string)
  ) {
    process.stderr.write(`emqx-exhook: unknown command ${JSON.stringify(words[0])}; see emqx-exhook --help\n`);
    process.exitCode = 2;
    return;
  }
  let args: CliArgs;
  try {
    args = parseArgs(words, process.env);
  } catch (err) {
    process.stderr.write(`emqx-exhook: ${(err as Error).message}\n\n${serveHelp()}`);
    process.exit(2);
  }
  if (args.command === "help") {
    process.stdout.write(serveHelp());
    return;
  }
  if (args.configPath !== undefined && !existsSync(args.configPath)) {
    process.stderr.write(
      `emqx-exhook: config file ${args.configPath} does not exist (from ${argv.some((a) => a === "--config" || a.startsWith("--config=")) ? "--config" : "EXHOOK_CONFIG"})\n`,
    );
    process.exit(2);
  }
  // Before anything allocates much (workers parse the same arguments and set it too).
  setHeapGrowthPercent(args.heapGrowthPercent ?? DEFAULT_HEAP_GROWTH_PERCENT);
  if ((args.workers ?? 1) > 1 && cluster.isPrimary) {
    runPrimary(args);
    return;
  }
  try {
    const logger = createLogger({ level: args.logLevel ?? "info" });
    const closers: Array<() => void | Promise<void>> = [];
    // The module's own metrics (the use-case stack's bridge) join the server's on /metrics; its readiness checks join /readyz.
    const registry = new Registry();
    const checks: Array<() => readonly ReadinessCheck[]> = [];
    const setup: ProviderSetup = {
      configPath: args.configPath,
      logger,
      onClose: (fn) => void closers.push(fn),
      metricsRegistry: registry,
      addReadinessCheck: (fn) => void checks.push(fn),
    };
    const { provider, tookSetup } = await loadProviderModule(args.module as string, setup);
    if (args.configPath !== undefined && !tookSetup) {
      throw new ExHookConfigError(
        `${args.module} exports a provider, not a function receiving { configPath }: it cannot read ${args.configPath}; drop --config (and EXHOOK_CONFIG) or export a function`,
      );
    }
    const token = args.metricsTokenFile !== undefined ? readTokenFile(args.metricsTokenFile) : undefined;
    const providerOps = provider.options.ops;
    const opsPort = args.metricsPort ?? derivedOpsPort(args.port, !!providerOps?.http);
    const opsHost = args.metricsHost ?? "127.0.0.1";
    // Under --workers the primary serves the operations port for all workers (ops/cluster-ops.ts).
    const clustered = cluster.isWorker;
    const metrics =
      opsPort !== undefined ? createMetrics({ registry, ...(args.readyNodes ? { knownNodes: args.readyNodes } : {}) }) : undefined;
    const readiness = () => checks.flatMap((f) => f());
    const server = createExHookServer({
      provider,
      port: args.port,
      host: args.host,
      transport: args.transport,
      logger,
      ...(metrics ? { metrics } : {}),
      ...(opsPort !== undefined && !clustered
        ? { metricsPort: opsPort, metricsHost: opsHost, ...(token !== undefined ? { metricsToken: token } : {}) }
        : {}),
      ...(checks.length > 0 ? { readiness } : {}),
      ...(args.readyWhen ? { readyWhen: args.readyWhen } : {}),
      ...(args.readyNodes ? { readyNodes: args.readyNodes } : {}),
      ...(args.tls ? { tls: args.tls } : {}),
      ...(args.emqxVersion !== undefined ? { legacyResponseNumbering: isLegacyEnumBroker(args.emqxVersion) } : {}),
      ...(args.stateFile !== undefined ? { stateFile: args.stateFile } : {}),
    });
    // Signals are handled before the port opens and the banner is printed: whoever waits for the
    // banner may signal at once. The shutdown is bounded by --drain-timeout (src/ops/shutdown.ts).
    // Under --workers, Ctrl-C reaches the whole process group: the primary turns it into one
    // SIGTERM per worker, so a worker ignores SIGINT itself (else it would see two signals and
    // take the second as "exit now").
    installShutdown({
      closeServer: (graceMs) => server.close(graceMs),
      // What the provider module registered (the use-case stack: queued messages, the store) closes last, newest first.
      closeProvider: async () => {
        for (const close of closers.reverse()) {
          try {
            await close();
          } catch (err) {
            logger.error({ err: (err as Error).message }, "provider close failed");
          }
        }
      },
      logger,
      drainTimeoutMs: args.drainTimeoutMs ?? 10_000,
      onSigint: !cluster.isWorker,
    });
    if (clustered) {
      serveOpsToPrimary({
        registry: metrics?.registry,
        serving: () => server.state === "serving",
        loadedNodes: () => server.dispatcher.loadedNodes().map((n) => n.node),
        checks: readiness,
        provider: providerOps,
      });
    }
    const addr = await server.listen().catch((err: unknown) => {
      // The operations port binds first: no address yet means it was that one.
      throw server.opsAddress || opsPort === undefined || clustered ? err : opsListenError(err, opsHost, opsPort);
    });
    const shown = addr.address === "0.0.0.0" || addr.address === "::" ? "127.0.0.1" : addr.address;
    const url = `${args.tls ? "https" : "http"}://${shown}:${addr.port}`;
    process.stdout.write(
      `emqx-exhook: serving ${provider.name} (${provider.hooks.map((h) => h.def.name).join(", ") || "no hooks"})\n` +
        `listening on ${addr.address}:${addr.port} (${args.tls ? (args.tls.ca ? "TLS + client certificates" : "TLS") : "h2c"}, emqx.exhook.v1 + v2 + v3, ${args.transport} transport)\n` +
        (server.opsAddress
          ? opsBanner(server.opsAddress.address, server.opsAddress.port, providerOps?.paths ?? [], token !== undefined)
          : "") +
        `\n` +
        `Point EMQX at it (use this machine's address as EMQX sees it):\n${emqxConfig(url)}\n`,
    );
  } catch (err) {
    const msg =
      isExHookConfigError(err) || (err as NodeJS.ErrnoException).code ? (err as Error).message : String((err as Error).stack ?? err);
    process.stderr.write(`emqx-exhook: ${msg}\n`);
    process.exit(1);
  }
}

/**
 * `--workers N`: the primary forks N workers that each run the normal `serve` path on the same
 * port (node:cluster hands out connections round-robin, so EMQX's pool of 8 connections spreads
 * over the workers). A worker that dies after it was listening is replaced; one that dies before
 * (bad module, port in use) stops everything with exit code 1. SIGTERM or SIGINT (Ctrl-C) to the
 * primary sends each worker one SIGTERM; each worker drains, and the primary exits 0 once all have
 * exited cleanly.
 */
function runPrimary(args: CliArgs): void {
  const workers = args.workers as number;
  const drainTimeoutMs = args.drainTimeoutMs ?? 10_000;
  let stopping = false;
  let failed = false;
  const listening = new Set<number>();
  let opsStarted = false;
  let opsClose: (() => Promise<void>) | undefined;
  const fail = (message: string) => {
    process.stderr.write(`emqx-exhook: ${message}\n`);
    failed = true;
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGTERM");
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(1);
  };
  // The operations port is the primary's: it answers for every worker (ops/cluster-ops.ts). It
  // starts once the first worker listens, because only a worker has loaded the provider and knows
  // its routes.
  const startOps = async (first: Worker) => {
    const info = await workerOpsInfo(first);
    const port = args.metricsPort ?? derivedOpsPort(args.port, !!info?.http);
    if (port === undefined) return;
    const host = args.metricsHost ?? "127.0.0.1";
    const token = args.metricsTokenFile !== undefined ? readTokenFile(args.metricsTokenFile) : undefined;
    const ops = createOpsServer({
      port,
      host,
      ...(token !== undefined ? { token } : {}),
      source: clusterOpsSource({
        readyWhen: checkReadyOptions(args.readyWhen, args.readyNodes),
        readyNodes: args.readyNodes,
        info,
        metrics: true,
      }),
    });
    const addr = await ops.listen().catch((err: unknown) => {
      throw opsListenError(err, host, port);
    });
    opsClose = () => ops.close();
    process.stdout.write(`emqx-exhook: primary ${opsBanner(addr.address, addr.port, info?.paths ?? [], token !== undefined)}`);
  };
  cluster.on("listening", (worker) => {
    listening.add(worker.id);
    if (opsStarted) return;
    opsStarted = true;
    startOps(worker).catch((err: unknown) => fail((err as Error).message));
  });
  cluster.on("exit", (worker, code, signal) => {
    const wasListening = listening.delete(worker.id);
    if (!stopping && wasListening) {
      process.stderr.write(`emqx-exhook: worker ${worker.process.pid} died (${signal ?? `code ${code}`}); starting a new one\n`);
      cluster.fork();
      return;
    }
    if (code !== 0) failed = true;
    if (!stopping) {
      stopping = true;
      process.stderr.write(`emqx-exhook: worker ${worker.process.pid} exited before listening (code ${code}); stopping\n`);
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGTERM");
    }
    if (Object.keys(cluster.workers ?? {}).length === 0) {
      const exit = () => process.exit(failed ? 1 : 0);
      if (opsClose) opsClose().then(exit, exit);
      else exit();
    }
  });
  // Either signal drains every worker once, with SIGTERM (workers ignore SIGINT, which Ctrl-C
  // also delivers to them directly).
  const stop = () => {
    if (stopping) return;
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGTERM");
    // Each worker bounds its own shutdown by the drain timeout; a worker that still runs a moment
    // later is killed, and the primary exits 1.
    const deadline = setTimeout(() => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGKILL");
      process.exit(1);
    }, drainTimeoutMs + 1000);
    deadline.unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // Workers share learned state (legacy numbering, invalidations) through the primary.
  relayClusterBus();
  // Printed once the signal handlers are in place (a caller may signal as soon as it reads it).
  process.stdout.write(`emqx-exhook: primary ${process.pid} starting ${workers} workers\n`);
  for (let i = 0; i < workers; i++) cluster.fork();
}

if (require.main === module) void main();
