/**
 * The package as a user gets it: `npm pack` (which builds dist/ through prepack), installed from
 * the tarball into throwaway consumer projects with no compiler on PATH, then the README's own
 * examples (extracted from its `<!-- file: NAME -->` code blocks, so the README cannot drift)
 * compiled with TypeScript 5.9 and 7 (the native compiler) as ESM + nodenext, CommonJS + node16,
 * bundler resolution and node10, and run: the first provider served by the installed CLI, the
 * embedding example serving over HTTP/2, the test-kit example under `node --test`, the use cases
 * from `emqx-exhook/usecases` with and without the optional SQLite driver. Needs the npm registry
 * (one shared npm cache; the consumer projects share one node_modules).
 *
 * EXHOOK_PACKAGE_SOURCE=<dir> packs another checkout instead of this one (to see what an older
 * package does).
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { createFakeEmqx } from "../src/testing/index";
import { OPTIONAL_DEPENDENCIES } from "../src/usecases/optional-dependency";
import { spawnCli } from "./helpers/cli-process";

const ROOT = path.join(__dirname, "..");
const SOURCE = process.env["EXHOOK_PACKAGE_SOURCE"] ?? ROOT;
const STEP_MS = 240_000;

let work: string;
let consumer: string;
let tarball: string;
let tarFiles: string[];
/** PATH with node and sh only (npm is run by path): no compiler, no python, no make. */
let barePath: string;
let npmCli: string;

/** The README's `<!-- file: NAME -->` code blocks, by file name. */
function readmeFiles(): Map<string, string> {
  const readme = readFileSync(path.join(SOURCE, "README.md"), "utf8");
  const files = new Map<string, string>();
  for (const m of readme.matchAll(/<!-- file: ([^ ]+) -->\n```[a-z]*\n([\s\S]*?)\n```/g)) files.set(m[1] as string, `${m[2]}\n`);
  return files;
}

function run(cmd: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = process.env): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
}

