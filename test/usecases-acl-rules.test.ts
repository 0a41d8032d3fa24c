/**
 * The EMQX rule features of the ACL engine: every placeholder and its safety rule, peer address
 * and CIDR conditions (IPv4, IPv6, IPv4-mapped), listener conditions by port, the strict reading of
 * what EMQX does not send, deny rules that refuse overlapping subscriptions (issue 13), linear
 * `*` patterns, and the authorizer's superuser and per-client (JWT `acl` claim) seams.
 */
import { compileAcl, globMatches, type AclRequest, type AclRule } from "../src/usecases/acl";
import { createAuthorizer, deriveClientAttrs } from "../src/usecases/authorizer";
import { parseConfig } from "../src/usecases/index";

const base: AclRequest = { action: "publish", topic: "", username: "alice", clientid: "alice-1" };
const q = (topic: string, extra: Partial<AclRequest> = {}): AclRequest => ({ ...base, topic, ...extra });
const decide = (rules: AclRule[], r: AclRequest, noMatch: "deny" | "no-opinion" = "deny") => {
  const res = compileAcl(rules, noMatch).check(r);
  return [res.decision.kind, res.rule];
};

describe("placeholders", () => {
  const cases: Array<[string, Partial<AclRequest>, string, string]> = [
    ["${username}", { username: "alice" }, "t/alice/x", "t/bob/x"],
    ["${clientid}", { clientid: "c-7" }, "t/c-7/x", "t/c-8/x"],
    ["${peerhost}", { peerhost: "192.0.2.7" }, "t/192.0.2.7/x", "t/192.0.2.8/x"],
    ["${peerhost}", { peerhost: "2001:db8::1" }, "t/2001:db8::1/x", "t/2001:db8::2/x"],
    ["${cert_common_name}", { cn: "dev-17" }, "t/dev-17/x", "t/dev-18/x"],
    ["${cert_subject}", { dn: "CN=dev-17,O=Acme" }, "t/CN=dev-17,O=Acme/x", "t/CN=dev-18,O=Acme/x"],
    ["${mountpoint}", { mountpoint: "tenant-a/" }, "t/tenant-a/x", "t/tenant-b/x"],
    ["${mountpoint}", { mountpoint: "tenant-a" }, "t/tenant-a/x", "t/tenant-a//x"],
    ["${client_attrs.tenant}", { clientAttrs: { tenant: "acme" } }, "t/acme/x", "t/umbrella/x"],
  ];
  test.each(cases)("%s is replaced by the client's own value (%j)", (ph, who, yes, no) => {
    const rules: AclRule[] = [{ permission: "allow", topic: `t/${ph}/x` }];
    expect(decide(rules, q(yes, who))).toEqual(["allow", 0]);
    expect(decide(rules, q(no, who))).toEqual(["deny", undefined]);
  });

  test("inside a level, with text around it", () => {
    const rules: AclRule[] = [{ permission: "allow", topic: "d/dev-${clientid}-${cert_common_name}/#" }];
    expect(decide(rules, q("d/dev-c1-cn1/a/b", { clientid: "c1", cn: "cn1" }))).toEqual(["allow", 0]);
    expect(decide(rules, q("d/dev-c1-cn2/a", { clientid: "c1", cn: "cn1" }))).toEqual(["deny", undefined]);
  });

  const unusable: Array<[string, Partial<AclRequest>]> = [
    ["${username}", { username: "" }],
    ["${username}", { username: "+" }],
    ["${clientid}", { clientid: "a/b" }],
    ["${clientid}", { clientid: "#" }],
    ["${peerhost}", { peerhost: "" }],
    ["${peerhost}", {}],
    ["${cert_common_name}", { cn: "" }],
    ["${cert_common_name}", { cn: "x/+" }],
    ["${cert_subject}", { dn: "CN=a/O=b" }],
    ["${mountpoint}", { mountpoint: "" }],
    ["${mountpoint}", { mountpoint: "/" }],
    ["${mountpoint}", { mountpoint: "a/b/" }],
    ["${client_attrs.tenant}", { clientAttrs: {} }],
    ["${client_attrs.tenant}", {}],
    ["${client_attrs.tenant}", { clientAttrs: { tenant: "+" } }],
  ];
  test.each(unusable)("%s with an empty or widening value (%j) never matches", (ph, who) => {
    const rules: AclRule[] = [
      { permission: "allow", topic: `t/${ph}/#` },
      { permission: "allow", topic: `${ph}/#` },
    ];
    for (const topic of ["t/+/x", "t/#", "t//x", "t/a/b/x", "t/x/+/y", "+/x", "a/b/x", "/x", "#"]) {
      for (const action of ["publish", "subscribe"] as const) {
        expect(decide(rules, q(topic, { ...who, action }))).toEqual(["deny", undefined]);
      }
    }
  });

  test("a value never turns the first level into a $ topic", () => {
    const rules: AclRule[] = [{ permission: "allow", topic: "${clientid}/#" }];
    expect(decide(rules, q("$SYS/brokers", { clientid: "$SYS", action: "subscribe" }))).toEqual(["deny", undefined]);
    expect(decide(rules, q("c1/x", { clientid: "c1" }))).toEqual(["allow", 0]);
  });

  test("unknown placeholders and attribute names are refused at compile time", () => {
    expect(() => compileAcl([{ permission: "allow", topic: "t/${zone}" }])).toThrow("rule #1: unknown placeholder ${zone}");
    expect(() => compileAcl([{ permission: "allow", topic: "t/${client_attrs.}" }])).toThrow("unknown placeholder ${client_attrs.}");
    expect(() => compileAcl([{ permission: "allow", topic: "t/${client_attrs.a b}" }])).toThrow("unknown placeholder");
    expect(compileAcl([{ permission: "allow", topic: "t/${client_attrs.a_b-1}" }]).usesClientAttrs).toBe(true);
    expect(compileAcl([{ permission: "allow", topic: "t/${username}" }]).usesClientAttrs).toBe(false);
  });
});

