/**
 * The options of `emqx-exhook serve <provider-module>`, parsed with the same strict parser as the
 * other commands. Each flag falls back to an environment variable where one is named; flags win.
 */
import { join, resolve } from "node:path";
import { ExHookConfigError } from "../errors.js";
import { LOG_LEVELS } from "../ops/logger.js";
import { parseCommandLine, parseInteger, stringOption, UsageError, type Command, type CommandOption } from "./command.js";

/** The options of `serve`. */
export const SERVE_OPTIONS: Readonly<Record<string, CommandOption>> = {
  port: { type: "string", value: "N", help: "TCP port (env PORT; default 9000; 0 picks a free port)" },
  host: { type: "string", value: "ADDR", help: "interface to listen on (env HOST; default 0.0.0.0)" },
  transport: { type: "string", value: "T", help: '"native" (default, fastest) or "connect" (connect-node adapter)' },
  config: {
    type: "string",
    value: "FILE",
    help: "YAML/JSON config handed to the provider module (env EXHOOK_CONFIG);\nthe file must exist",
  },
  "metrics-port": {
    type: "string",
    value: "N",
    help: "operations port: /metrics, /healthz, /readyz and the provider's routes (the use-case stack's\nread API) (env METRICS_PORT; default off, or the ExHook port + 10 for a provider with routes)",
  },
  "metrics-host": { type: "string", value: "ADDR", help: "interface of the operations port (env METRICS_HOST; default 127.0.0.1)" },
  "metrics-token-file": {
    type: "string",
    value: "FILE",
    help: 'require "Authorization: Bearer <token in FILE>" for /metrics and the provider\'s routes\n(env METRICS_TOKEN_FILE); the read API needs it when the port is not on localhost',
  },
  "ready-when": {
    type: "string",
    value: "W",
    help: '/readyz ready when "listening" (default; also: provider check such as the store) or "loaded"',
  },
  "ready-nodes": {
    type: "string",
    value: "LIST",
    help: 'EMQX node names whose OnProviderLoaded counts for "loaded", comma-separated (env READY_NODES)',
  },
  "tls-cert": { type: "string", value: "FILE", help: "serve TLS (EMQX https:// URL) with this PEM certificate (needs --tls-key)" },
  "tls-key": { type: "string", value: "FILE", help: "PEM private key of --tls-cert" },
  "tls-ca": { type: "string", value: "FILE", help: "require client certificates signed by this CA (mutual TLS)" },
  "log-level": { type: "string", value: "L", help: `${LOG_LEVELS.join("|")} (env LOG_LEVEL; default info)` },
  "drain-timeout": {
    type: "string",
    value: "MS",
    help: "on SIGTERM/SIGINT the whole shutdown takes at most this long: in-flight calls get it\nminus up to 1 s, the provider's close the rest (default 10000)",
  },
  workers: { type: "string", value: "N", help: "serve the port with N processes, e.g. one per core (node:cluster; default 1)" },
  "emqx-version": {
    type: "string",
    value: "V",
    help: "the EMQX 4.x release answered (e.g. 4.3.2): pins the v1 answer numbering (4.3.0-4.3.2\nnumber ResponsedType differently); default: learned from EMQX's OnProviderLoaded",
  },
  "heap-growth": {
    type: "string",
    value: "PCT",
    help: "let the V8 heap grow PCT percent past what the last full garbage collection kept before\nthe next (env EXHOOK_HEAP_GROWTH; default 50; 0 = V8's own choice, up to 300)",
  },
  "state-file": {
    type: "string",
    value: "FILE",
    help: "keep what was learned from EMQX across restarts (env EXHOOK_STATE_FILE; default\n$EXHOOK_DATA_DIR/exhook-state.json when EXHOOK_DATA_DIR is set)",
  },
};

