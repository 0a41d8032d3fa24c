/**
 * Writes that must not be lost while the store is down, applied one at a time: presence changes.
 *
 * While the store works, each write runs at once (several may run concurrently, as the hooks call
 * them). When one fails with a transient error, it is held, and so is every write after it until
 * the held ones are through, so they reach the store in the order they happened. Held writes are
 * retried in order with backoff and jitter until the store takes them. What is held is bounded in
 * bytes; beyond that new writes are refused, counted and logged. A write the store refuses for its
 * data (a permanent error) is counted and logged, not retried.
 */
import type { Logger } from "../provider.js";
import { backoffDelay, createLossLog, createOutageLog, errorText, isPermanentStoreError, pause } from "./store-retry.js";

/** Options of {@link createHeldWrites}. */
export interface HeldWritesOptions<T> {
  /** What these writes are, for logs ("presence"). */
  readonly what: string;
  /** Applies one write to the store (and whatever follows from it); rejects when the store fails. */
  readonly apply: (item: T) => Promise<void>;
  /** Estimated bytes of one held item. */
  readonly sizeOf: (item: T) => number;
  /** Most bytes held. */
  readonly maxBytes: number;
  /** First pause after a failure, in ms. Default 100. */
  readonly retryMinMs?: number;
  /** Longest pause between attempts, in ms. Default 5000. */
  readonly retryMaxMs?: number;
  /** How long `close()` keeps trying a failing store, in ms. Default 10000. */
  readonly closeTimeoutMs?: number;
  readonly logger?: Logger | undefined;
}

/** Counters. `submitted = applied + rejected + droppedOverflow + lostOnClose + held + running`. */
export interface HeldWritesStats {
  readonly submitted: number;
  readonly applied: number;
  /** Refused by the store for their data; not retried. */
  readonly rejected: number;
  /** Refused because `maxBytes` was held. */
  readonly droppedOverflow: number;
  /** Still held when `close()` stopped waiting. */
  readonly lostOnClose: number;
  /** Waiting for the store. */
  readonly held: number;
  readonly heldBytes: number;
  /** Being applied right now. */
  readonly running: number;
  readonly failedAttempts: number;
  readonly outages: number;
  readonly storeDownForMs: number;
}

/** The queue. */
export interface HeldWrites<T> {
  /**
   * Applies `item`, or holds it when the store fails (or earlier writes are held). Resolves once it
   * is applied, held, refused or dropped: never rejects, never waits for an outage to end.
   */
  submit(item: T): Promise<void>;
  /** Resolves when nothing is held (or after `timeoutMs`). */
  flush(timeoutMs?: number): Promise<void>;
  /** Waits up to `closeTimeoutMs` for held writes, then counts and logs what is left; refuses new ones. */
  close(): Promise<void>;
  stats(): HeldWritesStats;
}

/** Creates a held-writes queue. */
export function createHeldWrites<T>(options: HeldWritesOptions<T>): HeldWrites<T> {
  const { what, apply, sizeOf, maxBytes, logger } = options;
  const backoff = { minMs: options.retryMinMs ?? 100, maxMs: options.retryMaxMs ?? 5000 };
  const closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
  const outage = createOutageLog(what, logger);
  const overflowLog = createLossLog(`${what}: too much held while the store fails (maxQueueBytes), changes dropped`, logger);
  const rejectLog = createLossLog(`${what}: changes refused by the store for their data, not retried`, logger);
  const abort = new AbortController();
  let queue: Array<{ item: T; size: number }> = [];
  let head = 0;
  let heldBytes = 0;
  let draining: Promise<void> | undefined;
  let closed = false;
  const s = { submitted: 0, applied: 0, rejected: 0, droppedOverflow: 0, lostOnClose: 0, running: 0 };
  const heldCount = () => queue.length - head;
  const details = () => ({ held: heldCount(), heldBytes });

  function hold(item: T): void {
    const size = sizeOf(item);
    if (closed || heldBytes + size > maxBytes) {
      s.droppedOverflow++;
      overflowLog.lost(1, () => ({ maxBytes, ...details(), closed }));
      return;
    }
    queue.push({ item, size });
    heldBytes += size;
    draining ??= drain().finally(() => (draining = undefined));
  }

  function refused(err: unknown): void {
    s.rejected++;
    rejectLog.lost(1, () => ({ err: errorText(err) }));
  }

  async function drain(): Promise<void> {
    let attempt = 0;
    // Let writes that were already running when the outage began finish (and join the queue).
    await pause(backoffDelay(attempt++, backoff), abort.signal);
    while (heldCount() > 0 && !abort.signal.aborted) {
      const entry = queue[head] as { item: T; size: number };
      try {
        await apply(entry.item);
        s.applied++;
        attempt = 0;
        outage.succeeded(details);
      } catch (err) {
        if (!isPermanentStoreError(err)) {
          outage.failed(err, details);
          await pause(backoffDelay(attempt++, backoff), abort.signal);
          continue;
        }
        refused(err);
      }
      (queue as unknown[])[head] = undefined;
      head++;
      heldBytes -= entry.size;
      if (head > 1024 && head * 2 > queue.length) {
        queue = queue.slice(head);
        head = 0;
      }
    }
  }

  return {
    async submit(item) {
      s.submitted++;
      if (draining || closed) return hold(item);
      s.running++;
      try {
        await apply(item);
        s.applied++;
        outage.succeeded(details);
      } catch (err) {
        if (isPermanentStoreError(err)) refused(err);
        else {
          outage.failed(err, details);
          hold(item);
        }
      } finally {
        s.running--;
      }
    },
    async flush(timeoutMs) {
      let t: ReturnType<typeof setTimeout> | undefined;
      const done = (async () => {
        while (draining) await draining;
      })();
      try {
        if (timeoutMs === undefined) await done;
        else await Promise.race([done, new Promise<void>((r) => (t = setTimeout(r, timeoutMs)))]);
      } finally {
        if (t) clearTimeout(t);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      const giveUp = setTimeout(() => abort.abort(), closeTimeoutMs);
      try {
        while (draining) await draining;
      } finally {
        clearTimeout(giveUp);
      }
      const left = heldCount();
      if (left > 0) {
        s.lostOnClose += left;
        logger?.error({ lost: left, closeTimeoutMs }, `${what}: closing with changes the store did not take; they are lost`);
        queue = [];
        head = 0;
        heldBytes = 0;
      }
    },
    stats: () => ({
      ...s,
      held: heldCount(),
      heldBytes,
      failedAttempts: outage.failedAttempts,
      outages: outage.outages,
      storeDownForMs: outage.down ? Date.now() - outage.downSince : 0,
    }),
  };
}
