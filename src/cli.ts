#!/usr/bin/env node
/**
 * `emqx-exhook serve <provider-module>`: serves a provider module on h2c and prints the EMQX
 * configuration to paste. Port/host: `--port`/`--host` flags, else `PORT`/`HOST`, else 9000 on
 * all interfaces.
 */
import cluster from "node:cluster";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ExHookConfigError, isExHookConfigError } from "./errors.js";
import type { Provider } from "./provider.js";
import { createExHookServer } from "./server.js";
import { readProcessStdin, runCommand, SUBCOMMANDS } from "./commands/index.js";
import type { Registry } from "prom-client";
import type { ReadinessCheck } from "./ops/http-probes.js";
import { createLogger, LOG_LEVELS } from "./ops/logger.js";
import { createMetrics } from "./ops/metrics.js";
import { relayClusterBus } from "./ops/cluster-bus.js";

const USAGE = `usage: emqx-exhook serve <provider-module> [--port N] [--host ADDR] [--transport native|connect]

  <provider-module>  a JS module whose default export (or export "provider") is a provider from
                     defineProvider(), or a function returning one (it may be async)
  --port N           TCP port (env PORT; default 9000; 0 picks a free port)
  --host ADDR        interface to listen on (env HOST; default 0.0.0.0)
  --transport T      "native" (default, fastest) or "connect" (connect-node adapter)
  --config FILE      YAML/JSON config for the use-case stack (examples/stack-provider; env EXHOOK_CONFIG)
  --metrics-port N   serve /metrics, /healthz, /readyz on this port (env METRICS_PORT; default off)
  --ready-when W     /readyz ready when "loaded" (default: after an EMQX OnProviderLoaded) or "listening"
  --tls-cert FILE    serve TLS (EMQX https:// URL) with this PEM certificate (needs --tls-key)
  --tls-key FILE     PEM private key of --tls-cert
  --tls-ca FILE      require client certificates signed by this CA (mutual TLS)
  --log-level L      fatal|error|warn|info|debug|trace|silent (env LOG_LEVEL; default info)
  --drain-timeout MS on SIGTERM/SIGINT, wait this long for in-flight calls (default 10000)
  --workers N        serve the port with N processes, e.g. one per core (node:cluster; default 1)
`;

/** Parsed command line. */
export interface CliArgs {
  readonly command: "serve" | "help";
  readonly module?: string;
  readonly port: number;
  readonly host: string;
  readonly transport: "native" | "connect";
  /** Operations port (`--metrics-port`); absent = off. */
  readonly metricsPort?: number;
  readonly readyWhen?: "loaded" | "listening";
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca?: string };
  readonly logLevel?: string;
  /** Drain bound on SIGTERM/SIGINT in ms. */
  readonly drainTimeoutMs?: number;
  /** Worker processes sharing the port (`--workers`); absent = 1, no cluster. */
  readonly workers?: number;
}

/** Parses argv (without node and script) and env; throws ExHookConfigError with what to fix. */
export function parseArgs(argv: readonly string[], env: NodeJS.ProcessEnv): CliArgs {
  const rest = [...argv];
  let command: CliArgs["command"] = "serve";
  if (rest[0] === "serve") rest.shift();
  else if (rest[0] === "help" || rest[0] === "--help" || rest[0] === "-h") command = "help";
  let module: string | undefined;
  let port: string | undefined = env["PORT"];
  let host: string | undefined = env["HOST"];
  let transport = "native";
  let workers: string | undefined;
  const ops: { metricsPort?: string | undefined; readyWhen?: string; tlsCert?: string; tlsKey?: string; tlsCa?: string; logLevel?: string | undefined; drain?: string } = {
    metricsPort: env["METRICS_PORT"] || undefined,
    logLevel: env["LOG_LEVEL"] || undefined,
  };
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i] as string;
    const [flag, inline] = arg.startsWith("--") && arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined];
    const value = (): string => {
      const v = inline ?? rest[++i];
      if (v === undefined) throw new ExHookConfigError(`${flag} needs a value`);
      return v;
    };
    if (flag === "--port") port = value();
    else if (flag === "--host") host = value();
    else if (flag === "--transport") transport = value();
    else if (flag === "--metrics-port") ops.metricsPort = value();
    else if (flag === "--ready-when") ops.readyWhen = value();
    else if (flag === "--tls-cert") ops.tlsCert = value();
    else if (flag === "--tls-key") ops.tlsKey = value();
    else if (flag === "--tls-ca") ops.tlsCa = value();
    else if (flag === "--log-level") ops.logLevel = value();
    else if (flag === "--drain-timeout") ops.drain = value();
    else if (flag === "--workers") workers = value();
    else if (flag === "--help" || flag === "-h") command = "help";
    else if (flag.startsWith("-")) throw new ExHookConfigError(`unknown option ${flag}\n\n${USAGE}`);
    else if (module === undefined) module = arg;
    else throw new ExHookConfigError(`unexpected argument ${JSON.stringify(arg)}\n\n${USAGE}`);
  }
  const portNum = port === undefined || port === "" ? 9000 : Number(port);
  if (!Number.isInteger(portNum) || portNum < 0 || portNum > 65535) {
    throw new ExHookConfigError(`port must be an integer from 0 to 65535 (--port or PORT), got ${JSON.stringify(port)}`);
  }
  if (transport !== "native" && transport !== "connect") {
    throw new ExHookConfigError(`--transport must be "native" or "connect", got ${JSON.stringify(transport)}`);
  }
  if (command === "serve" && module === undefined) throw new ExHookConfigError(`missing <provider-module>\n\n${USAGE}`);
  const workerCount = workers === undefined ? undefined : Number(workers);
  if (workerCount !== undefined && (workers === "" || !Number.isInteger(workerCount) || workerCount < 1 || workerCount > 256)) {
    throw new ExHookConfigError(`--workers must be an integer from 1 to 256, got ${JSON.stringify(workers)}`);
  }
  return { command, ...(module !== undefined ? { module } : {}), port: portNum, host: host || "0.0.0.0", transport, ...parseOpsArgs(ops), ...(workerCount !== undefined ? { workers: workerCount } : {}) };
}

