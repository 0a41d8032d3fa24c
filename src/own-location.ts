/**
 * Where this package's own modules are on disk, in whichever build is running, and a `require`
 * anchored there. For code that must name one of its own files or load a package by name in both
 * builds: a worker thread script (`new Worker(join(ownDir, "usecases", "x-worker.js"))`), an
 * optional peer dependency (src/usecases/optional-dependency.ts), a CommonJS-only package.
 *
 * How it works in the dual build (the one place that knows about dialects):
 * - this file is what the CommonJS build (dist/src) and jest (the TypeScript sources) run: it uses
 *   `__dirname` and `require`;
 * - its twin `own-location-esm.mts` has the same exports written for ESM (`import.meta.url`,
 *   `createRequire`). The ESM build compiles it and scripts/build.mjs copies its output over
 *   dist/esm/src/own-location.js, so `import { ownDir } from "./own-location.js"` gets the right
 *   one in each build. `import.meta` cannot appear in a file compiled to CommonJS (and `__dirname`
 *   does not exist in ESM), hence two files. Change both together; the consumer test
 *   (test/package.test.ts) checks both builds.
 * So a module that needs its own location imports this one and never uses `__dirname`,
 * `__filename`, `require` or `import.meta` itself (test/architecture.test.ts enforces it).
 */
import { join } from "node:path";

/**
 * The directory of this package's `src` modules in the running build: `dist/src` (CommonJS),
 * `dist/esm/src` (ESM), or `src` when run from the TypeScript sources (jest). Files under it keep
 * their layout (`join(ownDir, "usecases", "x.js")`); from the sources the extension is `.ts`
 * (see {@link ownExtension}).
 */
export const ownDir: string = __dirname;

/** The extension of this package's modules in the running build: `.js`, or `.ts` from the sources. */
export const ownExtension: ".js" | ".ts" = __filename.endsWith(".ts") ? ".ts" : ".js";

/** `require`, resolving from this package's own location (as its CommonJS build would). */
export const ownRequire: NodeJS.Require = require;

/** The path of one of this package's modules, e.g. `ownPath("usecases", "x-worker")` (extension added). */
export function ownPath(...segments: string[]): string {
  return join(ownDir, ...segments) + ownExtension;
}
