/**
 * An independent gRPC client for the real-socket tests: @grpc/grpc-js with @grpc/proto-loader
 * loading our .proto files (proto field names, longs and enums as strings, defaults and oneof
 * names filled in), so answers are decoded without any of our own code.
 */
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as loader from "@grpc/proto-loader";
import type { Pkg } from "./proto.js";

const definitions = new Map<Pkg, grpc.GrpcObject>();

function packageObject(pkg: Pkg): grpc.GrpcObject {
  let obj = definitions.get(pkg);
  if (!obj) {
    const file = path.join(__dirname, "..", "..", "proto", "emqx", "exhook", pkg, "exhook.proto");
    const def = loader.loadSync(file, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
    obj = grpc.loadPackageDefinition(def);
    definitions.set(pkg, obj);
  }
  return obj;
}

/** A grpc-js HookProvider client for one package. */
export interface GrpcJsClient {
  /** Calls `rpc` (e.g. `OnClientAuthenticate`); resolves with the decoded answer, rejects with the gRPC error. */
  call(rpc: string, request: Record<string, unknown>, timeoutMs?: number): Promise<Record<string, any>>;
  close(): void;
}

/** Connects to `address` (`host:port`) over h2c and speaks `emqx.exhook.<pkg>.HookProvider`. */
export function grpcJsClient(pkg: Pkg, address: string): GrpcJsClient {
  const ns = packageObject(pkg) as unknown as Record<string, any>;
  const Ctor = ns["emqx"]["exhook"][pkg]["HookProvider"] as grpc.ServiceClientConstructor;
  const client = new Ctor(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<string, any>;
  return {
    call(rpc, request, timeoutMs = 5000) {
      const method = client[rpc];
      if (typeof method !== "function") return Promise.reject(new Error(`no rpc ${rpc} in ${pkg}`));
      return new Promise((resolve, reject) => {
        method.call(client, request, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, out: Record<string, any>) =>
          err ? reject(err) : resolve(out),
        );
      });
    },
    close() {
      client.close();
    },
  };
}
