/**
 * The forwarder of one sink: moves outbox rows to the engine and deletes them once confirmed.
 *
 * One loop, two batches in flight: lease partitions (renewed every `leaseMs / 3`, between batches),
 * fetch the pending rows of the held partitions in commit order after the last one sent, send them
 * pipelined while the previous batch's confirms arrive, then land the previous batch: wait for
 * every confirm (or the confirm timeout) and settle it (confirmed rows are deleted, refused rows
 * count an attempt and are parked at `maxAttempts`, unconfirmed rows stay). The settlement runs
 * while the next batch is fetched. After a failure, or when idle, fetching starts again from the
 * oldest row once the settlement is done, so a client's messages reach the engine in commit order
 * across outages, reconnects and restarts (re-sent rows carry the same id). A message the engine
 * refuses while it accepts the ones after it (a JetStream subject no stream takes, say) is
 * retried and so arrives after them, or is parked.
 *
 * After a failure the loop waits a full-jitter exponential backoff (`initialMs` … `maxMs`) before
 * sending again; the lease keeps being renewed while it waits. Idle, it wakes on a commit from
 * this process (after `lingerMs`, to fill a batch) or every `pollMs` (rows committed by another
 * instance, or left by a previous run).
 */
import { hostname } from "node:os";
import { performance } from "node:perf_hooks";
import type { Logger } from "../../provider.js";
import type { OutboxRow, Store } from "../store.js";
import { backoffDelay } from "../store-retry.js";
import { parseOwner } from "./outbox-shared.js";
import type { Sink, SinkOutcome } from "./sink.js";

/** What the forwarder reports to metrics. */
export interface ForwarderObserver {
  delivered(n: number): void;
  failed(n: number, reason: "unreachable" | "rejected"): void;
  retried(n: number): void;
  parked(n: number): void;
  confirmSeconds(s: number): void;
  partitions(n: number): void;
  /** A connection attempt to the engine failed. */
  connectFailed(): void;
}

/** Options of {@link createForwarder}. */
export interface ForwarderOptions {
  readonly sink: Sink;
  readonly store: Store;
  /** This instance's owner id (`host/pid/random`, see {@link newOwnerId}). */
  readonly owner: string;
  readonly partitions: number;
  readonly leaseMs: number;
  readonly pollMs: number;
  readonly batchSize: number;
  readonly lingerMs: number;
  readonly retry: { readonly initialMs: number; readonly maxMs: number; readonly maxAttempts: number };
  readonly observer?: ForwarderObserver;
  readonly logger?: Logger;
  /** Random numbers in [0, 1) for the jitter. Default `Math.random`. */
  readonly random?: () => number;
}

/** Counters of one forwarder. */
export interface ForwarderStats {
  readonly delivered: number;
  readonly unreachable: number;
  readonly rejected: number;
  readonly retried: number;
  readonly parked: number;
  readonly batches: number;
  /** Failed connection attempts to the engine. */
  readonly connectFailures: number;
  /** Consecutive failed rounds now (0 when the last send went through). */
  readonly failing: number;
  readonly partitions: number[];
  readonly connected: boolean;
  readonly lastError: string;
}

/** A running forwarder. */
export interface Forwarder {
  /** Starts the loop (once). */
  start(): void;
  /** Rows were committed for this sink by this process: wake up (after the linger). */
  notify(rows: number): void;
  /** Stops after the batch in flight, gives up the leases. */
  stop(): Promise<void>;
  stats(): ForwarderStats;
}

/** A new owner id for this process: `host/pid/random`. The host and pid let a restart on the same host take a dead owner's leases at once. */
export function newOwnerId(): string {
  return `${hostname()}/${process.pid}/${Math.random().toString(36).slice(2, 8)}`;
}

