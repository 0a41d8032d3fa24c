/**
 * The gRPC health service on the ExHook port (both transports, and a real gRPC client), and the
 * limits: request size (RESOURCE_EXHAUSTED over the socket) and concurrent streams per
 * connection (advertised in SETTINGS, excess streams refused).
 */
import * as grpc from "@grpc/grpc-js";
import * as http2 from "node:http2";
import { allow, defineProvider } from "../src/index.js";
import { createExHookServer, type ExHookServer } from "../src/server.js";
import { encode, servicePath } from "./helpers/proto.js";
import { closeSession, connect, grpcCall, memoryLogger } from "./helpers/ops.js";

const CHECK = "/grpc.health.v1.Health/Check";
/** HealthCheckRequest{service}, encoded by hand (field 1, length-delimited). */
const checkRequest = (service: string) => {
  const s = Buffer.from(service);
  return s.length === 0 ? new Uint8Array() : new Uint8Array([0x0a, s.length, ...s]);
};

const held: Array<() => void> = [];
const provider = defineProvider({
  onClientAuthenticate: async ({ clientinfo }) => {
    if (clientinfo?.username === "wait") await new Promise<void>((r) => held.push(r));
    return allow();
  },
});
const loadedRequest = encode("v3", "ProviderLoadedRequest", { broker: { version: "6.0.0" }, meta: { node: "emqx@n1", version: "6.0.0" } });

describe.each(["native", "connect"] as const)("grpc.health.v1.Health/Check (%s transport)", (transport) => {
  let server: ExHookServer;
  let session: http2.ClientHttp2Session;
  beforeAll(async () => {
    server = createExHookServer({ provider, port: 0, host: "127.0.0.1", transport, healthRequiresLoaded: true, logger: memoryLogger() });
    const { port } = await server.listen();
    session = await connect(`http://127.0.0.1:${port}`);
  });
  afterAll(async () => {
    await closeSession(session);
    await server.close(500);
  });

  test("NOT_SERVING until an EMQX node loaded the provider (healthRequiresLoaded), then SERVING", async () => {
    const before = await grpcCall(session, CHECK, checkRequest(""));
    expect(before.grpcStatus).toBe(0);
    expect([...(before.message as Buffer)]).toEqual([0x08, 2]); // status = NOT_SERVING
    expect((await grpcCall(session, servicePath("v3", "OnProviderLoaded"), loadedRequest)).grpcStatus).toBe(0);
    for (const service of ["", "emqx.exhook.v1.HookProvider", "emqx.exhook.v2.HookProvider", "emqx.exhook.v3.HookProvider"]) {
      const after = await grpcCall(session, CHECK, checkRequest(service));
      expect([after.grpcStatus, [...(after.message as Buffer)]]).toEqual([0, [0x08, 1]]); // SERVING
    }
  });

  test("an unknown service is NOT_FOUND; Watch is UNIMPLEMENTED", async () => {
    const unknown = await grpcCall(session, CHECK, checkRequest("my.Other"));
    expect([unknown.grpcStatus, unknown.grpcMessage]).toEqual([5, 'unknown service "my.Other"']);
    const watch = await grpcCall(session, "/grpc.health.v1.Health/Watch", checkRequest(""));
    expect(watch.grpcStatus).toBe(12);
  });
});

describe("health with a real gRPC client (@grpc/grpc-js)", () => {
  test("SERVING while listening (default), checked by grpc-js", async () => {
    const server = createExHookServer({ provider, port: 0, host: "127.0.0.1", logger: memoryLogger() });
    const { port } = await server.listen();
    const Client = grpc.makeGenericClientConstructor(
      {
        check: {
          path: CHECK,
          requestStream: false,
          responseStream: false,
          requestSerialize: (service: string) => Buffer.from(checkRequest(service)),
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      "Health",
    );
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    try {
      const reply = await new Promise<Buffer>((resolve, reject) =>
        (client as unknown as { check(req: string, cb: (e: Error | null, r: Buffer) => void): void }).check("", (e, r) =>
          e ? reject(e) : resolve(r),
        ),
      );
      expect([...reply]).toEqual([0x08, 1]);
    } finally {
      client.close();
      await server.close(500);
    }
  });
});

describe("limits", () => {
  test.each(["native", "connect"] as const)("a request over maxRequestBytes gets RESOURCE_EXHAUSTED (%s)", async (transport) => {
    const server = createExHookServer({ provider, port: 0, host: "127.0.0.1", transport, maxRequestBytes: 1024, logger: memoryLogger() });
    const { port } = await server.listen();
    const session = await connect(`http://127.0.0.1:${port}`);
    try {
      const big = encode("v3", "ClientAuthenticateRequest", { clientinfo: { clientid: "c", username: "u", password: "p".repeat(2000) } });
      const small = encode("v3", "ClientAuthenticateRequest", { clientinfo: { clientid: "c", username: "u", password: "p" } });
      const r = await grpcCall(session, servicePath("v3", "OnClientAuthenticate"), big);
      expect(r.grpcStatus).toBe(8);
      expect(r.message).toBeUndefined();
      // The connection stays usable for the next call.
      expect((await grpcCall(session, servicePath("v3", "OnClientAuthenticate"), small)).grpcStatus).toBe(0);
    } finally {
      await closeSession(session);
      await server.close(500);
    }
  });

  test("maxConcurrentStreams is advertised; streams beyond it are refused with REFUSED_STREAM", async () => {
    const server = createExHookServer({ provider, port: 0, host: "127.0.0.1", maxConcurrentStreams: 2, logger: memoryLogger() });
    const { port } = await server.listen();
    // Not waiting for the connection: the five requests leave with the preface, before the
    // server's SETTINGS can reach the client, like a client that ignores the limit.
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on("error", () => {});
    try {
      const req = encode("v3", "ClientAuthenticateRequest", { clientinfo: { clientid: "c", username: "wait" } });
      const calls = [0, 1, 2, 3, 4].map(() =>
        grpcCall(session, servicePath("v3", "OnClientAuthenticate"), req).then(
          (r) => `grpc-status ${r.grpcStatus}`,
          (e: Error) => e.message,
        ),
      );
      await new Promise<void>((r) => (session.remoteSettings.maxConcurrentStreams === 2 ? r() : session.once("remoteSettings", () => r())));
      expect(session.remoteSettings.maxConcurrentStreams).toBe(2);
      const refused = await Promise.all(calls.slice(2));
      expect(refused).toEqual(Array(3).fill("Stream closed with error code NGHTTP2_REFUSED_STREAM"));
      expect(held.length).toBe(2);
      for (const r of held.splice(0)) r();
      expect(await Promise.all(calls.slice(0, 2))).toEqual(["grpc-status 0", "grpc-status 0"]);
    } finally {
      await closeSession(session);
      await server.close(500);
    }
  });
});
