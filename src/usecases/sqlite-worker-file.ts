/**
 * Where the compiled SQLite worker entry (`sqlite-worker.js`) is. Kept alone in this small module
 * because finding one's own file differs per module format (`__dirname` in CommonJS,
 * `import.meta.url` in ESM): a build for another format replaces only this module. Tests that run
 * the TypeScript sources map it to a compiled copy (test/helpers/sqlite-worker-file.ts).
 */
import { join } from "node:path";

/** Absolute path of the worker entry next to this module. */
export const SQLITE_WORKER_FILE: string = join(__dirname, "sqlite-worker.js");
