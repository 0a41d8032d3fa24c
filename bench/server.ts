/**
 * One benchmark server per process: `node server.js <kind> [port]`. Prints `READY <port>` on
 * stdout once listening. Every kind serves the same logic (bench/logic.ts) for
 * `emqx.exhook.v3.HookProvider/OnMessagePublish` and `/OnClientAuthenticate`.
 *
 * Kinds:
 * - `native`: ours, standalone, native transport (topic filters, one middleware, deadlines on);
 * - `connect`: ours, standalone, transport "connect";
 * - `connect-bare`: bare connect-node on `http2.createServer`, logic against the generated service;
 * - `grpc-js`: @grpc/grpc-js server with proto-loader;
 * - `floor`: hand-written unary gRPC on `node:http2` with @bufbuild/protobuf codecs;
 * - `embedded`: our `exhookRoutes` inside a user's `connectNodeAdapter` (compare with connect-bare).
 */
import * as http2 from "node:http2";
import * as path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { allowIf, defineProvider, rewrite, type HookMiddleware, type Logger } from "../src/index.js";
import { exhookRoutes } from "../src/routes.js";
import { createExHookServer } from "../src/server.js";
import { authenticate, isSensorTopic, rewrittenPayload, rewrittenTopic } from "./logic.js";

const { CONTINUE, IGNORE, STOP_AND_RETURN } = v3.ValuedResponse_ResponsedType;

const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** A no-op timing middleware, as a user would add for metrics. */
let observed = 0;
const timing: HookMiddleware = async (_call, next) => {
  const start = performance.now();
  const outcome = await next();
  observed += performance.now() - start;
  return outcome;
};

/** Our provider: topic filter on the publish hook, 2 s budget (capped by grpc-timeout). */
export function benchProvider() {
  return defineProvider(
    {
      onMessagePublish: {
        topics: ["sensors/#"],
        handler: ({ message }) =>
          rewrite({ topic: rewrittenTopic(message?.topic ?? ""), payload: rewrittenPayload(message?.payload ?? new Uint8Array()) }),
      },
      onClientAuthenticate: ({ clientinfo }) => allowIf(authenticate(clientinfo?.username ?? "", clientinfo?.password ?? "")),
    },
    { name: "bench", timeoutMs: 2000, ...(process.env["BENCH_NO_MIDDLEWARE"] ? {} : { middleware: [timing] }) },
  );
}

/** The same logic against the generated v3 service types (connect-bare, floor). */
export function publishV3(req: v3.MessagePublishRequest): v3.ValuedResponse {
  const m = req.message;
  if (!m || !isSensorTopic(m.topic)) return create(v3.ValuedResponseSchema, { type: IGNORE });
  return create(v3.ValuedResponseSchema, {
    type: CONTINUE,
    value: { case: "message", value: { ...m, topic: rewrittenTopic(m.topic), payload: rewrittenPayload(m.payload) } },
  });
}

export function authenticateV3(req: v3.ClientAuthenticateRequest): v3.ValuedResponse {
  const ok = authenticate(req.clientinfo?.username ?? "", req.clientinfo?.password ?? "");
  return create(v3.ValuedResponseSchema, { type: STOP_AND_RETURN, value: { case: "boolResult", value: ok } });
}

export function bareRoutes(router: ConnectRouter): void {
  router.service(v3.HookProvider, {
    onMessagePublish: publishV3,
    onClientAuthenticate: authenticateV3,
  });
}

async function listenHttp2(server: http2.Http2Server, port: number): Promise<number> {
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return (server.address() as { port: number }).port;
}

async function startNative(port: number, transport: "native" | "connect"): Promise<number> {
  const server = createExHookServer({ provider: benchProvider(), port, host: "127.0.0.1", transport, logger: silent });
  return (await server.listen()).port;
}

async function startConnectBare(port: number): Promise<number> {
  return listenHttp2(http2.createServer(connectNodeAdapter({ routes: bareRoutes, grpc: true, grpcWeb: false, connect: false })), port);
}

async function startEmbedded(port: number): Promise<number> {
  const routes = exhookRoutes(benchProvider(), { logger: silent });
  return listenHttp2(http2.createServer(connectNodeAdapter({ routes, grpc: true, grpcWeb: false, connect: false })), port);
}

