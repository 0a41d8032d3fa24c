/**
 * Compiles the sources with swc into a temporary directory (fast; no `dist` needed), for tests that
 * run the code in child processes: `compileTree("src", out)` writes out/src/**.js, same layout.
 */
import { mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { transformFileSync } from "@swc/core";

export const ROOT = path.join(__dirname, "..", "..");

/** Compiles every .ts file under `dir` (relative to the repo) into `out` with the same layout. */
export function compileTree(dir: string, out: string): void {
  for (const name of readdirSync(path.join(ROOT, dir))) {
    const rel = path.join(dir, name);
    if (statSync(path.join(ROOT, rel)).isDirectory()) {
      compileTree(rel, out);
    } else if (name.endsWith(".ts") && !name.endsWith(".d.ts")) {
      const { code } = transformFileSync(path.join(ROOT, rel), {
        jsc: { parser: { syntax: "typescript" }, target: "es2022" },
        // Keep import() as is (like tsc's NodeNext output): the CLI imports the provider by file URL.
        module: { type: "commonjs", ignoreDynamic: true },
        sourceMaps: false,
      });
      mkdirSync(path.join(out, dir), { recursive: true });
      writeFileSync(path.join(out, rel.replace(/\.ts$/, ".js")), code);
    }
  }
}
