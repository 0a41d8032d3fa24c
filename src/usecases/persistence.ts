/**
 * The message-persistence use case: messages on configured topic filters are stored with topic,
 * payload, QoS, publisher, timestamps, node and headers.
 *
 * The publish hook answers `keep()` at once and only appends to an in-memory queue; a writer drains
 * the queue in batches (up to `batchSize` messages, at least every `flushMs`), one transaction per
 * batch. The queue is bounded (`maxQueue`): when the store cannot keep up, `overflow` decides what
 * is lost: `"drop-new"` (default) refuses the incoming message, `"drop-oldest"` evicts the oldest
 * queued one. A batch whose write fails is retried (`retries` times, with a growing pause) and then
 * counted as failed. Every message not written is counted (`stats()`).
 *
 * Durability: a message is acknowledged by the store when its batch's transaction commits
 * (`stats().written`). A kill (SIGKILL, crash, power loss) loses what is queued and not yet
 * committed: at most `maxQueue` messages, normally less than one `flushMs` worth. `close()`
 * (SIGINT/SIGTERM with the bundled CLI) flushes everything queued first.
 *
 * Retention (`retentionMs`, off by default): every `retentionSweepMs` (and once shortly after the
 * start) messages whose EMQX timestamp is older than `retentionMs` are deleted, in chunks of
 * `RETENTION_CHUNK` rows, so a large backlog never holds a long lock.
 */
import type { HookHandler, Logger } from "../provider.js";
import { keep } from "../responses.js";
import { compileTopicFilters } from "../topic.js";
import type { Store, StoredMessage } from "./store.js";

/** Options of {@link createMessageWriter}. */
export interface MessageWriterOptions {
  readonly store: Store;
  /** Most messages waiting to be written. Default 10000. */
  readonly maxQueue?: number;
  /** Most messages per transaction. Default 500. */
  readonly batchSize?: number;
  /** Longest a queued message waits before its batch is written, in ms. Default 200. */
  readonly flushMs?: number;
  /** What to lose when the queue is full. Default `"drop-new"`. */
  readonly overflow?: "drop-new" | "drop-oldest";
  /** Extra attempts of a failed batch before it is counted as failed. Default 3. */
  readonly retries?: number;
  readonly logger?: Logger;
}

/** Counters of the writer. `enqueued = written + duplicates + droppedOverflow + failed + queued + inFlight`. */
export interface MessageWriterStats {
  /** Messages accepted into the queue (those refused by `drop-new` are not). */
  readonly enqueued: number;
  /** Messages committed by the store. */
  readonly written: number;
  /** Messages the store already had (same message id), not written again. */
  readonly duplicates: number;
  /** Messages lost to a full queue (refused with drop-new, evicted with drop-oldest). */
  readonly droppedOverflow: number;
  /** Messages in batches that failed every attempt. */
  readonly failed: number;
  /** Messages waiting. */
  readonly queued: number;
  /** Messages in the batch being written. */
  readonly inFlight: number;
  /** Batches committed. */
  readonly batches: number;
}

/** The batching writer. */
export interface MessageWriter {
  /** Queues a message; never waits. Returns false when the message was refused (queue full, drop-new). */
  push(msg: StoredMessage): boolean;
  /** Writes everything queued now; resolves when it is committed (or failed). */
  flush(): Promise<void>;
  /** Flushes, then stops accepting messages. */
  close(): Promise<void>;
  stats(): MessageWriterStats;
}

