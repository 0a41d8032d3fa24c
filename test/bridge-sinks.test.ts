/**
 * Each sink against its real engine (the machine's on the standard port, or a throwaway one from
 * scripts/with-brokers.sh), end to end: fake EMQX → hook → outbox (SQLite) → forwarder → engine,
 * read back with the engine's own client. Checks destinations from templates, the MQTT metadata
 * as headers/fields, the dedup id, event hooks, engine-side dedup and refusals. Names are unique
 * per run.
 */
import { create } from "@bufbuild/protobuf";
import { MessagePublishRequestSchema, PropertySchema } from "../gen/emqx/exhook/v3/exhook_pb";
import { fakeMessage, fakeMeta } from "../src/testing/index";
import {
  createNatsSink,
  createRabbitmqSink,
  sinkSchema,
  type NatsSinkConfig,
  type OutboxRow,
  type RabbitmqSinkConfig,
} from "../src/usecases/index";
import {
  AMQP_URL,
  NATS_URL,
  REDIS_URL,
  amqpAdmin,
  drainAmqpQueue,
  eventually,
  natsAdmin,
  readNatsStream,
  readRedisStream,
  redisClient,
  skipNotice,
  unique,
} from "./helpers/brokers";
import { openTestBridge } from "./helpers/bridge";

skipNotice("bridge-sinks", {
  "NATS (EXHOOK_TEST_NATS_URL)": NATS_URL,
  "RabbitMQ (EXHOOK_TEST_AMQP_URL)": AMQP_URL,
  "Redis (EXHOOK_TEST_REDIS_URL)": REDIS_URL,
});
const natsTest = NATS_URL ? test : test.skip;
const amqpTest = AMQP_URL ? test : test.skip;
const redisTest = REDIS_URL ? test : test.skip;

const CLIENTS = ["dev.1", "dev 2"];

/** Publishes one v3 message with MQTT 5 properties straight into the handler, as EMQX 5.9+ sends it. */
async function publishWithProps(handler: unknown, clientid: string, topic: string): Promise<string> {
  const message = fakeMessage({
    from: clientid,
    topic,
    qos: 2,
    payload: "with-props",
    headers: { username: "carol", protocol: "mqtt", peerhost: "10.1.2.3" },
  });
  const req = create(MessagePublishRequestSchema, {
    message,
    meta: fakeMeta(),
    props: [create(PropertySchema, { name: "Content-Type", value: "text/plain" })],
    userProps: [create(PropertySchema, { name: "k", value: "v1" }), create(PropertySchema, { name: "k", value: "v2" })],
  });
  const h = (handler as { handler: (r: unknown, ctx: unknown) => unknown }).handler;
  h(req, {});
  return message.id;
}

