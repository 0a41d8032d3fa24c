// Hook middleware: the documented order (server middleware outermost, then the provider's, in
// array order), what each sees (hook, clientId, topic, outcome incl. fallbacks), and misuse.
import { allow, defineProvider, deny, keep, rewrite, type HookMiddleware, type Logger } from "../src/index";
import { ValuedResponse_ResponsedType } from "../gen/emqx/exhook/v3/exhook_pb";
import {
  createMemoryClient,
  fakeAuthenticateRequest,
  fakeAuthorizeRequest,
  fakeClientInfo,
  fakePublishRequest,
} from "../src/testing/index";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function recorder(name: string, log: string[]): HookMiddleware {
  return async (call, next) => {
    log.push(`${name}>${call.hook}|${call.clientId}|${call.topic ?? "-"}`);
    const out = await next();
    log.push(`${name}<${out.decision?.kind ?? "none"}${out.fallback ? `!${out.fallback}` : ""}`);
    return out;
  };
}

test("order: server middleware outermost, then the provider's, each in array order, around the handler", async () => {
  const log: string[] = [];
  const provider = defineProvider(
    {
      onClientAuthenticate: (req) => {
        log.push("handler");
        return req.clientinfo?.username === "alice" ? allow() : deny();
      },
      onClientAuthorize: () => new Promise(() => {}),
      onMessagePublish: (req) => (req.message?.topic === "t/raw" ? keep() : rewrite({ qos: 1 })),
      onSessionCreated: () => {
        log.push("handler");
      },
    },
    { middleware: [recorder("p1", log), recorder("p2", log)] },
  );
  const client = createMemoryClient(provider, { middleware: [recorder("s1", log), recorder("s2", log)], logger: quiet });

  await client.call("onClientAuthenticate", fakeAuthenticateRequest({ clientid: "c1", username: "alice" }));
  await client.call("onClientAuthorize", fakeAuthorizeRequest("room/1", "SUBSCRIBE", { clientid: "c1" }), { timeoutMs: 100 });
  await client.call("onMessagePublish", fakePublishRequest({ from: "c2", topic: "t/x" }));
  await client.call("onSessionCreated", { clientinfo: fakeClientInfo({ clientid: "c3" }) });

  const wantLog = [
    "s1>client.authenticate|c1|-",
    "s2>client.authenticate|c1|-",
    "p1>client.authenticate|c1|-",
    "p2>client.authenticate|c1|-",
    "handler",
    "p2<allow",
    "p1<allow",
    "s2<allow",
    "s1<allow",
    // A handler that never answers: everyone sees the fallback and why.
    "s1>client.authorize|c1|room/1",
    "s2>client.authorize|c1|room/1",
    "p1>client.authorize|c1|room/1",
    "p2>client.authorize|c1|room/1",
    "p2<deny!timeout",
    "p1<deny!timeout",
    "s2<deny!timeout",
    "s1<deny!timeout",
    "s1>message.publish|c2|t/x",
    "s2>message.publish|c2|t/x",
    "p1>message.publish|c2|t/x",
    "p2>message.publish|c2|t/x",
    "p2<rewrite",
    "p1<rewrite",
    "s2<rewrite",
    "s1<rewrite",
    "s1>session.created|c3|-",
    "s2>session.created|c3|-",
    "p1>session.created|c3|-",
    "p2>session.created|c3|-",
    "handler",
    "p2<none",
    "p1<none",
    "s2<none",
    "s1<none",
  ];
  expect(log).toEqual(wantLog);
});

test("a middleware that calls next() twice gets an error, and EMQX gets the fallback", async () => {
  const seen: string[] = [];
  const twice: HookMiddleware = async (_call, next) => {
    await next();
    try {
      return await next();
    } catch (err) {
      seen.push((err as Error).message);
      throw err;
    }
  };
  let runs = 0;
  const provider = defineProvider({ onClientAuthenticate: () => (runs++, allow()) }, { middleware: [twice] });
  const client = createMemoryClient(provider, { logger: quiet });
  const reply = await client.valued("onClientAuthenticate", fakeAuthenticateRequest());
  expect(reply.response?.value).toEqual({ case: "boolResult", value: false });
  expect(seen).toEqual(["hook middleware called next() more than once"]);
  expect(runs).toBe(1);
  expect(client.dispatcher.fallbackCounts()).toEqual({ "onClientAuthenticate:error": 1 });
});

