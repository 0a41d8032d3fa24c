/**
 * The in-memory client: calls a provider the way EMQX does, without a port. Requests are encoded
 * with the generated schemas of the chosen package (`v1`, `v2`, `v3`) and handed to the
 * dispatcher's `handleBytes`, the same entry point the HTTP/2 server uses, so a test exercises the
 * same wire adapters, budgets and fallbacks as production.
 */
import { create, fromBinary, toBinary, type DescMessage, type Message } from "@bufbuild/protobuf";
import { ConnectError, Code } from "@connectrpc/connect";
import * as v3 from "../../gen/emqx/exhook/v3/exhook_pb.js";
import { createDispatcher, type Dispatcher, type DispatcherOptions } from "../dispatch.js";
import { HOOK_BY_KEY, rpcNameFor, type HookDef, type HookKey, type WirePackage } from "../hooks.js";
import type { Provider } from "../provider.js";
import { createUnaryService, formatGrpcTimeout, frameMessage, isFailure } from "../protocol/grpc-unary.js";
import { SERVICES, type RpcTarget } from "../wire.js";
import { fakeBrokerInfo, fakeMeta } from "./fixtures.js";

/** What came back from one call, transport-independent. */
export interface RawAnswer {
  /** gRPC status: 0 on success. */
  readonly status: number;
  /** `grpc-message` of a failed call, "" otherwise. */
  readonly message: string;
  /** The response message bytes (success only). */
  readonly body: Uint8Array | undefined;
}

/** How the fake EMQX and the memory client reach a provider: in memory or over HTTP/2. */
export interface ExhookTransport {
  /**
   * Calls rpc `rpc` (the package's own rpc name, e.g. `OnClientCheckAcl` in v1) with an encoded
   * request. `timeoutMs` is sent as `grpc-timeout` and is also the caller's own deadline: no
   * answer by then gives status 4 (DEADLINE_EXCEEDED), as in EMQX's gRPC client.
   */
  call(pkg: WirePackage, rpc: string, body: Uint8Array, timeoutMs: number): Promise<RawAnswer>;
  close(): Promise<void>;
}

/** Anything a memory transport can serve: a provider (a dispatcher is made for it) or a dispatcher. */
export type ProviderOrDispatcher = Provider | Dispatcher;

function toDispatcher(target: ProviderOrDispatcher, options: DispatcherOptions): Dispatcher {
  return "handleBytes" in target ? target : createDispatcher(target, options);
}

/** Options of {@link memoryTransport}. */
export interface MemoryTransportOptions extends DispatcherOptions {}

/**
 * A transport that calls the dispatcher in memory through the same unary gRPC code the native
 * transport runs (src/protocol/grpc-unary.ts): the request is framed, its path routed, its
 * `grpc-timeout` parsed, the envelope checked and every error mapped to a status exactly as over
 * HTTP/2; only the sockets are missing.
 */
export function memoryTransport(
  target: ProviderOrDispatcher,
  options: MemoryTransportOptions = {},
): ExhookTransport & { readonly dispatcher: Dispatcher } {
  const dispatcher = toDispatcher(target, options);
  const service = createUnaryService(dispatcher, {
    onInternalError: (err) =>
      (options.logger ?? console).error(
        { err: err instanceof Error ? err.stack : String(err) },
        "internal error while serving a call (answered INTERNAL)",
      ),
  });
  return {
    dispatcher,
    call(pkg, rpc, body, timeoutMs) {
      const head = service.head("POST", `/${SERVICES[pkg].typeName}/${rpc}`, formatGrpcTimeout(timeoutMs));
      if (isFailure(head)) return Promise.resolve({ status: head.code, message: head.message, body: undefined });
      return new Promise<RawAnswer>((resolve) => {
        let cancel: { abort(reason: unknown): void } | undefined;
        let settled = false;
        let timedOut = false;
        const settle = (answer: RawAnswer) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve(answer);
        };
        // The caller's own deadline, as EMQX's client keeps it: no answer by then is a failed call,
        // and the call is cancelled (the handler's signal aborts).
        const timer = setTimeout(() => {
          timedOut = true;
          cancel?.abort(new ConnectError("the call was cancelled", Code.Canceled));
          settle({ status: Code.DeadlineExceeded, message: "Waiting for response timeout", body: undefined });
        }, timeoutMs);
        service.run(
          head,
          frameMessage(body),
          undefined,
          {
            ok: (_t, message) => settle({ status: 0, message: "", body: message }),
            fail: (_t, failure) => settle({ status: failure.code, message: failure.message, body: undefined }),
          },
          (ctx) => {
            if (timedOut) ctx.abort(new ConnectError("the call was cancelled", Code.Canceled));
            else cancel = ctx;
          },
        );
      });
    },
    close: () => Promise.resolve(),
  };
}

/** The request schema of a target in a package (v1's own names and shapes where they differ). */
export function requestSchemaFor(pkg: WirePackage, target: RpcTarget): DescMessage {
  const rpc = target === "loaded" ? "OnProviderLoaded" : target === "unloaded" ? "OnProviderUnloaded" : rpcNameFor(target, pkg);
  const method = SERVICES[pkg].methods.find((m) => m.name === rpc);
  if (!method) throw new Error(`no rpc ${rpc} in ${pkg}`);
  return method.input;
}

/** The rpc name of a target in a package. */
export function rpcFor(pkg: WirePackage, target: RpcTarget): string {
  return target === "loaded" ? "OnProviderLoaded" : target === "unloaded" ? "OnProviderUnloaded" : rpcNameFor(target, pkg);
}

