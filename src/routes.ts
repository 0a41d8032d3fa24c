/**
 * `exhookRoutes`: the three HookProvider services (v1, v2, v3) as Connect routes, to mount in any
 * Connect server next to your own services.
 */
import type { Message } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type * as v3 from "../gen/emqx/exhook/v3/exhook_pb.js";
import { createDispatcher, type Dispatcher, type DispatcherOptions } from "./dispatch.js";
import { WIRE_PACKAGES, type WirePackage } from "./hooks.js";
import type { Provider } from "./provider.js";
import { requestToV3, responseFromV3, routeTable, SERVICES, type RpcTarget } from "./wire.js";

/**
 * Returns a `routes` function that registers `emqx.exhook.v1/v2/v3.HookProvider` on a Connect
 * router. Pass a provider (a dispatcher is created for it) or a dispatcher you share with a
 * standalone server.
 *
 * ```ts
 * connectNodeAdapter({ routes: (router) => { exhookRoutes(provider)(router); myRoutes(router); } })
 * ```
 */
export function exhookRoutes(
  provider: Provider | Dispatcher,
  options: DispatcherOptions = {},
): (router: ConnectRouter) => void {
  const dispatcher = "handleBytes" in provider ? provider : createDispatcher(provider, options);
  const routes = routeTable();
  return (router) => {
    for (const pkg of WIRE_PACKAGES) router.service(SERVICES[pkg], serviceImpl(dispatcher, pkg, routes));
  };
}

function serviceImpl(dispatcher: Dispatcher, pkg: WirePackage, routes: ReturnType<typeof routeTable>): ServiceImpl<(typeof SERVICES)[WirePackage]> {
  const impl: Record<string, (req: Message, ctx: HandlerContext) => Promise<Message> | Message> = {};
  for (const method of SERVICES[pkg].methods) {
    const route = routes.get(`/${SERVICES[pkg].typeName}/${method.name}`);
    if (!route) throw new Error(`no route for ${method.name}`);
    const target: RpcTarget = route.target;
    impl[method.localName] = (req, ctx) => {
      const request = requestToV3(pkg, target, req);
      if (target === "loaded") return responseFromV3(pkg, dispatcher.loaded(pkg, request as v3.ProviderLoadedRequest));
      if (target === "unloaded") return responseFromV3(pkg, dispatcher.unloaded(pkg, request as v3.ProviderUnloadedRequest));
      const res = dispatcher.call(pkg, target, request, { timeoutMs: ctx.timeoutMs(), signal: ctx.signal });
      if (pkg === "v3") return res;
      return res instanceof Promise ? res.then((r) => responseFromV3(pkg, r)) : responseFromV3(pkg, res);
    };
  }
  return impl as unknown as ServiceImpl<(typeof SERVICES)[WirePackage]>;
}
