/**
 * Embedding: `exhookRoutes(provider)` mounted next to a user's own Connect service on one
 * `connectNodeAdapter` + `http2.createServer`; both answer on the same port.
 *
 * The user's service is described at run time (a FileDescriptorProto built here, resolved against
 * the well-known wrappers), so the test needs no extra codegen or committed binary descriptor.
 */
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, type DescService } from "@bufbuild/protobuf";
import { createFileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, file_google_protobuf_wrappers, type StringValue } from "@bufbuild/protobuf/wkt";
import { createClient, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { defineProvider } from "../src/provider.js";
import { allowIf, keep } from "../src/responses.js";
import { exhookRoutes } from "../src/routes.js";
import { createEmqxLikeClient } from "../src/testing/emqx-client.js";
import { grpcJsClient } from "./helpers/grpc-js.js";
import { decode, encode, servicePath } from "./helpers/proto.js";

/** `service Greeter { rpc SayHello(google.protobuf.StringValue) returns (google.protobuf.StringValue); }` */
function greeterService(): DescService {
  const file = create(FileDescriptorProtoSchema, {
    name: "test/user/v1/greeter.proto",
    package: "test.user.v1",
    syntax: "proto3",
    dependency: ["google/protobuf/wrappers.proto"],
    service: [
      {
        name: "Greeter",
        method: [{ name: "SayHello", inputType: ".google.protobuf.StringValue", outputType: ".google.protobuf.StringValue" }],
      },
    ],
  });
  const registry = createFileRegistry(file, (name) =>
    name === "google/protobuf/wrappers.proto" ? file_google_protobuf_wrappers : undefined,
  );
  const service = registry.getService("test.user.v1.Greeter");
  if (!service) throw new Error("Greeter not built");
  return service;
}

describe("exhookRoutes mounted next to a user's own Connect service", () => {
  const greeter = greeterService();
  const provider = defineProvider({
    onClientAuthenticate: ({ clientinfo }) => allowIf(clientinfo?.username === "alice"),
    onMessagePublish: () => keep(),
  });
  let server: http2.Http2Server;
  let addr: AddressInfo;
  const sessions = new Set<http2.ServerHttp2Session>();

  beforeAll(async () => {
    const routes = (router: ConnectRouter) => {
      exhookRoutes(provider)(router);
      router.service(greeter, {
        sayHello: (req: StringValue) => ({ value: `hello ${req.value}` }),
      } as never);
    };
    server = http2.createServer(connectNodeAdapter({ routes }));
    // Clients (Connect's session manager in particular) keep idle connections open, and
    // server.close() waits for them: remember the sessions so afterAll can end them.
    server.on("session", (s) => {
      sessions.add(s);
      s.once("close", () => sessions.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    addr = server.address() as AddressInfo;
  });
  afterAll(async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of sessions) s.close();
    await closed;
  });

  test("the user's own rpc answers (Connect gRPC client)", async () => {
    const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${addr.port}` });
    const client = createClient(greeter, transport) as unknown as { sayHello(req: { value: string }): Promise<StringValue> };
    const res = await client.sayHello({ value: "emqx" });
    expect(res.value).toBe("hello emqx");
  });

  test("ExHook answers on the same port (independent grpc-js client, all three packages)", async () => {
    for (const pkg of ["v1", "v2", "v3"] as const) {
      const client = grpcJsClient(pkg, `127.0.0.1:${addr.port}`);
      try {
        expect(await client.call("OnProviderLoaded", { broker: { version: "x" } })).toEqual({
          hooks: [
            { name: "client.authenticate", topics: [] },
            { name: "message.publish", topics: [] },
          ],
        });
        const yes = await client.call("OnClientAuthenticate", { clientinfo: { username: "alice" } });
        const no = await client.call("OnClientAuthenticate", { clientinfo: { username: "eve" } });
        expect([yes.type, yes.bool_result, no.type, no.bool_result]).toEqual(["STOP_AND_RETURN", true, "STOP_AND_RETURN", false]);
      } finally {
        client.close();
      }
    }
  });

  test("EMQX's own headers work on the shared server too, and both kinds of call share one connection", async () => {
    const emqx = createEmqxLikeClient(`http://127.0.0.1:${addr.port}`, 1);
    try {
      const reply = await emqx.call(
        servicePath("v3", "OnClientAuthenticate"),
        encode("v3", "ClientAuthenticateRequest", { clientinfo: { username: "alice" } }),
      );
      expect({ status: reply.grpcStatus, messages: reply.messages.map((m) => decode("v3", "ValuedResponse", m)) }).toEqual({
        status: 0,
        messages: [{ type: "STOP_AND_RETURN", bool_result: true, value: "bool_result" }],
      });
      // google.protobuf.StringValue { value = 1 } encoded by hand: tag 0x0a, length, "ok".
      const greet = await emqx.call("/test.user.v1.Greeter/SayHello", new Uint8Array([0x0a, 0x02, 0x6f, 0x6b]));
      expect({ status: greet.grpcStatus, body: greet.messages.map((m) => Buffer.from(m).toString("latin1")) }).toEqual({
        status: 0,
        body: ["\n\x08hello ok"],
      });
    } finally {
      await emqx.close();
    }
  });
});
