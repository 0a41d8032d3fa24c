/**
 * Same-process A/B of two builds of the ACL engine on bench/acl-bench.ts's rule sets: this tree's
 * `compileAcl` against a baseline's (e.g. main), alternating rounds, best ns/check of 7 each, after
 * checking both give the same answers (with denyOverlap off, the baseline's reading).
 *
 *   git archive main | tar -x -C /tmp/base && ln -s $PWD/node_modules /tmp/base/ && (cd /tmp/base && npx tsc -p bench/tsconfig.json)
 *   npx tsc -p bench/tsconfig.json && node dist/bench-build/bench/acl-ab.js /tmp/base/dist/bench-build/src/usecases/acl.js
 */
import { compileAcl, type AclRequest, type AclRule } from "../src/usecases/acl.js";

type Compile = (rules: readonly AclRule[], noMatch: "deny") => { check(r: AclRequest): { rule: number | undefined } };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const baseline = (require(process.argv[2] ?? "") as { compileAcl: Compile }).compileAcl;

function tenantRules(): AclRule[] {
  const r: AclRule[] = [];
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
      r.push({ permission: k % 5 === 0 ? "deny" : "allow", action, topic });
    }
  }
  for (let k = 0; k < 10; k++) r.push({ permission: "allow", action: "subscribe", topic: `+/broadcast${k}` });
  return r;
}

const wildcardRules = (): AclRule[] =>
  Array.from({ length: 10_000 }, (_, i): AclRule => ({ permission: "allow", action: "all", topic: `+/dev${i}/\${username}/#` }));

function requests(kind: string): AclRequest[] {
  const out: AclRequest[] = [];
  let seed = 42;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
  for (let i = 0; i < 4096; i++) {
    const username = `u${rnd(1000)}`;
    const clientid = `c${rnd(1000)}`;
    const k = rnd(20);
    const topic =
      kind !== "tenants"
        ? `site/dev${rnd(10_000)}/${username}/temp`
        : rnd(10) === 0
          ? `nowhere/${k}`
          : k % 4 === 0
            ? `t${rnd(500)}/users/${username}/d${k}/temp`
            : k % 4 === 1
              ? `t${rnd(500)}/devices/${clientid}/c${k}`
              : k % 4 === 2
                ? `t${rnd(500)}/zone/s${k}/a/b`
                : `t${rnd(500)}/shared/x${k}`;
    out.push({ action: rnd(2) ? "publish" : "subscribe", topic, username, clientid });
  }
  return out;
}

function time(acl: { check(r: AclRequest): unknown }, rs: readonly AclRequest[], n: number): number {
  for (let i = 0; i < 5000; i++) acl.check(rs[i & 4095] as AclRequest);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) acl.check(rs[i & 4095] as AclRequest);
  return Number(process.hrtime.bigint() - t0) / n;
}

for (const [kind, rules, n] of [
  ["tenants", tenantRules(), 200_000],
  ["all-wildcard", wildcardRules(), 4000],
] as const) {
  const rs = requests(kind);
  const a = baseline(rules, "deny");
  const b = compileAcl(rules, "deny", undefined, { denyOverlap: false });
  for (const r of rs) if (a.check(r).rule !== b.check(r).rule) throw new Error(`different answers for ${JSON.stringify(r)}`);
  let ma = Infinity;
  let mb = Infinity;
  for (let round = 0; round < 7; round++) {
    ma = Math.min(ma, time(a, rs, n));
    mb = Math.min(mb, time(b, rs, n));
  }
  console.log(
    `${kind} (${rules.length} rules): baseline ${ma.toFixed(0)} ns/check, this tree ${mb.toFixed(0)} ns/check (x${(ma / mb).toFixed(2)})`,
  );
}
