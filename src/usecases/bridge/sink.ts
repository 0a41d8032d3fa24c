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

/** The outcomes of one batch, filled in as the engine's confirms arrive (see {@link batchOutcomes}). */
export interface BatchOutcomes {
  /** Records row `i`'s outcome; only the first one for a row counts. */
  set(i: number, outcome: SinkOutcome): void;
  /** Whether row `i` has its outcome. */
  has(i: number): boolean;
  /** Resolves once every row has its outcome. */
  readonly all: Promise<void>;
  /** Every row's outcome; a row still without one failed with `error` (not reached: retried, never parked). */
  result(error: string): SinkOutcome[];
}

/** Collects the outcomes of a batch of `n` rows whose confirms arrive one by one. */
export function batchOutcomes(n: number): BatchOutcomes {
  const outcomes: Array<SinkOutcome | undefined> = new Array(n);
  let left = n;
  let finish!: () => void;
  const all = new Promise<void>((resolve) => (finish = resolve));
  if (n === 0) finish();
  return {
    set(i, outcome) {
      if (outcomes[i] !== undefined) return;
      outcomes[i] = outcome;
      if (--left === 0) finish();
    },
    has: (i) => outcomes[i] !== undefined,
    all,
    result(error) {
      for (let i = 0; i < n; i++) if (outcomes[i] === undefined) outcomes[i] = { error, rejected: false };
      return outcomes as SinkOutcome[];
    },
  };
}
