/**
 * Decision helpers for the three hooks that answer EMQX with a `ValuedResponse`.
 *
 * Handlers return intent (`allow()`, `deny()`, `rewrite({...})`, `drop()`), never raw wire values:
 * the framework turns it into the right `ValuedResponse` for the package and broker version on the
 * other side (see `wire.ts`). Each helper returns a small frozen plain object, so a handler may
 * also return the literal (`{ kind: "deny" }`).
 */

/** Let the client in (authenticate) or allow the action (authorize). Final: later hooks do not run. */
export interface Allow {
  readonly kind: "allow";
}
/** Refuse the client (authenticate) or the action (authorize). Final: later hooks do not run. */
export interface Deny {
  readonly kind: "deny";
}
/**
 * No opinion: let the next authenticator or authorizer decide (EMQX `IGNORE`).
 * On EMQX 5.0–5.8 and 4.x an all-"no opinion" authenticate ends with EMQX's own input result,
 * which is usually a refusal; see the README table.
 */
export interface NoOpinion {
  readonly kind: "no-opinion";
}
/** The answer of `onClientAuthenticate` and `onClientAuthorize`. */
export type AccessDecision = Allow | Deny | NoOpinion;

/** Publish the message as it came. */
export interface Keep {
  readonly kind: "keep";
}
/**
 * Publish the message with some of topic, payload, QoS and headers changed. Every field not named
 * here is taken from the incoming message, so QoS and headers are never lost by accident.
 */
export interface Rewrite {
  readonly kind: "rewrite";
  readonly topic?: string;
  /** New payload; a string is sent as UTF-8. */
  readonly payload?: Uint8Array | string;
  readonly qos?: 0 | 1 | 2;
  /** Headers to set on top of the incoming ones. */
  readonly headers?: Readonly<Record<string, string>>;
}
/** Do not route the message (EMQX `allow_publish = "false"`). Final: later hooks do not run. */
export interface Drop {
  readonly kind: "drop";
}
/** The answer of `onMessagePublish`. */
export type PublishDecision = Keep | Rewrite | Drop;

/** Any decision a handler can return. */
export type Decision = AccessDecision | PublishDecision;

const ALLOW: Allow = Object.freeze({ kind: "allow" });
const DENY: Deny = Object.freeze({ kind: "deny" });
const NO_OPINION: NoOpinion = Object.freeze({ kind: "no-opinion" });
const KEEP: Keep = Object.freeze({ kind: "keep" });
const DROP: Drop = Object.freeze({ kind: "drop" });

/** Authenticate/authorize: yes. */
export function allow(): Allow {
  return ALLOW;
}
/** Authenticate/authorize: no. */
export function deny(): Deny {
  return DENY;
}
/** Authenticate/authorize: `allow()` when `condition` holds, `deny()` otherwise. */
export function allowIf(condition: boolean): Allow | Deny {
  return condition ? ALLOW : DENY;
}
/** Authenticate/authorize: let the next authenticator/authorizer decide. */
export function noOpinion(): NoOpinion {
  return NO_OPINION;
}
/** Publish: leave the message as it is. */
export function keep(): Keep {
  return KEEP;
}
/** Publish: change some of topic, payload, QoS, headers; everything else is kept. */
export function rewrite(changes: Omit<Rewrite, "kind">): Rewrite {
  // Object.assign + a plain property is ~10x cheaper than a spread, and this runs per publish.
  const out = Object.assign({}, changes) as { -readonly [K in keyof Rewrite]: Rewrite[K] };
  out.kind = "rewrite";
  return out;
}
/** Publish: drop the message. */
export function drop(): Drop {
  return DROP;
}

/** The neutral answer of a decision hook that has no handler or whose filters do not match. */
export const NEUTRAL_ACCESS: NoOpinion = NO_OPINION;
/** The neutral answer of `onMessagePublish`. */
export const NEUTRAL_PUBLISH: Keep = KEEP;