/** Runs and fails with everything it printed unless it exits 0. */
function ok(cmd: string, args: readonly string[], cwd: string, env?: NodeJS.ProcessEnv): string {
  const r = run(cmd, args, cwd, env);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} (in ${cwd}) exited ${r.status ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

const tsc = (version: "59" | "7", project: string, extra: string[] = []) =>
  run(process.execPath, [path.join(consumer, "node_modules", `ts${version}`, "bin", "tsc"), "-p", project, ...extra], consumer);

function expectCompiles(version: "59" | "7", project: string, extra: string[] = []): void {
  const r = tsc(version, project, extra);
  expect({ project, version, status: r.status, out: `${r.stdout}${r.stderr}`.trim() }).toEqual({ project, version, status: 0, out: "" });
}

beforeAll(() => {
  work = mkdtempSync(path.join(tmpdir(), "exhook-package-"));
  // 1. Pack a copy of the sources (prepack builds its own dist/, leaving this checkout's alone).
  const stage = path.join(work, "stage");
  mkdirSync(stage);
  for (const f of readdirSync(SOURCE)) {
    if (["node_modules", "dist", "data", ".git", "coverage"].includes(f)) continue;
    cpSync(path.join(SOURCE, f), path.join(stage, f), { recursive: true });
  }
  symlinkSync(path.join(ROOT, "node_modules"), path.join(stage, "node_modules"), "dir");
  const packed = ok("npm", ["pack", "--silent", "--pack-destination", work], stage).trim().split("\n");
  tarball = path.join(work, packed[packed.length - 1] as string);
  tarFiles = ok("tar", ["tzf", tarball], work)
    .split("\n")
    .filter(Boolean)
    .map((f) => f.replace(/^package\//, ""));

  // 2. Install it with node and npm alone on PATH: nothing may need a compiler.
  const bin = path.join(work, "bin");
  mkdirSync(bin);
  symlinkSync(process.execPath, path.join(bin, "node"));
  // npm runs install scripts with sh; a compiler toolchain (cc, make, python for node-gyp) is what is missing.
  symlinkSync("/bin/sh", path.join(bin, "sh"));
  npmCli = realpathSync(ok("sh", ["-c", "command -v npm"], work).trim());
  barePath = bin;
  consumer = path.join(work, "consumer");
  mkdirSync(consumer);
  writeFileSync(path.join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true }, null, 2));
  ok(
    process.execPath,
    [
      npmCli,
      "install",
      "--no-audit",
      "--no-fund",
      "--loglevel=error",
      tarball,
      "ts59@npm:typescript@~5.9",
      "ts7@npm:typescript@^7",
      "@types/node@^20",
      "@connectrpc/connect-node",
    ],
    consumer,
    { ...process.env, PATH: barePath },
  );

  // 3. The consumer projects, sharing consumer/node_modules: the README's files verbatim.
  const files = readmeFiles();
  const sources = ["my-provider.ts", "my-provider.test.ts", "server.ts"];
  const project = (name: string, pkg: object, tsconfig: object | undefined) => {
    const dir = path.join(consumer, name);
    mkdirSync(dir);
    writeFileSync(path.join(dir, "package.json"), JSON.stringify(pkg, null, 2));
    if (tsconfig) writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify(tsconfig, null, 2));
    for (const f of sources) if (files.has(f)) writeFileSync(path.join(dir, f), files.get(f) as string);
    writeFileSync(path.join(dir, "usecases.ts"), USECASES_TS);
    return dir;
  };
  const esm = project("esm", JSON.parse(files.get("package.json") ?? "{}"), undefined);
  if (files.has("tsconfig.json")) writeFileSync(path.join(esm, "tsconfig.json"), files.get("tsconfig.json") as string);
  const base = { target: "es2022", strict: true, outDir: "dist", types: ["node"], skipLibCheck: false };
  project("cjs", { type: "commonjs" }, { compilerOptions: { ...base, module: "node16" }, include: ["*.ts"] });
  project(
    "bundler",
    { type: "module" },
    { compilerOptions: { ...base, module: "preserve", moduleResolution: "bundler", noEmit: true }, include: ["*.ts"] },
  );
  const node10 = path.join(consumer, "node10");
  mkdirSync(node10);
  writeFileSync(path.join(node10, "package.json"), JSON.stringify({ type: "commonjs" }));
  writeFileSync(
    path.join(node10, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { ...base, module: "commonjs", moduleResolution: "node10", esModuleInterop: true, noEmit: true },
      include: ["*.ts"],
    }),
  );
  writeFileSync(path.join(node10, "entries.ts"), NODE10_TS);
}, STEP_MS);

afterAll(() => {
  if (work && !process.env["EXHOOK_KEEP_PACKAGE_TEST"]) rmSync(work, { recursive: true, force: true });
});

/** Imports every entry from `emqx-exhook/usecases` and opens a SQLite store: prints what happened. */
const USECASES_TS = `import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isExHookConfigError } from "emqx-exhook";
import { createExHookServer } from "emqx-exhook/node";
import { openSqliteStore, openSqliteWorkerStore, parseConfig, stackProvider } from "emqx-exhook/usecases";

async function main(): Promise<void> {
  const cfg = parseConfig({ http: { enabled: false } });
  console.log("config", cfg.store.kind ?? "sqlite", typeof stackProvider, typeof createExHookServer);
  try {
    const store = openSqliteStore({ file: ":memory:" });
    await store.putUser({ username: "u", passwordHash: "h", clientIds: [], createdAt: 1, updatedAt: 1 });
    console.log("stored", (await store.listUsers()).map((u) => u.username).join(","));
    await store.close();
    // The store the stack uses runs in worker threads: their script must be found in this build.
    const dir = mkdtempSync(join(tmpdir(), "exhook-consumer-"));
    const threaded = await openSqliteWorkerStore({ file: join(dir, "exhook.db") });
    await threaded.putUser({ username: "t", passwordHash: "h", clientIds: [], createdAt: 1, updatedAt: 1 });
    console.log("threads", (await threaded.listUsers()).map((u) => u.username).join(","));
    await threaded.close();
    rmSync(dir, { recursive: true, force: true });
  } catch (err) {
    console.log(isExHookConfigError(err) ? \`config error: \${(err as Error).message}\` : \`other error: \${String(err)}\`);
  }
}
void main();
`;

