/**
 * In-process comparison of the embedded mode (no sockets, so far less noisy than make bench):
 * Connect's router transport serving the same calls through `exhookRoutes(provider)` and through
 * the same logic written against the generated service (bench/server.ts `bareRoutes`).
 * `node embedded-micro.js [calls] [rounds]` prints µs per call for each and the ratio per round.
 */
import { createClient, createRouterTransport } from "@connectrpc/connect";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { exhookRoutes } from "../src/routes.js";
import { authenticateRequest, publishRequest } from "./logic.js";
import { bareRoutes, benchProvider } from "./server.js";

const silent = { debug() {}, info() {}, warn() {}, error() {} };

async function main(): Promise<void> {
  const calls = Number(process.argv[2] ?? 50_000);
  const rounds = Number(process.argv[3] ?? 5);
  const clients = {
    bare: createClient(v3.HookProvider, createRouterTransport(bareRoutes)),
    embedded: createClient(v3.HookProvider, createRouterTransport(exhookRoutes(benchProvider(), { logger: silent }))),
  };
  const pub = publishRequest();
  const auth = authenticateRequest();
  const opts = { timeoutMs: 5000 };
  const time = async (client: (typeof clients)["bare"], rpc: "publish" | "authenticate", n: number) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i += 64) {
      const batch: Array<Promise<unknown>> = [];
      for (let j = 0; j < 64; j++)
        batch.push(rpc === "publish" ? client.onMessagePublish(pub, opts) : client.onClientAuthenticate(auth, opts));
      await Promise.all(batch);
    }
    return Number(process.hrtime.bigint() - t0) / n / 1000;
  };
  for (const rpc of ["publish", "authenticate"] as const) {
    await time(clients.bare, rpc, calls);
    await time(clients.embedded, rpc, calls);
    const ratios: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const bare = await time(clients.bare, rpc, calls);
      const embedded = await time(clients.embedded, rpc, calls);
      ratios.push(embedded / bare);
      process.stdout.write(
        `${rpc} round ${r + 1}: bare ${bare.toFixed(1)} µs/call, embedded ${embedded.toFixed(1)} µs/call, embedded ÷ bare ${(embedded / bare).toFixed(3)}\n`,
      );
    }
    ratios.sort((a, b) => a - b);
    process.stdout.write(`${rpc}: median embedded ÷ bare time per call ${ratios[Math.floor(ratios.length / 2)]?.toFixed(3)}\n`);
  }
}

if (require.main === module) void main();
