/**
 * The outbox writer: takes captures from the hooks (never waiting), and commits them to the outbox
 * in batches (up to `batchSize`, at least every `lingerMs`), one transaction per batch, batches in
 * order, so a client's entries get increasing `seq`. The queue in front of the store is bounded
 * (`maxQueue`): a capture that does not fit is refused and counted. A batch whose write fails is
 * retried `retries` times with a growing pause, then its entries are counted as lost and logged.
 *
 * Persist-before-route captures carry the hook's deadline: one whose deadline passed before its
 * batch was taken is withdrawn (`expired`: the framework has answered the fallback already, so it
 * must not reach the engine); one committed after its deadline is counted as a late commit (it
 * will be bridged although EMQX was told the fallback).
 */
import type { Logger } from "../../provider.js";
import type { OutboxBound, OutboxEntry, Store } from "../store.js";
import { buildEntry, CaptureState, type Capture } from "./capture.js";

/** Options of {@link createOutboxWriter}. */
export interface OutboxWriterOptions {
  readonly store: Store;
  /** Bound of each sink's outbox (sink name → bound). */
  readonly bounds: Readonly<Record<string, OutboxBound>>;
  /** Most captures waiting for a commit. Default 20000. */
  readonly maxQueue?: number;
  /** Most entries per transaction. Default 500. */
  readonly batchSize?: number;
  /** Longest a capture waits for its batch, in ms. Default 5. */
  readonly lingerMs?: number;
  /** Extra attempts of a failed write. Default 5. */
  readonly retries?: number;
  /** Called after each commit with the rows added per sink (wakes the forwarders). */
  readonly onCommitted?: (perSink: ReadonlyMap<string, number>) => void;
  /** Called for every capture that did not make it into the outbox, with why. */
  readonly onLost?: (sink: string, reason: LostReason, n: number) => void;
  readonly logger?: Logger;
  /** Clock, for tests. Default `Date.now`. */
  readonly now?: () => number;
}

/** Why a capture did not reach the outbox. */
export type LostReason = "queue_full" | "outbox_full" | "evicted" | "unroutable" | "write_failed" | "expired";

/** Counters of the writer. */
export interface OutboxWriterStats {
  /** Captures accepted into the queue. */
  readonly enqueued: number;
  /** Entries committed (new rows). */
  readonly committed: number;
  /** Entries the outbox already had (same sink + id). */
  readonly duplicates: number;
  /** Refused because the queue was full. */
  readonly refusedQueueFull: number;
  /** Refused because a sink's outbox was full (`refuse-new`, or a batch larger than the bound). */
  readonly refusedOutboxFull: number;
  /** Older rows evicted from a full outbox (`drop-oldest`). */
  readonly evicted: number;
  /** Entries with no valid destination (the rendered subject / routing key / key was invalid). */
  readonly unroutable: number;
  /** Entries in batches whose write failed every attempt. */
  readonly writeFailed: number;
  /** Persist-before-route captures withdrawn because the hook's budget ran out first. */
  readonly expired: number;
  /** Persist-before-route captures committed after the hook's budget ran out. */
  readonly lateCommits: number;
  /** Outbox transactions committed. */
  readonly batches: number;
  /** Captures waiting now. */
  readonly queued: number;
}

/** The writer. */
export interface OutboxWriter {
  /** Queues a capture; never waits. False when refused (queue full or closed); its state is then `refused`. */
  push(c: Capture): boolean;
  /** Writes everything queued now; resolves when committed (or failed). */
  flush(): Promise<void>;
  /** Flushes, then refuses new captures. */
  close(): Promise<void>;
  stats(): OutboxWriterStats;
}

