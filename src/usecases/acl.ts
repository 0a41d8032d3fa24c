/**
 * The authorization use case: ordered allow/deny rules, first match wins, a configurable result
 * when nothing matches.
 *
 * A rule: `{ permission: allow|deny, action: publish|subscribe|all, topic, qos?, retain?, username?,
 * clientid?, peerhost?, listener?, overlap? }`.
 *
 * `topic` is an MQTT filter that may use EMQX's placeholders `${username}`, `${clientid}`,
 * `${peerhost}`, `${cert_common_name}`, `${cert_subject}`, `${mountpoint}` and
 * `${client_attrs.NAME}`, each replaced by the client's own value inside one topic level. A rule
 * whose placeholder value is empty or contains `+`, `#` or `/` never matches (nor one that would
 * start a topic with `$`), so a username such as `+` cannot widen `users/${username}/#` to every
 * user. `${mountpoint}` drops one trailing `/` first (EMQX mountpoints are written `tenant/`).
 * `eq <topic>` matches that exact string only (e.g. `eq sensors/#` allows exactly that
 * subscription).
 *
 * Subscribing with a wildcard filter is checked as EMQX checks it, level by level, but stricter: a
 * `#` in the subscription is covered only by a `#` in the rule (EMQX's file source lets rule `a/+`
 * cover subscription `a/#`). A deny rule also matches a subscription that merely *overlaps* its
 * topic (some topic matches both) unless `overlap: false` on the rule or `denyOverlap: false` for
 * the rule set: otherwise `deny users/${username}/secret/#` followed by `allow users/${username}/#`
 * would let `users/alice/#` through, and with it everything under `secret/`.
 *
 * Conditions on the client: `username` / `clientid` (`*` = any run of characters, matched in time
 * linear in the value, no regular expression), `peerhost` (IPv4/IPv6 addresses and CIDR blocks),
 * `listener` (EMQX listener ids such as `tcp:default`, recognised by their port because ExHook
 * sends the listener's port, not its name).
 *
 * Conditions that cannot be checked are read in the stricter sense: an `allow` rule with such a
 * condition does not match, a `deny` rule with one does. EMQX's authorize request never carries the
 * QoS or the retain flag; a listener port that no listener id is configured for, or a missing or
 * malformed peer address, count as unknown too. Where the values are known (e.g. a call from
 * `onMessagePublish` with the message's QoS, or `acl check --qos 1`) they are checked.
 *
 * Matching is indexed by each rule's first literal topic level (among its first four): a check looks
 * only at the rules indexed under one of its topic's words at that position, plus the rules with no
 * literal level there (wildcards and placeholders only), in rule order.
 */
import { BlockList, isIP, SocketAddress } from "node:net";
import { ClientAuthorizeRequest_AuthorizeReqType as AuthorizeType, type ClientInfo } from "../../gen/emqx/exhook/v3/exhook_pb.js";
import type { HookHandler } from "../provider.js";
import { allow, deny, noOpinion, type AccessDecision } from "../responses.js";
import { stripShare, topicFilterError } from "../topic.js";

/** One rule as written in the config file or stored. */
export interface AclRule {
  readonly permission: "allow" | "deny";
  /** Default `"all"`. */
  readonly action?: "publish" | "subscribe" | "all";
  /** MQTT topic filter with optional placeholders (see the module comment), or `eq <exact topic>`. */
  readonly topic: string;
  /** QoS levels the rule applies to (see the module comment on when QoS is known). */
  readonly qos?: readonly number[];
  /** Retain flag the rule applies to (never known to `client.authorize`). */
  readonly retain?: boolean;
  /** Only for this username (`*` = any run of characters). Default: every user. */
  readonly username?: string;
  /** Only for this client id (`*` = any run of characters). Default: every client. */
  readonly clientid?: string;
  /** Only for clients connecting from this address or CIDR block (IPv4 or IPv6), or any of a list. */
  readonly peerhost?: string | readonly string[];
  /** Only for clients on this EMQX listener (e.g. `tcp:default`), or any of a list. */
  readonly listener?: string | readonly string[];
  /**
   * Deny rules: also match a subscription filter that overlaps the topic (`users/alice/#` against
   * `deny users/alice/secret/#`). Default: the rule set's `denyOverlap` (true). Not allowed on allow rules.
   */
  readonly overlap?: boolean;
}

