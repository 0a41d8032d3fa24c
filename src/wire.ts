/**
 * The wire adapters: how each package's requests become the one (v3-shaped) handler API, and how
 * decisions become each package's `ValuedResponse`.
 *
 * Why so little code: v3 is a wire superset of v2 (V2-b), and v1 differs from it only in
 * `BrokerInfo.uptime` (string), `TopicFilter.qos` / `SubOpts.share` (field 2, retired in 5.4), the
 * two renamed rpcs and, on EMQX 4.3.0–4.3.2, the `ResponsedType` numbering. So every request is
 * decoded with the v3 schema and the retired fields are lifted out of the unknown fields; only
 * v1's `ProviderLoadedRequest` needs its own schema. Responses are wire-identical in all packages.
 */
import { create, fromBinary, toBinary, type DescMessage, type Message } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import * as v1 from "../gen/emqx/exhook/v1/exhook_pb.js";
import * as v2 from "../gen/emqx/exhook/v2/exhook_pb.js";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { RequestDecodeError } from "./errors.js";
import { HOOKS, rpcNameFor, WIRE_PACKAGES, type HookDef, type WirePackage } from "./hooks.js";
import type { Decision } from "./responses.js";

/** The generated services, by package. */
export const SERVICES = { v1: v1.HookProvider, v2: v2.HookProvider, v3: v3.HookProvider } as const;

/** What a request path leads to. */
export type RpcTarget = HookDef | "loaded" | "unloaded";

/** One entry of the route table. */
export interface Route {
  readonly pkg: WirePackage;
  readonly target: RpcTarget;
  /** The rpc name in that package. */
  readonly rpc: string;
}

/** Every `/<package>.HookProvider/<Rpc>` path we serve (63 of them). */
export function routeTable(): Map<string, Route> {
  const routes = new Map<string, Route>();
  for (const pkg of WIRE_PACKAGES) {
    const prefix = `/${SERVICES[pkg].typeName}/`;
    routes.set(prefix + "OnProviderLoaded", { pkg, target: "loaded", rpc: "OnProviderLoaded" });
    routes.set(prefix + "OnProviderUnloaded", { pkg, target: "unloaded", rpc: "OnProviderUnloaded" });
    for (const def of HOOKS) {
      const rpc = rpcNameFor(def, pkg);
      routes.set(prefix + rpc, { pkg, target: def, rpc });
    }
  }
  return routes;
}

/**
 * The schema a target's request is decoded with when EMQX speaks `pkg`: v3's, which reads every
 * package's bytes (see the header), except v1's `ProviderLoadedRequest` (uptime is text there).
 * The Connect transport registers its methods with these schemas too, so both transports decode
 * alike and no request is decoded twice.
 */
export function decodeSchema(pkg: WirePackage, target: RpcTarget): DescMessage {
  if (target === "loaded") return pkg === "v1" ? v1.ProviderLoadedRequestSchema : v3.ProviderLoadedRequestSchema;
  if (target === "unloaded") return v3.ProviderUnloadedRequestSchema;
  return target.input;
}

/** The schema of a target's answer (wire-identical in every package). */
export function answerSchema(target: RpcTarget): DescMessage {
  if (target === "loaded") return v3.LoadedResponseSchema;
  if (target === "unloaded" || target.kind === "notification") return v3.EmptySuccessSchema;
  return v3.ValuedResponseSchema;
}

/**
 * Turns a request decoded with {@link decodeSchema} into the v3 shape handlers see: v1's
 * `ProviderLoadedRequest` is converted, and the fields v3 retired are lifted out of the unknown
 * fields of v1/v2 hook requests (in place).
 */
export function toHandlerRequest(pkg: WirePackage, target: RpcTarget, msg: Message): Message {
  if (pkg === "v1" && target === "loaded") return loadedFromV1(msg as v1.ProviderLoadedRequest);
  if (pkg !== "v3" && typeof target === "object") liftRetiredFields(target, msg);
  return msg;
}

/**
 * Decodes a request body sent by EMQX speaking `pkg` into the v3 shape handlers see.
 * Throws {@link RequestDecodeError} on malformed protobuf (and only then).
 */
