/**
 * The hook table: every EMQX hook the framework knows, with its handler key, its hook names per
 * wire package, the rpc that carries it and what kind of answer it takes. Pure data; the handler
 * types below are derived from the generated v3 service, so a proto change updates them.
 */
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";

/** The three protobuf packages EMQX speaks: v1 = 4.3/4.4, v2 = 5.0–5.8, v3 = 5.9+/6.x. */
export type WirePackage = "v1" | "v2" | "v3";

/** All wire packages, oldest first. */
export const WIRE_PACKAGES: readonly WirePackage[] = ["v1", "v2", "v3"];

type V3Methods = (typeof v3.HookProvider)["method"];

/** The handler keys: the generated rpc local names, minus the provider lifecycle rpcs. */
export type HookKey = Exclude<keyof V3Methods, "onProviderLoaded" | "onProviderUnloaded">;

/** The request a handler receives for hook `K` (always the v3 shape, whatever EMQX speaks). */
export type HookRequest<K extends HookKey> = MessageShape<V3Methods[K]["input"]>;

/** Hooks whose answer is a decision (`ValuedResponse`). */
export type AccessHookKey = "onClientAuthenticate" | "onClientAuthorize";
/** The one hook that can keep, rewrite or drop a message. */
export type PublishHookKey = "onMessagePublish";
/** The three hooks that answer with a `ValuedResponse`. */
export type DecisionHookKey = AccessHookKey | PublishHookKey;
/** Hooks whose `HookSpec` may carry topic filters. */
export type MessageHookKey = "onMessagePublish" | "onMessageDelivered" | "onMessageDropped" | "onMessageAcked";
/** Hooks whose answer EMQX ignores (`EmptySuccess`). */
export type NotificationHookKey = Exclude<HookKey, DecisionHookKey>;

/** What kind of answer a hook takes. */
export type HookKind = "access" | "publish" | "notification";

/** One row of the hook table. */
export interface HookDef {
  /** Handler key, the rpc's local name in the generated service (`onClientAuthorize`). */
  readonly key: HookKey;
  /** Hook name announced to EMQX 5.x/6.x (`client.authorize`). */
  readonly name: string;
  /** Hook name announced to EMQX 4.x (`client.check_acl`). */
  readonly v1Name: string;
  /** Rpc name in emqx.exhook.v2 and v3 (`OnClientAuthorize`). */
  readonly rpc: string;
  /** Rpc name in emqx.exhook.v1 (`OnClientCheckAcl`). */
  readonly v1Rpc: string;
  readonly kind: HookKind;
  /** Whether EMQX honours `HookSpec.topics` for this hook. */
  readonly topics: boolean;
  /** The v3 request schema. */
  readonly input: DescMessage;
}

const row = (key: HookKey, name: string, kind: HookKind = "notification", topics = false, v1Name = name, v1Rpc?: string): HookDef => {
  const method = v3.HookProvider.method[key];
  return Object.freeze({ key, name, v1Name, rpc: method.name, v1Rpc: v1Rpc ?? method.name, kind, topics, input: method.input });
};

/** Every hook, in the declaration order of the `HookProvider` service. */
export const HOOKS: readonly HookDef[] = Object.freeze([
  row("onClientConnect", "client.connect"),
  row("onClientConnack", "client.connack"),
  row("onClientConnected", "client.connected"),
  row("onClientDisconnected", "client.disconnected"),
  row("onClientAuthenticate", "client.authenticate", "access"),
  row("onClientAuthorize", "client.authorize", "access", false, "client.check_acl", "OnClientCheckAcl"),
  row("onClientSubscribe", "client.subscribe"),
  row("onClientUnsubscribe", "client.unsubscribe"),
  row("onSessionCreated", "session.created"),
  row("onSessionSubscribed", "session.subscribed"),
  row("onSessionUnsubscribed", "session.unsubscribed"),
  row("onSessionResumed", "session.resumed"),
  row("onSessionDiscarded", "session.discarded"),
  row("onSessionTakenover", "session.takenover", "notification", false, "session.takeovered", "OnSessionTakeovered"),
  row("onSessionTerminated", "session.terminated"),
  row("onMessagePublish", "message.publish", "publish", true),
  row("onMessageDelivered", "message.delivered", "notification", true),
  row("onMessageDropped", "message.dropped", "notification", true),
  row("onMessageAcked", "message.acked", "notification", true),
]);

/** Looks a hook up by handler key. */
export const HOOK_BY_KEY: ReadonlyMap<string, HookDef> = new Map(HOOKS.map((h) => [h.key, h]));

/** The hook name EMQX expects from a given package (`client.check_acl` for v1). */
export function hookNameFor(def: HookDef, pkg: WirePackage): string {
  return pkg === "v1" ? def.v1Name : def.name;
}

/** The rpc name a given package uses for a hook. */
export function rpcNameFor(def: HookDef, pkg: WirePackage): string {
  return pkg === "v1" ? def.v1Rpc : def.rpc;
}