/** One authorization question. Optional fields are what the client sent, when known. */
export interface AclRequest {
  readonly action: "publish" | "subscribe";
  readonly topic: string;
  readonly username: string;
  readonly clientid: string;
  /** When known. */
  readonly qos?: number;
  /** When known. */
  readonly retain?: boolean;
  /** Textual IP address (`ClientInfo.peerhost`). */
  readonly peerhost?: string;
  /** Listener port (`ClientInfo.sockport`), mapped to a listener id by the `listeners` option. */
  readonly sockport?: number;
  /** Listener id when known directly (e.g. `acl check --listener`); wins over `sockport`. */
  readonly listener?: string;
  /** TLS client certificate common name (`ClientInfo.cn`). */
  readonly cn?: string;
  /** TLS client certificate subject (`ClientInfo.dn`). */
  readonly dn?: string;
  /** Listener mountpoint (`ClientInfo.mountpoint`). */
  readonly mountpoint?: string;
  /** Client attributes for `${client_attrs.NAME}` (not on the wire; see the authorizer). */
  readonly clientAttrs?: Readonly<Record<string, string>>;
}

/** The answer: the decision and the index (0-based, in the compiled list) of the rule that matched. */
export interface AclResult {
  readonly decision: AccessDecision;
  readonly rule: number | undefined;
}

/** A compiled rule set. */
export interface Acl {
  check(req: AclRequest): AclResult;
  /** The `onClientAuthorize` handler (global rules only; the stack adds superusers and per-client rules). */
  readonly handler: HookHandler<"onClientAuthorize">;
  readonly size: number;
  /** Whether any rule uses `${client_attrs.*}` (so callers fetch attributes only then). */
  readonly usesClientAttrs: boolean;
}

/** Options of {@link compileAcl}. */
export interface AclOptions {
  /**
   * Listener ids and their ports, for `listener` conditions. Default {@link EMQX_DEFAULT_LISTENERS}.
   * A rule naming a listener that is not here is refused at compile time.
   */
  readonly listeners?: Readonly<Record<string, number | readonly number[]>>;
  /** Default of every deny rule's `overlap`. Default true (the safe reading; false = EMQX's). */
  readonly denyOverlap?: boolean;
}

/** EMQX's default listeners and ports. */
export const EMQX_DEFAULT_LISTENERS: Readonly<Record<string, number>> = Object.freeze({
  "tcp:default": 1883,
  "ssl:default": 8883,
  "ws:default": 8083,
  "wss:default": 8084,
});

const PLACEHOLDER = /\$\{([^}]*)\}/g;
const SIMPLE_PLACEHOLDERS = ["username", "clientid", "peerhost", "cert_common_name", "cert_subject", "mountpoint"] as const;
type SimplePlaceholder = (typeof SIMPLE_PLACEHOLDERS)[number];
const ATTR_NAME = /^client_attrs\.([A-Za-z0-9_-]{1,64})$/;
const ALLOWED_TEXT = "${username}, ${clientid}, ${peerhost}, ${cert_common_name}, ${cert_subject}, ${mountpoint}, ${client_attrs.NAME}";

function placeholderError(name: string): string | undefined {
  if ((SIMPLE_PLACEHOLDERS as readonly string[]).includes(name) || ATTR_NAME.test(name)) return undefined;
  return `unknown placeholder \${${name}} (allowed: ${ALLOWED_TEXT})`;
}

/** Why a rule's topic is not valid, or `undefined`. */
export function aclTopicError(topic: string): string | undefined {
  if (typeof topic !== "string" || topic.length === 0) return "topic must be a non-empty string";
  if (topic.startsWith("eq ")) {
    return topic.length > 3 ? undefined : '"eq " must be followed by a topic';
  }
  for (const m of topic.matchAll(PLACEHOLDER)) {
    const err = placeholderError(m[1] as string);
    if (err) return err;
  }
  const plain = topic.replace(PLACEHOLDER, "x");
  if (plain.includes("${")) return "unterminated placeholder (write e.g. ${username} or ${clientid})";
  const err = topicFilterError(plain);
  if (err) return `${JSON.stringify(topic)} is not a valid MQTT topic filter: ${err}`;
  if (plain !== stripShare(plain)) return "a rule topic must not be a shared subscription ($share/ or $queue/)";
  return undefined;
}

