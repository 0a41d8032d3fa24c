/**
 * The ESM twin of own-location.ts (same exports; see there): the ESM build copies this file's output
 * over dist/esm/src/own-location.js. Not imported by any module directly.
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const file = fileURLToPath(import.meta.url);

/** The directory of this package's `src` modules in the running build (here: `dist/esm/src`). */
export const ownDir: string = dirname(file);

/** The extension of this package's modules in the running build. */
export const ownExtension: ".js" | ".ts" = ".js";

/** `require`, resolving from this package's own location. */
export const ownRequire: NodeJS.Require = createRequire(import.meta.url);

/** The path of one of this package's modules, e.g. `ownPath("usecases", "x-worker")` (extension added). */
export function ownPath(...segments: string[]): string {
  return join(ownDir, ...segments) + ownExtension;
}