const NODE10_TS = `import { defineProvider, type Provider } from "emqx-exhook";
import { createExHookServer } from "emqx-exhook/node";
import { createFakeEmqx } from "emqx-exhook/testing";
import { createStack } from "emqx-exhook/usecases";
export const p: Provider = defineProvider({});
export const all = [createExHookServer, createFakeEmqx, createStack];
`;

describe("the packed tarball", () => {
  test("ships both builds, their types, docs the README links to, and nothing of the repository's tests or examples", () => {
    for (const f of [
      "package.json",
      "README.md",
      "LICENSE",
      "dist/package.json",
      "dist/esm/package.json",
      "dist/src/index.js",
      "dist/src/index.d.ts",
      "dist/esm/src/index.js",
      "dist/esm/src/index.d.ts",
      "dist/src/cli.js",
      "docs/usecases.md",
      "config.example.yaml",
    ]) {
      expect(tarFiles).toContain(f);
    }
    expect(
      tarFiles.filter(
        (f) =>
          /^(test|examples|bench|scripts|src)\//.test(f) || f.startsWith("dist/examples") || (f.endsWith(".ts") && !f.endsWith(".d.ts")),
      ),
    ).toEqual([]);
    // Every relative link of the README and the docs points at a file in the package.
    const unpacked = path.join(work, "unpacked");
    mkdirSync(unpacked, { recursive: true });
    ok("tar", ["xzf", tarball, "-C", unpacked], work);
    const pkgDir = path.join(unpacked, "package");
    const broken: string[] = [];
    for (const doc of ["README.md", ...readdirSync(path.join(pkgDir, "docs")).map((d) => `docs/${d}`)]) {
      const text = readFileSync(path.join(pkgDir, doc), "utf8");
      for (const m of text.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
        const target = m[1] as string;
        if (/^[a-z]+:/.test(target)) continue;
        if (!existsSync(path.resolve(path.dirname(path.join(pkgDir, doc)), target))) broken.push(`${doc} -> ${target}`);
      }
      if (text.includes("../shared/")) broken.push(`${doc} -> ../shared/`);
    }
    expect(broken).toEqual([]);
    // Source maps carry their sources (no .ts ships).
    const maps = tarFiles.filter((f) => f.endsWith(".js.map") || f.endsWith(".mjs.map"));
    expect(maps.length).toBeGreaterThan(50);
    const noSources = maps.filter((f) => {
      const map = JSON.parse(readFileSync(path.join(pkgDir, f), "utf8")) as { sources: string[]; sourcesContent?: Array<string | null> };
      return (
        !map.sourcesContent || map.sourcesContent.length !== map.sources.length || map.sourcesContent.some((c) => typeof c !== "string")
      );
    });
    expect(noSources).toEqual([]);
  });

  test("package.json: exports with types for import and require, ./package.json, optional peer drivers, a bin", () => {
    const pkg = JSON.parse(readFileSync(path.join(consumer, "node_modules", "emqx-exhook", "package.json"), "utf8"));
    for (const entry of [".", "./node", "./testing", "./usecases"]) {
      expect(Object.keys(pkg.exports[entry])).toEqual(["import", "require"]);
      for (const cond of ["import", "require"]) expect(Object.keys(pkg.exports[entry][cond])).toEqual(["types", "default"]);
    }
    expect(pkg.exports["./package.json"]).toBe("./package.json");
    expect(pkg.peerDependencies).toEqual(OPTIONAL_DEPENDENCIES);
    expect(pkg.peerDependenciesMeta).toEqual(Object.fromEntries(Object.keys(OPTIONAL_DEPENDENCIES).map((k) => [k, { optional: true }])));
    expect(pkg.dependencies["better-sqlite3"]).toBeUndefined();
    expect(pkg.dependencies["pg"]).toBeUndefined();
    expect(pkg.bin).toEqual({ "emqx-exhook": "./dist/src/cli.js" });
  });

  test("installs without a compiler and without any native module or storage driver", () => {
    const nm = path.join(consumer, "node_modules");
    expect(existsSync(path.join(nm, "better-sqlite3"))).toBe(false);
    expect(existsSync(path.join(nm, "pg"))).toBe(false);
    const native: string[] = [];
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith(".node") || e.name === "binding.gyp") native.push(path.relative(nm, p));
      }
    };
    walk(nm);
    expect(native).toEqual([]);
    expect(ok("/bin/sh", ["-c", "command -v gcc cc g++ make python3 python || true"], consumer, { PATH: barePath })).toBe("");
  });
});