/** Why a `peerhost` condition entry is not an IP address or CIDR block, or `undefined`. */
export function peerhostError(entry: string): string | undefined {
  return parseCidr(entry)
    ? undefined
    : `${JSON.stringify(entry)} is not an IP address or CIDR block (e.g. 10.0.0.0/8, 2001:db8::/32, 192.0.2.7)`;
}

function parseCidr(entry: string): { address: string; prefix: number; type: "ipv4" | "ipv6" } | undefined {
  if (typeof entry !== "string") return undefined;
  const slash = entry.indexOf("/");
  const address = slash < 0 ? entry : entry.slice(0, slash);
  const v = isIP(address);
  if (v === 0) return undefined;
  const max = v === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = entry.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return undefined;
    prefix = Number(p);
  }
  return { address, prefix, type: v === 4 ? "ipv4" : "ipv6" };
}

const PLUS = 1;
const HASH = 2;
/** How deep the index looks for a rule's first literal level (`+/+/+/dev7/#` is indexed by `dev7`). */
const INDEX_DEPTH = 4;
type Part = string | { readonly ph: SimplePlaceholder } | { readonly attr: string };
/** A compiled level: a literal word, `+`, `#`, or a template with placeholders. */
type Level = string | typeof PLUS | typeof HASH | readonly Part[];

/** A `*` glob matched by splitting on `*`: linear in the value, no backtracking. */
type Glob = string | readonly string[];

interface Compiled {
  readonly index: number;
  readonly allow: boolean;
  readonly pub: boolean;
  readonly sub: boolean;
  /** Deny rules matching overlapping subscriptions. */
  readonly overlap: boolean;
  /** `eq` rules: the exact topic. */
  readonly eq: string | undefined;
  readonly levels: readonly Level[];
  readonly qos: readonly number[] | undefined;
  readonly retain: boolean | undefined;
  readonly user: Glob | undefined;
  readonly client: Glob | undefined;
  readonly peers: BlockList | undefined;
  /** Listener ids, and the ports they map to. */
  readonly listenerIds: ReadonlySet<string> | undefined;
  readonly listenerPorts: ReadonlySet<number> | undefined;
}

function glob(pattern: string | undefined): Glob | undefined {
  if (pattern === undefined || pattern === "*") return undefined;
  return pattern.includes("*") ? pattern.split("*") : pattern;
}

/** `*`-glob match: first piece a prefix, last a suffix, the middle ones found left to right. */
export function globMatches(g: Glob | undefined, v: string): boolean {
  if (g === undefined) return true;
  if (typeof g === "string") return g === v;
  const first = g[0] as string;
  const last = g[g.length - 1] as string;
  if (v.length < first.length + last.length || !v.startsWith(first) || !v.endsWith(last)) return false;
  let pos = first.length;
  const end = v.length - last.length;
  for (let i = 1; i < g.length - 1; i++) {
    const piece = g[i] as string;
    if (piece === "") continue;
    const at = v.indexOf(piece, pos);
    if (at < 0 || at + piece.length > end) return false;
    pos = at + piece.length;
  }
  return true;
}

function compileLevel(level: string): Level {
  if (level === "+") return PLUS;
  if (level === "#") return HASH;
  if (!level.includes("${")) return level;
  const parts: Part[] = [];
  let last = 0;
  for (const m of level.matchAll(PLACEHOLDER)) {
    if ((m.index as number) > last) parts.push(level.slice(last, m.index));
    const name = m[1] as string;
    const attr = ATTR_NAME.exec(name);
    parts.push(attr ? { attr: attr[1] as string } : { ph: name as SimplePlaceholder });
    last = (m.index as number) + m[0].length;
  }
  if (last < level.length) parts.push(level.slice(last));
  return parts;
}

const asList = <T>(v: T | readonly T[] | undefined): readonly T[] | undefined =>
  v === undefined ? undefined : Array.isArray(v) ? v : [v as T];

/**
 * Compiles rules (validated: throws an Error naming the rule on a bad one). `where(i)` names rule i
 * in error messages (default `rule #<i+1>`). `noMatch` is the answer when no rule matches.
 */
