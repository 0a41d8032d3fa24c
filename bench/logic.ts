/**
 * The benchmark's business logic, the same for every server: publish on `sensors/#` is rewritten
 * (topic moved under `processed/`, payload prefixed), other topics are kept; authenticate allows
 * a user whose password matches the user map.
 */
import { create } from "@bufbuild/protobuf";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";

/** The user map: 1,000 users `user<i>` with password `pass<i>`. */
export const USERS: ReadonlyMap<string, string> = new Map(Array.from({ length: 1000 }, (_, i) => [`user${i}`, `pass${i}`]));

/** Whether a topic matches `sensors/#` (what MQTT matching gives for this filter). */
export function isSensorTopic(topic: string): boolean {
  return topic === "sensors" || topic.startsWith("sensors/");
}

/** The rewritten topic for a sensor topic. */
export function rewrittenTopic(topic: string): string {
  return "processed/" + topic.slice("sensors/".length);
}

const PREFIX = new TextEncoder().encode("v1|");

/** The rewritten payload: `v1|` + payload. */
export function rewrittenPayload(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(PREFIX.length + payload.length);
  out.set(PREFIX, 0);
  out.set(payload, PREFIX.length);
  return out;
}

/** Whether the credentials are valid. */
export function authenticate(username: string, password: string): boolean {
  const expected = USERS.get(username);
  return expected !== undefined && expected === password;
}

/** The publish request the load generators send (~200-byte payload, EMQX client headers, user props). */
export function publishRequest(): v3.MessagePublishRequest {
  const payload = new TextEncoder().encode(
    JSON.stringify({
      device: "thermo-0042",
      room: "room1",
      seq: 123456,
      readings: Array.from({ length: 12 }, (_, i) => 20 + i / 10),
      unit: "C",
      ok: true,
    }).padEnd(200, " "),
  );
  return create(v3.MessagePublishRequestSchema, {
    message: {
      node: "emqx@10.0.0.1",
      id: "0006123ABCDEF0123456789ABCDEF012",
      qos: 1,
      from: "thermo-0042",
      topic: "sensors/room1/temperature",
      payload,
      timestamp: 1735689600123n,
      headers: { username: "user42", peerhost: "10.0.3.17", protocol: "mqtt", allow_publish: "true" },
    },
    meta: { node: "emqx@10.0.0.1", version: "5.9.0", sysdescr: "EMQX", clusterName: "emqxcl" },
    userProps: [
      { name: "trace-id", value: "4bf92f3577b34da6a3ce929d0e0e4736" },
      { name: "source", value: "gateway-7" },
    ],
  });
}

/** The authenticate request the load generators send (a valid user). */
export function authenticateRequest(): v3.ClientAuthenticateRequest {
  return create(v3.ClientAuthenticateRequestSchema, {
    clientinfo: {
      node: "emqx@10.0.0.1",
      clientid: "thermo-0042",
      username: "user42",
      password: "pass42",
      peerhost: "10.0.3.17",
      sockport: 1883,
      protocol: "mqtt",
      mountpoint: "",
      peerport: 53122,
    },
    result: false,
    meta: { node: "emqx@10.0.0.1", version: "5.9.0", sysdescr: "EMQX", clusterName: "emqxcl" },
  });
}
