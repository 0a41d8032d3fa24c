/**
 * The served stack under a login flood stops promptly: on SIGTERM the hashes still waiting are
 * refused, so once the server says "drained, exiting" the process is gone within a hash time (before,
 * 300 queued scrypt jobs on libuv's pool kept it alive 25 s after that line). A real child process:
 * the compiled CLI serving examples/stack-provider.js, flooded over HTTP/2.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb";
import { createEmqxLikeClient } from "../src/testing/emqx-client";
import { spawnCli } from "./helpers/cli-process";
import { compileTree, ROOT } from "./helpers/compile";

jest.setTimeout(60_000);

test("SIGTERM during a flood of 300 logins in flight: the process exits right after draining", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "exhook-auth-exit-"));
  try {
    compileTree("src", dir);
    compileTree("gen", dir);
    compileTree("examples", dir);
    symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
    const config = path.join(dir, "exhook.yaml");
    writeFileSync(
      config,
      "persistence: { enabled: false }\npresence: { enabled: false }\nhttp: { enabled: false }\nauth: { throttle: { enabled: false } }\n",
    );
    const cli = spawnCli(
      [
        path.join(dir, "src", "cli.js"),
        "serve",
        path.join(dir, "examples", "stack-provider.js"),
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--drain-timeout",
        "1500",
      ],
      {
        cwd: dir,
        env: { ...process.env, EXHOOK_CONFIG: config, EXHOOK_DATA_DIR: path.join(dir, "data") },
      },
    );
    const [m] = await cli.waitFor(/listening on 127\.0\.0\.1:(\d+)/g);
    const client = createEmqxLikeClient(`http://127.0.0.1:${m?.[1]}`, 8);
    const body = (i: number) =>
      toBinary(
        v3.ClientAuthenticateRequestSchema,
        create(v3.ClientAuthenticateRequestSchema, {
          clientinfo: { clientid: `c${i}`, username: `ghost${i}`, password: "x", peerhost: `10.7.${i % 50}.1`, peerport: 1000 + i },
        }),
      );
    // 300 logins in flight with a long deadline: far more than can be hashed before the stop.
    const calls = Array.from({ length: 300 }, (_, i) =>
      client.call("/emqx.exhook.v3.HookProvider/OnClientAuthenticate", body(i), { timeout: "60S" }).catch(() => undefined),
    );
    await new Promise((r) => setTimeout(r, 500));
    cli.kill("SIGTERM");
    let exited = false;
    const waitDrained = (async () => {
      while (!exited) {
        if (cli.stderr().includes("drained, exiting") || cli.stdout().includes("drained, exiting")) return Date.now();
        await new Promise((r) => setTimeout(r, 5));
      }
      return cli.stderr().includes("drained, exiting") || cli.stdout().includes("drained, exiting") ? Date.now() : Number.NaN;
    })();
    const exit = await cli.exited(30_000);
    const exitedAt = Date.now();
    exited = true;
    const drainedAt = await waitDrained;
    await Promise.all(calls);
    await client.close();
    expect(exit.code).toBe(0);
    expect(Number.isNaN(drainedAt)).toBe(false);
    // One running hash at most is left to finish (hundreds of ms on a busy machine), not 300.
    expect(exitedAt - drainedAt).toBeLessThan(3000);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
