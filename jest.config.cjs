// Type checking is done by `tsc --noEmit` before jest runs (see package.json "test"),
// so jest only strips types with swc, which keeps the suite fast.
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: {
    "^.+\\.ts$": ["@swc/jest", { jsc: { parser: { syntax: "typescript" }, target: "es2022" }, module: { type: "commonjs" } }],
    // jose is ESM only (the product loads it with a dynamic import); jest's CommonJS runtime needs it transformed.
    "/node_modules/jose/.+\\.js$": [
      "@swc/jest",
      { jsc: { parser: { syntax: "ecmascript" }, target: "es2022" }, module: { type: "commonjs" } },
    ],
  },
  transformIgnorePatterns: ["/node_modules/(?!jose/)"],
  // Worker threads cannot run TypeScript: globalSetup compiles the sources once, and the module that
  // names a worker's file points at that copy (test/helpers/sqlite-worker-file.ts, forward-worker-file.ts).
  globalSetup: "<rootDir>/test/helpers/global-setup.ts",
  moduleNameMapper: {
    "^\\./sqlite-worker-file(\\.js)?$": "<rootDir>/test/helpers/sqlite-worker-file.ts",
    "^\\./forward-worker-file(\\.js)?$": "<rootDir>/test/helpers/forward-worker-file.ts",
    "^(\\.{1,2}/.*)\\.js$": "$1",
  },
  testTimeout: 30000,
};
