/**
 * A bounded, fair work queue for expensive jobs (password hashes): at most `concurrency` run at
 * once, the rest wait in per-key queues (a key is a peer address). The next job comes from the
 * waiting key that asked for the least work recently (a score of jobs submitted, halving every
 * `usageHalfLifeMs`): a key that floods has a high score and waits behind everyone else, while a
 * key that has not been seen for a while (a real user's first login) is served next. Keys with
 * equal scores take turns. Two priority classes: jobs of class 0 (e.g. a user logging in from an
 * address that logged in as that user before) are started before any of class 1.
 *
 * Work is abandoned when nobody waits for it any more: a job whose `signal` aborts while queued is
 * removed at once, and a job whose `deadline` cannot be met (less time left than a recent job took)
 * is dropped when its turn comes instead of being run for nothing (or at once, when the jobs of its
 * own key waiting ahead of it already take longer than it has). A job that already runs is not
 * interrupted (scrypt on the thread pool cannot be), which bounds the wasted work to `concurrency`
 * jobs.
 *
 * Bounds: `maxQueued` jobs in all, `maxQueuedPerKey` per key. A job over its key's bound is
 * refused at once; when the whole queue is full, a job of a key that asked for less than the heaviest
 * waiting key takes the place of that key's newest job (which is refused), so a flood from many
 * addresses cannot fill the queue against a newcomer.
 */

/** Why a job did not run. */
export type QueueRefusal = "full" | "abandoned" | "closed";

/** Thrown (as the rejection of `run`) when a job did not run. */
export class QueueRefusedError extends Error {
  constructor(readonly reason: QueueRefusal) {
    super(
      reason === "full"
        ? "work queue full"
        : reason === "abandoned"
          ? "work abandoned: its caller is gone or out of time"
          : "work queue closed",
    );
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
  /**
   * Extra slots, above `concurrency`, only for a key with no other recent request (score under
   * 1.5): a real user's first login does not wait for a running hash of the flood. Default 0.
   */
  readonly expressSlots?: number;
  /** How fast a key's usage score is forgotten: it halves every this many ms. Default 10000. */
  readonly usageHalfLifeMs?: number;
  /** Most keys whose usage is remembered (least recently used forgotten). Default 10000. */
  readonly maxKeys?: number;
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
  const halfLife = options.usageHalfLifeMs ?? 10_000;
  const express = Math.max(0, Math.floor(options.expressSlots ?? 0));
  const EXPRESS_SCORE = 1.5;
  const maxKeys = options.maxKeys ?? 10_000;
  // One lane per priority; in each, per-key FIFO queues (Map insertion order breaks ties).
  const lanes: [Map<string, Job[]>, Map<string, Job[]>] = [new Map(), new Map()];
  // Recent work per key: a score that halves every halfLife ms.
  const usage = new Map<string, { score: number; at: number }>();
  const usageOf = (key: string, t: number): number => {
    const u = usage.get(key);
    return u ? u.score * 2 ** (-(t - u.at) / halfLife) : 0;
  };
  const charge = (key: string, t: number) => {
    const score = usageOf(key, t) + 1;
    usage.delete(key);
    usage.set(key, { score, at: t });
    if (usage.size > maxKeys) usage.delete(usage.keys().next().value as string);
  };
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

  /** The waiting key of a lane with the least (`lightest`) or most recent usage; ties: the longest waiting. */
  function pick(lane: Map<string, Job[]>, t: number, lightest: boolean): string | undefined {
    let best: string | undefined;
    let bestScore = 0;
    for (const key of lane.keys()) {
      const score = usageOf(key, t);
      if (best === undefined || (lightest ? score < bestScore : score > bestScore)) (best = key), (bestScore = score);
    }
    return best;
  }

  function next(): Job | undefined {
    const t = now();
    for (const lane of lanes) {
      const key = pick(lane, t, true);
      if (key === undefined) continue;
      const list = lane.get(key) as Job[];
      const job = list.shift() as Job;
      // Behind the keys that waited as long (turns among equal scores).
      lane.delete(key);
      if (list.length > 0) lane.set(key, list);
      queued--;
      job.signal?.removeEventListener("abort", job.onAbort);
      return job;
    }
    return undefined;
  }

  /** Makes room for a job of `key` in a full queue by refusing the newest job of a heavier key; false if none is heavier. */
  function evictHeavier(key: string): boolean {
    const t = now();
    const own = usageOf(key, t);
    for (const lane of [lanes[1], lanes[0]]) {
      const heavy = pick(lane, t, false);
      if (heavy === undefined || heavy === key || usageOf(heavy, t) <= own) continue;
      const victim = (lane.get(heavy) as Job[]).at(-1) as Job;
      remove(victim);
      refusedFull++;
      victim.refuse("full");
      return true;
    }
    return false;
  }

  /** Whether a job of `key` may take an express slot now. */
  const expressFor = (key: string) => express > 0 && running < concurrency + express && usageOf(key, now()) < EXPRESS_SCORE;

  function pump(): void {
    for (;;) {
      let job: Job | undefined;
      if (running < concurrency) job = next();
      else if (running < concurrency + express) {
        // Only the lightest waiting key, and only if it is a newcomer.
        const t = now();
        for (const lane of lanes) {
          const key = pick(lane, t, true);
          if (key !== undefined) {
            if (usageOf(key, t) < EXPRESS_SCORE) job = next();
            break;
          }
        }
      }
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
      // Every request counts, also the refused ones: a key's score is its demand, so a flood is
      // heavy from its first second on, whether or not its jobs get to run.
      charge(key, now());
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
        if ((running < concurrency && queued === 0) || expressFor(key)) {
          running++;
          started++;
          job.start();
          return;
        }
        // Hopeless already: even if only this key's own waiting jobs were ahead, it would start too late.
        if (opts.deadline !== undefined && list !== undefined && ((list.length + 1) * jobMs) / concurrency > opts.deadline - now()) {
          abandoned++;
          job.refuse("abandoned");
          return;
        }
        if ((list !== undefined && list.length >= maxPerKey) || (queued >= maxQueued && !evictHeavier(key))) {
          refusedFull++;
          job.refuse("full");
          return;
        }
        list = lane.get(key);
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
