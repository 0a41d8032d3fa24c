/**
 * The `bridge` section of the configuration (validated with zod in src/usecases/config.ts): which
 * hooks and topics go to which engine, how they are named there, how the outbox and the forwarders
 * behave. Every key has a default except the sinks themselves; docs/bridging.md explains each.
 */
import { z } from "zod";
import { topicFilterError } from "../../topic.js";

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);

/** Hooks a sink can bridge: message.publish and the notification hooks (not authenticate/authorize). */
export const BRIDGE_HOOKS = [
  "message.publish",
  "message.delivered",
  "message.acked",
  "message.dropped",
  "client.connect",
  "client.connack",
  "client.connected",
  "client.disconnected",
  "client.subscribe",
  "client.unsubscribe",
  "session.created",
  "session.subscribed",
  "session.unsubscribed",
  "session.resumed",
  "session.discarded",
  "session.takenover",
  "session.terminated",
] as const;

/** A bridged hook name. */
export type BridgeHook = (typeof BRIDGE_HOOKS)[number];

/** The four message hooks: their payload is the MQTT payload and topic filters apply. */
export const MESSAGE_HOOKS: readonly BridgeHook[] = ["message.publish", "message.delivered", "message.acked", "message.dropped"];

const topicFilter = z.string().superRefine((t, ctx) => {
  const err = topicFilterError(t);
  if (err) ctx.addIssue({ code: "custom", message: `not a valid MQTT topic filter: ${err}` });
});

/** A secret: a literal, or `${env:NAME}` read from the environment at start. */
const secret = z.string().min(1);

/** PEM files for TLS to the engine. */
const tlsSchema = z.strictObject({
  /** CA bundle to verify the engine's certificate (default: the system's CAs). */
  ca: z.string().min(1).optional(),
  /** Client certificate and key, for engines that require one. */
  cert: z.string().min(1).optional(),
  key: z.string().min(1).optional(),
  /** Verify the engine's certificate. Default true; false only for tests. */
  rejectUnauthorized: z.boolean().default(true),
  /** Server name to verify (SNI), when it differs from the host in the URL. */
  servername: z.string().min(1).optional(),
});

const common = {
  /** Unique name: metrics label, outbox key (keep it stable: renaming orphans queued rows). */
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1-64 characters of A-Z a-z 0-9 _ . -"),
  /** Hooks to bridge. Default: message.publish only. */
  hooks: z.array(z.enum(BRIDGE_HOOKS)).min(1).default(["message.publish"]),
  /** Topic filters for the message hooks (client/session events are not filtered). Default all. */
  topics: z.array(topicFilter).min(1).default(["#"]),
  /** Forwarding batches: at most `size` rows per send, waiting up to `lingerMs` for a batch to fill. */
  batch: z
    .strictObject({
      size: int(1, 10_000).default(500),
      lingerMs: int(0, 60_000).default(5),
    })
    .prefault({}),
  /** The outbox bound for this sink and what happens when it is reached. */
  outbox: z
    .strictObject({
      maxDepth: int(1).default(1_000_000),
      overflow: z.enum(["refuse-new", "drop-oldest"]).default("refuse-new"),
    })
    .prefault({}),
  /** Retries: full-jitter exponential backoff between `initialMs` and `maxMs`; park after `maxAttempts` refusals (0 = never). */
  retry: z
    .strictObject({
      initialMs: int(1).default(200),
      maxMs: int(1).default(30_000),
      maxAttempts: int(0).default(10),
    })
    .prefault({}),
  /** Longest wait for the engine to confirm a batch, in ms (then the batch is retried). */
  confirmTimeoutMs: int(100, 120_000).default(5000),
  /** Whether /readyz reports not ready while this engine is unreachable. Default false (the outbox buffers). */
  readiness: z.boolean().default(false),
  tls: tlsSchema.optional(),
};

