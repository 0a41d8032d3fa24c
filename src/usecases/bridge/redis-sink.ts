/**
 * Redis Streams sink (`ioredis`, an optional dependency loaded only when a `redis` sink is
 * configured). Each row is one `XADD <stream> MAXLEN ~ <maxLen> * id <id> <metadata fields...>
 * payload <bytes>`, a batch is one pipeline (one round trip), and a row is confirmed by its XADD
 * reply (the entry id). Redis has no server-side deduplication: the `id` field is what consumers
 * deduplicate on after a retry.
 *
 * ioredis reconnects by itself; commands are not queued while it is away (enableOfflineQueue off),
 * so a batch sent during an outage fails at once and the forwarder retries after its backoff.
 */
import { readFileSync } from "node:fs";
import type { Redis as RedisClient } from "ioredis";
import type { Logger } from "../../provider.js";
import { loadOptional } from "../optional-dependency.js";
import type { OutboxRow } from "../store.js";
import type { RedisSinkConfig } from "./config-schema.js";
import { maskUrl } from "./rabbitmq-sink.js";
import { failAll, withTimeout, type Sink, type SinkEvents, type SinkOutcome } from "./sink.js";

type IoRedis = typeof import("ioredis");

/** The client package, with a message naming the package to install when it is missing. */
function loadIoredis(): IoRedis {
  return loadOptional<IoRedis>("ioredis", "a bridge sink of kind redis");
}

/** Loads the client package, so a missing one fails at start wherever the sink will run (see forwarding.ts). */
export function loadRedisClient(): void {
  loadIoredis();
}

/** Creates a Redis Streams sink; the connection opens on {@link Sink.connect}. */
export function createRedisSink(cfg: RedisSinkConfig, events: SinkEvents, logger?: Logger): Sink {
  const { Redis, ReplyError } = loadIoredis();
  const shown = maskUrl(cfg.url);
  const tls = cfg.tls;
  const options = {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: Math.min(cfg.confirmTimeoutMs, 10_000),
    // Reconnect forever, at most every 2 s; the forwarder's own backoff decides when to send again.
    retryStrategy: (times: number) => Math.min(100 * times, 2000),
    connectionName: `emqx-exhook-bridge-${cfg.name}`,
    ...(cfg.username !== undefined ? { username: cfg.username } : {}),
    ...(cfg.password !== undefined ? { password: cfg.password } : {}),
    ...(tls || cfg.url.startsWith("rediss:")
      ? {
          tls: {
            ...(tls?.ca ? { ca: [readFileSync(tls.ca)] } : {}),
            ...(tls?.cert ? { cert: readFileSync(tls.cert) } : {}),
            ...(tls?.key ? { key: readFileSync(tls.key) } : {}),
            rejectUnauthorized: tls?.rejectUnauthorized ?? true,
            ...(tls?.servername ? { servername: tls.servername } : {}),
          },
        }
      : {}),
  };
  // A plain object: ioredis' option types do not accept exactOptionalPropertyTypes-checked literals.
  const redis: RedisClient = new Redis(cfg.url, options as never);
  let up = false;
  let closed = false;
  redis.on("ready", () => {
    if (!up) events.status("connected", shown);
    up = true;
  });
  redis.on("close", () => {
    if (up) events.status("disconnected", `connection to ${shown} closed`);
    up = false;
  });
  // Without an 'error' listener an EventEmitter error kills the process; reconnects are logged by status.
  redis.on("error", (err: Error) => logger?.debug({ sink: cfg.name, err: err.message }, "bridge: Redis client error"));

  const trim = cfg.maxLen > 0 ? ["MAXLEN", "~", String(cfg.maxLen)] : [];

  return {
    name: cfg.name,
    kind: "redis",
    async connect() {
      if (closed) throw new Error("sink closed");
      if (redis.status === "ready") return;
      if (redis.status === "wait" || redis.status === "end") {
        await redis.connect();
        return;
      }
      // Connecting or reconnecting on its own: wait for it, within the confirm timeout.
      await withTimeout(
        new Promise<void>((resolve) => redis.once("ready", () => resolve())),
        cfg.confirmTimeoutMs,
        `Redis at ${shown} (${redis.status})`,
      );
    },
    connected: () => up && redis.status === "ready",
    async send(rows: readonly OutboxRow[]): Promise<SinkOutcome[]> {
      if (redis.status !== "ready") return failAll(rows, `not connected to Redis (${redis.status})`);
      const pipe = redis.pipeline();
      for (const r of rows) {
        const args: Array<string | Buffer> = [r.dest, ...trim, "*", "id", r.id];
        for (const k in r.headers) if (k !== "id") args.push(k, r.headers[k] as string);
        const p = r.payload;
        args.push("payload", Buffer.from(p.buffer, p.byteOffset, p.byteLength));
        pipe.call("XADD", ...args);
      }
      let results: Array<[Error | null, unknown]> | null;
      try {
        results = await withTimeout(pipe.exec(), cfg.confirmTimeoutMs, "Redis");
      } catch (err) {
        return failAll(rows, (err as Error).message);
      }
      if (!results) return failAll(rows, "Redis pipeline gave no replies");
      return rows.map((_, i) => {
        const [err] = results?.[i] ?? [new Error("no reply")];
        if (!err) return null;
        // An error reply (WRONGTYPE, OOM, ...) is Redis refusing this entry; anything else is the connection.
        return { error: err.message, rejected: err instanceof ReplyError };
      });
    },
    async close() {
      closed = true;
      // QUIT only makes sense on a live connection; otherwise stop reconnecting at once.
      if (redis.status === "ready")
        await withTimeout(
          redis.quit().then(() => undefined),
          2000,
          "Redis quit",
        ).catch(() => redis.disconnect());
      else redis.disconnect();
      if (up) events.status("disconnected", "closed");
      up = false;
    },
  };
}
