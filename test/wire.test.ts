/**
 * The wire adapters, table-driven per package: requests encoded independently (protobufjs over our
 * .proto files, as EMQX would send them) are decoded into the one v3 shape handlers see, and every
 * decision's `ValuedResponse` is decoded independently with each package's proto.
 */
import { create, fromBinary, toBinary, type Message as PbMessage } from "@bufbuild/protobuf";
import * as protobuf from "protobufjs";
import * as v1 from "../gen/emqx/exhook/v1/exhook_pb.js";
import * as v2 from "../gen/emqx/exhook/v2/exhook_pb.js";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { RequestDecodeError } from "../src/errors.js";
import { HOOK_BY_KEY, type HookDef, type WirePackage } from "../src/hooks.js";
import { allow, deny, drop, keep, noOpinion, rewrite, type Decision } from "../src/responses.js";
import {
  decodeRequest,
  isLegacyEnumBroker,
  parseV1Uptime,
  decodeSchema,
  toHandlerRequest,
  routeTable,
  valuedResponse,
} from "../src/wire.js";
import { decode, encode, servicePath, type Pkg } from "./helpers/proto.js";

const utf8 = (s: string) => new TextEncoder().encode(s);
const hook = (key: string) => HOOK_BY_KEY.get(key) as HookDef;
const routes = routeTable();

/** The route EMQX's path leads to; fails the test when there is none. */
function route(pkg: Pkg, rpc: string) {
  const r = routes.get(servicePath(pkg, rpc));
  if (!r) throw new Error(`no route for ${servicePath(pkg, rpc)}`);
  return r;
}

const CLIENTINFO_IN = {
  node: "emqx@10.0.0.1",
  clientid: "c1",
  username: "alice",
  password: "alice-pass",
  peerhost: "10.0.0.9",
  sockport: 1883,
  protocol: "mqtt",
  mountpoint: "",
  is_superuser: false,
  anonymous: false,
  cn: "cn1",
  dn: "dn1",
};
const META_IN = { node: "emqx@10.0.0.1", version: "5.8.9", sysdescr: "EMQX", cluster_name: "emqxcl" };
const META = { node: "emqx@10.0.0.1", version: "5.8.9", sysdescr: "EMQX", clusterName: "emqxcl" };
const CLIENTINFO = { ...CLIENTINFO_IN, isSuperuser: false, is_superuser: undefined } as Record<string, unknown>;
delete CLIENTINFO["is_superuser"];

const MESSAGE_IN = {
  node: "emqx@10.0.0.1",
  id: "0005F8F84F6F8E0EF4420000B0E40001",
  qos: 2,
  from: "c1",
  topic: "t/1",
  payload: utf8("hello"),
  timestamp: 1700000000123,
  headers: { peerhost: "10.0.0.9", username: "alice", protocol: "mqtt" },
};
const MESSAGE = { ...MESSAGE_IN, timestamp: 1700000000123n };

interface Case {
  readonly name: string;
  /** The package the call arrives on. */
  readonly pkg: WirePackage;
  /** The rpc name in that package. */
  readonly rpc: string;
  /** The handler key it must reach (or "loaded"). */
  readonly target: string;
  /** Which package's proto encodes the body (V2-a bodies are v1-shaped in the retired fields). */
  readonly encodeAs: Pkg;
  readonly type: string;
  readonly body: Record<string, unknown>;
  /** The v3 schema and init of what the handler must see. */
  readonly expected: () => PbMessage;
}