async function startGrpcJs(port: number): Promise<number> {
  const grpc = await import("@grpc/grpc-js");
  const loader = await import("@grpc/proto-loader");
  const def = loader.loadSync(path.resolve(__dirname, "..", "..", "..", "proto", "emqx", "exhook", "v3", "exhook.proto"), {
    keepCase: true,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    emqx: { exhook: { v3: { HookProvider: { service: import("@grpc/grpc-js").ServiceDefinition } } } };
  };
  type Msg = { topic: string; payload: Buffer; [k: string]: unknown };
  const server = new grpc.Server();
  server.addService(pkg.emqx.exhook.v3.HookProvider.service, {
    OnMessagePublish: (call: { request: { message?: Msg } }, cb: (err: null, res: unknown) => void) => {
      const m = call.request.message;
      if (!m || !isSensorTopic(m.topic)) return cb(null, { type: "IGNORE" });
      cb(null, { type: "CONTINUE", message: { ...m, topic: rewrittenTopic(m.topic), payload: Buffer.from(rewrittenPayload(m.payload)) } });
    },
    OnClientAuthenticate: (
      call: { request: { clientinfo?: { username: string; password: string } } },
      cb: (err: null, res: unknown) => void,
    ) => {
      const c = call.request.clientinfo;
      cb(null, { type: "STOP_AND_RETURN", bool_result: authenticate(c?.username ?? "", c?.password ?? "") });
    },
  });
  return new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound))),
  );
}

// The floor's constant header objects and options (no `date` header, one trailers listener for
// every stream): the same node:http2 usage as our native transport, so the two differ only in
// what runs between the bytes.
const FLOOR_HEADERS = { ":status": 200, "content-type": "application/grpc+proto" };
const FLOOR_RESPOND = { waitForTrailers: true, sendDate: false } as http2.ServerStreamResponseOptions;
const FLOOR_TRAILERS = { "grpc-status": "0" };
function floorTrailers(this: http2.ServerHttp2Stream): void {
  this.sendTrailers(FLOOR_TRAILERS);
}

/**
 * The floor: the least a correct unary gRPC server on node:http2 does per call. It decodes,
 * builds and encodes every answer (no cached answers: that would be logic, not transport).
 */
async function startFloor(port: number): Promise<number> {
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    const p = headers[":path"];
    const chunks: Buffer[] = [];
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => {
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
      let res: v3.ValuedResponse;
      if (p === "/emqx.exhook.v3.HookProvider/OnMessagePublish")
        res = publishV3(fromBinary(v3.MessagePublishRequestSchema, body.subarray(5)));
      else if (p === "/emqx.exhook.v3.HookProvider/OnClientAuthenticate")
        res = authenticateV3(fromBinary(v3.ClientAuthenticateRequestSchema, body.subarray(5)));
      else {
        stream.respond({ ":status": 200, "content-type": "application/grpc+proto", "grpc-status": "12" }, { endStream: true });
        return;
      }
      const bytes = toBinary(v3.ValuedResponseSchema, res);
      const frame = Buffer.allocUnsafe(bytes.length + 5);
      frame[0] = 0;
      frame.writeUInt32BE(bytes.length, 1);
      frame.set(bytes, 5);
      stream.respond(FLOOR_HEADERS, FLOOR_RESPOND);
      stream.on("wantTrailers", floorTrailers);
      stream.end(frame);
    });
  });
  return listenHttp2(server, port);
}

const STARTERS: Record<string, (port: number) => Promise<number>> = {
  native: (p) => startNative(p, "native"),
  connect: (p) => startNative(p, "connect"),
  "connect-bare": startConnectBare,
  "grpc-js": startGrpcJs,
  floor: startFloor,
  embedded: startEmbedded,
};

/** The server kinds, in table order. */
export const KINDS = Object.keys(STARTERS);

async function main(): Promise<void> {
  const kind = process.argv[2] ?? "";
  const start = STARTERS[kind];
  if (!start) {
    process.stderr.write(`usage: server.js <${KINDS.join("|")}> [port]\n`);
    process.exit(2);
  }
  const port = await start(Number(process.argv[3] ?? 0));
  process.stdout.write(`READY ${port}\n`);
  const stop = () => {
    if (observed < 0) process.stdout.write("never\n");
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (require.main === module) void main();
