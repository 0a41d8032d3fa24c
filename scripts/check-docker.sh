#!/usr/bin/env bash
# Checks the container recipe on a machine without a Docker engine: parses ./Dockerfile and
# replays it. Each stage gets a directory standing for its filesystem root; COPY honours
# .dockerignore and --from=<stage>; RUN steps run in the stage's WORKDIR with its ENV (apt-get
# steps are skipped: the host's packages stand in for them); then the final stage's CMD is started
# the way the image would start it (its ENV, its WORKDIR, as an unprivileged user), and the script
# checks that it answers OnProviderLoaded over h2c, serves /healthz and /metrics, and exits 0 after
# a drain on SIGTERM.
#
# Usage: scripts/check-docker.sh            (or `make docker-check`; about a minute, uses npm's cache)
#        KEEP=1 scripts/check-docker.sh     keeps the temp directory for inspection
set -euo pipefail
cd "$(dirname "$0")/.."
exec node - "$PWD" <<'NODE'
const { spawn, spawnSync, execFileSync } = require("node:child_process");
const fs = require("node:fs");
const http = require("node:http");
const http2 = require("node:http2");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

const context = process.argv[2];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "docker-check-"));
fs.chmodSync(tmp, 0o755);
const log = (m) => process.stdout.write(`check-docker: ${m}\n`);
const fail = (m) => { log(`FAIL: ${m}`); cleanup(); process.exit(1); };
function cleanup() { if (!process.env.KEEP) fs.rmSync(tmp, { recursive: true, force: true }); else log(`kept ${tmp}`); }

// --- parse the Dockerfile (continuation lines joined, comments dropped) ---
const lines = fs.readFileSync(path.join(context, "Dockerfile"), "utf8").replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
const ignore = fs.existsSync(path.join(context, ".dockerignore"))
  ? fs.readFileSync(path.join(context, ".dockerignore"), "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"))
  : [];
const ignored = (rel) => ignore.some((p) => rel === p || rel.startsWith(p + "/") || (p.startsWith("*") && rel.endsWith(p.slice(1))));

function copyTree(src, dst, relBase, useIgnore) {
  const st = fs.statSync(src);
  if (st.isDirectory()) {
    fs.mkdirSync(dst, { recursive: true });
    for (const e of fs.readdirSync(src)) {
      const rel = relBase ? `${relBase}/${e}` : e;
      if (useIgnore && ignored(rel)) continue;
      copyTree(path.join(src, e), path.join(dst, e), rel, useIgnore);
    }
  } else if (st.isFile()) {
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    fs.copyFileSync(src, dst);
  }
}

