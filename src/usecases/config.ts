/**
 * Configuration of the use-case stack: one YAML or JSON file plus environment variables, validated
 * with zod at start. A wrong value fails with the key (and the file line), what was given and what
 * is allowed. No file at all gives the defaults documented in docs/usecases.md.
 *
 * Environment (overrides the file): `EXHOOK_CONFIG` (the file, when `--config` is not given),
 * `EXHOOK_DATA_DIR`, `EXHOOK_DB_URL` (a PostgreSQL URL: switches the store to PostgreSQL). The read
 * API has no port of its own: it is served on the server's operations port (`--metrics-port`).
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { LineCounter, parseDocument } from "yaml";
import { z } from "zod";
import { ExHookConfigError } from "../errors.js";
import { aclTopicError, EMQX_DEFAULT_LISTENERS, peerhostError, type AclRule } from "./acl.js";
import { bridgeSchema } from "./bridge/config-schema.js";

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `"500ms"`, `"30s"`, `"15m"`, `"12h"`, `"7d"` into ms; `undefined` when it is not one. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+)\s*(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * (DURATION_UNITS[m[2] as string] as number);
  return Number.isSafeInteger(ms) && ms > 0 ? ms : undefined;
}

const BYTE_UNITS: Readonly<Record<string, number>> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KIB: 1024, MIB: 1024 ** 2, GIB: 1024 ** 3 };

/** Parses `"64MiB"`, `"512KiB"`, `"1GiB"`, `"100MB"`, `"4096"` into bytes; `undefined` when it is not one. */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?$/i.exec(text.trim());
  if (!m) return undefined;
  const n = Math.floor(Number(m[1]) * (BYTE_UNITS[(m[2] ?? "B").toUpperCase()] as number));
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** A size: a positive number of bytes, or a string such as "64MiB", "512KiB", "1GiB", "100MB". */
const bytes = z.union([int(1), z.string()]).transform((v, ctx) => {
  if (typeof v === "number") return v;
  const n = parseBytes(v);
  if (n === undefined) {
    ctx.addIssue({
      code: "custom",
      message: `${JSON.stringify(v)} is not a size: use a positive number of bytes or e.g. "64MiB", "512KiB", "1GiB"`,
    });
    return z.NEVER;
  }
  return n;
});

/** A duration: a positive number of ms, or a string such as "7d", "12h", "30m", "45s", "500ms". */
const duration = z.union([int(1), z.string()]).transform((v, ctx) => {
  if (typeof v === "number") return v;
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({
      code: "custom",
      message: `${JSON.stringify(v)} is not a duration: use a positive number of ms or e.g. "7d", "12h", "30m", "45s", "500ms"`,
    });
    return z.NEVER;
  }
  return ms;
});

const oneOrMany = <T extends z.ZodType>(t: T) => z.union([t, z.array(t).min(1)]);

const ruleSchema = z
  .strictObject({
    permission: z.enum(["allow", "deny"]),
    action: z.enum(["publish", "subscribe", "all"]).default("all"),
    topic: z.string().superRefine((t, ctx) => {
      const err = aclTopicError(t);
      if (err) ctx.addIssue({ code: "custom", message: err });
    }),
    qos: z
      .array(z.union([z.literal(0), z.literal(1), z.literal(2)]))
      .min(1)
      .optional(),
    retain: z.boolean().optional(),
    username: z.string().min(1).optional(),
    clientid: z.string().min(1).optional(),
    /** IP address or CIDR block (IPv4/IPv6), or a list of them. */
    peerhost: oneOrMany(
      z.string().superRefine((p, ctx) => {
        const err = peerhostError(p);
        if (err) ctx.addIssue({ code: "custom", message: err });
      }),
    ).optional(),
    /** EMQX listener id(s), e.g. `tcp:default` (must be in `acl.listeners`). */
    listener: oneOrMany(z.string().min(1)).optional(),
    /** Deny rules: also match subscriptions that overlap the topic (default `acl.denyOverlap`). */
    overlap: z.boolean().optional(),
  })
  .superRefine((r, ctx) => {
    if (r.overlap !== undefined && r.permission === "allow") {
      ctx.addIssue({
        code: "custom",
        path: ["overlap"],
        message: "overlap applies to deny rules only (an allow rule must cover a subscription)",
      });
    }
  });

