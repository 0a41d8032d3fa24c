/**
 * The deployment recipes, checked as far as this machine allows: the Kubernetes manifest's
 * container arguments and env parse with the CLI's own parser, its probes hit paths the operations
 * server answers, and the Dockerfile keeps the properties docs/deployment.md promises. The full
 * container build is replayed by scripts/check-docker.sh (`make docker-check`, about a minute).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseAllDocuments } from "yaml";
import { parseArgs } from "../src/cli.js";
import { checkReadiness, createOpsServer } from "../src/ops/http-probes.js";
import { httpGet } from "./helpers/ops.js";

const ROOT = path.join(__dirname, "..");

test("deploy/k8s.yaml: args and env are valid CLI input; probes and ports line up", async () => {
  const docs = parseAllDocuments(fs.readFileSync(path.join(ROOT, "deploy", "k8s.yaml"), "utf8")).map((d) => d.toJS());
  expect(docs.map((d) => d.kind)).toEqual(["Deployment", "Service", "PodDisruptionBudget"]);
  const c = docs[0].spec.template.spec.containers[0];
  const env = Object.fromEntries(c.env.map((e: { name: string; value: string }) => [e.name, e.value]));
  expect(c.args.slice(0, 2)).toEqual(["node", "dist/src/cli.js"]);
  const args = parseArgs(c.args.slice(2), env);
  expect(args).toMatchObject({
    command: "serve",
    module: "dist/examples/demo-provider.js",
    port: 9000,
    metricsPort: 9100,
    metricsHost: "0.0.0.0",
    readyWhen: "listening",
    drainTimeoutMs: 10000,
  });
  const ports = Object.fromEntries(c.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
  expect(ports).toEqual({ exhook: 9000, metrics: 9100 });
  expect([c.livenessProbe.httpGet, c.readinessProbe.httpGet]).toEqual([
    { path: "/healthz", port: "metrics" },
    { path: "/readyz", port: "metrics" },
  ]);
  // The drain must fit in the grace period, with the preStop pause.
  expect(docs[0].spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(
    (args.drainTimeoutMs ?? 0) + c.lifecycle.preStop.sleep.seconds * 1000,
  );
  const readiness = async () =>
    checkReadiness({
      serving: true,
      loadedNodes: [],
      readyWhen: args.readyWhen ?? "listening",
      readyNodes: args.readyNodes,
      providerNotReady: undefined,
    });
  const ops = createOpsServer({ port: 0, host: "127.0.0.1", source: { readiness } });
  const { port } = await ops.listen();
  try {
    expect((await httpGet(port, c.livenessProbe.httpGet.path)).status).toBe(200);
    expect((await httpGet(port, c.readinessProbe.httpGet.path)).status).toBe(200);
  } finally {
    await ops.close();
  }
});

test("Dockerfile: multi-stage node:20-slim, npm ci, build, prune, non-root, exec-form CMD", () => {
  const text = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
  const steps = text.split("\n").filter((l) => /^[A-Z]+ /.test(l));
  expect(steps.filter((l) => l.startsWith("FROM "))).toEqual(["FROM node:20-slim AS build", "FROM node:20-slim"]);
  expect(steps.filter((l) => l.startsWith("RUN npm") || l.startsWith("RUN npx"))).toEqual([
    "RUN npm ci --no-audit --no-fund",
    "RUN npx tsc -p tsconfig.build.json",
    "RUN npm prune --omit=dev --no-audit --no-fund",
  ]);
  expect(steps.filter((l) => l.startsWith("USER "))).toEqual(["USER node"]);
  const cmd = JSON.parse((steps.find((l) => l.startsWith("CMD ")) as string).slice(4)) as string[];
  const env = Object.fromEntries([...text.matchAll(/ ([A-Z_]+)=(\S+)/g)].map((m) => [m[1], m[2]]));
  expect(env).toMatchObject({ PORT: "9000", METRICS_PORT: "9100", METRICS_HOST: "0.0.0.0" });
  expect(parseArgs(cmd.slice(2), env)).toMatchObject({
    command: "serve",
    port: 9000,
    metricsPort: 9100,
    metricsHost: "0.0.0.0",
    drainTimeoutMs: 10000,
  });
  expect(fs.readFileSync(path.join(ROOT, ".dockerignore"), "utf8").split("\n")).toEqual(
    expect.arrayContaining(["node_modules", "dist", ".git"]),
  );
});