/**
 * Encodes a request given in the v3 shape as EMQX speaking `pkg` would send it: fields the
 * package lacks are left out, v1 gets `TopicFilter.qos` instead of `subopts` and a textual uptime.
 */
export function encodeRequestFor(pkg: WirePackage, target: RpcTarget, request: object): Uint8Array {
  const schema = requestSchemaFor(pkg, target);
  let init: Record<string, unknown> = request as Record<string, unknown>;
  if (pkg === "v1") {
    init = { ...init };
    const filters = init["topicFilters"];
    if (Array.isArray(filters)) {
      init["topicFilters"] = filters.map((tf: v3.TopicFilter) => ({ name: tf.name, qos: tf.subopts?.qos ?? 0 }));
    }
    const broker = init["broker"] as v3.BrokerInfo | undefined;
    if (target === "loaded" && broker) {
      init["broker"] = {
        version: broker.version,
        sysdescr: broker.sysdescr,
        datetime: broker.datetime,
        uptime: `${(Number(broker.uptime) / 1000) | 0} seconds`,
      };
    }
  }
  return toBinary(schema, create(schema, init as never));
}

/** Decodes an answer: `LoadedResponse`, `ValuedResponse` or `EmptySuccess` (wire-identical in all packages). */
export function decodeAnswer(target: RpcTarget, body: Uint8Array): Message {
  if (target === "loaded") return fromBinary(v3.LoadedResponseSchema, body);
  if (target === "unloaded" || target.kind === "notification") return fromBinary(v3.EmptySuccessSchema, body);
  return fromBinary(v3.ValuedResponseSchema, body);
}

/** The reply of one memory-client call. */
export interface MemoryReply<R extends Message = Message> {
  readonly status: number;
  readonly message: string;
  /** The decoded response (status 0 only). */
  readonly response: R | undefined;
}

/** Options of {@link createMemoryClient}. */
export interface MemoryClientOptions extends DispatcherOptions {
  /** The wire package to speak. Default `"v3"`. */
  readonly package?: WirePackage;
  /** `grpc-timeout` of each call in ms (EMQX `request_timeout`). Default 5000. */
  readonly timeoutMs?: number;
}

/** Loads a provider and calls its hooks in memory, speaking one package. */
export interface MemoryClient {
  readonly package: WirePackage;
  readonly dispatcher: Dispatcher;
  /** Sends `OnProviderLoaded` (as EMQX `version` on `node`); resolves with the announced hooks. */
  load(options?: {
    readonly version?: string;
    readonly node?: string;
    readonly clusterName?: string;
  }): Promise<Array<{ name: string; topics: string[] }>>;
  /** Sends `OnProviderUnloaded`. */
  unload(options?: { readonly node?: string }): Promise<void>;
  /** Calls hook `key` with a v3-shaped request (`meta` added when missing). */
  call(key: HookKey, request: object, options?: { readonly timeoutMs?: number }): Promise<MemoryReply>;
  /** Calls `onClientAuthenticate`/`onClientAuthorize`/`onMessagePublish` and decodes the `ValuedResponse`. */
  valued(
    key: "onClientAuthenticate" | "onClientAuthorize" | "onMessagePublish",
    request: object,
    options?: { readonly timeoutMs?: number },
  ): Promise<MemoryReply<v3.ValuedResponse>>;
}

/** Creates an in-memory client for a provider (or a dispatcher shared with other clients). */
export function createMemoryClient(target: ProviderOrDispatcher, options: MemoryClientOptions = {}): MemoryClient {
  const pkg = options.package ?? "v3";
  const transport = memoryTransport(target, options);
  const defaultTimeout = options.timeoutMs ?? 5000;
  const call = async (key: HookKey, request: object, opts: { readonly timeoutMs?: number } = {}): Promise<MemoryReply> => {
    const def = HOOK_BY_KEY.get(key) as HookDef | undefined;
    if (!def) throw new Error(`unknown hook ${key}`);
    const req = "meta" in request ? request : { ...request, meta: fakeMeta() };
    const answer = await transport.call(pkg, rpcFor(pkg, def), encodeRequestFor(pkg, def, req), opts.timeoutMs ?? defaultTimeout);
    return { status: answer.status, message: answer.message, response: answer.body ? decodeAnswer(def, answer.body) : undefined };
  };
  return {
    package: pkg,
    dispatcher: transport.dispatcher,
    async load(o = {}) {
      const version = o.version ?? (pkg === "v1" ? "4.4.19" : pkg === "v2" ? "5.8.9" : "5.9.0");
      const req = {
        broker: fakeBrokerInfo({ version }),
        meta: fakeMeta({ version, node: o.node ?? fakeMeta().node, clusterName: o.clusterName ?? "emqxcl" }),
      };
      const answer = await transport.call(pkg, "OnProviderLoaded", encodeRequestFor(pkg, "loaded", req), defaultTimeout);
      if (answer.status !== 0 || !answer.body) throw new Error(`OnProviderLoaded failed: ${answer.status} ${answer.message}`);
      return (decodeAnswer("loaded", answer.body) as v3.LoadedResponse).hooks.map((h) => ({ name: h.name, topics: [...h.topics] }));
    },
    async unload(o = {}) {
      await transport.call(
        pkg,
        "OnProviderUnloaded",
        encodeRequestFor(pkg, "unloaded", { meta: fakeMeta({ node: o.node ?? fakeMeta().node }) }),
        defaultTimeout,
      );
    },
    call,
    valued: (key, request, opts) => call(key, request, opts) as Promise<MemoryReply<v3.ValuedResponse>>,
  };
}
