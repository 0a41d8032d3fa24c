/**
 * Glob patterns for client ids and usernames: `*` matches any run of characters (also none),
 * every other character matches itself. There is no escape and no `?`.
 *
 * Why not a RegExp: a pattern such as `*a*a*a*b` compiled to `^.*a.*a.*a.*b$` backtracks
 * exponentially on a long input without a `b` (61 s for a 1,000-character client id). Here a pattern
 * is split at its stars into literal segments, and matching is: the first segment is a prefix, the
 * last a suffix, and each middle segment is found with `indexOf` at the leftmost place after the
 * previous one. Taking the leftmost place is always right when `*` is the only wildcard (a later
 * place leaves less room for the segments that follow), so there is no backtracking: the work is
 * bounded by the input length times the pattern length, whatever the input.
 */

/** A compiled glob: whether a string matches. */
export type GlobMatcher = (input: string) => boolean;

const ANY: GlobMatcher = () => true;

/** Compiles one glob. `"*"` matches everything; a pattern without `*` matches only itself. */
export function compileGlob(pattern: string): GlobMatcher {
  if (typeof pattern !== "string") throw new TypeError(`a glob pattern must be a string, got ${typeof pattern}`);
  if (!pattern.includes("*")) return (input) => input === pattern;
  // Runs of stars are one star.
  const parts = pattern.split("*");
  const first = parts[0] as string;
  const last = parts[parts.length - 1] as string;
  const middle = parts.slice(1, -1).filter((s) => s !== "");
  if (first === "" && last === "" && middle.length === 0) return ANY;
  const minLength = first.length + last.length + middle.reduce((n, s) => n + s.length, 0);
  return (input) => {
    if (input.length < minLength || !input.startsWith(first) || !input.endsWith(last)) return false;
    let at = first.length;
    const end = input.length - last.length;
    for (const seg of middle) {
      const i = input.indexOf(seg, at);
      if (i < 0 || i + seg.length > end) return false;
      at = i + seg.length;
    }
    return true;
  };
}

/** Compiles a list of globs into one matcher: any of them matches. An empty list matches everything. */
export function compileGlobs(patterns: readonly string[]): GlobMatcher {
  if (patterns.length === 0) return ANY;
  const matchers = patterns.map(compileGlob);
  if (matchers.length === 1) return matchers[0] as GlobMatcher;
  return (input) => {
    for (const m of matchers) if (m(input)) return true;
    return false;
  };
}
