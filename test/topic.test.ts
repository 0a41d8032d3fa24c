/**
 * MQTT topic filters: matching, validation and compiled matchers, table-driven, following the
 * MQTT 5 rules EMQX applies (section 4.7 of the MQTT 5 spec).
 */
import { compileTopicFilters, isValidTopicFilter, matchTopic, stripShare, topicFilterError, topicNameError } from "../src/topic.js";

describe("matchTopic(filter, topic)", () => {
  const cases: ReadonlyArray<readonly [filter: string, topic: string, expected: boolean]> = [
    // Exact match
    ["a/b", "a/b", true],
    ["a/b", "a/c", false],
    ["a/b", "a/b/c", false],
    ["a/b/c", "a/b", false],
    ["a", "ab", false],
    ["ab", "a", false],
    // + matches exactly one level
    ["+", "a", true],
    ["+", "a/b", false],
    ["a/+", "a/b", true],
    ["a/+", "a", false],
    ["a/+", "a/b/c", false],
    ["a/+/c", "a/b/c", true],
    ["a/+/c", "a/b/d", false],
    ["+/+", "a/b", true],
    ["+/b", "a/b", true],
    ["+/b", "a/c", false],
    // # matches the rest, including the parent level ("a/#" matches "a")
    ["#", "a", true],
    ["#", "a/b/c", true],
    ["a/#", "a", true],
    ["a/#", "a/b", true],
    ["a/#", "a/b/c", true],
    ["a/#", "ab", false],
    ["a/#", "b/a", false],
    ["a/b/#", "a/b", true],
    ["a/b/#", "a", false],
    ["a/+/#", "a/b", true],
    ["a/+/#", "a/b/c/d", true],
    ["a/+/#", "a", false],
    // Topics starting with $: wildcards at the first level never match them
    ["#", "$SYS", false],
    ["#", "$SYS/broker/uptime", false],
    ["+", "$SYS", false],
    ["+/broker/uptime", "$SYS/broker/uptime", false],
    ["+/#", "$SYS/x", false],
    ["$SYS/#", "$SYS/broker/uptime", true],
    ["$SYS/#", "$SYS", true],
    ["$SYS/+/uptime", "$SYS/broker/uptime", true],
    ["$SYS/broker/uptime", "$SYS/broker/uptime", true],
    ["a/#", "a/$x", true],
    ["a/+", "a/$x", true],
    // Shared subscriptions: the prefix is ignored for matching
    ["$share/g/a/+", "a/b", true],
    ["$share/g/a/+", "a/b/c", false],
    ["$share/g/#", "x/y", true],
    ["$share/g/a/b", "a/b", true],
    ["$share/g/a/b", "$share/g/a/b", false],
    ["$queue/a/#", "a/b", true],
    ["$queue/a/#", "b", false],
    ["$queue/a", "a", true],
    // Empty levels are levels
    ["a//b", "a//b", true],
    ["a//b", "a/b", false],
    ["a/+/b", "a//b", true],
    ["+/a", "/a", true],
    ["/a", "/a", true],
    ["/+", "/a", true],
    ["a/+", "a/", true],
    ["a/#", "a/", true],
    ["#", "/", true],
    ["+/+", "/", true],
    ["+", "/", false],
    ["/", "/", true],
  ];

  test.each(cases)("%j vs %j → %j", (filter, topic, expected) => {
    expect(matchTopic(filter, topic)).toBe(expected);
  });

  test.each(cases)("compiled [%j] agrees on %j → %j", (filter, topic, expected) => {
    expect(compileTopicFilters([filter])(topic)).toBe(expected);
  });
});

