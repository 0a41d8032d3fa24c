/**
 * defineProvider: the hook list announced to EMQX per package, and every configuration mistake
 * caught at definition time with a message that says what to fix.
 */
import { ExHookConfigError, isExHookConfigError } from "../src/errors.js";
import { HOOKS, type HookKey } from "../src/hooks.js";
import { defineProvider, type HookHandlers, type ProviderOptions } from "../src/provider.js";
import { allow, keep } from "../src/responses.js";

const noop = () => {};

/** A provider handling every hook, message hooks with topic filters. */
function everyHook(): HookHandlers {
  const h: Record<string, unknown> = {};
  for (const def of HOOKS) h[def.key] = noop;
  h["onClientAuthenticate"] = () => allow();
  h["onClientAuthorize"] = () => allow();
  h["onMessagePublish"] = { topics: ["a/#", "$share/g/b/+"], handler: () => keep() };
  h["onMessageDelivered"] = { topics: ["d/+"], handler: noop };
  h["onMessageDropped"] = { topics: ["#"], handler: noop };
  // onMessageAcked without topics: announced with an empty list (all topics).
  return h as HookHandlers;
}

const V2_NAMES = [
  "client.connect",
  "client.connack",
  "client.connected",
  "client.disconnected",
  "client.authenticate",
  "client.authorize",
  "client.subscribe",
  "client.unsubscribe",
  "session.created",
  "session.subscribed",
  "session.unsubscribed",
  "session.resumed",
  "session.discarded",
  "session.takenover",
  "session.terminated",
  "message.publish",
  "message.delivered",
  "message.dropped",
  "message.acked",
];
const V1_NAMES = V2_NAMES.map((n) =>
  n === "client.authorize" ? "client.check_acl" : n === "session.takenover" ? "session.takeovered" : n,
);

const TOPICS: Record<string, string[]> = {
  "message.publish": ["a/#", "$share/g/b/+"],
  "message.delivered": ["d/+"],
  "message.dropped": ["#"],
};

describe("hookSpecs", () => {
  const provider = defineProvider(everyHook());

  test.each([
    ["v1", V1_NAMES],
    ["v2", V2_NAMES],
    ["v3", V2_NAMES],
  ] as const)("%s: every hook, in service order, with that package's names; topics only on message hooks", (pkg, names) => {
    expect(provider.hookSpecs(pkg)).toEqual(names.map((name) => ({ name, topics: TOPICS[name] ?? [] })));
  });

  test("only the hooks given are announced, in service order whatever the key order", () => {
    const p = defineProvider({
      onMessagePublish: () => keep(),
      onSessionTakenover: noop,
      onClientAuthorize: () => allow(),
      onClientConnected: noop,
    });
    expect(p.hookSpecs("v1")).toEqual([
      { name: "client.connected", topics: [] },
      { name: "client.check_acl", topics: [] },
      { name: "session.takeovered", topics: [] },
      { name: "message.publish", topics: [] },
    ]);
    expect(p.hookSpecs("v2")).toEqual([
      { name: "client.connected", topics: [] },
      { name: "client.authorize", topics: [] },
      { name: "session.takenover", topics: [] },
      { name: "message.publish", topics: [] },
    ]);
    expect(p.hookSpecs("v3")).toEqual(p.hookSpecs("v2"));
    expect(p.hooks.map((h) => h.def.key)).toEqual(["onClientConnected", "onClientAuthorize", "onSessionTakenover", "onMessagePublish"]);
  });

  test("no handlers: nothing announced", () => {
    const p = defineProvider({});
    expect([p.hookSpecs("v1"), p.hookSpecs("v2"), p.hookSpecs("v3")]).toEqual([[], [], []]);
  });

  test("the same (frozen) answer every time", () => {
    expect(provider.hookSpecs("v3")).toBe(provider.hookSpecs("v3"));
    expect(Object.isFrozen(provider.hookSpecs("v3"))).toBe(true);
    expect(Object.isFrozen(provider)).toBe(true);
  });

  test("the topics announced are a copy: changing the caller's array later changes nothing", () => {
    const topics = ["x/#"];
    const p = defineProvider({ onMessagePublish: { topics, handler: () => keep() } });
    topics.push("y/#");
    expect(p.hookSpecs("v3")).toEqual([{ name: "message.publish", topics: ["x/#"] }]);
  });
});

