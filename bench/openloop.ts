/**
 * Open-loop load generator: sends at a fixed rate over N h2c connections, whatever the server's
 * speed, and records each call's latency from its *scheduled* send time (so a stalled server
 * cannot hide its queueing delay: no coordinated omission) in an HDR histogram.
 *
 * `node openloop.js <url> <path> <frame-file> <rate/s> <seconds> [warmupSeconds] [connections]`
 * prints one JSON line: { rate, sent, ok, failed, skipped, p50Ms, p99Ms, p999Ms, maxMs, achieved }.
 */
import * as fs from "node:fs";
import * as http2 from "node:http2";
import * as hdr from "hdr-histogram-js";

/** Result of one open-loop run. */
export interface OpenLoopResult {
  rate: number;
  seconds: number;
  sent: number;
  ok: number;
  failed: number;
  /** Calls not sent because too many were already in flight (the server was saturated). */
  skipped: number;
  achieved: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

const MAX_IN_FLIGHT = 20_000;

/** Runs one open-loop phase and resolves with its numbers (warm-up phases are discarded by the caller). */
export function openLoop(
  sessions: http2.ClientHttp2Session[],
  path: string,
  frame: Buffer,
  rate: number,
  seconds: number,
): Promise<OpenLoopResult> {
  const hist = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
  const headers: http2.OutgoingHttpHeaders = {
    ":method": "POST",
    ":path": path,
    ":scheme": "http",
    "content-type": "application/grpc+proto",
    te: "trailers",
    "grpc-timeout": "5S",
    "user-agent": "grpc-erlang/0.1.0",
  };
  const total = Math.round(rate * seconds);
  const interval = 1000 / rate;
  let sent = 0;
  let ok = 0;
  let failed = 0;
  let skipped = 0;
  let inFlight = 0;
  let done = 0;
  return new Promise((resolve) => {
    const start = performance.now();
    const finish = () => {
      const elapsed = (performance.now() - start) / 1000;
      resolve({
        rate,
        seconds,
        sent,
        ok,
        failed,
        skipped,
        achieved: Math.round(ok / elapsed),
        p50Ms: hist.getValueAtPercentile(50) / 1000,
        p99Ms: hist.getValueAtPercentile(99) / 1000,
        p999Ms: hist.getValueAtPercentile(99.9) / 1000,
        maxMs: hist.maxValue / 1000,
      });
    };
    const one = (scheduled: number) => {
      const session = sessions[sent % sessions.length] as http2.ClientHttp2Session;
      sent++;
      inFlight++;
      let status: string | undefined;
      const req = session.request(headers);
      req.on("response", (h) => {
        if (h["grpc-status"] !== undefined) status = String(h["grpc-status"]);
      });
      req.on("trailers", (t) => {
        status = String(t["grpc-status"]);
      });
      req.on("data", () => {});
      req.on("error", () => {});
      req.on("close", () => {
        inFlight--;
        done++;
        hist.recordValue(Math.max(1, Math.round((performance.now() - scheduled) * 1000)));
        if (status === "0") ok++;
        else failed++;
        if (done + skipped === total) finish();
      });
      req.end(frame);
    };
    let index = 0;
    const tick = () => {
      const now = performance.now();
      const due = Math.min(total, Math.floor((now - start) / interval) + 1);
      while (index < due) {
        const scheduled = start + index * interval;
        index++;
        if (inFlight >= MAX_IN_FLIGHT) skipped++;
        else one(scheduled);
      }
      // setImmediate keeps the send times exact to a few µs (this core runs only the generator);
      // setTimeout(1) would add up to ~1 ms to every latency.
      if (index < total) setImmediate(tick);
      else if (done + skipped === total) finish();
    };
    tick();
  });
}

/** Opens `n` h2c connections and waits until all are connected. */
export async function connectAll(url: string, n: number): Promise<http2.ClientHttp2Session[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<http2.ClientHttp2Session>((resolve, reject) => {
          const s = http2.connect(url, { settings: { enablePush: false } });
          s.once("connect", () => resolve(s));
          s.once("error", reject);
        }),
    ),
  );
}

async function main(): Promise<void> {
  const [url, path, frameFile, rateArg, secondsArg, warmupArg, connArg] = process.argv.slice(2);
  if (!url || !path || !frameFile || !rateArg || !secondsArg) {
    process.stderr.write("usage: openloop.js <url> <path> <frame-file> <rate> <seconds> [warmupSeconds] [connections]\n");
    process.exit(2);
  }
  const frame = fs.readFileSync(frameFile);
  const rate = Number(rateArg);
  const sessions = await connectAll(url, Number(connArg ?? 8));
  for (const s of sessions) s.on("error", () => {});
  const warmup = Number(warmupArg ?? 2);
  if (warmup > 0) await openLoop(sessions, path, frame, rate, warmup);
  const result = await openLoop(sessions, path, frame, rate, Number(secondsArg));
  process.stdout.write(JSON.stringify(result) + "\n");
  for (const s of sessions) s.destroy();
}

if (require.main === module) void main();
