/**
 * A small message bus between the processes of `emqx-exhook serve --workers N` (node:cluster):
 * what one worker publishes reaches every other worker, through the primary. Outside a cluster
 * (one process) publishing reaches nobody else and subscribers see only what the process itself
 * publishes with `{ self: true }`.
 *
 * Used for state that must be the same in every worker: what an EMQX node told one worker
 * (legacy `ResponsedType` numbering), cache invalidations, and the like. Messages are plain data
 * (structured-clone-able, as `process.send` requires); nothing is delivered across machines.
 *
 * `sticky` messages are also kept by the primary (the last one per channel) and replayed to every
 * worker that starts later, so a worker replacing a dead one learns what the others know.
 */
import cluster, { type Worker } from "node:cluster";

/** The envelope on the IPC channel; the key marks our messages among any others. */
interface BusEnvelope {
  readonly exhookBus: 1;
  readonly channel: string;
  readonly data: unknown;
  readonly sticky: boolean;
}

/** A subscriber; called once per message, never for the publisher's own message unless `self`. */
export type BusListener = (data: unknown) => void;

/** Publishing options. */
export interface PublishOptions {
  /** Keep the message in the primary and replay it to workers that start later. Default false. */
  readonly sticky?: boolean;
  /** Also deliver to this process's own subscribers. Default false. */
  readonly self?: boolean;
}

/** The bus as one process sees it. */
export interface ClusterBus {
  /** Sends `data` on `channel` to every other worker (and to this one with `self`). */
  publish(channel: string, data: unknown, options?: PublishOptions): void;
  /** Calls `fn` for each message on `channel`; returns the unsubscribe function. */
  subscribe(channel: string, fn: BusListener): () => void;
  /** Whether other processes can be reached (this process is a cluster worker). */
  readonly clustered: boolean;
}

function isEnvelope(msg: unknown): msg is BusEnvelope {
  return typeof msg === "object" && msg !== null && (msg as { exhookBus?: unknown }).exhookBus === 1;
}

let processBus: ClusterBus | undefined;

/** The bus of this process (one per process; created on first use). */
export function clusterBus(): ClusterBus {
  if (processBus) return processBus;
  const listeners = new Map<string, Set<BusListener>>();
  const deliver = (channel: string, data: unknown) => {
    for (const fn of listeners.get(channel) ?? []) {
      try {
        fn(data);
      } catch {
        // A listener's failure is its own; the others still get the message.
      }
    }
  };
  const clustered = cluster.isWorker && typeof process.send === "function";
  if (clustered) {
    process.on("message", (msg: unknown) => {
      if (isEnvelope(msg)) deliver(msg.channel, msg.data);
    });
  }
  processBus = {
    clustered,
    publish(channel, data, options = {}) {
      if (options.self) deliver(channel, data);
      if (clustered && process.connected) {
        const envelope: BusEnvelope = { exhookBus: 1, channel, data, sticky: options.sticky ?? false };
        process.send?.(envelope, undefined, {}, () => {});
      }
    },
    subscribe(channel, fn) {
      let set = listeners.get(channel);
      if (!set) listeners.set(channel, (set = new Set()));
      set.add(fn);
      return () => set.delete(fn);
    },
  };
  return processBus;
}

/**
 * Runs the primary's side of the bus: relays every worker's message to the other workers and
 * replays sticky messages to workers as they come online. Call once in the primary, before forking.
 */
export function relayClusterBus(): void {
  const sticky = new Map<string, BusEnvelope>();
  const send = (w: Worker, msg: BusEnvelope) => {
    if (w.isConnected()) w.send(msg, undefined, () => {});
  };
  cluster.on("message", (from: Worker, msg: unknown) => {
    if (!isEnvelope(msg)) return;
    if (msg.sticky) sticky.set(msg.channel, msg);
    for (const w of Object.values(cluster.workers ?? {})) if (w && w.id !== from.id) send(w, msg);
  });
  cluster.on("online", (w: Worker) => {
    for (const msg of sticky.values()) send(w, msg);
  });
}

/** A question from the primary to a worker (request/response next to the bus's publish/subscribe). */
interface AskEnvelope {
  readonly exhookAsk: 1;
  readonly id: number;
  readonly channel: string;
  readonly data: unknown;
}

/** A worker's answer. */
interface ReplyEnvelope {
  readonly exhookReply: 1;
  readonly id: number;
  readonly ok: boolean;
  readonly data: unknown;
}

/** One worker's answer to {@link askWorkers}. */
export interface WorkerAnswer {
  readonly pid: number;
  /** false when the worker's handler threw (`data` is the message) or it did not answer in time. */
  readonly ok: boolean;
  readonly data: unknown;
}

const answerers = new Map<string, (data: unknown) => unknown>();
let answering = false;

/**
 * In a worker: answers the primary's questions on `channel` with `fn` (its result, or the message
 * of what it threw). Outside a cluster it does nothing.
 */
export function answerPrimary(channel: string, fn: (data: unknown) => unknown): void {
  if (!cluster.isWorker || typeof process.send !== "function") return;
  answerers.set(channel, fn);
  if (answering) return;
  answering = true;
  process.on("message", (msg: unknown) => {
    const ask = msg as AskEnvelope;
    if (typeof msg !== "object" || msg === null || ask.exhookAsk !== 1) return;
    const handler = answerers.get(ask.channel);
    const reply = (ok: boolean, data: unknown) => {
      if (process.connected) process.send?.({ exhookReply: 1, id: ask.id, ok, data } satisfies ReplyEnvelope, undefined, {}, () => {});
    };
    if (!handler) return reply(false, `no answer on ${ask.channel}`);
    Promise.resolve()
      .then(() => handler(ask.data))
      .then(
        (data) => reply(true, data),
        (err: unknown) => reply(false, (err as Error)?.message ?? String(err)),
      );
  });
}

let nextAsk = 1;
const waiting = new Map<number, (reply: ReplyEnvelope) => void>();
let collecting = false;

/**
 * In the primary: asks `workers` (default: every connected worker) on `channel` and resolves with
 * one answer per worker, in the same order; a worker silent for `timeoutMs` answers `ok: false`.
 */
export function askWorkers(
  channel: string,
  data: unknown,
  options: { timeoutMs?: number; workers?: readonly Worker[] } = {},
): Promise<WorkerAnswer[]> {
  if (!collecting) {
    collecting = true;
    cluster.on("message", (_w: Worker, msg: unknown) => {
      const reply = msg as ReplyEnvelope;
      if (typeof msg === "object" && msg !== null && reply.exhookReply === 1) waiting.get(reply.id)?.(reply);
    });
  }
  const targets = options.workers ?? Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && w.isConnected());
  const timeoutMs = options.timeoutMs ?? 2000;
  return Promise.all(
    targets.map(
      (w) =>
        new Promise<WorkerAnswer>((resolve) => {
          const id = nextAsk++;
          const pid = w.process.pid ?? 0;
          const timer = setTimeout(() => {
            waiting.delete(id);
            resolve({ pid, ok: false, data: `worker ${pid} did not answer within ${timeoutMs} ms` });
          }, timeoutMs);
          waiting.set(id, (reply) => {
            clearTimeout(timer);
            waiting.delete(id);
            resolve({ pid, ok: reply.ok, data: reply.data });
          });
          try {
            w.send({ exhookAsk: 1, id, channel, data } satisfies AskEnvelope, undefined, () => {});
          } catch {
            // A worker that is going away: the timer answers for it.
          }
        }),
    ),
  );
}