describe("hook settings", () => {
  test("fallback defaults: authenticate deny, authorize deny, publish keep; notifications none", () => {
    const p = defineProvider({
      onClientAuthenticate: () => allow(),
      onClientAuthorize: () => allow(),
      onMessagePublish: () => keep(),
      onClientConnect: noop,
    });
    expect(Object.fromEntries(p.hooks.map((h) => [h.def.key, h.fallback]))).toEqual({
      onClientConnect: undefined,
      onClientAuthenticate: "deny",
      onClientAuthorize: "deny",
      onMessagePublish: "keep",
    });
  });

  test("provider-wide fallbacks and per-hook fallbacks, per-hook wins", () => {
    const p = defineProvider(
      {
        onClientAuthenticate: () => allow(),
        onClientAuthorize: { handler: () => allow(), fallback: "no-opinion" },
        onMessagePublish: () => keep(),
      },
      { fallback: { onClientAuthenticate: "no-opinion", onClientAuthorize: "allow", onMessagePublish: "drop" } },
    );
    expect(p.hooks.map((h) => [h.def.key, h.fallback])).toEqual([
      ["onClientAuthenticate", "no-opinion"],
      ["onClientAuthorize", "no-opinion"],
      ["onMessagePublish", "drop"],
    ]);
  });

  test("timeouts: provider default 5000, options.timeoutMs, per-hook timeoutMs", () => {
    expect(defineProvider({ onClientConnect: noop }).hooks[0]?.timeoutMs).toBe(5000);
    const p = defineProvider({ onClientConnect: noop, onClientConnack: { handler: noop, timeoutMs: 250 } }, { timeoutMs: 1200 });
    expect(p.hooks.map((h) => h.timeoutMs)).toEqual([1200, 250]);
  });

  test('the name defaults to "provider"', () => {
    expect(defineProvider({}).name).toBe("provider");
    expect(defineProvider({}, { name: "mine" }).name).toBe("mine");
  });

  test("a compiled matcher exists only when topics are given", () => {
    const p = defineProvider({ onMessagePublish: { topics: ["a/+"], handler: () => keep() }, onMessageAcked: noop });
    const [pub, acked] = p.hooks;
    expect(pub?.matcher?.("a/b")).toBe(true);
    expect(pub?.matcher?.("b/a")).toBe(false);
    expect(acked?.matcher).toBeUndefined();
  });
});

/** Runs `fn`, expects an ExHookConfigError, returns its message. */
function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(isExHookConfigError(err)).toBe(true);
    expect(err).toBeInstanceOf(ExHookConfigError);
    expect((err as Error).name).toBe("ExHookConfigError");
    return (err as Error).message;
  }
  throw new Error("expected an ExHookConfigError, nothing was thrown");
}

const define =
  (handlers: Record<string, unknown>, options: Record<string, unknown> = {}) =>
  () =>
    defineProvider(handlers as HookHandlers, options as ProviderOptions);

const KNOWN = HOOKS.map((h) => h.key).join(", ");