export function compileAcl(
  rules: readonly AclRule[],
  noMatch: "allow" | "deny" | "no-opinion" = "deny",
  where: (i: number) => string = (i) => `rule #${i + 1}`,
  options: AclOptions = {},
): Acl {
  const listeners = options.listeners ?? EMQX_DEFAULT_LISTENERS;
  const denyOverlap = options.denyOverlap ?? true;
  const knownPorts = new Set<number>();
  for (const ports of Object.values(listeners)) for (const port of asList(ports) ?? []) knownPorts.add(port);
  let usesClientAttrs = false;
  const compiled: Compiled[] = rules.map((r, index) => {
    const err = aclTopicError(r.topic);
    if (err) throw new Error(`${where(index)}: ${err}`);
    if (r.permission !== "allow" && r.permission !== "deny") throw new Error(`${where(index)}: permission must be "allow" or "deny"`);
    if (r.overlap !== undefined && r.permission === "allow")
      throw new Error(`${where(index)}: overlap applies to deny rules only (an allow rule must cover a subscription)`);
    if (r.topic.includes("${client_attrs.")) usesClientAttrs = true;
    const action = r.action ?? "all";
    const eq = r.topic.startsWith("eq ") ? r.topic.slice(3) : undefined;
    let peers: BlockList | undefined;
    for (const p of asList(r.peerhost) ?? []) {
      const c = parseCidr(p);
      if (!c) throw new Error(`${where(index)}: peerhost: ${peerhostError(p)}`);
      peers ??= new BlockList();
      if (c.prefix === (c.type === "ipv4" ? 32 : 128)) peers.addAddress(c.address, c.type);
      else peers.addSubnet(c.address, c.prefix, c.type);
    }
    let listenerIds: Set<string> | undefined;
    let listenerPorts: Set<number> | undefined;
    for (const id of asList(r.listener) ?? []) {
      const ports = listeners[id];
      if (ports === undefined) {
        throw new Error(
          `${where(index)}: listener ${JSON.stringify(id)} is not a known listener (known: ${Object.keys(listeners).join(", ") || "none"}; add it with its port to acl.listeners)`,
        );
      }
      (listenerIds ??= new Set()).add(id);
      listenerPorts ??= new Set();
      for (const port of asList(ports) ?? []) listenerPorts.add(port);
    }
    return {
      index,
      allow: r.permission === "allow",
      pub: action !== "subscribe",
      sub: action !== "publish",
      overlap: r.permission === "deny" && eq === undefined && (r.overlap ?? denyOverlap),
      eq,
      levels: eq === undefined ? r.topic.split("/").map(compileLevel) : [],
      qos: r.qos,
      retain: r.retain,
      user: glob(r.username),
      client: glob(r.clientid),
      peers,
      listenerIds,
      listenerPorts,
    };
  });
  // Index: each rule under its first literal level among the first INDEX_DEPTH levels (position and
  // word); a request can only match it if its topic has that word there. The rest are checked always.
  const byPos: Array<Map<string, Compiled[]>> = Array.from({ length: INDEX_DEPTH }, () => new Map());
  const always: Compiled[] = [];
  // Deny rules refusing overlapping subscriptions: a subscription with a wildcard where the rule has
  // its indexed word still overlaps it, so those rules are candidates for every wildcard subscription.
  const overlapIndexed: Compiled[] = [];
  for (const c of compiled) {
    let pos = -1;
    let word: string | undefined;
    if (c.eq !== undefined) {
      pos = 0;
      word = c.eq.split("/")[0] as string;
    } else {
      for (let k = 0; k < Math.min(INDEX_DEPTH, c.levels.length); k++) {
        const l = c.levels[k];
        if (l === HASH) break;
        if (typeof l === "string") {
          pos = k;
          word = l;
          break;
        }
      }
    }
    if (pos < 0) {
      always.push(c);
      continue;
    }
    const map = byPos[pos] as Map<string, Compiled[]>;
    let list = map.get(word as string);
    if (!list) map.set(word as string, (list = []));
    list.push(c);
    if (c.overlap && c.sub) overlapIndexed.push(c);
  }
  const depth = byPos.reduce((d, m, k) => (m.size > 0 ? k + 1 : d), 0);
  const noMatchDecision = noMatch === "allow" ? allow() : noMatch === "deny" ? deny() : noOpinion();
  // Candidate lists of one check, merged in rule order (reused: a check runs synchronously).
  const lists: Array<readonly Compiled[]> = [];
  const heads: number[] = [];
  const peer: PeerSlot = { v: undefined };

  function check(req: AclRequest): AclResult {
    const topic = stripShare(req.topic);
    const words = topic.split("/");
    let n = 0;
    for (let k = 0; k < depth && k < words.length; k++) {
      const list = (byPos[k] as Map<string, Compiled[]>).get(words[k] as string);
      if (list) lists[n++] = list;
    }
    if (always.length > 0) lists[n++] = always;
    if (overlapIndexed.length > 0 && req.action === "subscribe" && (topic.includes("+") || topic.includes("#")))
      lists[n++] = overlapIndexed;
    peer.v = undefined;
    if (n === 1) {
      // The usual case (one index bucket, nothing else): no merge.
      const list = lists[0] as readonly Compiled[];
      for (let i = 0; i < list.length; i++) {
        const c = list[i] as Compiled;
        if (matches(c, req, topic, words, knownPorts, peer)) return { decision: c.allow ? allow() : deny(), rule: c.index };
      }
      return { decision: noMatchDecision, rule: undefined };
    }
    for (let k = 0; k < n; k++) heads[k] = 0;
    let last = -1;
    // First match wins: walk the candidates in rule order (a rule may be in two lists: once is enough).
    for (;;) {
      let best = -1;
      let bestIndex = Number.MAX_SAFE_INTEGER;
      for (let k = 0; k < n; k++) {
        const c = (lists[k] as readonly Compiled[])[heads[k] as number];
        if (c !== undefined && c.index < bestIndex) {
          best = k;
          bestIndex = c.index;
        }
      }
      if (best < 0) break;
      const c = (lists[best] as readonly Compiled[])[(heads[best] as number)++] as Compiled;
      if (c.index === last) continue;
      last = c.index;
      if (matches(c, req, topic, words, knownPorts, peer)) return { decision: c.allow ? allow() : deny(), rule: c.index };
    }
    return { decision: noMatchDecision, rule: undefined };
  }

  return {
    check,
    size: compiled.length,
    usesClientAttrs,
    handler: ({ clientinfo, type, topic }) => check(aclRequestOf(clientinfo, type, topic)).decision,
  };
}