describe("topicFilterError / isValidTopicFilter", () => {
  const valid = [
    "a",
    "a/b",
    "#",
    "+",
    "a/+",
    "+/a",
    "a/+/b",
    "a/#",
    "+/+/#",
    "/",
    "a//b",
    "/a",
    "$SYS/#",
    "$share/g/a/#",
    "$share/g/+",
    "$share/group-1/a/b",
    "$queue/a/b",
    "$queue/#",
    "héllo/wörld",
  ];
  test.each(valid)("%j is valid", (filter) => {
    expect(topicFilterError(filter)).toBeUndefined();
    expect(isValidTopicFilter(filter)).toBe(true);
  });

  const invalid: ReadonlyArray<readonly [string, string]> = [
    ["", "a topic filter must not be empty"],
    ["a/#/b", "# must be a whole level and the last one"],
    ["#/a", "# must be a whole level and the last one"],
    ["#a", "# must be a whole level and the last one"],
    ["a#", "# must be a whole level and the last one"],
    ["a/b#", "# must be a whole level and the last one"],
    ["a+", "+ must be a whole level"],
    ["+a", "+ must be a whole level"],
    ["a/+b/c", "+ must be a whole level"],
    ["++", "+ must be a whole level"],
    ["$share/g", "a shared subscription must look like $share/<group>/<filter>"],
    ["$share//t", "a shared subscription must look like $share/<group>/<filter>"],
    ["$share/", "a shared subscription must look like $share/<group>/<filter>"],
    ["$share/g+/t", "a share group name must not contain + or #"],
    ["$share/#/t", "a share group name must not contain + or #"],
    ["$share/g/", "a shared subscription needs a filter after the group"],
    ["$share/g/a/#/b", "# must be a whole level and the last one"],
    ["$queue/", "$queue/ needs a filter after it"],
    ["a\u0000b", "a topic filter must not contain NUL"],
    ["a".repeat(65536), "a topic filter must not be longer than 65535 bytes"],
    // 3 bytes each in UTF-8: 21846 * 3 = 65538 bytes although only 21846 UTF-16 units
    ["€".repeat(21846), "a topic filter must not be longer than 65535 bytes"],
  ];
  test.each(invalid)("%j is invalid: %s", (filter, why) => {
    expect(topicFilterError(filter)).toBe(why);
    expect(isValidTopicFilter(filter)).toBe(false);
  });

  test("the byte limit counts UTF-8 bytes: 65535 bytes pass", () => {
    expect(topicFilterError("a".repeat(65535))).toBeUndefined();
    expect(topicFilterError("€".repeat(21845))).toBeUndefined(); // 65535 bytes
  });

  test("a non-string is rejected, not thrown on", () => {
    expect(topicFilterError(42 as unknown as string)).toBe("a topic filter must be a string");
  });
});

describe("topicNameError", () => {
  test.each(["a", "a/b", "/", "a//b", "$SYS/broker", "$share/g/t", "héllo"])("%j is a valid topic name", (topic) => {
    expect(topicNameError(topic)).toBeUndefined();
  });
  test.each([
    ["", "a topic must not be empty"],
    ["a/+", "a topic name must not contain + or #"],
    ["a/#", "a topic name must not contain + or #"],
    ["#", "a topic name must not contain + or #"],
    ["a+b", "a topic name must not contain + or #"],
    ["a\u0000", "a topic must not contain NUL"],
    ["x".repeat(65536), "a topic must not be longer than 65535 bytes"],
  ])("%j is not: %s", (topic, why) => {
    expect(topicNameError(topic)).toBe(why);
  });
});

describe("stripShare", () => {
  test.each([
    ["$share/g/a/b", "a/b"],
    ["$share/g/#", "#"],
    ["$queue/a/b", "a/b"],
    ["a/b", "a/b"],
    ["$SYS/x", "$SYS/x"],
  ])("%j → %j", (filter, out) => {
    expect(stripShare(filter)).toBe(out);
  });
});

describe("compileTopicFilters", () => {
  test("plain and wildcard filters together", () => {
    const m = compileTopicFilters(["a/b", "c/+", "d/#", "$share/g/e/f"]);
    const topics = ["a/b", "a/c", "c/x", "c/x/y", "d", "d/1/2", "e/f", "e/g", "$SYS/a", "x"];
    expect(topics.filter((t) => m(t))).toEqual(["a/b", "c/x", "d", "d/1/2", "e/f"]);
  });

  test("only plain filters: exact matches only", () => {
    const m = compileTopicFilters(["a/b", "$queue/q"]);
    expect(["a/b", "a/b/c", "a", "q", "$queue/q"].map((t) => m(t))).toEqual([true, false, false, true, false]);
  });

  test("an empty list matches every topic (no filters = all topics)", () => {
    const m = compileTopicFilters([]);
    expect(["a", "a/b/c", "$SYS/x", "/"].map((t) => m(t))).toEqual([true, true, true, true]);
  });

  test("# does not match $-topics even in a compiled set", () => {
    const m = compileTopicFilters(["#"]);
    expect([m("a/b"), m("$SYS/x")]).toEqual([true, false]);
  });

  test.each(["a/#/b", "a+", "", "$share/g"])("throws on the invalid filter %j, naming it", (bad) => {
    expect(() => compileTopicFilters(["ok/#", bad])).toThrow(`invalid topic filter ${JSON.stringify(bad)}: `);
  });
});