const cases: Case[] = [];
for (const pkg of ["v1", "v2", "v3"] as const) {
  const withPeerport = pkg === "v1" ? {} : { peerport: 50001 };
  const clientinfoIn = { ...CLIENTINFO_IN, ...withPeerport };
  // A field the package lacks is the default (0) in the v3 shape.
  const clientinfo = { ...CLIENTINFO, peerport: pkg === "v1" ? 0 : 50001 };

  cases.push({
    name: "OnProviderLoaded: uptime becomes milliseconds",
    pkg,
    rpc: "OnProviderLoaded",
    target: "loaded",
    encodeAs: pkg,
    type: "ProviderLoadedRequest",
    body: {
      broker: {
        version: "5.8.9",
        sysdescr: "EMQX",
        uptime: pkg === "v1" ? "1 days, 2 hours, 3 minutes, 4 seconds" : 93784000,
        datetime: "2024-01-01 00:00:00",
      },
      meta: META_IN,
    },
    expected: () =>
      create(v3.ProviderLoadedRequestSchema, {
        broker: { version: "5.8.9", sysdescr: "EMQX", uptime: 93784000n, datetime: "2024-01-01 00:00:00" },
        meta: META,
      }),
  });
  cases.push({
    name: "OnClientAuthenticate: clientinfo and meta",
    pkg,
    rpc: "OnClientAuthenticate",
    target: "onClientAuthenticate",
    encodeAs: pkg,
    type: "ClientAuthenticateRequest",
    body: { clientinfo: clientinfoIn, result: true, meta: META_IN },
    expected: () => create(v3.ClientAuthenticateRequestSchema, { clientinfo, result: true, meta: META }),
  });
  cases.push({
    name: `${pkg === "v1" ? "OnClientCheckAcl" : "OnClientAuthorize"}: reaches onClientAuthorize`,
    pkg,
    rpc: pkg === "v1" ? "OnClientCheckAcl" : "OnClientAuthorize",
    target: "onClientAuthorize",
    encodeAs: pkg,
    type: pkg === "v1" ? "ClientCheckAclRequest" : "ClientAuthorizeRequest",
    body: { clientinfo: clientinfoIn, type: 1 /* SUBSCRIBE */, topic: "users/alice/x", result: false, meta: META_IN },
    expected: () =>
      create(v3.ClientAuthorizeRequestSchema, {
        clientinfo,
        type: v3.ClientAuthorizeRequest_AuthorizeReqType.SUBSCRIBE,
        topic: "users/alice/x",
        result: false,
        meta: META,
      }),
  });
  cases.push({
    name: `${pkg === "v1" ? "OnSessionTakeovered" : "OnSessionTakenover"}: reaches onSessionTakenover`,
    pkg,
    rpc: pkg === "v1" ? "OnSessionTakeovered" : "OnSessionTakenover",
    target: "onSessionTakenover",
    encodeAs: pkg,
    type: pkg === "v1" ? "SessionTakeoveredRequest" : "SessionTakenoverRequest",
    body: { clientinfo: clientinfoIn, meta: META_IN },
    expected: () => create(v3.SessionTakenoverRequestSchema, { clientinfo, meta: META }),
  });
  cases.push({
    name: "OnMessagePublish: the whole message" + (pkg === "v3" ? ", props and user_props kept" : ", user_props empty"),
    pkg,
    rpc: "OnMessagePublish",
    target: "onMessagePublish",
    encodeAs: pkg,
    type: "MessagePublishRequest",
    body: {
      message: MESSAGE_IN,
      meta: META_IN,
      ...(pkg === "v3"
        ? {
            props: [{ name: "Content-Type", value: "text/plain" }],
            user_props: [
              { name: "k", value: "v" },
              { name: "k", value: "v2" },
            ],
          }
        : {}),
    },
    expected: () =>
      create(v3.MessagePublishRequestSchema, {
        message: MESSAGE,
        meta: META,
        props: pkg === "v3" ? [{ name: "Content-Type", value: "text/plain" }] : [],
        userProps:
          pkg === "v3"
            ? [
                { name: "k", value: "v" },
                { name: "k", value: "v2" },
              ]
            : [],
      }),
  });
  cases.push({
    name: "OnClientConnect: conninfo" + (pkg === "v3" ? " and user_props" : ""),
    pkg,
    rpc: "OnClientConnect",
    target: "onClientConnect",
    encodeAs: pkg,
    type: "ClientConnectRequest",
    body: {
      conninfo: {
        node: "n",
        clientid: "c1",
        username: "alice",
        peerhost: "10.0.0.9",
        sockport: 1883,
        proto_name: "MQTT",
        proto_ver: "5",
        keepalive: 60,
        ...withPeerport,
      },
      props: [{ name: "Session-Expiry-Interval", value: "0" }],
      meta: META_IN,
      ...(pkg === "v3" ? { user_props: [{ name: "app", value: "x" }] } : {}),
    },
    expected: () =>
      create(v3.ClientConnectRequestSchema, {
        conninfo: {
          node: "n",
          clientid: "c1",
          username: "alice",
          peerhost: "10.0.0.9",
          sockport: 1883,
          protoName: "MQTT",
          protoVer: "5",
          keepalive: 60,
          peerport: pkg === "v1" ? 0 : 50001,
        },
        props: [{ name: "Session-Expiry-Interval", value: "0" }],
        meta: META,
        userProps: pkg === "v3" ? [{ name: "app", value: "x" }] : [],
      }),
  });
}

