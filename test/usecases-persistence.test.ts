/**
 * The batching message writer's logic against a store that can be held, failed or made to refuse
 * one message: batches, the bound in bytes, both overflow policies, retries through an outage,
 * a refused message isolated, close giving up. (Real stores failing: usecases-faults.test.ts.)
 */
import {
  createMessageRetention,
  createMessageWriter,
  messageBytes,
  RETENTION_CHUNK,
  type Store,
  type StoredMessage,
} from "../src/usecases/index";

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

/** A store whose inserts wait until released and can be told to fail (with a given error). */
function fakeStore() {
  const batches: string[][] = [];
  let gate: Promise<void> | undefined;
  let open: (() => void) | undefined;
  let failures = 0;
  let error: () => Error = () => Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" });
  let poison: string | undefined;
  let attempts = 0;
  const store = {
    async insertMessages(batch: readonly StoredMessage[]) {
      attempts++;
      if (gate) await gate;
      if (failures > 0) {
        failures--;
        throw error();
      }
      if (poison && batch.some((m) => m.id === poison))
        throw Object.assign(new Error("unsupported Unicode escape sequence"), { code: "22P05" });
      batches.push(batch.map((m) => m.id));
      return batch.length;
    },
  } as unknown as Store;
  return {
    store,
    batches,
    attempts: () => attempts,
    hold() {
      gate = new Promise((r) => (open = r));
    },
    release() {
      gate = undefined;
      open?.();
    },
    fail(n: number, make?: () => Error) {
      failures = n;
      if (make) error = make;
    },
    poison(id: string) {
      poison = id;
    },
  };
}