export function decodeRequest(pkg: WirePackage, target: RpcTarget, bytes: Uint8Array): Message {
  const schema = decodeSchema(pkg, target);
  let msg: Message;
  try {
    msg = fromBinary(schema, bytes);
  } catch (err) {
    throw new RequestDecodeError(schema.name, err);
  }
  return toHandlerRequest(pkg, target, msg);
}

/** v1 `BrokerInfo.uptime` is text ("2 hours, 5 minutes, 3 seconds"); v2/v3 carry milliseconds. */
export function parseV1Uptime(text: string): bigint {
  const units: Record<string, number> = { day: 86_400_000, hour: 3_600_000, minute: 60_000, second: 1000 };
  let ms = 0;
  for (const m of text.matchAll(/(\d+)\s*(day|hour|minute|second)s?/g)) {
    ms += Number(m[1]) * (units[m[2] as string] ?? 0);
  }
  return BigInt(ms);
}

function loadedFromV1(req: v1.ProviderLoadedRequest): v3.ProviderLoadedRequest {
  const b = req.broker;
  return create(v3.ProviderLoadedRequestSchema, {
    ...(b ? { broker: { version: b.version, sysdescr: b.sysdescr, uptime: parseV1Uptime(b.uptime), datetime: b.datetime } } : {}),
    ...(req.meta
      ? { meta: { node: req.meta.node, version: req.meta.version, sysdescr: req.meta.sysdescr, clusterName: req.meta.clusterName } }
      : {}),
  });
}

/**
 * EMQX 4.x–5.3 send `TopicFilter.qos` (2) and `SubOpts.share` (2), retired in 5.4. They arrive as
 * unknown fields of the v3 schema; lift them into the v3 shape: `qos` into `subopts.qos`, and the
 * share group into the topic as `$share/<group>/<topic>`, the way 5.4+ sends it.
 */
function liftRetiredFields(def: HookDef, msg: Message): void {
  if (def.key === "onClientSubscribe" || def.key === "onClientUnsubscribe") {
    for (const tf of (msg as v3.ClientSubscribeRequest).topicFilters) {
      const qos = takeUnknown(tf, 2, WireType.Varint);
      const q = qos === undefined ? 0 : new BinaryReader(qos).uint32();
      if (tf.subopts) {
        if (qos !== undefined) tf.subopts.qos = q;
      } else {
        // Always give v1/V2-a filters their subopts, also for QoS 0, which a sender may or may not
        // put on the wire: otherwise handlers would see `subopts` present or absent for the same
        // subscription depending on the encoder (and on the transport, since Connect re-encodes).
        tf.subopts = create(v3.SubOptsSchema, { qos: q });
      }
    }
  } else if (def.key === "onSessionSubscribed") {
    const req = msg as v3.SessionSubscribedRequest;
    const share = req.subopts ? takeUnknown(req.subopts, 2, WireType.LengthDelimited) : undefined;
    if (share !== undefined) {
      const group = new BinaryReader(share).string();
      if (group !== "" && !req.topic.startsWith("$share/") && !req.topic.startsWith("$queue/")) {
        req.topic = `$share/${group}/${req.topic}`;
      }
    }
  }
}

function takeUnknown(msg: Message, no: number, wireType: WireType): Uint8Array | undefined {
  const unknown = msg.$unknown;
  if (!unknown) return undefined;
  const i = unknown.findIndex((u) => u.no === no && u.wireType === wireType);
  if (i < 0) return undefined;
  const data = (unknown[i] as { data: Uint8Array }).data;
  // The stored bytes start after the tag, so the reader sees exactly the field's value.
  unknown.splice(i, 1);
  if (unknown.length === 0) delete msg.$unknown;
  return data;
}

const { CONTINUE, IGNORE, STOP_AND_RETURN } = v3.ValuedResponse_ResponsedType;
type ResponsedType = v3.ValuedResponse_ResponsedType;

/**
 * EMQX 4.3.0–4.3.2 (and 4.3 pre-releases) number `ResponsedType` IGNORE=0, CONTINUE=1; every
 * later release CONTINUE=0, IGNORE=1. STOP_AND_RETURN is 2 in both.
 */
