/**
 * A fake EMQX node for tests: loads a provider like EMQX does (`OnProviderLoaded`, mounting exactly
 * the announced hooks and honouring topic filters), drives the hook sequences EMQX runs for an MQTT
 * client (connect, subscribe, publish, disconnect, takeover) and applies EMQX's rules to the answers
 * for the chosen package and version, so a test asserts outcomes ("refused", "delivered with this
 * payload", "dropped") instead of protocol details.
 *
 * Rules implemented (docs/spec: emqx-behaviour.md §5.2–5.5), for one ExHook server:
 * - a hook that was not announced, or a message hook whose filters do not match, is not called;
 * - `IGNORE`, a wrong oneof member (e.g. `message` for authenticate) or an unknown type leave
 *   EMQX's own result; `CONTINUE`/`STOP_AND_RETURN` with the right member replace it;
 * - a failed call (gRPC error status, no answer before `request_timeout`) applies `failed_action`:
 *   `deny` refuses authenticate/authorize and publishes the message unchanged; `ignore` leaves
 *   EMQX's own result;
 * - authenticate/authorize "EMQX's own result" is the request's `result`: for authenticate `true`
 *   on 4.x (anonymous allowed) and 5.9+ (no authenticator configured), `false` on 5.0–5.8; for
 *   authorize the `no_match` default, `allow` before 6.0 and `deny` from 6.0;
 * - publish copies only `qos`, `topic` and `payload` from the answer, and drops the message when
 *   the answer's `allow_publish` header is `"false"`; `$SYS/` topics never reach the hook;
 * - EMQX 4.3.0–4.3.2 read `ResponsedType` with the old numbering (IGNORE=0, CONTINUE=1).
 * Not modelled: several ExHook servers in a chain, the authorization cache, retained messages,
 * shared subscriptions, MQTT properties.
 */
import { fromBinary } from "@bufbuild/protobuf";
import * as v3 from "../../gen/emqx/exhook/v3/exhook_pb.js";
import type { Dispatcher, DispatcherOptions } from "../dispatch.js";
import { HOOKS, type HookDef, type HookKey, type WirePackage } from "../hooks.js";
import type { Provider } from "../provider.js";
import { matchTopic } from "../topic.js";
import { isLegacyEnumBroker } from "../wire.js";
import { createEmqxLikeClient } from "./emqx-client.js";
import { fakeBrokerInfo, fakeMessageId, fakeMeta, nextPeerPort } from "./fixtures.js";
import { encodeRequestFor, memoryTransport, rpcFor, type ExhookTransport, type RawAnswer } from "./memory-client.js";

/** Options of {@link createFakeEmqx}. Give exactly one of `provider`, `dispatcher`, `url`, `transport`. */
export interface FakeEmqxOptions extends DispatcherOptions {
  /** Serve this provider in memory (a dispatcher is created for it). */
  readonly provider?: Provider;
  /** Serve this dispatcher in memory (to share loaded state and fallback counts with the test). */
  readonly dispatcher?: Dispatcher;
  /** Call a running ExHook server over HTTP/2 (`http://127.0.0.1:PORT`). */
  readonly url?: string;
  /** A custom transport. */
  readonly transport?: ExhookTransport;
  /** Wire package EMQX speaks. Default `"v3"`. */
  readonly package?: WirePackage;
  /** EMQX version. Default per package: v1 `4.4.19`, v2 `5.8.9`, v3 `5.9.0`. */
  readonly version?: string;
  /** Node name. Default `emqx@127.0.0.1`. */
  readonly node?: string;
  /** Cluster name. Default `emqxcl`. */
  readonly clusterName?: string;
  /** EMQX `failed_action`. Default `"deny"` (EMQX's default). */
  readonly failedAction?: "deny" | "ignore";
  /** EMQX `request_timeout` in ms, sent as `grpc-timeout`. Default 5000. */
  readonly requestTimeoutMs?: number;
  /** EMQX's own authentication result before ExHook (the request's `result`). Default: by version, see above. */
  readonly authnResult?: boolean;
  /** EMQX's `authorization.no_match`. Default `allow` before 6.0, `deny` from 6.0. */
  readonly authzNoMatch?: "allow" | "deny";
}