// TopicFilter.qos (2): v1 and V2-a (5.0–5.3) send it; it is lifted into subopts.qos.
cases.push(
  {
    name: "OnClientSubscribe (v1): TopicFilter.qos → subopts.qos",
    pkg: "v1",
    rpc: "OnClientSubscribe",
    target: "onClientSubscribe",
    encodeAs: "v1",
    type: "ClientSubscribeRequest",
    body: {
      clientinfo: { clientid: "c1" },
      topic_filters: [{ name: "a/#", qos: 2 }, { name: "b", qos: 1 }, { name: "c", qos: 0 }, { name: "d" }],
    },
    expected: () =>
      create(v3.ClientSubscribeRequestSchema, {
        clientinfo: { clientid: "c1" },
        topicFilters: [
          { name: "a/#", subopts: { qos: 2 } },
          { name: "b", subopts: { qos: 1 } },
          // protobufjs writes an explicit 0; gpb leaves it out: both give subopts.qos 0.
          { name: "c", subopts: { qos: 0 } },
          { name: "d", subopts: { qos: 0 } },
        ],
      }),
  },
  {
    name: "OnClientSubscribe (V2-a, 5.0–5.3): TopicFilter.qos → subopts.qos",
    pkg: "v2",
    rpc: "OnClientSubscribe",
    target: "onClientSubscribe",
    // V2-a's TopicFilter is { name = 1, qos = 2 }, exactly v1's; the rest of the request is identical.
    encodeAs: "v1",
    type: "ClientSubscribeRequest",
    body: { clientinfo: { clientid: "c1" }, topic_filters: [{ name: "a/+", qos: 1 }], meta: META_IN },
    expected: () =>
      create(v3.ClientSubscribeRequestSchema, {
        clientinfo: { clientid: "c1" },
        topicFilters: [{ name: "a/+", subopts: { qos: 1 } }],
        meta: META,
      }),
  },
  {
    name: "OnClientUnsubscribe (V2-a): TopicFilter.qos → subopts.qos",
    pkg: "v2",
    rpc: "OnClientUnsubscribe",
    target: "onClientUnsubscribe",
    encodeAs: "v1",
    type: "ClientUnsubscribeRequest",
    body: { clientinfo: { clientid: "c1" }, topic_filters: [{ name: "a/+", qos: 2 }] },
    expected: () =>
      create(v3.ClientUnsubscribeRequestSchema, { clientinfo: { clientid: "c1" }, topicFilters: [{ name: "a/+", subopts: { qos: 2 } }] }),
  },
  {
    name: "OnClientSubscribe (V2-b): subopts as sent",
    pkg: "v2",
    rpc: "OnClientSubscribe",
    target: "onClientSubscribe",
    encodeAs: "v2",
    type: "ClientSubscribeRequest",
    body: { clientinfo: { clientid: "c1" }, topic_filters: [{ name: "a/+", subopts: { qos: 1, rh: 2, rap: 1, nl: 1 } }] },
    expected: () =>
      create(v3.ClientSubscribeRequestSchema, {
        clientinfo: { clientid: "c1" },
        topicFilters: [{ name: "a/+", subopts: { qos: 1, rh: 2, rap: 1, nl: 1 } }],
      }),
  },
  {
    name: "OnClientSubscribe (v3): subopts and user_props as sent",
    pkg: "v3",
    rpc: "OnClientSubscribe",
    target: "onClientSubscribe",
    encodeAs: "v3",
    type: "ClientSubscribeRequest",
    body: {
      clientinfo: { clientid: "c1" },
      topic_filters: [{ name: "$share/g/a", subopts: { qos: 2 } }],
      user_props: [{ name: "u", value: "1" }],
    },
    expected: () =>
      create(v3.ClientSubscribeRequestSchema, {
        clientinfo: { clientid: "c1" },
        topicFilters: [{ name: "$share/g/a", subopts: { qos: 2 } }],
        userProps: [{ name: "u", value: "1" }],
      }),
  },
);