/** Validates the operations flags (metrics port, TLS files, log level, drain bound). */
function parseOpsArgs(o: { metricsPort?: string | undefined; readyWhen?: string; tlsCert?: string; tlsKey?: string; tlsCa?: string; logLevel?: string | undefined; drain?: string }): Partial<CliArgs> {
  const out: { -readonly [K in keyof CliArgs]?: CliArgs[K] } = {};
  if (o.metricsPort !== undefined) {
    const n = Number(o.metricsPort);
    if (o.metricsPort === "" || !Number.isInteger(n) || n < 0 || n > 65535) throw new ExHookConfigError(`--metrics-port must be an integer from 0 to 65535, got ${JSON.stringify(o.metricsPort)}`);
    out.metricsPort = n;
  }
  if (o.readyWhen !== undefined) {
    if (o.readyWhen !== "loaded" && o.readyWhen !== "listening") throw new ExHookConfigError(`--ready-when must be "loaded" or "listening", got ${JSON.stringify(o.readyWhen)}`);
    out.readyWhen = o.readyWhen;
  }
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw new ExHookConfigError("--tls-cert and --tls-key go together");
  if (o.tlsCa !== undefined && o.tlsCert === undefined) throw new ExHookConfigError("--tls-ca needs --tls-cert and --tls-key (mutual TLS is on top of TLS)");
  if (o.tlsCert !== undefined && o.tlsKey !== undefined) out.tls = { cert: o.tlsCert, key: o.tlsKey, ...(o.tlsCa !== undefined ? { ca: o.tlsCa } : {}) };
  if (o.logLevel !== undefined) {
    if (!LOG_LEVELS.includes(o.logLevel)) throw new ExHookConfigError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(o.logLevel)}`);
    out.logLevel = o.logLevel;
  }
  if (o.drain !== undefined) {
    const n = Number(o.drain);
    if (o.drain === "" || !Number.isInteger(n) || n < 0) throw new ExHookConfigError(`--drain-timeout must be a non-negative integer of milliseconds, got ${JSON.stringify(o.drain)}`);
    out.drainTimeoutMs = n;
  }
  return out;
}

/** Imports a provider module and returns its provider. */
export async function loadProvider(modulePath: string): Promise<Provider> {
  const url = pathToFileURL(resolve(modulePath)).href;
  let ns: Record<string, unknown>;
  try {
    ns = (await import(url)) as Record<string, unknown>;
  } catch (err) {
    if (isExHookConfigError(err)) throw err;
    throw new ExHookConfigError(`cannot load provider module ${modulePath}: ${(err as Error).message}`);
  }
  // A CommonJS module compiled from `export default` arrives as { default: { __esModule, default } }.
  const inner = ns["default"] as Record<string, unknown> | undefined;
  const mod = inner && typeof inner === "object" && "__esModule" in inner ? inner : ns;
  let candidate = mod["default"] ?? mod["provider"];
  if (typeof candidate === "function") candidate = await (candidate as () => unknown)();
  if (!candidate || typeof (candidate as Provider).hookSpecs !== "function") {
    throw new ExHookConfigError(`${modulePath} must export a provider from defineProvider() as default export or as "provider"`);
  }
  return candidate as Provider;
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
  // Use-case subcommands (users, messages, presence) live in src/commands.
  if (SUBCOMMANDS.includes(process.argv[2] ?? "")) {
    const io = { stdout: (t: string) => process.stdout.write(t), stderr: (t: string) => process.stderr.write(t), readStdin: readProcessStdin, env: process.env };
    process.exitCode = await runCommand(process.argv.slice(2), io);
    return;
  }
  // `--config FILE` is read by the provider module (the use-case stack) through EXHOOK_CONFIG.
  const argv = process.argv.slice(2);
  const ci = argv.findIndex((a) => a === "--config" || a.startsWith("--config="));
  if (ci >= 0) {
    const a = argv[ci] as string;
    const file = a.includes("=") ? a.slice(a.indexOf("=") + 1) : argv[ci + 1];
    argv.splice(ci, a.includes("=") ? 1 : 2);
    if (!file) {
      process.stderr.write("emqx-exhook: --config needs a value\n");
      process.exit(2);
    }
    process.env["EXHOOK_CONFIG"] = resolve(file);
  }
  let args: CliArgs;
  try {
    args = parseArgs(argv, process.env);
  } catch (err) {
    process.stderr.write(`emqx-exhook: ${(err as Error).message}\n`);
    process.exit(2);
  }
  if (args.command === "help") {
    process.stdout.write(USAGE);
    return;
  }
  if ((args.workers ?? 1) > 1 && cluster.isPrimary) {
    runPrimary(args.workers as number);
    return;
  }
  try {
    const provider = await loadProvider(args.module as string);
    const logger = createLogger({ level: args.logLevel ?? "info" });
    // A provider owning metrics or readiness checks (the use-case stack with the bridge on) adds them to the ops port.
    const extras = provider as { metricsRegistry?: Registry; readiness?: () => ReadinessCheck[] };
    const server = createExHookServer({
      provider,
      port: args.port,
      host: args.host,
      transport: args.transport,
      logger,
      ...(args.metricsPort !== undefined ? { metricsPort: args.metricsPort } : {}),
      ...(args.metricsPort !== undefined && extras.metricsRegistry ? { metrics: createMetrics({ registry: extras.metricsRegistry }) } : {}),
      ...(extras.readiness ? { readiness: () => (extras.readiness as () => ReadinessCheck[])() } : {}),
      ...(args.readyWhen ? { readyWhen: args.readyWhen } : {}),
      ...(args.tls ? { tls: args.tls } : {}),
    });
    const addr = await server.listen();
    const shown = addr.address === "0.0.0.0" || addr.address === "::" ? "127.0.0.1" : addr.address;
    const url = `${args.tls ? "https" : "http"}://${shown}:${addr.port}`;
    process.stdout.write(
      `emqx-exhook: serving ${provider.name} (${provider.hooks.map((h) => h.def.name).join(", ") || "no hooks"})\n` +
        `listening on ${addr.address}:${addr.port} (${args.tls ? (args.tls.ca ? "TLS + client certificates" : "TLS") : "h2c"}, emqx.exhook.v1 + v2 + v3, ${args.transport} transport)\n` +
        (server.opsAddress ? `metrics and probes on http://${shown}:${server.opsAddress.port}/metrics, /healthz, /readyz\n` : "") +
        `\n` +
        `Point EMQX at it (use this machine's address as EMQX sees it):\n${emqxConfig(url)}\n`,
    );
    let stopping = false;
    const stop = (signal: string) => {
      // A second signal while draining means "now".
      if (stopping) process.exit(1);
      stopping = true;
      const drainTimeoutMs = args.drainTimeoutMs ?? 10_000;
      logger.info({ signal, drainTimeoutMs }, "draining: no new connections, finishing in-flight calls");
      server.close(drainTimeoutMs).then(
        async () => {
          // Providers owning resources (the use-case stack: queued messages, the store) close last.
          await (provider as { close?: () => Promise<void> }).close?.().catch((err: unknown) => logger.error({ err: (err as Error).message }, "provider close failed"));
          logger.info({ signal }, "drained, exiting");
          process.exit(0);
        },
        () => process.exit(1),
      );
    };
    // Under --workers, Ctrl-C reaches the whole process group: the primary turns it into one
    // SIGTERM per worker, so a worker ignores SIGINT itself (else it would see two signals and
    // take the second as "exit now").
    process.on("SIGINT", () => (cluster.isWorker ? undefined : stop("SIGINT")));
    process.on("SIGTERM", () => stop("SIGTERM"));
  } catch (err) {
    const msg = isExHookConfigError(err) || (err as NodeJS.ErrnoException).code ? (err as Error).message : String((err as Error).stack ?? err);
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
function runPrimary(workers: number): void {
  let stopping = false;
  let failed = false;
  const listening = new Set<number>();
  process.stdout.write(`emqx-exhook: primary ${process.pid} starting ${workers} workers\n`);
  cluster.on("listening", (worker) => listening.add(worker.id));
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
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(failed ? 1 : 0);
  });
  // Either signal drains every worker once, with SIGTERM (workers ignore SIGINT, which Ctrl-C
  // also delivers to them directly).
  const stop = () => {
    if (stopping) return;
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill("SIGTERM");
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // Workers share learned state (legacy numbering, invalidations) through the primary.
  relayClusterBus();
  for (let i = 0; i < workers; i++) cluster.fork();
}

if (require.main === module) void main();