test("a middleware may answer without calling the handler (a cache), and a throwing one gives the fallback", async () => {
  let runs = 0;
  const cache: HookMiddleware = async (call, next) => (call.clientId === "cached" ? { decision: allow() } : next());
  const boom: HookMiddleware = async (call, next) => {
    if (call.clientId === "boom") throw new Error("middleware failed");
    return next();
  };
  const provider = defineProvider({ onClientAuthenticate: () => (runs++, deny()) }, { middleware: [cache, boom] });
  const client = createMemoryClient(provider, { logger: quiet });
  const ask = async (clientid: string) =>
    (await client.valued("onClientAuthenticate", fakeAuthenticateRequest({ clientid }))).response?.value;
  expect(await ask("cached")).toEqual({ case: "boolResult", value: true });
  expect(await ask("boom")).toEqual({ case: "boolResult", value: false });
  expect(await ask("other")).toEqual({ case: "boolResult", value: false });
  expect(runs).toBe(1);
  expect(client.dispatcher.fallbackCounts()).toEqual({ "onClientAuthenticate:error": 1 });
});

test("an answer a middleware makes itself is checked like a handler's: invalid ones get the fallback", async () => {
  const warnings: string[] = [];
  const logger: Logger = { ...quiet, warn: (obj) => void warnings.push(String((obj as { err?: string }).err)) };
  const forge: HookMiddleware = async (call, next) => {
    if (call.clientId === "keep") return { decision: keep() } as never; // a publish decision on an access hook
    if (call.clientId === "nothing") return undefined as never;
    if (call.clientId === "ok") return { decision: allow() };
    return next();
  };
  const provider = defineProvider(
    { onClientAuthenticate: () => allow() },
    { middleware: [forge], fallback: { onClientAuthenticate: "deny" } },
  );
  const client = createMemoryClient(provider, { logger });
  const ask = async (clientid: string) =>
    (await client.valued("onClientAuthenticate", fakeAuthenticateRequest({ clientid }))).response?.value;
  expect(await ask("keep")).toEqual({ case: "boolResult", value: false });
  expect(await ask("nothing")).toEqual({ case: "boolResult", value: false });
  expect(await ask("ok")).toEqual({ case: "boolResult", value: true });
  expect(await ask("other")).toEqual({ case: "boolResult", value: true });
  expect(client.dispatcher.fallbackCounts()).toEqual({ "onClientAuthenticate:invalid": 2 });
  expect(warnings).toEqual([
    'a middleware\'s expected allow(), deny() or noOpinion(), got {"kind":"keep"}',
    "a middleware returned undefined instead of an outcome ({ decision })",
  ]);
});

test("a middleware's rewrite is checked too: an invalid topic is not sent to EMQX", async () => {
  const forge: HookMiddleware = async () => ({ decision: rewrite({ topic: "bad/#" }) });
  const provider = defineProvider({ onMessagePublish: () => keep() }, { middleware: [forge] });
  const client = createMemoryClient(provider, { logger: quiet });
  const reply = await client.valued("onMessagePublish", fakePublishRequest({ topic: "a/b" }));
  // The publish fallback (keep): IGNORE, no message, so EMQX publishes the original unchanged.
  expect(reply.response?.type).toBe(ValuedResponse_ResponsedType.IGNORE);
  expect(reply.response?.value.case).toBeUndefined();
  expect(client.dispatcher.fallbackCounts()).toEqual({ "onMessagePublish:invalid": 1 });
});

test("on a notification hook a middleware that returns nothing is harmless: EmptySuccess, nothing counted", async () => {
  const forgetful: HookMiddleware = async (_call, next) => {
    await next();
    return undefined as never;
  };
  let seen = 0;
  const provider = defineProvider({ onClientConnected: () => void seen++ }, { middleware: [forgetful] });
  const client = createMemoryClient(provider, { logger: quiet });
  const reply = await client.call("onClientConnected", { clientinfo: fakeClientInfo({ clientid: "c1" }) });
  expect(reply.status).toBe(0);
  expect(seen).toBe(1);
  expect(client.dispatcher.fallbackCounts()).toEqual({});
});
