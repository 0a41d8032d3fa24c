/**
 * Type tests: what must not compile does not (each `@ts-expect-error` fails `tsc --noEmit` with
 * "Unused '@ts-expect-error' directive" if the line below it ever compiles), and what must compile
 * does. Jest runs the file too, so the positive cases are executed and the negative ones are shown
 * to be caught at run time as well.
 */
import { createDispatcher } from "../src/dispatch.js";
import type { HookContext } from "../src/context.js";
import type { HookRequest } from "../src/hooks.js";
import { HOOK_BY_KEY, type HookDef } from "../src/hooks.js";
import { defineProvider, type HookConfig, type HookHandler, type HookHandlers, type Logger } from "../src/provider.js";
import { allow, allowIf, deny, drop, keep, noOpinion, rewrite, type AccessDecision, type PublishDecision } from "../src/responses.js";
import * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { create } from "@bufbuild/protobuf";

/** Compile-time equality of two types. */
type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const assertType = <T extends true>(_: T): void => {};

const silent: Logger = { warn: () => {}, error: () => {}, info: () => {}, debug: () => {} };

describe("what must not compile", () => {
  test("a misspelt handler key (also refused at run time)", () => {
    const bad = () =>
      defineProvider({
        // @ts-expect-error -- "onClientAuthenticat" is not a hook key
        onClientAuthenticat: () => allow(),
      });
    expect(bad).toThrow('unknown hook "onClientAuthenticat" (did you mean onClientAuthenticate?)');
  });

  test("the v1 rpc name is not a handler key", () => {
    const bad = () =>
      defineProvider({
        // @ts-expect-error -- v1's OnClientCheckAcl is served by onClientAuthorize
        onClientCheckAcl: () => allow(),
      });
    expect(bad).toThrow("use onClientAuthorize");
  });

  test("a bool returned from onMessagePublish (and at run time: the fallback)", async () => {
    const provider = defineProvider({
      // @ts-expect-error -- publish answers keep() / rewrite() / drop(), not a bool
      onMessagePublish: () => true,
    });
    await expect(publishAnswer(provider)).resolves.toEqual({ fallback: "invalid", type: v3.ValuedResponse_ResponsedType.IGNORE });
  });

  test("a bool returned from an async onMessagePublish", () => {
    const handlers = {
      // @ts-expect-error -- publish answers keep() / rewrite() / drop(), not a bool
      onMessagePublish: async () => false,
    } satisfies HookHandlers;
    expect(typeof handlers.onMessagePublish).toBe("function");
  });

  test("allow() returned from onMessagePublish", () => {
    const handlers: HookHandlers = {
      // @ts-expect-error -- allow() is an authenticate/authorize answer
      onMessagePublish: () => allow(),
    };
    expect(Object.keys(handlers)).toEqual(["onMessagePublish"]);
  });

  test("rewrite(...) returned from onClientAuthenticate (and at run time: the fallback)", async () => {
    const provider = defineProvider({
      // @ts-expect-error -- a message is not an authentication answer
      onClientAuthenticate: () => rewrite({ topic: "x" }),
    });
    await expect(authenticateAnswer(provider)).resolves.toEqual({ fallback: "invalid", bool: false });
  });

  test("keep() returned from onClientAuthenticate", () => {
    const handlers: HookHandlers = {
      // @ts-expect-error -- keep() is a publish answer
      onClientAuthenticate: () => keep(),
    };
    expect(Object.keys(handlers)).toEqual(["onClientAuthenticate"]);
  });

  test("drop() returned from onClientAuthorize, a bool returned from onClientAuthorize", () => {
    const handlers: HookHandlers = {
      // @ts-expect-error -- drop() is a publish answer
      onClientAuthorize: () => drop(),
    };
    const handlers2: HookHandlers = {
      // @ts-expect-error -- authorize answers allow() / deny() / noOpinion(), not a bool
      onClientAuthorize: () => true,
    };
    expect([Object.keys(handlers), Object.keys(handlers2)]).toEqual([["onClientAuthorize"], ["onClientAuthorize"]]);
  });

  test("topics on onClientAuthenticate (and at run time: refused)", () => {
    const bad = () =>
      defineProvider({
        onClientAuthenticate: {
          handler: () => allow(),
          // @ts-expect-error -- topic filters exist only on message hooks
          topics: ["a/#"],
        },
      });
    expect(bad).toThrow("hook onClientAuthenticate: topic filters are only honoured on message hooks");
  });

  test('fallback "keep" on onClientAuthenticate (and at run time: refused)', () => {
    const bad = () =>
      defineProvider({
        onClientAuthenticate: {
          handler: () => allow(),
          // @ts-expect-error -- authenticate falls back to allow / deny / no-opinion
          fallback: "keep",
        },
      });
    expect(bad).toThrow('hook onClientAuthenticate: fallback must be one of "allow", "deny", "no-opinion", got "keep"');
  });

  test('provider-wide fallback "deny" for onMessagePublish', () => {
    // @ts-expect-error -- publish falls back to keep or drop
    const bad = () => defineProvider({}, { fallback: { onMessagePublish: "deny" } });
    expect(bad).toThrow('options.fallback.onMessagePublish must be one of "keep", "drop", got "deny"');
  });

  test("a fallback on a notification hook", () => {
    const bad = () =>
      defineProvider({
        onClientConnected: {
          handler: () => {},
          // @ts-expect-error -- notification hooks have no answer to fall back to
          fallback: "deny",
        },
      });
    expect(bad).toThrow("fallback applies only to decision hooks");
  });

  test("rewrite with a QoS that does not exist, or a topic that is not a string", () => {
    // @ts-expect-error -- QoS is 0, 1 or 2
    const badQos = () => rewrite({ qos: 3 });
    // @ts-expect-error -- a topic is a string
    const badTopic = () => rewrite({ topic: 5 });
    expect([typeof badQos, typeof badTopic]).toEqual(["function", "function"]);
  });

  test("a field the request does not have", () => {
    const handler: HookHandler<"onClientAuthenticate"> = ({ clientinfo }) =>
      // @ts-expect-error -- ClientInfo has `username`, not `user`
      allowIf(clientinfo?.user === "alice");
    expect(typeof handler).toBe("function");
  });

  test("a decision literal with a kind that does not exist", () => {
    const handlers: HookHandlers = {
      // @ts-expect-error -- "ignore" is spelt noOpinion() / { kind: "no-opinion" }
      onClientAuthenticate: () => ({ kind: "ignore" }),
    };
    expect(Object.keys(handlers)).toEqual(["onClientAuthenticate"]);
  });
});

