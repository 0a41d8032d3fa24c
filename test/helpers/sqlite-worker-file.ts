/**
 * Stands in for src/usecases/sqlite-worker-file.ts under jest (jest.config.cjs maps it): the
 * SQLite worker threads run the compiled copy that globalSetup made, since a worker cannot load
 * the TypeScript sources jest runs.
 */
import * as path from "node:path";
import { COMPILED_TREE } from "./compiled-tree";

export const SQLITE_WORKER_FILE: string = path.join(COMPILED_TREE, "src", "usecases", "sqlite-worker.js");
