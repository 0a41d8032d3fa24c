/**
 * The SQLite worker thread's entry (started by `openSqliteWorkerStore`): opens the store of
 * sqlite-store.ts on this thread and runs whatever `Store` method the main thread names, one
 * message per call. Generic over the interface: a method added to `Store` (and to the SQLite
 * backend) is reachable without touching this file.
 */
import { parentPort, workerData } from "node:worker_threads";
import { openSqliteStore, type SqliteStoreOptions } from "./sqlite-store.js";
import type { Store } from "./store.js";
import { lowerThreadPriority } from "./thread-priority.js";

/** A call from the main thread. */
export interface WorkerCall {
  readonly id: number;
  readonly method: string;
  readonly args: readonly unknown[];
}

/** An error as it crosses the thread boundary (structured clone keeps only name and message of an Error). */
export interface WorkerError {
  readonly name: string;
  readonly message: string;
  readonly code?: string;
}

/** The answer to a call, or the first message (`id` 0) once the store is open (or failed to open). */
export type WorkerReply = { readonly id: number; readonly value?: unknown; readonly error?: WorkerError };

/** What `workerData` holds. */
export interface WorkerInit extends SqliteStoreOptions {
  readonly role: "writer" | "lookup" | "scan";
}

function toWorkerError(err: unknown): WorkerError {
  const e = err as { name?: unknown; message?: unknown; code?: unknown };
  return {
    name: typeof e?.name === "string" ? e.name : "Error",
    message: typeof e?.message === "string" ? e.message : String(err),
    ...(typeof e?.code === "string" ? { code: e.code } : {}),
  };
}

/** Payload buffers of an answer, moved to the main thread instead of copied. */
function transferables(value: unknown): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  const add = (v: unknown) => {
    const p = (v as { payload?: unknown } | null)?.payload;
    if (p instanceof Uint8Array && p.byteOffset === 0 && p.byteLength === p.buffer.byteLength && p.buffer instanceof ArrayBuffer)
      out.add(p.buffer);
  };
  if (Array.isArray(value)) for (const v of value) add(v);
  return [...out];
}

function run(): void {
  const port = parentPort;
  if (!port) throw new Error("sqlite-worker.js runs as a worker thread (openSqliteWorkerStore starts it)");
  const init = workerData as WorkerInit;
  // The read API's long scans: when the CPU is short, the thread answering EMQX must win.
  if (init.role === "scan") lowerThreadPriority(19);
  let store: Store;
  try {
    store = openSqliteStore({
      file: init.file,
      readonly: init.role !== "writer",
      ...(init.busyTimeoutMs !== undefined ? { busyTimeoutMs: init.busyTimeoutMs } : {}),
    });
  } catch (err) {
    port.postMessage({ id: 0, error: toWorkerError(err) } satisfies WorkerReply);
    return;
  }
  port.postMessage({ id: 0, value: { kind: store.kind, location: store.location } } satisfies WorkerReply);
  port.on("message", (call: WorkerCall) => {
    void (async () => {
      try {
        // @internal For tests of the restart path: ends this thread the way a crash would.
        if (call.method === "__exitThread") process.exit(1);
        if (call.method === "close") {
          await store.close();
          port.postMessage({ id: call.id } satisfies WorkerReply);
          port.close();
          return;
        }
        const fn = (store as unknown as Record<string, unknown>)[call.method];
        if (typeof fn !== "function") throw new TypeError(`the SQLite store has no method ${JSON.stringify(call.method)}`);
        const value: unknown = await (fn as (...a: unknown[]) => unknown).apply(store, call.args as unknown[]);
        let list: ArrayBuffer[] = [];
        try {
          list = transferables(value);
        } catch {
          list = [];
        }
        port.postMessage({ id: call.id, value } satisfies WorkerReply, list);
      } catch (err) {
        port.postMessage({ id: call.id, error: toWorkerError(err) } satisfies WorkerReply);
      }
    })();
  });
}

run();
