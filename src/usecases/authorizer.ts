/**
 * The stack's `client.authorize` answer, in this order:
 *
 * 1. **Superuser**: `isSuperuser(clientinfo, ctx)` true → allow, no rule looked at (EMQX: the
 *    `is_superuser` flag set by an authenticator skips authorization).
 * 2. **Per-client rules** (a JWT `acl` claim kept for the connection, or anything else your
 *    authentication attached): `clientRules(clientinfo, ctx)` → `{ rules, expiresAt? }`, checked with
 *    the same rule engine, first match wins. As EMQX's JWT authorizer does: past `expiresAt` every
 *    action is denied; no matching rule → go on to the global rules.
 * 3. **Global rules** (config, then store): first match wins, else `acl.noMatch`.
 *
 * `${client_attrs.NAME}` values come from `clientAttrs(clientinfo, ctx)` (e.g. claims set at
 * authentication) over the ones derived from the request by `attrRules` (`acl.clientAttrs`, like
 * EMQX's `mqtt.client_attrs_init`); EMQX does not send its own client attributes over ExHook.
 * They are only computed when a rule uses them.
 */
import type { ClientInfo } from "../../gen/emqx/exhook/v3/exhook_pb.js";
import type { HookContext } from "../context.js";
import type { HookHandler, Logger } from "../provider.js";
import { allow, deny, type AccessDecision } from "../responses.js";
import { aclRequestOf, type Acl, type AclRequest, type AclRule } from "./acl.js";

/** Rules that apply to one connection only, checked before the global rules. */
export interface ClientRules {
  readonly rules: readonly AclRule[];
  /** `Date.now()` milliseconds after which every action of the connection is denied (a JWT's `exp`). */
  readonly expiresAt?: number;
}

/** Whether the client is a superuser (the authentication side records it). */
export type SuperuserCheck = (clientinfo: ClientInfo, ctx: HookContext) => boolean;
/** The connection's own rules, if any. Keep returning the same `rules` array: it is compiled once. */
export type ClientRulesLookup = (clientinfo: ClientInfo, ctx: HookContext) => ClientRules | undefined;
/** The connection's client attributes, if any. */
export type ClientAttrsLookup = (clientinfo: ClientInfo, ctx: HookContext) => Readonly<Record<string, string>> | undefined;

/** One attribute derived from what EMQX sends (`acl.clientAttrs`). */
export interface ClientAttrRule {
  readonly name: string;
  readonly from: "clientid" | "username" | "peerhost" | "cert_common_name" | "cert_subject" | "mountpoint";
  /** Split the value on this string and take piece `nth` (1-based; default 1). */
  readonly split?: string;
  readonly nth?: number;
}

/** Options of {@link createAuthorizer}. */
export interface AuthorizerOptions {
  /** The global rules in force (read on every call: they change when store rules are reloaded). */
  readonly acl: () => Acl;
  /** Compiles per-client rules with the same options as the global ones; must answer "no rule" as `rule: undefined`. */
  readonly compile: (rules: readonly AclRule[]) => Acl;
  readonly isSuperuser?: SuperuserCheck;
  readonly clientRules?: ClientRulesLookup;
  readonly clientAttrs?: ClientAttrsLookup;
  readonly attrRules?: readonly ClientAttrRule[];
  /** Clock for `expiresAt`. Default `Date.now`. */
  readonly now?: () => number;
  readonly logger?: Logger;
}

/** Where an answer came from. */
export type AuthorizeSource = "superuser" | "client-rules" | "client-rules-expired" | "client-rules-invalid" | "rules";

/** An answer with its origin. */
export interface AuthorizeResult {
  readonly decision: AccessDecision;
  readonly source: AuthorizeSource;
  /** Index of the matching rule in its list (per-client or global), if one matched. */
  readonly rule: number | undefined;
}

/** What {@link createAuthorizer} returns. */
export interface Authorizer {
  readonly handler: HookHandler<"onClientAuthorize">;
  /** Answers a question directly (the CLI's `acl check`, tests). */
  check(req: AclRequest, principal?: { readonly superuser?: boolean; readonly clientRules?: ClientRules }): AuthorizeResult;
  /** Answers per source since start. */
  stats(): Readonly<Record<AuthorizeSource, number>>;
}

