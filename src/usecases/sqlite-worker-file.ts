/**
 * Where the compiled SQLite worker entry (`sqlite-worker.js`) is: next to this module in whichever
 * build runs (src/own-location.ts knows where that is, in CommonJS and ESM alike). Kept in a module
 * of its own so tests that run the TypeScript sources can point it at a compiled copy
 * (jest.config.cjs maps it to test/helpers/sqlite-worker-file.ts: a worker cannot run TypeScript).
 */
import { join } from "node:path";
import { ownDir } from "../own-location.js";

/** Absolute path of the worker entry. */
export const SQLITE_WORKER_FILE: string = join(ownDir, "usecases", "sqlite-worker.js");
