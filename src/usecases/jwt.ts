/**
 * JWT authentication (with `jose`): the token comes in the MQTT password (or username) and is
 * verified with a shared secret (HS256/384/512), a PEM public key (RS*, PS*, ES*, EdDSA) or the
 * keys of a JWKS URL (fetched, cached and refreshed by jwks.ts). Then:
 *
 * - `exp` and `nbf` are checked with `clockSkewMs` of tolerance; `iat` must not lie in the future
 *   (beyond the skew), and with `maxAgeMs` must not be older than that; `requireExp` refuses tokens
 *   without `exp` (EMQX accepts them, so the default is false);
 * - `claims`: each named claim must equal the value, after replacing `${username}` and
 *   `${clientid}` with the client's (EMQX's `verify_claims`), e.g. `{ sub: "${username}" }`;
 * - the `acl` claim (name configurable) becomes ACL rules for this connection, validated like
 *   configured rules; both EMQX forms are read: a list of rules
 *   (`[{ "permission": "allow", "action": "publish", "topic": "t/${clientid}" }]`) and the older
 *   `{ "pub": [...], "sub": [...], "all": [...] }` (allow rules). A malformed claim refuses the login;
 * - the `is_superuser` claim (name configurable; `true`, `"true"` or `1`) marks a superuser, as
 *   EMQX reads it.
 *
 * An invalid token is a refusal (`bad-token`, the reason logged at debug). A JWKS that cannot be
 * fetched is not the client's fault: the check throws, so the hook answers its fallback and the
 * failure is logged.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import type { Logger } from "../provider.js";
import type { AclRule } from "./acl.js";
import { aclRuleSchema } from "./config.js";
import { createJwksSource, type JsonWebKeySet, type JwksSource, type JwksSourceOptions } from "./jwks.js";

type Jose = typeof import("jose", { with: { "resolution-mode": "import" }});
let joseModule: Promise<Jose> | undefined;
// jose is ESM only; a dynamic import loads it from this CommonJS package on every Node 20 release.
const jose = () => (joseModule ??= import("jose"));

/** Options of {@link createJwtVerifier}. Exactly one of `secret`, `publicKey`, `jwks`. */
export interface JwtVerifierOptions {
  /** Shared secret for HS256/384/512 (UTF-8 text, or base64 with `secretBase64`). */
  readonly secret?: string;
  readonly secretBase64?: boolean;
  /** PEM public key (SPKI or certificate) for RS*, PS*, ES*, EdDSA. */
  readonly publicKey?: string;
  /** A JWKS URL and its fetch bounds. */
  readonly jwks?: Omit<JwksSourceOptions, "logger">;
  /** Accepted `alg` values. Default: HS256/384/512 with a secret, the asymmetric ones otherwise. */
  readonly algorithms?: readonly string[];
  /** Tolerance for `exp`, `nbf`, `iat`, in ms. Default 30000. */
  readonly clockSkewMs?: number;
  /** Refuse tokens without `exp`. Default false (as EMQX). */
  readonly requireExp?: boolean;
  /** Refuse tokens whose `iat` is older than this, in ms (and tokens without `iat`). Default: no limit. */
  readonly maxAgeMs?: number;
  /** Claims that must have these values; `${username}` and `${clientid}` are replaced. */
  readonly claims?: Readonly<Record<string, string>>;
  /** Claim holding ACL rules for the connection. Default `"acl"`. */
  readonly aclClaim?: string;
  /** Claim marking a superuser. Default `"is_superuser"`. */
  readonly superuserClaim?: string;
  readonly logger?: Logger;
}

/** The outcome of one token check. */
export type JwtResult =
  | {
      readonly ok: true;
      readonly superuser: boolean;
      /** Rules from the ACL claim, `undefined` when the token has none. */
      readonly acl: readonly AclRule[] | undefined;
      /** `exp` in ms since the epoch, when the token has one. */
      readonly expiresAt: number | undefined;
    }
  | { readonly ok: false; readonly reason: string };

/** What {@link createJwtVerifier} returns. */
export interface JwtVerifier {
  /** Verifies a token for a client. Throws only when the keys cannot be had (JWKS unreachable). */
  verify(token: string, client: { readonly username: string; readonly clientid: string }): Promise<JwtResult>;
  /** JWKS counters, when a JWKS is used. */
  stats(): { readonly jwks?: ReturnType<JwksSource["stats"]> };
  close(): void;
}

