/**
 * The dependency rules of the architecture: the framework core imports nothing from `node:`
 * (I/O lives in the server, the CLI and the use-case modules), topic matching imports nothing at
 * all, and nothing in src/ imports the test kit.
 */
import * as fs from "node:fs";
import * as path from "node:path";

const SRC = path.join(__dirname, "..", "src");
const CORE = [
  "hooks.ts",
  "topic.ts",
  "responses.ts",
  "provider.ts",
  "context.ts",
  "wire.ts",
  "dispatch.ts",
  "routes.ts",
  "errors.ts",
  "connection.ts",
  "client-context.ts",
  "presence.ts",
  "lifecycle-hooks.ts",
  "index.ts",
  "protocol/grpc-unary.ts",
];

function imports(file: string): string[] {
  const text = fs.readFileSync(path.join(SRC, file), "utf8");
  return [
    ...text.matchAll(/(?:^|\n)\s*(?:import|export)[^;]*?from\s+"([^"]+)"/g),
    ...text.matchAll(/(?:require|import)\(\s*"([^"]+)"\s*\)/g),
  ].map((m) => m[1] as string);
}

function allSourceFiles(dir = SRC, prefix = ""): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) =>
      e.isDirectory()
        ? allSourceFiles(path.join(dir, e.name), `${prefix}${e.name}/`)
        : /\.m?ts$/.test(e.name)
          ? [`${prefix}${e.name}`]
          : [],
    );
}

test.each(CORE)("core module %s imports nothing from node:", (file) => {
  expect(imports(file).filter((i) => i.startsWith("node:") || ["fs", "http2", "net", "path", "os", "crypto"].includes(i))).toEqual([]);
});

test("topic.ts has no imports at all", () => {
  expect(imports("topic.ts")).toEqual([]);
});

test("no module outside src/testing imports the test kit", () => {
  const offenders = allSourceFiles()
    .filter((f) => !f.startsWith("testing/"))
    .filter((f) => imports(f).some((i) => i.includes("/testing/") || i.endsWith("/testing") || i.endsWith("/testing/index.js")));
  expect(offenders).toEqual([]);
});

test("relative imports in src/ and gen/ name their .js file (the ESM build runs under Node's ESM loader)", () => {
  const GEN = path.join(SRC, "..", "gen");
  const genFiles = (dir: string, prefix: string): string[] =>
    fs
      .readdirSync(dir, { withFileTypes: true })
      .flatMap((e) =>
        e.isDirectory() ? genFiles(path.join(dir, e.name), `${prefix}${e.name}/`) : e.name.endsWith(".ts") ? [`${prefix}${e.name}`] : [],
      );
  const offenders = [
    ...allSourceFiles().flatMap((f) =>
      imports(f)
        .filter((i) => i.startsWith(".") && !i.endsWith(".js"))
        .map((i) => `src/${f}: ${i}`),
    ),
    ...genFiles(GEN, "").flatMap((f) => {
      const text = fs.readFileSync(path.join(GEN, f), "utf8");
      return [...text.matchAll(/from\s+"(\.[^"]+)"/g)]
        .map((m) => m[1] as string)
        .filter((i) => !i.endsWith(".js"))
        .map((i) => `gen/${f}: ${i}`);
    }),
  ];
  expect(offenders).toEqual([]);
});

test("only src/own-location.ts (and its ESM twin) use __dirname, __filename, require or import.meta: the rest works in both builds", () => {
  const offenders = allSourceFiles()
    .filter((f) => !["own-location.ts", "own-location-esm.mts", "cli.ts"].includes(f))
    .filter((f) =>
      /\b__dirname\b|\b__filename\b|\brequire\s*[(.]|import\.meta/.test(
        fs.readFileSync(path.join(SRC, f), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, ""),
      ),
    );
  expect(offenders).toEqual([]);
});

test("the import scanner sees imports (guard against a scanner that finds nothing)", () => {
  expect(imports("server.ts")).toContain("node:http2");
  expect(imports("dispatch.ts")).toContain("./wire.js");
});