/** What `connect` does. */
export interface ConnectOptions {
  readonly clientid: string;
  /** Default "" (absent). */
  readonly username?: string;
  /** Default "" (absent). */
  readonly password?: string;
  /** Default `127.0.0.1`. */
  readonly peerhost?: string;
  /** Default: a fresh port per connection. */
  readonly peerport?: number;
  /** Listener port. Default 1883. */
  readonly sockport?: number;
  /** MQTT version as EMQX renders it: "3", "4" or "5". Default "5". */
  readonly protoVer?: string;
  /**
   * Default `true`. When another connection has this client id, `true` discards its session
   * (`session.discarded`), `false` takes it over (`session.takenover`, subscriptions kept).
   */
  readonly cleanStart?: boolean;
}

/** The outcome of `connect`. */
export type ConnectResult =
  | { readonly connected: true; readonly reasonCode: "success"; readonly sessionPresent: boolean }
  | { readonly connected: false; readonly reasonCode: "not_authorized" };

/** The outcome of `subscribe`. */
export type SubscribeResult = { readonly granted: 0 | 1 | 2 } | { readonly reasonCode: "not_authorized" };

/** A message as a subscriber received it. */
export interface ReceivedMessage {
  readonly topic: string;
  /** The payload decoded as UTF-8. */
  readonly payload: string;
  readonly qos: number;
  readonly from: string;
}

/** The outcome of `publish`. */
export type PublishResult =
  | { readonly delivered: true; readonly topic: string; readonly payload: string; readonly qos: number }
  | { readonly dropped: true; readonly reason: "provider" | "no_subscribers" }
  | { readonly published: false; readonly reasonCode: "not_authorized" };

/** One hook call the fake made. */
export interface FakeCall {
  /** Hook name as EMQX 5.x/6.x calls it. */
  readonly hook: string;
  readonly clientid: string;
  /** `ok`: answered; `failed`: gRPC error or timeout (then `failed_action` applied). */
  readonly result: "ok" | "failed";
}

/** Raised by `start()` when EMQX would refuse the load. */
export class FakeEmqxLoadError extends Error {
  override readonly name = "FakeEmqxLoadError";
}

/** A fake EMQX node. */
export interface FakeEmqx {
  readonly package: WirePackage;
  readonly version: string;
  /** The dispatcher, when the provider runs in memory. */
  readonly dispatcher: Dispatcher | undefined;
  /** Loads the provider; resolves with the mounted hooks (5.x names, de-duplicated). Rejects with {@link FakeEmqxLoadError}. */
  start(): Promise<Array<{ name: string; topics: string[] }>>;
  /** Unloads the provider (`OnProviderUnloaded`) and closes the transport. */
  stop(): Promise<void>;
  /** An MQTT CONNECT. */
  connect(options: ConnectOptions): Promise<ConnectResult>;
  /** An MQTT SUBSCRIBE of one filter. */
  subscribe(clientid: string, filter: string, qos?: 0 | 1 | 2): Promise<SubscribeResult>;
  /** An MQTT UNSUBSCRIBE. */
  unsubscribe(clientid: string, filter: string): Promise<void>;
  /** An MQTT PUBLISH from a connected client. */
  publish(
    clientid: string,
    message: { readonly topic: string; readonly payload?: string | Uint8Array; readonly qos?: 0 | 1 | 2 },
  ): Promise<PublishResult>;
  /** The connection ends (DISCONNECT or loss). Default reason `normal`. */
  disconnect(clientid: string, reason?: string): Promise<void>;
  /** Messages delivered to a client so far. */
  inbox(clientid: string): ReceivedMessage[];
  /** Whether a client is connected. */
  isConnected(clientid: string): boolean;
  /** Every hook call made, in order. */
  readonly calls: readonly FakeCall[];
}

