/**
 * The message-persistence use case: messages on configured topic filters are stored with topic,
 * payload, QoS, publisher, timestamps, node and headers.
 *
 * The publish hook answers `keep()` at once and only appends to an in-memory queue; a writer drains
 * the queue in batches (up to `batchSize` messages or `batchBytes` bytes, at least every `flushMs`),
 * one transaction per batch.
 *
 * Store failures: a batch whose write fails with a transient error (the store is down, busy, full,
 * restarting) is kept and retried with exponential backoff and jitter (`retryMinMs` to
 * `retryMaxMs`) until the store takes it, however long that is; messages arriving meanwhile are
 * held in the queue. What the queue may hold is bounded in bytes (`maxQueueBytes`, an estimate of
 * the memory the messages take): when it is full, `overflow` decides what is lost — `"drop-new"`
 * (default) refuses the incoming message, `"drop-oldest"` evicts the oldest queued one — and every
 * message lost is counted and logged (a summary at most every 10 s). A batch the store refuses for
 * its data (a permanent error: constraint, invalid text, too big) is split until the refused
 * message is found; that one is counted as `rejected` and logged, the others are written.
 *
 * Durability: a message is safe when its batch's transaction commits (`stats().written`). A kill
 * (SIGKILL, crash, power loss) loses what is queued and not yet committed. `close()` (SIGINT/SIGTERM
 * with the bundled CLI) writes everything queued first, waiting up to `closeTimeoutMs` for a
 * failing store; what is still not written then is counted (`lostOnClose`) and logged.
 *
 * Retention (`retentionMs`, off by default): every `retentionSweepMs` (and once shortly after the
 * start) messages whose EMQX timestamp is older than `retentionMs` are deleted, in chunks of
 * `RETENTION_CHUNK` rows, so a large backlog never holds a long lock.
 */
import type { HookHandler, Logger } from "../provider.js";
import { keep } from "../responses.js";
import { compileTopicFilters } from "../topic.js";
import type { Store, StoredMessage } from "./store.js";
import { backoffDelay, createLossLog, createOutageLog, errorText, isPermanentStoreError, pause } from "./store-retry.js";

/** Options of {@link createMessageWriter}. */
export interface MessageWriterOptions {
  readonly store: Store;
  /**
   * Most bytes of messages held in memory, queued or being written (payload plus an estimate of the
   * rest, see {@link messageBytes}). Default 128 MiB. With 200-byte payloads that is about 130,000
   * messages: a store outage of 60 s is ridden out below ~2,000 messages/s; raise it for more.
   */
  readonly maxQueueBytes?: number;
  /** Most messages per transaction. Default 500. */
  readonly batchSize?: number;
  /** Most bytes per transaction (a message larger than this goes alone). Default 4 MiB. */
  readonly batchBytes?: number;
  /** Longest a queued message waits before its batch is written, in ms. Default 200. */
  readonly flushMs?: number;
  /** What to lose when the queue is full. Default `"drop-new"`. */
  readonly overflow?: "drop-new" | "drop-oldest";
  /** First pause after a failed write, in ms; doubles per failure (with jitter). Default 100. */
  readonly retryMinMs?: number;
  /** Longest pause between attempts while the store is failing, in ms. Default 5000. */
  readonly retryMaxMs?: number;
  /** How long `close()` keeps trying to write what is queued to a failing store, in ms. Default 10000. */
  readonly closeTimeoutMs?: number;
  /** Receives store outages (start, every 30 s, end), losses and refused messages. */
  readonly logger?: Logger;
}

/**
 * Counters of the writer. Every message offered to `push` ends up in exactly one of them:
 * `received = written + duplicates + droppedOverflow + rejected + lostOnClose + queued + inFlight`.
 */
export interface MessageWriterStats {
  /** Messages offered to `push`. */
  readonly received: number;
  /** Messages committed by the store. */
  readonly written: number;
  /** Messages the store already had (same message id), not written again. */
  readonly duplicates: number;
  /** Messages lost to the bound: refused (drop-new, or larger than the whole bound) or evicted (drop-oldest). */
  readonly droppedOverflow: number;
  /** Messages the store refused for their data (permanent error); not retried. */
  readonly rejected: number;
  /** Messages still unwritten when `close()` stopped waiting for a failing store. */
  readonly lostOnClose: number;
  /** Messages waiting. */
  readonly queued: number;
  /** Messages in the batch being written (or retried). */
  readonly inFlight: number;
  /** Estimated bytes held: queued plus in flight (bounded by `maxQueueBytes`). */
  readonly heldBytes: number;
  /** Batches committed. */
  readonly batches: number;
  /** Write attempts that failed with a transient error (each was retried). */
  readonly failedAttempts: number;
  /** Store outages seen (runs of failed attempts). */
  readonly outages: number;
  /** How long the store has been failing, in ms; 0 when it is not. */
  readonly storeDownForMs: number;
}