const stages = [];
let stage;
for (const line of lines) {
  const [instr, ...restParts] = line.split(/\s+/);
  const rest = line.slice(instr.length).trim();
  switch (instr.toUpperCase()) {
    case "FROM": {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest);
      const name = m[2] ?? String(stages.length);
      stage = { name, image: m[1], root: path.join(tmp, `stage-${name}`), workdir: "/", env: {}, user: "root", cmd: undefined, expose: [] };
      fs.mkdirSync(stage.root, { recursive: true });
      stages.push(stage);
      log(`FROM ${m[1]} (stage ${name}; the image's node is stood in for by ${process.version})`);
      break;
    }
    case "WORKDIR":
      stage.workdir = path.posix.resolve(stage.workdir, rest);
      fs.mkdirSync(path.join(stage.root, stage.workdir), { recursive: true });
      break;
    case "ENV": {
      for (const m of rest.matchAll(/(\w+)=("[^"]*"|\S+)/g)) stage.env[m[1]] = m[2].replace(/^"|"$/g, "");
      break;
    }
    case "COPY": {
      const args = restParts.filter((a) => !a.startsWith("--"));
      const from = restParts.find((a) => a.startsWith("--from="))?.slice(7);
      const dst = args.pop();
      const dstAbs = path.join(stage.root, path.posix.resolve(stage.workdir, dst));
      for (const src of args) {
        const srcStage = from ? stages.find((s) => s.name === from) : undefined;
        if (from && !srcStage) fail(`COPY --from=${from}: no such stage`);
        const srcAbs = srcStage ? path.join(srcStage.root, path.posix.resolve("/", src)) : path.join(context, src);
        if (!fs.existsSync(srcAbs)) fail(`COPY ${src}: not found`);
        const target = dst.endsWith("/") || args.length > 1 ? path.join(dstAbs, path.basename(src)) : dstAbs;
        copyTree(srcAbs, target, srcStage ? "" : path.relative(context, srcAbs), !srcStage);
      }
      log(`COPY ${rest}`);
      break;
    }
    case "RUN": {
      if (/apt-get/.test(rest)) { log(`RUN ${rest}\n    (skipped: system packages come from this host)`); break; }
      log(`RUN ${rest}`);
      const t0 = Date.now();
      const r = spawnSync("sh", ["-c", rest], { cwd: path.join(stage.root, stage.workdir), env: { ...process.env, ...stage.env }, stdio: ["ignore", "inherit", "inherit"] });
      if (r.status !== 0) fail(`RUN ${rest} exited ${r.status}`);
      log(`    ok in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      break;
    }
    case "USER": stage.user = rest; break;
    case "EXPOSE": stage.expose.push(...restParts.map(Number)); break;
    case "CMD": stage.cmd = JSON.parse(rest); break;
    default: log(`(ignored) ${line}`);
  }
}

const final = stages[stages.length - 1];
if (!final.cmd) fail("the final stage has no CMD (exec form)");
if (final.user === "root" || final.user === "0") fail("the final stage runs as root");
if (final.image !== "node:20-slim") fail(`the final stage is ${final.image}, expected node:20-slim`);
for (const devOnly of ["typescript", "jest", "@bufbuild/buf"]) {
  if (fs.existsSync(path.join(final.root, final.workdir, "node_modules", devOnly))) fail(`dev dependency ${devOnly} is in the final image`);
}
const du = execFileSync("du", ["-sm", path.join(final.root, final.workdir)]).toString().split("\t")[0];
log(`final stage: ${du} MB in ${final.workdir} (plus the node:20-slim base), user ${final.user}, exposes ${final.expose.join(", ")}`);

// --- run the CMD like the image would ---
const freePort = () => new Promise((r) => { const s = net.createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => r(p)); }); });
(async () => {
  const port = await freePort();
  const metricsPort = await freePort();
  // The image's "node" user is uid 1000; nobody stands in for it here.
  const uid = spawnSync("id", ["-u", final.user]).status === 0 ? Number(execFileSync("id", ["-u", final.user]).toString()) : 65534;
  const env = { PATH: process.env.PATH, HOME: "/tmp", ...final.env, PORT: String(port), METRICS_PORT: String(metricsPort), HOST: "127.0.0.1" };
  const cwd = path.join(final.root, final.workdir);
  const argv = final.cmd.map((a) => (a === "node" ? process.execPath : a));
  log(`CMD ${JSON.stringify(final.cmd)} as uid ${uid} with PORT=${port} METRICS_PORT=${metricsPort}`);
  const child = spawn(argv[0], argv.slice(1), { cwd, env, uid: process.getuid() === 0 ? uid : undefined, gid: process.getuid() === 0 ? uid : undefined, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (c) => (out += c));
  child.stderr.on("data", (c) => (out += c));
  const exited = new Promise((r) => child.on("exit", (code, signal) => r({ code, signal })));
  const deadline = Date.now() + 20000;
  while (!out.includes("listening on")) {
    if (Date.now() > deadline || child.exitCode !== null) fail(`the server did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  // OnProviderLoaded as EMQX 5.9 sends it: ProviderLoadedRequest{broker{version "5.9.0"}, meta{node "emqx@check"}}.
  const enc = (field, bytes) => Buffer.concat([Buffer.from([(field << 3) | 2, bytes.length]), bytes]);
  const body = Buffer.concat([enc(1, enc(1, Buffer.from("5.9.0"))), enc(2, enc(1, Buffer.from("emqx@check")))]);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  const reply = await new Promise((resolve, reject) => {
    const req = session.request({ ":method": "POST", ":path": "/emqx.exhook.v3.HookProvider/OnProviderLoaded", "content-type": "application/grpc+proto", te: "trailers", "grpc-timeout": "5S" });
    const chunks = [];
    let status;
    req.on("response", (h) => (status = h["grpc-status"]));
    req.on("trailers", (t) => (status = t["grpc-status"]));
    req.on("data", (c) => chunks.push(c));
    req.on("error", reject);
    req.on("end", () => resolve({ status, data: Buffer.concat(chunks) }));
    const frame = Buffer.alloc(5 + body.length);
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, 5);
    req.end(frame);
  }).catch((e) => fail(`OnProviderLoaded failed: ${e.message}`));
  session.close();
  if (reply.status !== "0" || reply.data.length < 5) fail(`OnProviderLoaded answered grpc-status ${reply.status} with ${reply.data.length} bytes`);
  const names = [...reply.data.subarray(5).toString("latin1").matchAll(/(client|message|session)\.[a-z_]+/g)].map((m) => m[0]);
  if (names.length === 0) fail("LoadedResponse lists no hooks");
  log(`OnProviderLoaded answered grpc-status 0, hooks: ${names.join(", ")}`);
  const get = (p) => new Promise((r, j) => http.get({ host: "127.0.0.1", port: metricsPort, path: p, agent: false }, (res) => { let b = ""; res.on("data", (c) => (b += c)); res.on("end", () => r({ status: res.statusCode, body: b })); }).on("error", j));
  const healthz = await get("/healthz");
  const readyz = await get("/readyz");
  const metrics = await get("/metrics");
  if (healthz.status !== 200) fail(`/healthz answered ${healthz.status}`);
  if (readyz.status !== 200) fail(`/readyz answered ${readyz.status} after OnProviderLoaded: ${readyz.body}`);
  if (!/^exhook_loaded_brokers 1$/m.test(metrics.body)) fail("/metrics does not show exhook_loaded_brokers 1");
  log(`/healthz 200, /readyz 200 (${readyz.body.trim()}), /metrics has exhook_loaded_brokers 1`);
  child.kill("SIGTERM");
  const { code, signal } = await exited;
  if (code !== 0) fail(`after SIGTERM the server exited with ${code ?? signal}:\n${out}`);
  log("SIGTERM: drained and exited 0");
  cleanup();
  log("OK");
})().catch((e) => fail(e.stack ?? String(e)));
NODE