describe.each(["esm", "cjs"] as const)("a %s consumer project", (kind) => {
  const dir = () => path.join(consumer, kind);

  test(
    "the README's files compile with TypeScript 5.9 and 7",
    () => {
      expectCompiles("59", dir());
      expectCompiles("7", dir(), ["--outDir", path.join(dir(), "dist7")]);
    },
    STEP_MS,
  );

  test(
    "the README's test-kit example passes under node --test",
    () => {
      const r = run(process.execPath, ["--test", "dist/my-provider.test.js"], dir());
      expect({ status: r.status, out: r.stdout.includes("# pass 1") && r.stdout.includes("# fail 0") }).toEqual({ status: 0, out: true });
    },
    STEP_MS,
  );

  test(
    "the installed CLI serves the README's first provider; EMQX's calls get its decisions",
    async () => {
      const cli = spawnCli(
        [
          path.join(consumer, "node_modules", "emqx-exhook", "dist", "src", "cli.js"),
          "serve",
          "dist/my-provider.js",
          "--port",
          "0",
          "--host",
          "127.0.0.1",
        ],
        { cwd: dir() },
      );
      try {
        const [m] = await cli.waitFor(/listening on 127\.0\.0\.1:(\d+)/g);
        const emqx = createFakeEmqx({ url: `http://127.0.0.1:${m?.[1]}` });
        await emqx.start();
        expect(await emqx.connect({ clientid: "c1", username: "alice", password: "alice-pass" })).toMatchObject({ connected: true });
        expect(await emqx.connect({ clientid: "c2", username: "alice", password: "wrong" })).toEqual({
          connected: false,
          reasonCode: "not_authorized",
        });
        await emqx.stop();
        cli.child.kill("SIGTERM");
        expect(await cli.exited()).toEqual({ code: 0, signal: null });
      } finally {
        cli.kill();
      }
    },
    STEP_MS,
  );

  test(
    "the README's embedding example serves the provider on its own Connect server",
    async () => {
      const srv = spawnCli(["dist/server.js"], { cwd: dir(), env: { ...process.env, PORT: "0" } });
      try {
        const [m] = await srv.waitFor(/port: (\d+)/g);
        const emqx = createFakeEmqx({ url: `http://127.0.0.1:${m?.[1]}` });
        await emqx.start();
        expect(await emqx.connect({ clientid: "c1", username: "alice", password: "alice-pass" })).toMatchObject({ connected: true });
        expect(await emqx.publish("c1", { topic: "sensors/blocked/x" })).toEqual({ dropped: true, reason: "provider" });
        await emqx.stop();
      } finally {
        srv.kill();
      }
    },
    STEP_MS,
  );

  test(
    "emqx-exhook/usecases: without better-sqlite3 a clear error says what to install; with it the store works",
    () => {
      const out = ok(process.execPath, ["dist/usecases.js"], dir());
      expect(out).toBe(
        `config sqlite function function\nconfig error: the SQLite store needs the package better-sqlite3, which is not installed: run npm install better-sqlite3@"~12.11"\n`,
      );
      const link = path.join(consumer, "node_modules", "better-sqlite3");
      symlinkSync(path.join(ROOT, "node_modules", "better-sqlite3"), link, "dir");
      try {
        expect(ok(process.execPath, ["dist/usecases.js"], dir())).toBe("config sqlite function function\nstored u\nthreads t\n");
      } finally {
        rmSync(link);
      }
    },
    STEP_MS,
  );

  test(
    "the core entry loads no logger, metrics, server adapter, storage driver or node: module",
    () => {
      const r = JSON.parse(
        ok(
          process.execPath,
          [path.join(ROOT, "scripts", "entry-modules.mjs"), kind === "esm" ? "import" : "require", "emqx-exhook"],
          dir(),
        ),
      );
      expect({ packages: r.packages, builtins: r.builtins }).toEqual({
        packages: ["@bufbuild/protobuf", "@connectrpc/connect", "emqx-exhook"],
        builtins: [],
      });
      const node = JSON.parse(
        ok(
          process.execPath,
          [path.join(ROOT, "scripts", "entry-modules.mjs"), kind === "esm" ? "import" : "require", "emqx-exhook/node"],
          dir(),
        ),
      );
      expect(node.packages).toEqual(expect.arrayContaining(["@connectrpc/connect-node", "pino", "prom-client"]));
      expect(r.modules).toBeLessThan(node.modules / 1.5);
    },
    STEP_MS,
  );

  test(
    "own-location: the running build finds its own directory",
    () => {
      const pkgDir = path.join(consumer, "node_modules", "emqx-exhook");
      const code =
        kind === "esm"
          ? `import("emqx-exhook/package.json", { with: { type: "json" } }).then(async (p) => { const o = await import(${JSON.stringify(path.join(pkgDir, "dist", "esm", "src", "own-location.js"))}); console.log(o.ownDir, o.ownExtension, typeof o.ownRequire("@bufbuild/protobuf").create, p.default.version); })`
          : `const o = require(${JSON.stringify(path.join(pkgDir, "dist", "src", "own-location.js"))}); console.log(o.ownDir, o.ownExtension, typeof o.ownRequire("@bufbuild/protobuf").create, require("emqx-exhook/package.json").version)`;
      const version = JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8")).version;
      const want = path.join(pkgDir, "dist", ...(kind === "esm" ? ["esm", "src"] : ["src"]));
      expect(ok(process.execPath, kind === "esm" ? ["--input-type=module", "-e", code] : ["-e", code], dir()).trim()).toBe(
        `${want} .js function ${version}`,
      );
    },
    STEP_MS,
  );
});

test(
  "bundler resolution: the README's files type-check with TypeScript 5.9 and 7",
  () => {
    expectCompiles("59", path.join(consumer, "bundler"));
    expectCompiles("7", path.join(consumer, "bundler"));
  },
  STEP_MS,
);

test(
  "node10 resolution (older TypeScript setups) finds every entry's types through typesVersions",
  () => {
    expectCompiles("59", path.join(consumer, "node10"));
  },
  STEP_MS,
);

test(
  "the CLI shows its version from the installed package",
  () => {
    const version = JSON.parse(readFileSync(path.join(consumer, "node_modules", "emqx-exhook", "package.json"), "utf8")).version;
    expect(
      execFileSync(process.execPath, [path.join(consumer, "node_modules", ".bin", "emqx-exhook"), "--version"], {
        cwd: consumer,
        encoding: "utf8",
      }),
    ).toBe(`${version}\n`);
  },
  STEP_MS,
);
