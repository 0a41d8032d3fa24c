#!/usr/bin/env node
// Builds the package (npm run build, and prepack before npm pack / publish): a CommonJS build in
// dist/src + dist/gen (+ dist/examples for `make start`) and an ESM build in dist/esm, each with
// its .d.ts, from a clean slate so no stale file ships. Then the dialect step: modules that differ
// between CommonJS and ESM (src/own-location.ts, the only one) have an ESM twin `<name>-esm.mts`
// whose output replaces `<name>.js` in dist/esm. Last, a package.json in each output directory
// states its module type, whatever the root's "type" is.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

for (const d of ["src", "gen", "examples", "esm"]) rmSync(join(dist, d), { recursive: true, force: true });
for (const project of ["tsconfig.build.json", "tsconfig.build.esm.json"]) {
  execFileSync(process.execPath, [tsc, "-p", project], { cwd: root, stdio: "inherit" });
}

/** Every `<name>-esm.mts` under src: its ESM output replaces `<name>.js` in the ESM build. */
function twins(dir) {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? twins(join(dir, e.name)) : e.name.endsWith("-esm.mts") ? [join(dir, e.name.slice(0, -"-esm.mts".length))] : [],
  );
}
for (const base of twins("src")) {
  const out = join(dist, "esm", base);
  if (!existsSync(`${out}-esm.mjs`)) throw new Error(`build: ${out}-esm.mjs was not emitted`);
  copyFileSync(`${out}-esm.mjs`, `${out}.js`);
  // The copied file keeps its own source map comment (-esm.mjs.map); the map of the CommonJS-flavoured source goes.
  rmSync(`${out}.js.map`, { force: true });
  rmSync(`${out}-esm.mjs`, { force: true });
  rmSync(`${out}-esm.d.mts`, { force: true });
}
writeFileSync(join(dist, "package.json"), JSON.stringify({ type: "commonjs" }, null, 2) + "\n");
writeFileSync(join(dist, "esm", "package.json"), JSON.stringify({ type: "module" }, null, 2) + "\n");
console.log("build: dist/src + dist/gen (CommonJS), dist/esm (ESM)");
