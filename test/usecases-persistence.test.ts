/** The batching message writer: batches, bounded queue, both overflow policies, retries, flush on close. */
import { createMessageRetention, createMessageWriter, RETENTION_CHUNK, type Store, type StoredMessage } from "../src/usecases/index";

const msg = (i: number): StoredMessage => ({
  id: `m${i}`,
  topic: "t",
  payload: new Uint8Array(),
  qos: 0,
  publisher: "c",
  username: "",
  node: "n",
  timestamp: i,
  storedAt: i,
  headers: {},
});

/** A store whose inserts wait until released and can be told to fail. */
function fakeStore() {
  const batches: string[][] = [];
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  let failures = 0;
  const store = {
    async insertMessages(batch: readonly StoredMessage[]) {
      if (gate) await gate;
      if (failures > 0) {
        failures--;
        throw new Error("disk full");
      }
      batches.push(batch.map((m) => m.id));
      return batch.length;
    },
  } as unknown as Store;
  return {
    store,
    batches,
    hold() {
      gate = new Promise((r) => (open = r));
    },
    release() {
      gate = undefined;
      open?.();
    },
    fail(n: number) {
      failures = n;
    },
  };
}

test("messages are written in batches of batchSize, the rest after flushMs or on flush()", async () => {
  const f = fakeStore();
  const w = createMessageWriter({ store: f.store, batchSize: 3, flushMs: 60_000 });
  for (let i = 0; i < 7; i++) expect(w.push(msg(i))).toBe(true);
  await w.flush();
  expect(f.batches).toEqual([["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6"]]);
  expect(w.stats()).toEqual({ enqueued: 7, written: 7, duplicates: 0, droppedOverflow: 0, failed: 0, queued: 0, inFlight: 0, batches: 3 });
  await w.close();
});

test("drop-new: a full queue refuses new messages and counts them", async () => {
  const f = fakeStore();
  f.hold();
  const w = createMessageWriter({ store: f.store, batchSize: 2, maxQueue: 3, flushMs: 1, overflow: "drop-new" });
  w.push(msg(0));
  w.push(msg(1)); // batch [m0, m1] starts and waits on the store
  const accepted = [2, 3, 4, 5].map((i) => w.push(msg(i)));
  expect(accepted).toEqual([true, true, true, false]);
  expect(w.stats()).toMatchObject({ queued: 3, inFlight: 2, droppedOverflow: 1 });
  f.release();
  await w.close();
  expect(f.batches.flat()).toEqual(["m0", "m1", "m2", "m3", "m4"]);
  expect(w.stats()).toMatchObject({ enqueued: 5, written: 5, droppedOverflow: 1, queued: 0 });
});

test("drop-oldest: a full queue evicts the oldest queued message", async () => {
  const f = fakeStore();
  f.hold();
  const w = createMessageWriter({ store: f.store, batchSize: 2, maxQueue: 3, flushMs: 1, overflow: "drop-oldest" });
  for (let i = 0; i < 7; i++) expect(w.push(msg(i))).toBe(true);
  f.release();
  await w.close();
  expect(f.batches.flat()).toEqual(["m0", "m1", "m4", "m5", "m6"]);
  expect(w.stats()).toMatchObject({ enqueued: 7, written: 5, droppedOverflow: 2 });
});

test("a failing batch is retried, then counted as failed; later batches still go through", async () => {
  const f = fakeStore();
  const w = createMessageWriter({ store: f.store, batchSize: 2, flushMs: 1, retries: 1 });
  f.fail(1);
  w.push(msg(0));
  w.push(msg(1));
  await w.flush();
  expect(f.batches).toEqual([["m0", "m1"]]);
  f.fail(2);
  w.push(msg(2));
  w.push(msg(3));
  await w.flush();
  w.push(msg(4));
  await w.flush();
  expect(f.batches).toEqual([["m0", "m1"], ["m4"]]);
  expect(w.stats()).toMatchObject({ enqueued: 5, written: 3, failed: 2, queued: 0 });
  await w.close();
  expect(w.push(msg(9))).toBe(false);
});

/** A store whose deleteMessagesBefore removes up to `limit` of `rows` timestamps below `before`. */
function retentionStore(rows: number[], failures = 0) {
  const calls: Array<[number, number]> = [];
  let fail = failures;
  const store = {
    async deleteMessagesBefore(before: number, limit: number) {
      calls.push([before, limit]);
      if (fail > 0) {
        fail--;
        throw new Error("database is locked");
      }
      const doomed = rows.filter((t) => t < before).slice(0, limit);
      for (const t of doomed) rows.splice(rows.indexOf(t), 1);
      return doomed.length;
    },
  } as unknown as Store;
  return { store, calls };
}

test("retention deletes everything older than maxAgeMs, chunk by chunk, and counts it", async () => {
  const rows = [...Array.from({ length: RETENTION_CHUNK * 2 + 3 }, (_, i) => i), 10_000_000, 10_000_001];
  const { store, calls } = retentionStore(rows);
  const r = createMessageRetention({ store, maxAgeMs: 1000, everyMs: 0, now: () => 10_001_000 });
  expect(await r.sweep()).toBe(RETENTION_CHUNK * 2 + 3);
  // Three statements: two full chunks, then the rest; the cut-off is now - maxAgeMs.
  expect(calls).toEqual([
    [10_000_000, RETENTION_CHUNK],
    [10_000_000, RETENTION_CHUNK],
    [10_000_000, RETENTION_CHUNK],
  ]);
  expect(rows).toEqual([10_000_000, 10_000_001]);
  expect(await r.sweep()).toBe(0);
  expect(r.stats()).toEqual({ expired: RETENTION_CHUNK * 2 + 3, sweeps: 2, failedSweeps: 0 });
  await r.stop();
});

test("two sweeps asked at once run once; a bad maxAgeMs is refused", async () => {
  const { store, calls } = retentionStore([1, 2, 3]);
  const r = createMessageRetention({ store, maxAgeMs: 10, everyMs: 0, now: () => 100 });
  const [a, b] = await Promise.all([r.sweep(), r.sweep()]);
  expect([a, b]).toEqual([3, 3]);
  expect(calls.length).toBe(1);
  expect(() => createMessageRetention({ store, maxAgeMs: 0 })).toThrow("retention maxAgeMs must be a positive integer, got 0");
});

test("the timer sweeps in the background; a failed sweep is logged and counted, the next one runs", async () => {
  const errors: string[] = [];
  const logger = { debug() {}, info() {}, warn() {}, error: (o: object) => void errors.push((o as { err: string }).err) };
  const rows = [1, 2];
  const { store } = retentionStore(rows, 1);
  const r = createMessageRetention({ store, maxAgeMs: 10, everyMs: 20, now: () => 100, logger });
  const deadline = Date.now() + 5000;
  while (r.stats().sweeps < 1 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
  await r.stop();
  expect(r.stats()).toMatchObject({ failedSweeps: 1, expired: 2 });
  expect(r.stats().sweeps).toBeGreaterThanOrEqual(1);
  expect(errors).toEqual(["database is locked"]);
  expect(rows).toEqual([]);
});