/** The attributes `rules` derive from a request. */
export function deriveClientAttrs(rules: readonly ClientAttrRule[], req: AclRequest): Record<string, string> {
  const out: Record<string, string> = {};
  for (const r of rules) {
    const v =
      r.from === "clientid"
        ? req.clientid
        : r.from === "username"
          ? req.username
          : r.from === "peerhost"
            ? req.peerhost
            : r.from === "cert_common_name"
              ? req.cn
              : r.from === "cert_subject"
                ? req.dn
                : req.mountpoint;
    if (v === undefined || v === "") continue;
    const piece = r.split === undefined ? v : v.split(r.split, 64)[(r.nth ?? 1) - 1];
    if (piece !== undefined && piece !== "") out[r.name] = piece;
  }
  return out;
}

const no = () => false;
const none = () => undefined;

/** Creates the authorize answer of the stack (see the module comment). */
export function createAuthorizer(options: AuthorizerOptions): Authorizer {
  const { isSuperuser, clientRules, clientAttrs, logger } = options;
  const attrRules = options.attrRules ?? [];
  const now = options.now ?? Date.now;
  const compiled = new WeakMap<readonly AclRule[], Acl | Error>();
  const counts: Record<AuthorizeSource, number> = {
    superuser: 0,
    "client-rules": 0,
    "client-rules-expired": 0,
    "client-rules-invalid": 0,
    rules: 0,
  };

  function compiledFor(rules: readonly AclRule[]): Acl | Error {
    let acl = compiled.get(rules);
    if (acl === undefined) {
      try {
        acl = options.compile(rules);
      } catch (err) {
        acl = err as Error;
        logger?.warn({ err: acl.message }, "per-client ACL rules are invalid; every action of that client is denied");
      }
      compiled.set(rules, acl);
    }
    return acl;
  }

  const result = (source: AuthorizeSource, decision: AccessDecision, rule: number | undefined): AuthorizeResult => {
    counts[source]++;
    return { decision, source, rule };
  };

  function withAttrs(req: AclRequest, extra: Readonly<Record<string, string>> | undefined): AclRequest {
    const derived = attrRules.length > 0 ? deriveClientAttrs(attrRules, req) : undefined;
    if (!derived && !extra) return req;
    return { ...req, clientAttrs: { ...derived, ...extra } };
  }

  function decide(
    req: AclRequest,
    superuser: () => boolean,
    ownRules: () => ClientRules | undefined,
    attrs: () => Readonly<Record<string, string>> | undefined,
  ): AuthorizeResult {
    if (superuser()) return result("superuser", allow(), undefined);
    const own = ownRules();
    if (own) {
      if (own.expiresAt !== undefined && now() >= own.expiresAt) return result("client-rules-expired", deny(), undefined);
      const acl = compiledFor(own.rules);
      if (acl instanceof Error) return result("client-rules-invalid", deny(), undefined);
      const r = acl.check(acl.usesClientAttrs ? withAttrs(req, attrs()) : req);
      if (r.rule !== undefined) return result("client-rules", r.decision, r.rule);
    }
    const global = options.acl();
    const r = global.check(global.usesClientAttrs ? withAttrs(req, attrs()) : req);
    return result("rules", r.decision, r.rule);
  }

  return {
    handler: (request, ctx) => {
      const ci = request.clientinfo;
      const req = aclRequestOf(ci, request.type, request.topic);
      if (!ci) return decide(req, no, none, none).decision;
      return decide(
        req,
        () => isSuperuser?.(ci, ctx) ?? false,
        () => clientRules?.(ci, ctx),
        () => clientAttrs?.(ci, ctx),
      ).decision;
    },
    check: (req, principal = {}) =>
      decide(
        req,
        () => principal.superuser ?? false,
        () => principal.clientRules,
        () => req.clientAttrs,
      ),
    stats: () => ({ ...counts }),
  };
}
