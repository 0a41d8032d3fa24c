/**
 * The persistence durability claim, tested with a real kill: a writer process stores messages in
 * SQLite as fast as it can and reports what is committed; it is SIGKILLed mid-stream. The database
 * must open cleanly (integrity check), hold every message reported committed, and hold a gap-free
 * prefix of what was pushed (batches commit whole and in order: nothing half-written, no holes).
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import Database from "better-sqlite3";
import { openSqliteStore } from "../src/usecases/index";
import { compileTree, ROOT } from "./helpers/compile";

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "exhook-kill-"));
  compileTree("src", dir);
  compileTree("gen", dir);
  writeFileSync(
    path.join(dir, "writer.js"),
    `const { openSqliteStore, createMessageWriter } = require("./src/usecases/index.js");
const store = openSqliteStore({ file: process.argv[2] });
const w = createMessageWriter({ store, batchSize: 50, flushMs: 2, maxQueueBytes: 1e10 });
let i = 0;
setInterval(() => {
  for (let k = 0; k < 200; k++, i++) {
    w.push({ id: "m" + String(i).padStart(9, "0"), topic: "t/" + (i % 7), payload: new Uint8Array(64).fill(i & 255), qos: 1,
      publisher: "p", username: "u", node: "n", timestamp: i, storedAt: Date.now(), headers: { k: String(i) } });
  }
}, 1);
setInterval(() => process.stdout.write("written " + w.stats().written + "\\n"), 1);
`,
  );
}, 30_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("SIGKILL mid-stream: every message reported committed is there, as a gap-free prefix, and the database is intact", async () => {
  const file = path.join(dir, "data", "exhook.db");
  const child = spawn(process.execPath, [path.join(dir, "writer.js"), file], {
    cwd: dir,
    env: { ...process.env, NODE_PATH: path.join(ROOT, "node_modules") },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
  let reported = 0;
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
  await new Promise<void>((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error(`the writer did not get going; stderr:\n${stderr}`)), 20_000);
    let buf = "";
    child.stdout?.on("data", (c: Buffer) => {
      buf += c.toString();
      const lines = buf.split("\n");
      buf = lines.pop() ?? "";
      for (const line of lines) {
        const n = Number(line.split(" ")[1]);
        if (n > reported) reported = n;
      }
      // Kill while batches keep committing: well after the start, at an arbitrary moment.
      if (reported >= 5000) {
        clearTimeout(guard);
        child.kill("SIGKILL");
        resolve();
      }
    });
  });
  expect(await exited).toBe("SIGKILL");

  const raw = new Database(file);
  try {
    expect(raw.pragma("integrity_check", { simple: true })).toBe("ok");
    const { n, maxId } = raw.prepare("SELECT count(*) AS n, max(id) AS maxId FROM messages").get() as { n: number; maxId: string };
    expect(n).toBeGreaterThanOrEqual(reported);
    // Gap-free prefix m000000000 .. m<n-1>: whole batches, in order.
    expect(maxId).toBe("m" + String(n - 1).padStart(9, "0"));
    const { minTs, maxTs } = raw.prepare("SELECT min(ts) AS minTs, max(ts) AS maxTs FROM messages").get() as {
      minTs: number;
      maxTs: number;
    };
    expect([minTs, maxTs]).toEqual([0, n - 1]);
  } finally {
    raw.close();
  }
  // The store itself reopens (WAL recovery) and reads the last committed message back whole.
  const store = openSqliteStore({ file });
  try {
    const [last] = await store.queryMessages({ limit: 1 });
    expect(last?.payload).toEqual(new Uint8Array(64).fill((last?.timestamp ?? 0) & 255));
    expect(last?.headers).toEqual({ k: String(last?.timestamp) });
  } finally {
    await store.close();
  }
}, 60_000);
