/**
 * The CLI: argument parsing in-process, then `emqx-exhook serve` as a real child process serving
 * the bundled example provider, called like EMQX calls it, and stopped with SIGTERM. The sources
 * are compiled with swc into a temporary directory (like the other child-process tests), not with
 * a full tsc build.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "../src/cli.js";
import { isExHookConfigError } from "../src/errors.js";
import { createEmqxLikeClient } from "../src/testing/emqx-client.js";
import { spawnCli, type CliProcess } from "./helpers/cli-process.js";
import { compileTree, ROOT } from "./helpers/compile.js";
import { decode, encode, servicePath } from "./helpers/proto.js";

// Set in beforeAll: the compiled tree.
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
    expect(parseArgs(["serve", "p.js"], {})).toMatchObject({ command: "serve", module: "p.js", port: 9000, host: "0.0.0.0", transport: "native" });
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

  test.each(["notaport", "70000", "-1", "1.5", "9000x"])("a bad --port %j is an ExHookConfigError naming --port and PORT", (bad) => {
    const err = thrown(() => parseArgs(["serve", "p.js", `--port=${bad}`], {}));
    expect(isExHookConfigError(err)).toBe(true);
    expect(err.message).toContain("--port");
    expect(err.message).toContain("PORT");
    expect(err.message).toContain(JSON.stringify(bad));
  });

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
        const broker = pkg === "v1" ? { version: "4.4.19", sysdescr: "EMQX", uptime: "1 seconds", datetime: "" } : { version: "5.8.9", sysdescr: "EMQX", uptime: 1000, datetime: "" };
        const body = encode(pkg, "ProviderLoadedRequest", { broker, meta: { node: "emqx@127.0.0.1", version: broker.version, sysdescr: "EMQX", cluster_name: "c" } });
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

  test("a module that does not exist: exit code 1 and a clear message", async () => {
    const mod = path.join(tmp, "missing.js");
    const r = await runCli(["serve", mod, "--port", "0", "--host", "127.0.0.1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`cannot load provider module ${mod}`);
  });
});