describe("configuration errors", () => {
  test.each([
    ["onClientAuthenticat", `unknown hook "onClientAuthenticat" (did you mean onClientAuthenticate?); known hooks: ${KNOWN}`],
    ["onclientauthorize", `unknown hook "onclientauthorize" (did you mean onClientAuthorize?); known hooks: ${KNOWN}`],
    ["OnMessagePublish", `unknown hook "OnMessagePublish" (did you mean onMessagePublish?); known hooks: ${KNOWN}`],
    [
      "onClientCheckAcl",
      `unknown hook "onClientCheckAcl" (use onClientAuthorize; it is served to EMQX 4.x as client.check_acl); known hooks: ${KNOWN}`,
    ],
    [
      "onSessionTakeovered",
      `unknown hook "onSessionTakeovered" (use onSessionTakenover; it is served to EMQX 4.x as session.takeovered); known hooks: ${KNOWN}`,
    ],
    ["onProviderLoaded", `unknown hook "onProviderLoaded"; known hooks: ${KNOWN}`],
    ["whatever", `unknown hook "whatever"; known hooks: ${KNOWN}`],
  ])("unknown hook key %j", (key, message) => {
    expect(configError(define({ [key]: noop }))).toBe(message);
  });

  test.each([
    [["ok/#", "a/#/b"], 1, "a/#/b", "# must be a whole level and the last one"],
    [["a+"], 0, "a+", "+ must be a whole level"],
    [["x", ""], 1, "", "a topic filter must not be empty"],
    [["$share/g"], 0, "$share/g", "a shared subscription must look like $share/<group>/<filter>"],
  ])("invalid topic filter %j names the hook and the index", (topics, index, filter, why) => {
    expect(configError(define({ onMessagePublish: { topics, handler: () => keep() } }))).toBe(
      `hook onMessagePublish: topics[${index}] ${JSON.stringify(filter)} is not a valid MQTT topic filter: ${why}`,
    );
  });

  test("a non-string topic filter", () => {
    expect(configError(define({ onMessageAcked: { topics: [7], handler: noop } }))).toBe(
      "hook onMessageAcked: topics[0] 7 is not a valid MQTT topic filter: a topic filter must be a string",
    );
  });

  test("topics that are not an array", () => {
    expect(configError(define({ onMessageDelivered: { topics: "a/#", handler: noop } }))).toBe(
      "hook onMessageDelivered: topics must be an array of MQTT topic filters",
    );
  });

  test.each(["onClientAuthenticate", "onClientAuthorize", "onClientSubscribe", "onSessionSubscribed"])(
    "topics on the non-message hook %s",
    (key) => {
      expect(configError(define({ [key]: { topics: ["a/#"], handler: noop } }))).toBe(
        `hook ${key}: topic filters are only honoured on message hooks (onMessagePublish, onMessageDelivered, onMessageDropped, onMessageAcked)`,
      );
    },
  );

  test.each([0, -1, "100", Number.NaN, Number.POSITIVE_INFINITY])("per-hook timeoutMs %p", (timeoutMs) => {
    const shown = typeof timeoutMs === "number" ? String(timeoutMs) : JSON.stringify(timeoutMs);
    expect(configError(define({ onClientConnect: { handler: noop, timeoutMs } }))).toBe(
      `hook onClientConnect: timeoutMs must be a positive number of milliseconds, got ${shown}`,
    );
  });

  test("provider timeoutMs and marginMs", () => {
    expect(configError(define({}, { timeoutMs: 0 }))).toBe("options.timeoutMs must be a positive number of milliseconds, got 0");
    expect(configError(define({}, { marginMs: -5 }))).toBe("options.marginMs must be a non-negative number of milliseconds, got -5");
    expect(defineProvider({}, { marginMs: 0 }).options.marginMs).toBe(0);
  });

  test.each([
    ["onClientAuthenticate", "keep", `"allow", "deny", "no-opinion"`],
    ["onClientAuthorize", "drop", `"allow", "deny", "no-opinion"`],
    ["onClientAuthorize", "ignore", `"allow", "deny", "no-opinion"`],
    ["onMessagePublish", "rewrite", `"keep", "drop"`],
    ["onMessagePublish", "deny", `"keep", "drop"`],
  ])("bad per-hook fallback on %s: %j", (key, fallback, allowed) => {
    expect(configError(define({ [key]: { handler: noop, fallback } }))).toBe(
      `hook ${key}: fallback must be one of ${allowed}, got ${JSON.stringify(fallback)}`,
    );
  });

  test("a fallback on a notification hook", () => {
    expect(configError(define({ onClientConnected: { handler: noop, fallback: "deny" } }))).toBe(
      "hook onClientConnected: fallback applies only to decision hooks",
    );
  });

  test("bad provider-wide fallbacks", () => {
    expect(configError(define({}, { fallback: { onMessagePublish: "deny" } }))).toBe(
      `options.fallback.onMessagePublish must be one of "keep", "drop", got "deny"`,
    );
    expect(configError(define({}, { fallback: { onClientConnect: "deny" } }))).toBe(
      "options.fallback.onClientConnect: fallbacks exist only for onClientAuthenticate, onClientAuthorize and onMessagePublish",
    );
  });

  test.each([42, "allow", true, null])("a handler that is not a function or a config: %p", (value) => {
    expect(configError(define({ onClientAuthenticate: value }))).toBe(
      "hook onClientAuthenticate: expected a function or { handler, topics?, timeoutMs?, fallback? }",
    );
  });

  test("a config without a function handler", () => {
    expect(configError(define({ onMessagePublish: { topics: ["a"] } }))).toBe("hook onMessagePublish: handler must be a function");
    expect(configError(define({ onMessagePublish: { handler: "keep" } }))).toBe("hook onMessagePublish: handler must be a function");
  });

  test.each(["topic", "timeout", "filters"])("an unknown setting %j", (setting) => {
    expect(configError(define({ onMessagePublish: { handler: () => keep(), [setting]: 1 } }))).toBe(
      `hook onMessagePublish: unknown setting ${JSON.stringify(setting)} (allowed: handler, topics, timeoutMs, fallback)`,
    );
  });

  test("onError must be fallback or grpc-error", () => {
    expect(configError(define({}, { onError: "throw" }))).toBe(`options.onError must be "fallback" or "grpc-error", got "throw"`);
  });

  test("handlers must be an object", () => {
    expect(configError(() => defineProvider(null as unknown as HookHandlers))).toBe(
      "defineProvider: handlers must be an object of hook handlers",
    );
  });

  test("every hook key is accepted", () => {
    const keys: HookKey[] = HOOKS.map((h) => h.key);
    expect(defineProvider(Object.fromEntries(keys.map((k) => [k, noop])) as HookHandlers).hooks.length).toBe(19);
  });
});

describe("isExHookConfigError", () => {
  test("recognises the brand, not just the name", () => {
    expect(isExHookConfigError(new ExHookConfigError("x"))).toBe(true);
    const lookalike = Object.assign(new Error("x"), { name: "ExHookConfigError" });
    expect(isExHookConfigError(lookalike)).toBe(false);
    expect(isExHookConfigError(new TypeError("x"))).toBe(false);
    expect(isExHookConfigError(null)).toBe(false);
    expect(isExHookConfigError("ExHookConfigError")).toBe(false);
  });
});
