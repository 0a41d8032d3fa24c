/**
 * The fair scheduler (src/fair-scheduler.ts): calls start at once while a turn has budget and
 * nothing waits; beyond that they wait per connection and start round-robin, one per connection
 * in turn; with maxInFlight, at most that many run at once.
 */
import { createFairScheduler } from "../src/fair-scheduler.js";

const nextTurn = () => new Promise((r) => setImmediate(r));

test("under budget every call starts at once, in order", () => {
  const s = createFairScheduler<object>({ budgetMs: 1000 });
  expect([s.tryStart(), s.tryStart(), s.tryStart()]).toEqual([true, true, true]);
  expect(s.waiting).toBe(0);
});

test("once a turn's budget is spent, calls wait and start round-robin between connections after the turn", async () => {
  const s = createFairScheduler<object>({ budgetMs: 0 });
  const a = {};
  const b = {};
  const c = {};
  const started: string[] = [];
  // A turn with budget 0: the first call opens the turn, then nothing more may start in it.
  expect(s.tryStart()).toBe(true);
  expect(s.tryStart()).toBe(false);
  for (let i = 0; i < 3; i++) s.enqueue(a, () => started.push(`a${i}`));
  s.enqueue(b, () => started.push("b0"));
  for (let i = 0; i < 2; i++) s.enqueue(c, () => started.push(`c${i}`));
  expect(s.waiting).toBe(6);
  expect(started).toEqual([]);
  // With a zero budget each turn starts one call: the order is what matters.
  for (let turn = 0; turn < 10 && s.waiting > 0; turn++) await nextTurn();
  expect(started).toEqual(["a0", "b0", "c0", "a1", "c1", "a2"]);
  expect(s.waiting).toBe(0);
});

test("a new call waits behind waiting ones (no overtaking), and goes to its connection's queue", async () => {
  const s = createFairScheduler<object>({ budgetMs: 0 });
  const a = {};
  const b = {};
  const started: string[] = [];
  s.tryStart();
  s.enqueue(a, () => started.push("a0"));
  s.enqueue(a, () => started.push("a1"));
  expect(s.tryStart()).toBe(false);
  s.enqueue(b, () => started.push("b0"));
  for (let turn = 0; turn < 10 && s.waiting > 0; turn++) await nextTurn();
  expect(started).toEqual(["a0", "b0", "a1"]);
});

test("maxInFlight: at most that many run; a release lets the next waiting one start", async () => {
  const s = createFairScheduler<object>({ budgetMs: 1000, maxInFlight: 2 });
  const a = {};
  const started: number[] = [];
  expect([s.tryStart(), s.tryStart(), s.tryStart()]).toEqual([true, true, false]);
  s.enqueue(a, () => started.push(1));
  s.enqueue(a, () => started.push(2));
  await nextTurn();
  expect(started).toEqual([]);
  s.release();
  await nextTurn();
  expect(started).toEqual([1]);
  s.release();
  s.release();
  await nextTurn();
  expect(started).toEqual([1, 2]);
  expect(s.waiting).toBe(0);
});

test("a start that throws does not stop the queue", async () => {
  const s = createFairScheduler<object>({ budgetMs: 1000, maxInFlight: 1 });
  const started: string[] = [];
  s.tryStart();
  s.enqueue({}, () => {
    throw new Error("caller bug");
  });
  s.enqueue({}, () => started.push("next"));
  s.release();
  await nextTurn();
  s.release();
  await nextTurn();
  expect(started).toEqual(["next"]);
});
