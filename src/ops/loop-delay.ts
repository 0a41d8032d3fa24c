/**
 * The event loop's current delay, for the deadline margin (`DispatcherOptions.loopDelayMs`): how
 * late a timer fires right now. Under CPU contention (another process on the same core, a burst
 * of calls, a GC pause) a handler's budget timer fires late by about this much, and so would the
 * fallback answer; the dispatcher keeps a margin of at least twice it before EMQX's deadline.
 *
 * Measured with `monitorEventLoopDelay` (a libuv timer sampled in C++, no JS per sample): every
 * `windowMs` the window's worst lag becomes the current value, which otherwise halves per window,
 * so a stall raises the margin at once and a calm loop lowers it within a few seconds.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";

/** A running monitor. */
export interface LoopDelayMonitor {
  /** The current delay in ms (a stored number: cheap enough for every call). */
  readonly ms: () => number;
  stop(): void;
}

/** Starts measuring. Defaults: a sample every 10 ms, a window of 1 s. */
export function monitorLoopDelay(options: { resolutionMs?: number; windowMs?: number } = {}): LoopDelayMonitor {
  const resolution = options.resolutionMs ?? 10;
  const histogram = monitorEventLoopDelay({ resolution });
  histogram.enable();
  let current = 0;
  const timer = setInterval(() => {
    // The histogram holds whole sampling intervals (ns); the lag is what exceeds the resolution.
    const worst = histogram.count > 0 ? Math.max(0, histogram.max / 1e6 - resolution) : 0;
    histogram.reset();
    current = Math.max(worst, current / 2);
    if (current < 0.5) current = 0;
  }, options.windowMs ?? 1000);
  timer.unref();
  return {
    ms: () => current,
    stop() {
      clearInterval(timer);
      histogram.disable();
    },
  };
}
