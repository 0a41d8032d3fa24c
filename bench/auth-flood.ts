/**
 * Logins under a wrong-password flood, against the real server: the use-case stack's authenticator
 * (SQLite store, scrypt with the shipped parameters) served by `createExHookServer`, called over
 * h2c by an EMQX-like client (8 connections, EMQX's headers and `grpc-timeout`).
 *
 * The flood: `rate` wrong-password `OnClientAuthenticate` calls per second, open loop, for
 * `seconds`, from `attackers` peer addresses, each for one of the real usernames or a made-up one.
 * Meanwhile, one after the other, `probes` correct logins of users that never logged in before, each
 * from an address of its own (the case no cache helps); the flood goes on until the last is answered. Reported: how many correct logins were allowed and
 * how long each took, what the flood got, and the server's hashing counters.
 *
 * `node dist/bench-build/bench/auth-flood.js [rate] [seconds] [attackers] [config-json]` prints JSON;
 * with `baseline` as config it also runs the same load against the unguarded setting (no fair queue
 * bound: 64 hashes at once, i.e. libuv's FIFO pool as before; no throttle) for a ratio.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { createExHookServer } from "../src/server.js";
import { createEmqxLikeClient } from "../src/testing/emqx-client.js";
import { addUser, createStack, hashPassword, parseConfig, type StackConfigInput } from "../src/usecases/index.js";

/** Parameters of one flood run. */
export interface AuthFloodOptions {
  /** Wrong-password calls per second. Default 300. */
  readonly rate?: number;
  readonly seconds?: number;
  /** Distinct peer addresses of the flood. Default 20. */
  readonly attackers?: number;
  /** Correct logins to measure. Default 10. */
  readonly probes?: number;
  /** Pause between one probe's answer and the next probe. Default: spread over 80% of `seconds`. */
  readonly probeEveryMs?: number;
  /** `grpc-timeout` EMQX sends (its `request_timeout`), in ms. Default 5000. */
  readonly requestTimeoutMs?: number;
  /** Stack config (`auth` section etc.); persistence, presence and the HTTP API are off. */
  readonly config?: StackConfigInput;
}

/** What one run measured. */
export interface AuthFloodResult {
  readonly rate: number;
  readonly seconds: number;
  readonly attackers: number;
  readonly requestTimeoutMs: number;
  /**
   * Correct logins: allowed count, each one's latency (ms, from send to answer), and how many hash
   * jobs started while it was in flight besides its own (what it waited for, in hashes).
   */
  readonly probes: { readonly allowed: number; readonly total: number; readonly ms: number[]; readonly hashesWhileWaiting: number[] };
  /** Flood calls: answered with a decision, answered later than the request timeout, gRPC errors. */
  readonly flood: {
    readonly sent: number;
    readonly answered: number;
    readonly late: number;
    readonly errors: number;
    readonly p50Ms: number;
    readonly maxMs: number;
  };
  /** How long the flood ran, in ms. */
  readonly elapsedMs: number;
  /** The authenticator's counters after the run. */
  readonly auth: Record<string, unknown>;
}

const PATH = "/emqx.exhook.v3.HookProvider/OnClientAuthenticate";

function request(username: string, password: string, clientid: string, peerhost: string): Uint8Array {
  return toBinary(
    v3.ClientAuthenticateRequestSchema,
    create(v3.ClientAuthenticateRequestSchema, {
      clientinfo: {
        node: "emqx@bench",
        clientid,
        username,
        password,
        peerhost,
        peerport: 40000 + (clientid.length % 1000),
        sockport: 1883,
        protocol: "mqtt",
      },
      result: false,
      meta: { node: "emqx@bench", version: "5.9.0", sysdescr: "EMQX", clusterName: "bench" },
    }),
  );
}

const percentile = (a: number[], p: number) => {
  if (a.length === 0) return 0;
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
};