/** `serve` as the help lists it (its `run` is the CLI's own: it owns the process). */
export const SERVE_COMMAND: Omit<Command, "run"> = {
  name: "serve",
  args: "<provider-module>",
  maxArgs: 1,
  summary: "serve a provider module to EMQX (h2c or TLS); prints the EMQX configuration",
  details:
    '<provider-module> is a JS module whose default export (or export "provider") is a provider from\n' +
    "defineProvider(), or a function receiving { configPath, logger, onClose } and returning one (it may\n" +
    "be async). `serve` is the default command: `emqx-exhook <provider-module>` does the same.",
  options: SERVE_OPTIONS,
};

/** The parsed command line of `serve`. */
export interface CliArgs {
  readonly command: "serve" | "help";
  readonly module?: string;
  readonly port: number;
  readonly host: string;
  readonly transport: "native" | "connect";
  /** Absolute path of `--config` (or `EXHOOK_CONFIG`); absent = none. */
  readonly configPath?: string;
  /** Operations port (`--metrics-port`); absent = off, or derived for a provider with routes. */
  readonly metricsPort?: number;
  /** Interface of the operations port (`--metrics-host`); absent = 127.0.0.1. */
  readonly metricsHost?: string;
  /** File holding the operations port's bearer token (`--metrics-token-file`). */
  readonly metricsTokenFile?: string;
  readonly readyWhen?: "loaded" | "listening";
  /** `--ready-nodes`: EMQX node names whose loads count for readiness. */
  readonly readyNodes?: readonly string[];
  readonly tls?: { readonly cert: string; readonly key: string; readonly ca?: string };
  readonly logLevel?: string;
  /** Drain bound on SIGTERM/SIGINT in ms. */
  readonly drainTimeoutMs?: number;
  /** Worker processes sharing the port (`--workers`); absent = 1, no cluster. */
  readonly workers?: number;
  /** `--emqx-version`: pins the v1 `ResponsedType` numbering; absent = learned. */
  readonly emqxVersion?: string;
  /** `--heap-growth` / EXHOOK_HEAP_GROWTH: V8 heap growing percent (src/ops/heap.ts); absent = the default. */
  readonly heapGrowthPercent?: number;
  /** Absolute path of `--state-file` / EXHOOK_STATE_FILE / $EXHOOK_DATA_DIR/exhook-state.json; absent = memory only. */
  readonly stateFile?: string;
}

/**
 * Parses the words after `serve` (the command word itself is optional) and the environment.
 * Throws an ExHookConfigError that says what to fix (the CLI prints it with exit code 2).
 */
export function parseServeArgs(argv: readonly string[], env: NodeJS.ProcessEnv): CliArgs {
  try {
    return parse(argv[0] === "serve" ? argv.slice(1) : argv, env);
  } catch (err) {
    if (err instanceof UsageError) throw new ExHookConfigError(err.message);
    throw err;
  }
}

