/**
 * An independent view of our .proto files: protobufjs (through @grpc/proto-loader's loader) with
 * the field names as written in the proto, used to encode requests as EMQX would and to decode
 * answers without going through our own generated code.
 */
import * as path from "node:path";
import * as protobuf from "protobufjs";

export type Pkg = "v1" | "v2" | "v3";

const roots = new Map<Pkg, protobuf.Root>();

export function root(pkg: Pkg): protobuf.Root {
  let r = roots.get(pkg);
  if (!r) {
    r = new protobuf.Root();
    r.loadSync(path.join(__dirname, "..", "..", "proto", "emqx", "exhook", pkg, "exhook.proto"), { keepCase: true });
    r.resolveAll();
    roots.set(pkg, r);
  }
  return r;
}

export function type(pkg: Pkg, name: string): protobuf.Type {
  return root(pkg).lookupType(`emqx.exhook.${pkg}.${name}`);
}

/** Encodes a plain object (proto field names) as `pkg`'s message `name`. */
export function encode(pkg: Pkg, name: string, value: Record<string, unknown>): Uint8Array {
  const t = type(pkg, name);
  const err = t.verify(value);
  if (err) throw new Error(`${pkg}.${name}: ${err}`);
  return t.encode(t.fromObject(value)).finish();
}

/** Decodes bytes as `pkg`'s message `name` into a plain object with defaults and enum names. */
export function decode(pkg: Pkg, name: string, bytes: Uint8Array): Record<string, any> {
  const t = type(pkg, name);
  return t.toObject(t.decode(bytes), { defaults: true, enums: String, longs: String, bytes: Buffer, oneofs: true }) as Record<string, any>;
}

export const servicePath = (pkg: Pkg, rpc: string) => `/emqx.exhook.${pkg}.HookProvider/${rpc}`;
