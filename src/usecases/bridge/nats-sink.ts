/**
 * NATS JetStream sink (`@nats-io/transport-node`, plus `@nats-io/jetstream` to create the stream;
 * optional dependencies loaded only when a `nats` sink is configured). Each row is one JetStream
 * publish with `Nats-Msg-Id` = the row's id (JetStream drops a duplicate within the stream's
 * duplicate window) and MQTT metadata as `mqtt-*` headers. The stream's PubAck is the confirm.
 *
 * A batch is published asynchronously, the way JetStream's async publishers work: every message
 * goes out with a reply subject under one inbox this sink subscribes to, and the acks are matched
 * to rows as they come back (`js.publish()` per message would create a request, a timer and two
 * Error objects each, which halves the throughput). An ack with an error, or a "no responders"
 * status (no stream takes the subject), is a refusal; no ack within the confirm timeout means
 * the engine was not reached.
 *
 * The NATS client reconnects by itself (forever, every second); while it is away, the batch waits
 * for the confirm timeout and is then retried by the forwarder.
 */
import type { Logger } from "../../provider.js";
import { loadOptional } from "../optional-dependency.js";
import type { OutboxRow } from "../store.js";
import type { NatsSinkConfig } from "./config-schema.js";
import { batchOutcomes, failAll, withTimeout, type Sink, type SinkEvents, type SinkOutcome } from "./sink.js";

/*
 * The small part of the NATS client API used here, declared locally: the packages' own .d.ts files
 * do not type-check under this project's exactOptionalPropertyTypes (and are optional at run time).
 */
interface MsgHdrs {
  append(key: string, value: string): void;
  readonly code: number;
}
interface NatsMsg {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly headers?: MsgHdrs | undefined;
}
interface NatsStatus {
  readonly type: string;
  readonly server?: string;
  readonly error?: Error;
}
interface NatsConnection {
  getServer(): string;
  publish(subject: string, payload: Uint8Array, options: { reply: string; headers: MsgHdrs }): void;
  subscribe(subject: string, options: { callback: (err: Error | null, msg: NatsMsg) => void }): { unsubscribe(): void };
  isClosed(): boolean;
  status(): AsyncIterable<NatsStatus>;
  drain(): Promise<void>;
  close(): Promise<void>;
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
    createInbox(): string;
    credsAuthenticator(creds: Uint8Array): unknown;
  };
  readonly jetstream: {
    jetstreamManager(nc: NatsConnection, options: { timeout: number }): Promise<JetStreamManager>;
  };
}

/** The NATS client packages, with a message naming the package to install when one is missing. */
function loadNats(): NatsModules {
  return {
    transport: loadOptional<NatsModules["transport"]>("@nats-io/transport-node", "a bridge sink of kind nats"),
    jetstream: loadOptional<NatsModules["jetstream"]>("@nats-io/jetstream", "a bridge sink of kind nats"),
  };
}

/** Loads the client package, so a missing one fails at start wherever the sink will run (see forwarding.ts). */
export function loadNatsClient(): void {
  loadNats();
}

/** Header names (NATS headers are case-insensitive on read; these are sent lower case). */
export function natsHeaderName(field: string): string {
  return `mqtt-${field}`;
}

/** Creates a NATS JetStream sink; the connection opens on {@link Sink.connect}. */
export function createNatsSink(cfg: NatsSinkConfig, events: SinkEvents, logger?: Logger): Sink {
  const mods = loadNats();
  let nc: NatsConnection | undefined;
  let inbox = "";
  let connecting: Promise<void> | undefined;
  let up = false;
  let batchSeq = 0;
  /** Acks awaited, by reply token (`<batch>.<index>`). */
  const waiting = new Map<string, (o: SinkOutcome) => void>();
  const decoder = new TextDecoder();

  /** One ack (or status) on the inbox: match it to its row. */
  function onAck(err: Error | null, msg: NatsMsg): void {
    if (err) return;
    const token = msg.subject.slice(inbox.length + 1);
    const settle = waiting.get(token);
    if (!settle) return; // an ack after its batch gave up: the row is re-sent (same Nats-Msg-Id)
    waiting.delete(token);
    settle(ackOutcome(msg, decoder));
  }

  async function open(): Promise<void> {
    const { transport, jetstream } = mods;
    const authenticator = cfg.credsFile
      ? transport.credsAuthenticator(
          new TextEncoder().encode(await import("node:fs").then((fs) => fs.readFileSync(cfg.credsFile as string, "utf8"))),
        )
      : undefined;
    const conn = await transport.connect({
      servers: cfg.servers,
      name: `emqx-exhook bridge ${cfg.name}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 1000,
      // Each request would otherwise build two Error objects (stack traces) up front: ~20% of the
      // forwarder's CPU at 20,000 publishes/s. Our own log lines say which sink and batch failed.
      noAsyncTraces: true,
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
              ...({
                rejectUnauthorized: cfg.tls.rejectUnauthorized,
                ...(cfg.tls.servername ? { servername: cfg.tls.servername } : {}),
              } as object),
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
    inbox = transport.createInbox();
    conn.subscribe(`${inbox}.>`, { callback: onAck });
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
      const conn = nc;
      if (!conn || conn.isClosed()) return failAll(rows, "not connected to NATS");
      const { headers } = mods.transport;
      const batch = `${++batchSeq}`;
      const outcomes = batchOutcomes(rows.length);
      let error = "";
      try {
        for (let i = 0; i < rows.length; i++) {
          const r = rows[i] as OutboxRow;
          const token = `${batch}.${i}`;
          waiting.set(token, (o) => outcomes.set(i, o));
          const h = headers();
          // append, not set: the names are distinct, and set() scans the names twice per header.
          h.append("Nats-Msg-Id", r.id);
          for (const k in r.headers) h.append(natsHeaderName(k), r.headers[k] as string);
          conn.publish(r.dest, r.payload, { reply: `${inbox}.${token}`, headers: h });
        }
        await withTimeout(outcomes.all, cfg.confirmTimeoutMs, "NATS JetStream");
      } catch (err) {
        error = (err as Error).message;
      } finally {
        for (let i = 0; i < rows.length; i++) waiting.delete(`${batch}.${i}`);
      }
      return outcomes.result(error);
    },
    async close() {
      const conn = nc;
      const wasUp = up;
      // Marked down first, so the status watcher does not report the drain as a lost connection.
      up = false;
      nc = undefined;
      if (conn && !conn.isClosed()) {
        // drain() flushes what was published and waits for the server; close() if that hangs.
        await withTimeout(conn.drain(), 2000, "NATS drain").catch(() => conn.close());
      }
      if (wasUp) events.status("disconnected", "closed");
    },
  };
}

/**
 * What a reply on the ack inbox says: a PubAck (confirmed), an API error (refused), or a
 * "no responders" status (no stream takes the subject: refused).
 */
function ackOutcome(msg: NatsMsg, decoder: TextDecoder): SinkOutcome {
  if (msg.data.length === 0 && msg.headers?.code === 503)
    return { error: "no JetStream stream takes this subject (no responders)", rejected: true };
  try {
    const ack = JSON.parse(decoder.decode(msg.data)) as {
      stream?: string;
      error?: { code?: number; err_code?: number; description?: string };
    };
    if (ack.error)
      return {
        error: `JetStream refused: ${ack.error.description ?? "error"} (${ack.error.err_code ?? ack.error.code ?? "?"})`,
        rejected: true,
      };
    if (typeof ack.stream === "string" && ack.stream !== "") return null;
    return { error: "invalid JetStream ack", rejected: true };
  } catch {
    return { error: "unreadable JetStream ack", rejected: true };
  }
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
