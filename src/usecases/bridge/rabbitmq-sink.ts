/**
 * RabbitMQ sink (`amqplib`, an optional dependency loaded only when a `rabbitmq` sink is
 * configured). Publishes to a durable exchange (declared at connect) on a confirm channel,
 * persistent, with `message_id` = the row's id (consumers deduplicate on it), `timestamp`, `type` =
 * the hook, `app_id` = `emqx-exhook` and the MQTT metadata as `mqtt-*` headers. A row is confirmed
 * when the broker acks it; a nack is a refusal. With `mandatory: true`, a message no queue takes
 * comes back (basic.return) and counts as refused too. The optional `queue` is declared with its
 * type (quorum by default) and arguments, and bound.
 *
 * amqplib does not reconnect by itself: a closed connection marks the sink down, and the
 * forwarder's next attempt (after its backoff) connects again.
 */
import { readFileSync } from "node:fs";
import type { ChannelModel, ConfirmChannel, ConsumeMessage } from "amqplib";
import type { Logger } from "../../provider.js";
import { loadOptional } from "../optional-dependency.js";
import type { OutboxRow } from "../store.js";
import type { RabbitmqSinkConfig } from "./config-schema.js";
import { batchOutcomes, failAll, withTimeout, type Sink, type SinkEvents, type SinkOutcome } from "./sink.js";

type Amqp = typeof import("amqplib");

/** The client package, with a message naming the package to install when it is missing. */
function loadAmqp(): Amqp {
  return loadOptional<Amqp>("amqplib", "a bridge sink of kind rabbitmq");
}

/** Loads the client package, so a missing one fails at start wherever the sink will run (see forwarding.ts). */
export function loadRabbitmqClient(): void {
  loadAmqp();
}

/** The URL with its password masked, for logs. */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparsable URL)";
  }
}

/** Creates a RabbitMQ sink; the connection opens on {@link Sink.connect}. */
export function createRabbitmqSink(cfg: RabbitmqSinkConfig, events: SinkEvents, logger?: Logger): Sink {
  const amqp = loadAmqp();
  const shown = maskUrl(cfg.url);
  let conn: ChannelModel | undefined;
  let ch: ConfirmChannel | undefined;
  let connecting: Promise<void> | undefined;
  let up = false;
  /** Ids of messages RabbitMQ returned (mandatory, unroutable) in the batch being sent. */
  const returned = new Set<string>();

  const down = (detail: string) => {
    if (up) events.status("disconnected", detail);
    up = false;
    ch = undefined;
  };

  async function open(): Promise<void> {
    const tls = cfg.tls;
    const socketOptions = {
      timeout: Math.min(cfg.confirmTimeoutMs, 10_000),
      ...(tls
        ? {
            ...(tls.ca ? { ca: [readFileSync(tls.ca)] } : {}),
            ...(tls.cert ? { cert: readFileSync(tls.cert) } : {}),
            ...(tls.key ? { key: readFileSync(tls.key) } : {}),
            rejectUnauthorized: tls.rejectUnauthorized,
            ...(tls.servername ? { servername: tls.servername } : {}),
          }
        : {}),
    };
    const c = await amqp.connect(cfg.url, socketOptions);
    // Without an 'error' listener an EventEmitter error kills the process.
    c.on("error", (err: Error) => logger?.warn({ sink: cfg.name, err: err.message }, "bridge: RabbitMQ connection error"));
    c.on("close", () => {
      if (conn === c) conn = undefined;
      down(`connection to ${shown} closed`);
    });
    c.on("blocked", (reason: string) => logger?.warn({ sink: cfg.name, reason }, "bridge: RabbitMQ blocked publishing (resource alarm)"));
    c.on("unblocked", () => logger?.info({ sink: cfg.name }, "bridge: RabbitMQ unblocked publishing"));
    try {
      const channel = await c.createConfirmChannel();
      channel.on("error", (err: Error) => logger?.warn({ sink: cfg.name, err: err.message }, "bridge: RabbitMQ channel error"));
      channel.on("close", () => {
        if (ch === channel) down("channel closed");
      });
      channel.on("return", (msg: ConsumeMessage) => {
        const id = msg.properties.messageId as string | undefined;
        if (id !== undefined) returned.add(id);
      });
      await channel.assertExchange(cfg.exchange, cfg.exchangeType, { durable: true });
      const q = cfg.queue;
      if (q) {
        await channel.assertQueue(q.name, { durable: true, arguments: { ...q.arguments, "x-queue-type": q.type } }).catch((err: Error) => {
          if (!/PRECONDITION/.test(err.message)) throw err;
          throw new Error(
            `${err.message} (the queue exists with other arguments: set the sink's queue.type and queue.arguments to match it, or leave out queue so that the sink does not declare it)`,
          );
        });
        await channel.bindQueue(q.name, cfg.exchange, q.bindingKey);
      }
      conn = c;
      ch = channel;
    } catch (err) {
      await c.close().catch(() => {});
      throw err;
    }
    up = true;
    events.status("connected", shown);
  }

  return {
    name: cfg.name,
    kind: "rabbitmq",
    connect() {
      if (ch && up) return Promise.resolve();
      return (connecting ??= open().finally(() => (connecting = undefined)));
    },
    connected: () => up,
    async send(rows: readonly OutboxRow[]): Promise<SinkOutcome[]> {
      const channel = ch;
      if (!channel || !up) return failAll(rows, "not connected to RabbitMQ");
      returned.clear();
      const outcomes = batchOutcomes(rows.length);
      let error = "";
      try {
        for (let i = 0; i < rows.length; i++) {
          const r = rows[i] as OutboxRow;
          const p = r.payload;
          const ok = channel.publish(
            cfg.exchange,
            r.dest,
            Buffer.from(p.buffer, p.byteOffset, p.byteLength),
            {
              persistent: true,
              mandatory: cfg.mandatory,
              messageId: r.id,
              timestamp: Math.floor(r.createdAt / 1000),
              type: r.headers["hook"] ?? "",
              appId: "emqx-exhook",
              headers: amqpHeaders(r.headers),
            },
            (err: unknown) => {
              if (outcomes.has(i)) return;
              if (err)
                outcomes.set(i, {
                  error: `RabbitMQ nacked: ${(err as Error).message ?? String(err)}`,
                  rejected: !/closed/i.test(String((err as Error).message)),
                });
              else if (returned.has(r.id))
                outcomes.set(i, {
                  error: `RabbitMQ returned it: no queue bound for routing key ${JSON.stringify(r.dest)} on exchange ${cfg.exchange}`,
                  rejected: true,
                });
              else outcomes.set(i, null);
            },
          );
          // The socket's buffer is full: wait until it drains before writing more.
          if (!ok)
            await withTimeout(
              new Promise<void>((resolve) => channel.once("drain", () => resolve())),
              cfg.confirmTimeoutMs,
              "RabbitMQ drain",
            );
        }
        await withTimeout(outcomes.all, cfg.confirmTimeoutMs, "RabbitMQ");
      } catch (err) {
        error = (err as Error).message;
      }
      return outcomes.result(error);
    },
    async close() {
      const c = conn;
      conn = undefined;
      ch = undefined;
      if (c) await withTimeout(c.close(), 2000, "RabbitMQ close").catch(() => {});
      if (up) events.status("disconnected", "closed");
      up = false;
    },
  };
}

/** MQTT metadata as an AMQP header table (`mqtt-topic`, `mqtt-qos`, ...), string values. */
function amqpHeaders(h: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k in h) out[`mqtt-${k}`] = h[k] as string;
  return out;
}
