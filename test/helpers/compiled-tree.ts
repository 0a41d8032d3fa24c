/**
 * One compiled copy of src/ and gen/ per jest run (jest's globalSetup makes it), for code that
 * cannot run from TypeScript: worker threads (the SQLite store's) load plain JS files. It lives
 * under node_modules/.cache so that the compiled files resolve the repository's packages.
 */
import * as path from "node:path";
import { ROOT } from "./compile";

/** Where the compiled tree is (out/src/**.js, out/gen/**.js, out/examples/**.js). */
export const COMPILED_TREE = path.join(ROOT, "node_modules", ".cache", "emqx-exhook-test");
