/**
 * The unary gRPC module (src/protocol/grpc-unary.ts) that every path answering gRPC itself uses,
 * and error classification by type: a body that does not decode is the caller's fault
 * (INVALID_ARGUMENT with a short cause); anything else unexpected is ours (INTERNAL "internal
 * error", logged with its stack, counted), whatever its message says.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { createDispatcher, type Dispatcher } from "../src/dispatch.js";
import { RequestDecodeError } from "../src/errors.js";
import { allow, defineProvider } from "../src/index.js";
import {
  createUnaryService,
  encodeGrpcMessage,
  errorReply,
  formatGrpcTimeout,
  frameMessage,
  grpcTimeoutMs,
  parseGrpcTimeout,
  trailersOnlyHeaders,
  unframeRequest,
  type GrpcFailure,
} from "../src/protocol/grpc-unary.js";
import { createExHookServer } from "../src/server.js";
import { createEmqxLikeClient } from "../src/testing/emqx-client.js";
import { memoryTransport } from "../src/testing/memory-client.js";
import { memoryLogger } from "./helpers/ops.js";
import { encode, servicePath } from "./helpers/proto.js";

describe("grpc-timeout", () => {
  test.each([
    ["1H", 3_600_000],
    ["2M", 120_000],
    ["5S", 5000],
    ["100m", 100],
    ["1500u", 1.5],
    ["2000000n", 2],
    ["99999999S", 99_999_999_000],
  ])("%s is %d ms", (value, ms) => {
    expect(parseGrpcTimeout(value)).toBe(ms);
    expect(grpcTimeoutMs(value)).toBe(ms);
  });

  test.each(["", "S", "5", "5s", "5X", "-5S", "1.5S", "123456789S", " 5S"])("%j is invalid (NaN)", (value) => {
    expect(parseGrpcTimeout(value)).toBeNaN();
  });

  test("absent is undefined; formatGrpcTimeout round-trips whole milliseconds", () => {
    expect(parseGrpcTimeout(undefined)).toBeUndefined();
    expect(parseGrpcTimeout(formatGrpcTimeout(5000))).toBe(5000);
    expect(formatGrpcTimeout(0.2)).toBe("1m");
  });
});

describe("envelope", () => {
  test("frameMessage / unframeRequest round-trip", () => {
    const msg = new Uint8Array([1, 2, 3, 250]);
    const framed = frameMessage(msg);
    expect([...framed]).toEqual([0, 0, 0, 0, 4, 1, 2, 3, 250]);
    expect([...(unframeRequest(framed) as Uint8Array)]).toEqual([1, 2, 3, 250]);
    expect([...(unframeRequest(frameMessage(new Uint8Array(0))) as Uint8Array)]).toEqual([]);
  });

  test.each([
    ["fewer than 5 bytes", [0, 0, 0], Code.InvalidArgument, "protocol error: incomplete envelope"],
    ["a length beyond the body", [0, 0, 0, 0, 9, 1], Code.InvalidArgument, "protocol error: incomplete envelope"],
    ["two messages", [0, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0], Code.InvalidArgument, "protocol error: more than one message in a unary call"],
    ["a compressed message", [1, 0, 0, 0, 1, 7], Code.Internal, "compressed messages are not supported (send grpc-encoding identity)"],
  ])("%s", (_name, bytes, code, message) => {
    expect(unframeRequest(new Uint8Array(bytes))).toEqual({ code, message });
  });
});

describe("Trailers-Only errors", () => {
  test("grpc-message is percent-encoded as the gRPC spec says: printable ASCII but % as is", () => {
    expect(encodeGrpcMessage("unknown method /a.B/C: ok?")).toBe("unknown method /a.B/C: ok?");
    expect(encodeGrpcMessage("100% sür\n")).toBe("100%25 s%C3%BCr%0A");
    expect(decodeURIComponent(encodeGrpcMessage("100% sür\n"))).toBe("100% sür\n");
  });

  test("the header block carries the status and the message, HTTP 200", () => {
    expect(trailersOnlyHeaders("application/grpc", { code: Code.Unimplemented, message: "unknown method /x" })).toEqual({
      ":status": 200,
      "content-type": "application/grpc",
      "grpc-status": "12",
      "grpc-message": "unknown method /x",
    });
  });
});

describe("errorReply: by type, never by message text", () => {
  test("a ConnectError keeps its code and message; nothing is reported", () => {
    const seen: unknown[] = [];
    expect(errorReply(new ConnectError("internal error", Code.Internal), (e) => seen.push(e))).toEqual({
      code: Code.Internal,
      message: "internal error",
    });
    expect(errorReply(new ConnectError("cancelled", Code.Canceled), (e) => seen.push(e))).toEqual({
      code: Code.Canceled,
      message: "cancelled",
    });
    expect(seen).toEqual([]);
  });

  test("a RequestDecodeError is INVALID_ARGUMENT with its short cause", () => {
    const err = new RequestDecodeError("ClientAuthenticateRequest", new Error("premature EOF\nat line 2"));
    expect(errorReply(err, undefined)).toEqual({ code: Code.InvalidArgument, message: "invalid ClientAuthenticateRequest: premature EOF" });
    expect(new RequestDecodeError("X", new Error("y".repeat(500))).message.length).toBeLessThan(140);
  });

  test.each([
    ["a TypeError that looks like a decoder's complaint", new TypeError("Cannot read properties of undefined (reading 'clientid')")],
    ["an Error starting with 'invalid'", new Error("invalid wire type 7")],
    ["a RangeError", new RangeError("premature EOF")],
    ["a thrown string", "parse binary: boom"],
  ])("%s is INTERNAL 'internal error' and reported", (_name, err) => {
    const seen: unknown[] = [];
    expect(errorReply(err, (e) => seen.push(e))).toEqual({ code: Code.Internal, message: "internal error" });
    expect(seen).toEqual([err]);
  });
});

/** A dispatcher that fails with a bug of ours on every hook call (and answers loads normally). */
function brokenDispatcher(): Dispatcher {
  const real = createDispatcher(defineProvider({ onClientAuthenticate: () => allow() }), { logger: memoryLogger() });
  const bug = () => {
    throw new TypeError("Cannot read properties of undefined (reading 'clientid')");
  };
  return {
    ...real,
    handleBytes: (pkg, target, body, info) =>
      target === "loaded" || target === "unloaded" ? real.handleBytes(pkg, target, body, info) : bug(),
    call: bug,
  };
}