/** Creates the outbox writer. */
export function createOutboxWriter(options: OutboxWriterOptions): OutboxWriter {
  const { store, bounds, logger } = options;
  const maxQueue = options.maxQueue ?? 20_000;
  const batchSize = options.batchSize ?? 500;
  const lingerMs = options.lingerMs ?? 5;
  const retries = options.retries ?? 5;
  const now = options.now ?? Date.now;
  let queue: Capture[] = [];
  let head = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> | undefined;
  let closed = false;
  let flushing = 0;
  const s = {
    enqueued: 0,
    committed: 0,
    duplicates: 0,
    refusedQueueFull: 0,
    refusedOutboxFull: 0,
    evicted: 0,
    unroutable: 0,
    writeFailed: 0,
    expired: 0,
    lateCommits: 0,
    batches: 0,
  };
  const queued = () => queue.length - head;
  const lost = (sink: string, reason: LostReason, n = 1) => options.onLost?.(sink, reason, n);
  const finish = (c: Capture, state: number) => {
    c.state = state;
    const done = c.done;
    if (done) {
      c.done = undefined;
      done();
    }
  };

  function schedule(): void {
    if (running) return;
    if (queued() >= batchSize || (lingerMs === 0 && queued() > 0)) {
      if (timer) clearTimeout(timer);
      timer = undefined;
      running = drain();
      return;
    }
    if (queued() > 0 && !timer) {
      timer = setTimeout(() => {
        timer = undefined;
        if (!running) running = drain();
      }, lingerMs);
      timer.unref?.();
    }
  }

  async function drain(): Promise<void> {
    try {
      while (queued() > 0) {
        const batch = queue.slice(head, head + batchSize);
        head += batch.length;
        if (head > 4096 && head * 2 > queue.length) {
          queue = queue.slice(head);
          head = 0;
        }
        await writeBatch(batch);
        if (queued() < batchSize && !closed && !flushing) break;
      }
    } finally {
      running = undefined;
      schedule();
    }
  }

  async function writeBatch(batch: Capture[]): Promise<void> {
    const entries: OutboxEntry[] = [];
    const owners: Capture[] = [];
    const t = now();
    for (const c of batch) {
      if (c.deadline > 0 && t >= c.deadline) {
        s.expired++;
        lost(c.route.name, "expired");
        finish(c, CaptureState.expired);
        continue;
      }
      let e: OutboxEntry | string;
      try {
        e = buildEntry(c);
      } catch (err) {
        e = (err as Error).message;
      }
      if (typeof e === "string") {
        s.unroutable++;
        lost(c.route.name, "unroutable");
        logger?.warn({ sink: c.route.name, hook: c.hook, reason: e }, "bridge: message not bridged: no valid destination");
        finish(c, CaptureState.unroutable);
        continue;
      }
      entries.push(e);
      owners.push(c);
    }
    if (entries.length === 0) return;
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await store.outboxAppend(entries, bounds);
        s.batches++;
        const refused = new Set(r.refused);
        const perSink = new Map<string, number>();
        let refusedCount = 0;
        for (const [sink, n] of Object.entries(r.perSink)) {
          s.committed += n.appended;
          s.duplicates += n.duplicates;
          s.evicted += n.evicted;
          refusedCount += n.refused;
          if (n.appended > 0) perSink.set(sink, n.appended);
          if (n.evicted > 0) lost(sink, "evicted", n.evicted);
          if (n.refused > 0) lost(sink, "outbox_full", n.refused);
          if (n.evicted > 0 || n.refused > 0) {
            logger?.warn(
              { sink, evicted: n.evicted, refused: n.refused, policy: bounds[sink]?.overflow, maxDepth: bounds[sink]?.maxDepth },
              "bridge: outbox full",
            );
          }
        }
        s.refusedOutboxFull += refusedCount;
        const done = now();
        owners.forEach((c, i) => {
          if (refused.has(i)) {
            finish(c, CaptureState.refused);
            return;
          }
          if (c.deadline > 0 && done > c.deadline) s.lateCommits++;
          finish(c, CaptureState.committed);
        });
        if (perSink.size > 0) options.onCommitted?.(perSink);
        return;
      } catch (err) {
        if (attempt >= retries) {
          s.writeFailed += entries.length;
          for (const c of owners) {
            lost(c.route.name, "write_failed");
            finish(c, CaptureState.failed);
          }
          logger?.error(
            { err: (err as Error).message, entries: entries.length, attempts: attempt + 1 },
            "bridge: outbox write failed; these messages are not bridged",
          );
          return;
        }
        logger?.warn({ err: (err as Error).message, attempt: attempt + 1 }, "bridge: outbox write failed; retrying");
        await new Promise((r) => setTimeout(r, Math.min(50 * 2 ** attempt, 2000)));
      }
    }
  }

  async function flush(): Promise<void> {
    flushing++;
    try {
      if (timer) {
        clearTimeout(timer);
        timer = undefined;
      }
      while (running || queued() > 0) {
        if (!running) running = drain();
        await running;
      }
    } finally {
      flushing--;
    }
  }

  return {
    push(c) {
      if (closed || queued() >= maxQueue) {
        s.refusedQueueFull++;
        lost(c.route.name, "queue_full");
        finish(c, CaptureState.refused);
        return false;
      }
      queue.push(c);
      s.enqueued++;
      schedule();
      return true;
    },
    flush,
    async close() {
      await flush();
      closed = true;
    },
    stats: () => ({ ...s, queued: queued() }),
  };
}
