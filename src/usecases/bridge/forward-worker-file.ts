/**
 * Where the compiled forwarding-thread entry (`forward-worker.js`) is: next to this module in
 * whichever build runs. Kept in a module of its own so tests that run the TypeScript sources can
 * point it at a compiled copy (jest.config.cjs maps it to test/helpers/forward-worker-file.ts).
 */
import { join } from "node:path";
import { ownDir } from "../../own-location.js";

/** Absolute path of the forwarding thread's entry. */
export const FORWARD_WORKER_FILE: string = join(ownDir, "usecases", "bridge", "forward-worker.js");
