/**
 * The CLI: argument parsing in-process, then `emqx-exhook serve` as a real child process serving
 * the bundled example provider, called like EMQX calls it, and stopped with SIGTERM. The sources
 * are compiled with swc into a temporary directory (like the other child-process tests), not with
 * a full tsc build (which took 26-43 s).
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "../src/cli.js";
import { COMMANDS, commandUsage } from "../src/commands/index.js";
import { isExHookConfigError } from "../src/errors.js";
import { createEmqxLikeClient } from "../src/testing/emqx-client.js";
import { spawnCli, type CliProcess } from "./helpers/cli-process.js";
import { compileTree, ROOT } from "./helpers/compile.js";
import { decode, encode, servicePath } from "./helpers/proto.js";

// Set in beforeAll: the compiled tree (with the package's package.json, for --version).
let CLI = "";
let DEMO = "";
const CHILD_ENV = { NODE_PATH: path.join(ROOT, "node_modules") };

/** Calls `fn` and returns what it threw (fails when it does not throw). */
function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a throw");
}

describe("parseArgs", () => {
  test("defaults: port 9000 on all interfaces, native transport", () => {
    expect(parseArgs(["serve", "p.js"], {})).toMatchObject({
      command: "serve",
      module: "p.js",
      port: 9000,
      host: "0.0.0.0",
      transport: "native",
    });
  });

  test("the command word is optional", () => {
    expect(parseArgs(["p.js"], {})).toMatchObject({ command: "serve", module: "p.js", port: 9000 });
  });

  test("PORT and HOST from the environment", () => {
    expect(parseArgs(["serve", "p.js"], { PORT: "9100", HOST: "10.0.0.1" })).toMatchObject({ port: 9100, host: "10.0.0.1" });
  });

  test("flags override the environment (separate and inline values)", () => {
    const env = { PORT: "9100", HOST: "10.0.0.1" };
    expect(parseArgs(["serve", "p.js", "--port", "9200", "--host", "127.0.0.1"], env)).toMatchObject({ port: 9200, host: "127.0.0.1" });
    expect(parseArgs(["serve", "--port=0", "--host=::1", "p.js"], env)).toMatchObject({ port: 0, host: "::1", module: "p.js" });
  });

  test("--transport connect", () => {
    expect(parseArgs(["serve", "p.js", "--transport", "connect"], {})).toMatchObject({ transport: "connect" });
  });

  test.each(["notaport", "70000", "-1", "1.5", "9000x", "0x238E", "1e3", "+9000", " 9000", ""])(
    "a bad --port %j is an ExHookConfigError naming --port and PORT",
    (bad) => {
      const err = thrown(() => parseArgs(["serve", "p.js", `--port=${bad}`], {}));
      expect(isExHookConfigError(err)).toBe(true);
      expect(err.message).toContain("--port");
      expect(err.message).toContain("PORT");
      expect(err.message).toContain(JSON.stringify(bad));
    },
  );

  test("a bad PORT from the environment is refused the same way", () => {
    const err = thrown(() => parseArgs(["serve", "p.js"], { PORT: "notaport" }));
    expect(isExHookConfigError(err)).toBe(true);
    expect(err.message).toContain("PORT");
    expect(err.message).toContain('"notaport"');
  });

  test("an unknown option is refused and named", () => {
    const err = thrown(() => parseArgs(["serve", "p.js", "--bogus"], {}));
    expect(isExHookConfigError(err)).toBe(true);
    expect(err.message).toMatch(/^unknown option --bogus/);
  });

  test("a flag without its value is refused", () => {
    const err = thrown(() => parseArgs(["serve", "p.js", "--port"], {}));
    expect(isExHookConfigError(err)).toBe(true);
    expect(err.message).toBe("--port needs a value");
  });

  test("a missing module is refused", () => {
    const err = thrown(() => parseArgs(["serve"], {}));
    expect(isExHookConfigError(err)).toBe(true);
    expect(err.message).toMatch(/^missing <provider-module>/);
  });

  test("--config (or EXHOOK_CONFIG) is resolved to an absolute path for the provider module", () => {
    expect(parseArgs(["serve", "p.js", "--config", "conf/x.yaml"], {}).configPath).toBe(path.resolve("conf/x.yaml"));
    expect(parseArgs(["serve", "p.js"], { EXHOOK_CONFIG: "/etc/exhook.yaml" }).configPath).toBe("/etc/exhook.yaml");
    expect(parseArgs(["serve", "p.js"], {}).configPath).toBeUndefined();
  });

  test("strict numbers for every numeric flag and variable", () => {
    expect(thrown(() => parseArgs(["serve", "p.js"], { METRICS_PORT: "0x10" })).message).toBe(
      '--metrics-port (or METRICS_PORT) must be an integer from 0 to 65535, got "0x10"',
    );
    expect(thrown(() => parseArgs(["serve", "p.js", "--workers", "2.0"], {})).message).toBe(
      '--workers must be an integer from 1 to 256, got "2.0"',
    );
    expect(thrown(() => parseArgs(["serve", "p.js", "--drain-timeout", "1e4"], {})).message).toBe(
      '--drain-timeout (ms) must be an integer from 0 to 2147483647, got "1e4"',
    );
    expect(parseArgs(["serve", "p.js", "--workers=2", "--drain-timeout=0", "--metrics-port", "9100"], {})).toMatchObject({
      workers: 2,
      drainTimeoutMs: 0,
      metricsPort: 9100,
    });
    expect(parseArgs(["serve", "p.js", "--heap-growth", "100"], { EXHOOK_HEAP_GROWTH: "20" }).heapGrowthPercent).toBe(100);
    expect(parseArgs(["serve", "p.js"], { EXHOOK_HEAP_GROWTH: "0" }).heapGrowthPercent).toBe(0);
    expect(parseArgs(["serve", "p.js"], {}).heapGrowthPercent).toBeUndefined();
    expect(thrown(() => parseArgs(["serve", "p.js", "--heap-growth", "400"], {})).message).toBe(
      '--heap-growth (or EXHOOK_HEAP_GROWTH, a percent) must be an integer from 0 to 300, got "400"',
    );
  });

  test("--emqx-version pins the numbering; a value that is no release is refused", () => {
    expect(parseArgs(["serve", "p.js", "--emqx-version", "4.3.2"], {})).toMatchObject({ emqxVersion: "4.3.2" });
    expect(parseArgs(["serve", "p.js"], {}).emqxVersion).toBeUndefined();
    const err = thrown(() => parseArgs(["serve", "p.js", "--emqx-version", "latest"], {}));
    expect(isExHookConfigError(err)).toBe(true);
    expect(err.message).toBe('--emqx-version must be an EMQX release like 4.3.2 or 4.4.19, got "latest"');
  });

  test("--state-file, else EXHOOK_STATE_FILE, else $EXHOOK_DATA_DIR/exhook-state.json, else none", () => {
    expect(parseArgs(["serve", "p.js"], {}).stateFile).toBeUndefined();
    expect(parseArgs(["serve", "p.js"], { EXHOOK_DATA_DIR: "/var/lib/exhook" }).stateFile).toBe("/var/lib/exhook/exhook-state.json");
    expect(parseArgs(["serve", "p.js"], { EXHOOK_DATA_DIR: "/d", EXHOOK_STATE_FILE: "/s.json" }).stateFile).toBe("/s.json");
    expect(parseArgs(["serve", "p.js", "--state-file", "/x.json"], { EXHOOK_STATE_FILE: "/s.json" }).stateFile).toBe("/x.json");
  });

  test("a bad transport is refused", () => {
    const err = thrown(() => parseArgs(["serve", "p.js", "--transport", "carrier-pigeon"], {}));
    expect(isExHookConfigError(err)).toBe(true);
    expect(err.message).toContain('"carrier-pigeon"');
  });
});

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI to completion (for the failure cases). */
async function runCli(args: string[], env: Record<string, string> = {}): Promise<Exit> {
  const cli = spawnCli([CLI, ...args], { env: { ...process.env, ...CHILD_ENV, ...env } });
  const { code, signal } = await cli.exit;
  return { code, signal, stdout: cli.stdout(), stderr: cli.stderr() };
}

