/**
 * Fixture builders: requests' building blocks filled the way EMQX fills them (node
 * `emqx@127.0.0.1`, 32-hex message ids, millisecond timestamps, `username`/`protocol`/`peerhost`
 * headers, proto_ver "5", ...), so handler tests see realistic input. Each builder takes overrides.
 * Pure: no I/O, no `node:` imports.
 */
import { create } from "@bufbuild/protobuf";
import * as v3 from "../../gen/emqx/exhook/v3/exhook_pb.js";

/** The node name the fixtures use by default. */
export const FAKE_NODE = "emqx@127.0.0.1";

const encoder = new TextEncoder();
let portCounter = 0;

/** A fresh EMQX-style message id: 32 upper-case hex characters (a 128-bit GUID). */
export function fakeMessageId(): string {
  let s = "";
  for (let i = 0; i < 32; i++) s += "0123456789ABCDEF"[Math.floor(Math.random() * 16)];
  return s;
}

/** A client-side TCP port, different on each call (so two fake connections never look alike). */
export function nextPeerPort(): number {
  portCounter = (portCounter + 1) % 20000;
  return 40000 + portCounter;
}

/** `RequestMeta` as EMQX attaches it to every request. Defaults: node `emqx@127.0.0.1`, version `5.8.9`, sysdescr `EMQX`, cluster `emqxcl`. */
export function fakeMeta(overrides: Partial<Omit<v3.RequestMeta, "$typeName">> = {}): v3.RequestMeta {
  return create(v3.RequestMetaSchema, { node: FAKE_NODE, version: "5.8.9", sysdescr: "EMQX", clusterName: "emqxcl", ...overrides });
}

/** `BrokerInfo` of `OnProviderLoaded`. Default version `5.8.9`; uptime in ms; RFC 3339 datetime. */
export function fakeBrokerInfo(overrides: Partial<Omit<v3.BrokerInfo, "$typeName">> = {}): v3.BrokerInfo {
  return create(v3.BrokerInfoSchema, {
    version: "5.8.9",
    sysdescr: "EMQX",
    uptime: 123_456n,
    datetime: new Date().toISOString().replace("Z", "+00:00"),
    ...overrides,
  });
}

/**
 * `ClientInfo` of a plain MQTT client. Defaults: client id `client-1`, username `alice`, empty
 * password, peerhost `127.0.0.1`, a fresh peerport, sockport 1883, protocol `mqtt`, anonymous false.
 */
export function fakeClientInfo(overrides: Partial<Omit<v3.ClientInfo, "$typeName">> = {}): v3.ClientInfo {
  return create(v3.ClientInfoSchema, {
    node: FAKE_NODE,
    clientid: "client-1",
    username: "alice",
    password: "",
    peerhost: "127.0.0.1",
    peerport: nextPeerPort(),
    sockport: 1883,
    protocol: "mqtt",
    mountpoint: "",
    isSuperuser: false,
    anonymous: false,
    cn: "",
    dn: "",
    ...overrides,
  });
}

/** `ConnInfo` of an MQTT 5 client. Defaults as {@link fakeClientInfo}, proto `MQTT` "5", keepalive 60. */
export function fakeConnInfo(overrides: Partial<Omit<v3.ConnInfo, "$typeName">> = {}): v3.ConnInfo {
  return create(v3.ConnInfoSchema, {
    node: FAKE_NODE,
    clientid: "client-1",
    username: "alice",
    peerhost: "127.0.0.1",
    peerport: nextPeerPort(),
    sockport: 1883,
    protoName: "MQTT",
    protoVer: "5",
    keepalive: 60,
    ...overrides,
  });
}

/** The `ConnInfo` matching a `ClientInfo` (same connection). */
export function connInfoOf(ci: v3.ClientInfo, overrides: Partial<Omit<v3.ConnInfo, "$typeName">> = {}): v3.ConnInfo {
  return fakeConnInfo({
    node: ci.node,
    clientid: ci.clientid,
    username: ci.username,
    peerhost: ci.peerhost,
    peerport: ci.peerport,
    sockport: ci.sockport,
    ...overrides,
  });
}

/** What {@link fakeMessage} accepts: a message's fields, with the payload as text or bytes. */
export type FakeMessageInit = Partial<Omit<v3.Message, "$typeName" | "payload">> & { readonly payload?: string | Uint8Array };

/**
 * A `Message` as `message.publish` carries it. Defaults: topic `t/1`, payload `hello`, qos 0,
 * from `client-1`, a fresh id, `Date.now()` timestamp, headers username/protocol/peerhost.
 */
export function fakeMessage(overrides: FakeMessageInit = {}): v3.Message {
  const { payload, ...rest } = overrides;
  return create(v3.MessageSchema, {
    node: FAKE_NODE,
    id: fakeMessageId(),
    qos: 0,
    from: "client-1",
    topic: "t/1",
    timestamp: BigInt(Date.now()),
    headers: { username: "alice", protocol: "mqtt", peerhost: "127.0.0.1" },
    ...rest,
    payload: typeof payload === "string" ? encoder.encode(payload) : (payload ?? encoder.encode("hello")),
  });
}

/** A `ClientAuthenticateRequest`. `result` defaults to `false` (EMQX 5.0–5.8 with no authenticator). */
export function fakeAuthenticateRequest(
  clientinfo: Partial<Omit<v3.ClientInfo, "$typeName">> = {},
  result = false,
): v3.ClientAuthenticateRequest {
  return create(v3.ClientAuthenticateRequestSchema, { clientinfo: fakeClientInfo(clientinfo), result, meta: fakeMeta() });
}

/** A `ClientAuthorizeRequest` for a PUBLISH (or SUBSCRIBE) of `topic`; `result` defaults to `true`. */
export function fakeAuthorizeRequest(
  topic: string,
  type: "PUBLISH" | "SUBSCRIBE" = "PUBLISH",
  clientinfo: Partial<Omit<v3.ClientInfo, "$typeName">> = {},
  result = true,
): v3.ClientAuthorizeRequest {
  return create(v3.ClientAuthorizeRequestSchema, {
    clientinfo: fakeClientInfo(clientinfo),
    type: type === "PUBLISH" ? v3.ClientAuthorizeRequest_AuthorizeReqType.PUBLISH : v3.ClientAuthorizeRequest_AuthorizeReqType.SUBSCRIBE,
    topic,
    result,
    meta: fakeMeta(),
  });
}

/** A `MessagePublishRequest` around {@link fakeMessage}. */
export function fakePublishRequest(message: FakeMessageInit = {}): v3.MessagePublishRequest {
  return create(v3.MessagePublishRequestSchema, { message: fakeMessage(message), meta: fakeMeta() });
}