const natsSink = z.strictObject({
  kind: z.literal("nats"),
  ...common,
  servers: z.array(z.string().min(1)).min(1).default(["nats://127.0.0.1:4222"]),
  /** Subject of message hooks. */
  subject: z.string().min(1).default("mqtt.${topic}"),
  /** Subject of client/session events. */
  eventSubject: z.string().min(1).default("mqtt_events.${hook}"),
  user: secret.optional(),
  password: secret.optional(),
  token: secret.optional(),
  /** A NATS credentials file (JWT + NKey seed). */
  credsFile: z.string().min(1).optional(),
  /** Creates this stream at connect when it does not exist (an existing stream is left as it is). */
  stream: z
    .strictObject({
      name: z.string().regex(/^[^\s.*>]{1,255}$/, "must be a stream name without spaces, '.', '*' or '>'"),
      subjects: z.array(z.string().min(1)).min(1),
      storage: z.enum(["file", "memory"]).default("file"),
    })
    .optional(),
});

const rabbitmqSink = z.strictObject({
  kind: z.literal("rabbitmq"),
  ...common,
  /** amqp:// or amqps:// URL with user, password and vhost. */
  url: secret.default("amqp://guest:guest@127.0.0.1:5672"),
  /** Durable exchange the messages are published to (declared at connect). */
  exchange: z.string().min(1).max(255).default("mqtt"),
  exchangeType: z.enum(["topic", "direct", "fanout", "headers"]).default("topic"),
  routingKey: z.string().min(1).default("mqtt.${topic}"),
  eventRoutingKey: z.string().min(1).default("mqtt_events.${hook}"),
  /**
   * Publish with the mandatory flag: a message no queue is bound for comes back from RabbitMQ and
   * counts as refused (retried, then parked) instead of being confirmed and dropped by the broker.
   */
  mandatory: z.boolean().default(false),
  /** Declares this durable queue and binds it to the exchange at connect (optional convenience). */
  queue: z
    .strictObject({
      name: z.string().min(1).max(255),
      bindingKey: z.string().max(255).default("#"),
      /**
       * `quorum` (replicated, fsynced before the confirm: RabbitMQ's queue type for data that must
       * not be lost), `classic` or `stream`. Must match the queue when it exists already.
       */
      type: z.enum(["quorum", "classic", "stream"]).default("quorum"),
      /** More queue arguments (`x-max-length`, `x-overflow`, `x-delivery-limit`, ...). */
      arguments: z
        .record(
          z
            .string()
            .regex(/^x-/, "must be an x- argument")
            .refine((k) => k !== "x-queue-type", "set queue.type instead of x-queue-type"),
          z.union([z.string(), z.number(), z.boolean()]),
        )
        .default({}),
    })
    .optional(),
});

const redisSink = z.strictObject({
  kind: z.literal("redis"),
  ...common,
  /** redis:// or rediss:// URL (user and password may be in it). */
  url: secret.default("redis://127.0.0.1:6379"),
  username: secret.optional(),
  password: secret.optional(),
  /** Stream key of message hooks. */
  stream: z.string().min(1).default("mqtt:messages"),
  /** Stream key of client/session events. */
  eventStream: z.string().min(1).default("mqtt:events"),
  /** `XADD ... MAXLEN ~ maxLen`: the stream is trimmed to about this many entries (0 = no trimming). */
  maxLen: int(0).default(1_000_000),
});

/** One sink. */
export const sinkSchema = z.discriminatedUnion("kind", [natsSink, rabbitmqSink, redisSink]);

