/**
 * The authorization use case: ordered allow/deny rules, first match wins, a configurable result
 * when nothing matches.
 *
 * A rule: `{ permission: allow|deny, action: publish|subscribe|all, topic, qos?, retain?, username?,
 * clientid? }`. `topic` is an MQTT filter that may use `${username}` and `${clientid}` (replaced by
 * the client's own values; a rule whose placeholder value is empty or contains `+`, `#` or `/`
 * never matches, so a username such as `+` cannot widen `users/${username}/#` to every user),
 * or `eq <topic>` to match that exact string only (e.g. `eq sensors/#` allows exactly that
 * subscription).
 *
 * Subscribing with a wildcard filter is checked as EMQX checks it, level by level, but stricter: a
 * `#` in the subscription is covered only by a `#` in the rule (EMQX's file source lets rule `a/+`
 * cover subscription `a/#`).
 *
 * QoS and retain: EMQX's authorize request carries only the action and the topic, not the QoS or
 * the retain flag. A condition that cannot be checked is read in the stricter sense: an `allow`
 * rule with a `qos`/`retain` condition does not match, a `deny` rule with one does. Where they are
 * known (e.g. a call from `onMessagePublish` with the message's QoS) they are checked.
 *
 * Matching is indexed by the rule's first topic level: a check looks at the rules whose first level
 * is that literal word plus the rules whose first level is a wildcard or placeholder, in rule order.
 */
import { ClientAuthorizeRequest_AuthorizeReqType as AuthorizeType } from "../../gen/emqx/exhook/v3/exhook_pb.js";
import type { HookHandler } from "../provider.js";
import { allow, deny, noOpinion, type AccessDecision } from "../responses.js";
import { stripShare, topicFilterError } from "../topic.js";

/** One rule as written in the config file or stored. */
export interface AclRule {
  readonly permission: "allow" | "deny";
  /** Default `"all"`. */
  readonly action?: "publish" | "subscribe" | "all";
  /** MQTT topic filter with optional `${username}` / `${clientid}`, or `eq <exact topic>`. */
  readonly topic: string;
  /** QoS levels the rule applies to (see the module comment on when QoS is known). */
  readonly qos?: readonly number[];
  /** Retain flag the rule applies to (never known to `client.authorize`). */
  readonly retain?: boolean;
  /** Only for this username (`*` = any run of characters). Default: every user. */
  readonly username?: string;
  /** Only for this client id (`*` = any run of characters). Default: every client. */
  readonly clientid?: string;
}

/** One authorization question. */
export interface AclRequest {
  readonly action: "publish" | "subscribe";
  readonly topic: string;
  readonly username: string;
  readonly clientid: string;
  /** When known. */
  readonly qos?: number;
  /** When known. */
  readonly retain?: boolean;
}

/** The answer: the decision and the index (0-based, in the compiled list) of the rule that matched. */
export interface AclResult {
  readonly decision: AccessDecision;
  readonly rule: number | undefined;
}

/** A compiled rule set. */
export interface Acl {
  check(req: AclRequest): AclResult;
  /** The `onClientAuthorize` handler. */
  readonly handler: HookHandler<"onClientAuthorize">;
  readonly size: number;
}

const PLACEHOLDER = /\$\{([^}]*)\}/g;
const KNOWN_PLACEHOLDERS = new Set(["username", "clientid"]);

/** Why a rule's topic is not valid, or `undefined`. */
export function aclTopicError(topic: string): string | undefined {
  if (typeof topic !== "string" || topic.length === 0) return "topic must be a non-empty string";
  if (topic.startsWith("eq ")) {
    return topic.length > 3 ? undefined : '"eq " must be followed by a topic';
  }
  for (const m of topic.matchAll(PLACEHOLDER)) {
    if (!KNOWN_PLACEHOLDERS.has(m[1] as string)) return `unknown placeholder \${${m[1]}} (allowed: \${username}, \${clientid})`;
  }
  const plain = topic.replace(PLACEHOLDER, "x");
  if (plain.includes("${")) return "unterminated placeholder (write ${username} or ${clientid})";
  const err = topicFilterError(plain);
  if (err) return `${JSON.stringify(topic)} is not a valid MQTT topic filter: ${err}`;
  if (plain !== stripShare(plain)) return "a rule topic must not be a shared subscription ($share/ or $queue/)";
  return undefined;
}

const PLUS = 1;
const HASH = 2;
type Part = string | { readonly ph: "username" | "clientid" };
/** A compiled level: a literal word, `+`, `#`, or a template with placeholders. */
type Level = string | typeof PLUS | typeof HASH | readonly Part[];

interface Compiled {
  readonly index: number;
  readonly allow: boolean;
  readonly pub: boolean;
  readonly sub: boolean;
  /** `eq` rules: the exact topic. */
  readonly eq: string | undefined;
  readonly levels: readonly Level[];
  readonly qos: readonly number[] | undefined;
  readonly retain: boolean | undefined;
  readonly user: RegExp | string | undefined;
  readonly client: RegExp | string | undefined;
}

function who(pattern: string | undefined): RegExp | string | undefined {
  if (pattern === undefined || pattern === "*") return undefined;
  if (!pattern.includes("*")) return pattern;
  return new RegExp(`^${pattern.split("*").map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`, "s");
}