/** The {@link AclRequest} of an authorize call (without client attributes, which are not on the wire). */
export function aclRequestOf(clientinfo: ClientInfo | undefined, type: AuthorizeType, topic: string): AclRequest {
  return {
    action: type === AuthorizeType.SUBSCRIBE ? "subscribe" : "publish",
    topic,
    username: clientinfo?.username ?? "",
    clientid: clientinfo?.clientid ?? "",
    peerhost: clientinfo?.peerhost ?? "",
    sockport: clientinfo?.sockport ?? 0,
    cn: clientinfo?.cn ?? "",
    dn: clientinfo?.dn ?? "",
    mountpoint: clientinfo?.mountpoint ?? "",
  };
}

/** The client's address as a SocketAddress, made once per check (making one costs ~1.4 µs). */
interface PeerSlot {
  v: SocketAddress | null | undefined;
}

function peerOf(req: AclRequest, slot: PeerSlot): SocketAddress | null {
  if (slot.v !== undefined) return slot.v;
  let host = req.peerhost ?? "";
  // EMQX sends IPv4-mapped IPv6 as plain IPv4; a caller might not.
  if (host.startsWith("::ffff:") && isIP(host.slice(7)) === 4) host = host.slice(7);
  const v = isIP(host);
  slot.v = v === 0 ? null : new SocketAddress({ address: host, family: v === 4 ? "ipv4" : "ipv6" });
  return slot.v;
}

/**
 * Whether a condition holds: `true`/`false` when the value is known, else the strict reading
 * (`allow` rules do not match, `deny` rules do).
 */
const unknownHolds = (c: Compiled) => !c.allow;

