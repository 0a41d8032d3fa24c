/**
 * The standard gRPC health service (`grpc.health.v1.Health/Check`) on the ExHook port, for
 * `grpc_health_probe`, Kubernetes `grpc:` probes and load balancers. EMQX itself never calls it
 * (its 5.9+ health check only looks at its own connection), so this is for the platform.
 *
 * The descriptor is built in code (one message pair, one rpc) rather than generated, so the
 * project's protos stay exactly EMQX's. `Watch` is not offered: callers get `UNIMPLEMENTED`, which
 * the health-checking protocol allows and probes treat as "use Check".
 */
import type * as http2 from "node:http2";
import { create, createFileRegistry, fromBinary, toBinary, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { RequestDecodeError } from "../errors.js";
import { readBody, respondFailure, respondMessage, respondUnsupportedMediaType } from "../protocol/grpc-http2.js";
import { errorReply, grpcContentType, isFailure, unframeRequest } from "../protocol/grpc-unary.js";
import { SERVICES } from "../wire.js";

/** `HealthCheckResponse.ServingStatus`. */
export const ServingStatus = { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;
/** A serving status number. */
export type ServingStatus = (typeof ServingStatus)[keyof typeof ServingStatus];

/** Path prefix of the health service. */
export const HEALTH_PATH_PREFIX = "/grpc.health.v1.Health/";

const registry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "grpc/health/v1/health.proto",
    package: "grpc.health.v1",
    syntax: "proto3",
    messageType: [
      { name: "HealthCheckRequest", field: [{ name: "service", number: 1, type: 9 /* string */, label: 1, jsonName: "service" }] },
      {
        name: "HealthCheckResponse",
        field: [
          {
            name: "status",
            number: 1,
            type: 14 /* enum */,
            label: 1,
            typeName: ".grpc.health.v1.HealthCheckResponse.ServingStatus",
            jsonName: "status",
          },
        ],
        enumType: [
          {
            name: "ServingStatus",
            value: [
              { name: "UNKNOWN", number: 0 },
              { name: "SERVING", number: 1 },
              { name: "NOT_SERVING", number: 2 },
              { name: "SERVICE_UNKNOWN", number: 3 },
            ],
          },
        ],
      },
    ],
    service: [
      {
        name: "Health",
        method: [{ name: "Check", inputType: ".grpc.health.v1.HealthCheckRequest", outputType: ".grpc.health.v1.HealthCheckResponse" }],
      },
    ],
  }),
  () => undefined,
);

/** The `grpc.health.v1.Health` service descriptor (Check only). */
export const HealthService: DescService = registry.getService("grpc.health.v1.Health") as DescService;
const RequestSchema = registry.getMessage("grpc.health.v1.HealthCheckRequest") as DescMessage;
const ResponseSchema = registry.getMessage("grpc.health.v1.HealthCheckResponse") as DescMessage;

/** Service names answered: "" (the whole server) and the three HookProvider services. */
export const HEALTH_SERVICES: readonly string[] = ["", SERVICES.v1.typeName, SERVICES.v2.typeName, SERVICES.v3.typeName];

/**
 * What {@link healthStatus} needs: whether the server is up and serving, and whether an EMQX node
 * has loaded the provider.
 */
export interface HealthState {
  /** `true` while listening and not draining. */
  serving(): boolean;
  /** `true` once at least one EMQX node has sent `OnProviderLoaded` (and not unloaded). */
  loaded(): boolean;
}

/**
 * The status of `service`: `SERVING` when listening (and, with `requireLoaded`, loaded by an EMQX
 * node), `NOT_SERVING` otherwise or while draining; `undefined` for an unknown service name (the
 * protocol says: answer `NOT_FOUND`).
 */
export function healthStatus(state: HealthState, service: string, requireLoaded: boolean): ServingStatus | undefined {
  if (!HEALTH_SERVICES.includes(service)) return undefined;
  return state.serving() && (!requireLoaded || state.loaded()) ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
}

function check(state: HealthState, requireLoaded: boolean, service: string): ServingStatus {
  const status = healthStatus(state, service, requireLoaded);
  if (status === undefined) throw new ConnectError(`unknown service ${JSON.stringify(service)}`, Code.NotFound);
  return status;
}

/** Registers the health service on a Connect router (the `"connect"` transport). */
export function healthRoutes(state: HealthState, requireLoaded: boolean): (router: ConnectRouter) => void {
  return (router) => {
    router.service(HealthService, {
      check: (req: { service?: string }) => create(ResponseSchema, { status: check(state, requireLoaded, req.service ?? "") }),
    } as never);
  };
}

/**
 * Serves one health stream on the native transport (call it for paths starting with
 * {@link HEALTH_PATH_PREFIX}), with the same envelope and error replies as the hook calls
 * (src/protocol). The stream already has the server's `error` listener.
 */
export function serveHealthStream(
  state: HealthState,
  requireLoaded: boolean,
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
): void {
  const contentType = grpcContentType(headers["content-type"]);
  if (contentType === undefined) {
    respondUnsupportedMediaType(stream);
    stream.resume();
    return;
  }
  if (headers[":path"] !== `${HEALTH_PATH_PREFIX}Check` || headers[":method"] !== "POST") {
    respondFailure(stream, contentType, { code: Code.Unimplemented, message: `unknown method ${headers[":path"] ?? ""}` });
    stream.resume();
    return;
  }
  // Health requests are a few bytes; anything big is not a health check.
  readBody(stream, 4096, (body) => {
    if (body === undefined)
      return void respondFailure(stream, contentType, { code: Code.ResourceExhausted, message: "health request larger than 4096 bytes" });
    const message = unframeRequest(body);
    if (isFailure(message)) return void respondFailure(stream, contentType, message);
    let status: ServingStatus;
    try {
      status = check(state, requireLoaded, decodeHealthRequest(message).service);
    } catch (err) {
      return void respondFailure(stream, contentType, errorReply(err, undefined));
    }
    respondMessage(stream, contentType, toBinary(ResponseSchema, create(ResponseSchema, { status })));
  });
}

function decodeHealthRequest(bytes: Uint8Array): { service: string } {
  try {
    return fromBinary(RequestSchema, bytes) as unknown as { service: string };
  } catch (err) {
    throw new RequestDecodeError(RequestSchema.typeName, err);
  }
}
