/**
 * A bridge under test: the real use case (createBridge) on a real store, served to a fake EMQX in
 * memory, with a logger that keeps its lines so tests can assert what was logged.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineProvider, type Logger } from "../../src/index";
import { createFakeEmqx, type FakeEmqx } from "../../src/testing/index";
import { createBridge, openSqliteStore, parseConfig, type Bridge, type Store } from "../../src/usecases/index";
import type { ForwardStoreSpec } from "../../src/usecases/bridge/forward-worker";
import type { Landed } from "./brokers";

/** A logger keeping every line (level, message, fields). */
export interface MemoryLogger extends Logger {
  readonly lines: Array<{ level: string; msg: string; obj: Record<string, unknown> }>;
  has(level: string, msg: RegExp, n?: number): boolean;
}

export function memoryLogger(): MemoryLogger {
  const lines: MemoryLogger["lines"] = [];
  const at = (level: string) => (obj: object, msg?: string) =>
    void lines.push({ level, msg: msg ?? "", obj: obj as Record<string, unknown> });
  return {
    lines,
    warn: at("warn"),
    error: at("error"),
    info: at("info"),
    debug: at("debug"),
    has: (level, msg, n = 1) => lines.filter((l) => l.level === level && msg.test(l.msg)).length >= n,
  };
}

export interface TestBridge {
  readonly bridge: Bridge;
  readonly store: Store;
  readonly emqx: FakeEmqx;
  readonly logger: MemoryLogger;
  /** Publishes `count` messages per client, payload `<client>-<i>`, each client sequentially, clients in parallel. */
  publishMany(clients: readonly string[], from: number, to: number, topic?: (client: string) => string): Promise<void>;
  close(): Promise<void>;
}

/** Options of {@link openTestBridge}. */
export interface TestBridgeOptions {
  /** Use this store (not closed by `close`). Default: a SQLite store in a temp dir. */
  readonly store?: Store;
  readonly owner?: string;
  readonly requestTimeoutMs?: number;
  /**
   * How the forwarding thread opens the store. Default: the temp SQLite file when the bridge owns
   * its store (so the tests run the shipped mode, forwarding in a thread), none with `store` given
   * (forwarding on this thread). `false`: no thread.
   */
  readonly forwardStore?: ForwardStoreSpec | false;
}

/** Starts a bridge from a `bridge` config section (validated like the config file) with connected fake clients. */
export async function openTestBridge(
  bridgeSection: Record<string, unknown>,
  clients: readonly string[],
  options: TestBridgeOptions = {},
): Promise<TestBridge> {
  const cfg = parseConfig({ bridge: { enabled: true, ...bridgeSection } }, {});
  const dir = options.store ? undefined : mkdtempSync(join(tmpdir(), "exhook-bridge-"));
  const file = join(dir ?? "", "exhook.db");
  const store = options.store ?? openSqliteStore({ file });
  const logger = memoryLogger();
  const forwardStore = options.forwardStore ?? (options.store ? false : ({ kind: "sqlite", file } as const));
  const bridge = createBridge({
    config: cfg.bridge,
    store,
    logger,
    ...(options.owner ? { owner: options.owner } : {}),
    ...(forwardStore ? { forwardStore } : {}),
  });
  const provider = defineProvider(bridge.handlers);
  const quiet = memoryLogger();
  const emqx = createFakeEmqx({
    provider,
    logger: quiet,
    ...(options.requestTimeoutMs ? { requestTimeoutMs: options.requestTimeoutMs } : {}),
  });
  await emqx.start();
  for (const c of clients) await emqx.connect({ clientid: c, username: `user-${c}` });
  bridge.start();
  return {
    bridge,
    store,
    emqx,
    logger,
    async publishMany(cs, from, to, topic = (c) => `t/${c}`) {
      await Promise.all(
        cs.map(async (c) => {
          for (let i = from; i < to; i++) await emqx.publish(c, { topic: topic(c), payload: `${c}-${i}`, qos: 1 });
        }),
      );
    },
    async close() {
      await bridge.close();
      await emqx.stop().catch(() => {});
      if (!options.store) {
        await store.close();
        rmSync(dir as string, { recursive: true, force: true });
      }
    },
  };
}

/** Payload order per client: returns the payloads missing and those that arrived before an earlier one (first arrivals only). */
export function checkOrder(
  payloads: readonly string[],
  clients: readonly string[],
  count: number,
): { missing: string[]; outOfOrder: string[] } {
  const first = new Map<string, number>();
  payloads.forEach((p, i) => {
    if (!first.has(p)) first.set(p, i);
  });
  const missing: string[] = [];
  const outOfOrder: string[] = [];
  for (const c of clients) {
    let last = -1;
    for (let i = 0; i < count; i++) {
      const at = first.get(`${c}-${i}`);
      if (at === undefined) missing.push(`${c}-${i}`);
      else {
        if (at < last) outOfOrder.push(`${c}-${i}`);
        last = at;
      }
    }
  }
  return { missing, outOfOrder };
}

/**
 * Each id's payload, from what landed in an engine. A message sent again (sent before a crash or
 * a cut, not settled) must carry the same id with the same payload: `conflicts` lists the ids that
 * came with two different payloads.
 */
export function payloadsById(landed: readonly Landed[]): { byId: Map<string, string>; conflicts: string[] } {
  const byId = new Map<string, string>();
  const conflicts: string[] = [];
  for (const l of landed) {
    const id = l.meta["id"] as string;
    const seen = byId.get(id);
    if (seen === undefined) byId.set(id, l.payload);
    else if (seen !== l.payload) conflicts.push(id);
  }
  return { byId, conflicts };
}
