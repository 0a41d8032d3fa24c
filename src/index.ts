/**
 * emqx-exhook: typed EMQX ExHook servers. One handler set, served to EMQX 4.3 to 6.x
 * (`emqx.exhook.v1`, `v2`, `v3`) on one port.
 *
 * This is the core entry: defining a provider, decisions, hooks, topics, routes for a Connect
 * router, the dispatcher, errors and message types. It loads nothing from `node:` and no logger,
 * metrics or server library. The standalone server and operations are in `emqx-exhook/node`, the
 * test kit in `emqx-exhook/testing`, the ready-made use cases in `emqx-exhook/usecases`.
 */

// Defining a provider
export { defineProvider } from "./provider.js";
export type {
  HookHandlers,
  HookHandler,
  HookConfig,
  HookResult,
  ProviderOptions,
  Provider,
  HookMiddleware,
  HookCall,
  HookOutcome,
  FallbackReason,
  LoadedInfo,
  Logger,
} from "./provider.js";
export type { ProviderSetup } from "./provider-setup.js";

// Decisions
export { allow, deny, allowIf, noOpinion, keep, rewrite, drop } from "./responses.js";
export type { AccessDecision, PublishDecision, Decision } from "./responses.js";

// Hooks, context, topics
export type { HookKey, HookRequest, WirePackage } from "./hooks.js";
export type { HookContext, BrokerRef } from "./context.js";
export { matchTopic, isValidTopicFilter, topicFilterError } from "./topic.js";

// Serving on your own Connect router, or driving the dispatcher yourself
export { exhookRoutes } from "./routes.js";
export { createDispatcher } from "./dispatch.js";
export type { Dispatcher, DispatcherOptions } from "./dispatch.js";

// Connections: per-client context and presence
export type { Connection } from "./connection.js";
export { createClientContext } from "./client-context.js";
export type { ClientContext, ClientContextOptions, ClientConnection } from "./client-context.js";
export { createMemoryPresence } from "./presence.js";
export type { MemoryPresence, MemoryPresenceOptions, PresenceState, PresenceEvent, PresenceSink } from "./presence.js";

// Errors
export { ExHookConfigError, isExHookConfigError } from "./errors.js";

// Message types (v3 shape, what every handler receives)
export type {
  ClientInfo,
  ConnInfo,
  Message,
  RequestMeta,
  TopicFilter,
  ValuedResponse,
} from "../gen/emqx/exhook/v3/exhook_pb.js";
export { ClientAuthorizeRequest_AuthorizeReqType as AuthorizeType } from "../gen/emqx/exhook/v3/exhook_pb.js";