natsTest("NATS JetStream: subject from the template, Nats-Msg-Id, mqtt-* headers, events; a re-send is deduplicated", async () => {
  const prefix = unique("br");
  const stream = unique("BR");
  const tb = await openTestBridge(
    {
      sinks: [
        {
          name: "js",
          kind: "nats",
          servers: [NATS_URL],
          subject: `${prefix}.\${clientid}.\${topic}`,
          eventSubject: `${prefix}.ev.\${hook}`,
          stream: { name: stream, subjects: [`${prefix}.>`], storage: "memory" },
          hooks: ["message.publish", "client.connected", "client.disconnected"],
          topics: ["sensors/#", "a/#"],
        },
      ],
    },
    CLIENTS,
  );
  try {
    await tb.emqx.publish("dev.1", { topic: "sensors/room 1/t", payload: "21.5", qos: 1 });
    await tb.emqx.publish("dev.1", { topic: "other/x", payload: "not bridged", qos: 0 });
    const propsId = await publishWithProps((tb.bridge.handlers as Record<string, unknown>)["onMessagePublish"], "dev 2", "a//b");
    await tb.emqx.disconnect("dev 2", "normal");
    const landed = await eventually(
      async () => {
        const l = await readNatsStream(NATS_URL as string, stream).catch(() => []);
        return l.length >= 5 ? l : undefined;
      },
      10_000,
      "5 messages in the stream",
    );
    expect(landed.length).toBe(5);
    const msgs = landed.filter((l) => l.meta["hook"] === "message.publish");
    expect(msgs.map((l) => l.dest)).toEqual([`${prefix}.dev%2E1.sensors.room%201.t`, `${prefix}.dev%202.a._.b`]);
    const m0 = msgs[0] as (typeof msgs)[0];
    expect(m0.payload).toBe("21.5");
    expect(m0.meta).toMatchObject({
      hook: "message.publish",
      topic: "sensors/room 1/t",
      qos: "1",
      clientid: "dev.1",
      username: "user-dev.1",
      node: "emqx@127.0.0.1",
      protocol: "mqtt",
    });
    expect(m0.meta["id"]).toMatch(/^[0-9A-F]{32}$/);
    expect(m0.meta["message-id"]).toBe(m0.meta["id"]);
    expect(Number(m0.meta["timestamp"])).toBeGreaterThan(Date.now() - 60_000);
    const m1 = msgs[1] as (typeof msgs)[0];
    expect(m1.meta).toMatchObject({
      id: propsId,
      qos: "2",
      clientid: "dev 2",
      username: "carol",
      peerhost: "10.1.2.3",
      "user-properties": '[["k","v1"],["k","v2"]]',
      properties: '{"Content-Type":"text/plain"}',
    });
    const events = landed.filter((l) => l.meta["hook"] !== "message.publish");
    expect(events.map((e) => [e.dest, e.meta["clientid"]])).toEqual([
      [`${prefix}.ev.client.connected`, "dev.1"],
      [`${prefix}.ev.client.connected`, "dev 2"],
      [`${prefix}.ev.client.disconnected`, "dev 2"],
    ]);
    const ev = JSON.parse((events[2] as (typeof events)[0]).payload) as { clientinfo: { clientid: string }; reason: string };
    expect(ev.clientinfo.clientid).toBe("dev 2");
    expect(ev.reason).toBe("normal");
    expect((events[2] as (typeof events)[0]).meta["reason"]).toBe("normal");

    // At-least-once means re-sends: the same row again is dropped by JetStream (Nats-Msg-Id).
    const events2: string[] = [];
    const sink = createNatsSink(
      sinkSchema.parse({ name: "js2", kind: "nats", servers: [NATS_URL], confirmTimeoutMs: 3000 }) as NatsSinkConfig,
      { status: (s) => events2.push(s) },
    );
    await sink.connect();
    const row: OutboxRow = {
      seq: 1,
      sink: "js2",
      id: m0.meta["id"] as string,
      key: "dev.1",
      khash: 0,
      dest: m0.dest,
      payload: new TextEncoder().encode("again"),
      headers: {},
      createdAt: Date.now(),
      attempts: 0,
      parked: false,
      lastError: "",
    };
    expect(await sink.send([row])).toEqual([null]);
    // A subject no stream takes: refused (rejected, so it counts towards parking).
    const [refused] = await sink.send([{ ...row, id: "x1", dest: `${unique("nostream")}.x` }]);
    expect(refused).toEqual({ error: expect.stringContaining("no responders") as string, rejected: true });
    await sink.close();
    expect(events2).toEqual(["connected", "disconnected"]);
    expect((await readNatsStream(NATS_URL as string, stream)).length).toBe(landed.length);
    expect(tb.logger.has("info", /bridge: engine connected/)).toBe(true);
  } finally {
    await tb.close();
    const admin = await natsAdmin(NATS_URL as string);
    await admin.jsm.streams.delete(stream).catch(() => false);
    await admin.close();
  }
});