describe("the CLI as a child process (node <compiled>/src/cli.js)", () => {
  let tmp: string;

  beforeAll(() => {
    tmp = mkdtempSync(path.join(tmpdir(), "exhook-cli-"));
    for (const dir of ["src", "gen", "examples"]) compileTree(dir, tmp);
    copyFileSync(path.join(ROOT, "package.json"), path.join(tmp, "package.json"));
    CLI = path.join(tmp, "src", "cli.js");
    DEMO = path.join(tmp, "examples", "demo-provider.js");
  });

  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  describe("serving the demo provider", () => {
    let cli: CliProcess;
    let port: number;
    let host = "";

    beforeAll(async () => {
      cli = spawnCli([CLI, "serve", DEMO, "--port", "0", "--host", "127.0.0.1"], {
        cwd: ROOT,
        env: { ...process.env, ...CHILD_ENV, PORT: "1", HOST: "0.0.0.0" }, // the flags must win over these
      });
      const [m] = await cli.waitFor(/listening on ([^\s]+):(\d+)/g);
      host = m?.[1] as string;
      port = Number(m?.[2]);
    }, 20_000);

    afterAll(() => cli?.kill());

    test("it listens on a real port and prints the EMQX configuration", () => {
      expect(host).toBe("127.0.0.1");
      expect(port).toBeGreaterThan(0);
      expect(cli.stdout()).toContain(`url = "http://127.0.0.1:${port}"`);
      expect(cli.stdout()).toContain(`exhook.server.exhook_ts.url = http://127.0.0.1:${port}`);
    });

    test.each([
      ["v3", "client.authorize"],
      ["v2", "client.authorize"],
      ["v1", "client.check_acl"],
    ] as const)("OnProviderLoaded (%s) announces exactly the demo's hooks", async (pkg, authorize) => {
      const client = createEmqxLikeClient(`http://127.0.0.1:${port}`, 1);
      try {
        const broker =
          pkg === "v1"
            ? { version: "4.4.19", sysdescr: "EMQX", uptime: "1 seconds", datetime: "" }
            : { version: "5.8.9", sysdescr: "EMQX", uptime: 1000, datetime: "" };
        const body = encode(pkg, "ProviderLoadedRequest", {
          broker,
          meta: { node: "emqx@127.0.0.1", version: broker.version, sysdescr: "EMQX", cluster_name: "c" },
        });
        const reply = await client.call(servicePath(pkg, "OnProviderLoaded"), body);
        expect(reply.grpcStatus).toBe(0);
        expect(reply.messages).toHaveLength(1);
        expect(decode(pkg, "LoadedResponse", reply.messages[0] as Uint8Array)).toEqual({
          hooks: [
            { name: "client.connected", topics: [] },
            { name: "client.disconnected", topics: [] },
            { name: "client.authenticate", topics: [] },
            { name: authorize, topics: [] },
            { name: "message.publish", topics: ["legacy/#", "chat/#", "blocked/#"] },
          ],
        });
      } finally {
        await client.close();
      }
    });

    test("SIGTERM closes it with exit code 0", async () => {
      cli.child.kill("SIGTERM");
      await expect(cli.exit).resolves.toEqual({ code: 0, signal: null });
    });
  });

  test("PORT=notaport: exit code 2 and a message naming PORT", async () => {
    const r = await runCli(["serve", DEMO], { PORT: "notaport" });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("PORT");
    expect(r.stderr).toContain('"notaport"');
    expect(r.stdout).not.toContain("listening on");
  });

  test("a module without a provider: exit code 1 and a clear message", async () => {
    const mod = path.join(tmp, "not-a-provider.js");
    writeFileSync(mod, "module.exports = { hello: 'world' };\n");
    const r = await runCli(["serve", mod, "--port", "0", "--host", "127.0.0.1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${mod} must export a provider from defineProvider()`);
    expect(r.stdout).not.toContain("listening on");
  });

  test("--help lists every command; --version prints the version; <command> --help and help <command> show its options", async () => {
    const help = await runCli(["--help"]);
    expect(help.code).toBe(0);
    for (const c of ["serve <provider-module>", ...COMMANDS.map((x) => x.name)]) expect(help.stdout).toContain(`  ${c}`);
    expect(help.stdout).toContain("-v, --version");
    const version = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")).version as string;
    expect(await runCli(["--version"])).toMatchObject({ code: 0, stdout: `${version}\n` });
    const usersAdd = await runCli(["users", "add", "--help"]);
    expect(usersAdd).toMatchObject({ code: 0, stdout: commandUsage("users add") });
    expect(usersAdd.stdout).toContain("--password-stdin");
    expect(await runCli(["help", "users", "add"])).toMatchObject({ code: 0, stdout: commandUsage("users add") });
    const users = await runCli(["users", "--help"]);
    expect(users.code).toBe(0);
    expect(users.stdout).toContain("users remove <name>");
    const serve = await runCli(["serve", "--help"]);
    expect(serve.code).toBe(0);
    for (const flag of [
      "--port N",
      "--host ADDR",
      "--transport T",
      "--config FILE",
      "--metrics-port N",
      "--ready-when W",
      "--tls-cert FILE",
      "--tls-key FILE",
      "--tls-ca FILE",
      "--log-level L",
      "--drain-timeout MS",
      "--workers N",
      "--heap-growth PCT",
    ]) {
      expect(serve.stdout).toContain(flag);
    }
    const none = await runCli([]);
    expect([none.code, none.stderr.startsWith("usage: emqx-exhook <command>")]).toEqual([2, true]);
    expect(await runCli(["serv"])).toMatchObject({ code: 2, stderr: 'emqx-exhook: unknown command "serv"; see emqx-exhook --help\n' });
    expect((await runCli(["users", "lst"])).code).toBe(2);
  });

  test("--port 0x238E is refused before anything starts", async () => {
    const r = await runCli(["serve", DEMO, "--port", "0x238E"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('port (--port or PORT) must be an integer from 0 to 65535, got "0x238E"');
  });

  test("a --config file that does not exist is an error, and so is a config the provider module cannot read", async () => {
    const missing = path.join(tmp, "missing.yaml");
    const r = await runCli(["serve", DEMO, "--port", "0", "--config", missing]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`emqx-exhook: config file ${missing} does not exist (from --config)\n`);
    const fromEnv = await runCli(["serve", DEMO, "--port", "0"], { EXHOOK_CONFIG: missing });
    expect([fromEnv.code, fromEnv.stderr]).toEqual([2, `emqx-exhook: config file ${missing} does not exist (from EXHOOK_CONFIG)\n`]);
    const cfg = path.join(tmp, "exhook.yaml");
    writeFileSync(cfg, "dataDir: ./data\n");
    const plain = await runCli(["serve", DEMO, "--port", "0", "--host", "127.0.0.1", "--config", cfg]);
    expect(plain.code).toBe(1);
    expect(plain.stderr).toContain(`exports a provider, not a function receiving { configPath }: it cannot read ${cfg}`);
    expect(plain.stdout).not.toContain("listening on");
  });

  test("a provider module's function gets { configPath, logger, onClose }; what it registers runs after the drain, newest first", async () => {
    const cfg = path.join(tmp, "mine.yaml");
    writeFileSync(cfg, "x: 1\n");
    const mod = path.join(tmp, "setup-provider.js");
    writeFileSync(
      mod,
      `const { defineProvider } = require(${JSON.stringify(path.join(tmp, "src", "index.js"))});\n` +
        `module.exports = async ({ configPath, logger, onClose }) => {\n` +
        `  logger.info({ configPath }, "setup seen");\n` +
        `  onClose(() => process.stdout.write("closed first registered\\n"));\n` +
        `  onClose(async () => { await new Promise((r) => setTimeout(r, 20)); process.stdout.write("closed last registered\\n"); });\n` +
        `  return defineProvider({ onClientConnected: () => undefined });\n` +
        `};\n`,
    );
    const cli = spawnCli([CLI, "serve", mod, "--port", "0", "--host", "127.0.0.1", "--config", cfg], {
      env: { ...process.env, ...CHILD_ENV },
    });
    try {
      await cli.waitFor(/listening on/g);
      const line = cli
        .stdout()
        .split("\n")
        .find((l) => l.includes("setup seen")) as string;
      expect(JSON.parse(line)).toMatchObject({ configPath: cfg, msg: "setup seen", level: 30 });
      cli.child.kill("SIGTERM");
      await expect(cli.exit).resolves.toEqual({ code: 0, signal: null });
      const out = cli.stdout();
      expect(out.indexOf("closed last registered")).toBeGreaterThan(0);
      expect(out.indexOf("closed first registered")).toBeGreaterThan(out.indexOf("closed last registered"));
      expect(out.indexOf("drained, exiting")).toBeGreaterThan(out.indexOf("closed first registered"));
    } finally {
      cli.kill();
    }
  });

  test("management commands refuse to create a store where none exists (no ./data appears); --create creates it", async () => {
    const cwd = mkdtempSync(path.join(tmp, "elsewhere-"));
    const env = { ...process.env, ...CHILD_ENV, EXHOOK_DATA_DIR: "", EXHOOK_CONFIG: "", EXHOOK_DB_URL: "" };
    const list = spawnCli([CLI, "users", "list"], { cwd, env });
    expect(await list.exit).toEqual({ code: 1, signal: null });
    expect(list.stderr()).toContain(`no store at ${path.join(cwd, "data", "exhook.db")}`);
    expect(existsSync(path.join(cwd, "data"))).toBe(false);
    const created = spawnCli([CLI, "users", "list", "--create"], { cwd, env });
    expect(await created.exit).toEqual({ code: 0, signal: null });
    expect(created.stderr()).toBe("no users\n");
    expect(existsSync(path.join(cwd, "data", "exhook.db"))).toBe(true);
  });

  test("a module that does not exist: exit code 1 and a clear message", async () => {
    const mod = path.join(tmp, "missing.js");
    const r = await runCli(["serve", mod, "--port", "0", "--host", "127.0.0.1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot load provider module ${mod}`);
  });
});
