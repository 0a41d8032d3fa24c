/**
 * MQTT topic names and filters: validation and matching, as EMQX does them.
 * No imports: this module is pure and used on the hot path.
 */

const SHARE_PREFIX = "$share/";
const QUEUE_PREFIX = "$queue/";

/**
 * Why `filter` is not a valid MQTT topic filter, or `undefined` when it is.
 * Accepts `+` and `#` wildcards and shared subscriptions (`$share/<group>/<filter>`, `$queue/<filter>`).
 */
export function topicFilterError(filter: string): string | undefined {
  if (typeof filter !== "string") return "a topic filter must be a string";
  if (filter.length === 0) return "a topic filter must not be empty";
  if (filter.includes("\u0000")) return "a topic filter must not contain NUL";
  if (utf8Length(filter) > 65535) return "a topic filter must not be longer than 65535 bytes";
  let rest = filter;
  if (filter.startsWith(SHARE_PREFIX)) {
    const slash = filter.indexOf("/", SHARE_PREFIX.length);
    const group = slash < 0 ? filter.slice(SHARE_PREFIX.length) : filter.slice(SHARE_PREFIX.length, slash);
    if (slash < 0 || group.length === 0) return "a shared subscription must look like $share/<group>/<filter>";
    if (group.includes("+") || group.includes("#")) return "a share group name must not contain + or #";
    rest = filter.slice(slash + 1);
    if (rest.length === 0) return "a shared subscription needs a filter after the group";
  } else if (filter.startsWith(QUEUE_PREFIX)) {
    rest = filter.slice(QUEUE_PREFIX.length);
    if (rest.length === 0) return "$queue/ needs a filter after it";
  }
  const levels = rest.split("/");
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i] as string;
    if (level.includes("#") && (level !== "#" || i !== levels.length - 1)) {
      return "# must be a whole level and the last one";
    }
    if (level.includes("+") && level !== "+") return "+ must be a whole level";
  }
  return undefined;
}

/** Whether `filter` is a valid MQTT topic filter. */
export function isValidTopicFilter(filter: string): boolean {
  return topicFilterError(filter) === undefined;
}

/** Why `topic` is not a valid topic name to publish to, or `undefined` when it is. */
export function topicNameError(topic: string): string | undefined {
  if (typeof topic !== "string" || topic.length === 0) return "a topic must not be empty";
  if (topic.includes("+") || topic.includes("#")) return "a topic name must not contain + or #";
  if (topic.includes("\u0000")) return "a topic must not contain NUL";
  if (utf8Length(topic) > 65535) return "a topic must not be longer than 65535 bytes";
  return undefined;
}

/** The filter without its `$share/<group>/` or `$queue/` prefix. */
export function stripShare(filter: string): string {
  if (filter.startsWith(SHARE_PREFIX)) {
    const slash = filter.indexOf("/", SHARE_PREFIX.length);
    return slash < 0 ? filter : filter.slice(slash + 1);
  }
  if (filter.startsWith(QUEUE_PREFIX)) return filter.slice(QUEUE_PREFIX.length);
  return filter;
}

/**
 * Whether topic name `topic` matches topic filter `filter` (MQTT rules: `+` one level, `#` the
 * rest including the parent level; wildcards at the first level never match a topic starting
 * with `$`). A shared-subscription prefix on the filter is ignored.
 */
export function matchTopic(filter: string, topic: string): boolean {
  return matchLevels(stripShare(filter), topic);
}

function matchLevels(filter: string, topic: string): boolean {
  if (filter === "#") return topic.charCodeAt(0) !== 36; // '$'
  let f = 0;
  let t = 0;
  const fl = filter.length;
  const tl = topic.length;
  let first = true;
  for (;;) {
    const fe = indexOrEnd(filter, f);
    const te = indexOrEnd(topic, t);
    const flen = fe - f;
    if (flen === 1 && filter.charCodeAt(f) === 35 /* # */) {
      return !(first && topic.charCodeAt(0) === 36);
    }
    if (t > tl) return false;
    if (flen === 1 && filter.charCodeAt(f) === 43 /* + */) {
      if (first && topic.charCodeAt(0) === 36) return false;
    } else if (flen !== te - t || !filter.startsWith(topic.slice(t, te), f)) {
      return false;
    }
    first = false;
    f = fe + 1;
    t = te + 1;
    if (f > fl) return t > tl;
    if (t > tl) {
      // The topic is used up; only a trailing "/#" can still match ("a/#" matches "a").
      return filter.length - f === 1 && filter.charCodeAt(f) === 35;
    }
  }
}

function indexOrEnd(s: string, from: number): number {
  const i = s.indexOf("/", from);
  return i < 0 ? s.length : i;
}

/** A compiled set of filters: `true` when any filter matches. An empty set matches everything. */
export type TopicMatcher = (topic: string) => boolean;

/** Compiles filters once so the hot path only runs the match. Throws on an invalid filter. */
export function compileTopicFilters(filters: readonly string[]): TopicMatcher {
  if (filters.length === 0) return () => true;
  const plain = new Set<string>();
  const wild: string[] = [];
  for (const raw of filters) {
    const err = topicFilterError(raw);
    if (err) throw new TypeError(`invalid topic filter ${JSON.stringify(raw)}: ${err}`);
    const f = stripShare(raw);
    if (f.includes("+") || f.includes("#")) wild.push(f);
    else plain.add(f);
  }
  if (wild.length === 0) return (topic) => plain.has(topic);
  return (topic) => {
    if (plain.has(topic)) return true;
    for (let i = 0; i < wild.length; i++) if (matchLevels(wild[i] as string, topic)) return true;
    return false;
  };
}

function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}