describe("peer address conditions", () => {
  const rules: AclRule[] = [
    { permission: "deny", topic: "#", peerhost: "203.0.113.0/24" },
    { permission: "allow", topic: "lan/#", peerhost: ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"] },
  ];
  test.each([
    ["10.1.2.3", "allow", 1],
    ["192.0.2.7", "allow", 1],
    ["192.0.2.8", "deny", undefined],
    ["2001:db8:1::5", "allow", 1],
    ["2001:db9::5", "deny", undefined],
    ["::1", "allow", 1],
    ["::ffff:10.9.9.9", "allow", 1],
    ["203.0.113.9", "deny", 0],
    ["11.0.0.1", "deny", undefined],
  ] as const)("client at %s: %s", (peerhost, kind, rule) => {
    expect(decide(rules, q("lan/x", { peerhost }))).toEqual([kind, rule]);
  });

  test("an unknown or malformed address: allow rules do not match, deny rules do", () => {
    for (const peerhost of [undefined, "", "not-an-ip", "10.0.0.300"]) {
      const r = peerhost === undefined ? q("lan/x") : q("lan/x", { peerhost });
      expect(decide(rules, r)).toEqual(["deny", 0]);
      expect(decide(rules.slice(1), r)).toEqual(["deny", undefined]);
    }
  });

  test("bad addresses and blocks are refused naming the rule", () => {
    expect(() => compileAcl([{ permission: "allow", topic: "#", peerhost: "10.0.0.0/33" }])).toThrow(
      'rule #1: peerhost: "10.0.0.0/33" is not an IP address or CIDR block',
    );
    expect(() => compileAcl([{ permission: "allow", topic: "#", peerhost: ["10.0.0.1", "lan"] }])).toThrow('"lan" is not an IP address');
    expect(() => parseConfig({ acl: { rules: [{ permission: "allow", topic: "#", peerhost: "::1/129" }] } })).toThrow(
      "acl.rules[0].peerhost",
    );
  });
});

describe("listener conditions", () => {
  const rules: AclRule[] = [
    { permission: "allow", topic: "secure/#", listener: ["ssl:default", "wss:default"] },
    { permission: "deny", topic: "#", listener: "ws:default" },
  ];
  test("the listener is recognised by its port (EMQX sends sockport, not the name)", () => {
    expect(decide(rules, q("secure/x", { sockport: 8883 }))).toEqual(["allow", 0]);
    expect(decide(rules, q("secure/x", { sockport: 8084 }))).toEqual(["allow", 0]);
    expect(decide(rules, q("secure/x", { sockport: 1883 }))).toEqual(["deny", undefined]);
    expect(decide(rules, q("other", { sockport: 8083 }))).toEqual(["deny", 1]);
    expect(decide(rules, q("other", { sockport: 1883 }))).toEqual(["deny", undefined]);
  });
  test("a listener id given directly wins over the port", () => {
    expect(decide(rules, q("secure/x", { listener: "ssl:default", sockport: 1883 }))).toEqual(["allow", 0]);
    expect(decide(rules, q("secure/x", { listener: "tcp:default", sockport: 8883 }))).toEqual(["deny", undefined]);
  });
  test("a port no listener is configured for is unknown: allow rules do not match, deny rules do", () => {
    expect(decide(rules, q("secure/x", { sockport: 18830 }))).toEqual(["deny", 1]);
    expect(decide(rules.slice(0, 1), q("secure/x", { sockport: 18830 }))).toEqual(["deny", undefined]);
    expect(decide(rules, q("other", { sockport: 18830 }))).toEqual(["deny", 1]);
    expect(decide(rules, q("other"))).toEqual(["deny", 1]);
  });
  test("configured listeners replace EMQX's defaults; unknown ids are refused", () => {
    const acl = compileAcl([{ permission: "allow", topic: "#", listener: "tcp:internal" }], "deny", undefined, {
      listeners: { "tcp:internal": [11883, 11884] },
    });
    expect(acl.check(q("x", { sockport: 11884 })).decision.kind).toBe("allow");
    expect(acl.check(q("x", { sockport: 1883 })).decision.kind).toBe("deny");
    expect(() => compileAcl([{ permission: "allow", topic: "#", listener: "tcp:internal" }])).toThrow(
      'rule #1: listener "tcp:internal" is not a known listener (known: tcp:default, ssl:default, ws:default, wss:default; add it with its port to acl.listeners)',
    );
    expect(() => parseConfig({ acl: { rules: [{ permission: "allow", topic: "#", listener: "tcp:x" }] } })).toThrow(
      'acl.rules[0].listener: listener "tcp:x" is not in acl.listeners',
    );
  });
});

describe("QoS and retain: never in EMQX's authorize request", () => {
  const rules: AclRule[] = [
    { permission: "deny", action: "publish", topic: "cmd/#", retain: true },
    { permission: "allow", action: "publish", topic: "cmd/#", qos: [1, 2] },
  ];
  test("known values are checked; unknown ones read strictly", () => {
    expect(decide(rules, q("cmd/a", { retain: false, qos: 1 }))).toEqual(["allow", 1]);
    expect(decide(rules, q("cmd/a", { retain: false, qos: 0 }))).toEqual(["deny", undefined]);
    expect(decide(rules, q("cmd/a", { retain: true, qos: 1 }))).toEqual(["deny", 0]);
    expect(decide(rules, q("cmd/a"))).toEqual(["deny", 0]);
    expect(decide(rules.slice(1), q("cmd/a"))).toEqual(["deny", undefined]);
  });
});

describe("issue 13: a deny rule protects its subtree against wider subscriptions", () => {
  const docsExample: AclRule[] = [
    { permission: "deny", action: "all", topic: "users/${username}/secret/#" },
    { permission: "allow", action: "all", topic: "users/${username}/#" },
  ];
  test("subscribing to users/alice/# (or +/#, #) no longer slips past the deny", () => {
    for (const topic of [
      "users/alice/#",
      "users/alice/+/#",
      "users/+/secret/x",
      "users/alice/+",
      "+/alice/secret/x",
      "#",
      "+/+/+/x",
      "$share/g/users/alice/#",
    ]) {
      expect([topic, ...decide(docsExample, q(topic, { action: "subscribe" }))]).toEqual([topic, "deny", 0]);
    }
  });
  test("what does not reach the subtree is still allowed", () => {
    for (const topic of ["users/alice/inbox/#", "users/alice/x/+", "users/alice", "users/alice/secretx/#", "users/alice/+/y/z/w"]) {
      const expected = topic === "users/alice/+/y/z/w" ? "deny" : "allow";
      expect([topic, decide(docsExample, q(topic, { action: "subscribe" }))[0]]).toEqual([topic, expected]);
    }
    // Publishing is unaffected (a publish topic has no wildcards).
    expect(decide(docsExample, q("users/alice/inbox"))).toEqual(["allow", 1]);
  });
  test("EMQX's reading (denyOverlap: false, or overlap: false on the rule) lets the wider subscription through, as documented", () => {
    const emqx = compileAcl(docsExample, "deny", undefined, { denyOverlap: false });
    expect(emqx.check(q("users/alice/#", { action: "subscribe" })).rule).toBe(1);
    const perRule = compileAcl([{ ...(docsExample[0] as AclRule), overlap: false }, docsExample[1] as AclRule]);
    expect(perRule.check(q("users/alice/#", { action: "subscribe" })).rule).toBe(1);
    const optIn = compileAcl([{ ...(docsExample[0] as AclRule), overlap: true }, docsExample[1] as AclRule], "deny", undefined, {
      denyOverlap: false,
    });
    expect(optIn.check(q("users/alice/#", { action: "subscribe" })).rule).toBe(0);
  });
  test("$ topics: wildcards at the first level never overlap them", () => {
    const rules: AclRule[] = [
      { permission: "deny", topic: "$SYS/#" },
      { permission: "allow", topic: "#" },
    ];
    expect(decide(rules, q("#", { action: "subscribe" }))).toEqual(["allow", 1]);
    expect(decide(rules, q("+/x", { action: "subscribe" }))).toEqual(["allow", 1]);
    expect(decide(rules, q("$SYS/+", { action: "subscribe" }))).toEqual(["deny", 0]);
    const hashDeny: AclRule[] = [
      { permission: "deny", topic: "+/secret" },
      { permission: "allow", topic: "$SYS/#" },
    ];
    expect(decide(hashDeny, q("$SYS/#", { action: "subscribe" }))).toEqual(["allow", 1]);
  });
  test("overlap on an allow rule is refused (it would widen it)", () => {
    expect(() => compileAcl([{ permission: "allow", topic: "a/#", overlap: true }])).toThrow("rule #1: overlap applies to deny rules only");
    expect(() => parseConfig({ acl: { rules: [{ permission: "allow", topic: "a", overlap: true }] } })).toThrow(
      "acl.rules[0].overlap: overlap applies to deny rules only",
    );
  });
  test("the index finds deny rules for subscriptions starting with a wildcard (same answers as one rule at a time)", () => {
    const rules: AclRule[] = [];
    for (let i = 0; i < 200; i++) {
      rules.push({
        permission: i % 4 === 0 ? "deny" : "allow",
        action: i % 3 === 0 ? "subscribe" : "all",
        topic: i % 5 === 0 ? `+/s${i % 7}/#` : `t${i % 9}/${i % 2 ? "${username}" : "+"}/s${i % 7}`,
      });
    }
    const indexed = compileAcl(rules, "no-opinion");
    const linear = (r: AclRequest) => {
      for (let i = 0; i < rules.length; i++) if (compileAcl([rules[i] as AclRule], "no-opinion").check(r).rule !== undefined) return i;
      return undefined;
    };
    const subs = ["#", "+/#", "+/alice/s3", "t1/#", "t2/+/s4", "+/+/s1", "t4/alice/+", "+/x/#"];
    for (const topic of subs)
      expect([topic, indexed.check(q(topic, { action: "subscribe" })).rule]).toEqual([topic, linear(q(topic, { action: "subscribe" }))]);
  });
  test("random rule sets and questions: the index (literal levels at any of the first four positions) answers as one rule at a time", () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
    const word = () => ["a", "b", "c", "${username}", "+", "x${clientid}"][rnd(6)] as string;
    for (let round = 0; round < 20; round++) {
      const rules: AclRule[] = [];
      for (let i = 0; i < 60; i++) {
        const len = 1 + rnd(6);
        const levels = Array.from({ length: len }, word);
        if (rnd(3) === 0) levels.push("#");
        const topic = rnd(15) === 0 ? `eq ${["a/+", "a/#", "b/c"][rnd(3)]}` : levels.join("/");
        const deny = rnd(3) === 0;
        const action = (["all", "publish", "subscribe"] as const)[rnd(3)] as "all" | "publish" | "subscribe";
        rules.push({ permission: deny ? "deny" : "allow", action, topic, ...(deny && rnd(4) === 0 ? { overlap: false } : {}) });
      }
      const indexed = compileAcl(rules, "no-opinion");
      const singles = rules.map((r) => compileAcl([r], "no-opinion"));
      for (let k = 0; k < 150; k++) {
        const len = 1 + rnd(7);
        const sub = rnd(2) === 0;
        const words: string[] = Array.from({ length: len }, () => ["a", "b", "c", "alice", "xc1", sub ? "+" : "d"][rnd(6)] as string);
        if (sub && rnd(3) === 0) words.push("#");
        const r = q(words.join("/"), { action: sub ? "subscribe" : "publish", username: "alice", clientid: "c1" });
        const expected = singles.findIndex((one) => one.check(r).rule !== undefined);
        expect([r.action, r.topic, indexed.check(r).rule]).toEqual([r.action, r.topic, expected < 0 ? undefined : expected]);
      }
    }
  });
});