const whoMatches = (p: RegExp | string | undefined, v: string) => p === undefined || (typeof p === "string" ? p === v : p.test(v));

function compileLevel(level: string): Level {
  if (level === "+") return PLUS;
  if (level === "#") return HASH;
  if (!level.includes("${")) return level;
  const parts: Part[] = [];
  let last = 0;
  for (const m of level.matchAll(PLACEHOLDER)) {
    if ((m.index as number) > last) parts.push(level.slice(last, m.index));
    parts.push({ ph: m[1] as "username" | "clientid" });
    last = (m.index as number) + m[0].length;
  }
  if (last < level.length) parts.push(level.slice(last));
  return parts;
}

/**
 * Compiles rules (validated: throws an Error naming the rule on a bad one). `where(i)` names rule i
 * in error messages (default `rule #<i+1>`). `noMatch` is the answer when no rule matches.
 */
export function compileAcl(
  rules: readonly AclRule[],
  noMatch: "allow" | "deny" | "no-opinion" = "deny",
  where: (i: number) => string = (i) => `rule #${i + 1}`,
): Acl {
  const compiled: Compiled[] = rules.map((r, index) => {
    const err = aclTopicError(r.topic);
    if (err) throw new Error(`${where(index)}: ${err}`);
    if (r.permission !== "allow" && r.permission !== "deny") throw new Error(`${where(index)}: permission must be "allow" or "deny"`);
    const action = r.action ?? "all";
    const eq = r.topic.startsWith("eq ") ? r.topic.slice(3) : undefined;
    return {
      index,
      allow: r.permission === "allow",
      pub: action !== "subscribe",
      sub: action !== "publish",
      eq,
      levels: eq === undefined ? r.topic.split("/").map(compileLevel) : [],
      qos: r.qos,
      retain: r.retain,
      user: who(r.username),
      client: who(r.clientid),
    };
  });
  // Index: rules whose first level is a literal word, by that word; the rest are checked always.
  const byFirst = new Map<string, Compiled[]>();
  const always: Compiled[] = [];
  for (const c of compiled) {
    const first = c.eq !== undefined ? c.eq.split("/")[0] : c.levels[0];
    if (typeof first === "string") {
      let list = byFirst.get(first);
      if (!list) byFirst.set(first, (list = []));
      list.push(c);
    } else always.push(c);
  }
  const none: Compiled[] = [];
  const noMatchDecision = noMatch === "allow" ? allow() : noMatch === "deny" ? deny() : noOpinion();

  function check(req: AclRequest): AclResult {
    const topic = stripShare(req.topic);
    const words = topic.split("/");
    const a = byFirst.get(words[0] as string) ?? none;
    const b = always;
    let i = 0;
    let j = 0;
    // Merge the two candidate lists in rule order; first match wins.
    while (i < a.length || j < b.length) {
      const c = j >= b.length || (i < a.length && (a[i] as Compiled).index < (b[j] as Compiled).index) ? (a[i++] as Compiled) : (b[j++] as Compiled);
      if (matches(c, req, topic, words)) return { decision: c.allow ? allow() : deny(), rule: c.index };
    }
    return { decision: noMatchDecision, rule: undefined };
  }

  return {
    check,
    size: compiled.length,
    handler: ({ clientinfo, type, topic }) =>
      check({
        action: type === AuthorizeType.SUBSCRIBE ? "subscribe" : "publish",
        topic,
        username: clientinfo?.username ?? "",
        clientid: clientinfo?.clientid ?? "",
      }).decision,
  };
}

function matches(c: Compiled, req: AclRequest, topic: string, words: readonly string[]): boolean {
  if (req.action === "publish" ? !c.pub : !c.sub) return false;
  if (!whoMatches(c.user, req.username) || !whoMatches(c.client, req.clientid)) return false;
  if (c.qos !== undefined) {
    if (req.qos === undefined) {
      if (c.allow) return false;
    } else if (!c.qos.includes(req.qos)) return false;
  }
  if (c.retain !== undefined) {
    if (req.retain === undefined) {
      if (c.allow) return false;
    } else if (c.retain !== req.retain) return false;
  }
  if (c.eq !== undefined) return c.eq === topic;
  return matchLevels(c.levels, words, req);
}

function matchLevels(levels: readonly Level[], words: readonly string[], req: AclRequest): boolean {
  const dollar = (words[0] as string).charCodeAt(0) === 36;
  for (let k = 0; k < levels.length; k++) {
    const l = levels[k] as Level;
    if (l === HASH) return !(k === 0 && dollar);
    if (k >= words.length) return false;
    const w = words[k] as string;
    if (l === PLUS) {
      if ((k === 0 && dollar) || w === "#") return false;
    } else if (typeof l === "string") {
      if (l !== w) return false;
    } else {
      let s = "";
      for (const p of l) {
        if (typeof p === "string") s += p;
        else {
          const v = p.ph === "username" ? req.username : req.clientid;
          if (!usableValue(v)) return false;
          s += v;
        }
      }
      if (s !== w) return false;
    }
  }
  return levels.length === words.length;
}

/** A username/client id usable in a placeholder: not empty, and no `+`, `#` or `/` that would widen a rule. */
function usableValue(v: string): boolean {
  return v !== "" && !v.includes("+") && !v.includes("#") && !v.includes("/");
}
