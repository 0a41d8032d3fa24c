/**
 * Storage drivers, the bcrypt / Argon2 verifiers of imported password hashes and the bridge's
 * engine clients are optional peer dependencies: a provider that uses no store installs no native
 * module, and one that bridges nowhere no engine client. A store loads its driver when it is
 * opened, a bridge sink its client when it is created, through {@link loadOptional}, which turns a
 * missing package into an error that says what to install.
 */
import { ExHookConfigError } from "../errors.js";
import { ownRequire } from "../own-location.js";

/**
 * The optional peer dependencies and the versions this package works with (package.json
 * `peerDependencies` says the same; test/package.test.ts keeps the two equal).
 */
export const OPTIONAL_DEPENDENCIES = {
  // Verifying imported bcrypt / Argon2 hashes (prebuilt native modules, loaded on the first such hash).
  "@node-rs/argon2": "^2.2.1",
  // 1.10.8 exactly: later releases are published for linux-x64 only, so installs elsewhere would fail.
  "@node-rs/bcrypt": "1.10.8",
  "better-sqlite3": "~12.11",
  pg: "^8.23.1",
  // The bridge's engine clients (src/usecases/bridge), loaded when a sink of that kind is configured.
  "@nats-io/transport-node": "^3.3.1",
  "@nats-io/jetstream": "^3.3.1",
  amqplib: "^2.3.1",
  ioredis: "^6.0.0",
} as const;

/** The name of an optional peer dependency. */
export type OptionalDependency = keyof typeof OPTIONAL_DEPENDENCIES;

/**
 * Loads an optional peer dependency (synchronously, so it also works at the top of a worker thread).
 * `purpose` says what needs it ("the SQLite store"). Throws an {@link ExHookConfigError} naming the
 * package and the version to install when it is not installed, or saying it is installed but does
 * not load (e.g. a native module built for another Node.js).
 */
export function loadOptional<T = unknown>(name: OptionalDependency, purpose: string): T {
  const install = `npm install ${name}@"${OPTIONAL_DEPENDENCIES[name]}"`;
  try {
    return ownRequire(name) as T;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "MODULE_NOT_FOUND" && new RegExp(`['"]${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}['"]`).test(e.message)) {
      throw new ExHookConfigError(`${purpose} needs the package ${name}, which is not installed: run ${install}`);
    }
    throw new ExHookConfigError(
      `${purpose} needs the package ${name}; it is installed but does not load (${e.message.split("\n")[0]}): reinstall it with ${install}`,
    );
  }
}
