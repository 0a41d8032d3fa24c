// Type checking is done by `tsc --noEmit` before jest runs (see package.json "test"),
// so jest only strips types with swc, which keeps the suite fast.
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: {
    "^.+\\.ts$": ["@swc/jest", { jsc: { parser: { syntax: "typescript" }, target: "es2022" }, module: { type: "commonjs" } }],
  },
  // Worker threads cannot run TypeScript: globalSetup compiles the sources once, and the module that
  // names the SQLite worker's file points at that copy (test/helpers/sqlite-worker-file.ts).
  globalSetup: "<rootDir>/test/helpers/global-setup.ts",
  moduleNameMapper: {
    "^\\./sqlite-worker-file(\\.js)?$": "<rootDir>/test/helpers/sqlite-worker-file.ts",
    "^(\\.{1,2}/.*)\\.js$": "$1",
  },
  testTimeout: 30000,
};