/** The batching writer. */
export interface MessageWriter {
  /** Queues a message; never waits. Returns false when the message was refused (queue full, drop-new). */
  push(msg: StoredMessage): boolean;
  /**
   * Writes everything queued now; resolves when it is committed (or rejected), or after
   * `timeoutMs` (default: no limit) while the store is failing.
   */
  flush(timeoutMs?: number): Promise<void>;
  /** Flushes (waiting up to `closeTimeoutMs` for a failing store), then stops accepting messages. */
  close(): Promise<void>;
  stats(): MessageWriterStats;
}

/**
 * Memory a queued message takes, estimated: payload bytes, two bytes per character of its strings
 * (JS strings), 32 bytes per header and 512 bytes for the objects around them. Measured with 200-byte
 * payloads: about 880 bytes of heap and buffers per message against 1,030 estimated; the process's
 * RSS grows by about 1.4 times the estimate (allocator overhead).
 */
export function messageBytes(m: StoredMessage): number {
  let n = 512 + m.payload.byteLength + 2 * (m.id.length + m.topic.length + m.publisher.length + m.username.length + m.node.length);
  for (const k in m.headers) n += 2 * (k.length + (m.headers[k] as string).length) + 32;
  return n;
}

/** Creates the batching writer. */
export function createMessageWriter(options: MessageWriterOptions): MessageWriter {
  const maxQueueBytes = options.maxQueueBytes ?? 128 * 1024 * 1024;
  const batchSize = options.batchSize ?? 500;
  const batchBytes = options.batchBytes ?? 4 * 1024 * 1024;
  const flushMs = options.flushMs ?? 200;
  const overflow = options.overflow ?? "drop-new";
  const backoff = { minMs: options.retryMinMs ?? 100, maxMs: options.retryMaxMs ?? 5000 };
  const closeTimeoutMs = options.closeTimeoutMs ?? 10_000;
  const { store, logger } = options;
  let queue: StoredMessage[] = [];
  let sizes: number[] = [];
  let head = 0;
  let queuedBytes = 0;
  let inFlightBytes = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<void> | undefined;
  let closed = false;
  let flushing = 0;
  const abort = new AbortController();
  const s = { received: 0, written: 0, duplicates: 0, droppedOverflow: 0, rejected: 0, lostOnClose: 0, inFlight: 0, batches: 0 };
  const queued = () => queue.length - head;
  const held = () => ({ queued: queued() + s.inFlight, heldBytes: queuedBytes + inFlightBytes });
  const outage = createOutageLog("persistence", logger);
  const overflowLog = createLossLog("persistence: queue full (maxQueueBytes), messages dropped", logger);
  const rejectLog = createLossLog("persistence: messages refused by the store for their data, not retried", logger);

  function drop(n: number): void {
    s.droppedOverflow += n;
    overflowLog.lost(n, () => ({ policy: overflow, maxQueueBytes, ...held(), storeDown: outage.down }));
  }

  function schedule(): void {
    if (running) return;
    if (queued() >= batchSize || queuedBytes >= batchBytes || (flushing > 0 && queued() > 0)) {
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

  function takeBatch(): StoredMessage[] {
    let end = head;
    let bytes = 0;
    while (end < queue.length && end - head < batchSize && (end === head || bytes + (sizes[end] as number) <= batchBytes))
      bytes += sizes[end++] as number;
    const batch = queue.slice(head, end);
    head = end;
    queuedBytes -= bytes;
    inFlightBytes = bytes;
    s.inFlight = batch.length;
    if (head > 4096 && head * 2 > queue.length) {
      queue = queue.slice(head);
      sizes = sizes.slice(head);
      head = 0;
    }
    return batch;
  }

  async function drain(): Promise<void> {
    try {
      while (queued() > 0 && !abort.signal.aborted) {
        await writeBatch(takeBatch());
        s.inFlight = 0;
        inFlightBytes = 0;
        if (queued() < batchSize && queuedBytes < batchBytes && flushing === 0) break;
      }
    } finally {
      s.inFlight = 0;
      inFlightBytes = 0;
      running = undefined;
      if (!abort.signal.aborted) schedule();
    }
  }

  /** Writes one batch until every message in it is committed or refused (or close gives up). */
  async function writeBatch(batch: StoredMessage[]): Promise<void> {
    // A stack of parts still to write; a part refused for its data is split in two.
    const work: StoredMessage[][] = [batch];
    let attempt = 0;
    while (work.length > 0) {
      const part = work[work.length - 1] as StoredMessage[];
      try {
        const n = await store.insertMessages(part);
        work.pop();
        s.written += n;
        s.duplicates += part.length - n;
        s.inFlight -= part.length;
        s.batches++;
        attempt = 0;
        outage.succeeded(held);
      } catch (err) {
        if (isPermanentStoreError(err)) {
          work.pop();
          if (part.length > 1) {
            const mid = part.length >>> 1;
            work.push(part.slice(mid), part.slice(0, mid));
          } else {
            const m = part[0] as StoredMessage;
            s.rejected++;
            s.inFlight--;
            rejectLog.lost(1, () => ({ err: errorText(err), id: m.id, topic: m.topic, payloadBytes: m.payload.byteLength }));
          }
          continue;
        }
        outage.failed(err, held);
        if (!abort.signal.aborted) await pause(backoffDelay(attempt++, backoff), abort.signal);
        if (abort.signal.aborted) {
          const left = work.reduce((n, p) => n + p.length, 0);
          s.lostOnClose += left;
          s.inFlight -= left;
          return;
        }
      }
    }
  }

  async function flush(timeoutMs?: number): Promise<void> {
    flushing++;
    let timeout: ReturnType<typeof setTimeout> | undefined;
    try {
      if (timer) {
        clearTimeout(timer);
        timer = undefined;
      }
      const done = (async () => {
        while ((running || queued() > 0) && !abort.signal.aborted) {
          if (!running) running = drain();
          await running;
        }
      })();
      if (timeoutMs === undefined) await done;
      else await Promise.race([done, new Promise<void>((r) => (timeout = setTimeout(r, timeoutMs)))]);
    } finally {
      if (timeout) clearTimeout(timeout);
      flushing--;
    }
  }

  return {
    push(msg) {
      s.received++;
      if (closed) {
        drop(1);
        return false;
      }
      const size = messageBytes(msg);
      if (queuedBytes + inFlightBytes + size > maxQueueBytes) {
        if (overflow === "drop-oldest") {
          while (queued() > 0 && queuedBytes + inFlightBytes + size > maxQueueBytes) {
            queuedBytes -= sizes[head] as number;
            (queue as unknown[])[head] = undefined;
            head++;
            drop(1);
          }
        }
        if (queuedBytes + inFlightBytes + size > maxQueueBytes) {
          drop(1);
          return false;
        }
      }
      queue.push(msg);
      sizes.push(size);
      queuedBytes += size;
      schedule();
      return true;
    },
    flush,
    async close() {
      if (closed) return;
      const giveUp = setTimeout(() => abort.abort(), closeTimeoutMs);
      try {
        await flush();
      } finally {
        clearTimeout(giveUp);
        closed = true;
      }
      // What close gave up on: still queued (the batch being retried counted itself).
      const left = queued();
      if (left > 0) {
        s.lostOnClose += left;
        queue = [];
        sizes = [];
        head = 0;
        queuedBytes = 0;
      }
      if (s.lostOnClose > 0) {
        logger?.error(
          { lost: s.lostOnClose, closeTimeoutMs, storeDownForMs: outage.down ? Date.now() - outage.downSince : 0 },
          "persistence: closing with messages the store did not take; they are lost",
        );
      }
    },
    stats: () => ({
      ...s,
      queued: queued(),
      heldBytes: queuedBytes + inFlightBytes,
      failedAttempts: outage.failedAttempts,
      outages: outage.outages,
      storeDownForMs: outage.down ? Date.now() - outage.downSince : 0,
    }),
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
  /**
   * Pause between two chunks, in ms, so other writers of the same database (the server, when the
   * CLI prunes; message batches, when the server does) get the write lock in between. Default 10.
   */
  readonly chunkPauseMs?: number;
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
  const chunkPauseMs = options.chunkPauseMs ?? 10;
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
      if (chunkPauseMs > 0) await pause(chunkPauseMs);
    }
    s.sweeps++;
    if (total > 0) logger?.info({ deleted: total, olderThan: new Date(before).toISOString() }, "retention: deleted old messages");
    return total;
  }

  const sweep = () => (running ??= run().finally(() => (running = undefined)));
  const background = () =>
    void sweep().catch((err: unknown) => {
      s.failedSweeps++;
      logger?.error({ err: errorText(err) }, "retention sweep failed; retrying at the next one");
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
