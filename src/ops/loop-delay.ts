/**
 * The event loop's current delay, for the deadline margin (`DispatcherOptions.loopDelayMs`): how
 * late a timer fires right now. Under CPU contention (another process on the same core, a burst
 * of calls, a GC pause) a handler's budget timer fires late by about this much, and so would the
 * fallback answer; the dispatcher keeps a margin of at least twice it before EMQX's deadline.
 *
 * Measured with `monitorEventLoopDelay` (a libuv timer sampled in C++, no JS per sample): every
 * `windowMs` the window's worst lag becomes the current value, which otherwise shrinks by a
 * quarter per window, so a stall raises the margin at once and a calm loop lowers it again within
 * a few seconds (contention comes in bursts: a spike is likely to come back soon).
 */
import { monitorEventLoopDelay, performance } from "node:perf_hooks";

/** A running monitor. */
export interface LoopDelayMonitor {
  /**
   * The delay to expect now, in ms: the measured lag plus, for `inFlight` calls whose answers may
   * all fall due at once, their cost in loop time (the measured busy time per call). Called once
   * per call: it also counts the calls for that cost. Arithmetic on stored numbers only.
   */
  readonly ms: (inFlight?: number) => number;
  /** The measured loop time per call in ms (0 until measured). */
  readonly costPerCallMs: () => number;
  stop(): void;
}

/** Starts measuring. Defaults: a sample every 10 ms, a window of 500 ms. */
export function monitorLoopDelay(options: { resolutionMs?: number; windowMs?: number } = {}): LoopDelayMonitor {
  const resolution = options.resolutionMs ?? 10;
  const histogram = monitorEventLoopDelay({ resolution });
  histogram.enable();
  let current = 0;
  let calls = 0;
  let cost = 0;
  let elu = performance.eventLoopUtilization();
  const read = () => {
    // The histogram holds whole sampling intervals (ns); the lag is what exceeds the resolution.
    const worst = histogram.count > 0 ? Math.max(0, histogram.max / 1e6 - resolution) : 0;
    histogram.reset();
    current = Math.max(worst, current * 0.75);
    if (current < 0.5) current = 0;
    // Busy loop time per call over the window (everything the process did, over the calls it
    // served: an estimate that errs high on a process doing other work too, which is safe here).
    const now = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(now, elu).active;
    elu = now;
    if (calls >= 20) cost = cost === 0 ? busy / calls : 0.7 * cost + 0.3 * (busy / calls);
    calls = 0;
  };
  // Read after the timers phase: when this timer fires late because of a stall, the histogram's
  // own sample of that stall is recorded in the same phase, possibly after us; reading (and
  // resetting) first would lose it.
  const timer = setInterval(() => setImmediate(read), options.windowMs ?? 500);
  timer.unref();
  return {
    ms: (inFlight = 0) => {
      calls++;
      return current + inFlight * cost;
    },
    costPerCallMs: () => cost,
    stop() {
      clearInterval(timer);
      histogram.disable();
    },
  };
}
