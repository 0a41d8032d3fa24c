/**
 * The SQLite store off the event loop: the implementation of sqlite-store.ts runs in three worker
 * threads, and this module hands them the calls.
 *
 * - the **write thread** (read-write connection) runs every method that is not a read: message
 *   batches, presence changes, users, rules, retention. A write waiting on a lock (the CLI pruning
 *   the same file, up to `busy_timeout`) or a slow disk waits there;
 * - the **lookup thread** (read-only connection; WAL lets it read while the writer writes) runs
 *   `get…` and `ping`: a login's user lookup, one client's presence, readiness. Short and on the
 *   hooks' path, so at the normal CPU priority;
 * - the **scan thread** (read-only connection, lowest CPU priority) runs `list…` and `query…`: the
 *   read API, listings. A long scan there never delays a lookup, a write, or (when the CPU is
 *   short) the thread answering EMQX.
 *
 * The proxy is generic: any method of `Store`, including ones added later, is forwarded by name
 * with its arguments (structured-cloned). A thread that dies is started again; the calls it had
 * fail with a transient error (`code: "STORE_WORKER_EXITED"`), which the use cases retry.
 */
import { Worker } from "node:worker_threads";
import type { Logger } from "../provider.js";
import type { SqliteStoreOptions } from "./sqlite-store.js";
import { SQLITE_WORKER_FILE } from "./sqlite-worker-file.js";
import type { WorkerCall, WorkerError, WorkerInit, WorkerReply } from "./sqlite-worker.js";
import type { Store } from "./store.js";
import { exponentialDelay } from "./store-retry.js";

/** Options of {@link openSqliteWorkerStore}. */
export interface SqliteWorkerStoreOptions extends Omit<SqliteStoreOptions, "readonly"> {
  /** Where thread restarts are logged. */
  readonly logger?: Logger;
  /** The compiled worker entry. Default: `sqlite-worker.js` next to this module. */
  readonly workerFile?: string;
}

/** Which thread runs a method: by its name (see the module comment); anything else writes. */
export function threadOf(method: string): "lookup" | "scan" | "writer" {
  if (/^get[A-Z]/.test(method) || method === "ping") return "lookup";
  if (/^(list|query)[A-Z]/.test(method)) return "scan";
  return "writer";
}

interface Pending {
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: Error) => void;
}

function toError(e: WorkerError): Error {
  const err = new Error(e.message) as Error & { code?: string };
  err.name = e.name;
  if (e.code !== undefined) err.code = e.code;
  return err;
}

/** One worker thread, restarted when it dies. */
class StoreThread {
  private worker!: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closing = false;
  private restarts = 0;
  /** Calls made while the thread is being started again, sent once it is. */
  private backlog: WorkerCall[] | undefined;
  /** Resolves when the current worker has opened the store (rejects when it could not). */
  private opened!: Promise<{ kind: string; location: string }>;

  constructor(
    private readonly init: WorkerInit,
    private readonly file: string,
    private readonly logger: Logger | undefined,
  ) {
    this.start();
  }

  private start(): void {
    const worker = new Worker(this.file, { workerData: this.init, stdout: false, stderr: false });
    this.worker = worker;
    const backlog = this.backlog ?? [];
    this.backlog = undefined;
    for (const call of backlog) this.post(call);
    let openedResolve!: (v: { kind: string; location: string }) => void;
    let openedReject!: (e: Error) => void;
    this.opened = new Promise((res, rej) => ((openedResolve = res), (openedReject = rej)));
    this.opened.catch(() => {});
    worker.on("message", (msg: WorkerReply) => {
      if (msg.id === 0) {
        if (msg.error) openedReject(toError(msg.error));
        else openedResolve(msg.value as { kind: string; location: string });
        // Idle threads do not keep the process alive; a call in flight does.
        if (this.pending.size === 0) worker.unref();
        return;
      }
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      // Closing: the thread stays referenced until it has exited, so `await close()` returns even
      // when nothing else keeps the process alive (a script's last statement).
      if (this.pending.size === 0 && !this.closing) worker.unref();
      if (msg.error) p.reject(toError(msg.error));
      else p.resolve(msg.value);
    });
    worker.on("error", (err) => {
      openedReject(err);
      this.logger?.error({ err: err.message, thread: this.init.role, file: this.init.file }, "SQLite store thread failed");
    });
    worker.on("exit", (code) => {
      if (worker !== this.worker) return;
      openedReject(new Error(`the SQLite ${this.init.role} thread exited (code ${code}) before opening the store`));
      const lost = [...this.pending.values()];
      this.pending.clear();
      for (const p of lost)
        p.reject(Object.assign(new Error(`the SQLite ${this.init.role} thread exited (code ${code})`), { code: "STORE_WORKER_EXITED" }));
      if (this.closing) return;
      // Unexpected: start a new one (after a pause growing with repeated failures); calls made
      // meanwhile wait for it.
      this.backlog = [];
      this.restarts++;
      const delay = exponentialDelay(this.restarts);
      this.logger?.error(
        { thread: this.init.role, code, failedCalls: lost.length, restartInMs: delay },
        "SQLite store thread exited; starting a new one",
      );
      const t = setTimeout(() => {
        if (!this.closing) this.start();
      }, delay);
      t.unref();
    });
  }

