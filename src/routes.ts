/**
 * `exhookRoutes`: the three HookProvider services (v1, v2, v3) as Connect routes, to mount in any
 * Connect server next to your own services.
 */
import type { DescMethodUnary, Message } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import type * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { createDispatcher, type Dispatcher, type DispatcherOptions } from "./dispatch.js";
import { WIRE_PACKAGES } from "./hooks.js";
import type { Provider } from "./provider.js";
import { answerSchema, decodeSchema, routeTable, SERVICES, toHandlerRequest } from "./wire.js";

/**
 * Returns a `routes` function that registers `emqx.exhook.v1/v2/v3.HookProvider` on a Connect
 * router. Pass a provider (a dispatcher is created for it) or a dispatcher you share with a
 * standalone server.
 *
 * ```ts
 * connectNodeAdapter({ routes: (router) => { exhookRoutes(provider)(router); myRoutes(router); } })
 * ```
 *
 * Every method is registered under its package's own path and rpc name but with the v3 request
 * and answer schemas (`decodeSchema`, `answerSchema` in wire.ts): v3 reads every package's bytes
 * and the answers are wire-identical, so a v1/v2 call is decoded once, straight into the shape
 * handlers see, and its answer is encoded once, exactly as on the native transport.
 */
export function exhookRoutes(provider: Provider | Dispatcher, options: DispatcherOptions = {}): (router: ConnectRouter) => void {
  const dispatcher = "handleBytes" in provider ? provider : createDispatcher(provider, options);
  const methods: Array<{ method: DescMethodUnary; impl: (req: Message, ctx: HandlerContext) => Promise<Message> | Message }> = [];
  const routes = routeTable();
  for (const pkg of WIRE_PACKAGES) {
    for (const own of SERVICES[pkg].methods) {
      const route = routes.get(`/${SERVICES[pkg].typeName}/${own.name}`);
      if (!route) throw new Error(`no route for ${own.name}`);
      const target = route.target;
      // Same parent (path), name and kind; v3 schemas in and out.
      const method = { ...own, input: decodeSchema(pkg, target), output: answerSchema(target) } as unknown as DescMethodUnary;
      let impl: (req: Message, ctx: HandlerContext) => Promise<Message> | Message;
      if (target === "loaded") impl = (req) => dispatcher.loaded(pkg, toHandlerRequest(pkg, target, req) as v3.ProviderLoadedRequest);
      else if (target === "unloaded") impl = (req) => dispatcher.unloaded(pkg, req as v3.ProviderUnloadedRequest);
      else
        impl = (req, ctx) =>
          dispatcher.call(pkg, target, toHandlerRequest(pkg, target, req), { timeoutMs: ctx.timeoutMs(), signal: ctx.signal });
      methods.push({ method, impl });
    }
  }
  return (router) => {
    for (const { method, impl } of methods) router.rpc(method, impl as never);
  };
}