amqpTest(
  "RabbitMQ: durable exchange, routing key from the template, message_id/timestamp/type/app_id, persistent, mqtt-* headers; mandatory refusals",
  async () => {
    const exchange = unique("ex");
    const queue = unique("q");
    const tb = await openTestBridge(
      {
        sinks: [
          {
            name: "rb",
            kind: "rabbitmq",
            url: AMQP_URL,
            exchange,
            routingKey: "mqtt.${topic}",
            queue: { name: queue, bindingKey: "mqtt.sensors.#" },
            mandatory: true,
            retry: { initialMs: 20, maxMs: 100, maxAttempts: 2 },
          },
        ],
      },
      CLIENTS,
    );
    try {
      await tb.emqx.publish("dev.1", { topic: "sensors/a.b/c", payload: "x1", qos: 1 });
      await tb.emqx.publish("dev 2", { topic: "sensors/2", payload: "x2", qos: 0 });
      // No queue is bound for this routing key: mandatory returns it, counted as a refusal, parked after 2.
      await tb.emqx.publish("dev 2", { topic: "elsewhere/1", payload: "x3", qos: 0 });
      const got = await eventually(
        async () => {
          const st = tb.bridge.stats().sinks["rb"];
          return st && st.delivered >= 2 && st.parked >= 1 ? st : undefined;
        },
        10_000,
        "2 delivered and 1 parked",
      );
      expect(got).toMatchObject({ delivered: 2, parked: 1, rejected: 2 });
      const msgs = await drainAmqpQueue(AMQP_URL as string, queue);
      expect(msgs.map((m) => [m.dest, m.payload])).toEqual([
        ["mqtt.sensors.a/b.c", "x1"],
        ["mqtt.sensors.2", "x2"],
      ]);
      const p = (msgs[0] as (typeof msgs)[0]).props;
      expect(p.messageId).toMatch(/^[0-9A-F]{32}$/);
      expect(p).toMatchObject({ type: "message.publish", appId: "emqx-exhook", deliveryMode: 2 });
      expect(Math.abs((p.timestamp as number) - Date.now() / 1000)).toBeLessThan(60);
      expect((msgs[0] as (typeof msgs)[0]).meta).toMatchObject({
        topic: "sensors/a.b/c",
        qos: "1",
        clientid: "dev.1",
        username: "user-dev.1",
        hook: "message.publish",
      });
      const parked = await tb.store.outboxList("rb", { parked: true, limit: 10 });
      expect(parked.map((r) => [r.dest, r.attempts, r.lastError.includes("no queue bound")])).toEqual([["mqtt.elsewhere.1", 2, true]]);
    } finally {
      await tb.close();
      const admin = await amqpAdmin(AMQP_URL as string);
      await admin.ch.deleteQueue(queue).catch(() => {});
      await admin.ch.deleteExchange(exchange).catch(() => {});
      await admin.close();
    }
  },
);

amqpTest(
  "RabbitMQ queue declaration: quorum by default with the given arguments; a queue of another type fails the connect with what to change",
  async () => {
    const exchange = unique("ex");
    const quorum = unique("q");
    const classic = unique("q");
    const sinkFor = (queue: object) =>
      createRabbitmqSink(sinkSchema.parse({ name: "rq", kind: "rabbitmq", url: AMQP_URL, exchange, queue }) as RabbitmqSinkConfig, {
        status() {},
      });
    const admin = await amqpAdmin(AMQP_URL as string);
    try {
      const a = sinkFor({ name: quorum, arguments: { "x-max-length": 1000, "x-overflow": "reject-publish" } });
      await a.connect();
      await a.close();
      // Declared as a quorum queue with those arguments: the same declaration is accepted, any other is refused.
      await admin.ch.assertQueue(quorum, {
        durable: true,
        arguments: { "x-queue-type": "quorum", "x-max-length": 1000, "x-overflow": "reject-publish" },
      });
      const other = await amqpAdmin(AMQP_URL as string);
      await expect(other.ch.assertQueue(quorum, { durable: true, arguments: { "x-queue-type": "classic" } })).rejects.toThrow(
        /PRECONDITION_FAILED/,
      );
      await other.close();

      // An existing classic queue: the default (quorum) cannot declare it, and says what to change.
      await admin.ch.assertQueue(classic, { durable: true, arguments: { "x-queue-type": "classic" } });
      const b = sinkFor({ name: classic });
      await expect(b.connect()).rejects.toThrow(
        /inequivalent arg 'x-queue-type'.*set the sink's queue\.type and queue\.arguments to match it/,
      );
      expect(b.connected()).toBe(false);
      await b.close();
      const c = sinkFor({ name: classic, type: "classic" });
      await c.connect();
      expect(c.connected()).toBe(true);
      await c.close();
      expect(() =>
        sinkSchema.parse({ name: "rq", kind: "rabbitmq", queue: { name: "q", arguments: { "x-queue-type": "stream" } } }),
      ).toThrow(/set queue.type instead of x-queue-type/);
    } finally {
      await admin.ch.deleteQueue(quorum).catch(() => {});
      await admin.ch.deleteQueue(classic).catch(() => {});
      await admin.ch.deleteExchange(exchange).catch(() => {});
      await admin.close();
    }
  },
);