// SubOpts.share (2): v1 and V2-a send the group apart; it goes into the topic as 5.4+ sends it.
for (const pkg of ["v1", "v2"] as const) {
  cases.push(
    {
      name: `OnSessionSubscribed (${pkg === "v1" ? "v1" : "V2-a"}): SubOpts.share "g" → topic $share/g/<topic>`,
      pkg,
      rpc: "OnSessionSubscribed",
      target: "onSessionSubscribed",
      encodeAs: "v1",
      type: "SessionSubscribedRequest",
      body: { clientinfo: { clientid: "c1" }, topic: "sensors/+/temp", subopts: { qos: 1, share: "g", rh: 0, rap: 0, nl: 0 } },
      expected: () =>
        create(v3.SessionSubscribedRequestSchema, {
          clientinfo: { clientid: "c1" },
          topic: "$share/g/sensors/+/temp",
          subopts: { qos: 1 },
        }),
    },
    {
      name: `OnSessionSubscribed (${pkg}): no share group, topic unchanged`,
      pkg,
      rpc: "OnSessionSubscribed",
      target: "onSessionSubscribed",
      encodeAs: "v1",
      type: "SessionSubscribedRequest",
      body: { clientinfo: { clientid: "c1" }, topic: "a/b", subopts: { qos: 2, share: "", nl: 1 } },
      expected: () =>
        create(v3.SessionSubscribedRequestSchema, { clientinfo: { clientid: "c1" }, topic: "a/b", subopts: { qos: 2, nl: 1 } }),
    },
  );
}
cases.push({
  name: "OnSessionSubscribed (v3): a $share topic passes through",
  pkg: "v3",
  rpc: "OnSessionSubscribed",
  target: "onSessionSubscribed",
  encodeAs: "v3",
  type: "SessionSubscribedRequest",
  body: { clientinfo: { clientid: "c1" }, topic: "$share/g/a", subopts: { qos: 1 } },
  expected: () => create(v3.SessionSubscribedRequestSchema, { clientinfo: { clientid: "c1" }, topic: "$share/g/a", subopts: { qos: 1 } }),
});
cases.push({
  name: "OnProviderLoaded (v1, 4.3 before 4.3.14): no meta",
  pkg: "v1",
  rpc: "OnProviderLoaded",
  target: "loaded",
  encodeAs: "v1",
  type: "ProviderLoadedRequest",
  body: { broker: { version: "4.3.0", sysdescr: "EMQ X Broker", uptime: "5 seconds", datetime: "d" } },
  expected: () =>
    create(v3.ProviderLoadedRequestSchema, { broker: { version: "4.3.0", sysdescr: "EMQ X Broker", uptime: 5000n, datetime: "d" } }),
});