const port = int(1, 65535);
const ATTR_SOURCES = ["clientid", "username", "peerhost", "cert_common_name", "cert_subject", "mountpoint"] as const;

/** The schema of one ACL rule (as in `acl.rules`), also used for stored rules and a JWT's ACL claim. */
export const aclRuleSchema = ruleSchema;

/** One failed-login limit; `false` turns it off. */
const throttleLimit = (free: number, baseMs: number, maxMs: number) =>
  z
    .strictObject({
      freeFailures: int(0, 1_000_000).default(free),
      baseDelayMs: int(1, 86_400_000).default(baseMs),
      maxDelayMs: int(1, 86_400_000).default(maxMs),
    })
    .prefault({});

const JWT_ALGORITHMS = [
  "HS256",
  "HS384",
  "HS512",
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "ES512",
  "EdDSA",
  "Ed25519",
] as const;

const jwtSchema = z
  .strictObject({
    enabled: z.boolean().default(true),
    /** Where the token is: the MQTT password (EMQX's default) or the username. */
    from: z.enum(["password", "username"]).default("password"),
    secret: z.string().min(1).optional(),
    secretBase64: z.boolean().default(false),
    /** PEM text (`-----BEGIN PUBLIC KEY-----...`) or the path of a PEM file. */
    publicKey: z.string().min(1).optional(),
    jwksUrl: z
      .string()
      .regex(/^https?:\/\//, "must be an http:// or https:// URL")
      .optional(),
    jwks: z
      .strictObject({
        refreshMs: int(1000).default(300_000),
        timeoutMs: int(1, 600_000).default(5000),
        maxBytes: int(1024, 64 * 1024 * 1024).default(1024 * 1024),
        cooldownMs: int(0).default(30_000),
        headers: z.record(z.string(), z.string()).optional(),
      })
      .prefault({}),
    algorithms: z.array(z.enum(JWT_ALGORITHMS)).min(1).optional(),
    clockSkewMs: int(0, 3_600_000).default(30_000),
    requireExp: z.boolean().default(false),
    maxAgeMs: int(1).optional(),
    claims: z
      .record(
        z.string(),
        z.string().superRefine((t, ctx) => {
          for (const m of t.matchAll(/\$\{([^}]*)\}/g)) {
            if (m[1] !== "username" && m[1] !== "clientid")
              ctx.addIssue({ code: "custom", message: `unknown placeholder \${${m[1]}} (allowed: \${username}, \${clientid})` });
          }
        }),
      )
      .default({}),
    aclClaim: z.string().min(1).default("acl"),
    superuserClaim: z.string().min(1).default("is_superuser"),
    maxTokenLength: int(16, 65535).default(16384),
  })
  .superRefine((j, ctx) => {
    const n = [j.secret, j.publicKey, j.jwksUrl].filter((v) => v !== undefined).length;
    if (n !== 1) ctx.addIssue({ code: "custom", message: "give exactly one of secret, publicKey, jwksUrl" });
  });

/** The rules used when the config does not set `acl.rules`. */
export const DEFAULT_ACL_RULES: readonly AclRule[] = Object.freeze([
  { permission: "allow", action: "all", topic: "users/${username}/#" },
  { permission: "allow", action: "subscribe", topic: "public/#" },
  { permission: "allow", action: "publish", topic: "public/${username}/#" },
]);