function recordingLogger() {
  const lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }> = [];
  const at = (level: string) => (obj: object, msg?: string) =>
    void lines.push({ level, msg: msg ?? "", obj: obj as Record<string, unknown> });
  return { logger: { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") }, lines };
}

const SIZE = messageBytes(msg(0));

test("messages are written in batches of batchSize, the rest after flushMs or on flush()", async () => {
  const f = fakeStore();
  const w = createMessageWriter({ store: f.store, batchSize: 3, flushMs: 60_000 });
  for (let i = 0; i < 7; i++) expect(w.push(msg(i))).toBe(true);
  await w.flush();
  expect(f.batches).toEqual([["m0", "m1", "m2"], ["m3", "m4", "m5"], ["m6"]]);
  expect(w.stats()).toMatchObject({
    received: 7,
    written: 7,
    duplicates: 0,
    droppedOverflow: 0,
    rejected: 0,
    lostOnClose: 0,
    queued: 0,
    inFlight: 0,
    heldBytes: 0,
    batches: 3,
    failedAttempts: 0,
  });
  await w.close();
});

test("batchBytes caps a transaction's bytes; a message larger than it goes alone", async () => {
  const f = fakeStore();
  const big = { ...msg(9), id: "big", payload: new Uint8Array(3 * SIZE) };
  const w = createMessageWriter({ store: f.store, batchSize: 100, batchBytes: 2 * SIZE, flushMs: 60_000 });
  for (const m of [msg(0), msg(1), msg(2), big, msg(3)]) w.push(m);
  await w.flush();
  expect(f.batches).toEqual([["m0", "m1"], ["m2"], ["big"], ["m3"]]);
  await w.close();
});

test("drop-new: the queue is bounded in bytes; a full queue refuses new messages, counts and logs them", async () => {
  const f = fakeStore();
  const { logger, lines } = recordingLogger();
  f.hold();
  const w = createMessageWriter({ store: f.store, batchSize: 2, maxQueueBytes: 5 * SIZE, flushMs: 1, overflow: "drop-new", logger });
  w.push(msg(0));
  w.push(msg(1)); // batch [m0, m1] starts and waits on the store
  const accepted = [2, 3, 4, 5].map((i) => w.push(msg(i)));
  expect(accepted).toEqual([true, true, true, false]);
  expect(w.stats()).toMatchObject({ queued: 3, inFlight: 2, heldBytes: 5 * SIZE, droppedOverflow: 1 });
  // A message larger than the whole bound is refused too.
  expect(w.push({ ...msg(6), payload: new Uint8Array(6 * SIZE) })).toBe(false);
  f.release();
  await w.close();
  expect(f.batches.flat()).toEqual(["m0", "m1", "m2", "m3", "m4"]);
  expect(w.stats()).toMatchObject({ received: 7, written: 5, droppedOverflow: 2, queued: 0 });
  expect(lines.filter((l) => l.msg.startsWith("persistence: queue full"))[0]).toMatchObject({
    level: "error",
    obj: { lost: 1, lostTotal: 1, policy: "drop-new", maxQueueBytes: 5 * SIZE },
  });
});

test("drop-oldest: a full queue evicts the oldest queued messages", async () => {
  const f = fakeStore();
  f.hold();
  const w = createMessageWriter({ store: f.store, batchSize: 2, maxQueueBytes: 5 * SIZE, flushMs: 1, overflow: "drop-oldest" });
  for (let i = 0; i < 7; i++) expect(w.push(msg(i))).toBe(true);
  f.release();
  await w.close();
  expect(f.batches.flat()).toEqual(["m0", "m1", "m4", "m5", "m6"]);
  expect(w.stats()).toMatchObject({ received: 7, written: 5, droppedOverflow: 2 });
});

test("a store outage loses nothing: the batch is retried with backoff until the store is back; logged at start and end", async () => {
  const f = fakeStore();
  const { logger, lines } = recordingLogger();
  const w = createMessageWriter({ store: f.store, batchSize: 2, flushMs: 1, retryMinMs: 1, retryMaxMs: 4, logger });
  f.fail(25);
  for (let i = 0; i < 5; i++) w.push(msg(i));
  await w.flush();
  expect(f.batches.flat()).toEqual(["m0", "m1", "m2", "m3", "m4"]);
  expect(w.stats()).toMatchObject({
    received: 5,
    written: 5,
    failedAttempts: 25,
    outages: 1,
    droppedOverflow: 0,
    rejected: 0,
    storeDownForMs: 0,
  });
  expect(lines.map((l) => [l.level, l.msg])).toEqual([
    ["error", "persistence: store write failed; holding the data and retrying until the store is back"],
    ["warn", "persistence: store writes succeed again"],
  ]);
  expect(lines[0]?.obj).toMatchObject({ err: "database or disk is full (SQLITE_FULL)", queued: 5 });
  expect(lines[1]?.obj).toMatchObject({ attempts: 25 });
  await w.close();
});

test("a message the store refuses for its data is found by splitting its batch; the others are written", async () => {
  const f = fakeStore();
  const { logger, lines } = recordingLogger();
  f.poison("m5");
  const w = createMessageWriter({ store: f.store, batchSize: 8, flushMs: 60_000, logger });
  for (let i = 0; i < 8; i++) w.push(msg(i));
  await w.flush();
  expect(f.batches.flat().sort()).toEqual(["m0", "m1", "m2", "m3", "m4", "m6", "m7"]);
  expect(w.stats()).toMatchObject({ received: 8, written: 7, rejected: 1, failedAttempts: 0, inFlight: 0 });
  expect(lines).toEqual([
    {
      level: "error",
      msg: "persistence: messages refused by the store for their data, not retried",
      obj: { lost: 1, lostTotal: 1, err: "unsupported Unicode escape sequence (22P05)", id: "m5", topic: "t", payloadBytes: 0 },
    },
  ]);
  await w.close();
});

test("close() waits closeTimeoutMs for a failing store, then counts and logs what it gives up", async () => {
  const f = fakeStore();
  const { logger, lines } = recordingLogger();
  const w = createMessageWriter({ store: f.store, batchSize: 2, flushMs: 1, retryMinMs: 5, retryMaxMs: 20, closeTimeoutMs: 200, logger });
  f.fail(1_000_000, () => Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }));
  for (let i = 0; i < 5; i++) w.push(msg(i));
  const started = Date.now();
  await w.close();
  expect(Date.now() - started).toBeGreaterThanOrEqual(190);
  expect(w.stats()).toMatchObject({ received: 5, written: 0, lostOnClose: 5, queued: 0, inFlight: 0 });
  expect(lines.at(-1)).toMatchObject({
    level: "error",
    msg: "persistence: closing with messages the store did not take; they are lost",
    obj: { lost: 5, closeTimeoutMs: 200 },
  });
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
