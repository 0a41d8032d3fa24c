/**
 * The operations port under `serve --workers N`: the primary listens on it and answers for the
 * whole process tree, so a scrape or a probe sees the server, not whichever worker the connection
 * landed on.
 *
 * - `/metrics`: prom-client's `AggregatorRegistry` collects every worker's registry over the
 *   cluster IPC channel and sums each series (the broker-loaded gauges take the maximum);
 * - `/readyz`: ready when every live worker is ready (listening, not draining, its provider's
 *   check passing) and, with `readyWhen: "loaded"`, when one of the allow-listed EMQX nodes has
 *   loaded any worker;
 * - the provider's routes (the read API): each request is handed to one worker (round robin);
 *   paths the provider lists in `perWorkerPaths` (`/stats`) are answered by every worker and the
 *   primary returns `{ workers: [{ pid, ...answer }] }`.
 *
 * Workers answer through the cluster bus's request/response channel (ops/cluster-bus.ts).
 */
import cluster, { type Worker } from "node:cluster";
import { AggregatorRegistry, type Registry } from "prom-client";
import type { OpsRequest, OpsResponse, ProviderOps } from "../provider.js";
import { answerPrimary, askWorkers } from "./cluster-bus.js";
import { checkReadiness, type OpsSource, type ReadinessCheck, type ReadyWhen } from "./http-probes.js";

const CHANNEL = "exhook:ops";

/** What a worker tells the primary about its provider's routes. */
export interface WorkerOpsInfo {
  readonly http: boolean;
  readonly paths: readonly string[];
  readonly perWorkerPaths: readonly string[];
}

/** A worker's part of readiness. */
interface WorkerReadiness {
  readonly serving: boolean;
  readonly loadedNodes: readonly string[];
  readonly providerNotReady: string | undefined;
  readonly checks: readonly ReadinessCheck[];
}

type Ask = { readonly kind: "info" } | { readonly kind: "readiness" } | { readonly kind: "http"; readonly req: OpsRequest };

/** In a worker: lets the primary read its metrics, readiness and provider routes. */
export function serveOpsToPrimary(local: {
  readonly registry?: Registry | undefined;
  readonly serving: () => boolean;
  readonly loadedNodes: () => readonly string[];
  /** The provider module's extra readiness checks (`addReadinessCheck`). */
  readonly checks?: () => readonly ReadinessCheck[];
  readonly provider: ProviderOps | undefined;
}): void {
  if (local.registry) {
    // Constructing one installs prom-client's answer to the primary's metric requests in this worker.
    new AggregatorRegistry();
    AggregatorRegistry.setRegistries([local.registry]);
  }
  answerPrimary(CHANNEL, async (data) => {
    const ask = data as Ask;
    if (ask.kind === "info") {
      return {
        http: !!local.provider?.http,
        paths: local.provider?.paths ?? [],
        perWorkerPaths: local.provider?.perWorkerPaths ?? [],
      } satisfies WorkerOpsInfo;
    }
    if (ask.kind === "readiness") {
      return {
        serving: local.serving(),
        loadedNodes: local.loadedNodes(),
        providerNotReady: await local.provider?.notReady?.(),
        checks: local.checks?.() ?? [],
      } satisfies WorkerReadiness;
    }
    return (await local.provider?.http?.(ask.req)) ?? null;
  });
}

/** In the primary: asks one listening worker what its provider serves (for the derived port and the banner). */
export async function workerOpsInfo(worker: Worker, timeoutMs = 5000): Promise<WorkerOpsInfo | undefined> {
  const [a] = await askWorkers(CHANNEL, { kind: "info" } satisfies Ask, { workers: [worker], timeoutMs });
  return a?.ok ? (a.data as WorkerOpsInfo) : undefined;
}

/** Options of {@link clusterOpsSource}. */
export interface ClusterOpsOptions {
  readonly readyWhen: ReadyWhen;
  readonly readyNodes: readonly string[] | undefined;
  /** The routes the workers' provider serves (from {@link workerOpsInfo}). */
  readonly info: WorkerOpsInfo | undefined;
  /** Whether to serve aggregated `/metrics`. */
  readonly metrics: boolean;
  /** How long to wait for a worker's answer, in ms. Default 3000. */
  readonly timeoutMs?: number;
}

/** In the primary: what the operations port serves for the whole process tree. */
export function clusterOpsSource(options: ClusterOpsOptions): OpsSource {
  const timeoutMs = options.timeoutMs ?? 3000;
  const aggregator = options.metrics ? new AggregatorRegistry() : undefined;
  const perWorker = new Set(options.info?.perWorkerPaths ?? []);
  let turn = 0;
  const live = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && w.isConnected());
  return {
    metrics: aggregator ? { text: () => aggregator.clusterMetrics(), contentType: aggregator.contentType } : undefined,
    paths: options.info?.paths,
    async readiness() {
      const answers = await askWorkers(CHANNEL, { kind: "readiness" } satisfies Ask, { timeoutMs });
      const reasons: string[] = [];
      if (answers.length === 0) reasons.push("no worker is running");
      const nodes = new Set<string>();
      let serving = answers.length > 0;
      for (const a of answers) {
        if (!a.ok) {
          reasons.push(String(a.data));
          serving = false;
          continue;
        }
        const r = a.data as WorkerReadiness;
        if (!r.serving) serving = false;
        if (r.providerNotReady !== undefined) reasons.push(`worker ${a.pid}: ${r.providerNotReady}`);
        for (const c of r.checks) if (!c.ok) reasons.push(`worker ${a.pid}: ${c.name}: ${c.detail}`);
        for (const n of r.loadedNodes) nodes.add(n);
      }
      const r = checkReadiness({
        serving,
        loadedNodes: [...nodes],
        readyWhen: options.readyWhen,
        readyNodes: options.readyNodes,
        providerNotReady: undefined,
      });
      const all = [...r.reasons, ...reasons];
      return { ready: all.length === 0, reasons: all, loadedNodes: r.loadedNodes };
    },
    http: options.info?.http
      ? async (req): Promise<OpsResponse | undefined> => {
          if (perWorker.has(req.path)) {
            const answers = await askWorkers(CHANNEL, { kind: "http", req } satisfies Ask, { timeoutMs });
            return {
              status: 200,
              body: {
                workers: answers.map((a) =>
                  a.ok && a.data ? { pid: a.pid, ...((a.data as OpsResponse).body as object) } : { pid: a.pid, error: String(a.data) },
                ),
              },
            };
          }
          const workers = live();
          if (workers.length === 0) return { status: 503, body: { error: "no worker is running" } };
          const w = workers[turn++ % workers.length] as Worker;
          // A query may legitimately take its full time limit: wait a little longer than that.
          const [a] = await askWorkers(CHANNEL, { kind: "http", req } satisfies Ask, {
            workers: [w],
            timeoutMs: Math.max(timeoutMs, 65_000),
          });
          if (!a?.ok) return { status: 503, body: { error: String(a?.data) } };
          return (a.data as OpsResponse | null) ?? undefined;
        }
      : undefined,
  };
}
