/**
 * emqx-exhook: typed EMQX ExHook servers. One handler set, served to EMQX 4.3 to 6.x
 * (`emqx.exhook.v1`, `v2`, `v3`) on one port.
 */

// Defining a provider
export { defineProvider } from "./provider.js";
export type {
  HookHandlers,
  HookHandler,
  HookConfig,
  HookResult,
  FallbackFor,
  ProviderOptions,
  Provider,
  HookMiddleware,
  HookCall,
  HookOutcome,
  FallbackReason,
  LoadedInfo,
  Logger,
} from "./provider.js";

// Decisions
export { allow, deny, allowIf, noOpinion, keep, rewrite, drop } from "./responses.js";
export type { AccessDecision, PublishDecision, Decision, Allow, Deny, NoOpinion, Keep, Rewrite, Drop } from "./responses.js";

// Hooks and context
export { HOOKS, hookNameFor, rpcNameFor, WIRE_PACKAGES } from "./hooks.js";
export type { HookKey, HookRequest, HookDef, WirePackage, AccessHookKey, PublishHookKey, DecisionHookKey, MessageHookKey, NotificationHookKey } from "./hooks.js";
export type { HookContext, BrokerRef } from "./context.js";

// Topics
export { matchTopic, isValidTopicFilter, topicFilterError, topicNameError, compileTopicFilters, stripShare } from "./topic.js";
export type { TopicMatcher } from "./topic.js";

// Serving
export { createDispatcher } from "./dispatch.js";
export type { Dispatcher, DispatcherOptions, CallInfo, LoadedNode, FallbackCounts } from "./dispatch.js";
export { exhookRoutes } from "./routes.js";
export { createExHookServer } from "./server.js";
export { parseGrpcTimeout } from "./native-transport.js";
export type { ExHookServer, ExHookServerOptions } from "./server.js";

// Operations: metrics, probes, health, TLS, logs
export { createMetrics, DEFAULT_LATENCY_BUCKETS } from "./ops/metrics.js";
export type { ExHookMetrics, MetricsOptions } from "./ops/metrics.js";
export { createOpsServer } from "./ops/http-probes.js";
export type { OpsServer, OpsServerOptions, ReadyWhen } from "./ops/http-probes.js";
export { ServingStatus, HealthService } from "./ops/health.js";
export type { TlsFiles } from "./ops/tls.js";
export { createLogger, hookLogMiddleware } from "./ops/logger.js";
export type { LoggerOptions } from "./ops/logger.js";

// Per-client context and presence
export { connectionOf, connectionKey } from "./connection.js";
export type { Connection, ConnectionFields } from "./connection.js";
export { createClientContext } from "./client-context.js";
export type { ClientContext, ClientContextOptions, ClientConnection, ClientLifecycleEvent, ConnectionState } from "./client-context.js";
export { createMemoryPresence } from "./presence.js";
export type { MemoryPresence, MemoryPresenceOptions, PresenceState, PresenceEvent, PresenceSink } from "./presence.js";

// Errors
export { ExHookConfigError, isExHookConfigError } from "./errors.js";

// Message types (v3 shape, what every handler receives)
export type {
  ClientInfo,
  ConnInfo,
  Message,
  Property,
  RequestMeta,
  TopicFilter,
  SubOpts,
  BrokerInfo,
  ValuedResponse,
  ClientAuthenticateRequest,
  ClientAuthorizeRequest,
  MessagePublishRequest,
} from "../gen/emqx/exhook/v3/exhook_pb.js";
export { ClientAuthorizeRequest_AuthorizeReqType as AuthorizeType } from "../gen/emqx/exhook/v3/exhook_pb.js";
