/**
 * Shutdown never hangs (issue 11, part 8): `emqx-exhook serve` as a real child process gets SIGTERM
 * (or SIGINT) and must be gone within its --drain-timeout, also with stdout a closed pipe
 * (`serve … | head -1`), a provider whose close() never returns, and calls still in flight.
 */
import * as path from "node:path";
import { spawnCli, type CliProcess } from "./helpers/cli-process.js";
import { ROOT } from "./helpers/compile.js";
import { createEmqxLikeClient } from "../src/testing/emqx-client.js";
import { encode, servicePath } from "./helpers/proto.js";
import { compiledTree, type CompiledTree } from "./helpers/server-child.js";

let tree: CompiledTree;
beforeAll(() => {
  tree = compiledTree("exhook-shutdown-");
  tree.write(
    "quick.js",
    `const { defineProvider, allow } = require("./src/index.js");\nmodule.exports = defineProvider({ onClientAuthenticate: () => allow() });\n`,
  );
  // What it registers to close never settles: only the hard deadline ends the process.
  tree.write(
    "stuck-close.js",
    `const { defineProvider, allow } = require("./src/index.js");\n` +
      `module.exports = ({ onClose }) => {\n` +
      `  onClose(() => new Promise(() => {}));\n` +
      `  return defineProvider({ onClientAuthenticate: () => allow() });\n` +
      `};\n`,
  );
  // Handlers that never answer (with a 60 s budget): calls are still in flight at the drain's end.
  tree.write(
    "hanging.js",
    `const { defineProvider } = require("./src/index.js");\n` +
      `module.exports = defineProvider({ onClientAuthenticate: () => (process.stdout.write("handler started\\n"), new Promise(() => {})) }, { timeoutMs: 60000 });\n`,
  );
});
afterAll(() => tree?.cleanup());

function serve(provider: string, drainTimeoutMs: number, extra: string[] = []): CliProcess {
  return spawnCli(
    [
      path.join(tree.dir, "src", "cli.js"),
      "serve",
      path.join(tree.dir, provider),
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--drain-timeout",
      String(drainTimeoutMs),
      ...extra,
    ],
    {
      cwd: tree.dir,
      // info level: draining writes log lines, which is what hits the closed pipe.
      env: { ...process.env, NODE_PATH: path.join(ROOT, "node_modules"), LOG_LEVEL: "info" },
    },
  );
}

/** Sends `signal` and resolves with the exit and the time it took (ms). */
async function stopWith(
  cli: CliProcess,
  signal: NodeJS.Signals,
  guardMs: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const start = performance.now();
  cli.child.kill(signal);
  const exit = await cli.exited(guardMs);
  return { ...exit, ms: performance.now() - start };
}

// The process must end within its drain timeout; this much more is allowed for the parent to see
// it on a busy machine (process exit, pipes closing, the test's own event loop).
const SLACK_MS = 2000;

test("stdout a closed pipe (serve … | head -1): SIGTERM ends the process within the drain timeout, exit code 0", async () => {
  const cli = serve("quick.js", 3000);
  try {
    await cli.waitFor(/listening on/g);
    // Like `head -1`: the reader takes what it wanted and closes the pipe.
    cli.child.stdout?.destroy();
    const r = await stopWith(cli, "SIGTERM", 3000 + 10_000);
    expect({ code: r.code, signal: r.signal, withinDrain: r.ms < 3000 + SLACK_MS }).toEqual({ code: 0, signal: null, withinDrain: true });
  } finally {
    cli.kill();
  }
}, 30_000);

test("the same with SIGINT", async () => {
  const cli = serve("quick.js", 3000);
  try {
    await cli.waitFor(/listening on/g);
    cli.child.stdout?.destroy();
    const r = await stopWith(cli, "SIGINT", 3000 + 10_000);
    expect({ code: r.code, signal: r.signal, withinDrain: r.ms < 3000 + SLACK_MS }).toEqual({ code: 0, signal: null, withinDrain: true });
  } finally {
    cli.kill();
  }
}, 30_000);

test("a provider whose close (onClose) never returns: the hard deadline ends the process at the drain timeout, exit code 1, and says why", async () => {
  const cli = serve("stuck-close.js", 1500);
  try {
    await cli.waitFor(/listening on/g);
    const r = await stopWith(cli, "SIGTERM", 1500 + 10_000);
    expect({ code: r.code, signal: r.signal, withinDrain: r.ms < 1500 + SLACK_MS }).toEqual({ code: 1, signal: null, withinDrain: true });
    expect(cli.stderr()).toContain("emqx-exhook: shutdown did not finish within --drain-timeout 1500 ms; exiting");
  } finally {
    cli.kill();
  }
}, 30_000);

test("calls still in flight at the end of the drain are cut, and the process exits 0 within the drain timeout", async () => {
  const cli = serve("hanging.js", 2000);
  try {
    const [m] = await cli.waitFor(/listening on 127\.0\.0\.1:(\d+)/g);
    const client = createEmqxLikeClient(`http://127.0.0.1:${m?.[1]}`, 2);
    const body = encode("v3", "ClientAuthenticateRequest", { clientinfo: { clientid: "c", username: "u" } });
    const calls = Array.from({ length: 4 }, (_, i) =>
      client.call(servicePath("v3", "OnClientAuthenticate"), body, { timeout: "60S" }, i).catch((err: Error) => err),
    );
    await cli.waitFor(/handler started/g, 4);
    const r = await stopWith(cli, "SIGTERM", 2000 + 10_000);
    expect({ code: r.code, signal: r.signal, withinDrain: r.ms < 2000 + SLACK_MS }).toEqual({ code: 0, signal: null, withinDrain: true });
    // The cut calls end (reset), they do not hang the client either.
    expect((await Promise.all(calls)).every((c) => c instanceof Error || c.grpcStatus !== 0)).toBe(true);
    await client.close();
  } finally {
    cli.kill();
  }
}, 30_000);