/** The config schema (exported for tools that want to generate docs or a JSON schema). */
export const configSchema = z.strictObject({
  dataDir: z.string().min(1).default("./data"),
  store: z
    .strictObject({
      kind: z.enum(["sqlite", "postgres"]).optional(),
      /** SQLite file; default `<dataDir>/exhook.db`. */
      file: z.string().min(1).optional(),
      url: z
        .string()
        .regex(/^postgres(ql)?:\/\//, "must be a postgres:// or postgresql:// URL")
        .optional(),
      poolSize: int(1, 1000).default(10),
    })
    .prefault({}),
  auth: z
    .strictObject({
      enabled: z.boolean().default(true),
      unknownUser: z.enum(["deny", "no-opinion"]).default("deny"),
      cacheTtlMs: int(0).default(10_000),
      scrypt: z
        .strictObject({
          N: int(2, 2 ** 22)
            .refine((n) => (n & (n - 1)) === 0, "must be a power of two")
            .default(2 ** 15),
          r: int(1, 64).default(8),
          p: int(1, 16).default(1),
          keylen: int(16, 128).default(32),
        })
        .prefault({}),
      /** Rehash other formats and older parameters with `scrypt` on the next good login. */
      rehash: z.boolean().default(true),
      /** Longer client ids are refused without a check (MQTT allows 65535). */
      maxClientIdLength: int(1, 65535).default(1024),
      hashing: z
        .strictObject({
          /** Hash jobs at once; 0 = one per CPU core but one (the event loop keeps a core), 1 to 3. */
          concurrency: int(0, 64).default(0),
          maxQueued: int(1, 1_000_000).default(1000),
          maxQueuedPerPeer: int(1, 1_000_000).default(32),
        })
        .prefault({}),
      throttle: z
        .strictObject({
          enabled: z.boolean().default(true),
          perHost: z
            .union([z.literal(false), throttleLimit(20, 1000, 60_000)])
            .default({ freeFailures: 20, baseDelayMs: 1000, maxDelayMs: 60_000 }),
          perUser: z
            .union([z.literal(false), throttleLimit(5, 1000, 30_000)])
            .default({ freeFailures: 5, baseDelayMs: 1000, maxDelayMs: 30_000 }),
          perPair: throttleLimit(5, 1000, 60_000),
          forgetAfterMs: int(1000).default(900_000),
          trustTtlMs: int(0).default(604_800_000),
          maxKeys: int(100, 10_000_000).default(100_000),
        })
        .prefault({}),
      jwt: jwtSchema.optional(),
    })
    .prefault({}),
  acl: z
    .strictObject({
      enabled: z.boolean().default(true),
      noMatch: z.enum(["allow", "deny", "no-opinion"]).default("deny"),
      useStoreRules: z.boolean().default(true),
      /** How often store rules are re-read, in ms (0 = only at start). */
      storeRefreshMs: int(0).default(10_000),
      rules: z.array(ruleSchema).optional(),
      /** Deny rules also match subscriptions that overlap their topic (issue: `users/alice/#` past a deny of `users/alice/secret/#`). */
      denyOverlap: z.boolean().default(true),
      /** Listener ids and their ports, for `listener` conditions (ExHook sends the port, not the name). */
      listeners: z
        .record(z.string().regex(/^[a-z]+:[A-Za-z0-9_-]+$/, 'must be an EMQX listener id such as "tcp:default"'), oneOrMany(port))
        .default({ ...EMQX_DEFAULT_LISTENERS }),
      /**
       * `${client_attrs.NAME}` values derived from what EMQX sends, like EMQX's `mqtt.client_attrs_init`:
       * the `from` field, optionally split on `split` and the `nth` piece taken (1-based).
       */
      clientAttrs: z
        .array(
          z.strictObject({
            name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "letters, digits, _ and - only (1-64)"),
            from: z.enum(ATTR_SOURCES),
            split: z.string().min(1).optional(),
            nth: int(1, 64).optional(),
          }),
        )
        .default([]),
    })
    .superRefine((acl, ctx) => {
      (acl.rules ?? []).forEach((r, i) => {
        for (const id of r.listener === undefined ? [] : Array.isArray(r.listener) ? r.listener : [r.listener]) {
          if (!(id in acl.listeners)) {
            ctx.addIssue({
              code: "custom",
              path: ["rules", i, "listener"],
              message: `listener ${JSON.stringify(id)} is not in acl.listeners (known: ${Object.keys(acl.listeners).join(", ") || "none"})`,
            });
          }
        }
      });
    })
    .prefault({}),
  cache: z
    .strictObject({
      /** The decision cache in front of the hooks below (off: the rules are in memory and cost < 1 µs). */
      enabled: z.boolean().default(false),
      hooks: z
        .array(z.enum(["onClientAuthenticate", "onClientAuthorize"]))
        .min(1)
        .default(["onClientAuthorize"]),
      /** How long an allow is kept. */
      ttl: duration.default(60_000),
      /** How long a deny (or no-opinion) is kept. */
      negativeTtl: duration.default(5_000),
      /** Each entry lives a random 0..jitter fraction shorter, so entries made together do not expire together. */
      jitter: z.number().min(0).max(1).default(0.1),
      maxEntries: int(1).default(100_000),
      /** How often the store is polled for invalidations made by other processes (PostgreSQL: also LISTEN/NOTIFY). */
      pollInterval: duration.default(1000),
      /** Also tell EMQX (its REST API) when users or rules change. */
      emqx: z
        .strictObject({
          url: z
            .string()
            .regex(/^https?:\/\//, "must be an http:// or https:// URL (EMQX's dashboard/API listener, e.g. http://emqx:18083)"),
          apiKey: z.string().min(1),
          apiSecret: z.string().min(1),
          /** On a user change: clear the authorization cache of the user's clients, or disconnect them. */
          onUserChange: z.enum(["clear-cache", "kick"]).default("clear-cache"),
          timeoutMs: int(1).default(2000),
        })
        .optional(),
    })
    .prefault({}),
  persistence: z
    .strictObject({
      enabled: z.boolean().default(true),
      topics: z
        .array(
          z.string().superRefine((t, ctx) => {
            const err = aclTopicError(t);
            if (err || t.includes("${") || t.startsWith("eq "))
              ctx.addIssue({ code: "custom", message: err ?? "must be a plain MQTT topic filter" });
          }),
        )
        .min(1)
        .default(["#"]),
      /** Memory for messages waiting to be written (held while the store is down). */
      maxQueueBytes: bytes.default(128 * 1024 * 1024),
      batchSize: int(1, 10_000).default(500),
      flushMs: int(1).default(200),
      overflow: z.enum(["drop-new", "drop-oldest"]).default("drop-new"),
      /** Longest pause between write attempts while the store fails. */
      retryMaxMs: int(1, 600_000).default(5000),
      /** How long a shutdown keeps trying to write what is queued to a failing store. */
      closeTimeoutMs: int(0).default(10_000),
      /** Delete stored messages older than this (by EMQX timestamp). Absent: keep them forever. */
      retention: duration.optional(),
      /** How often retention runs. */
      retentionSweep: duration.default(600_000),
    })
    .prefault({}),
  presence: z
    .strictObject({
      enabled: z.boolean().default(true),
      reorderWindowMs: int(0).default(30_000),
      /** Memory for presence changes held while the store is down. */
      maxQueueBytes: bytes.default(16 * 1024 * 1024),
      retryMaxMs: int(1, 600_000).default(5000),
      closeTimeoutMs: int(0).default(10_000),
      webhook: z
        .strictObject({
          url: z.string().regex(/^https?:\/\//, "must be an http:// or https:// URL"),
          timeoutMs: int(1).default(2000),
          headers: z.record(z.string(), z.string()).optional(),
        })
        .optional(),
    })
    .prefault({}),
  /** The read API (/messages, /presence, /stats), served on the server's operations HTTP port. */
  http: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** A query running longer is stopped and answered 503. */
      queryTimeoutMs: int(1, 600_000).default(5000),
      /** Queries running at once; more are answered 503 at once. */
      maxConcurrentQueries: int(1, 100).default(2),
      /** A /messages answer stops adding messages once their payloads reach this size. */
      maxResponseBytes: bytes.default(16 * 1024 * 1024),
    })
    .prefault({}),
  /** Bridging to NATS JetStream, RabbitMQ, Redis Streams through a durable outbox (docs/bridging.md). */
  bridge: bridgeSchema,
});

