/**
 * How far V8 lets the heap grow past what the last full collection kept, for the process the CLI
 * owns (`serve --heap-growth`, default {@link DEFAULT_HEAP_GROWTH_PERCENT}).
 *
 * Why the server sets it: V8 collects the old generation only when it has grown by a factor it
 * picks from its own speed, up to 4x what survived the last full collection. Objects reachable
 * from an `AbortSignal` are promoted to the old generation even when they die within a
 * millisecond (Node 20 keeps every signal alive until a full collection), and the Connect
 * transport (connect-es) makes several signals per call with its per-call pipeline hanging off
 * them: ~110 KB allocated and ~28 KB promoted per call. Under 64 connections x 100 streams that
 * garbage, not live data (~40 MB), took the process from ~80 MiB to 200-460 MiB. A growing factor
 * of 1.5 keeps the same load at ~100 MiB with the same throughput (bench: `abuse` test's 64 x 100
 * case); the native transport promotes ~2 KB per call and is not affected either way.
 *
 * `v8.setFlagsFromString` after start-up is documented as unsafe in general; this flag is read at
 * every full collection (V8's heap-growing controller), not only when the heap is set up, which
 * is why setting it here works (test/abuse.test.ts, 64 x 100 on the Connect transport, fails without it). Users who
 * mount the routes in their own Connect server can pass `--heap-growing-percent=50` to node.
 */
import { setFlagsFromString } from "node:v8";

/** The CLI's default: V8 collects when the heap has grown by half of what the last full collection kept. */
export const DEFAULT_HEAP_GROWTH_PERCENT = 50;

/** Sets V8's heap growing factor to 1 + percent/100; 0 leaves V8's own heuristic. */
export function setHeapGrowthPercent(percent: number): void {
  if (!Number.isInteger(percent) || percent < 0) throw new RangeError(`heap growth must be a non-negative integer percent, got ${percent}`);
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
}
