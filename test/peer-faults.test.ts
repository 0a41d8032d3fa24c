/**
 * Peers that reset, vanish or stop reading mid-call must not stop the server (issue 11, part 1).
 * The server runs as a child process (`emqx-exhook serve`, both transports), so a crash is a
 * failed assertion with the child's stderr, not a dead jest worker. Every case is followed by the
 * same checks: the process is alive, a fresh connection is answered within 1 s, RSS stayed within
 * 256 MiB of idle.
 */
import * as http2 from "node:http2";
import { writeFileSync } from "node:fs";
import * as path from "node:path";
import { rawConnect, grpcFrame, grpcRequestHeaders, headerBlock, headers, data, dataFrames, Setting } from "./helpers/h2-frames.js";
import { freshCall, serverForEachCase, type ServerChild } from "./helpers/server-child.js";
import { encode, servicePath } from "./helpers/proto.js";
import { until } from "./helpers/ops.js";

const AUTH_PATH = servicePath("v3", "OnClientAuthenticate");
const PUBLISH_PATH = servicePath("v3", "OnMessagePublish");
const MiB = 1024 * 1024;

/**
 * The provider under test. `wait:<id>` answers after 1 s and prints `started <id>` first, so a
 * test knows its calls are in flight; `spin:<file>` blocks the event loop until `<file>` exists
 * (a late answer written after the peer reset); publish echoes the message (big answers).
 */
const PROVIDER = `
const fs = require("node:fs");
const { defineProvider, allow, deny, rewrite } = require("./src/index.js");
module.exports = defineProvider({
  onClientAuthenticate: (req) => {
    const u = req.clientinfo?.username ?? "";
    if (u.startsWith("wait:")) {
      process.stdout.write("started " + u.slice(5) + "\\n");
      return new Promise((r) => setTimeout(() => r(allow()), 1000));
    }
    if (u.startsWith("spin:")) {
      process.stdout.write("spinning " + u + "\\n");
      const stop = Date.now() + 10000;
      while (!fs.existsSync(u.slice(5)) && Date.now() < stop) {}
      return allow();
    }
    return u === "alice" ? allow() : deny();
  },
  onMessagePublish: () => rewrite({ qos: 1 }),
}, { timeoutMs: 10000 });
`;

const authBody = (username: string, clientid = username) =>
  encode("v3", "ClientAuthenticateRequest", { clientinfo: { clientid, username }, result: false });
const publishBody = (payloadBytes: number, id = "m") =>
  encode("v3", "MessagePublishRequest", { message: { id, topic: "t/big", qos: 0, from: "c", payload: Buffer.alloc(payloadBytes, 0x61) } });

const REQUEST_HEADERS = (p: string, timeout = "5S") => ({
  ":method": "POST",
  ":path": p,
  "content-type": "application/grpc+proto",
  te: "trailers",
  "grpc-timeout": timeout,
});

/** Opens `n` authenticate calls that wait in the handler; resolves once all handlers run. */
async function callsInFlight(
  child: ServerChild,
  session: http2.ClientHttp2Session,
  tag: string,
  n: number,
): Promise<http2.ClientHttp2Stream[]> {
  const streams: http2.ClientHttp2Stream[] = [];
  for (let i = 0; i < n; i++) {
    const req = session.request(REQUEST_HEADERS(AUTH_PATH));
    req.on("error", () => {});
    req.end(grpcFrame(authBody(`wait:${tag}-${i}`)));
    streams.push(req);
  }
  await child.cli.waitFor(new RegExp(`started ${tag}-\\d+`, "g"), n);
  return streams;
}

function connect(port: number, options: http2.ClientSessionOptions = {}): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(`http://127.0.0.1:${port}`, options);
    s.on("error", () => {});
    s.once("connect", () => resolve(s));
    s.once("close", () => reject(new Error("session closed before connect")));
  });
}

let seq = 0;

