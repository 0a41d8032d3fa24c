/**
 * Fair turns between connections. Node reads every readable socket once per turn of the event loop
 * and the transports would run every call read in that turn before polling again, so 64
 * connections with 100 calls each make one turn run 6,400 calls while a call on a 65th connection
 * (or a new connection's handshake) waits for all of them. The scheduler bounds the calls started
 * per turn (a time budget) and, once a turn's budget is spent, queues further calls per connection
 * and starts them round-robin, one per connection in turn, after the next poll: a connection with
 * one call waits for at most one call of every other connection, whatever they send.
 *
 * With `maxInFlight`, it also bounds the calls running at once (the Connect transport, whose
 * per-call machinery holds ~35 KB of heap per call in flight): calls beyond it wait, paused, in the
 * same fair queues (a paused stream is a few KB, and HTTP/2 flow control stops its sender).
 *
 * The hot path when nothing waits is a clock read and a comparison; queues exist only under load.
 */

/** Options of {@link createFairScheduler}. */
export interface FairSchedulerOptions {
  /** Time per event-loop turn spent starting calls before the rest waits for the next turn. Default 10 ms. */
  readonly budgetMs?: number;
  /** Calls running at once (each must be `release`d). Default: unbounded (no release needed). */
  readonly maxInFlight?: number;
}

/** A fair scheduler; `O` is the connection (any object). */
export interface FairScheduler<O extends object> {
  /**
   * Whether a call may start right now (nothing waits, budget and slots left); when true the caller
   * starts it at once (and counts as in flight). When false, the caller must {@link enqueue} it.
   */
  tryStart(): boolean;
  /** Queues a call behind its connection's earlier ones; `start` runs when its turn comes. */
  enqueue(owner: O, start: () => void): void;
  /** A call started with `maxInFlight` set has finished. */
  release(): void;
  /** Calls waiting now. */
  readonly waiting: number;
}

/** Creates a scheduler. */
export function createFairScheduler<O extends object>(options: FairSchedulerOptions = {}): FairScheduler<O> {
  const budgetMs = options.budgetMs ?? 10;
  const maxInFlight = options.maxInFlight ?? Infinity;
  // Without a bound nothing is counted (and nothing needs releasing).
  const bounded = Number.isFinite(maxInFlight);
  const queues = new Map<O, Array<() => void>>();
  const ring: O[] = [];
  let next = 0;
  let waiting = 0;
  let inFlight = 0;
  /** Start of the current turn's spending, or -1 when no turn is open. */
  let turnStart = -1;
  let drainScheduled = false;

  const endTurn = () => {
    turnStart = -1;
  };
  /** Whether this turn may still start calls (opens a turn on first use). */
  function budgetLeft(): boolean {
    const now = performance.now();
    if (turnStart < 0) {
      turnStart = now;
      setImmediate(endTurn);
      return true;
    }
    return now - turnStart < budgetMs;
  }

  function drain(): void {
    drainScheduled = false;
    while (waiting > 0 && inFlight < maxInFlight && budgetLeft()) {
      if (next >= ring.length) next = 0;
      const owner = ring[next] as O;
      const queue = queues.get(owner) as Array<() => void>;
      const start = queue.shift() as () => void;
      waiting--;
      if (queue.length === 0) {
        queues.delete(owner);
        ring.splice(next, 1);
      } else next++;
      if (bounded) inFlight++;
      try {
        start();
      } catch {
        // A start that throws is the caller's bug; the queue must keep moving.
      }
    }
    if (waiting > 0 && inFlight < maxInFlight) schedule();
  }
  function schedule(): void {
    if (drainScheduled) return;
    drainScheduled = true;
    setImmediate(drain);
  }

  return {
    tryStart() {
      if (waiting > 0 || inFlight >= maxInFlight || !budgetLeft()) return false;
      if (bounded) inFlight++;
      return true;
    },
    enqueue(owner, start) {
      let queue = queues.get(owner);
      if (queue === undefined) {
        queues.set(owner, (queue = []));
        ring.push(owner);
      }
      queue.push(start);
      waiting++;
      if (inFlight < maxInFlight) schedule();
    },
    release() {
      if (!bounded) return;
      inFlight--;
      if (waiting > 0) schedule();
    },
    get waiting() {
      return waiting;
    },
  };
}
