/**
 * Ready-to-use ExHook use cases: authentication, authorization, message persistence and presence
 * on one store (SQLite embedded, or PostgreSQL shared by several instances). Import from
 * `emqx-exhook/usecases`, or run them all with `emqx-exhook serve examples/stack-provider.js`.
 */
export { createStack, openStore, loadAcl } from "./stack.js";
export type { Stack, StackOptions, OpenStoreOptions } from "./stack.js";
export { stackProvider } from "./stack-provider.js";
export {
  loadConfig,
  parseConfig,
  parseDuration,
  parseBytes,
  resolvedStore,
  configSchema,
  aclRuleSchema,
  DEFAULT_ACL_RULES,
} from "./config.js";
export type { StackConfig, StackConfigInput } from "./config.js";
// Authentication (H4): passwords in many formats, bounded fair hashing, throttling, JWT, superuser.
export { createAuthenticator, addUser, usernameError, compileClientIdPatterns, defaultHashConcurrency, DEFAULT_THROTTLE } from "./auth.js";
export type {
  Authenticator,
  AuthenticatorOptions,
  AuthOutcome,
  AuthResult,
  AuthCheckOptions,
  AuthStats,
  AuthClientData,
  ClientAuth,
  AddUserOptions,
  AuthThrottleOptions,
} from "./auth.js";
export {
  hashPassword,
  verifyPassword,
  needsRehash,
  parseHash,
  DEFAULT_SCRYPT,
  hashFormatOf,
  isCheapHash,
  emqxSimpleHash,
  emqxPbkdf2Hash,
  goAuthPbkdf2Hash,
  importSelfDescribingHash,
  toEmqxHash,
} from "./password.js";
export type { ScryptParams, HashFormat, EmqxSimpleAlgorithm, SaltPosition, Pbkdf2Mac, EmqxExport } from "./password.js";
export { compileGlob, compileGlobs } from "./glob.js";
export type { GlobMatcher } from "./glob.js";
export { createFairQueue, QueueRefusedError } from "./fair-queue.js";
export type { FairQueue, FairQueueOptions, FairQueueStats, JobOptions, QueueRefusal } from "./fair-queue.js";
export { createLoginThrottle } from "./login-throttle.js";
export type { LoginThrottle, LoginThrottleOptions, ThrottleLimit, ThrottleVerdict } from "./login-throttle.js";
export { createJwtVerifier, aclRulesFromClaim, looksLikeJwt, claimTemplateError, JwtKeysUnavailableError } from "./jwt.js";
export type { JwtVerifier, JwtVerifierOptions, JwtResult } from "./jwt.js";
export { createJwksSource, fetchJwks } from "./jwks.js";
export type { JwksSource, JwksSourceOptions, JwksStats, JsonWebKeySet } from "./jwks.js";
export { compileAcl, aclTopicError } from "./acl.js";
export type { Acl, AclRule, AclRequest, AclResult } from "./acl.js";
// Authorization: rule options, the authorizer (superuser / per-client rules), the decision cache,
// invalidations across workers, instances and EMQX.
export { aclRequestOf, peerhostError, EMQX_DEFAULT_LISTENERS } from "./acl.js";
export type { AclOptions } from "./acl.js";
export { createAuthorizer, deriveClientAttrs } from "./authorizer.js";
export type {
  Authorizer,
  AuthorizerOptions,
  AuthorizeResult,
  AuthorizeSource,
  ClientRules,
  ClientAttrRule,
  SuperuserCheck,
  ClientRulesLookup,
  ClientAttrsLookup,
} from "./authorizer.js";
export { createDecisionCache } from "./decision-cache.js";
export type { DecisionCache, DecisionCacheOptions, DecisionCacheStats, CacheInvalidation, CacheableHook } from "./decision-cache.js";
export { createInvalidationHub, LISTENER_APP_NAME } from "./invalidation.js";
export type { Invalidation, InvalidationHub, InvalidationHubOptions, InvalidationHubStats, InvalidationOrigin } from "./invalidation.js";
export { createEmqxNotifier } from "./emqx-api.js";
export type { EmqxNotifier, EmqxNotifierOptions, EmqxNotifierStats } from "./emqx-api.js";
export { createPersistence, createMessageWriter, createMessageRetention, messageBytes, RETENTION_CHUNK } from "./persistence.js";
export type {
  Persistence,
  PersistenceOptions,
  MessageWriter,
  MessageWriterOptions,
  MessageWriterStats,
  MessageRetention,
  MessageRetentionOptions,
} from "./persistence.js";
export { createStoredPresence } from "./presence.js";
export type { StoredPresence, StoredPresenceOptions, StoredPresenceStats } from "./presence.js";
export { createReadApi, createReadServer, messageJson, messageQueryFrom, parseTime, READ_API_PATHS } from "./http.js";
export type { ReadApi, ReadApiOptions, ReadServer, ReadServerOptions, MessageJson } from "./http.js";
export { openSqliteStore } from "./sqlite-store.js";
export type { SqliteStoreOptions } from "./sqlite-store.js";
// Store outages and the SQLite threads (issue 13).
export { openSqliteWorkerStore } from "./sqlite-worker-store.js";
export type { SqliteWorkerStoreOptions } from "./sqlite-worker-store.js";
export { createHeldWrites } from "./held-writes.js";
export type { HeldWrites, HeldWritesOptions, HeldWritesStats } from "./held-writes.js";
export { isPermanentStoreError, backoffDelay } from "./store-retry.js";
export { QueryTimeoutError, SCAN_CHUNK } from "./store.js";
export { openPostgresStore } from "./pg-store.js";
export type { PostgresStoreOptions } from "./pg-store.js";
export type {
  Store,
  UserRecord,
  UserInput,
  StoredMessage,
  MessageQuery,
  PresenceState,
  PresenceChange,
  PresenceListOptions,
} from "./store.js";
export type { InvalidationRecord, InvalidationScope } from "./store.js";
// Bridge: messages and events to NATS JetStream, RabbitMQ, Redis Streams through a durable outbox (docs/bridging.md).
export { createBridge, mergeHookHandlers, resolveSecret } from "./bridge/bridge.js";
export type { Bridge, BridgeOptions, BridgeStats } from "./bridge/bridge.js";
export { bridgeSchema, sinkSchema, BRIDGE_HOOKS } from "./bridge/config-schema.js";
export type { BridgeConfig, SinkConfig, NatsSinkConfig, RabbitmqSinkConfig, RedisSinkConfig, BridgeHook } from "./bridge/config-schema.js";
export type { Sink, SinkOutcome, SinkEvents, SinkStatus } from "./bridge/sink.js";
export { createNatsSink } from "./bridge/nats-sink.js";
export { createRabbitmqSink } from "./bridge/rabbitmq-sink.js";
export { createRedisSink } from "./bridge/redis-sink.js";
export { createForwarder, newOwnerId } from "./bridge/forwarder.js";
export type { Forwarder, ForwarderOptions, ForwarderStats, ForwarderObserver } from "./bridge/forwarder.js";
export { createOutboxWriter } from "./bridge/outbox-writer.js";
export type { OutboxWriter, OutboxWriterOptions, OutboxWriterStats, LostReason } from "./bridge/outbox-writer.js";
export { compileTemplate, TEMPLATE_VARIABLES } from "./bridge/template.js";
export type { Template, TemplateStyle, TemplateValues } from "./bridge/template.js";
export { createBridgeMetrics } from "./bridge/metrics.js";
export type { BridgeMetrics } from "./bridge/metrics.js";
export type {
  OutboxEntry,
  OutboxRow,
  OutboxBound,
  OutboxAppendResult,
  OutboxLease,
  OutboxLeaseOptions,
  OutboxSettlement,
  OutboxStats,
} from "./store.js";