/** Whether a string has the shape of a compact JWS (three base64url parts, a JSON header). */
export function looksLikeJwt(s: string): boolean {
  return s.startsWith("eyJ") && /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(s);
}

const SYMMETRIC = ["HS256", "HS384", "HS512"];
const ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"];
const PLACEHOLDER = /\$\{([^}]*)\}/g;

/** Why a claim template is not valid, or `undefined`. */
export function claimTemplateError(template: string): string | undefined {
  for (const m of template.matchAll(PLACEHOLDER)) {
    if (m[1] !== "username" && m[1] !== "clientid") return `unknown placeholder \${${m[1]}} (allowed: \${username}, \${clientid})`;
  }
  return undefined;
}

/** Thrown when the keys to check a token cannot be had (not the client's fault). */
export class JwtKeysUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JwtKeysUnavailableError";
  }
}

/**
 * Converts an `acl` claim into ACL rules (validated like configured rules). Throws saying what is
 * wrong. Accepts a list of rules (`action` may also be `pub`/`sub`, `topics` a list) or the older
 * `{ pub, sub, all }` object of topic lists (each an allow rule).
 */
export function aclRulesFromClaim(value: unknown): AclRule[] {
  const raw: Record<string, unknown>[] = [];
  if (Array.isArray(value)) {
    for (const [i, r] of value.entries()) {
      if (typeof r !== "object" || r === null || Array.isArray(r)) throw new Error(`acl rule #${i + 1} is not an object`);
      const rule = { ...(r as Record<string, unknown>) };
      if (rule["action"] === "pub") rule["action"] = "publish";
      if (rule["action"] === "sub") rule["action"] = "subscribe";
      if ("username" in rule || "clientid" in rule)
        throw new Error(
          `acl rule #${i + 1}: username/clientid conditions are not allowed in a token (the rules apply to this client only)`,
        );
      if (Array.isArray(rule["topics"]) && rule["topic"] === undefined) {
        const { topics, ...rest } = rule;
        for (const t of topics as unknown[]) raw.push({ ...rest, topic: t });
      } else raw.push(rule);
    }
  } else if (typeof value === "object" && value !== null) {
    const actions: Record<string, "publish" | "subscribe" | "all"> = {
      pub: "publish",
      publish: "publish",
      sub: "subscribe",
      subscribe: "subscribe",
      all: "all",
    };
    for (const [k, topics] of Object.entries(value)) {
      const action = actions[k];
      if (!action) throw new Error(`acl claim: unknown key ${JSON.stringify(k)} (pub, sub, all)`);
      if (!Array.isArray(topics)) throw new Error(`acl claim: ${k} must be a list of topics`);
      for (const t of topics) raw.push({ permission: "allow", action, topic: t });
    }
  } else throw new Error("acl claim must be a list of rules or an object of topic lists");
  return raw.map((r, i) => {
    const parsed = aclRuleSchema.safeParse(r);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(`acl rule #${i + 1}: ${issue?.path.join(".") || "(rule)"}: ${issue?.message}`);
    }
    return parsed.data as AclRule;
  });
}

function truthy(v: unknown): boolean {
  return v === true || v === "true" || v === 1 || v === "1";
}