redisTest(
  "Redis Streams: stream key from the template, id + metadata fields + payload, MAXLEN ~ trimming; WRONGTYPE is a refusal",
  async () => {
    const key = unique("mqtt");
    const tb = await openTestBridge(
      {
        sinks: [
          {
            name: "rs",
            kind: "redis",
            url: REDIS_URL,
            stream: `${key}:\${clientid}`,
            eventStream: `${key}:events`,
            maxLen: 100,
            hooks: ["message.publish", "session.subscribed"],
          },
        ],
      },
      CLIENTS,
      // Forwarding on this thread: the test also calls the sink directly (bridge.sinks).
      { forwardStore: false },
    );
    const r = redisClient(REDIS_URL as string);
    try {
      await tb.emqx.subscribe("dev.1", "sensors/#", 1);
      await tb.publishMany(["dev.1"], 0, 300);
      await tb.emqx.publish("dev 2", { topic: "t/binary", payload: new Uint8Array([0, 255, 10]), qos: 0 });
      const all = await eventually(
        async () => {
          const st = tb.bridge.stats().sinks["rs"];
          return st && st.delivered >= 302 ? st : undefined;
        },
        10_000,
        "301 messages and 1 event delivered",
      );
      expect(all.delivered).toBe(302);
      const dev1 = await readRedisStream(REDIS_URL as string, `${key}:dev.1`);
      // MAXLEN ~ 100 trims in whole macro nodes: about 100, never all 300; the newest is last.
      expect(dev1.length).toBeGreaterThanOrEqual(100);
      expect(dev1.length).toBeLessThan(300);
      expect(dev1[dev1.length - 1]?.payload).toBe("dev.1-299");
      expect(dev1[dev1.length - 1]?.meta).toMatchObject({
        hook: "message.publish",
        topic: "t/dev.1",
        qos: "1",
        clientid: "dev.1",
        username: "user-dev.1",
      });
      expect(dev1[dev1.length - 1]?.meta["id"]).toMatch(/^[0-9A-F]{32}$/);
      const bin = await r.xrangeBuffer(`${key}:dev 2`, "-", "+");
      const fields = (bin[0] as [Buffer, Buffer[]])[1];
      const at = fields.findIndex((f) => f.toString() === "payload");
      // The id field comes first, once; the metadata fields follow, the payload last.
      expect(fields.filter((_f, i) => i % 2 === 0).map(String)).toEqual([
        "id",
        "hook",
        "topic",
        "qos",
        "clientid",
        "username",
        "node",
        "timestamp",
        "message-id",
        "peerhost",
        "protocol",
        "payload",
      ]);
      expect([...(fields[at + 1] as Buffer)]).toEqual([0, 255, 10]);
      // The session event went to the template with the subscriber's client id; its payload is the request as JSON.
      const events = await readRedisStream(REDIS_URL as string, `${key}:events`);
      expect(events.map((e) => [e.meta["hook"], e.meta["clientid"], e.meta["topic"], e.meta["content-type"]])).toEqual([
        ["session.subscribed", "dev.1", "sensors/#", "application/json"],
      ]);
      expect(JSON.parse((events[0] as (typeof events)[0]).payload)).toMatchObject({
        clientinfo: { clientid: "dev.1" },
        topic: "sensors/#",
        subopts: { qos: 1 },
      });
      // WRONGTYPE: the key exists and is not a stream. Redis answers with an error reply: a refusal.
      await (r as unknown as { set(k: string, v: string): Promise<unknown> }).set(`${key}:wrong`, "x");
      const [bad] = await tb.bridge.sinks[0]!.send([
        {
          seq: 1,
          sink: "rs",
          id: "w1",
          key: "k",
          khash: 0,
          dest: `${key}:wrong`,
          payload: new Uint8Array(1),
          headers: {},
          createdAt: Date.now(),
          attempts: 0,
          parked: false,
          lastError: "",
        },
      ]);
      expect(bad).toEqual({ error: expect.stringContaining("WRONGTYPE") as string, rejected: true });
    } finally {
      await tb.close();
      await r.del(`${key}:dev.1`, `${key}:dev 2`, `${key}:wrong`, `${key}:events`);
      await r.quit();
    }
  },
);