export function isLegacyEnumBroker(version: string): boolean {
  return /^v?4\.3(\.[0-2](?![0-9])|-(alpha|beta|rc))/.test(version);
}

function wireType(type: ResponsedType, legacyEnum: boolean): ResponsedType {
  if (!legacyEnum) return type;
  return (type === CONTINUE ? 1 : type === IGNORE ? 0 : type) as ResponsedType;
}

const encoder = new TextEncoder();

/**
 * The `ValuedResponse` for a decision. `message` is the incoming message (publish only); it is
 * the base of every rewrite, so fields the handler did not name are kept.
 */
export function valuedResponse(decision: Decision, message: v3.Message | undefined, legacyEnum = false): v3.ValuedResponse {
  switch (decision.kind) {
    case "allow":
      return ALLOW_RESPONSE;
    case "deny":
      return DENY_RESPONSE;
    case "no-opinion":
    case "keep":
      return legacyEnum ? IGNORE_LEGACY : IGNORE_RESPONSE;
    case "drop": {
      const base = message ?? create(v3.MessageSchema);
      return messageResponse(STOP_AND_RETURN, { ...base, headers: { ...base.headers, allow_publish: "false" } }, legacyEnum);
    }
    case "rewrite": {
      const base = message ?? create(v3.MessageSchema);
      const out: v3.Message = { ...base };
      if (decision.topic !== undefined) out.topic = decision.topic;
      if (decision.payload !== undefined) {
        out.payload = typeof decision.payload === "string" ? encoder.encode(decision.payload) : decision.payload;
      }
      if (decision.qos !== undefined) out.qos = decision.qos;
      if (decision.headers !== undefined) out.headers = { ...base.headers, ...decision.headers };
      return messageResponse(CONTINUE, out, legacyEnum);
    }
  }
}

function messageResponse(type: ResponsedType, message: v3.Message, legacyEnum: boolean): v3.ValuedResponse {
  return create(v3.ValuedResponseSchema, { type: wireType(type, legacyEnum), value: { case: "message", value: message } });
}

// The answers that never depend on the request (STOP_AND_RETURN is 2 in both numberings), made
// and encoded once: authenticate/authorize answers and `keep` cost no encoding per call.
const IGNORE_RESPONSE = Object.freeze(create(v3.ValuedResponseSchema, { type: IGNORE }));
const IGNORE_LEGACY = Object.freeze(create(v3.ValuedResponseSchema, { type: 0 as ResponsedType }));
const ALLOW_RESPONSE = Object.freeze(
  create(v3.ValuedResponseSchema, { type: STOP_AND_RETURN, value: { case: "boolResult", value: true } }),
);
const DENY_RESPONSE = Object.freeze(
  create(v3.ValuedResponseSchema, { type: STOP_AND_RETURN, value: { case: "boolResult", value: false } }),
);
const CONSTANT_BYTES = new Map<v3.ValuedResponse, Uint8Array>(
  [IGNORE_RESPONSE, IGNORE_LEGACY, ALLOW_RESPONSE, DENY_RESPONSE].map((m) => [m, toBinary(v3.ValuedResponseSchema, m)]),
);

/** Encodes a response made by {@link valuedResponse}; the constant ones were encoded once. */
export function encodeValuedResponse(msg: v3.ValuedResponse): Uint8Array {
  return CONSTANT_BYTES.get(msg) ?? toBinary(v3.ValuedResponseSchema, msg);
}

/** The one `EmptySuccess`. */
export const EMPTY_SUCCESS: v3.EmptySuccess = Object.freeze(create(v3.EmptySuccessSchema));

/** The `LoadedResponse` announcing the given hook specs. */
export function loadedResponse(specs: ReadonlyArray<{ name: string; topics: readonly string[] }>): v3.LoadedResponse {
  return create(v3.LoadedResponseSchema, {
    hooks: specs.map((s) => create(v3.HookSpecSchema, { name: s.name, topics: [...s.topics] })),
  });
}