describe.each(["native", "connect"] as const)("%s transport", (transport) => {
  const server = serverForEachCase({
    prefix: "exhook-faults-",
    providerFile: "fault-provider.js",
    providerSource: PROVIDER,
    args: ["--transport", transport],
    body: authBody("alice"),
  });

  /** Streams the server has closed so far (any status), from its own metrics. */
  async function streamsClosed(): Promise<number> {
    const m = await server.child.metrics();
    return [...m.entries()].filter(([k]) => k.startsWith("exhook_grpc_responses_total{")).reduce((s, [, v]) => s + v, 0);
  }

  /**
   * Waits until the server has closed `n` more streams than `before` (it has processed the fault),
   * or has died. Bounded: after 5 s the checks run anyway.
   */
  async function settled(before: number, n: number): Promise<void> {
    const stop = Date.now() + 5000;
    while (server.child.alive() && Date.now() < stop) {
      try {
        if ((await streamsClosed()) >= before + n) return;
      } catch {
        return; // the metrics port is gone: the process died
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** What must hold after every fault. */
  async function stillServing(what: string): Promise<void> {
    const died = async () => {
      // The exit may not have reached us yet: give it a moment to arrive, then say what happened.
      await server.child.cli.exited(2000).catch(() => undefined);
      return new Error(`the server ${server.child.alive() ? "did not answer" : "died"} after ${what}:\n${server.child.cli.stderr()}`);
    };
    if (!server.child.alive()) throw await died();
    const fresh = await freshCall(server.child.port, authBody("alice")).catch(async (err: Error) => {
      throw Object.assign(await died(), { cause: err });
    });
    expect({ what, status: fresh.status, answeredWithin1s: fresh.ms < 1000 }).toEqual({ what, status: 0, answeredWithin1s: true });
    expect(server.child.alive()).toBe(true);
    expect(server.child.rss() - server.idleRss).toBeLessThan(256 * MiB);
  }

  test("TCP RST with calls in flight", async () => {
    const session = await connect(server.child.port);
    await callsInFlight(server.child, session, `rst${seq++}`, 5);
    const before = await streamsClosed();
    session.socket.resetAndDestroy();
    await settled(before, 5);
    await stillServing("a TCP reset");
  });

  test("FIN with calls in flight", async () => {
    // node:http2 will not half-close its socket for us: the calls go over a raw connection.
    const raw = await rawConnect(server.child.port);
    const tag = `fin${seq++}`;
    const block = headerBlock(grpcRequestHeaders(AUTH_PATH));
    for (let i = 0; i < 5; i++)
      raw.socket.write(Buffer.concat([headers(1 + 2 * i, block), data(1 + 2 * i, grpcFrame(authBody(`wait:${tag}-${i}`)))]));
    await server.child.cli.waitFor(new RegExp(`started ${tag}-\\d+`, "g"), 5);
    const before = await streamsClosed();
    raw.socket.end();
    await settled(before, 5);
    await stillServing("a FIN");
    raw.socket.destroy();
  });

  test("RST_STREAM with every error code 0..13 on an in-flight call", async () => {
    const session = await connect(server.child.port);
    const streams = await callsInFlight(server.child, session, `code${seq++}`, 14);
    const before = await streamsClosed();
    for (const [code, s] of streams.entries()) s.close(code);
    await settled(before, 14);
    await stillServing("RST_STREAM codes 0..13");
    // The connection itself is still usable.
    const again = session.request(REQUEST_HEADERS(AUTH_PATH));
    const status = await new Promise<string | undefined>((resolve) => {
      let st: string | undefined;
      again.on("response", (h) => (st = h["grpc-status"] as string | undefined));
      again.on("trailers", (t) => (st = t["grpc-status"] as string | undefined));
      again.on("error", () => {});
      again.on("close", () => resolve(st));
      again.resume();
      again.end(grpcFrame(authBody("alice")));
    });
    expect(status).toBe("0");
    session.destroy();
  });

  test("GOAWAY with an error code on 16 connections with calls in flight", async () => {
    const sessions = await Promise.all(Array.from({ length: 16 }, () => connect(server.child.port)));
    const tag = `goaway${seq++}`;
    await Promise.all(sessions.map((s, i) => callsInFlight(server.child, s, `${tag}x${i}x`, 4)));
    const before = await streamsClosed();
    for (const s of sessions) {
      s.goaway(http2.constants.NGHTTP2_PROTOCOL_ERROR);
      s.destroy();
    }
    await settled(before, 64);
    await stillServing("GOAWAY(PROTOCOL_ERROR) on 16 connections");
  });

  test("answers owed on a zero flow-control window, then a TCP reset", async () => {
    const session = await connect(server.child.port, { settings: { initialWindowSize: 0 } });
    // 64 publish calls of 256 KiB each: every answer (the message echoed back) waits on the window.
    const answered = Array.from({ length: 64 }, (_, i) => {
      const req = session.request(REQUEST_HEADERS(PUBLISH_PATH));
      req.on("error", () => {});
      req.end(grpcFrame(publishBody(256 * 1024, `z${i}`)));
      // Answer headers are not flow-controlled: they arrive, the DATA cannot.
      return new Promise((r) => req.once("response", r));
    });
    await Promise.all(answered);
    expect(server.child.rss() - server.idleRss).toBeLessThan(256 * MiB);
    const before = await streamsClosed();
    session.socket.resetAndDestroy();
    await settled(before, 64);
    await stillServing("a reset with answers owed on a zero window");
  });

  test("a client that never reads its socket", async () => {
    // 200 publish calls of 128 KiB: 25 MiB of answers the client never takes.
    const raw = await rawConnect(server.child.port, { read: false, settings: [[Setting.INITIAL_WINDOW_SIZE, 16 * MiB - 1]] });
    const block = headerBlock(grpcRequestHeaders(PUBLISH_PATH));
    // Written without waiting: once the server stops reading us, our own socket buffers them.
    for (let i = 0; i < 200; i++) {
      const id = 1 + 2 * i;
      raw.socket.write(Buffer.concat([headers(id, block), dataFrames(id, grpcFrame(publishBody(128 * 1024, `n${i}`)))]));
    }
    // While it hangs there, others are served.
    await stillServing("a client that never reads (while connected)");
    const before = await streamsClosed();
    raw.socket.destroy();
    await settled(before, 1);
    await stillServing("a client that never reads (after it left)");
  });

  test("the deadline expires and the peer resets before the late answer is written", async () => {
    const marker = path.join(server.dir, `marker-${seq++}`);
    const before = await streamsClosed();
    const raw = await rawConnect(server.child.port);
    raw.socket.write(
      Buffer.concat([headers(1, headerBlock(grpcRequestHeaders(AUTH_PATH, "100m"))), data(1, grpcFrame(authBody(`spin:${marker}`)))]),
    );
    // The handler blocks the server's event loop until the marker file exists. Meanwhile the
    // deadline passes and the peer resets its connection; then the handler answers, late, to a
    // connection that is gone.
    await server.child.cli.waitFor(new RegExp(`spinning spin:${marker.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}`, "g"));
    await new Promise((r) => setTimeout(r, 150)); // past the 100 ms deadline (not a wait for the server)
    raw.socket.resetAndDestroy();
    await raw.closed;
    writeFileSync(marker, "");
    await settled(before, 1);
    await stillServing("a late answer after a reset");
  });

  test("the faults were counted (exhook_peer_errors_total) and nothing was logged above warn", async () => {
    await until(async () => {
      const m = await server.child.metrics();
      return [...m.keys()].some((k) => k.startsWith("exhook_peer_errors_total{"));
    }, "peer errors in /metrics");
    const m = await server.child.metrics();
    const total = [...m.entries()].filter(([k]) => k.startsWith("exhook_peer_errors_total{")).reduce((s, [, v]) => s + v, 0);
    expect(total).toBeGreaterThan(0);
    expect({ crashes: server.crashes, stderr: server.child.cli.stderr() }).toEqual({ crashes: 0, stderr: "" });
  });
});