function matches(
  c: Compiled,
  req: AclRequest,
  topic: string,
  words: readonly string[],
  knownPorts: ReadonlySet<number>,
  peer: PeerSlot,
): boolean {
  if (req.action === "publish" ? !c.pub : !c.sub) return false;
  if (c.eq !== undefined) {
    if (c.eq !== topic) return false;
  } else if (!matchLevels(c.levels, words, req) && !(c.overlap && req.action === "subscribe" && overlapLevels(c.levels, words, req)))
    return false;
  if ((c.user !== undefined && !globMatches(c.user, req.username)) || (c.client !== undefined && !globMatches(c.client, req.clientid)))
    return false;
  if (c.qos !== undefined) {
    if (req.qos === undefined) {
      if (!unknownHolds(c)) return false;
    } else if (!c.qos.includes(req.qos)) return false;
  }
  if (c.retain !== undefined) {
    if (req.retain === undefined) {
      if (!unknownHolds(c)) return false;
    } else if (c.retain !== req.retain) return false;
  }
  if (c.listenerIds !== undefined) {
    if (req.listener !== undefined && req.listener !== "") {
      if (!c.listenerIds.has(req.listener)) return false;
    } else if (req.sockport !== undefined && req.sockport !== 0 && knownPorts.has(req.sockport)) {
      if (!(c.listenerPorts as ReadonlySet<number>).has(req.sockport)) return false;
    } else if (!unknownHolds(c)) return false;
  }
  if (c.peers !== undefined) {
    const addr = peerOf(req, peer);
    if (addr === null) {
      if (!unknownHolds(c)) return false;
    } else if (!c.peers.check(addr)) return false;
  }
  return true;
}

/** The value of a template level, or `undefined` when a placeholder value is not usable. */
function render(parts: readonly Part[], req: AclRequest, first: boolean): string | undefined {
  let s = "";
  for (const p of parts) {
    if (typeof p === "string") {
      s += p;
      continue;
    }
    const v = "attr" in p ? (req.clientAttrs?.[p.attr] ?? "") : placeholderValue(p.ph, req);
    if (!usableValue(v)) return undefined;
    s += v;
  }
  // A value must not turn the first level into a `$` topic (`${clientid}/#` with client id `$SYS`).
  if (first && s.charCodeAt(0) === 36 && (typeof parts[0] !== "string" || parts[0] === "")) return undefined;
  return s;
}

function placeholderValue(ph: SimplePlaceholder, req: AclRequest): string {
  switch (ph) {
    case "username":
      return req.username;
    case "clientid":
      return req.clientid;
    case "peerhost":
      return req.peerhost ?? "";
    case "cert_common_name":
      return req.cn ?? "";
    case "cert_subject":
      return req.dn ?? "";
    case "mountpoint": {
      const m = req.mountpoint ?? "";
      return m.endsWith("/") ? m.slice(0, -1) : m;
    }
  }
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
    } else if (render(l, req, k === 0) !== w) return false;
  }
  return levels.length === words.length;
}

/**
 * Whether some topic matches both the rule's filter and the subscription filter `words` (which may
 * hold `+` and `#`). A wildcard at the first level never meets a `$` word.
 */
function overlapLevels(levels: readonly Level[], words: readonly string[], req: AclRequest): boolean {
  for (let k = 0; ; k++) {
    if (k === levels.length) return k === words.length || words[k] === "#";
    const l = levels[k] as Level;
    const w = words[k];
    if (l === HASH) return !(k === 0 && w !== undefined && w !== "+" && w !== "#" && w.charCodeAt(0) === 36);
    if (w === undefined) return false;
    const lit = l === PLUS ? undefined : typeof l === "string" ? l : render(l, req, k === 0);
    if (l !== PLUS && lit === undefined) return false;
    if (w === "#") return !(k === 0 && lit !== undefined && lit.charCodeAt(0) === 36);
    if (w === "+" || l === PLUS) {
      const word = w === "+" ? lit : w;
      if (k === 0 && word !== undefined && word.charCodeAt(0) === 36) return false;
      continue;
    }
    if (lit !== w) return false;
  }
}

/** A placeholder value usable in a topic: not empty, and no `+`, `#` or `/` that would widen a rule. */
function usableValue(v: string): boolean {
  return v !== "" && !v.includes("+") && !v.includes("#") && !v.includes("/");
}
