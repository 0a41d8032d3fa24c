/** Structured logs: JSON lines, passwords always redacted, payloads redacted unless asked for. */
import { Writable } from "node:stream";
import { allow, defineProvider } from "../src/index.js";
import { createDispatcher } from "../src/dispatch.js";
import { HOOK_BY_KEY } from "../src/hooks.js";
import { createLogger, hookLogMiddleware } from "../src/ops/logger.js";
import { create } from "@bufbuild/protobuf";
import { ClientAuthenticateRequestSchema } from "../gen/emqx/exhook/v3/exhook_pb.js";

function sink(): { stream: Writable; lines: () => Array<Record<string, unknown>> } {
  let text = "";
  const stream = new Writable({ write: (c, _e, cb) => ((text += String(c)), cb()) });
  return {
    stream,
    lines: () =>
      text
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

test("password and payload are redacted wherever a request is logged; logPayloads keeps payloads only", () => {
  const out = sink();
  const log = createLogger({ destination: out.stream, level: "debug" });
  const request = { clientinfo: { clientid: "c1", password: "hunter2" }, message: { topic: "t", payload: "secret-data" } };
  log.info({ request }, "as a request");
  log.info({ ...request }, "top level");
  const withPayloads = sink();
  createLogger({ destination: withPayloads.stream, logPayloads: true }).info({ request }, "payloads on");
  const [a, b] = out.lines();
  expect(a).toMatchObject({
    level: 30,
    name: "emqx-exhook",
    msg: "as a request",
    request: { clientinfo: { clientid: "c1", password: "[redacted]" }, message: { topic: "t", payload: "[redacted]" } },
  });
  expect(b).toMatchObject({ clientinfo: { password: "[redacted]" }, message: { payload: "[redacted]" } });
  expect(withPayloads.lines()[0]).toMatchObject({
    request: { clientinfo: { password: "[redacted]" }, message: { payload: "secret-data" } },
  });
  expect(() => createLogger({ level: "loud" })).toThrow(
    'log level must be one of fatal, error, warn, info, debug, trace, silent, got "loud"',
  );
});

test("hookLogMiddleware: one debug line per call with hook context, the password redacted", async () => {
  const out = sink();
  const log = createLogger({ destination: out.stream, level: "debug" });
  const d = createDispatcher(defineProvider({ onClientAuthenticate: () => allow() }), {
    logger: log,
    middleware: [hookLogMiddleware(log, { includeRequest: true })],
  });
  const req = create(ClientAuthenticateRequestSchema, {
    clientinfo: { clientid: "c9", username: "u", password: "pw" },
    meta: { node: "emqx@x" },
  });
  await d.call("v3", HOOK_BY_KEY.get("onClientAuthenticate") as never, req, {});
  const line = out.lines().find((l) => l["msg"] === "hook call") as Record<string, any>;
  expect(line).toMatchObject({ level: 20, hook: "client.authenticate", package: "v3", node: "emqx@x", clientId: "c9", decision: "allow" });
  expect(line["request"]["clientinfo"]["password"]).toBe("[redacted]");
  // At info level the middleware does not log.
  const quiet = sink();
  const infoLog = createLogger({ destination: quiet.stream, level: "info" });
  const d2 = createDispatcher(defineProvider({ onClientAuthenticate: () => allow() }), {
    logger: infoLog,
    middleware: [hookLogMiddleware(infoLog)],
  });
  await d2.call("v3", HOOK_BY_KEY.get("onClientAuthenticate") as never, req, {});
  expect(quiet.lines().filter((l) => l["msg"] === "hook call")).toEqual([]);
});