/** Whether a process of this host with that pid still exists. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Creates the forwarder of one sink. */
export function createForwarder(options: ForwarderOptions): Forwarder {
  const { sink, store, owner, partitions, leaseMs, pollMs, batchSize, lingerMs, retry, observer, logger } = options;
  const random = options.random ?? Math.random;
  const host = hostname();
  const renewEvery = Math.max(50, Math.floor(leaseMs / 3));
  const s = { delivered: 0, unreachable: 0, rejected: 0, retried: 0, parked: 0, batches: 0, connectFailures: 0 };
  let held: number[] = [];
  let nextLeaseAt = 0;
  let expire: string[] = [];
  let failing = 0;
  let retryAt = 0;
  let lastError = "";
  let hint = 0;
  let stopped = false;
  let loop: Promise<void> | undefined;
  /** Rows that failed in the last round: sending them again counts as a retry. */
  const failedSeqs = new Set<number>();
  let wake: (() => void) | undefined;
  let lingerTimer: ReturnType<typeof setTimeout> | undefined;

  /** Waits `ms`, or until `notify`/`stop` when `interruptible`. */
  function pause(ms: number, interruptible: boolean): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, Math.max(0, ms));
      function done() {
        clearTimeout(t);
        if (wake === done) wake = undefined;
        resolve();
      }
      if (interruptible || stopped) wake = done;
      else wake = () => (stopped ? done() : undefined);
    });
  }

  // Jitter over the upper half: never a busy retry, and instances do not retry in step.
  const backoff = (): number => backoffDelay(failing - 1, { minMs: retry.initialMs, maxMs: retry.maxMs, random });

  async function lease(): Promise<void> {
    const before = held.join(",");
    const r = await store.outboxLease(sink.name, owner, { partitions, leaseMs, expireOwners: expire });
    expire = [];
    held = r.held;
    nextLeaseAt = Date.now() + renewEvery;
    observer?.partitions(held.length);
    if (held.join(",") !== before) {
      cursor = 0;
      logger?.info({ sink: sink.name, owner, partitions: held, others: r.others.length }, "bridge: outbox partitions held");
    }
    // A dead process of this host (a crash, kill -9) still holds leases until they expire: free them now.
    for (const o of r.others) {
      const p = parseOwner(o);
      if (p && p.host === host && p.pid !== process.pid && !alive(p.pid)) expire.push(o);
    }
    if (expire.length > 0) {
      logger?.info({ sink: sink.name, dead: expire }, "bridge: taking over the outbox partitions of a dead process");
      nextLeaseAt = 0;
    }
  }

  function fail(error: string): void {
    failing++;
    lastError = error;
    retryAt = Date.now() + backoff();
  }

  /** A batch on its way: sent, confirms not yet all in. */
  interface Flight {
    readonly rows: readonly OutboxRow[];
    readonly sent: Promise<SinkOutcome[]>;
    readonly t0: number;
  }
  let flight: Flight | undefined;
  /** Rows after this seq are fetched next (reset to 0 after a failure, when idle, when partitions change). */
  let cursor = 0;
  /** The next batch, read ahead after the rows up to `after` were sent (dropped when the cursor moved elsewhere). */
  let prefetch: { readonly after: number; readonly rows: Promise<readonly OutboxRow[]> } | undefined;

  function launch(rows: readonly OutboxRow[]): Flight {
    let retried = 0;
    for (const r of rows) if (failedSeqs.has(r.seq)) retried++;
    if (retried > 0) {
      s.retried += retried;
      observer?.retried(retried);
    }
    cursor = (rows[rows.length - 1] as OutboxRow).seq;
    const t0 = performance.now();
    let sent: Promise<SinkOutcome[]>;
    try {
      sent = sink.send(rows).catch((err: unknown) => rows.map(() => ({ error: (err as Error).message, rejected: false })));
    } catch (err) {
      sent = Promise.resolve(rows.map(() => ({ error: (err as Error).message, rejected: false })));
    }
    return { rows, sent, t0 };
  }

  /**
   * The store settlement of the last landed batch, while it runs: it overlaps the next fetch (with
   * PostgreSQL, two round trips on two connections instead of one after the other). At most one
   * runs; it is awaited before the next one starts, before any fetch from the oldest row (a row
   * being deleted must not be fetched again), and before leases change or the loop stops.
   */
  let settling: Promise<void> | undefined;
  /** Why the settlement failed (a store error), thrown by {@link settled}. */
  let settleError: unknown;

  /** Waits for the settlement in progress; throws its error (the loop then backs off and sends unsettled rows again). */
  async function settled(): Promise<void> {
    const p = settling;
    settling = undefined;
    if (p) await p;
    if (settleError !== undefined) {
      const e = settleError;
      settleError = undefined;
      throw e;
    }
  }

  /** Waits for a flight's confirms and starts settling it in the store; resolves with the first error, or "" when all were confirmed. */
  async function land(f: Flight): Promise<string> {
    const outcomes = await f.sent;
    observer?.confirmSeconds((performance.now() - f.t0) / 1000);
    const delivered: number[] = [];
    const rejected: Array<{ seq: number; error: string }> = [];
    const failed = new Set<number>();
    let unreachable = 0;
    let firstError = "";
    f.rows.forEach((r, i) => {
      const o = outcomes[i];
      if (o === null) delivered.push(r.seq);
      else {
        failed.add(r.seq);
        if (!firstError) firstError = o?.error ?? "no outcome";
        if (o?.rejected) rejected.push({ seq: r.seq, error: o.error });
        else unreachable++;
      }
    });
    // Only for the retries metric; bounded so a long outage cannot grow it without limit.
    if (failedSeqs.size > 100_000) failedSeqs.clear();
    for (const seq of failed) failedSeqs.add(seq);
    for (const seq of delivered) failedSeqs.delete(seq);
    s.batches++;
    if (failed.size > 0 && failing === 0)
      logger?.warn(
        { sink: sink.name, failed: failed.size, of: f.rows.length, err: firstError },
        "bridge: engine did not confirm; retrying with backoff",
      );
    // One settlement at a time: the previous one ends before this one starts.
    await settled();
    settling = (async () => {
      const r = await store.outboxSettle(sink.name, { delivered, rejected, maxAttempts: retry.maxAttempts });
      s.delivered += delivered.length;
      s.rejected += rejected.length;
      s.unreachable += unreachable;
      s.parked += r.parked;
      if (delivered.length) observer?.delivered(delivered.length);
      if (rejected.length) observer?.failed(rejected.length, "rejected");
      if (unreachable) observer?.failed(unreachable, "unreachable");
      if (r.parked > 0) {
        observer?.parked(r.parked);
        logger?.error(
          { sink: sink.name, parked: r.parked, maxAttempts: retry.maxAttempts, err: firstError },
          "bridge: messages parked after repeated refusals (emqx-exhook outbox replay to retry them)",
        );
      }
    })().catch((err: unknown) => {
      settleError ??= err;
    });
    return firstError;
  }

  /** Lands the batch in flight, if any, and waits for its settlement (before leases change, on stop). */
  async function landFlight(): Promise<void> {
    const f = flight;
    flight = undefined;
    if (f) {
      const err = await land(f);
      if (err) {
        cursor = 0;
        fail(err);
      }
    }
    await settled();
  }

  /**
   * One step: fetch the next batch (while the previous one awaits its confirms: two batches in
   * flight), send it, then land the previous one. A failure in the previous batch stops there:
   * the newer one is landed too, and everything unconfirmed is sent again, oldest first, after
   * the backoff. With two batches in flight on one connection, a connection failure or timeout
   * cannot deliver a later message of a client before an earlier one for the first time (the
   * engine reads the connection in order); re-sends are duplicates with the same id.
   */
  async function step(): Promise<"busy" | "idle" | "wait"> {
    if (!sink.connected()) {
      await landFlight();
      if (Date.now() < retryAt) return "wait";
      try {
        await sink.connect();
      } catch (err) {
        const msg = (err as Error).message;
        s.connectFailures++;
        observer?.connectFailed();
        if (failing === 0 || msg !== lastError)
          logger?.warn({ sink: sink.name, kind: sink.kind, err: msg }, "bridge: cannot connect to the engine; retrying with backoff");
        fail(msg);
        return "wait";
      }
    }
    // From the oldest row again: what is being settled must be gone first. A failed settlement throws here.
    if (cursor === 0 || settleError !== undefined) await settled();
    let rows: readonly OutboxRow[] = [];
    if (!flight || flight.rows.length >= batchSize) {
      const pf = prefetch;
      prefetch = undefined;
      rows = pf && pf.after === cursor ? await pf.rows : await store.outboxFetch(sink.name, partitions, held, batchSize, cursor);
    }
    const next = rows.length > 0 ? launch(rows) : undefined;
    if (next && rows.length >= batchSize) {
      // More rows are likely: read the next batch while this one is sent and the previous one
      // lands (a store round trip off the critical path). Used only if the cursor is still there.
      const after = cursor;
      const p = store.outboxFetch(sink.name, partitions, held, batchSize, after);
      p.catch(() => undefined);
      prefetch = { after, rows: p };
    }
    const prev = flight;
    flight = next;
    if (prev) {
      const err = await land(prev);
      if (err) {
        await landFlight();
        cursor = 0;
        fail(err);
        return "wait";
      }
      if (failing > 0) logger?.info({ sink: sink.name, afterFailedRounds: failing }, "bridge: engine confirms again");
      failing = 0;
      lastError = "";
    }
    if (flight) return "busy";
    cursor = 0;
    return "idle";
  }

  async function run(): Promise<void> {
    while (!stopped) {
      try {
        if (Date.now() >= nextLeaseAt) {
          // Partitions may be released: nothing of theirs may still be in flight.
          await landFlight();
          await lease();
        }
        const now = Date.now();
        if (now < retryAt) {
          await landFlight();
          await pause(Math.min(retryAt, nextLeaseAt) - now, false);
          continue;
        }
        if (held.length === 0) {
          await landFlight();
          await pause(Math.min(pollMs, nextLeaseAt - now), true);
          continue;
        }
        const r = await step();
        if (r === "idle") {
          hint = 0;
          await pause(Math.min(pollMs, nextLeaseAt - Date.now()), true);
        }
      } catch (err) {
        // The store failed (lease, fetch or settle): unsettled rows stay and are sent again.
        flight = undefined;
        cursor = 0;
        // A settlement still running ends (or fails) before anything is fetched again.
        await settled().catch(() => undefined);
        const msg = (err as Error).message;
        if (failing === 0 || msg !== lastError)
          logger?.error({ sink: sink.name, err: msg }, "bridge: outbox store error; retrying with backoff");
        fail(msg);
        // A failed lease is tried again after the backoff too (never in a tight loop: a store that
        // fails at once, such as a closed pool, would otherwise starve the event loop).
        if (nextLeaseAt <= Date.now()) nextLeaseAt = retryAt;
      }
    }
    await landFlight().catch(() => undefined);
  }

  return {
    start() {
      loop ??= run();
    },
    notify(rows) {
      hint += rows;
      if (!wake) return;
      if (hint >= batchSize || lingerMs === 0) {
        if (lingerTimer) clearTimeout(lingerTimer);
        lingerTimer = undefined;
        wake();
      } else if (!lingerTimer) {
        lingerTimer = setTimeout(() => {
          lingerTimer = undefined;
          wake?.();
        }, lingerMs);
        lingerTimer.unref?.();
      }
    },
    async stop() {
      stopped = true;
      if (lingerTimer) clearTimeout(lingerTimer);
      wake?.();
      await loop;
      await store
        .outboxRelease(sink.name, owner)
        .catch((err: unknown) => logger?.warn({ sink: sink.name, err: (err as Error).message }, "bridge: could not release outbox leases"));
    },
    stats: () => ({ ...s, failing, partitions: [...held], connected: sink.connected(), lastError }),
  };
}