/** Creates a JWT verifier; throws on a bad configuration (no key, a bad PEM). */
export function createJwtVerifier(options: JwtVerifierOptions): JwtVerifier {
  const given = [options.secret !== undefined, options.publicKey !== undefined, options.jwks !== undefined].filter(Boolean).length;
  if (given !== 1) throw new Error("JWT: give exactly one of secret, publicKey, jwks");
  const { logger } = options;
  const skewSec = Math.round((options.clockSkewMs ?? 30_000) / 1000);
  const aclClaim = options.aclClaim ?? "acl";
  const superClaim = options.superuserClaim ?? "is_superuser";
  const claims = Object.entries(options.claims ?? {});
  for (const [name, t] of claims) {
    const err = claimTemplateError(t);
    if (err) throw new Error(`JWT: claims.${name}: ${err}`);
  }
  let secret: Uint8Array | undefined;
  let publicKey: KeyObject | undefined;
  let jwks: JwksSource | undefined;
  if (options.secret !== undefined) {
    secret = options.secretBase64 ? new Uint8Array(Buffer.from(options.secret, "base64")) : new TextEncoder().encode(options.secret);
    if (secret.length === 0) throw new Error("JWT: the secret is empty");
  } else if (options.publicKey !== undefined) {
    try {
      publicKey = createPublicKey(options.publicKey);
    } catch (err) {
      throw new Error(`JWT: publicKey is not a PEM public key or certificate: ${(err as Error).message}`);
    }
  } else jwks = createJwksSource({ ...(options.jwks as JwksSourceOptions), ...(logger ? { logger } : {}) });
  const algorithms = [...(options.algorithms ?? (secret ? SYMMETRIC : ASYMMETRIC))];

  // One local key set per fetched JWKS (rebuilt only when the set changes).
  let localFor: JsonWebKeySet | undefined;
  let local: ((h: never, t: never) => Promise<unknown>) | undefined;
  async function keyFromJwks(j: Jose, set: JsonWebKeySet, header: unknown, token: unknown): Promise<unknown> {
    if (localFor !== set) {
      local = j.createLocalJWKSet(set as never) as never;
      localFor = set;
    }
    return (local as (h: unknown, t: unknown) => Promise<unknown>)(header, token);
  }

  async function verify(token: string, client: { readonly username: string; readonly clientid: string }): Promise<JwtResult> {
    const j = await jose();
    let key: Parameters<Jose["jwtVerify"]>[1];
    if (jwks) {
      const src = jwks;
      key = (async (header: unknown, tok: unknown) => {
        let set: JsonWebKeySet;
        try {
          set = await src.current();
        } catch (err) {
          throw new JwtKeysUnavailableError((err as Error).message);
        }
        try {
          return await keyFromJwks(j, set, header, tok);
        } catch (err) {
          if ((err as { code?: string }).code !== "ERR_JWKS_NO_MATCHING_KEY") throw err;
          // A key we do not have: maybe rotated in since the last fetch.
          return keyFromJwks(j, await src.refreshForUnknownKey(), header, tok);
        }
      }) as never;
    } else key = (secret ?? publicKey) as never;
    let payload: Record<string, unknown>;
    try {
      const r = await j.jwtVerify(token, key, {
        algorithms,
        clockTolerance: skewSec,
        ...(options.requireExp ? { requiredClaims: ["exp"] } : {}),
        ...(options.maxAgeMs !== undefined ? { maxTokenAge: Math.round(options.maxAgeMs / 1000) } : {}),
      });
      payload = r.payload as Record<string, unknown>;
    } catch (err) {
      if (err instanceof JwtKeysUnavailableError) throw err;
      return {
        ok: false,
        reason: (err as { code?: string }).code ? `${(err as { code: string }).code}: ${(err as Error).message}` : (err as Error).message,
      };
    }
    const nowSec = Date.now() / 1000;
    if (typeof payload["iat"] === "number" && payload["iat"] > nowSec + skewSec) return { ok: false, reason: "iat lies in the future" };
    for (const [name, template] of claims) {
      const want = template.replace(PLACEHOLDER, (_m, ph: string) => (ph === "username" ? client.username : client.clientid));
      const have = payload[name];
      const ok = Array.isArray(have)
        ? have.some((v) => String(v) === want)
        : (typeof have === "string" || typeof have === "number") && String(have) === want;
      if (!ok) return { ok: false, reason: `claim ${name} is not ${JSON.stringify(want)}` };
    }
    let acl: AclRule[] | undefined;
    if (payload[aclClaim] !== undefined) {
      try {
        acl = aclRulesFromClaim(payload[aclClaim]);
      } catch (err) {
        return { ok: false, reason: `claim ${aclClaim}: ${(err as Error).message}` };
      }
    }
    return {
      ok: true,
      superuser: truthy(payload[superClaim]),
      acl,
      expiresAt: typeof payload["exp"] === "number" ? payload["exp"] * 1000 : undefined,
    };
  }

  return {
    verify,
    stats: () => (jwks ? { jwks: jwks.stats() } : {}),
    close: () => jwks?.close(),
  };
}