/** The validated configuration. */
export type StackConfig = z.output<typeof configSchema>;
/** What a config file may contain. */
export type StackConfigInput = z.input<typeof configSchema>;

const ENV_KEYS: ReadonlyArray<readonly [string, readonly string[], (v: string) => unknown]> = [
  ["EXHOOK_DATA_DIR", ["dataDir"], (v) => v],
  ["EXHOOK_DB_URL", ["store", "url"], (v) => v],
];

/** Settings that moved: a value left in the environment fails the start instead of being ignored. */
const MOVED_ENV: Readonly<Record<string, string>> = {
  EXHOOK_HTTP_PORT:
    "the read API is served on the server's operations port: use --metrics-port / METRICS_PORT (default: the ExHook port + 10)",
  EXHOOK_HTTP_HOST: "the read API is served on the server's operations port: use --metrics-host / METRICS_HOST (default 127.0.0.1)",
};

/**
 * Loads and validates the configuration from `file` (YAML or JSON; default `EXHOOK_CONFIG`, else
 * none) and the environment. Throws {@link ExHookConfigError} naming every wrong key.
 */
export function loadConfig(file?: string, env: NodeJS.ProcessEnv = process.env): StackConfig {
  const path = file ?? (env["EXHOOK_CONFIG"] || undefined);
  let raw: unknown = {};
  let lineOf: (p: readonly PropertyKey[]) => number | undefined = () => undefined;
  if (path !== undefined) {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw new ExHookConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
    }
    const lc = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lc, prettyErrors: true });
    if (doc.errors.length > 0) {
      const e = doc.errors[0] as { linePos?: Array<{ line: number }>; message: string };
      throw new ExHookConfigError(`${path}:${e.linePos?.[0]?.line ?? "?"}: not valid YAML/JSON: ${e.message.split("\n")[0]}`);
    }
    raw = doc.toJS() ?? {};
    lineOf = (p) => {
      for (let n = p.length; n > 0; n--) {
        const node = doc.getIn(p.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
        if (node?.range) return lc.linePos(node.range[0]).line;
      }
      return undefined;
    };
  }
  return parseConfig(raw, env, path, lineOf);
}