/** The `bridge` section. */
export const bridgeSchema = z
  .strictObject({
    enabled: z.boolean().default(false),
    /** Partitions of each sink's outbox: the most instances forwarding one sink in parallel. Same on every instance. */
    partitions: int(1, 1024).default(16),
    /** Lease of a partition, in ms: how long a dead instance's partitions wait before another takes them. */
    leaseMs: int(1000, 600_000).default(15_000),
    /** How often an idle forwarder looks for rows written by other instances, in ms. */
    pollMs: int(10, 600_000).default(1000),
    /**
     * Where the forwarders run. `thread` (default): a worker thread of their own, with their own
     * store connection and engine clients, at a lower CPU priority (`nice`), so forwarding never
     * holds up an answer to EMQX and a crash in an engine client cannot end the server. `main`: on
     * the event loop that answers EMQX (always so for a store the stack did not open from this
     * file, such as an in-memory one).
     */
    forwarding: z
      .strictObject({
        mode: z.enum(["thread", "main"]).default("thread"),
        /** Linux: the thread's nice value (0 = the serving thread's priority; 19 = the lowest). */
        nice: int(0, 19).default(10),
      })
      .prefault({}),
    /** The writer between the hooks and the outbox. */
    writer: z
      .strictObject({
        /** Entries waiting for their commit, at most; more are refused (counted). */
        maxQueue: int(1).default(20_000),
        /** Most entries per outbox transaction. */
        batchSize: int(1, 10_000).default(500),
        /** Longest an entry waits for its batch, in ms. */
        lingerMs: int(0, 10_000).default(5),
        /** Extra attempts of a failed outbox write, before its entries are counted as lost. */
        retries: int(0, 100).default(5),
      })
      .prefault({}),
    /** message.publish waits for the outbox commit; keep() once committed, `fallback` otherwise. */
    persistBeforeRoute: z
      .strictObject({
        enabled: z.boolean().default(false),
        /** Budget of the publish hook in this mode, in ms (keep it below EMQX's request_timeout). */
        timeoutMs: int(1, 60_000).default(2000),
        /** Answer when the commit failed, was refused or ran out of time. */
        fallback: z.enum(["drop", "keep"]).default("drop"),
      })
      .prefault({}),
    sinks: z
      .array(sinkSchema)
      .default([])
      .superRefine((sinks, ctx) => {
        const seen = new Set<string>();
        sinks.forEach((s, i) => {
          if (seen.has(s.name))
            ctx.addIssue({ code: "custom", path: [i, "name"], message: `duplicate sink name ${JSON.stringify(s.name)}` });
          seen.add(s.name);
          if (s.retry.maxMs < s.retry.initialMs)
            ctx.addIssue({ code: "custom", path: [i, "retry", "maxMs"], message: "must be at least retry.initialMs" });
          if (s.tls && (s.tls.cert === undefined) !== (s.tls.key === undefined))
            ctx.addIssue({ code: "custom", path: [i, "tls"], message: "give both cert and key, or neither" });
        });
      }),
  })
  .prefault({})
  .superRefine((b, ctx) => {
    b.sinks.forEach((s, i) => {
      // A lease must outlive a batch's confirm wait, so an instance renews between batches in time.
      if (s.confirmTimeoutMs * 3 > b.leaseMs) {
        ctx.addIssue({
          code: "custom",
          path: ["sinks", i, "confirmTimeoutMs"],
          message: `must be at most a third of bridge.leaseMs (${b.leaseMs})`,
        });
      }
    });
    if (b.enabled && b.sinks.length === 0)
      ctx.addIssue({ code: "custom", path: ["sinks"], message: "bridge.enabled is true but no sink is configured" });
  });

/** A validated sink. */
export type SinkConfig = z.output<typeof sinkSchema>;
/** A validated NATS sink. */
export type NatsSinkConfig = Extract<SinkConfig, { kind: "nats" }>;
/** A validated RabbitMQ sink. */
export type RabbitmqSinkConfig = Extract<SinkConfig, { kind: "rabbitmq" }>;
/** A validated Redis sink. */
export type RedisSinkConfig = Extract<SinkConfig, { kind: "redis" }>;
/** The validated `bridge` section. */
export type BridgeConfig = z.output<typeof bridgeSchema>;