describe.each(["native", "connect"] as const)("an internal error over HTTP/2 (%s transport)", (transport) => {
  test("INTERNAL 'internal error', Trailers-Only on native; logged at error with the stack; counted", async () => {
    const log = memoryLogger();
    const server = createExHookServer({
      provider: defineProvider({}),
      dispatcher: brokenDispatcher(),
      port: 0,
      host: "127.0.0.1",
      transport,
      logger: log,
    });
    const { port } = await server.listen();
    const client = createEmqxLikeClient(`http://127.0.0.1:${port}`, 1);
    try {
      const reply = await client.call(
        servicePath("v3", "OnClientAuthenticate"),
        encode("v3", "ClientAuthenticateRequest", { clientinfo: { clientid: "c" } }),
      );
      expect({ status: reply.grpcStatus, message: reply.grpcMessage, messages: reply.messages.length }).toEqual({
        status: 13,
        message: "internal error",
        messages: 0,
      });
      expect(server.errorCounts().internal).toBe(1);
      const errors = log.lines.filter((l) => l.level === "error");
      expect(errors).toEqual([
        {
          level: "error",
          obj: {
            err: "Cannot read properties of undefined (reading 'clientid')",
            type: "TypeError",
            stack: expect.stringContaining("grpc-unary.test.ts"),
          },
          msg: "internal error while serving a call (answered INTERNAL)",
        },
      ]);
    } finally {
      await client.close();
      await server.close(100);
    }
  });
});

describe("the memory client runs the same unary code", () => {
  test("a body that does not decode: INVALID_ARGUMENT with the cause, as over HTTP/2 (native)", async () => {
    const provider = defineProvider({ onClientAuthenticate: () => allow() });
    const answer = await memoryTransport(provider, { logger: memoryLogger() }).call(
      "v3",
      "OnClientAuthenticate",
      new Uint8Array([0x0a, 0x0a, 0x01]),
      1000,
    );
    expect(answer).toEqual({
      status: Code.InvalidArgument,
      message: "invalid ClientAuthenticateRequest: illegal tag: field no 0 wire type 1",
      body: undefined,
    });
  });

  test("an unknown rpc: UNIMPLEMENTED with the path, as over HTTP/2", async () => {
    const answer = await memoryTransport(defineProvider({})).call("v1", "OnClientAuthorize", new Uint8Array(0), 1000);
    expect(answer).toEqual({
      status: Code.Unimplemented,
      message: "unknown method /emqx.exhook.v1.HookProvider/OnClientAuthorize",
      body: undefined,
    });
  });

  test("the unary service answers synchronous handlers synchronously (no promise per call)", () => {
    const service = createUnaryService(
      createDispatcher(defineProvider({ onClientAuthenticate: () => allow() }), { logger: memoryLogger() }),
    );
    const head = service.head("POST", servicePath("v3", "OnClientAuthenticate"), "5S");
    const got: Array<Uint8Array | GrpcFailure> = [];
    if ("route" in head)
      service.run(head, frameMessage(encode("v3", "ClientAuthenticateRequest", {})), undefined, {
        ok: (_t, m) => got.push(m),
        fail: (_t, f) => got.push(f),
      });
    expect(got).toHaveLength(1);
    expect(got[0]).toBeInstanceOf(Uint8Array);
  });
});
