/**
 * Logins under a wrong-password flood, against the real server over HTTP/2 with EMQX's headers
 * (bench/auth-flood.ts; the figures, in ms and with the shipped scrypt parameters, are in
 * bench/README.md). A hash takes from a few ms to a second depending on the machine's load, so what
 * is asserted is counted in hashes, not in ms: how many hash jobs a correct login waited for, how
 * many of the flood's were computed at all. scrypt runs at N = 2^13 here (a quarter of the shipped
 * cost) to leave CPU to the tests running beside this one; the queueing does not depend on it.
 */
import { runAuthFlood } from "../bench/auth-flood";

const config = { auth: { scrypt: { N: 2 ** 13 } } };

/** Most hashes the slots can compute in `ms` (concurrency + express slot), with room for a varying hash time. */
const capacity = (ms: number, jobMs: number) => Math.ceil((ms / Math.max(jobMs, 1)) * 2 * 2) + 10;

jest.setTimeout(60_000);

test("300 wrong-password logins/s from 20 addresses: 6 first-time correct logins are all allowed, none waits for the flood's queue", async () => {
  const r = await runAuthFlood({ rate: 300, seconds: 3, attackers: 20, probes: 6, probeEveryMs: 100, config });
  const hashing = r.auth["hashing"] as { jobMs: number; started: number };
  console.log(`auth flood (5 s request_timeout): ${JSON.stringify({ probes: r.probes, flood: r.flood, hashing })}`);
  expect(r.flood.sent).toBeGreaterThanOrEqual(900);
  expect(r.flood.errors).toBe(0);
  expect(r.probes.allowed).toBe(6); // before: 0 of 10 (every one fell back to deny at 4.75 s)
  // The hash running when it arrived, a newcomer in the express slot, and what started while the
  // request still waited for a busy event loop to read it: a handful, never the hundreds of flood
  // jobs waiting (a FIFO made it wait for all of them: 16 to 35 in the bench's unguarded run).
  // The first probe comes 50 ms into the flood, while some of the 20 attacking addresses are still
  // newcomers themselves (no work done yet, so as deserving as the probe in the fair queue): it may
  // wait for their first hashes too, up to 10 (seen 5-7 on a 2-core machine). Later probes find every
  // attacker behind them.
  const [first, ...later] = r.probes.hashesWhileWaiting;
  expect(first).toBeLessThanOrEqual(10);
  for (const n of later) expect(n).toBeLessThanOrEqual(5);
  // The flood's hashes are bounded by the hashing slots (1 + the express slot on 2 cores), not by
  // the flood: the rest are refused or abandoned, never computed for nobody.
  expect(hashing.started).toBeLessThanOrEqual(capacity(r.elapsedMs + 5000, hashing.jobMs));
  expect(hashing.started).toBeLessThan(r.flood.sent);
});

test("1 s request_timeout under the flood: every call is answered (decision or fallback) and the abandoned work never runs", async () => {
  const r = await runAuthFlood({ rate: 300, seconds: 3, attackers: 20, probes: 3, requestTimeoutMs: 1000, config });
  const hashing = r.auth["hashing"] as {
    jobMs: number;
    started: number;
    running: number;
    queued: number;
    abandoned: number;
    refusedFull: number;
  };
  // `late` (answered after EMQX's 1 s) is reported, not asserted: what remains of it comes from a CPU
  // shared with other work and the dispatcher's margin, not from queued hashes (before: 283 of 300).
  console.log(`auth flood (1 s request_timeout): ${JSON.stringify({ probes: r.probes, flood: r.flood, hashing })}`);
  expect(r.flood.answered).toBe(r.flood.sent);
  expect(r.flood.errors).toBe(0);
  expect(hashing.started).toBeLessThanOrEqual(capacity(r.elapsedMs + 1000, hashing.jobMs));
  expect(hashing.started + hashing.abandoned + hashing.refusedFull).toBeGreaterThanOrEqual(r.flood.sent);
  expect(hashing.queued).toBe(0);
});
