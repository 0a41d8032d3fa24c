/**
 * The engines of the bridge tests, for real: URLs of the shared ones (scripts/with-brokers.sh
 * exports them; reused engines on the standard ports get names unique to the run), throwaway
 * nats-server / redis-server processes the fault tests stop and restart, a TCP proxy to cut and
 * restore a connection (RabbitMQ is too slow to restart inside a test), and readers that look at
 * what landed in each engine with the engine's own client.
 *
 * The client packages are loaded with require() and used through small local types: their .d.ts
 * files do not type-check under this project's strict settings.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const NATS_URL = process.env["EXHOOK_TEST_NATS_URL"];
export const AMQP_URL = process.env["EXHOOK_TEST_AMQP_URL"];
export const REDIS_URL = process.env["EXHOOK_TEST_REDIS_URL"];
export const NATS_BIN =
  process.env["EXHOOK_TEST_NATS_BIN"] ?? (require("node:fs").existsSync("/usr/sbin/nats-server") ? "/usr/sbin/nats-server" : undefined);
export const REDIS_BIN =
  process.env["EXHOOK_TEST_REDIS_BIN"] ?? (require("node:fs").existsSync("/usr/bin/redis-server") ? "/usr/bin/redis-server" : undefined);
export const PG_URL = process.env["EXHOOK_TEST_PG_URL"];

/** A name unique to this run (streams, exchanges, queues, keys, sinks). */
export function unique(prefix: string): string {
  return `${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
}

/** Says loudly which engine is missing, once per file. */
export function skipNotice(file: string, what: Record<string, string | undefined>): void {
  for (const [name, v] of Object.entries(what)) {
    if (!v) console.warn(`${file}: tests needing ${name} SKIPPED: not available (run under scripts/with-brokers.sh, as make test does)`);
  }
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on the port (rejects after `ms`). */
export async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on 127.0.0.1:${port} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Polls `fn` until it returns a value that is not undefined (rejects after `ms`, with `what`). */
export async function eventually<T>(fn: () => Promise<T | undefined> | T | undefined, ms: number, what: string): Promise<T> {
  const until = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > until) throw new Error(`${what}: not within ${ms} ms${last ? ` (last error: ${(last as Error).message})` : ""}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A throwaway engine process that can be stopped and started again on the same port and data. */
export interface EngineProcess {
  readonly url: string;
  readonly port: number;
  start(): Promise<void>;
  /** SIGKILL (a crash: no goodbye to clients). */
  kill(): Promise<void>;
  /** Stops it for good and deletes its data. */
  dispose(): Promise<void>;
}

function engineProcess(url: (port: number) => string, argv: (port: number, dir: string) => [string, string[]]): Promise<EngineProcess> {
  return (async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "exhook-engine-"));
    let child: ChildProcess | undefined;
    let log = "";
    const kill = async () => {
      const c = child;
      child = undefined;
      if (!c || c.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        c.once("exit", () => resolve());
        c.kill("SIGKILL");
      });
    };
    const start = async () => {
      const [bin, args] = argv(port, dir);
      const c = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
      c.stdout?.on("data", (d: Buffer) => (log += d.toString()));
      c.stderr?.on("data", (d: Buffer) => (log += d.toString()));
      child = c;
      try {
        await waitForPort(port, 15_000);
      } catch (err) {
        throw new Error(`${bin} did not start: ${(err as Error).message}\n${log.slice(-2000)}`);
      }
    };
    await start();
    return {
      url: url(port),
      port,
      start,
      kill,
      async dispose() {
        await kill();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  })();
}

/** A throwaway nats-server with JetStream (file storage in a temp dir, kept across restarts). */
export function startNats(): Promise<EngineProcess> {
  if (!NATS_BIN) throw new Error("no nats-server binary");
  return engineProcess(
    (p) => `nats://127.0.0.1:${p}`,
    (p, dir) => [NATS_BIN as string, ["-a", "127.0.0.1", "-p", String(p), "-js", "-sd", dir]],
  );
}

