/**
 * From hook calls to outbox entries, in two steps so the hook's hot path stays small:
 *
 * 1. {@link Capture} (on the hook's path): a reference to the request, a copy of the payload (the
 *    decoded bytes may be a view into the whole request buffer) and the time; nothing else.
 * 2. {@link buildEntry} (in the writer, off the hook's path, just before the commit): the stable
 *    id, the ordering key and its hash, the metadata, the rendered destination.
 *
 * Metadata (sent as `mqtt-<name>` headers to NATS and RabbitMQ, as fields to Redis):
 * `id`, `hook`, `topic`, `qos`, `clientid` (publisher), `username` (publisher's), `node`,
 * `timestamp` (ms; EMQX's for messages, when seen for events), `message-id` (EMQX's),
 * `peerhost`/`protocol` (when EMQX sent them), `user-properties` (MQTT 5 User-Property pairs as a
 * JSON array of [name, value], EMQX 5.9+/6.x only), `properties` (other MQTT 5 PUBLISH properties as a
 * JSON object, 5.9+/6.x), `subscriber` + `subscriber-username` (delivered/acked), `reason`
 * (dropped, disconnected, terminated, ...). EMQX does not send the retain flag to ExHook, so there
 * is none.
 */
import { createHash, randomUUID } from "node:crypto";
import { toJson, type DescMessage, type Message as PbMessage } from "@bufbuild/protobuf";
import type { Message } from "../../../gen/emqx/exhook/v3/exhook_pb.js";
import { HOOKS } from "../../hooks.js";
import type { OutboxEntry } from "../store.js";
import { MESSAGE_HOOKS, type BridgeHook } from "./config-schema.js";
import { keyHash } from "./outbox-shared.js";
import { destinationError, type Template, type TemplateStyle } from "./template.js";

/** What a sink needs to turn a capture into an entry. */
export interface SinkRoute {
  readonly name: string;
  readonly style: TemplateStyle;
  /** Destination of message hooks. */
  readonly messageTemplate: Template;
  /** Destination of client/session events. */
  readonly eventTemplate: Template;
}

/** Writer states of a capture. */
export const CaptureState = {
  queued: 0,
  committed: 1,
  /** Already in the outbox (same id): counts as committed. */
  duplicate: 2,
  /** Refused: writer queue full, or outbox full with `refuse-new`. */
  refused: 3,
  /** The outbox write failed every attempt. */
  failed: 4,
  /** No valid destination could be rendered. */
  unroutable: 5,
  /** Persist-before-route: the hook's budget ran out before the write started (withdrawn). */
  expired: 6,
} as const;

/** One hook call for one sink, on its way to the outbox. */
export interface Capture {
  readonly route: SinkRoute;
  readonly hook: BridgeHook;
  readonly request: unknown;
  /** Copy of the message payload (message hooks). */
  readonly payload: Uint8Array | undefined;
  /** When the hook saw it (ms). */
  readonly at: number;
  /** Persist-before-route: when the framework stops waiting (ctx.deadline); 0 otherwise. */
  readonly deadline: number;
  state: number;
  /** Persist-before-route: called once the capture's state is final. */
  done: (() => void) | undefined;
}

const SCHEMA = new Map<string, DescMessage>(HOOKS.map((h) => [h.name, h.input]));
const SHORT: Readonly<Record<string, string>> = {
  "message.dropped": "dropped",
  "message.delivered": "delivered",
  "message.acked": "acked",
};
const utf8 = new TextEncoder();

interface ClientLike {
  readonly clientid?: string;
  readonly username?: string;
  readonly node?: string;
  readonly peerhost?: string;
  readonly protocol?: string;
}
interface RequestLike {
  readonly message?: Message;
  readonly clientinfo?: ClientLike;
  readonly conninfo?: ClientLike;
  readonly meta?: { readonly node?: string };
  readonly reason?: string;
  readonly topic?: string;
  readonly props?: ReadonlyArray<{ readonly name: string; readonly value: string }>;
  readonly userProps?: ReadonlyArray<{ readonly name: string; readonly value: string }>;
}

const short = (s: string) => createHash("sha256").update(s).digest("hex").slice(0, 16);

/** The entry for a capture, or why it has no valid destination. */
export function buildEntry(c: Capture): OutboxEntry | string {
  const req = c.request as RequestLike;
  const isMessage = (MESSAGE_HOOKS as readonly string[]).includes(c.hook);
  const headers: Record<string, string> = {};
  let id: string;
  let key: string;
  let payload: Uint8Array;
  let topic = "";
  let qos = "";
  let clientid: string;
  let username: string;
  let node: string;
  if (isMessage) {
    const m = req.message as Message;
    const sub = c.hook === "message.delivered" || c.hook === "message.acked" ? req.clientinfo : undefined;
    clientid = m.from;
    username = m.headers["username"] ?? "";
    node = m.node;
    topic = m.topic;
    qos = String(m.qos);
    key = sub?.clientid ?? m.from;
    const base = m.id || randomUUID().replace(/-/g, "").toUpperCase();
    id = c.hook === "message.publish" ? base : `${base}:${SHORT[c.hook]}${sub ? `:${short(sub.clientid ?? "")}` : ""}`;
    payload = c.payload ?? new Uint8Array(0);
    headers["id"] = id;
    headers["hook"] = c.hook;
    headers["topic"] = m.topic;
    headers["qos"] = qos;
    headers["clientid"] = clientid;
    headers["username"] = username;
    headers["node"] = node;
    headers["timestamp"] = String(m.timestamp);
    headers["message-id"] = m.id;
    if (m.headers["peerhost"] !== undefined) headers["peerhost"] = m.headers["peerhost"];
    if (m.headers["protocol"] !== undefined) headers["protocol"] = m.headers["protocol"];
    if (sub) {
      headers["subscriber"] = sub.clientid ?? "";
      headers["subscriber-username"] = sub.username ?? "";
    }
    if (c.hook === "message.dropped" && req.reason !== undefined) headers["reason"] = req.reason;
    if (req.userProps && req.userProps.length > 0) headers["user-properties"] = JSON.stringify(req.userProps.map((p) => [p.name, p.value]));
    if (req.props && req.props.length > 0)
      headers["properties"] = JSON.stringify(Object.fromEntries(req.props.map((p) => [p.name, p.value])));
  } else {
    const who = req.clientinfo ?? req.conninfo ?? {};
    clientid = who.clientid ?? "";
    username = who.username ?? "";
    node = who.node || req.meta?.node || "";
    key = clientid;
    id = randomUUID();
    if (req.topic !== undefined) topic = req.topic;
    const schema = SCHEMA.get(c.hook);
    payload = utf8.encode(JSON.stringify(schema ? toJson(schema, c.request as PbMessage) : {}));
    headers["id"] = id;
    headers["hook"] = c.hook;
    headers["clientid"] = clientid;
    headers["username"] = username;
    headers["node"] = node;
    headers["timestamp"] = String(c.at);
    headers["content-type"] = "application/json";
    if (topic !== "") headers["topic"] = topic;
    if (req.reason !== undefined && req.reason !== "") headers["reason"] = req.reason;
    if (who.peerhost) headers["peerhost"] = who.peerhost;
  }
  const values = { topic, clientid, username, node, hook: c.hook, qos };
  const dest = (isMessage ? c.route.messageTemplate : c.route.eventTemplate)(values);
  const err = destinationError(dest, c.route.style);
  if (err) return `${JSON.stringify(dest)}: ${err}`;
  return { sink: c.route.name, id, key, khash: keyHash(key), dest, payload, headers, createdAt: c.at };
}