/** Validates an already parsed config object (plus environment overrides). */
export function parseConfig(
  raw: unknown,
  env: NodeJS.ProcessEnv = {},
  source = "config",
  lineOf: (p: readonly PropertyKey[]) => number | undefined = () => undefined,
): StackConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new ExHookConfigError(`${source}: the top level must be a mapping of settings`);
  for (const [name, why] of Object.entries(MOVED_ENV)) {
    if (env[name] !== undefined && env[name] !== "") throw new ExHookConfigError(`${name} is no longer read: ${why}`);
  }
  const obj = structuredClone(raw) as Record<string, unknown>;
  const fromEnv = new Map<string, string>();
  for (const [name, p, conv] of ENV_KEYS) {
    const v = env[name];
    if (v === undefined || v === "") continue;
    let o = obj;
    for (const k of p.slice(0, -1)) {
      if (typeof o[k] !== "object" || o[k] === null) o[k] = {};
      o = o[k] as Record<string, unknown>;
    }
    o[p[p.length - 1] as string] = conv(v);
    fromEnv.set(p.join("."), name);
  }
  const r = configSchema.safeParse(obj);
  if (!r.success) {
    const lines = r.error.issues.map((issue) => {
      const p = issue.code === "unrecognized_keys" ? [...issue.path, issue.keys[0] as string] : issue.path;
      const key = formatPath(p);
      const envName = fromEnv.get(p.join("."));
      const line = envName ? undefined : lineOf(p);
      const where = envName ? `${key} (from ${envName})` : `${source}${line !== undefined ? `:${line}` : ""}: ${key || "(top level)"}`;
      const given = valueAt(obj, p);
      const msg = issue.code === "unrecognized_keys" ? `unknown setting (allowed here: ${allowedKeys(issue.path, obj)})` : issue.message;
      return `  ${where}: ${msg}${given !== undefined && issue.code !== "unrecognized_keys" ? ` (got ${JSON.stringify(given)})` : ""}`;
    });
    throw new ExHookConfigError(`invalid configuration:\n${lines.join("\n")}`);
  }
  const cfg = r.data;
  if (cfg.store.kind === "postgres" && !cfg.store.url)
    throw new ExHookConfigError(`${source}: store.url: required when store.kind is "postgres" (or set EXHOOK_DB_URL)`);
  return cfg;
}

