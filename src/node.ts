/**
 * `emqx-exhook/node`: the standalone Node.js server and its operations (metrics, probes, health,
 * TLS, logs, the cluster bus of `serve --workers`), as `@connectrpc/connect-node` is to
 * `@connectrpc/connect`. Define the provider with the core entry (`emqx-exhook`), serve it here.
 */

// The server
export { createExHookServer } from "./server.js";
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
export { clusterBus } from "./ops/cluster-bus.js";
export type { ClusterBus, BusListener, PublishOptions } from "./ops/cluster-bus.js";
