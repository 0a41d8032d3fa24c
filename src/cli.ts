#!/usr/bin/env node
/**
 * `emqx-exhook serve <provider-module>`: serves a provider module on h2c and prints the EMQX
 * configuration to paste. Port/host: `--port`/`--host` flags, else `PORT`/`HOST`, else 9000 on
 * all interfaces.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ExHookConfigError, isExHookConfigError } from "./errors.js";
import type { Provider } from "./provider.js";
import { createExHookServer } from "./server.js";

const USAGE = `usage: emqx-exhook serve <provider-module> [--port N] [--host ADDR] [--transport native|connect]

  <provider-module>  a JS module whose default export (or export "provider") is a provider from
                     defineProvider(), or a function returning one (it may be async)
  --port N           TCP port (env PORT; default 9000; 0 picks a free port)
  --host ADDR        interface to listen on (env HOST; default 0.0.0.0)
  --transport T      "native" (default, fastest) or "connect" (connect-node adapter)
`;

/** Parsed command line. */
export interface CliArgs {
  readonly command: "serve" | "help";
  readonly module?: string;
  readonly port: number;
  readonly host: string;
  readonly transport: "native" | "connect";
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
  return { command, ...(module !== undefined ? { module } : {}), port: portNum, host: host || "0.0.0.0", transport };
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
  let args: CliArgs;
  try {
    args = parseArgs(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(`emqx-exhook: ${(err as Error).message}\n`);
    process.exit(2);
  }
  if (args.command === "help") {
    process.stdout.write(USAGE);
    return;
  }
  try {
    const provider = await loadProvider(args.module as string);
    const server = createExHookServer({ provider, port: args.port, host: args.host, transport: args.transport });
    const addr = await server.listen();
    const shown = addr.address === "0.0.0.0" || addr.address === "::" ? "127.0.0.1" : addr.address;
    const url = `http://${shown}:${addr.port}`;
    process.stdout.write(
      `emqx-exhook: serving ${provider.name} (${provider.hooks.map((h) => h.def.name).join(", ") || "no hooks"})\n` +
        `listening on ${addr.address}:${addr.port} (h2c, emqx.exhook.v1 + v2 + v3, ${args.transport} transport)\n\n` +
        `Point EMQX at it (use this machine's address as EMQX sees it):\n${emqxConfig(url)}\n`,
    );
    const stop = (signal: string) => {
      process.stdout.write(`emqx-exhook: ${signal}, closing\n`);
      server.close().then(() => process.exit(0), () => process.exit(1));
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  } catch (err) {
    const msg = isExHookConfigError(err) || (err as NodeJS.ErrnoException).code ? (err as Error).message : String((err as Error).stack ?? err);
    process.stderr.write(`emqx-exhook: ${msg}\n`);
    process.exit(1);
  }
}

if (require.main === module) void main();