describe("decodeRequest: what EMQX sends → what handlers see", () => {
  test.each(cases.map((c) => [`${c.pkg} ${c.name}`, c] as const))("%s", (_name, c) => {
    const r = route(c.pkg, c.rpc);
    expect(r.pkg).toBe(c.pkg);
    expect(r.rpc).toBe(c.rpc);
    expect(typeof r.target === "object" ? r.target.key : r.target).toBe(c.target);
    const bytes = encode(c.encodeAs, c.type, c.body);
    const got = decodeRequest(c.pkg, r.target, bytes);
    // toEqual also proves the retired fields were taken out of $unknown.
    expect(got).toEqual(c.expected());
  });

  test.each(cases.map((c) => [`${c.pkg} ${c.name}`, c] as const))(
    "the Connect path (decodeSchema, then toHandlerRequest) agrees: %s",
    (_name, c) => {
      const r = route(c.pkg, c.rpc);
      // What connect-node does with the schema exhookRoutes registers, then what the route does.
      const decoded = fromBinary(decodeSchema(c.pkg, r.target), encode(c.encodeAs, c.type, c.body));
      expect(toHandlerRequest(c.pkg, r.target, decoded)).toEqual(c.expected());
    },
  );

  test("decodeSchema: v3 for everything but v1's ProviderLoadedRequest", () => {
    for (const pkg of ["v1", "v2", "v3"] as const) {
      for (const r of [...routes.values()].filter((x) => x.pkg === pkg)) {
        const expected =
          pkg === "v1" && r.target === "loaded" ? "emqx.exhook.v1.ProviderLoadedRequest" : expect.stringMatching(/^emqx\.exhook\.v3\./);
        expect(decodeSchema(pkg, r.target).typeName).toEqual(expected);
      }
    }
  });

  test("malformed protobuf throws a RequestDecodeError naming the message type and the cause", () => {
    const target = hook("onClientAuthenticate");
    // field 1, LEN, length 10, but only 2 bytes follow
    let err: unknown;
    try {
      decodeRequest("v3", target, new Uint8Array([0x0a, 0x0a, 0x01, 0x02]));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RequestDecodeError);
    expect((err as Error).message).toBe("invalid ClientAuthenticateRequest: illegal tag: field no 0 wire type 1");
    expect((err as RequestDecodeError).typeName).toBe("ClientAuthenticateRequest");
  });

  test("v1 uptime text", () => {
    expect(parseV1Uptime("1 days, 2 hours, 3 minutes, 4 seconds")).toBe(93784000n);
    expect(parseV1Uptime("1 hours, 2 minutes, 3 seconds")).toBe(3723000n);
    expect(parseV1Uptime("1 day,2 hours,1 minute,1 second")).toBe(93661000n);
    expect(parseV1Uptime("42 seconds")).toBe(42000n);
    expect(parseV1Uptime("")).toBe(0n);
  });
});

describe("routeTable", () => {
  test("63 paths: 21 rpcs per package, v1 with its own names", () => {
    expect(routes.size).toBe(63);
    for (const pkg of ["v1", "v2", "v3"] as const) {
      const rpcs = [...routes.values()].filter((r) => r.pkg === pkg).map((r) => r.rpc);
      const service = { v1: v1.HookProvider, v2: v2.HookProvider, v3: v3.HookProvider }[pkg];
      expect(rpcs.sort()).toEqual(service.methods.map((m) => m.name).sort());
    }
    expect(routes.get(servicePath("v1", "OnClientAuthorize"))).toBeUndefined();
    expect(routes.get(servicePath("v1", "OnSessionTakenover"))).toBeUndefined();
    expect(routes.get(servicePath("v2", "OnClientCheckAcl"))).toBeUndefined();
    expect((routes.get(servicePath("v1", "OnClientCheckAcl"))?.target as HookDef | undefined)?.key).toBe("onClientAuthorize");
    expect((routes.get(servicePath("v1", "OnSessionTakeovered"))?.target as HookDef | undefined)?.key).toBe("onSessionTakenover");
    expect(routes.get(servicePath("v2", "OnProviderUnloaded"))?.target).toBe("unloaded");
  });
});