  /** Waits for the store to be open in this thread (the first start only: later restarts are not awaited). */
  ready(): Promise<{ kind: string; location: string }> {
    return this.opened;
  }

  call(method: string, args: readonly unknown[]): Promise<unknown> {
    if (this.closing) return Promise.reject(Object.assign(new Error("the SQLite store is closed"), { code: "STORE_CLOSED" }));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      const call = { id, method, args } satisfies WorkerCall;
      if (this.backlog) {
        // Cloned now, like a postMessage would: later changes by the caller do not leak in.
        try {
          this.backlog.push(structuredClone(call));
        } catch (err) {
          this.pending.delete(id);
          reject(err as Error);
        }
        return;
      }
      this.post(call);
    });
  }

  private post(call: WorkerCall): void {
    this.worker.ref();
    try {
      this.worker.postMessage(call);
    } catch (err) {
      // An argument that cannot be cloned (DataCloneError): the same call would fail again.
      const p = this.pending.get(call.id);
      this.pending.delete(call.id);
      if (this.pending.size === 0) this.worker.unref();
      p?.reject(err as Error);
    }
  }

  async close(): Promise<void> {
    if (this.closing) return;
    if (this.backlog) {
      // Dead and waiting to be started again: nothing to close; the waiting calls fail.
      this.closing = true;
      for (const call of this.backlog)
        this.pending.get(call.id)?.reject(Object.assign(new Error("the SQLite store is closed"), { code: "STORE_CLOSED" }));
      this.pending.clear();
      this.backlog = undefined;
      return;
    }
    const closed = this.call("close", []).catch(() => undefined);
    this.closing = true;
    const worker = this.worker;
    const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
    await Promise.race([closed, new Promise((r) => setTimeout(r, 5000).unref())]);
    const t = setTimeout(() => void worker.terminate(), 5000);
    t.unref();
    await exited;
    clearTimeout(t);
  }
}

/**
 * Opens a SQLite store served by two worker threads (see the module comment). Resolves once both
 * have opened the database (the writer first: it creates or migrates the schema); rejects with
 * the error of the one that could not.
 */
export async function openSqliteWorkerStore(options: SqliteWorkerStoreOptions): Promise<Store> {
  const file = options.workerFile ?? SQLITE_WORKER_FILE;
  const base = { file: options.file, ...(options.busyTimeoutMs !== undefined ? { busyTimeoutMs: options.busyTimeoutMs } : {}) };
  const writer = new StoreThread({ ...base, role: "writer" }, file, options.logger);
  let info: { kind: string; location: string };
  try {
    info = await writer.ready();
  } catch (err) {
    await writer.close();
    throw err;
  }
  // A memory database is private to its connection: everything goes to the writer.
  const memory = options.file === ":memory:";
  const lookup = memory ? writer : new StoreThread({ ...base, role: "lookup" }, file, options.logger);
  const scan = memory ? writer : new StoreThread({ ...base, role: "scan" }, file, options.logger);
  try {
    await Promise.all([lookup.ready(), scan.ready()]);
  } catch (err) {
    await Promise.all([writer.close(), lookup.close(), scan.close()]);
    throw err;
  }
  const threads = { writer, lookup, scan };
  let closing: Promise<void> | undefined;
  const methods = new Map<string, (...args: unknown[]) => Promise<unknown>>();
  const target = {
    kind: info.kind,
    location: info.location,
    close: () => (closing ??= Promise.all([lookup.close(), scan.close(), writer.close()]).then(() => undefined)),
  };
  return new Proxy(target, {
    get(t, prop) {
      if (typeof prop !== "string") return undefined;
      if (prop in t) return t[prop as keyof typeof t];
      // Not a thenable: `await store` must give the store.
      if (prop === "then") return undefined;
      let fn = methods.get(prop);
      if (!fn) {
        const thread = threads[threadOf(prop)];
        fn = (...args: unknown[]) => thread.call(prop, args);
        methods.set(prop, fn);
      }
      return fn;
    },
  }) as unknown as Store;
}