describe("what must compile (and work)", () => {
  test("sync and async handlers, helpers and plain literals, HookConfig objects", async () => {
    const authConfig: HookConfig<"onClientAuthenticate"> = {
      handler: async ({ clientinfo }, ctx: HookContext) => {
        if (ctx.signal.aborted) return noOpinion();
        return clientinfo?.username === "alice" ? { kind: "allow" } : { kind: "deny" };
      },
      timeoutMs: 1000,
      fallback: "no-opinion",
    };
    const provider = defineProvider(
      {
        onClientAuthenticate: authConfig,
        onClientAuthorize: ({ topic }) => (topic.startsWith("ok/") ? allow() : deny()),
        onMessagePublish: {
          topics: ["a/#", "$share/g/b/+"],
          fallback: "drop",
          handler: async ({ message }): Promise<PublishDecision> => {
            if (message?.topic === "a/drop") return drop();
            if (message?.topic === "a/keep") return { kind: "keep" };
            return rewrite({ payload: "new", qos: 2, headers: { h: "v" } });
          },
        },
        onMessageDelivered: { topics: ["x/#"], handler: () => {} },
        onClientConnected: async (_req, ctx) => {
          ctx.values;
        },
        onSessionSubscribed: ({ topic, subopts }) => {
          void topic.length;
          void subopts?.qos;
        },
      },
      { fallback: { onClientAuthenticate: "deny", onMessagePublish: "keep" }, timeoutMs: 2000 },
    );
    expect(provider.hookSpecs("v3").map((s) => s.name)).toEqual([
      "client.connected",
      "client.authenticate",
      "client.authorize",
      "session.subscribed",
      "message.publish",
      "message.delivered",
    ]);
    const d = createDispatcher(provider, { logger: silent });
    const auth = async (username: string) =>
      (await d.call(
        "v3",
        def("onClientAuthenticate"),
        create(v3.ClientAuthenticateRequestSchema, { clientinfo: { username } }),
        {},
      )) as v3.ValuedResponse;
    expect((await auth("alice")).value).toEqual({ case: "boolResult", value: true });
    expect((await auth("eve")).value).toEqual({ case: "boolResult", value: false });
  });

  test("handler request types come from the generated v3 messages", () => {
    assertType<Equals<HookRequest<"onClientAuthenticate">, v3.ClientAuthenticateRequest>>(true);
    assertType<Equals<HookRequest<"onMessagePublish">, v3.MessagePublishRequest>>(true);
    assertType<Equals<HookRequest<"onClientAuthorize">["type"], v3.ClientAuthorizeRequest_AuthorizeReqType>>(true);
    assertType<Equals<ReturnType<HookHandler<"onClientAuthenticate">>, AccessDecision | Promise<AccessDecision>>>(true);
    assertType<Equals<ReturnType<HookHandler<"onMessagePublish">>, PublishDecision | Promise<PublishDecision>>>(true);
    assertType<Equals<ReturnType<HookHandler<"onClientConnect">>, void | Promise<void>>>(true);
    expect(true).toBe(true);
  });
});

function def(key: string): HookDef {
  return HOOK_BY_KEY.get(key) as HookDef;
}

/** Calls onMessagePublish once; reports the fallback taken and the answer's type. */
async function publishAnswer(provider: ReturnType<typeof defineProvider>): Promise<{ fallback: string | undefined; type: number }> {
  const outcomes: (string | undefined)[] = [];
  const d = createDispatcher(provider, {
    logger: silent,
    middleware: [
      async (_c, next) => {
        const o = await next();
        outcomes.push(o.fallback);
        return o;
      },
    ],
  });
  const res = (await d.call(
    "v3",
    def("onMessagePublish"),
    create(v3.MessagePublishRequestSchema, { message: { topic: "t", qos: 1 } }),
    {},
  )) as v3.ValuedResponse;
  return { fallback: outcomes[0], type: res.type };
}

/** Calls onClientAuthenticate once; reports the fallback taken and the bool answered. */
async function authenticateAnswer(provider: ReturnType<typeof defineProvider>): Promise<{ fallback: string | undefined; bool: unknown }> {
  const outcomes: (string | undefined)[] = [];
  const d = createDispatcher(provider, {
    logger: silent,
    middleware: [
      async (_c, next) => {
        const o = await next();
        outcomes.push(o.fallback);
        return o;
      },
    ],
  });
  const res = (await d.call(
    "v3",
    def("onClientAuthenticate"),
    create(v3.ClientAuthenticateRequestSchema, { clientinfo: { username: "u" } }),
    {},
  )) as v3.ValuedResponse;
  return { fallback: outcomes[0], bool: res.value.case === "boolResult" ? res.value.value : undefined };
}