function parse(argv: readonly string[], env: NodeJS.ProcessEnv): CliArgs {
  const { args, options: o } = parseCommandLine(argv, SERVE_OPTIONS);
  const flagOrEnv = (flag: string, envName?: string): string | undefined =>
    stringOption(o, flag) ?? (envName ? env[envName] || undefined : undefined);
  if (o["help"] === true) return { command: "help", port: 9000, host: "0.0.0.0", transport: "native" };
  if (args.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(args[1])}: serve takes one <provider-module>`);
  const module = args[0];
  if (module === undefined) throw new UsageError("missing <provider-module>");
  const portText = flagOrEnv("port", "PORT");
  const port = portText === undefined ? 9000 : parseInteger(portText, 0, 65535, "port (--port or PORT)");
  const transport = stringOption(o, "transport") ?? "native";
  if (transport !== "native" && transport !== "connect")
    throw new UsageError(`--transport must be "native" or "connect", got ${JSON.stringify(transport)}`);
  const out: { -readonly [K in keyof CliArgs]?: CliArgs[K] } = {
    command: "serve",
    module,
    port,
    host: flagOrEnv("host", "HOST") ?? "0.0.0.0",
    transport,
  };
  const config = flagOrEnv("config", "EXHOOK_CONFIG");
  if (config !== undefined) out.configPath = resolve(config);
  const metrics = flagOrEnv("metrics-port", "METRICS_PORT");
  if (metrics !== undefined) out.metricsPort = parseInteger(metrics, 0, 65535, "--metrics-port (or METRICS_PORT)");
  const metricsHost = flagOrEnv("metrics-host", "METRICS_HOST");
  if (metricsHost !== undefined) out.metricsHost = metricsHost;
  const tokenFile = flagOrEnv("metrics-token-file", "METRICS_TOKEN_FILE");
  if (tokenFile !== undefined) out.metricsTokenFile = tokenFile;
  const readyWhen = stringOption(o, "ready-when");
  if (readyWhen !== undefined) {
    if (readyWhen !== "loaded" && readyWhen !== "listening")
      throw new UsageError(`--ready-when must be "loaded" or "listening", got ${JSON.stringify(readyWhen)}`);
    out.readyWhen = readyWhen;
  }
  const readyNodes = flagOrEnv("ready-nodes", "READY_NODES");
  if (readyNodes !== undefined) {
    const nodes = readyNodes
      .split(",")
      .map((n) => n.trim())
      .filter((n) => n !== "");
    if (nodes.length === 0)
      throw new UsageError(`--ready-nodes needs at least one EMQX node name (e.g. emqx@10.0.0.1), got ${JSON.stringify(readyNodes)}`);
    out.readyNodes = nodes;
  }
  if (out.readyWhen === "loaded" && !out.readyNodes) {
    throw new UsageError(
      "--ready-when loaded needs --ready-nodes (the EMQX node names that count): anyone who reaches the ExHook port can send OnProviderLoaded",
    );
  }
  const cert = stringOption(o, "tls-cert");
  const key = stringOption(o, "tls-key");
  const ca = stringOption(o, "tls-ca");
  if ((cert === undefined) !== (key === undefined)) throw new UsageError("--tls-cert and --tls-key go together");
  if (ca !== undefined && cert === undefined) throw new UsageError("--tls-ca needs --tls-cert and --tls-key (mutual TLS is on top of TLS)");
  if (cert !== undefined && key !== undefined) out.tls = { cert, key, ...(ca !== undefined ? { ca } : {}) };
  const logLevel = flagOrEnv("log-level", "LOG_LEVEL");
  if (logLevel !== undefined) {
    if (!LOG_LEVELS.includes(logLevel))
      throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(logLevel)}`);
    out.logLevel = logLevel;
  }
  const drain = stringOption(o, "drain-timeout");
  if (drain !== undefined) out.drainTimeoutMs = parseInteger(drain, 0, 2 ** 31 - 1, "--drain-timeout (ms)");
  const workers = stringOption(o, "workers");
  if (workers !== undefined) out.workers = parseInteger(workers, 1, 256, "--workers");
  const emqxVersion = stringOption(o, "emqx-version");
  if (emqxVersion !== undefined) {
    if (!/^v?\d+\.\d+(\.\d+)?([-.][0-9A-Za-z.]+)?$/.test(emqxVersion)) {
      throw new UsageError(`--emqx-version must be an EMQX release like 4.3.2 or 4.4.19, got ${JSON.stringify(emqxVersion)}`);
    }
    out.emqxVersion = emqxVersion;
  }
  const heapGrowth = flagOrEnv("heap-growth", "EXHOOK_HEAP_GROWTH");
  if (heapGrowth !== undefined)
    out.heapGrowthPercent = parseInteger(heapGrowth, 0, 300, "--heap-growth (or EXHOOK_HEAP_GROWTH, a percent)");
  const stateFile =
    flagOrEnv("state-file", "EXHOOK_STATE_FILE") ??
    (env["EXHOOK_DATA_DIR"] ? join(env["EXHOOK_DATA_DIR"], "exhook-state.json") : undefined);
  if (stateFile !== undefined) out.stateFile = resolve(stateFile);
  return out as CliArgs;
}
