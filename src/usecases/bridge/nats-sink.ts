/**
 * NATS JetStream sink (`@nats-io/transport-node` + `@nats-io/jetstream`, optional dependencies
 * loaded only when a `nats` sink is configured). Each row is one JetStream publish with
 * `Nats-Msg-Id` = the row's id (JetStream drops a duplicate within the stream's duplicate window),
 * MQTT metadata as `mqtt-*` headers; the publish resolves with the stream's ack, which is the
 * confirm. A batch is pipelined: every publish is on the wire before the first ack is awaited.
 *
 * The NATS client reconnects by itself (forever, every second); while it is away, publishes wait
 * for the confirm timeout and are then retried by the forwarder.
 */
import { ExHookConfigError } from "../../errors.js";
import type { Logger } from "../../provider.js";
import type { OutboxRow } from "../store.js";
import type { NatsSinkConfig } from "./config-schema.js";
import { failAll, withTimeout, type Sink, type SinkEvents, type SinkOutcome } from "./sink.js";

/*
 * The small part of the NATS client API used here, declared locally: the packages' own .d.ts files
 * do not type-check under this project's exactOptionalPropertyTypes (and are optional at run time).
 */
interface MsgHdrs {
  set(key: string, value: string): void;
}
interface NatsStatus {
  readonly type: string;
  readonly server?: string;
  readonly error?: Error;
}
interface NatsConnection {
  getServer(): string;
  isClosed(): boolean;
  status(): AsyncIterable<NatsStatus>;
  drain(): Promise<void>;
  close(): Promise<void>;
}
interface JetStreamClient {
  publish(subject: string, payload: Uint8Array, options: { msgID: string; headers: MsgHdrs; timeout: number }): Promise<{ stream: string; seq: number; duplicate: boolean }>;
}
interface JetStreamManager {
  readonly streams: {
    info(name: string): Promise<unknown>;
    add(cfg: { name: string; subjects: string[]; storage: string }): Promise<unknown>;
  };
}
interface NatsModules {
  readonly transport: {
    connect(options: Record<string, unknown>): Promise<NatsConnection>;
    headers(): MsgHdrs;
    credsAuthenticator(creds: Uint8Array): unknown;
  };
  readonly jetstream: {
    jetstream(nc: NatsConnection, options: { timeout: number }): JetStreamClient;
    jetstreamManager(nc: NatsConnection, options: { timeout: number }): Promise<JetStreamManager>;
    readonly JetStreamApiError: new (...args: never[]) => Error;
  };
}

/** The one place the NATS client packages are loaded, with a clear message when they are missing. */
function loadNats(): NatsModules {
  try {
    // Lazy: installs without NATS never load (or need) the client.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return { transport: require("@nats-io/transport-node"), jetstream: require("@nats-io/jetstream") } as NatsModules;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "MODULE_NOT_FOUND") {
      throw new ExHookConfigError(
        "a bridge sink of kind nats needs the npm packages @nats-io/transport-node and @nats-io/jetstream: npm install @nats-io/transport-node @nats-io/jetstream",
      );
    }
    throw err;
  }
}

/** Header names (NATS headers are case-insensitive on read; these are sent lower case). */
export function natsHeaderName(field: string): string {
  return `mqtt-${field}`;
}