interface Conn {
  readonly clientinfo: v3.ClientInfo;
  readonly conninfo: v3.ConnInfo;
  subs: Map<string, number>;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();
const { CONTINUE, IGNORE, STOP_AND_RETURN } = v3.ValuedResponse_ResponsedType;

function parseVersion(version: string): [number, number, number] {
  const m = /^v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(version);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : [0, 0, 0];
}

/** Formats ms as EMQX would send `grpc-timeout` (whole seconds when possible). */
export function formatGrpcTimeout(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}S` : `${Math.round(ms)}m`;
}

/** A transport over HTTP/2 to a running ExHook server, sending EMQX's headers. */
export function socketTransport(url: string, poolSize = 1): ExhookTransport {
  const client = createEmqxLikeClient(url, poolSize);
  const prefix: Record<WirePackage, string> = {
    v1: "/emqx.exhook.v1.HookProvider/",
    v2: "/emqx.exhook.v2.HookProvider/",
    v3: "/emqx.exhook.v3.HookProvider/",
  };
  return {
    async call(pkg, rpc, body, timeoutMs) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<RawAnswer>((resolve) => {
        timer = setTimeout(() => resolve({ status: 4, message: "Waiting for response timeout", body: undefined }), timeoutMs);
      });
      const reply = client.call(prefix[pkg] + rpc, body, { timeout: formatGrpcTimeout(timeoutMs) }).then(
        (r): RawAnswer => {
          // EMQX takes any reply carrying a message as an answer, whatever the status says.
          const msg = r.messages[0];
          if (msg !== undefined) return { status: 0, message: "", body: msg };
          return { status: Number.isNaN(r.grpcStatus) ? 2 : r.grpcStatus, message: r.grpcMessage, body: undefined };
        },
        (err: unknown): RawAnswer => ({ status: 14, message: err instanceof Error ? err.message : String(err), body: undefined }),
      );
      try {
        return await Promise.race([reply, deadline]);
      } finally {
        clearTimeout(timer);
      }
    },
    close: () => client.close(),
  };
}

/** Creates a fake EMQX node. Call `start()` before driving clients. */
export function createFakeEmqx(options: FakeEmqxOptions): FakeEmqx {
  const pkg = options.package ?? "v3";
  const version = options.version ?? (pkg === "v1" ? "4.4.19" : pkg === "v2" ? "5.8.9" : "5.9.0");
  const [major, minor, patch] = parseVersion(version);
  const node = options.node ?? "emqx@127.0.0.1";
  const failedAction = options.failedAction ?? "deny";
  const timeoutMs = options.requestTimeoutMs ?? 5000;
  const authnInput = options.authnResult ?? !(major === 5 && minor <= 8);
  const authzInput = (options.authzNoMatch ?? (major >= 6 ? "deny" : "allow")) === "allow";
  const legacyEnum = pkg === "v1" && isLegacyEnumBroker(version);
  // RequestMeta exists from 4.3.14 and 4.4.3 in the 4.x line.
  const sendsMeta = major !== 4 || (minor === 3 ? patch >= 14 : minor === 4 ? patch >= 3 : minor > 4);
  const meta = fakeMeta({ node, version, sysdescr: major >= 6 ? "EMQX Enterprise" : "EMQX", clusterName: options.clusterName ?? "emqxcl" });

  let transport: ExhookTransport;
  let dispatcher: Dispatcher | undefined;
  if (options.transport) transport = options.transport;
  else if (options.url) transport = socketTransport(options.url);
  else {
    const target = options.dispatcher ?? options.provider;
    if (!target) throw new TypeError("createFakeEmqx: give a provider, a dispatcher, a url or a transport");
    const mt = memoryTransport(target, options);
    dispatcher = mt.dispatcher;
    transport = mt;
  }

  const mounted = new Map<HookKey, readonly string[]>();
  const conns = new Map<string, Conn>();
  const inboxes = new Map<string, ReceivedMessage[]>();
  const calls: FakeCall[] = [];
  let loaded = false;
  const validNames = new Map(HOOKS.map((h) => [pkg === "v1" ? h.v1Name : h.name, h] as const));

  const byKey = (key: HookKey): HookDef => HOOKS.find((h) => h.key === key) as HookDef;

  /** Sends one hook call if the hook is mounted (and its filters match); `undefined` = not called. */
  async function hook(key: HookKey, clientid: string, request: Record<string, unknown>, topic?: string): Promise<RawAnswer | undefined> {
    const filters = mounted.get(key);
    if (filters === undefined) return undefined;
    if (topic !== undefined && filters.length > 0 && !filters.some((f) => matchTopic(f, topic))) return undefined;
    const def = byKey(key);
    const body = encodeRequestFor(pkg, def, sendsMeta ? { ...request, meta } : request);
    const answer = await transport.call(pkg, rpcFor(pkg, def), body, timeoutMs);
    calls.push({ hook: def.name, clientid, result: answer.status === 0 ? "ok" : "failed" });
    return answer;
  }

  type Valued = { kind: "failed" } | { kind: "ignore" } | { kind: "bool"; value: boolean } | { kind: "message"; value: v3.Message };

  function readValued(answer: RawAnswer): Valued {
    if (answer.status !== 0 || !answer.body) return { kind: "failed" };
    let res: v3.ValuedResponse;
    try {
      res = fromBinary(v3.ValuedResponseSchema, answer.body);
    } catch {
      return { kind: "failed" };
    }
    let type: number = res.type;
    if (legacyEnum) type = type === 0 ? IGNORE : type === 1 ? CONTINUE : type;
    if (type !== CONTINUE && type !== STOP_AND_RETURN) return { kind: "ignore" };
    if (res.value.case === "boolResult") return { kind: "bool", value: res.value.value };
    if (res.value.case === "message") return { kind: "message", value: res.value.value };
    return { kind: "ignore" };
  }

  /** The authenticate/authorize fold for one server. */
  async function decide(
    key: "onClientAuthenticate" | "onClientAuthorize",
    clientid: string,
    request: Record<string, unknown>,
    input: boolean,
  ): Promise<boolean> {
    const answer = await hook(key, clientid, { ...request, result: input });
    if (answer === undefined) return input;
    const v = readValued(answer);
    if (v.kind === "failed") return failedAction === "deny" ? false : input;
    return v.kind === "bool" ? v.value : input;
  }

  function clientInfo(conn: Conn, password = ""): v3.ClientInfo {
    return { ...conn.clientinfo, password };
  }

  function connOf(clientid: string): Conn {
    const conn = conns.get(clientid);
    if (!conn) throw new Error(`fake EMQX: client ${JSON.stringify(clientid)} is not connected`);
    return conn;
  }

  async function deliver(message: v3.Message): Promise<number> {
    let count = 0;
    for (const [id, conn] of conns) {
      let best = -1;
      for (const [filter, qos] of conn.subs) if (matchTopic(filter, message.topic) && qos > best) best = qos;
      if (best < 0) continue;
      const out: v3.Message = { ...message, qos: Math.min(best, message.qos) };
      await hook("onMessageDelivered", id, { clientinfo: conn.clientinfo, message: out }, out.topic);
      let box = inboxes.get(id);
      if (!box) inboxes.set(id, (box = []));
      box.push({ topic: out.topic, payload: decoder.decode(out.payload), qos: out.qos, from: out.from });
      if (out.qos > 0) await hook("onMessageAcked", id, { clientinfo: conn.clientinfo, message: out }, out.topic);
      count++;
    }
    return count;
  }

  return {
    package: pkg,
    version,
    dispatcher,
    calls,
    async start() {
      const broker = fakeBrokerInfo({ version, sysdescr: meta.sysdescr });
      const answer = await transport.call(
        pkg,
        "OnProviderLoaded",
        encodeRequestFor(pkg, "loaded", sendsMeta ? { broker, meta } : { broker }),
        timeoutMs,
      );
      if (answer.status !== 0 || !answer.body) throw new FakeEmqxLoadError(`load failed: gRPC status ${answer.status} ${answer.message}`);
      const res = fromBinary(v3.LoadedResponseSchema, answer.body);
      const next = new Map<HookKey, readonly string[]>();
      // EMQX folds the list right to left into a map: the first occurrence of a name wins.
      for (const spec of [...res.hooks].reverse()) {
        const def = validNames.get(spec.name);
        if (!def) throw new FakeEmqxLoadError(`unknown_hookpoint: ${JSON.stringify(spec.name)} is not a hook of EMQX ${version}`);
        next.set(def.key, def.topics ? [...spec.topics] : []);
      }
      mounted.clear();
      for (const def of HOOKS) {
        const t = next.get(def.key);
        if (t !== undefined) mounted.set(def.key, t);
      }
      loaded = true;
      return [...mounted].map(([key, topics]) => ({ name: byKey(key).name, topics: [...topics] }));
    },
    async stop() {
      if (loaded) await transport.call(pkg, "OnProviderUnloaded", encodeRequestFor(pkg, "unloaded", sendsMeta ? { meta } : {}), 5000);
      loaded = false;
      mounted.clear();
      await transport.close();
    },
    async connect(o) {
      const peerport = o.peerport ?? nextPeerPort();
      const base = {
        node,
        clientid: o.clientid,
        username: o.username ?? "",
        peerhost: o.peerhost ?? "127.0.0.1",
        peerport,
        sockport: o.sockport ?? 1883,
      };
      const conninfo = { ...base, protoName: "MQTT", protoVer: o.protoVer ?? "5", keepalive: 60 } as v3.ConnInfo;
      const conn: Conn = {
        conninfo,
        clientinfo: {
          ...base,
          password: "",
          protocol: "mqtt",
          mountpoint: "",
          isSuperuser: false,
          anonymous: false,
          cn: "",
          dn: "",
        } as v3.ClientInfo,
        subs: new Map(),
      };
      await hook("onClientConnect", o.clientid, { conninfo, props: [] });
      const ok = await decide("onClientAuthenticate", o.clientid, { clientinfo: clientInfo(conn, o.password ?? "") }, authnInput);
      if (!ok) {
        await hook("onClientConnack", o.clientid, { conninfo, resultCode: "not_authorized", props: [] });
        return { connected: false, reasonCode: "not_authorized" };
      }
      const old = conns.get(o.clientid);
      const takeover = old !== undefined && o.cleanStart === false;
      if (old) {
        await hook(takeover ? "onSessionTakenover" : "onSessionDiscarded", o.clientid, { clientinfo: old.clientinfo });
        if (takeover) conn.subs = old.subs;
      }
      await hook(takeover ? "onSessionResumed" : "onSessionCreated", o.clientid, { clientinfo: conn.clientinfo });
      conns.set(o.clientid, conn);
      await hook("onClientConnected", o.clientid, { clientinfo: conn.clientinfo });
      await hook("onClientConnack", o.clientid, { conninfo, resultCode: "success", props: [] });
      // The old connection's process ends after the new one is connected: its
      // client.disconnected arrives after the new client.connected.
      if (old) await hook("onClientDisconnected", o.clientid, { clientinfo: old.clientinfo, reason: takeover ? "takenover" : "discarded" });
      return { connected: true, reasonCode: "success", sessionPresent: takeover };
    },
    async subscribe(clientid, filter, qos = 0) {
      const conn = connOf(clientid);
      const allowed = await decide(
        "onClientAuthorize",
        clientid,
        { clientinfo: conn.clientinfo, type: v3.ClientAuthorizeRequest_AuthorizeReqType.SUBSCRIBE, topic: filter },
        authzInput,
      );
      if (!allowed) return { reasonCode: "not_authorized" };
      await hook("onClientSubscribe", clientid, {
        clientinfo: conn.clientinfo,
        props: [],
        topicFilters: [{ name: filter, subopts: { qos, rh: 0, rap: 0, nl: 0 } }],
      });
      conn.subs.set(filter, qos);
      await hook("onSessionSubscribed", clientid, { clientinfo: conn.clientinfo, topic: filter, subopts: { qos, rh: 0, rap: 0, nl: 0 } });
      return { granted: qos };
    },
    async unsubscribe(clientid, filter) {
      const conn = connOf(clientid);
      await hook("onClientUnsubscribe", clientid, { clientinfo: conn.clientinfo, props: [], topicFilters: [{ name: filter }] });
      if (conn.subs.delete(filter)) await hook("onSessionUnsubscribed", clientid, { clientinfo: conn.clientinfo, topic: filter });
    },
    async publish(clientid, m) {
      const conn = connOf(clientid);
      const allowed = await decide(
        "onClientAuthorize",
        clientid,
        { clientinfo: conn.clientinfo, type: v3.ClientAuthorizeRequest_AuthorizeReqType.PUBLISH, topic: m.topic },
        authzInput,
      );
      if (!allowed) return { published: false, reasonCode: "not_authorized" };
      let message: v3.Message = {
        $typeName: "emqx.exhook.v3.Message",
        node,
        id: fakeMessageId(),
        qos: m.qos ?? 0,
        from: clientid,
        topic: m.topic,
        payload: typeof m.payload === "string" ? encoder.encode(m.payload) : (m.payload ?? new Uint8Array(0)),
        timestamp: BigInt(Date.now()),
        headers: { username: conn.clientinfo.username, protocol: "mqtt", peerhost: conn.clientinfo.peerhost },
      };
      if (!message.topic.startsWith("$SYS/")) {
        const answer = await hook("onMessagePublish", clientid, { message, props: [], userProps: [] }, message.topic);
        const v = answer === undefined ? ({ kind: "ignore" } as Valued) : readValued(answer);
        if (v.kind === "message") {
          // EMQX copies only qos, topic and payload, plus the allow_publish header.
          message = { ...message, qos: v.value.qos, topic: v.value.topic, payload: v.value.payload };
          if (v.value.headers["allow_publish"] === "false") return { dropped: true, reason: "provider" };
        }
      }
      const n = await deliver(message);
      if (n === 0) {
        await hook("onMessageDropped", clientid, { message, reason: "no_subscribers" }, message.topic);
        return { dropped: true, reason: "no_subscribers" };
      }
      return { delivered: true, topic: message.topic, payload: decoder.decode(message.payload), qos: message.qos };
    },
    async disconnect(clientid, reason = "normal") {
      const conn = connOf(clientid);
      conns.delete(clientid);
      await hook("onClientDisconnected", clientid, { clientinfo: conn.clientinfo, reason });
      await hook("onSessionTerminated", clientid, { clientinfo: conn.clientinfo, reason });
    },
    inbox: (clientid) => [...(inboxes.get(clientid) ?? [])],
    isConnected: (clientid) => conns.has(clientid),
  };
}