const REWRITE_BASE = create(v3.MessageSchema, {
  node: "emqx@n1",
  id: "ID1",
  qos: 2,
  from: "c1",
  topic: "in/t",
  payload: utf8("in"),
  timestamp: 1700000000123n,
  headers: { peerhost: "10.0.0.9", username: "alice", proto_ver: "5" },
});

/** The message as protobufjs decodes it (keepCase, longs as strings, bytes as Buffer). */
function decodedMessage(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    node: "emqx@n1",
    id: "ID1",
    qos: 2,
    from: "c1",
    topic: "in/t",
    payload: Buffer.from("in"),
    timestamp: "1700000000123",
    headers: { peerhost: "10.0.0.9", username: "alice", proto_ver: "5" },
    ...overrides,
  };
}

const DECISIONS: ReadonlyArray<readonly [string, Decision, v3.Message | undefined, Record<string, unknown>]> = [
  ["allow", allow(), undefined, { type: "STOP_AND_RETURN", bool_result: true, value: "bool_result" }],
  ["deny", deny(), undefined, { type: "STOP_AND_RETURN", bool_result: false, value: "bool_result" }],
  ["noOpinion", noOpinion(), undefined, { type: "IGNORE" }],
  ["keep", keep(), REWRITE_BASE, { type: "IGNORE" }],
  [
    "rewrite topic",
    rewrite({ topic: "out/t" }),
    REWRITE_BASE,
    { type: "CONTINUE", message: decodedMessage({ topic: "out/t" }), value: "message" },
  ],
  [
    "rewrite payload (string) and headers",
    rewrite({ payload: "out", headers: { added: "1", username: "bob" } }),
    REWRITE_BASE,
    {
      type: "CONTINUE",
      message: decodedMessage({
        payload: Buffer.from("out"),
        headers: { peerhost: "10.0.0.9", username: "bob", proto_ver: "5", added: "1" },
      }),
      value: "message",
    },
  ],
  [
    "rewrite payload (bytes) and qos",
    rewrite({ payload: new Uint8Array([0, 1, 255]), qos: 1 }),
    REWRITE_BASE,
    { type: "CONTINUE", message: decodedMessage({ payload: Buffer.from([0, 1, 255]), qos: 1 }), value: "message" },
  ],
  [
    "rewrite nothing: everything kept, QoS 2 included",
    rewrite({}),
    REWRITE_BASE,
    { type: "CONTINUE", message: decodedMessage(), value: "message" },
  ],
  [
    "drop",
    drop(),
    REWRITE_BASE,
    {
      type: "STOP_AND_RETURN",
      message: decodedMessage({ headers: { peerhost: "10.0.0.9", username: "alice", proto_ver: "5", allow_publish: "false" } }),
      value: "message",
    },
  ],
];

describe("valuedResponse, decoded with each package's proto", () => {
  describe.each(["v1", "v2", "v3"] as const)("%s", (pkg) => {
    test.each(DECISIONS)("%s", (_name, decision, message, expected) => {
      const before = message ? toBinary(v3.MessageSchema, message) : undefined;
      const res = valuedResponse(decision, message, false);
      expect(decode(pkg, "ValuedResponse", toBinary(v3.ValuedResponseSchema, res))).toEqual(expected);
      // The incoming message is never mutated.
      if (message) expect(toBinary(v3.MessageSchema, message)).toEqual(before);
    });
  });

  test("a drop of a message with no headers still carries allow_publish=false", () => {
    const res = valuedResponse(drop(), create(v3.MessageSchema, { topic: "t", qos: 1 }), false);
    expect(decode("v3", "ValuedResponse", toBinary(v3.ValuedResponseSchema, res))).toEqual({
      type: "STOP_AND_RETURN",
      message: {
        node: "",
        id: "",
        qos: 1,
        from: "",
        topic: "t",
        payload: Buffer.alloc(0),
        timestamp: "0",
        headers: { allow_publish: "false" },
      },
      value: "message",
    });
  });
});