/** Creates the batching writer. */
export function createMessageWriter(options: MessageWriterOptions): MessageWriter {
  const maxQueue = options.maxQueue ?? 10_000;
  const batchSize = options.batchSize ?? 500;
  const flushMs = options.flushMs ?? 200;
  const overflow = options.overflow ?? "drop-new";
  const retries = options.retries ?? 3;
  const { store, logger } = options;
  let queue: StoredMessage[] = [];
  let head = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> | undefined;
  let closed = false;
  let flushing = 0;
  const s = { enqueued: 0, written: 0, duplicates: 0, droppedOverflow: 0, failed: 0, inFlight: 0, batches: 0 };
  const queued = () => queue.length - head;

  function schedule(): void {
    if (running) return;
    if (queued() >= batchSize) {
      // A full batch goes now, without waiting for the timer.
      if (timer) clearTimeout(timer);
      timer = undefined;
      running = drain();
      return;
    }
    if (queued() > 0 && !timer) {
      timer = setTimeout(() => {
        timer = undefined;
        if (!running) running = drain();
      }, flushMs);
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
        s.inFlight = batch.length;
        await writeBatch(batch);
        s.inFlight = 0;
        if (queued() < batchSize && !closed && !flushing) break;
      }
    } finally {
      s.inFlight = 0;
      running = undefined;
      schedule();
    }
  }

  async function writeBatch(batch: StoredMessage[]): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        const n = await store.insertMessages(batch);
        s.written += n;
        s.duplicates += batch.length - n;
        s.batches++;
        return;
      } catch (err) {
        if (attempt >= retries) {
          s.failed += batch.length;
          logger?.error({ err: (err as Error).message, messages: batch.length }, "message batch not stored");
          return;
        }
        await new Promise((r) => setTimeout(r, 50 * 2 ** attempt));
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
    push(msg) {
      if (closed) {
        s.droppedOverflow++;
        return false;
      }
      if (queued() >= maxQueue) {
        s.droppedOverflow++;
        if (overflow === "drop-new") return false;
        head++;
      }
      queue.push(msg);
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

/** Rows deleted per statement by retention. */
export const RETENTION_CHUNK = 5000;

/** Options of {@link createMessageRetention}. */
export interface MessageRetentionOptions {
  readonly store: Store;
  /** Messages with an EMQX timestamp older than this many ms are deleted. */
  readonly maxAgeMs: number;
  /** How often to sweep, in ms; 0 = only when `sweep()` is called. Default 600000 (10 minutes). */
  readonly everyMs?: number;
  readonly logger?: Logger;
  /** Clock, for tests. Default `Date.now`. */
  readonly now?: () => number;
}

/** Deletes stored messages past their age. */
export interface MessageRetention {
  /** Deletes every message older than `maxAgeMs` now (chunk by chunk); resolves with how many. A sweep already running is joined. */
  sweep(): Promise<number>;
  /** Stops the timer (a sweep in progress finishes its current chunk and stops). */
  stop(): Promise<void>;
  stats(): { readonly expired: number; readonly sweeps: number; readonly failedSweeps: number };
}

/** Creates the retention job; its timer (if any) starts at once and does not keep the process alive. */
export function createMessageRetention(options: MessageRetentionOptions): MessageRetention {
  const { store, maxAgeMs, logger } = options;
  if (!Number.isInteger(maxAgeMs) || maxAgeMs < 1) throw new RangeError(`retention maxAgeMs must be a positive integer, got ${maxAgeMs}`);
  const now = options.now ?? Date.now;
  const everyMs = options.everyMs ?? 600_000;
  const s = { expired: 0, sweeps: 0, failedSweeps: 0 };
  let running: Promise<number> | undefined;
  let stopped = false;

  async function run(): Promise<number> {
    const before = now() - maxAgeMs;
    let total = 0;
    for (;;) {
      const n = await store.deleteMessagesBefore(before, RETENTION_CHUNK);
      total += n;
      s.expired += n;
      if (n < RETENTION_CHUNK || stopped) break;
    }
    s.sweeps++;
    if (total > 0) logger?.info({ deleted: total, olderThan: new Date(before).toISOString() }, "retention: deleted old messages");
    return total;
  }

  const sweep = () => (running ??= run().finally(() => (running = undefined)));
  const background = () =>
    void sweep().catch((err: unknown) => {
      s.failedSweeps++;
      logger?.error({ err: (err as Error).message }, "retention sweep failed; retrying at the next one");
    });
  const first = everyMs > 0 ? setTimeout(background, Math.min(everyMs, 1000)) : undefined;
  const timer = everyMs > 0 ? setInterval(background, everyMs) : undefined;
  first?.unref?.();
  timer?.unref?.();
  return {
    sweep,
    async stop() {
      stopped = true;
      if (first) clearTimeout(first);
      if (timer) clearInterval(timer);
      await running?.catch(() => undefined);
    },
    stats: () => ({ ...s }),
  };
}

/** Options of {@link createPersistence}. */
export interface PersistenceOptions extends MessageWriterOptions {
  /** Topic filters of the messages to store. Default `["#"]`. Also announced to EMQX as the hook's filters. */
  readonly topics?: readonly string[];
  /** Delete messages older than this many ms (by EMQX timestamp). Default: keep them forever. */
  readonly retentionMs?: number;
  /** How often retention sweeps, in ms. Default 600000. */
  readonly retentionSweepMs?: number;
}

/** The persistence use case: the writer plus the `onMessagePublish` hook config. */
export interface Persistence {
  readonly writer: MessageWriter;
  /** The retention job, when `retentionMs` was given. */
  readonly retention: MessageRetention | undefined;
  readonly topics: readonly string[];
  /** The hook config for `onMessagePublish` (with `topics`), answering `keep()` at once. */
  readonly hook: { readonly topics: readonly string[]; readonly handler: HookHandler<"onMessagePublish"> };
  /** Flushes the writer and stops retention. */
  close(): Promise<void>;
}

/** Creates the persistence use case. */
export function createPersistence(options: PersistenceOptions): Persistence {
  const topics = options.topics ?? ["#"];
  const match = compileTopicFilters(topics);
  const writer = createMessageWriter(options);
  const retention =
    options.retentionMs === undefined
      ? undefined
      : createMessageRetention({
          store: options.store,
          maxAgeMs: options.retentionMs,
          ...(options.retentionSweepMs !== undefined ? { everyMs: options.retentionSweepMs } : {}),
          ...(options.logger ? { logger: options.logger } : {}),
        });
  const handler: HookHandler<"onMessagePublish"> = ({ message }) => {
    if (message && match(message.topic)) {
      const headers = { ...message.headers };
      writer.push({
        id: message.id || `${message.node}:${message.from}:${message.timestamp}:${Math.random().toString(36).slice(2)}`,
        topic: message.topic,
        // A copy: the decoded bytes may be a view into the whole request buffer.
        payload: message.payload.slice(),
        qos: message.qos,
        publisher: message.from,
        username: headers["username"] ?? "",
        node: message.node,
        timestamp: Number(message.timestamp),
        storedAt: Date.now(),
        headers,
      });
    }
    return keep();
  };
  return {
    writer,
    retention,
    topics,
    hook: { topics, handler },
    async close() {
      await retention?.stop();
      await writer.close();
    },
  };
}
