/**
 * ACL matching benchmark: 10,000 rules, ns per check, for the indexed matcher of
 * src/usecases/acl.ts against a naive first-match scan (substitute placeholders, `matchTopic` each
 * rule). Run: `npx tsc -p bench/tsconfig.json && node dist/bench-build/bench/acl-bench.js [checks]`.
 *
 * Rule sets:
 * - "tenants": 500 tenants x 20 rules whose first level is the tenant name (`t<n>/...`), plus 10
 *   rules starting with a wildcard, last. The shape of real multi-tenant rule sets.
 * - "all-wildcard": 10,000 rules starting with `+` (the index cannot narrow anything: worst case).
 */
import { compileAcl, type AclRequest, type AclRule } from "../src/usecases/acl.js";
import { matchTopic } from "../src/topic.js";

const N_CHECKS = Number(process.argv[2] ?? 200_000);

function tenantRules(): AclRule[] {
  const rules: AclRule[] = [];
  for (let t = 0; t < 500; t++) {
    for (let k = 0; k < 20; k++) {
      const action = k % 3 === 0 ? "publish" : k % 3 === 1 ? "subscribe" : "all";
      const topic =
        k % 4 === 0
          ? `t${t}/users/\${username}/d${k}/#`
          : k % 4 === 1
            ? `t${t}/devices/\${clientid}/c${k}`
            : k % 4 === 2
              ? `t${t}/+/s${k}/#`
              : `t${t}/shared/x${k}`;
      rules.push({ permission: k % 5 === 0 ? "deny" : "allow", action, topic });
    }
  }
  for (let k = 0; k < 10; k++) rules.push({ permission: "allow", action: "subscribe", topic: `+/broadcast${k}` });
  return rules;
}

function wildcardRules(): AclRule[] {
  return Array.from({ length: 10_000 }, (_, i): AclRule => ({ permission: "allow", action: "all", topic: `+/dev${i}/\${username}/#` }));
}

function requests(kind: "tenants" | "all-wildcard"): AclRequest[] {
  const out: AclRequest[] = [];
  let seed = 42;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
  for (let i = 0; i < 4096; i++) {
    const username = `u${rnd(1000)}`;
    const clientid = `c${rnd(1000)}`;
    const k = rnd(20);
    const topic =
      kind === "tenants"
        ? rnd(10) === 0
          ? `nowhere/${k}` // no rule: full miss
          : k % 4 === 0
            ? `t${rnd(500)}/users/${username}/d${k}/temp`
            : k % 4 === 1
              ? `t${rnd(500)}/devices/${clientid}/c${k}`
              : k % 4 === 2
                ? `t${rnd(500)}/zone/s${k}/a/b`
                : `t${rnd(500)}/shared/x${k}`
        : `site/dev${rnd(10_000)}/${username}/temp`;
    out.push({ action: rnd(2) ? "publish" : "subscribe", topic, username, clientid });
  }
  return out;
}

/** The naive matcher: every rule in order, placeholders substituted, `matchTopic`. */
function naive(rules: readonly AclRule[]) {
  return (r: AclRequest): number | undefined => {
    for (let i = 0; i < rules.length; i++) {
      const rule = rules[i] as AclRule;
      const action = rule.action ?? "all";
      if (action !== "all" && action !== r.action) continue;
      const f = rule.topic.replaceAll("${username}", r.username).replaceAll("${clientid}", r.clientid);
      if (matchTopic(f, r.topic)) return i;
    }
    return undefined;
  };
}

function time(label: string, reqs: readonly AclRequest[], fn: (r: AclRequest) => unknown, checks: number): number {
  for (let i = 0; i < Math.min(checks, 20_000); i++) fn(reqs[i & 4095] as AclRequest); // warm-up
  const t0 = process.hrtime.bigint();
  let sink = 0;
  for (let i = 0; i < checks; i++) if (fn(reqs[i & 4095] as AclRequest) !== undefined) sink++;
  const ns = Number(process.hrtime.bigint() - t0) / checks;
  console.log(`${label.padEnd(40)} ${ns.toFixed(0).padStart(9)} ns/check  (${checks} checks, ${sink} matched)`);
  return ns;
}

for (const kind of ["tenants", "all-wildcard"] as const) {
  const rules = kind === "tenants" ? tenantRules() : wildcardRules();
  const reqs = requests(kind);
  const acl = compileAcl(rules, "deny");
  const slow = naive(rules);
  // Same answers first.
  for (const r of reqs) {
    if (acl.check(r).rule !== slow(r)) throw new Error(`mismatch on ${JSON.stringify(r)}`);
  }
  console.log(`${kind}: ${rules.length} rules`);
  time(`  indexed (compileAcl)`, reqs, (r) => acl.check(r).rule, N_CHECKS);
  time(`  naive first-match scan`, reqs, slow, Math.max(2_000, Math.floor(N_CHECKS / 100)));
}
