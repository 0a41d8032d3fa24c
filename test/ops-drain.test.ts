/**
 * Graceful drain: `close(graceMs)` under load answers every in-flight call with its real answer,
 * answers calls already on the wire when the drain starts (OnProviderUnloaded included), refuses
 * new connections, and bounds the wait.
 */
import type * as http2 from "node:http2";
import { allowIf, defineProvider } from "../src/index.js";
import { createExHookServer } from "../src/server.js";
import { decode, encode, servicePath } from "./helpers/proto.js";
import { closeSession, connect, grpcCall, httpGet, memoryLogger, until } from "./helpers/ops.js";

const authReq = (i: number) => encode("v3", "ClientAuthenticateRequest", { clientinfo: { clientid: `c${i}`, username: `u${i}` } });
const unloadReq = (node: string) => encode("v3", "ProviderUnloadedRequest", { meta: { node } });

test("close() under load: 200 in-flight calls on 8 connections all get their real answer; new connections are refused", async () => {
  let started = 0;
  const provider = defineProvider({
    onClientAuthenticate: async ({ clientinfo }) => {
      started++;
      await new Promise((r) => setTimeout(r, 200));
      // Even users allowed, odd denied: a lost or fallback answer would show.
      return allowIf(Number((clientinfo?.username ?? "u1").slice(1)) % 2 === 0);
    },
  });
  const server = createExHookServer({
    provider,
    port: 0,
    host: "127.0.0.1",
    metricsPort: 0,
    readyWhen: "listening",
    logger: memoryLogger(),
  });
  const { port } = await server.listen();
  const opsPort = (server.opsAddress as { port: number }).port;
  const url = `http://127.0.0.1:${port}`;
  const sessions = await Promise.all(Array.from({ length: 8 }, () => connect(url)));
  const N = 200;
  const replies = Array.from({ length: N }, (_, i) =>
    grpcCall(sessions[i % 8] as http2.ClientHttp2Session, servicePath("v3", "OnClientAuthenticate"), authReq(i), "10S"),
  );
  await until(() => started === N, "all handlers to start");
  expect((await httpGet(opsPort, "/readyz")).status).toBe(200);

  const closed = server.close(10_000);
  expect(server.state).toBe("draining");
  // Probes turn unready at once, while calls are still running.
  expect((await httpGet(opsPort, "/readyz")).status).toBe(503);
  await closed;
  expect(server.state).toBe("closed");

  const results = await Promise.all(replies);
  expect(results.map((r) => r.grpcStatus)).toEqual(Array(N).fill(0));
  expect(results.map((r) => decode("v3", "ValuedResponse", r.message as Buffer)["bool_result"])).toEqual(
    Array.from({ length: N }, (_, i) => i % 2 === 0),
  );

  const after = await connect(url).then(
    () => "connected",
    (e: NodeJS.ErrnoException) => e.code,
  );
  expect(after).toBe("ECONNREFUSED");
  await Promise.all(sessions.map(closeSession));
});

test("calls already sent when the drain starts are answered, OnProviderUnloaded included (two-step GOAWAY)", async () => {
  let closing: Promise<void> | undefined;
  const server = createExHookServer({
    provider: defineProvider({
      onClientAuthenticate: async () => {
        await new Promise((r) => setTimeout(r, 20));
        return allowIf(true);
      },
    }),
    port: 0,
    host: "127.0.0.1",
    logger: memoryLogger(),
  });
  // The first stream to arrive starts the drain, while the other requests are still being read.
  server.http2.once("stream", () => (closing = server.close(5000)));
  const { port } = await server.listen();
  const session = await connect(`http://127.0.0.1:${port}`);
  const sent = [
    ...Array.from({ length: 30 }, (_, i) => grpcCall(session, servicePath("v3", "OnClientAuthenticate"), authReq(i))),
    ...["emqx@a", "emqx@b", "emqx@c"].map((n) => grpcCall(session, servicePath("v3", "OnProviderUnloaded"), unloadReq(n))),
  ];
  const results = await Promise.all(
    sent.map((p) =>
      p.then(
        (r) => r.grpcStatus,
        (e: Error) => e.message,
      ),
    ),
  );
  expect(results).toEqual(Array(33).fill(0));
  await closing;
  await closeSession(session);
});

test("the drain is bounded: a call still running after graceMs is reset and close() resolves", async () => {
  let started = false;
  const server = createExHookServer({
    provider: defineProvider({
      onClientAuthenticate: (_req, ctx) => {
        started = true;
        return new Promise((r) => ctx.signal.addEventListener("abort", () => r(allowIf(false))));
      },
    }),
    port: 0,
    host: "127.0.0.1",
    logger: memoryLogger(),
  });
  const { port } = await server.listen();
  const session = await connect(`http://127.0.0.1:${port}`);
  const stuck = grpcCall(session, servicePath("v3", "OnClientAuthenticate"), authReq(1), "60S").then(
    () => "answered",
    (e: Error) => `reset: ${e.message}`,
  );
  await until(() => started, "the handler to start");
  await server.close(100);
  expect(await stuck).toMatch(/^reset: /);
  expect(server.state).toBe("closed");
  await closeSession(session);
});