/** Creates a NATS JetStream sink; the connection opens on {@link Sink.connect}. */
export function createNatsSink(cfg: NatsSinkConfig, events: SinkEvents, logger?: Logger): Sink {
  const mods = loadNats();
  let nc: NatsConnection | undefined;
  let js: JetStreamClient | undefined;
  let connecting: Promise<void> | undefined;
  let up = false;

  async function open(): Promise<void> {
    const { transport, jetstream } = mods;
    const authenticator = cfg.credsFile
      ? transport.credsAuthenticator(new TextEncoder().encode(await import("node:fs").then((fs) => fs.readFileSync(cfg.credsFile as string, "utf8"))))
      : undefined;
    const conn = await transport.connect({
      servers: cfg.servers,
      name: `emqx-exhook bridge ${cfg.name}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1000,
      // Fail the first connect fast; the forwarder retries with its own backoff.
      timeout: Math.min(cfg.confirmTimeoutMs, 5000),
      ...(cfg.user !== undefined ? { user: cfg.user } : {}),
      ...(cfg.password !== undefined ? { pass: cfg.password } : {}),
      ...(cfg.token !== undefined ? { token: cfg.token } : {}),
      ...(authenticator ? { authenticator } : {}),
      ...(cfg.tls
        ? {
            tls: {
              ...(cfg.tls.ca ? { caFile: cfg.tls.ca } : {}),
              ...(cfg.tls.cert ? { certFile: cfg.tls.cert } : {}),
              ...(cfg.tls.key ? { keyFile: cfg.tls.key } : {}),
              // Passed through to tls.connect by the Node transport.
              ...({ rejectUnauthorized: cfg.tls.rejectUnauthorized, ...(cfg.tls.servername ? { servername: cfg.tls.servername } : {}) } as object),
            },
          }
        : {}),
    });
    if (cfg.stream) {
      try {
        await ensureStream(await jetstream.jetstreamManager(conn, { timeout: cfg.confirmTimeoutMs }), cfg.stream);
      } catch (err) {
        await conn.close().catch(() => {});
        throw err;
      }
    }
    nc = conn;
    js = jetstream.jetstream(conn, { timeout: cfg.confirmTimeoutMs });
    up = true;
    events.status("connected", conn.getServer());
    void watch(conn);
  }

  async function watch(conn: NatsConnection): Promise<void> {
    try {
      for await (const s of conn.status()) {
        if (s.type === "disconnect") {
          if (up) events.status("disconnected", `lost ${s.server ?? "the server"}`);
          up = false;
        } else if (s.type === "reconnect") {
          up = true;
          events.status("connected", s.server ?? conn.getServer());
        } else if (s.type === "error") {
          logger?.warn({ sink: cfg.name, err: s.error?.message }, "bridge: NATS client error");
        }
      }
    } catch {
      // The iterator ends with the connection.
    }
    if (nc === conn) {
      if (up) events.status("disconnected", "connection closed");
      up = false;
      nc = undefined;
      js = undefined;
    }
  }

  return {
    name: cfg.name,
    kind: "nats",
    connect() {
      if (nc && !nc.isClosed()) return Promise.resolve();
      return (connecting ??= open().finally(() => (connecting = undefined)));
    },
    connected: () => up,
    async send(rows: readonly OutboxRow[]): Promise<SinkOutcome[]> {
      const client = js;
      if (!client || !nc || nc.isClosed()) return failAll(rows, "not connected to NATS");
      const { headers } = mods.transport;
      const acks = rows.map((r) => {
        const h = headers();
        for (const [k, v] of Object.entries(r.headers)) h.set(natsHeaderName(k), v);
        return client.publish(r.dest, r.payload, { msgID: r.id, headers: h, timeout: cfg.confirmTimeoutMs });
      });
      const settled = await withTimeout(Promise.allSettled(acks), cfg.confirmTimeoutMs + 1000, "NATS JetStream").catch(() => undefined);
      if (!settled) return failAll(rows, `no JetStream ack within ${cfg.confirmTimeoutMs} ms`);
      return settled.map((s) => (s.status === "fulfilled" ? null : classify(s.reason, mods)));
    },
    async close() {
      const conn = nc;
      nc = undefined;
      js = undefined;
      if (conn && !conn.isClosed()) {
        // drain() flushes what was published and waits for the server; close() if that hangs.
        await withTimeout(conn.drain(), 2000, "NATS drain").catch(() => conn.close());
      }
      if (up) events.status("disconnected", "closed");
      up = false;
    },
  };
}

/** Creates the stream when it does not exist; an existing one is left as it is. */
async function ensureStream(jsm: JetStreamManager, stream: NonNullable<NatsSinkConfig["stream"]>): Promise<void> {
  try {
    await jsm.streams.info(stream.name);
    return;
  } catch (err) {
    if ((err as { code?: number }).code !== 10059 && !/not found/i.test((err as Error).message)) throw err;
  }
  await jsm.streams.add({ name: stream.name, subjects: [...stream.subjects], storage: stream.storage });
}

/**
 * An answer from JetStream about this message (an API error: wrong expected stream, stream full
 * with discard new, ...; or no stream listening on the subject) is a refusal; anything else (timeout,
 * connection closed or draining) means the engine was not reached.
 */
function classify(err: unknown, mods: NatsModules): SinkOutcome {
  const { JetStreamApiError } = mods.jetstream;
  const e = err as { message?: string; name?: string; isNoResponders?: () => boolean } | undefined;
  const message = e?.message ?? String(err);
  if (err instanceof JetStreamApiError) return { error: `JetStream refused: ${message}`, rejected: true };
  // No responders on the subject: the client reports it as JetStreamNotEnabled (not exported by the package).
  if (e?.name === "JetStreamNotEnabled" || e?.isNoResponders?.()) {
    return { error: "no JetStream stream takes this subject (no responders)", rejected: true };
  }
  return { error: message, rejected: false };
}