describe("username / clientid patterns are linear (issue 13: no regular expression from globs)", () => {
  test("semantics", () => {
    const g = (p: string) => (p === "*" ? undefined : p.includes("*") ? p.split("*") : p);
    expect(globMatches(g("dev-*"), "dev-1")).toBe(true);
    expect(globMatches(g("dev-*"), "dev")).toBe(false);
    expect(globMatches(g("*-prod"), "a-prod")).toBe(true);
    expect(globMatches(g("a*b*c"), "abc")).toBe(true);
    expect(globMatches(g("a*b*c"), "ac")).toBe(false);
    expect(globMatches(g("a*a"), "a")).toBe(false);
    expect(globMatches(g("*-sensor-*-prod"), "x-sensor-y-prod")).toBe(true);
    expect(globMatches(g("*-sensor-*-prod"), "x-sensor-prod")).toBe(false);
    expect(globMatches(g("**"), "")).toBe(true);
    expect(globMatches(g("a.b"), "axb")).toBe(false);
  });
  test("a hostile pattern against a 65,535-character client id answers at once", () => {
    const acl = compileAcl([
      { permission: "allow", topic: "#", clientid: "*a*a*a*a*a*a*a*a*b" },
      { permission: "allow", topic: "#", username: "*-sensor-*-prod" },
    ]);
    const id = "a".repeat(65_535);
    const t0 = Date.now();
    for (let i = 0; i < 20; i++) expect(acl.check(q("x", { clientid: id, username: id })).decision.kind).toBe("deny");
    // A backtracking regex takes seconds per check here; the linear matcher well under a millisecond.
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});

describe("authorizer: superuser and per-client rules (JWT acl claim) seams", () => {
  const global = compileAcl(
    [
      { permission: "allow", topic: "public/#" },
      { permission: "deny", topic: "private/#" },
    ],
    "deny",
  );
  const compile = (rules: readonly AclRule[]) => compileAcl(rules, "no-opinion");

  test("a superuser is allowed without rules; others go through the rules", () => {
    const a = createAuthorizer({ acl: () => global, compile });
    expect(a.check(q("private/x"), { superuser: true })).toEqual({ decision: { kind: "allow" }, source: "superuser", rule: undefined });
    expect(a.check(q("private/x"))).toEqual({ decision: { kind: "deny" }, source: "rules", rule: 1 });
    expect(a.stats()).toMatchObject({ superuser: 1, rules: 1 });
  });

  test("per-client rules first, first match wins; no match falls through to the global rules; expired denies everything", () => {
    let t = 1000;
    const a = createAuthorizer({ acl: () => global, compile, now: () => t });
    const own = {
      rules: [
        { permission: "allow", topic: "private/${username}/#" },
        { permission: "deny", topic: "public/secret" },
      ] as AclRule[],
      expiresAt: 2000,
    };
    expect(a.check(q("private/alice/x"), { clientRules: own })).toMatchObject({
      decision: { kind: "allow" },
      source: "client-rules",
      rule: 0,
    });
    expect(a.check(q("public/secret"), { clientRules: own })).toMatchObject({
      decision: { kind: "deny" },
      source: "client-rules",
      rule: 1,
    });
    expect(a.check(q("public/x"), { clientRules: own })).toMatchObject({ decision: { kind: "allow" }, source: "rules", rule: 0 });
    expect(a.check(q("private/bob/x"), { clientRules: own })).toMatchObject({ decision: { kind: "deny" }, source: "rules", rule: 1 });
    t = 2000;
    expect(a.check(q("public/x"), { clientRules: own })).toMatchObject({ decision: { kind: "deny" }, source: "client-rules-expired" });
  });

  test("invalid per-client rules deny that client (fail closed) and are compiled once", () => {
    let compiles = 0;
    const a = createAuthorizer({ acl: () => global, compile: (r) => (compiles++, compile(r)) });
    const bad = { rules: [{ permission: "allow", topic: "a/#/b" }] as AclRule[] };
    expect(a.check(q("public/x"), { clientRules: bad })).toMatchObject({ decision: { kind: "deny" }, source: "client-rules-invalid" });
    expect(a.check(q("public/y"), { clientRules: bad })).toMatchObject({ source: "client-rules-invalid" });
    expect(compiles).toBe(1);
  });

  test("the hook handler asks the seams with the request's client info", async () => {
    const seen: string[] = [];
    const a = createAuthorizer({
      acl: () => global,
      compile,
      isSuperuser: (ci) => (seen.push(`su:${ci.clientid}`), ci.username === "root"),
      clientRules: (ci) => (
        seen.push(`rules:${ci.clientid}`), ci.clientid === "jwt-1" ? { rules: [{ permission: "allow", topic: "jwt/#" }] } : undefined
      ),
    });
    const req = (username: string, clientid: string, topic: string) =>
      ({ clientinfo: { username, clientid } as never, type: 0, topic, result: true }) as never;
    expect(await a.handler(req("root", "r-1", "private/x"), {} as never)).toEqual({ kind: "allow" });
    expect(await a.handler(req("bob", "jwt-1", "jwt/x"), {} as never)).toEqual({ kind: "allow" });
    expect(await a.handler(req("bob", "b-1", "jwt/x"), {} as never)).toEqual({ kind: "deny" });
    expect(seen).toEqual(["su:r-1", "su:jwt-1", "rules:jwt-1", "su:b-1", "rules:b-1"]);
  });

  test("client attributes: derived like mqtt.client_attrs_init, overridden by the seam's", () => {
    const rules = [
      { name: "tenant", from: "clientid", split: "-", nth: 1 },
      { name: "cn", from: "cert_common_name" },
    ] as const;
    expect(deriveClientAttrs(rules, q("x", { clientid: "acme-sensor-7", cn: "dev7" }))).toEqual({ tenant: "acme", cn: "dev7" });
    expect(deriveClientAttrs(rules, q("x", { clientid: "", cn: "" }))).toEqual({});
    const acl = compileAcl([{ permission: "allow", topic: "tenants/${client_attrs.tenant}/#" }]);
    const a = createAuthorizer({
      acl: () => acl,
      compile,
      attrRules: rules,
      clientAttrs: (ci) => (ci.clientid === "x-1" ? { tenant: "override" } : undefined),
    });
    const req = (clientid: string, topic: string) =>
      ({ clientinfo: { clientid, username: "u" } as never, type: 0, topic, result: true }) as never;
    expect(a.handler(req("acme-sensor-7", "tenants/acme/t"), {} as never)).toEqual({ kind: "allow" });
    expect(a.handler(req("acme-sensor-7", "tenants/umbrella/t"), {} as never)).toEqual({ kind: "deny" });
    expect(a.handler(req("x-1", "tenants/override/t"), {} as never)).toEqual({ kind: "allow" });
    expect(a.handler(req("x-1", "tenants/x/t"), {} as never)).toEqual({ kind: "deny" });
  });
});
