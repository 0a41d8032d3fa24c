/**
 * In-process microbenchmark of the per-call work above HTTP/2: our dispatcher's `handleBytes`
 * (decode, topic filter, middleware, handler, checks, encode) against the floor's
 * decode → logic → encode, on the same request bytes. Much less noisy than socket benchmarks on a
 * shared machine: `node micro.js [calls]` prints ns/call for each.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { createDispatcher } from "../src/dispatch.js";
import { routeTable, type RpcTarget } from "../src/wire.js";
import { authenticateRequest, publishRequest } from "./logic.js";
import { authenticateV3, benchProvider, publishV3 } from "./server.js";

/** The floor server's per-call work (bench/server.ts), minus HTTP/2. */
function floorPublish(bytes: Uint8Array): Uint8Array {
  return toBinary(v3.ValuedResponseSchema, publishV3(fromBinary(v3.MessagePublishRequestSchema, bytes)));
}

function floorAuth(bytes: Uint8Array): Uint8Array {
  return toBinary(v3.ValuedResponseSchema, authenticateV3(fromBinary(v3.ClientAuthenticateRequestSchema, bytes)));
}

async function time(name: string, calls: number, fn: () => Uint8Array | Promise<Uint8Array>): Promise<number> {
  // Batches of 64 concurrent calls, like 8 connections × 8 streams.
  const run = async (n: number) => {
    for (let i = 0; i < n; i += 64) {
      const batch: Array<Uint8Array | Promise<Uint8Array>> = [];
      for (let j = 0; j < 64; j++) batch.push(fn());
      await Promise.all(batch);
    }
  };
  await run(Math.min(calls, 50_000));
  const t0 = process.hrtime.bigint();
  await run(calls);
  const ns = Number(process.hrtime.bigint() - t0) / calls;
  process.stdout.write(`${name.padEnd(28)} ${ns.toFixed(0).padStart(6)} ns/call\n`);
  return ns;
}

async function main(): Promise<void> {
  const calls = Number(process.argv[2] ?? 300_000);
  const pub = toBinary(v3.MessagePublishRequestSchema, publishRequest());
  const auth = toBinary(v3.ClientAuthenticateRequestSchema, authenticateRequest());
  const routes = routeTable();
  const pubTarget = routes.get("/emqx.exhook.v3.HookProvider/OnMessagePublish")?.target as RpcTarget;
  const authTarget = routes.get("/emqx.exhook.v3.HookProvider/OnClientAuthenticate")?.target as RpcTarget;
  const silent = { debug() {}, info() {}, warn() {}, error() {} };
  const d = createDispatcher(benchProvider(), { logger: silent });
  const info = { timeoutMs: 5000, bindAbort: () => {} };
  for (let round = 0; round < 2; round++) {
    await time("floor publish", calls, () => floorPublish(pub));
    await time("ours publish (handleBytes)", calls, () => d.handleBytes("v3", pubTarget, pub, info));
    await time("floor authenticate", calls, () => floorAuth(auth));
    await time("ours authenticate", calls, () => d.handleBytes("v3", authTarget, auth, info));
  }
}

if (require.main === module) void main();