/** A throwaway redis-server (append-only file fsynced on every write, so a SIGKILL loses nothing). */
export function startRedis(): Promise<EngineProcess> {
  if (!REDIS_BIN) throw new Error("no redis-server binary");
  return engineProcess(
    (p) => `redis://127.0.0.1:${p}`,
    (p, dir) => [
      REDIS_BIN as string,
      ["--port", String(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", dir],
    ],
  );
}

/** A TCP proxy to `target` that can cut every connection (and refuse new ones) and restore. */
export interface TcpProxy {
  readonly port: number;
  /** Destroys every proxied connection and refuses new ones until `restore`. */
  cut(): void;
  /**
   * Stops passing bytes either way, closing nothing: a peer that died without a FIN or RST (power
   * loss, partition). What clients send from then on is read and dropped, and counted in `swallowed`.
   */
  blackhole(): void;
  /** Bytes clients sent into the black hole. */
  swallowed(): number;
  restore(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  /** Each proxied connection: the client's socket and the one to the target. */
  const pairs = new Map<net.Socket, net.Socket>();
  let open = true;
  let holes = false;
  let swallowed = 0;
  const hole = (client: net.Socket, upstream: net.Socket) => {
    client.unpipe(upstream);
    upstream.unpipe(client);
    upstream.pause();
    client.on("data", (b: Buffer) => void (swallowed += b.length));
    client.resume(); // (unpipe left it paused: a 'data' listener alone does not resume it)
  };
  const destroyAll = () => {
    for (const [client, upstream] of pairs) {
      client.destroy();
      upstream.destroy();
    }
    pairs.clear();
  };
  const server = net.createServer((client) => {
    if (!open) return client.destroy();
    const upstream = net.connect(targetPort, "127.0.0.1");
    pairs.set(client, upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(client);
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
    if (holes) return hole(client, upstream);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    cut() {
      open = false;
      destroyAll();
    },
    blackhole() {
      holes = true;
      for (const [client, upstream] of pairs) hole(client, upstream);
    },
    swallowed: () => swallowed,
    restore() {
      open = true;
    },
    close() {
      open = false;
      destroyAll();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** What a reader saw of one message in an engine. */
export interface Landed {
  /** Subject, routing key or stream key. */
  readonly dest: string;
  /** MQTT metadata (without the engine's `mqtt-` prefix), plus `id`. */
  readonly meta: Record<string, string>;
  readonly payload: string;
}

// --- NATS JetStream ---------------------------------------------------------------------------

interface NatsHdrs {
  keys(): string[];
  get(k: string): string;
}
interface NatsConn {
  close(): Promise<void>;
}
interface Jsm {
  streams: {
    add(cfg: Record<string, unknown>): Promise<unknown>;
    delete(name: string): Promise<boolean>;
    info(name: string): Promise<{ state: { messages: number; last_seq: number } }>;
    getMessage(name: string, q: { seq: number }): Promise<{ subject: string; header: NatsHdrs; data: Uint8Array } | null>;
  };
}
const nats = () =>
  ({ transport: require("@nats-io/transport-node"), jetstream: require("@nats-io/jetstream") }) as {
    transport: { connect(o: Record<string, unknown>): Promise<NatsConn> };
    jetstream: { jetstreamManager(nc: NatsConn): Promise<Jsm> };
  };

/** A JetStream manager connection for the test's own checks. */
export async function natsAdmin(url: string): Promise<{ jsm: Jsm; close(): Promise<void> }> {
  const { transport, jetstream } = nats();
  const nc = await transport.connect({ servers: [url], maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  const jsm = await jetstream.jetstreamManager(nc);
  return { jsm, close: () => nc.close() };
}

/** Every message in a stream, in stream order. */
export async function readNatsStream(url: string, stream: string): Promise<Landed[]> {
  const admin = await natsAdmin(url);
  try {
    const info = await admin.jsm.streams.info(stream);
    const out: Landed[] = [];
    for (let seq = 1; seq <= info.state.last_seq; seq++) {
      const m = await admin.jsm.streams.getMessage(stream, { seq }).catch(() => null);
      if (!m) continue;
      const meta: Record<string, string> = {};
      for (const k of m.header?.keys() ?? []) meta[k.toLowerCase().replace(/^mqtt-/, "")] = m.header.get(k);
      out.push({ dest: m.subject, meta, payload: Buffer.from(m.data).toString("utf8") });
    }
    return out;
  } finally {
    await admin.close();
  }
}

// --- Redis Streams ----------------------------------------------------------------------------

interface RedisLike {
  xrangeBuffer(key: string, start: string, end: string): Promise<Array<[Buffer, Buffer[]]>>;
  del(...keys: string[]): Promise<number>;
  xlen(key: string): Promise<number>;
  quit(): Promise<unknown>;
}
export function redisClient(url: string): RedisLike {
  const { Redis } = require("ioredis") as { Redis: new (url: string, o: object) => RedisLike & { on(e: string, f: () => void): void } };
  const r = new Redis(url, { maxRetriesPerRequest: 2, lazyConnect: false });
  r.on("error", () => {});
  return r;
}

/** Every entry of a stream, in order. */
export async function readRedisStream(url: string, key: string): Promise<Landed[]> {
  const r = redisClient(url);
  try {
    const entries = await r.xrangeBuffer(key, "-", "+");
    return entries.map(([, fields]) => {
      const meta: Record<string, string> = {};
      let payload = "";
      for (let i = 0; i < fields.length; i += 2) {
        const k = (fields[i] as Buffer).toString();
        if (k === "payload") payload = (fields[i + 1] as Buffer).toString("utf8");
        else meta[k] = (fields[i + 1] as Buffer).toString();
      }
      return { dest: key, meta, payload };
    });
  } finally {
    await r.quit();
  }
}

// --- RabbitMQ ---------------------------------------------------------------------------------

interface AmqpMsg {
  content: Buffer;
  fields: { routingKey: string };
  properties: {
    messageId?: string;
    headers?: Record<string, unknown>;
    timestamp?: number;
    type?: string;
    appId?: string;
    deliveryMode?: number;
  };
}
interface AmqpChannel {
  assertQueue(q: string, o: object): Promise<unknown>;
  bindQueue(q: string, ex: string, key: string): Promise<unknown>;
  assertExchange(ex: string, type: string, o: object): Promise<unknown>;
  get(q: string, o: object): Promise<AmqpMsg | false>;
  deleteQueue(q: string): Promise<unknown>;
  deleteExchange(ex: string): Promise<unknown>;
  close(): Promise<void>;
}
interface AmqpConn {
  createChannel(): Promise<AmqpChannel>;
  close(): Promise<void>;
  on(e: string, f: (err?: Error) => void): void;
}
export async function amqpAdmin(url: string): Promise<{ ch: AmqpChannel; close(): Promise<void> }> {
  const amqp = require("amqplib") as { connect(url: string): Promise<AmqpConn> };
  const conn = await amqp.connect(url);
  conn.on("error", () => {});
  const ch = await conn.createChannel();
  return { ch, close: () => conn.close().catch(() => {}) };
}

/** Takes every message waiting in a queue (acknowledged: they leave the queue). */
export async function drainAmqpQueue(url: string, queue: string): Promise<Array<Landed & { props: AmqpMsg["properties"] }>> {
  const admin = await amqpAdmin(url);
  try {
    const out: Array<Landed & { props: AmqpMsg["properties"] }> = [];
    for (;;) {
      const m = await admin.ch.get(queue, { noAck: true });
      if (!m) break;
      const meta: Record<string, string> = {};
      for (const [k, v] of Object.entries(m.properties.headers ?? {})) meta[k.replace(/^mqtt-/, "")] = String(v);
      meta["id"] = m.properties.messageId ?? meta["id"] ?? "";
      out.push({ dest: m.fields.routingKey, meta, payload: m.content.toString("utf8"), props: m.properties });
    }
    return out;
  } finally {
    await admin.close();
  }
}

/** Checks that each client's messages arrived in the order given (first arrival of each id), and returns the ids missing. */
export function orderAndGaps(
  landed: readonly Landed[],
  sent: ReadonlyMap<string, readonly string[]>,
): { missing: string[]; outOfOrder: string[] } {
  const firstSeen = new Map<string, number>();
  landed.forEach((l, i) => {
    const id = l.meta["id"] as string;
    if (!firstSeen.has(id)) firstSeen.set(id, i);
  });
  const missing: string[] = [];
  const outOfOrder: string[] = [];
  for (const [client, ids] of sent) {
    let last = -1;
    for (const id of ids) {
      const at = firstSeen.get(id);
      if (at === undefined) {
        missing.push(id);
        continue;
      }
      if (at < last) outOfOrder.push(`${client}:${id}`);
      last = at;
    }
  }
  return { missing, outOfOrder };
}
