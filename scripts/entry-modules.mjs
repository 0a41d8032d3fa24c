#!/usr/bin/env node
// Counts the modules one entry of the built package loads, in either dialect, and which packages
// they come from: `node scripts/entry-modules.mjs <require|import> <file or package specifier>`.
// Prints JSON { modules, packages, builtins }. Used by test/package.test.ts (the core entry must
// load no logger, metrics, server adapter or storage driver) and to report figures.
import { spawnSync } from "node:child_process";

const [mode, target] = process.argv.slice(2);
if (!["require", "import"].includes(mode) || !target) {
  console.error("usage: entry-modules.mjs <require|import> <file or specifier>");
  process.exit(2);
}
// The child loads the entry and reports what it loaded: CommonJS modules from require.cache, ESM
// modules (and builtins) through a resolve hook registered before the import.
const child = `
const { register } = require("node:module");
const { fileURLToPath } = require("node:url");
const { MessageChannel } = require("node:worker_threads");
const seen = new Set();
const builtins = new Set();
const { port1, port2 } = new MessageChannel();
port1.on("message", (u) => (u.startsWith("node:") ? builtins.add(u.slice(5)) : seen.add(u)));
port1.unref();
register("data:text/javascript," + encodeURIComponent(\`
  let port;
  export function initialize(data) { port = data.port; }
  export async function resolve(spec, ctx, next) {
    const r = await next(spec, ctx);
    port.postMessage(r.url.startsWith("node:") ? r.url : r.url);
    return r;
  }\`), { data: { port: port2 }, transferList: [port2] });
const Module = require("node:module");
const origLoad = Module._load;
Module._load = function (request, parent, isMain) {
  if (Module.isBuiltin(request)) builtins.add(request.replace(/^node:/, ""));
  return origLoad.apply(this, arguments);
};
(async () => {
  const before = new Set(Object.keys(require.cache));
  if (${JSON.stringify(mode)} === "require") require(${JSON.stringify(target)});
  else await import(${JSON.stringify(target)});
  await new Promise((r) => setTimeout(r, 50));
  const files = new Set([...Object.keys(require.cache).filter((f) => !before.has(f)), ...[...seen].filter((u) => u.startsWith("file:")).map((u) => fileURLToPath(u))]);
  const packages = new Set();
  for (const f of files) {
    const m = /node_modules\\/((?:@[^/]+\\/)?[^/]+)/.exec(f.split("node_modules/").length > 1 ? f.slice(f.lastIndexOf("node_modules/")) : "");
    if (m) packages.add(m[1]);
  }
  process.stdout.write(JSON.stringify({ modules: files.size, packages: [...packages].sort(), builtins: [...builtins].sort() }));
})();
`;
const r = spawnSync(process.execPath, ["-e", child], { encoding: "utf8" });
if (r.status !== 0) {
  process.stderr.write(r.stderr);
  process.exit(1);
}
process.stdout.write(r.stdout + "\n");
