/**
 * Stands in for src/usecases/bridge/forward-worker-file.ts under jest (jest.config.cjs maps it):
 * the forwarding thread runs the compiled copy that globalSetup made.
 */
import * as path from "node:path";
import { COMPILED_TREE } from "./compiled-tree";

export const FORWARD_WORKER_FILE: string = path.join(COMPILED_TREE, "src", "usecases", "bridge", "forward-worker.js");
