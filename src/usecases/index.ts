/**
 * Ready-to-use ExHook use cases: authentication, authorization, message persistence and presence
 * on one store (SQLite embedded, or PostgreSQL shared by several instances). Import from
 * `emqx-exhook/usecases`, or run them all with `emqx-exhook serve examples/stack-provider.js`.
 */
export { createStack, openStore, loadAcl } from "./stack.js";
export type { Stack, StackOptions, OpenStoreOptions } from "./stack.js";
export { stackProvider } from "./stack-provider.js";
export { loadConfig, parseConfig, parseDuration, parseBytes, resolvedStore, configSchema, DEFAULT_ACL_RULES } from "./config.js";
export type { StackConfig, StackConfigInput } from "./config.js";
export { createAuthenticator, addUser, usernameError, compileClientIdPatterns } from "./auth.js";
export type { Authenticator, AuthenticatorOptions, AuthOutcome } from "./auth.js";
export { hashPassword, verifyPassword, needsRehash, parseHash, DEFAULT_SCRYPT } from "./password.js";
export type { ScryptParams } from "./password.js";
export { compileAcl, aclTopicError } from "./acl.js";
export type { Acl, AclRule, AclRequest, AclResult } from "./acl.js";
export { createPersistence, createMessageWriter, createMessageRetention, messageBytes, RETENTION_CHUNK } from "./persistence.js";
export type { Persistence, PersistenceOptions, MessageWriter, MessageWriterOptions, MessageWriterStats, MessageRetention, MessageRetentionOptions } from "./persistence.js";
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
export type { Store, UserRecord, StoredMessage, MessageQuery, PresenceState, PresenceChange, PresenceListOptions } from "./store.js";