/** Runs one flood against a fresh server and store. */
export async function runAuthFlood(options: AuthFloodOptions = {}): Promise<AuthFloodResult> {
  const rate = options.rate ?? 300;
  const seconds = options.seconds ?? 4;
  const attackers = options.attackers ?? 20;
  const probes = options.probes ?? 10;
  const probeEveryMs = options.probeEveryMs ?? Math.floor((seconds * 1000 * 0.8) / probes);
  const requestTimeoutMs = options.requestTimeoutMs ?? 5000;
  const dir = mkdtempSync(join(tmpdir(), "exhook-auth-flood-"));
  const cfg = parseConfig({
    ...options.config,
    dataDir: dir,
    persistence: { enabled: false },
    presence: { enabled: false },
    http: { enabled: false },
  });
  const stack = await createStack(cfg);
  const server = createExHookServer({
    provider: stack.provider,
    port: 0,
    host: "127.0.0.1",
    logger: { debug() {}, info() {}, warn() {}, error() {} },
  });
  const addr = await server.listen();
  const client = createEmqxLikeClient(`http://127.0.0.1:${addr.port}`, 8);
  const timeout = requestTimeoutMs % 1000 === 0 ? `${requestTimeoutMs / 1000}S` : `${requestTimeoutMs}m`;
  try {
    // Real users (the flood guesses their passwords; one shared hash keeps the setup short) and the
    // probe users (never logged in), hashed with the configured parameters.
    const real = Array.from({ length: 50 }, (_, i) => `user${i}`);
    const shared = await hashPassword("a-password-nobody-guesses", cfg.auth.scrypt);
    const now = Date.now();
    for (const u of real)
      await stack.store.putUser({
        username: u,
        passwordHash: shared,
        hashFormat: "scrypt",
        clientIds: [],
        superuser: false,
        createdAt: now,
        updatedAt: now,
      });
    await Promise.all(
      Array.from({ length: probes }, (_, i) => addUser(stack.store, `probe${i}`, `right-${i}`, { scrypt: cfg.auth.scrypt })),
    );
    const call = (body: Uint8Array) => {
      const t0 = performance.now();
      return client.call(PATH, body, { timeout }).then(
        (r) => {
          const msg = r.messages[0];
          const allowed = msg ? fromBinary(v3.ValuedResponseSchema, msg).value.value === true : undefined;
          return { ms: performance.now() - t0, status: r.grpcStatus, allowed };
        },
        () => ({ ms: performance.now() - t0, status: 14, allowed: undefined as boolean | undefined }),
      );
    };

    const floodMs: number[] = [];
    let sent = 0;
    let answered = 0;
    let late = 0;
    let errors = 0;
    const inFlight: Promise<void>[] = [];
    const start = performance.now();
    const total = Math.round(rate * seconds);
    let probesDone = false;
    const floodDone = new Promise<void>((resolve) => {
      const tick = () => {
        // The flood lasts `seconds`, and longer if the probes are not done by then.
        const due = Math.min(probesDone ? total : Number.MAX_SAFE_INTEGER, Math.floor(((performance.now() - start) / 1000) * rate));
        while (sent < due) {
          const i = sent++;
          const username = i % 3 === 0 ? `nobody${i}` : (real[i % real.length] as string);
          const p = call(request(username, `guess-${i}`, `bot-${i}`, `198.51.100.${i % attackers}`)).then((r) => {
            floodMs.push(r.ms);
            if (r.status === 0 && r.allowed !== undefined) answered++;
            else errors++;
            if (r.ms > requestTimeoutMs) late++;
          });
          inFlight.push(p);
        }
        if (sent >= total && probesDone) resolve();
        else setTimeout(tick, 2);
      };
      tick();
    });
    // One probe at a time (so a probe waits only for the flood, never for another probe).
    const probeResults: Array<{ ms: number; allowed: boolean | undefined; hashes: number }> = [];
    for (let i = 0; i < probes; i++) {
      await new Promise((r) => setTimeout(r, i === 0 ? probeEveryMs / 2 : probeEveryMs));
      const before = stack.auth?.stats().hashing.started ?? 0;
      const r = await call(request(`probe${i}`, `right-${i}`, `probe-client-${i}`, `192.0.2.${i + 1}`));
      probeResults.push({ ...r, hashes: (stack.auth?.stats().hashing.started ?? 0) - before - 1 });
    }
    probesDone = true;
    await floodDone;
    const elapsedMs = Math.round(performance.now() - start);
    await Promise.all(inFlight);
    return {
      rate,
      seconds,
      attackers,
      requestTimeoutMs,
      elapsedMs,
      probes: {
        allowed: probeResults.filter((r) => r.allowed === true).length,
        total: probes,
        ms: probeResults.map((r) => Math.round(r.ms)),
        hashesWhileWaiting: probeResults.map((r) => r.hashes),
      },
      flood: { sent, answered, late, errors, p50Ms: Math.round(percentile(floodMs, 50)), maxMs: Math.round(percentile(floodMs, 100)) },
      auth: stack.auth?.stats() as unknown as Record<string, unknown>,
    };
  } finally {
    await client.close();
    await server.close(1000);
    await stack.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The unguarded setting, for a baseline: libuv's FIFO pool decides the order, no throttling. */
export const BASELINE_CONFIG: StackConfigInput = {
  auth: { hashing: { concurrency: 64, maxQueued: 1_000_000, maxQueuedPerPeer: 1_000_000 }, throttle: { enabled: false } },
};

if (require.main === module) {
  const [rate, seconds, attackers, config] = process.argv.slice(2);
  const base = { rate: Number(rate ?? 300), seconds: Number(seconds ?? 4), attackers: Number(attackers ?? 20) };
  void (async () => {
    const runs: Record<string, AuthFloodResult> = {};
    if (config === "baseline" || config === undefined) {
      runs["defaults"] = await runAuthFlood(base);
      runs["no-throttle"] = await runAuthFlood({ ...base, config: { auth: { throttle: { enabled: false } } } });
      if (config === "baseline") runs["unguarded"] = await runAuthFlood({ ...base, config: BASELINE_CONFIG });
    } else runs["custom"] = await runAuthFlood({ ...base, config: JSON.parse(config) as StackConfigInput });
    process.stdout.write(JSON.stringify(runs, null, 1) + "\n");
  })();
}
