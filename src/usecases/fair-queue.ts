/**
 * A bounded, fair work queue for expensive jobs (password hashes): at most `concurrency` run at
 * once, the rest wait in per-key queues served round-robin, so a flood from one key (a peer
 * address) waits behind itself instead of in front of everyone else. Two priority classes: jobs of
 * class 0 (e.g. a user logging in from an address that logged in as that user before) are started
 * before any of class 1.
 *
 * Work is abandoned when nobody waits for it any more: a job whose `signal` aborts while queued is
 * removed at once, and a job whose `deadline` cannot be met (less time left than a recent job took)
 * is dropped when its turn comes instead of being run for nothing. A job that already runs is not
 * interrupted (scrypt on the thread pool cannot be), which bounds the wasted work to `concurrency`
 * jobs.
 *
 * Bounds: `maxQueued` jobs in all, `maxQueuedPerKey` per key; beyond them a job is refused at once.
 */

/** Why a job did not run. */
export type QueueRefusal = "full" | "abandoned" | "closed";

/** Thrown (as the rejection of `run`) when a job did not run. */
export class QueueRefusedError extends Error {
  constructor(readonly reason: QueueRefusal) {
    super(reason === "full" ? "work queue full" : reason === "abandoned" ? "work abandoned: its caller is gone or out of time" : "work queue closed");
    this.name = "QueueRefusedError";
  }
}

/** Options of {@link createFairQueue}. */
export interface FairQueueOptions {
  /** Jobs running at once. */
  readonly concurrency: number;
  /** Jobs waiting, at most, over all keys. Default 1000. */
  readonly maxQueued?: number;
  /** Jobs waiting, at most, per key. Default 32. */
  readonly maxQueuedPerKey?: number;
  /** Clock, for tests. Default `Date.now`. */
  readonly now?: () => number;
}

/** Per-job options of {@link FairQueue.run}. */
export interface JobOptions {
  /** 0 = served first, 1 = the rest. Default 1. */
  readonly priority?: 0 | 1;
  /** Aborting it removes the job from the queue (the promise rejects with reason `abandoned`). */
  readonly signal?: AbortSignal | undefined;
  /** `Date.now()` ms after which the result is useless; the job is dropped if it cannot finish by then. */
  readonly deadline?: number | undefined;
}

/** Counters of a queue. */
export interface FairQueueStats {
  readonly running: number;
  readonly queued: number;
  /** Jobs started. */
  readonly started: number;
  /** Jobs refused because a bound was reached. */
  readonly refusedFull: number;
  /** Jobs dropped because their caller left or their deadline could not be met. */
  readonly abandoned: number;
  /** Smoothed duration of a job, in ms (what the deadline check uses). */
  readonly jobMs: number;
}

/** What {@link createFairQueue} returns. */
export interface FairQueue {
  /** Runs `job` when its turn comes; rejects with {@link QueueRefusedError} when it does not run. */
  run<T>(key: string, job: () => Promise<T>, options?: JobOptions): Promise<T>;
  stats(): FairQueueStats;
  /** Refuses every waiting job (reason `closed`) and every later one; running jobs finish. */
  close(): void;
}

interface Job {
  readonly key: string;
  readonly lane: Map<string, Job[]>;
  readonly start: () => void;
  readonly refuse: (reason: QueueRefusal) => void;
  readonly deadline: number | undefined;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
}

/** Creates a fair queue. */
export function createFairQueue(options: FairQueueOptions): FairQueue {
  const concurrency = Math.max(1, Math.floor(options.concurrency));
  const maxQueued = options.maxQueued ?? 1000;
  const maxPerKey = options.maxQueuedPerKey ?? 32;
  const now = options.now ?? Date.now;
  // One lane per priority; in each, per-key FIFO queues in round-robin order (Map insertion order).
  const lanes: [Map<string, Job[]>, Map<string, Job[]>] = [new Map(), new Map()];
  let running = 0;
  let queued = 0;
  let started = 0;
  let refusedFull = 0;
  let abandoned = 0;
  let jobMs = 0;
  let closed = false;

  function remove(job: Job): boolean {
    const list = job.lane.get(job.key);
    const i = list ? list.indexOf(job) : -1;
    if (!list || i < 0) return false;
    list.splice(i, 1);
    if (list.length === 0) job.lane.delete(job.key);
    queued--;
    job.signal?.removeEventListener("abort", job.onAbort);
    return true;
  }

  function next(): Job | undefined {
    for (const lane of lanes) {
      for (const [key, list] of lane) {
        const job = list.shift() as Job;
        // Move the key to the back of the round.
        lane.delete(key);
        if (list.length > 0) lane.set(key, list);
        queued--;
        job.signal?.removeEventListener("abort", job.onAbort);
        return job;
      }
    }
    return undefined;
  }

  function pump(): void {
    while (running < concurrency) {
      const job = next();
      if (!job) return;
      // A job that cannot finish before its deadline would only take a slot from one that can.
      if (job.deadline !== undefined && now() + jobMs > job.deadline) {
        abandoned++;
        job.refuse("abandoned");
        continue;
      }
      running++;
      started++;
      job.start();
    }
  }

  return {
    run<T>(key: string, work: () => Promise<T>, opts: JobOptions = {}): Promise<T> {
      if (closed) return Promise.reject(new QueueRefusedError("closed"));
      if (opts.signal?.aborted) {
        abandoned++;
        return Promise.reject(new QueueRefusedError("abandoned"));
      }
      const lane = lanes[opts.priority === 0 ? 0 : 1];
      return new Promise<T>((resolve, reject) => {
        const job: Job = {
          key,
          lane,
          deadline: opts.deadline,
          signal: opts.signal,
          start: () => {
            const t0 = now();
            let p: Promise<T>;
            try {
              p = work();
            } catch (err) {
              p = Promise.reject(err);
            }
            p.then(resolve, reject).finally(() => {
              const took = now() - t0;
              jobMs = jobMs === 0 ? took : jobMs * 0.8 + took * 0.2;
              running--;
              pump();
            });
          },
          refuse: (reason) => reject(new QueueRefusedError(reason)),
          onAbort: () => {
            if (remove(job)) {
              abandoned++;
              job.refuse("abandoned");
            }
          },
        };
        let list = lane.get(key);
        if (running < concurrency && queued === 0) {
          running++;
          started++;
          job.start();
          return;
        }
        if (queued >= maxQueued || (list !== undefined && list.length >= maxPerKey)) {
          refusedFull++;
          job.refuse("full");
          return;
        }
        if (!list) lane.set(key, (list = []));
        list.push(job);
        queued++;
        opts.signal?.addEventListener("abort", job.onAbort, { once: true });
        pump();
      });
    },
    stats: () => ({ running, queued, started, refusedFull, abandoned, jobMs: Math.round(jobMs * 10) / 10 }),
    close() {
      closed = true;
      for (const lane of lanes) {
        for (const list of lane.values()) {
          for (const job of list) {
            job.signal?.removeEventListener("abort", job.onAbort);
            job.refuse("closed");
          }
        }
        lane.clear();
      }
      queued = 0;
    },
  };
}
