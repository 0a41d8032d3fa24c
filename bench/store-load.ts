/**
 * Load as EMQX sends it to the use-case stack, recording what the client saw: publishes at a fixed
 * rate (each with a unique message id) and client connects/disconnects, over an EMQX-like h2c pool.
 * A publish or presence event counts as acknowledged when its hook answered with grpc-status 0;
 * afterwards the store is compared with what was acknowledged. Used by test/usecases-faults.test.ts
 * and bench/store-faults.ts.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import type { EmqxLikeClient } from "../src/testing/emqx-client.js";

const NODE = "emqx@10.0.0.1";
const META = { node: NODE, version: "5.9.1", sysdescr: "EMQX", clusterName: "emqxcl" };
const PATH = (rpc: string) => `/emqx.exhook.v3.HookProvider/${rpc}`;

/** Options of {@link startStoreLoad}. */
export interface StoreLoadOptions {
  /** Publishes per second. */
  readonly rate: number;
  /** Payload bytes per publish. Default 200. */
  readonly payloadBytes?: number;
  /** Topic prefix (the stack stores what its persistence filters match). Default "sensors". */
  readonly topic?: string;
  /** One connect or disconnect per this many publishes (0 = none). Default 10. */
  readonly presenceEvery?: number;
  /** Distinct to this run, so ids never collide with another run's. */
  readonly tag: string;
}

/** What the client saw. */
export interface StoreLoadResult {
  /** Message ids whose publish hook answered grpc-status 0. */
  readonly acked: Set<string>;
  /** Publishes that failed (other status, reset, deadline). */
  readonly failed: number;
  /** Answer time of each acknowledged publish, ms. */
  readonly latencies: number[];
  /** Final online state each client id should have (from its acknowledged events, in order). */
  readonly presence: Map<string, boolean>;
  /** Presence events sent / acknowledged. */
  readonly presenceSent: number;
  readonly presenceAcked: number;
}

/** A running load. */
export interface StoreLoad {
  /** Publishes sent so far. */
  sent(): number;
  /** Stops sending and waits for every answer. */
  stop(): Promise<StoreLoadResult>;
}

/** A 32-hex-character EMQX message id unique to `tag` and `n`. */
export function messageId(tag: string, n: number): string {
  return (tag + n.toString(16).padStart(12, "0")).padStart(32, "0").slice(-32).toUpperCase();
}

/** Starts publishing at `rate`/s on `client` (and connecting/disconnecting clients). */
export function startStoreLoad(client: EmqxLikeClient, options: StoreLoadOptions): StoreLoad {
  const payload = new Uint8Array(options.payloadBytes ?? 200).fill(0x61);
  const topic = options.topic ?? "sensors";
  const presenceEvery = options.presenceEvery ?? 10;
  const acked = new Set<string>();
  const latencies: number[] = [];
  const presence = new Map<string, boolean>();
  const inflight = new Set<Promise<void>>();
  let failed = 0;
  let n = 0;
  let presenceSent = 0;
  let presenceAcked = 0;
  // Each client id connects, then disconnects one presence step later (its events go one at a time,
  // as EMQX sends one client's events on one connection in order).
  let clients = 0;
  const online: string[] = [];
  let chain: Promise<void> = Promise.resolve();

  const track = (p: Promise<void>) => {
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  };

  const publish = (i: number) => {
    const id = messageId(options.tag, i);
    const body = toBinary(
      v3.MessagePublishRequestSchema,
      create(v3.MessagePublishRequestSchema, {
        message: {
          node: NODE,
          id,
          qos: 1,
          from: `pub-${i % 50}`,
          topic: `${topic}/${i % 20}/t`,
          payload,
          timestamp: BigInt(Date.now()),
          headers: { username: `user${i % 50}`, peerhost: "10.0.3.17", protocol: "mqtt" },
        },
        meta: META,
      }),
    );
    const started = performance.now();
    track(
      client.call(PATH("OnMessagePublish"), body).then(
        (r) => {
          if (r.grpcStatus === 0) {
            acked.add(id);
            latencies.push(performance.now() - started);
          } else failed++;
        },
        () => void failed++,
      ),
    );
  };

  const presenceEvent = () => {
    const connect = online.length === 0 || clients % 2 === 0;
    const clientid = connect ? `${options.tag}-c${clients}` : (online.shift() as string);
    if (connect) online.push(clientid);
    clients++;
    const port = 40_000 + (Number.parseInt(clientid.split("-c")[1] ?? "0", 10) % 20_000);
    const clientinfo = { node: NODE, clientid, username: "u", peerhost: "10.0.4.1", peerport: port, sockport: 1883, protocol: "mqtt" };
    const body = connect
      ? toBinary(v3.ClientConnectedRequestSchema, create(v3.ClientConnectedRequestSchema, { clientinfo, meta: META }))
      : toBinary(
          v3.ClientDisconnectedRequestSchema,
          create(v3.ClientDisconnectedRequestSchema, { clientinfo, reason: "normal", meta: META }),
        );
    presenceSent++;
    // One client's events in order; different clients' events overlap with the publishes.
    chain = chain.then(() =>
      client.call(PATH(connect ? "OnClientConnected" : "OnClientDisconnected"), body).then(
        (r) => {
          if (r.grpcStatus === 0) {
            presenceAcked++;
            presence.set(clientid, connect);
          }
        },
        () => undefined,
      ),
    );
    track(chain);
  };

  const perTick = options.rate / 100;
  let due = 0;
  const timer = setInterval(() => {
    due += perTick;
    while (due >= 1) {
      due--;
      publish(n);
      n++;
      if (presenceEvery > 0 && n % presenceEvery === 0) presenceEvent();
    }
  }, 10);

  return {
    sent: () => n,
    async stop() {
      clearInterval(timer);
      while (inflight.size > 0) await Promise.allSettled([...inflight]);
      return { acked, failed, latencies, presence, presenceSent, presenceAcked };
    },
  };
}

/** The p-th percentile (0–100) of `values`. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}