describe("legacy ResponsedType numbering (EMQX 4.3.0–4.3.2)", () => {
  test.each([
    ["4.3.0", true],
    ["4.3.1", true],
    ["4.3.2", true],
    ["v4.3.2", true],
    ["4.3-rc.3", true],
    ["4.3-rc.5", true],
    ["4.3.3", false],
    ["4.3.10", false],
    ["4.3.22", false],
    ["4.4.0", false],
    ["4.4.19", false],
    ["5.0.0", false],
    ["5.8.9", false],
    ["6.0.0", false],
    ["", false],
  ])("isLegacyEnumBroker(%j) = %s", (version, legacy) => {
    expect(isLegacyEnumBroker(version)).toBe(legacy);
  });

  // The 4.3.0 proto's enum, built independently: IGNORE=0, CONTINUE=1, STOP_AND_RETURN=2.
  const legacyRoot = protobuf.parse(
    `
    syntax = "proto3";
    package legacy;
    message Message {
      string node = 1; string id = 2; uint32 qos = 3; string from = 4; string topic = 5;
      bytes payload = 6; uint64 timestamp = 7; map<string, string> headers = 8;
    }
    message ValuedResponse {
      enum ResponsedType { IGNORE = 0; CONTINUE = 1; STOP_AND_RETURN = 2; }
      ResponsedType type = 1;
      oneof value { bool bool_result = 3; Message message = 4; }
    }`,
    { keepCase: true },
  ).root;
  const LegacyValued = legacyRoot.lookupType("legacy.ValuedResponse");
  const legacyDecode = (bytes: Uint8Array) =>
    LegacyValued.toObject(LegacyValued.decode(bytes), { enums: String, defaults: true, oneofs: true, longs: String }) as Record<
      string,
      unknown
    >;

  test.each([
    ["noOpinion", noOpinion(), undefined, "IGNORE"],
    ["keep", keep(), REWRITE_BASE, "IGNORE"],
    ["allow", allow(), undefined, "STOP_AND_RETURN"],
    ["deny", deny(), undefined, "STOP_AND_RETURN"],
    ["rewrite", rewrite({ qos: 1 }), REWRITE_BASE, "CONTINUE"],
    ["drop", drop(), REWRITE_BASE, "STOP_AND_RETURN"],
  ] as const)("with legacyEnum, %s decodes as %s under the old numbering", (_n, decision, message, type) => {
    const res = valuedResponse(decision, message, true);
    expect(legacyDecode(toBinary(v3.ValuedResponseSchema, res))["type"]).toBe(type);
  });

  test("without legacyEnum, IGNORE would read as CONTINUE on 4.3.0 (why the switch exists)", () => {
    const res = valuedResponse(noOpinion(), undefined, false);
    expect(legacyDecode(toBinary(v3.ValuedResponseSchema, res))["type"]).toBe("CONTINUE");
    expect(decode("v1", "ValuedResponse", toBinary(v3.ValuedResponseSchema, res))["type"]).toBe("IGNORE");
  });

  test("the bool and message payloads are the same under either numbering", () => {
    const legacy = legacyDecode(toBinary(v3.ValuedResponseSchema, valuedResponse(allow(), undefined, true)));
    expect(legacy).toEqual({ type: "STOP_AND_RETURN", bool_result: true, value: "bool_result" });
  });
});
