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

/** Options of {@link createPersistence}. */
export interface PersistenceOptions extends MessageWriterOptions {
  /** Topic filters of the messages to store. Default `["#"]`. Also announced to EMQX as the hook's filters. */
  readonly topics?: readonly string[];
}

/** The persistence use case: the writer plus the `onMessagePublish` hook config. */
export interface Persistence {
  readonly writer: MessageWriter;
  readonly topics: readonly string[];
  /** The hook config for `onMessagePublish` (with `topics`), answering `keep()` at once. */
  readonly hook: { readonly topics: readonly string[]; readonly handler: HookHandler<"onMessagePublish"> };
}

/** Creates the persistence use case. */
export function createPersistence(options: PersistenceOptions): Persistence {
  const topics = options.topics ?? ["#"];
  const match = compileTopicFilters(topics);
  const writer = createMessageWriter(options);
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
  return { writer, topics, hook: { topics, handler } };
}
