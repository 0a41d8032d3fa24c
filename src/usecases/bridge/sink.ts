/**
 * The sink interface: what the bridge needs from an engine client. A sink sends a batch of outbox
 * rows and says, per row, whether the engine confirmed it (JetStream ack, RabbitMQ publisher
 * confirm, XADD reply). It does not retry, buffer or reorder: the forwarder does that with the
 * outbox. A new engine (Kafka, say) is one more module implementing {@link Sink} plus a factory
 * entry in sinks.ts and its config variant; nothing else changes.
 */
import type { OutboxRow } from "../store.js";

/** What happened to one row of a batch. */
export type SinkOutcome =
  /** Confirmed by the engine: the row can be deleted. */
  | null
  /**
   * Not confirmed. `rejected: true` when the engine answered that it will not take this message
   * (counts towards parking); false when the engine was not reached or did not answer in time
   * (retried after a backoff, never parked).
   */
  | { readonly error: string; readonly rejected: boolean };

/** Connection state changes a sink reports (the forwarder logs them and exposes health). */
export type SinkStatus = "connected" | "disconnected";

/** Callbacks of a sink. */
export interface SinkEvents {
  /** The engine connection came up or went down; `detail` names the server or the error. */
  status(status: SinkStatus, detail: string): void;
}

/** One engine client. */
export interface Sink {
  /** Sink name from the config (`bridge.sinks[].name`): metrics label, outbox key. */
  readonly name: string;
  /** `nats`, `rabbitmq`, `redis`. */
  readonly kind: string;
  /** Connects if not connected (idempotent). Rejects when the engine cannot be reached. */
  connect(): Promise<void>;
  /** Whether the engine connection is up now. */
  connected(): boolean;
  /**
   * Sends the rows, in order, pipelined, and resolves once every row has an outcome (same length
   * and order as `rows`), at the latest after the sink's confirm timeout. Never rejects.
   */
  send(rows: readonly OutboxRow[]): Promise<SinkOutcome[]>;
  /** Closes the connection; pending sends end with a not-confirmed outcome. */
  close(): Promise<void>;
}

/** The outcome for every row when a whole batch could not be sent. */
export function failAll(rows: readonly OutboxRow[], error: string, rejected = false): SinkOutcome[] {
  const o: SinkOutcome = { error, rejected };
  return rows.map(() => o);
}

/** A promise that rejects after `ms` (cleared when `work` settles first). */
export function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no confirm within ${ms} ms`)), ms);
  });
  return Promise.race([work, guard]).finally(() => clearTimeout(timer));
}