/** The settings with paths resolved: the store kind implied by a URL, the SQLite file under dataDir. */
export function resolvedStore(cfg: StackConfig): { kind: "sqlite"; file: string } | { kind: "postgres"; url: string; poolSize: number } {
  const kind = cfg.store.kind ?? (cfg.store.url ? "postgres" : "sqlite");
  if (kind === "postgres") return { kind, url: cfg.store.url as string, poolSize: cfg.store.poolSize };
  return { kind, file: cfg.store.file ?? resolve(cfg.dataDir, "exhook.db") };
}

function formatPath(p: readonly PropertyKey[]): string {
  let s = "";
  for (const k of p) s += typeof k === "number" ? `[${k}]` : s ? `.${String(k)}` : String(k);
  return s;
}

function valueAt(obj: unknown, p: readonly PropertyKey[]): unknown {
  let o = obj;
  for (const k of p) {
    if (typeof o !== "object" || o === null) return undefined;
    o = (o as Record<PropertyKey, unknown>)[k];
  }
  return o;
}

function allowedKeys(p: readonly PropertyKey[], given: unknown): string {
  const unwrap = (t: z.ZodType, at: readonly PropertyKey[]): z.ZodType => {
    for (let i = 0; i < 5; i++) {
      const def = (t as unknown as { def: { innerType?: z.ZodType } }).def;
      if (def.innerType) t = def.innerType;
      else break;
    }
    // A discriminated union (bridge.sinks[]): the variant the given `kind` names.
    if (t instanceof z.ZodDiscriminatedUnion) {
      const kind = (valueAt(given, at) as { kind?: unknown } | undefined)?.kind;
      const hit = (t.options as z.ZodType[]).find(
        (o) =>
          o instanceof z.ZodObject &&
          (o.shape as Record<string, z.ZodType>)["kind"] instanceof z.ZodLiteral &&
          ((o.shape as Record<string, z.ZodLiteral>)["kind"] as z.ZodLiteral).value === kind,
      );
      if (hit) t = hit;
    }
    return t;
  };
  let s: z.ZodType = configSchema;
  for (let n = 0; n < p.length; n++) {
    const k = p[n] as PropertyKey;
    const inner = unwrap(s, p.slice(0, n));
    if (typeof k === "number" && inner instanceof z.ZodArray) s = inner.element as z.ZodType;
    else if (inner instanceof z.ZodObject) s = (inner.shape as Record<string, z.ZodType>)[String(k)] as z.ZodType;
    else return "?";
  }
  s = unwrap(s, p);
  return s instanceof z.ZodObject ? Object.keys(s.shape).join(", ") : "?";
}
